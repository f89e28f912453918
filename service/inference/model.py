"""LoadedModel: one verified registry version, ready to predict on validated columns."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

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
from service.inference.fastpath import (
    FastEstimator,
    FastPreprocessor,
    NumericColumns,
    parse_timestamp,
)
from service.validation import Validator

log = logging.getLogger("servewatch.model")
ServingPath = Literal["numpy", "compiled", "sklearn", "mixed"]

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


def _once(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`fn` remembering its last argument's answer (or error), by identity."""
    last: list[Any] = [None, None, None]  # argument, answer, error

    def call(x: Any) -> Any:
        if last[0] is not x:
            try:
                last[1:] = [fn(x), None]
            except Exception as exc:
                last[1:] = [None, exc]
            last[0] = x
        if last[2] is not None:
            raise last[2]
        return last[1]

    return call


def _soft_voting(est: Any) -> bool:
    """scikit-learn's soft VotingClassifier or a VotingRegressor, fitted."""
    from sklearn.ensemble import VotingClassifier, VotingRegressor

    if isinstance(est, VotingClassifier):
        return est.voting == "soft" and hasattr(est, "estimators_")
    return isinstance(est, VotingRegressor) and hasattr(est, "estimators_")


def _estimators(est: Any) -> list[Any]:
    """The fitted estimators that read the rows: an ensemble's members (voting, stacking), else
    the estimator itself."""
    from sklearn.ensemble import StackingClassifier, StackingRegressor

    members = getattr(est, "estimators_", None)
    voting = _soft_voting(est) or type(est).__name__.startswith("Voting")
    if members is not None and (voting or isinstance(est, StackingClassifier | StackingRegressor)):
        return list(members)
    return [est]


def _average(
    members: list[LoadedModel], columns: dict[str, list[Any]], method: str, weights: Any
) -> np.ndarray[Any, Any]:
    """As VotingClassifier.predict_proba / VotingRegressor.predict: the members' answers,
    averaged with the ensemble's weights."""
    answers = [np.asarray(m._estimate(columns, method), dtype=float) for m in members]
    return np.average(answers, axis=0, weights=weights)


WARNED = frozenset({"differs", "unchecked", "onnxruntime_missing"})
"""Reasons a part stays on scikit-learn although a fast path exists for it (the shipped
Prometheus rule ServewatchSlowServingPath warns on them)."""


