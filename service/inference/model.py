"""LoadedModel: one verified registry version, ready to predict on validated columns."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import labels
from core.decision import decide
from core.ecosystem import MissingModelPackage, load_model_bytes
from core.errors import ServewatchError
from core.features import example_value, names_of
from core.missing import is_missing, none_columns
from core.registry import MODEL_FILE, REFERENCE_FILE, Manifest, Registry
from service.inference.compiled import reads_float32
from service.inference.fastpath import parse_timestamp
from service.inference.plan import (
    Part,
    ServingPath,
    ServingPlan,
    average,
    choose,
    estimators,
    everywhere,
)
from service.validation import Validator

log = logging.getLogger("servewatch.model")

# Timestamps the load-time check feeds both paths (valid ISO 8601, so a client may send them).
EDGE_TIMESTAMPS = [
    "9999-12-31T00:00:00",
    "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC
    "0001-01-01",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "2262-04-11T23:47:17",  # just after pandas' last Timestamp
    "1677-09-21T00:12:43",  # just before its first
    "2024-02-29T23:45:00+05:30",
    "2024-03-31T22:00:00Z",
    "2024-07-06",
    "2024-02-01 10:30",
    "2024-W05-3",
    "20240201T103000",
]


def redact(instance: dict[str, Any], personal: set[str], key: str | None) -> dict[str, Any]:
    """The instance as it may be logged: personal-data columns keyed-hashed, or dropped."""
    if not personal or not personal & instance.keys():
        return instance
    out = {k: v for k, v in instance.items() if k not in personal}
    if key:
        for col in personal & instance.keys():
            digest = hmac.new(key.encode(), _text(instance[col]).encode(), hashlib.sha256)
            out[col] = "hmac:" + digest.hexdigest()[:32]
    return out


def _text(value: Any) -> str:
    """The text a personal value is hashed from: `str` of it, as always; a value nested too deep
    for `str` (a RecursionError) is written out without recursion instead."""
    if type(value) not in (dict, list):
        return str(value)
    try:
        return str(value)
    except RecursionError:
        parts: list[str] = []
        stack: list[tuple[bool, Any]] = [(False, value)]  # (a closing or key token?, item)
        while stack:
            token, item = stack.pop()
            if token:
                parts.append(item)
            elif type(item) is list:
                parts.append("[")
                stack.append((True, "]"))
                stack.extend((False, v) for v in reversed(item))
            elif type(item) is dict:
                parts.append("{")
                stack.append((True, "}"))
                for k, v in reversed(list(item.items())):
                    stack += [(False, v), (True, f"{k!r}:")]
            else:
                parts.append(repr(item) + ",")
        return "".join(parts)


class ModelLoadError(ServewatchError):
    """The version's files failed the hash check or did not load; the old version keeps serving."""


@dataclass
class Outputs:
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None


