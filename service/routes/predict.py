"""POST /v1/models/{name}/predict and /feedback: thin HTTP handling over the model and the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service import metrics
from service.deps import AppState, FeedbackAuthDep, StateDep
from service.errors import (
    BadRequest,
    ClientGone,
    InvalidInstances,
    InvalidRequest,
    PayloadTooLarge,
    Unavailable,
)
from service.ids import issued_at, new_ids
from service.logwriter import LogFull
from service.model import LoadedModel, Outputs, redact
from service.models import Slot
from service.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse, PredictResponse
from service.store import encode, prediction_rows
from service.validation import Checked
from training import labels

router = APIRouter(prefix="/v1/models", tags=["predict"])
log = logging.getLogger("servewatch.predict")

# A label may arrive before its prediction row is flushed (or from another replica's queue):
# ids issued this recently are accepted and join once the row lands.
FEEDBACK_GRACE_S = 120.0


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error body."""
    return {code: {"model": ErrorResponse} for code in codes}


ERRORS = documented(400, 404, 413, 422, 503)

# The hot route reads its path parameter and the app state off the request itself (FastAPI's
# dependency resolution was a tenth of the loop's time per request) and parses the body by hand
# (orjson, one-pass validation); this documents both.
INSTANCES_BODY: dict[str, Any] = {
    "parameters": [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "title": "Name"},
            "description": "The model's name in the registry.",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    },
}


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, after the content type and size checks."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("application/json"):
        raise BadRequest(f"content-type must be application/json, got {ctype or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    except ClientDisconnect:
        raise ClientGone("the client closed the connection before sending its body") from None
    if not body:
        raise BadRequest("empty body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Predict for one or more instances",
    openapi_extra=INSTANCES_BODY,
)
async def predict(request: Request) -> Response:
    name: str = request.path_params["name"]
    state: AppState = request.app.state.sw

    async def run(start: float, ctx: RequestContext) -> Response:
        manager = state.manager
        prod = manager.get(name)
        if name in manager.canary:  # the request key matters only when a canary is configured
            slot, ctx.canary = manager.route(name, request.headers.get("x-request-key"))
        else:
            slot, ctx.canary = prod, False
        ctx.version = str(prod.model.version)
        # Clients speak the production schema; a canary answers only what it can read from it.
        instances, checked = await checked_instances(prod, name, request, state)
        if slot is not prod:
            projected = slot.model.validator.check(project(instances, slot))
            if isinstance(projected, list):
                slot, ctx.canary = prod, False
            else:
                checked = projected
        ctx.version = str(slot.model.version)
        out = await slot.batcher.predict(checked.columns, len(instances))
        ids = new_ids(len(instances))
        response = await answer(name, slot.model, instances, out, state, start, ids=ids)
        shadow = manager.staging.get(name) if name in manager.shadow else None
        if shadow is not None:
            manager.spawn(shadow_predict(name, shadow, instances, ids, state))
        return response

    return await timed("predict", name, state, run)


@dataclass
class RequestContext:
    version: str = ""
    canary: bool | None = None  # None: no canary configured for this model


async def timed(
    endpoint: str,
    name: str,
    state: StateDep,
    run: Callable[[float, RequestContext], Awaitable[Response]],
) -> Response:
    """Count the request and observe its latency by model, version and endpoint; feed the canary
    guard when the model has a canary."""
    start = time.perf_counter()
    status = 200
    ctx = RequestContext()
    try:
        return await run(start, ctx)
    except Exception as exc:
        status = int(getattr(exc, "status_code", 500))
        raise
    finally:
        elapsed = time.perf_counter() - start
        known = name if name in state.manager.slots else "_unknown"
        metrics.child(metrics.REQUESTS, known, ctx.version, endpoint, str(status)).inc()
        metrics.child(metrics.REQUEST_SECONDS, known, ctx.version, endpoint).observe(elapsed)
        if name in state.manager.canary and name in state.manager.staging and ctx.version:
            state.manager.guard(name).record(
                is_canary=bool(ctx.canary), status=status, seconds=elapsed
            )


def project(instances: list[dict[str, Any]], slot: Slot) -> list[dict[str, Any]]:
    """The instances restricted to what `slot`'s version reads (its features, personal data)."""
    known = slot.model.validator.known
    return [{k: v for k, v in inst.items() if k in known} for inst in instances]


async def shadow_predict(
    name: str,
    slot: Slot,
    instances: list[dict[str, Any]],
    parent_ids: list[str],
    state: StateDep,
) -> None:
    """The staging version on the same inputs, off the request path; logged, never returned."""
    version = str(slot.model.version)
    try:
        shadow_checked = slot.model.validator.check(project(instances, slot))
        if isinstance(shadow_checked, list):
            metrics.SHADOW_PREDICTIONS.labels(name, version, "schema_mismatch").inc(len(instances))
            return
        out = await slot.batcher.predict(shadow_checked.columns, len(instances))
        rows = log_rows(
            name, slot.model, instances, out, state, parent_ids, latency_ms=0.0, shadow=True
        )
        await state.writer.put(rows)
    except Exception as exc:  # a failing shadow never touches production traffic
        metrics.SHADOW_PREDICTIONS.labels(name, version, "failed").inc(len(instances))
        log.warning("shadow prediction of %s v%s failed: %s", name, version, exc)
        return
    metrics.SHADOW_PREDICTIONS.labels(name, version, "logged").inc(len(instances))


async def checked_instances(
    slot: Slot, name: str, request: Request, state: StateDep
) -> tuple[list[dict[str, Any]], Checked]:
    """Parse the body and check every instance against the answering version's schema."""
    settings = state.settings
    body = await read_json(request, settings.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise InvalidInstances(
            'body must be {"instances": [{feature: value, ...}, ...]}',
            [
                {
                    "instance": None,
                    "feature": "instances",
                    "rule": "required",
                    "message": "a list of instances is required",
                }
            ],
        )
    extra = sorted(k for k in body if k != "instances")
    if extra:
        raise InvalidInstances(
            f"unknown top-level field(s): {extra}",
            [
                {"instance": None, "feature": k, "rule": "unknown", "message": "unknown field"}
                for k in extra
            ],
        )
    instances = body["instances"]
    if not instances:
        raise InvalidInstances(
            "instances is empty",
            [
                {
                    "instance": None,
                    "feature": "instances",
                    "rule": "min_items",
                    "message": "at least one instance",
                }
            ],
        )
    if len(instances) > settings.max_instances:
        raise PayloadTooLarge(f"{len(instances)} instances; the limit is {settings.max_instances}")
    model = slot.model
    checked = model.validator.check(instances)
    if isinstance(checked, list):
        for p in checked:
            # a client chooses unknown field names: one label value for all of them
            feature = "_unknown" if p.rule == "unknown" else p.feature or "_instance"
            metrics.VALIDATION_ERRORS.labels(name, feature, p.rule).inc()
        shown = checked[:100]
        raise InvalidInstances(
            f"{len(checked)} problem(s) in the instances", [p.as_dict() for p in shown]
        )
    for feat, n in checked.out_of_range.items():
        metrics.OUT_OF_RANGE.labels(name, feat).inc(n)
    for feat, n in checked.unseen.items():
        metrics.UNSEEN_CATEGORIES.labels(name, feat).inc(n)
    return instances, checked


def log_rows(
    name: str,
    model: LoadedModel,
    instances: list[dict[str, Any]],
    out: Outputs,
    state: StateDep,
    ids: list[str],
    *,
    latency_ms: float,
    shadow: bool = False,
) -> list[dict[str, Any]]:
    """Prediction-log rows; a shadow row gets its own id and points at the answered one."""
    key = state.settings.personal_data_key
    personal = state.manager.personal(name)
    own_ids = new_ids(len(ids)) if shadow else ids
    return prediction_rows(
        ids=own_ids,
        model=name,
        version=model.version,
        created_at=time.time(),
        inputs=[redact(inst, personal, key) for inst in instances] if personal else instances,
        predictions=out.predictions,
        probabilities=out.probabilities,
        latency_ms=latency_ms,
        shadow=shadow,
        ref_ids=ids if shadow else None,
    )


async def answer(
    name: str,
    model: LoadedModel,
    instances: list[dict[str, Any]],
    out: Outputs,
    state: StateDep,
    start: float,
    extras: list[dict[str, Any]] | None = None,
    ids: list[str] | None = None,
) -> Response:
    """Queue each prediction's log row, count it, and build the response."""
    ids = ids or new_ids(len(instances))
    version = model.version
    rows = log_rows(
        name, model, instances, out, state, ids, latency_ms=(time.perf_counter() - start) * 1000
    )
    preds = []
    for i in range(len(instances)):
        item: dict[str, Any] = {"prediction_id": ids[i], "prediction": out.predictions[i]}
        if out.probabilities is not None:
            item["probabilities"] = out.probabilities[i]
        if extras is not None:
            item.update(extras[i])
        preds.append(item)
    try:
        # answered only once the row is on its way to the log (or, in sync mode, in it)
        await state.writer.put(rows, durable=state.settings.log_durability == "sync")
    except LogFull as exc:
        raise Unavailable(str(exc)) from None
    vs = str(version)
    if out.probabilities is not None:
        counts: dict[str, int] = {}
        for p in out.predictions:
            k = labels.key(p)
            counts[k] = counts.get(k, 0) + 1
        for cls, n in counts.items():
            metrics.child(metrics.PREDICTIONS, name, vs, cls).inc(n)
    else:
        metrics.PREDICTIONS.labels(name, vs, "").inc(len(preds))
        hist = metrics.PREDICTION_VALUES.labels(name, vs)
        for v in out.predictions:
            hist.observe(v)
    payload = {"model": name, "version": version, "predictions": preds}
    return Response(orjson.dumps(payload), media_type="application/json")


FEEDBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}
        },
    },
}


