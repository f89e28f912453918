"""Model metadata (GET /v1/models, /v1/models/{name}) and the admin reload."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from core.errors import RegistryError
from service.errors import Unavailable
from service.inference.model import ModelLoadError
from service.protocols.deps import AdminDep, StateDep
from service.protocols.schemas import ModelDetail, ModelSummary, ReloadResponse, documented

router = APIRouter(prefix="/v1/models", tags=["models"])


class ServingPart(BaseModel):
    path: Literal["numpy", "compiled", "sklearn"]
    """What runs this part of the model call."""
    reason: Literal[
        "none", "unsupported", "differs", "unchecked", "disabled", "onnxruntime_missing"
    ]
    """Why it runs on scikit-learn ("none": on its fast path): no fast path implements it; its
    fast path's answers differed on the load-time check rows; it could not be checked (no
    reference rows, or the pipeline refused a check row); turned off; onnxruntime missing."""
    detail: str = ""
    """What, in words (e.g. "SVC: neither replayed (linear models) nor compiled (tree
    models)")."""


class ServedModelDetail(ModelDetail):
    serving_path: Literal["numpy", "compiled", "sklearn", "mixed"]
    """What runs this version's model calls: its fitted parts replayed with numpy (checked
    equal to the pipeline at load), the preprocessing replayed and the tree model compiled for
    ONNX Runtime (checked the same way), scikit-learn's own methods, or a mix (see
    docs/architecture.md, "Serving path")."""
    serving_parts: dict[str, ServingPart] = {}
    """Per part of the model call ("preprocessing", "estimator"; an ensemble's "member N
    estimator"...): what runs it and, where scikit-learn does, why."""
    threshold: float | None = None
    """A binary classifier's decision threshold: `prediction` is `positive_class` when its
    probability is >= threshold (None: the most probable class). Probabilities are unchanged."""
    positive_class: Any = None


def _aliases(state: StateDep, name: str) -> dict[str, int]:
    try:
        return {a: int(e["version"]) for a, e in state.manager.registry.aliases(name).items()}
    except (OSError, ValueError, KeyError):
        return {}


@router.get("", response_model=list[ModelSummary])
async def list_models(state: StateDep) -> list[ModelSummary]:
    return [
        ModelSummary(
            name=n, version=s.model.version, task=s.model.manifest.task, aliases=_aliases(state, n)
        )
        for n, s in sorted(state.manager.slots.items())
    ]


@router.get("/{name}", response_model=ServedModelDetail, responses=documented(404))
async def get_model(name: str, state: StateDep) -> ServedModelDetail:
    model = state.manager.get(name).model
    m = model.manifest
    return ServedModelDetail(
        name=name,
        version=m.version,
        task=m.task,
        aliases=_aliases(state, name),
        target=m.target,
        classes=m.classes,
        features=[f.model_dump(exclude_none=True) for f in m.features],
        metrics=m.metrics,
        created_at=m.created_at,
        serving_path=model.serving_path,
        serving_parts={
            part: ServingPart(path=p.runs, reason=p.reason, detail=p.detail)
            for part, p in model.plan.items()
        },
        threshold=model.threshold,
        positive_class=m.decision.positive_class if m.decision is not None else None,
    )


@router.post(
    "/{name}/reload",
    response_model=ReloadResponse,
    responses=documented(401, 404, 503),
    summary="Re-resolve the alias and swap versions (admin)",
)
async def reload(name: str, state: StateDep, _admin: AdminDep) -> ReloadResponse:
    state.manager.get(name)
    try:
        old, new = await state.manager.reload(name)
    except (ModelLoadError, RegistryError) as exc:
        raise Unavailable(f"reload refused, the old version keeps serving: {exc}") from None
    return ReloadResponse(model=name, previous_version=old, version=new)