class LoadedModel:
    """A version's pipeline, manifest and validator; `predict` runs on column lists."""

    def __init__(self, manifest: Manifest, pipeline: Any, path: Path) -> None:
        self.manifest = manifest
        self.pipeline = pipeline
        self.path = path
        self.name = manifest.name
        self.version = manifest.version
        self.personal = set(manifest.personal_data)
        self.validator = Validator(manifest.features, self.personal)
        self.classes: list[str] | None = None
        """The classes as text (probability keys), in `predict_proba` column order."""
        self.answers: list[Any] = []
        """The classes as answered: JSON values of the manifest's label type."""
        self.threshold = manifest.threshold if manifest.task == "classification" else None
        """The binary decision threshold (None: argmax); probabilities are never changed."""
        self.positive = manifest.positive_index
        if manifest.task == "classification":
            self.classes = [labels.key(c) for c in pipeline.classes_]
            self.label_type: labels.LabelType = manifest.label_type or "string"
            self.answers = [labels.to_native(c, self.label_type) for c in self.classes]
        else:
            self.label_type = "float"
        self.columns = [f.name for f in manifest.features]
        # A Pipeline is split into its preprocessing and final estimator; any other estimator
        # (a bare one fitted elsewhere) reads the typed frame itself, through its own methods.
        steps = getattr(pipeline, "steps", None)
        self.final: Any = steps[-1][1] if steps else pipeline
        self.preprocessing: Any = pipeline[:-1] if steps and len(steps) > 1 else None
        self._explainer: Any = None
        self._explainer_lock = threading.Lock()
        off = Part("sklearn", "disabled", "the fast paths are off")
        self.serving: ServingPlan = everywhere(self.preprocessing is not None, off)
        """How the model call runs, chosen once at load (`enable_fast_path`)."""
        self.numeric = set(names_of(manifest.features, "numeric"))
        self._datetime_set = set(names_of(manifest.features, "datetime"))
        self._none = none_columns(pipeline, self.columns)
        """Category columns whose missing value the pipeline was trained with as None (the
        others get NaN, see `core.missing.none_columns`)."""
        self._reference: bytes | None = None
        """reference.parquet as hashed at load (the explainer's background): never re-read."""
        # a value beyond float32's range is refused in validation, not by the model's call
        self.validator.float32 = any(reads_float32(m) for m in estimators(self.final))

    @classmethod
    def load(
        cls,
        registry: Registry,
        name: str,
        version: int,
        *,
        fast_path: bool = True,
        compiled: bool = True,
    ) -> LoadedModel:
        """Verify every file's SHA-256 (and the signature) against the manifest, then unpickle
        and warm up. `fast_path` False keeps every part on scikit-learn; `compiled` False keeps
        tree models on scikit-learn (the numpy replays still apply).

        Each file is read once: the manifest is parsed from the bytes its signature was checked
        on, and the model is unpickled from the bytes that were hashed, never reopened (pickles
        run code: nothing is unpickled before its hash matches, and a file swapped on disk after
        the check is never read).
        """
        path = registry.path(name, version)
        try:
            checked = registry.read_verified(name, version, keep=(MODEL_FILE, REFERENCE_FILE))
        except Exception as exc:
            raise ModelLoadError(f"{name} v{version}: unreadable manifest ({exc})") from None
        if checked.problems:
            raise ModelLoadError(f"{name} v{version}: refused, " + "; ".join(checked.problems))
        try:
            pipeline = load_model_bytes(checked.contents[MODEL_FILE])
        except MissingModelPackage as exc:
            raise ModelLoadError(f"{name} v{version}: {exc}") from None
        except Exception as exc:
            raise ModelLoadError(f"{name} v{version}: model file failed to load ({exc})") from None
        model = cls(checked.manifest, pipeline, path)
        model._reference = checked.contents.get(REFERENCE_FILE) or None
        if fast_path:
            try:
                sample = pd.read_parquet(io.BytesIO(model._reference or b"")).head(200)
            except Exception as exc:  # no usable reference: the pipeline as it is
                sample = None
                unchecked = Part("sklearn", "unchecked", f"no reference rows to check on ({exc})")
                model.serving = everywhere(model.preprocessing is not None, unchecked)
            if sample is not None:
                model.enable_fast_path(sample, compiled=compiled)
        try:
            model.predict_columns(model.example_columns())
        except Exception as exc:
            raise ModelLoadError(f"{name} v{version}: warm-up prediction failed ({exc})") from None
        return model

    @property
    def serving_path(self) -> ServingPath:
        """Which code runs a model call ("numpy", "compiled", "sklearn" or "mixed"; see
        `ServingPlan.path`)."""
        return self.serving.path

    @property
    def plan(self) -> dict[str, Part]:
        """Per part of the model call ("preprocessing", "estimator"; an ensemble's
        "member N preprocessing"...): what runs it and why (`Part`)."""
        return dict(self.serving.parts)

    def member(self, estimator: Any) -> LoadedModel:
        """One member of this version's ensemble, served on its own (the same manifest)."""
        return LoadedModel(self.manifest, estimator, self.path)

    def enable_fast_path(self, sample: pd.DataFrame, *, compiled: bool = True) -> bool:
        """Choose the serving plan (service/inference/plan.py) on `check_columns(sample)`: the
        numpy replays (service/inference/fastpath.py) and compiled trees
        (service/inference/compiled.py, unless `compiled` is False) where each gives the
        pipeline's exact output, scikit-learn's own elsewhere. True when any fast path is used;
        `serving_path` and `plan` say which. A bare estimator fitted on number columns alone
        reads them as one float matrix, so its replay or compiled form can serve it too."""
        self.serving = choose(self, sample, compiled)
        return self.serving.fast

    def explainer(self) -> Any:
        """Built on first use (it reads the reference sample as background); thread-safe."""
        with self._explainer_lock:
            if self._explainer is None:
                from core.explain import Explainer

                if self._reference is None:
                    raise ValueError(f"{self.name} v{self.version} has no checked reference sample")
                background = pd.read_parquet(io.BytesIO(self._reference))
                self._explainer = Explainer(
                    self.pipeline, self.columns, background, task=self.manifest.task
                )
            return self._explainer

    def explain_columns(self, columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Per row: each input feature's contribution, the base value and the method."""
        pre = self.serving.pre
        transformed = pre.transform(columns) if pre is not None else None
        exp = self.explainer().explain(self.frame(columns), transformed)
        out = []
        for i in range(len(exp.base_values)):
            out.append(
                {
                    "method": exp.method,
                    "output": exp.output,
                    "base_value": round(float(exp.base_values[i]), 6),
                    "contributions": {
                        f: round(float(v), 6)
                        for f, v in zip(exp.features, exp.contributions[i], strict=True)
                    },
                    **({"note": exp.note} if exp.note else {}),
                }
            )
        return out

    def example_instance(self) -> dict[str, Any]:
        """A valid instance built from the schema (used for warm-up and the OpenAPI example)."""
        return {f.name: example_value(f) for f in self.manifest.features}

    def example_columns(self) -> dict[str, list[Any]]:
        return {k: [v] for k, v in self.example_instance().items()}

    def frame(self, columns: dict[str, list[Any]]) -> pd.DataFrame:
        """Typed columns straight into one DataFrame (no per-column casts afterwards).

        Timestamps are parsed per value by `parse_timestamp`, the function the numpy replay
        uses: both paths read every value alike, and a micro-batch never mixes formats. A
        missing category (None) reaches the pipeline as it was trained: NaN, or None where the
        pipeline learned None (`core.missing.none_columns`); the replay answers the same."""
        data: dict[str, Any] = {}
        numeric, dates, none = self.numeric, self._datetime_set, self._none
        for col in self.columns:
            values = columns[col]
            if col in numeric:
                data[col] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            elif col in dates:
                data[col] = np.array([parse_timestamp(v) for v in values], dtype="datetime64[ns]")
            else:  # a gap as the pipeline was trained with it (None or NaN)
                token = None if col in none else np.nan
                data[col] = np.array([token if is_missing(v) else v for v in values], dtype=object)
        return pd.DataFrame(data, copy=False)

    def check_columns(self, sample: pd.DataFrame) -> dict[str, list[Any]]:
        """What the load-time comparison feeds both paths: the reference rows, the schema
        example, and generated awkward rows built on the example: each feature missing (and all
        at once), an unseen category, numbers at the float limits and beyond the training range
        (so beyond clipping bounds), edge timestamps (year 1 and 9999, offsets that leave the
        calendar, date-only, week dates, just outside pandas' range)."""
        columns = {  # as requests carry them: timestamps as ISO 8601 text
            c: [
                None if pd.isna(v) else (v.isoformat() if isinstance(v, pd.Timestamp) else v)
                for v in sample[c].astype(object)
            ]
            for c in self.columns
        }
        base = self.example_instance()
        rows: list[dict[str, Any]] = [base, dict.fromkeys(base)]
        for f in self.manifest.features:
            values: list[Any] = [None]
            if f.kind == "numeric":
                lo = f.min if f.min is not None else 0.0
                hi = f.max if f.max is not None else 0.0
                span = hi - lo + 1.0
                values += [1e308, -1e308, hi + 1000 * span, lo - 1000 * span, 0.0, -0.0, 5e-324]
            elif f.kind == "categorical":
                values += ["servewatch-unseen-category", ""]
            else:
                values += EDGE_TIMESTAMPS
            rows += [{**base, f.name: v} for v in values]
        for row in rows:
            for col in self.columns:
                columns[col].append(row[col])
        return columns

    def decide(self, proba: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Each row's predicted class index, by this version's decision (threshold or argmax)."""
        return decide(proba, self.threshold, self.positive)

    def _features(self, columns: dict[str, list[Any]], plan: ServingPlan) -> Any:
        """The preprocessed matrix the final estimator reads."""
        if plan.pre is not None:
            return plan.pre.transform(columns)
        frame = self.frame(columns)
        if self.preprocessing is None:
            return frame
        out = self.preprocessing.transform(frame)  # sparse one-hot: dense for a replayed one
        return out.toarray() if plan.estimator is not None and hasattr(out, "toarray") else out

    def estimate(self, columns: dict[str, list[Any]], method: str) -> Any:
        """`predict_proba` or `predict` of the final estimator (its numpy replay when verified)
        on the preprocessed rows."""
        plan = self.serving
        if plan.members:
            return average(plan.members, columns, method, plan.weights)
        fast = getattr(plan.estimator, method, None) if plan.estimator is not None else None
        return (fast or getattr(self.final, method))(self._features(columns, plan))

    def predict_columns(self, columns: dict[str, list[Any]]) -> Outputs:
        """One model call for all rows (a whole micro-batch)."""
        if self.classes is not None:
            proba = np.asarray(self.estimate(columns, "predict_proba"), dtype=float)
            idx = self.decide(proba)
            answers = self.answers
            preds = [answers[i] for i in idx.tolist()]  # Python ints index faster
            rounded = np.round(proba, 6).tolist()
            probs = [dict(zip(self.classes, row, strict=True)) for row in rounded]
            return Outputs(preds, probs)
        values = np.asarray(self.estimate(columns, "predict"), dtype=float).tolist()
        return Outputs(values, None)