def feedback_labels(body: Any, model: LoadedModel) -> list[tuple[str, Any]]:
    """(prediction id, label in the model's type) per item, or one 422 naming every bad item and
    the rule it breaks."""
    try:
        request = FeedbackRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            "the feedback body breaks the schema",
            [
                {
                    "field": ".".join(str(p) for p in e["loc"]) or "(body)",
                    "rule": e["type"],
                    "message": e["msg"],
                }
                for e in exc.errors()[:100]
            ],
        ) from None
    out, problems = [], []
    for i, item in enumerate(request.labels):
        try:
            out.append(
                (
                    item.prediction_id,
                    labels.coerce(item.label, model.label_type, model.answers or None),
                )
            )
        except ValueError as exc:
            rule, _, message = str(exc).partition(": ")
            problems.append({"field": f"labels.{i}.label", "rule": rule, "message": message})
    if problems:
        raise InvalidRequest(f"{len(problems)} label(s) rejected", problems[:100])
    return out


@router.post(
    "/{name}/feedback",
    response_model=FeedbackResponse,
    responses=documented(400, 401, 404, 413, 422, 503),
    summary="Send ground-truth labels for earlier predictions",
    openapi_extra=FEEDBACK_BODY,
)
async def feedback(
    request: Request, name: str, state: StateDep, _auth: FeedbackAuthDep
) -> FeedbackResponse:
    """Labels are checked against the production version's label type and classes."""
    slot = state.manager.get(name)
    body = await read_json(request, state.settings.max_body_bytes)
    given = feedback_labels(body, slot.model)
    writer = state.writer
    ids = [pid for pid, _ in given]
    try:
        in_db = await run_in_threadpool(state.store.existing_ids, ids)
    except Exception:
        metrics.FEEDBACK.labels(name, "store_down").inc(len(ids))
        raise Unavailable("the prediction log store is unreachable; retry later") from None
    now = time.time()
    rows, items = [], []
    for pid, label in given:
        issued = issued_at(pid)
        known = (
            pid in in_db
            or pid in writer.recent
            or (issued is not None and now - issued <= FEEDBACK_GRACE_S)
        )
        if known:
            rows.append(
                {"prediction_id": pid, "model": name, "label": encode(label), "received_at": now}
            )
        items.append({"prediction_id": pid, "status": "stored" if known else "unknown_prediction"})
    try:
        await run_in_threadpool(state.store.write_labels, rows)
    except Exception:
        metrics.FEEDBACK.labels(name, "store_down").inc(len(ids))
        raise Unavailable("the prediction log store is unreachable; retry later") from None
    metrics.FEEDBACK.labels(name, "stored").inc(len(rows))
    metrics.FEEDBACK.labels(name, "unknown").inc(len(ids) - len(rows))
    return FeedbackResponse.model_validate(
        {"stored": len(rows), "unknown": len(ids) - len(rows), "items": items}
    )