@dataclass(frozen=True)
class Part:
    """How one part of a version's model call runs ("numpy", "compiled" or "sklearn") and, on
    scikit-learn, why: `reason` "none" (on its fast path), "unsupported" (no fast path
    implements it), "differs" (the fast path's answers differed on the check rows),
    "unchecked" (no check rows, or the pipeline refused them), "disabled" (turned off) or
    "onnxruntime_missing"; `detail` says what, in words."""

    runs: str
    reason: str = "none"
    detail: str = ""


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
        self._columns = [f.name for f in manifest.features]
        # A Pipeline is split into its preprocessing and final estimator; any other estimator
        # (a bare one fitted elsewhere) reads the typed frame itself, through its own methods.
        steps = getattr(pipeline, "steps", None)
        self._final: Any = steps[-1][1] if steps else pipeline
        self._pre: Any = pipeline[:-1] if steps and len(steps) > 1 else None
        self._explainer: Any = None
        self._fast: FastPreprocessor | NumericColumns | None = None
        self._fast_est: FastEstimator | None = None
        self._members: list[LoadedModel] = []
        """A soft-voting ensemble's members, each on its own fast path (empty: not used)."""
        self._weights: list[float] | None = None
        self._explainer_lock = threading.Lock()
        off = Part("sklearn", "disabled", "the fast paths are off")
        self.plan: dict[str, Part] = {"estimator": off}
        """Per part of the model call ("preprocessing", "estimator"; an ensemble's
        "member N preprocessing"...): what runs it and why (`Part`)."""
        if self._pre is not None:
            self.plan = {"preprocessing": off, **self.plan}
        self._numeric_set = set(names_of(manifest.features, "numeric"))
        self._datetime_set = set(names_of(manifest.features, "datetime"))
        self._none = none_columns(pipeline, self._columns)
        """Category columns whose missing value the pipeline was trained with as None (the
        others get NaN, see `core.missing.none_columns`)."""
        self._reference: bytes | None = None
        """reference.parquet as hashed at load (the explainer's background): never re-read."""
        # a value beyond float32's range is refused in validation, not by the model's call
        self.validator.float32 = any(reads_float32(m) for m in _estimators(self._final))

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
                model.plan = dict.fromkeys(model.plan, unchecked)
            if sample is not None:
                model.enable_fast_path(sample, compiled=compiled)
        try:
            model.predict_columns(model.example_columns())
        except Exception as exc:
            raise ModelLoadError(f"{name} v{version}: warm-up prediction failed ({exc})") from None
        return model

    @property
    def serving_path(self) -> ServingPath:
        """Which code runs a model call: "numpy" (every fitted part replayed), "compiled" (the
        preprocessing replayed, the tree model compiled for ONNX Runtime), "sklearn" (none: the
        pipeline's own methods) or "mixed" (some parts, the others scikit-learn's own)."""
        if self._members:  # an ensemble: as its members run, together
            paths = {m.serving_path for m in self._members}
            if paths <= {"numpy", "compiled"}:
                return "compiled" if "compiled" in paths else "numpy"
            return "mixed"
        parts = [self._fast_est is not None]
        if self._pre is not None:
            parts.append(self._fast is not None)
        if all(parts):
            return "compiled" if self._fast_est and self._fast_est.kind == "onnx" else "numpy"
        return "mixed" if any(parts) else "sklearn"

    def explainer(self) -> Any:
        """Built on first use (it reads the reference sample as background); thread-safe."""
        with self._explainer_lock:
            if self._explainer is None:
                from core.explain import Explainer

                if self._reference is None:
                    raise ValueError(f"{self.name} v{self.version} has no checked reference sample")
                background = pd.read_parquet(io.BytesIO(self._reference))
                self._explainer = Explainer(
                    self.pipeline, self._columns, background, task=self.manifest.task
                )
            return self._explainer

    def explain_columns(self, columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Per row: each input feature's contribution, the base value and the method."""
        transformed = self._fast.transform(columns) if self._fast is not None else None
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
        numeric, dates, none = self._numeric_set, self._datetime_set, self._none
        for col in self._columns:
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
            for c in self._columns
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
            for col in self._columns:
                columns[col].append(row[col])
        return columns

    def enable_fast_path(self, sample: pd.DataFrame, *, compiled: bool = True) -> bool:
        """Use the numpy replays of the preprocessing and of the final estimator where each gives
        the pipeline's exact output on `check_columns(sample)` (reference rows, the schema example
        and generated awkward rows); any part that is not replayed (its parameters are checked
        explicitly, see service/inference/fastpath.py), or differs, stays scikit-learn's own.
        Tree models are compiled for ONNX Runtime (service/inference/compiled.py) unless
        `compiled` is False, and checked the same way, predicted classes included. True when
        anything is used; `serving_path` says which. A bare estimator fitted on number columns alone
        reads them as one float matrix, so its replay or compiled form can serve it too."""
        # The generated rows overflow on purpose (1e308 scaled): on both paths, warned by neither.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._check_and_enable(sample, compiled)

    def _check_and_enable(self, sample: pd.DataFrame, compiled: bool) -> bool:
        if self._pre is None and _soft_voting(self._final):
            return self._enable_members(sample, compiled)
        columns = self.check_columns(sample)
        final = self._final
        reads: Callable[[Any], Any] | None = None  # how the estimator reads the matrix
        if self._pre is None:  # a bare estimator: only on number columns, as one matrix
            names = [str(c) for c in getattr(final, "feature_names_in_", self._columns)]
            if set(names) - self._numeric_set or len(names) != len(self._columns):
                what = f"a bare {type(final).__name__} reading category or timestamp columns"
                self._note("estimator", Part("sklearn", "unsupported", what))
                return False
            bare = NumericColumns(names)
            expected = bare.transform(columns)
            if hasattr(final, "feature_names_in_"):
                reads = partial(pd.DataFrame, columns=names)
        else:
            fast, why = FastPreprocessor.attempt(self.pipeline)
            if fast is None:
                self._note("preprocessing", Part("sklearn", "unsupported", why))
            try:
                out = self._pre.transform(self.frame(columns))
                expected = np.asarray(out.toarray() if hasattr(out, "toarray") else out)
            except Exception as exc:  # any doubt: the pipeline stays
                refused = Part("sklearn", "unchecked", f"the pipeline refuses a check row: {exc}")
                if fast is not None:
                    self._note("preprocessing", refused)
                self._note("estimator", refused)
                return False
            if fast is not None and self._same(lambda: fast.transform(columns), lambda: expected):
                self._fast = fast
                self.plan["preprocessing"] = Part("numpy")
            elif fast is not None:
                what = "the numpy replay differs from the pipeline on the check rows"
                self._note("preprocessing", Part("sklearn", "differs", what))
        est, code, detail = FastEstimator.attempt(final, compile=compiled)
        if est is not None:
            method = "predict_proba" if self.classes is not None else "predict"
            mine, own = getattr(est, method), getattr(final, method)

            def theirs(x: Any) -> Any:
                return own(x if reads is None else reads(x))

            same_rows = partial(self._same_rows, decided=self._decide)
            if mine is not None and same_rows(mine, theirs, expected):
                self._fast_est = est
                self.plan["estimator"] = Part("compiled" if est.kind == "onnx" else "numpy")
                if self._pre is None:
                    self._fast = bare
            else:
                what = f"the {est.kind} estimator differs from scikit-learn's on the check rows"
                self._note("estimator", Part("sklearn", "differs", what))
        else:
            self._note("estimator", Part("sklearn", code, detail))
        return self._fast is not None or self._fast_est is not None

    def _note(self, part: str, plan: Part) -> None:
        """`part` stays on scikit-learn, and why: logged (a warning where a fast path exists)."""
        if len(plan.detail) > 300:  # an exception's text can be long
            plan = Part(plan.runs, plan.reason, plan.detail[:297] + "...")
        self.plan[part] = plan
        level = logging.WARNING if plan.reason in WARNED else logging.INFO
        log.log(level, "%s v%s: %s on scikit-learn (%s: %s)", self.name, self.version, part,
                plan.reason, plan.detail)  # fmt: skip

    def _decide(self, proba: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Each row's predicted class index, by this version's decision (threshold or argmax)."""
        return decide(proba, self.threshold, self.positive)

    @classmethod
    def _same_rows(
        cls,
        mine: Callable[[Any], Any],
        theirs: Callable[[Any], Any],
        x: np.ndarray[Any, Any],
        decided: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] = decide,
    ) -> bool:
        """`mine` answers as `theirs` on the rows of `x`: all at once, or, when the estimator
        refuses the batch (a row scaled past the float range), row by row, each answered alike
        or refused by both. Alike: the same values (see `_same`) and, for probabilities, the
        same predicted class on every row, as `decided` (the version's own decision: its
        threshold, when it has one) turns them into classes. Each side answers each batch or
        row once (a scikit-learn forest's answer on the check rows is most of a compiled load's
        time)."""
        mine, theirs = _once(mine), _once(theirs)
        try:
            theirs(x)
        except Exception:
            return all(cls._same_row(mine, theirs, r, decided) for r in x[:, None])
        return cls._same_row(mine, theirs, x, decided)

    @classmethod
    def _same_row(
        cls,
        mine: Callable[[Any], Any],
        theirs: Callable[[Any], Any],
        row: np.ndarray[Any, Any],
        decided: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]],
    ) -> bool:
        """One row (or a batch the estimator answers) answered alike, or refused by both."""
        if not cls._same(partial(mine, row), partial(theirs, row)):
            return False
        try:
            return cls._same_decisions(mine, theirs, row, decided)
        except Exception:  # refused by both
            return True

    @staticmethod
    def _same_decisions(
        mine: Callable[[Any], Any],
        theirs: Callable[[Any], Any],
        x: np.ndarray[Any, Any],
        decided: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]],
    ) -> bool:
        want = np.asarray(theirs(x), dtype=float)
        if want.ndim != 2:  # regression values: nothing to decide
            return True
        return bool(np.array_equal(decided(np.asarray(mine(x), dtype=float)), decided(want)))

    @staticmethod
    def _same(fast: Callable[[], Any], slow: Callable[[], Any]) -> bool:
        """Equal to 1e-9 (and 1e-12 relative, for outputs near the float limits), NaN where
        NaN, same shape; or both raise."""
        try:
            want = np.asarray(slow(), dtype=float)
        except Exception:
            try:
                fast()
            except Exception:
                return True
            return False
        try:
            got = np.asarray(fast(), dtype=float)
            if got.shape != want.shape:
                return False
            return bool(np.allclose(got, want, rtol=1e-12, atol=1e-9, equal_nan=True))
        except Exception:
            return False

    def _enable_members(self, sample: pd.DataFrame, compiled: bool) -> bool:
        """A soft-voting ensemble (training's `ensemble` family, or one fitted elsewhere): each
        member gets its own fast path, checked against that member, and the weighted average of
        their answers is checked against the ensemble's own on the same rows, predicted classes
        included. Any doubt keeps scikit-learn, said in the log: a member that fails to load on
        its own, or an ensemble that refuses a check row (a member without an imputer, say:
        the rows hold a missing value of every feature), is not compared row by row (scikit-
        learn's ensemble takes tens of ms a row). A member's `answers` are not used: members
        are fitted on the ensemble's class indices."""
        voting = self._final
        # as scikit-learn weighs: one weight per member that was not dropped
        weights = (
            None
            if voting.weights is None
            else [w for (_, e), w in zip(voting.estimators, voting.weights, strict=True)
                  if e != "drop"]
        )  # fmt: skip
        method = "predict_proba" if self.classes is not None else "predict"
        try:
            members = [LoadedModel(self.manifest, est, self.path) for est in voting.estimators_]
            for member in members:
                member.enable_fast_path(sample, compiled=compiled)
            self.plan = {
                f"member {i} {part}": p for i, m in enumerate(members) for part, p in m.plan.items()
            }
            if all(m.serving_path == "sklearn" for m in members):
                return False
            columns = self.check_columns(sample)
            want = np.asarray(getattr(voting, method)(self.frame(columns)), dtype=float)
            got = _average(members, columns, method, weights)
        except Exception as exc:
            self.plan = {}
            self._note("ensemble", Part("sklearn", "unchecked", f"stays on scikit-learn: {exc}"))
            return False
        if not (
            self._same(lambda: got, lambda: want)
            and self._same_decisions(lambda _: got, lambda _: want, want, self._decide)
        ):
            self.plan = {}
            what = "the members' fast paths, averaged, differ from the ensemble"
            self._note("ensemble", Part("sklearn", "differs", what))
            return False
        self._members, self._weights = members, weights
        return True

    def _features(self, columns: dict[str, list[Any]]) -> Any:
        """The preprocessed matrix the final estimator reads."""
        if self._fast is not None:
            return self._fast.transform(columns)
        frame = self.frame(columns)
        if self._pre is None:
            return frame
        out = self._pre.transform(frame)  # sparse one-hot: dense for a replayed estimator
        return out.toarray() if self._fast_est is not None and hasattr(out, "toarray") else out

    def _estimate(self, columns: dict[str, list[Any]], method: str) -> Any:
        """`predict_proba` or `predict` of the final estimator (its numpy replay when verified)
        on the preprocessed rows."""
        if self._members:
            return _average(self._members, columns, method, self._weights)
        fast = getattr(self._fast_est, method, None) if self._fast_est is not None else None
        return (fast or getattr(self._final, method))(self._features(columns))

    def predict_columns(self, columns: dict[str, list[Any]]) -> Outputs:
        """One model call for all rows (a whole micro-batch)."""
        if self.classes is not None:
            proba = np.asarray(self._estimate(columns, "predict_proba"), dtype=float)
            idx = self._decide(proba)
            answers = self.answers
            preds = [answers[i] for i in idx]
            rounded = np.round(proba, 6).tolist()
            probs = [dict(zip(self.classes, row, strict=True)) for row in rounded]
            return Outputs(preds, probs)
        values = np.asarray(self._estimate(columns, "predict"), dtype=float).tolist()
        return Outputs(values, None)
