"""Fitted pipeline parts replayed with plain numpy: the ColumnTransformer and linear estimators.

scikit-learn's ColumnTransformer spends most of a one-row prediction on input checks and pandas
indexing. For the preprocessing that `training/pipeline.py` builds, and the common ones fitted
elsewhere (clip, impute with indicators, scale; impute + one-hot/ordinal/target encoding;
timestamp parts, impute, scale), the fitted parameters are simple, so they are replayed here on
column lists; parts are told apart by their fitted steps. Anything else (interactions, PCA,
another transformer) returns None, with the reason, and the pipeline is used as it is. Missing
categories are answered as the fitted part answers None, NaN and pd.NA (`_Categorical`), and the
service hands the pipeline a null as it was trained (`core.missing`). FastEstimator does the
same for linear models, plain or calibrated: their predict_proba is a matrix product and a
sigmoid, but scikit-learn's input checks cost about 0.2 ms per call and CalibratedClassifierCV
makes six. Tree models (trees, forests, boosting), plain or calibrated, are compiled for ONNX
Runtime instead (service/inference/compiled.py); their calibration is replayed here like a linear
model's. Equality with the pipeline is checked when a version loads (service/inference/model.py), on
reference rows and on generated awkward ones, and every fitted parameter the replay relies on is
checked explicitly here: a part whose parameters it does not implement is not replayed.

Timestamps are parsed by one function, `parse_timestamp`, on both paths: `LoadedModel.frame`
(what the pipeline reads) and the replay, so the two cannot disagree on what a value means.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, softmax
from sklearn.base import is_regressor
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

from core.errors import ServewatchError
from core.missing import (
    ENCODERS,
    MISSING_KINDS,
    column_names,
    fitted_steps,
    is_missing,
    kept_columns,
    missing_token,
    none_columns,
)
from core.transformers import DatetimeFeatures, QuantileClipper
from service.inference.compiled import CompiledTrees, is_tree_model
from service.inference.compiled import available as compiled_available

try:  # private in scikit-learn: when a release moves it, sigmoid calibration is not replayed
    from sklearn.calibration import _SigmoidCalibration as _Sigmoid

    SIGMOID: type[Any] | None = _Sigmoid
except ImportError:  # pragma: no cover - depends on the installed scikit-learn
    SIGMOID = None

UNSEEN = "\x00servewatch-unseen\x00"
# The span of the datetime64[ns] column the pipeline reads (pandas' Timestamp.min/max, to the
# microsecond inside it): a timestamp outside it cannot be a value of that column, so it is missing.
TS_MIN = datetime(1677, 9, 21, 0, 12, 43, 145225)
TS_MAX = datetime(2262, 4, 11, 23, 47, 16, 854775)


def parse_timestamp(value: Any) -> datetime | None:
    """One timestamp as both serving paths read it: naive UTC, or None (missing).

    ISO 8601 text as the validator accepts it (`datetime.fromisoformat`, `Z` for UTC), parsed one
    value at a time so a micro-batch never mixes formats (pandas infers one format per column
    and blanks the values in another); offsets converted to UTC; anything unparseable, or
    outside the datetime64[ns] range (before 1677-09-21, after 2262-04-11, or pushed out of any
    datetime by its offset), is missing and imputed like a null. datetime objects (pandas
    Timestamps too) pass through the same conversion."""
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    elif isinstance(value, datetime):
        ts = value
        if ts != ts:  # NaT
            return None
        if type(ts) is not datetime:  # a pandas Timestamp: to the microsecond
            ts = datetime(
                ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond, ts.tzinfo
            )
    else:
        return None
    if ts.tzinfo is not None:
        try:
            ts = ts.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
            return None
    if not TS_MIN <= ts <= TS_MAX:
        return None
    return ts


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _imputer(step: Any, *, categorical: bool = False) -> SimpleImputer:
    """The fitted SimpleImputer if the replay implements its parameters, else TypeError: missing
    means NaN (or None for categories), a known strategy, one fill value per column (or none
    for a column empty in training, which scikit-learn drops: `kept_columns`), dense indicators."""
    if not isinstance(step, SimpleImputer):
        raise TypeError(type(step).__name__)
    mv = step.missing_values
    if not (_nan(mv) or (categorical and mv is None)):
        raise TypeError(f"missing_values={mv!r}")
    if step.strategy not in ("mean", "median", "most_frequent", "constant"):
        raise TypeError(f"strategy={step.strategy!r}")
    stats = list(step.statistics_)
    if any(v is None or _nan(v) for v in stats) and step.keep_empty_features:
        raise TypeError("a feature without a fill value")
    if not categorical and not all(isinstance(v, int | float | np.number) for v in stats):
        raise TypeError("non-numeric fill values")
    indicator = step.indicator_ if step.add_indicator else None
    if indicator is not None:
        if categorical:
            raise TypeError("missing-value indicators on categories")
        if indicator.sparse is True or indicator.features not in ("missing-only", "all"):
            raise TypeError("sparse or unknown indicators")
        if not (_nan(indicator.missing_values)):
            raise TypeError("indicator missing_values")
    return step


LINEAR = (
    LogisticRegression,
    SGDClassifier,
    LinearRegression,
    Ridge,
    Lasso,
    ElasticNet,
    SGDRegressor,
)


class _Scale:
    """A fitted scaler's transform, with scikit-learn's own operations in its order (so even
    values near the float limits round alike): (x - offset) / divisor for StandardScaler and
    RobustScaler, x * factor + offset for MinMaxScaler."""

    def __init__(self, step: Any) -> None:
        self.divide = not isinstance(step, MinMaxScaler)
        if isinstance(step, StandardScaler):
            self.offset = np.asarray(step.mean_ if step.with_mean else 0.0, dtype=float)
            self.factor = np.asarray(step.scale_ if step.with_std else 1.0, dtype=float)
        elif isinstance(step, RobustScaler):
            self.offset = np.asarray(step.center_ if step.with_centering else 0.0, dtype=float)
            self.factor = np.asarray(step.scale_ if step.with_scaling else 1.0, dtype=float)
        elif isinstance(step, MinMaxScaler) and not step.clip:
            self.offset = np.asarray(step.min_, dtype=float)
            self.factor = np.asarray(step.scale_, dtype=float)
        else:
            raise TypeError(type(step).__name__)

    def __call__(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self.divide:
            return (x - self.offset) / self.factor  # type: ignore[no-any-return]
        return x * self.factor + self.offset  # type: ignore[no-any-return]


class _Numeric:
    """Number columns: a QuantileClipper, a SimpleImputer (indicators too) and a scaler, each
    optional, in that order ('passthrough' alone: the numbers as they are)."""

    def __init__(self, steps: list[Any], columns: list[str]) -> None:
        self.columns = columns
        self.lower = self.upper = None
        self.fill: np.ndarray[Any, Any] | None = None
        self.keep: np.ndarray[Any, Any] | None = None
        self.indicators: list[int] = []
        self.scale: _Scale | None = None
        stage = 0  # what may come next: 0 anything, 1 an imputer or a scaler, 2 a scaler
        for step in steps:
            if isinstance(step, QuantileClipper) and stage == 0:
                self.lower, self.upper = step.lower_bounds_, step.upper_bounds_
                stage = 1
            elif isinstance(step, SimpleImputer) and stage <= 1:
                imputer = _imputer(step)
                fill = np.asarray(imputer.statistics_, dtype=float)
                if np.isnan(fill).any():  # empty in training: dropped (its indicator stays)
                    self.keep = np.flatnonzero(~np.isnan(fill))
                self.fill = fill[self.keep] if self.keep is not None else fill
                if imputer.indicator_ is not None:
                    self.indicators = list(imputer.indicator_.features_)
                stage = 2
            elif stage <= 2 and not isinstance(step, QuantileClipper | SimpleImputer):
                self.scale = _Scale(step)  # TypeError: not a scaler the replay implements
                stage = 3
            else:
                raise TypeError(f"{type(step).__name__} after another step")

    def transform(self, data: dict[str, list[Any]], n: int) -> np.ndarray[Any, Any]:
        # One conversion for all columns; numpy reads None as NaN in a float array.
        x = np.array([data[col] for col in self.columns], dtype=float).T.reshape(n, -1)
        if self.lower is not None:
            x = np.clip(x, self.lower, self.upper)
        missing = np.isnan(x)
        if self.fill is not None:
            if self.keep is not None:
                x = np.where(missing[:, self.keep], self.fill, x[:, self.keep])
            else:
                x = np.where(missing, self.fill, x)
        if self.indicators:
            x = np.hstack([x, missing[:, self.indicators].astype(float)])
        if self.scale is not None:
            x = self.scale(x)
        return x


class _Categorical:
    """Category columns through a fitted imputer and encoder (one-hot, ordinal or target
    encoding), read off the fitted part itself: per column, the output block of every learned
    category, of an unseen one and of each kind of missing value (None, NaN, pd.NA), each as the
    part answers it (or refuses it) with the other columns held fixed. Each output column
    depends on one input column in these steps, so a row is the blocks of its values."""

    def __init__(self, trans: Any, columns: list[str], none: set[str]) -> None:
        steps = fitted_steps(trans)
        if not steps or not isinstance(steps[-1], ENCODERS):
            raise TypeError("no encoder")
        passed = columns
        for step in steps[:-1]:
            passed = kept_columns(_imputer(step, categorical=True), passed)
        encoder = steps[-1]
        if getattr(encoder, "handle_unknown", None) == "error":  # raises on an unseen category
            raise TypeError("handle_unknown='error'")
        self.columns = columns
        named = hasattr(steps[0], "feature_names_in_")
        if len(encoder.categories_) != len(passed):
            raise TypeError("the encoder does not read one column per input column")
        learned = dict(zip(passed, encoder.categories_, strict=True))
        cats = [list(learned.get(c, [])) for c in columns]  # none: dropped by the imputer

        def run(rows: list[list[Any]]) -> np.ndarray[Any, Any]:
            x: Any = np.array(rows, dtype=object).reshape(len(rows), len(columns))
            if named:
                x = pd.DataFrame(x, columns=columns)
            out = trans.transform(x)
            return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=float)

        # A known value per column to hold the others fixed (a category that is a value).
        base = [next((c for c in cs if not is_missing(c)), UNSEEN) for cs in cats]
        zero = run([base])[0]
        self.base = zero
        self.codes: list[dict[Any, int]] = []
        self.tables: list[np.ndarray[Any, Any]] = []
        self.blocks: list[np.ndarray[Any, Any]] = []
        self.refused: list[int] = []
        """Per column, the table row standing for "refused" (-1: nothing is refused)."""
        taken = np.zeros(len(zero), dtype=bool)
        for i, col in enumerate(columns):
            values = [c for c in cats[i] if not is_missing(c)] + [UNSEEN]
            out = run([[*base[:i], v, *base[i + 1 :]] for v in values])
            codes = {v: k for k, v in enumerate(values)}
            rows = [out]
            refused = -1  # a refused value's row: never read (the call raises first)
            token = missing_token(none, col)
            for kind in MISSING_KINDS:
                probe = token if kind is None else kind
                try:
                    rows.append(run([[*base[:i], probe, *base[i + 1 :]]]))
                except (TypeError, ValueError):  # as scikit-learn refuses it (pd.NA, say)
                    if refused < 0:
                        refused = sum(len(r) for r in rows)
                        rows.append(zero[None, :])
                    codes[kind] = refused
                    continue
                codes[kind] = sum(len(r) for r in rows) - 1
            table = np.vstack(rows)
            changes = ~np.all((table == zero) | (np.isnan(table) & np.isnan(zero)), axis=0)
            if np.any(changes & taken):
                raise TypeError("an output column depends on two input columns")
            taken |= changes
            block = np.flatnonzero(changes)
            self.blocks.append(block)
            self.codes.append(codes)
            self.tables.append(table[:, block])
            self.refused.append(refused)

    def transform(self, data: dict[str, list[Any]], n: int) -> np.ndarray[Any, Any]:
        x = np.repeat(self.base[None, :], n, axis=0)
        for i, col in enumerate(self.columns):
            codes = self.codes[i]
            unseen = codes[UNSEEN]
            values = data[col]
            rows = [codes.get(v, unseen) for v in values]
            if unseen in rows:  # NaN is a key only as its own object: look again
                rows = [
                    codes[np.nan] if r == unseen and is_missing(v) else r
                    for r, v in zip(rows, values, strict=True)
                ]
            if self.refused[i] >= 0 and self.refused[i] in rows:
                raise ValueError(f"{col}: a missing value the pipeline refuses")
            x[:, self.blocks[i]] = self.tables[i][rows]
        return x


class _Datetime:
    """DatetimeFeatures (month, day of week, hour + minute / 60, in UTC), median imputation and
    scaling, per value. pandas infers one format for a whole column and turns the values that do
    not match it into NaT, so in a micro-batch one client's format could blank another's; here
    every value is parsed on its own (the service has validated it as ISO 8601)."""

    def __init__(self, steps: list[Any], columns: list[str]) -> None:
        if len(steps) not in (2, 3) or not isinstance(steps[0], DatetimeFeatures):
            raise TypeError("timestamps: not parts, imputer, scaler")
        imputer = _imputer(steps[1])
        if imputer.add_indicator:
            raise TypeError("missing-value indicators")
        self.columns = columns
        self.fill = np.asarray(imputer.statistics_, dtype=float)
        if np.isnan(self.fill).any():
            raise TypeError("a timestamp column empty in training")
        self.scale = _Scale(steps[2]) if len(steps) == 3 else None

    @staticmethod
    def _parts(value: Any) -> tuple[float, float, float]:
        ts = parse_timestamp(value)
        if ts is None:
            return (np.nan, np.nan, np.nan)
        return (float(ts.month), float(ts.weekday()), ts.hour + ts.minute / 60.0)

    def transform(self, data: dict[str, list[Any]], n: int) -> np.ndarray[Any, Any]:
        blocks = [
            np.array([self._parts(v) for v in data[col]], dtype=float).reshape(n, 3)
            for col in self.columns
        ]
        x = np.hstack(blocks)
        x = np.where(np.isnan(x), self.fill, x)
        if self.scale is not None:
            x = self.scale(x)
        return x


def _part(trans: Any, columns: list[str], none: set[str]) -> Any:
    """One ColumnTransformer part's replay, told apart by its fitted steps; TypeError when the
    replay does not implement it."""
    if isinstance(trans, str):
        if trans != "passthrough":
            raise TypeError(trans)
        return _Numeric([], columns)
    steps = fitted_steps(trans)
    if steps and isinstance(steps[0], DatetimeFeatures):
        return _Datetime(steps, columns)
    if any(isinstance(s, ENCODERS) for s in steps):
        return _Categorical(trans, columns, none)
    return _Numeric(steps, columns)


class FastPreprocessor:
    """Column lists in, the preprocessing's output matrix out: a ColumnTransformer (training's
    or one fitted elsewhere) whose parts are number, category and timestamp steps the replay
    implements, or one such part on every column."""

    def __init__(self, parts: list[tuple[str, Any]]) -> None:
        self.parts = parts

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> FastPreprocessor | None:
        return cls.attempt(pipeline)[0]

    @classmethod
    def attempt(cls, pipeline: Pipeline) -> tuple[FastPreprocessor | None, str]:
        """The replay of the pipeline's preprocessing, or None and why not."""
        if len(pipeline.steps) != 2:
            middle = ", ".join(type(s).__name__ for _, s in pipeline.steps[1:-1])
            return None, f"not replayed: {middle} between the preprocessing and the estimator"
        pre = pipeline.steps[0][1]
        names = [str(c) for c in getattr(pre, "feature_names_in_", [])]
        none = none_columns(pipeline, names)
        parts: list[tuple[str, Any]] = []
        try:
            if not isinstance(pre, ColumnTransformer):
                if not names:
                    return None, f"not replayed: {type(pre).__name__} fitted without column names"
                return cls([(type(pre).__name__, _part(pre, names, none))]), ""
            for name, trans, cols in pre.transformers_:
                columns = column_names(pre, cols)
                if isinstance(trans, str) and trans == "drop" or not columns:
                    continue
                try:
                    parts.append((name, _part(trans, columns, none)))
                except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
                    kind = type(trans).__name__ if not isinstance(trans, Pipeline) else "Pipeline"
                    return None, f"not replayed: part {name!r} ({kind}): {exc}"
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            return None, f"not replayed: {exc}"
        return cls(parts), ""

    def transform(self, data: dict[str, list[Any]]) -> np.ndarray[Any, Any]:
        n = len(next(iter(data.values())))
        return np.hstack([part.transform(data, n) for _, part in self.parts])


class NumericColumns:
    """Number columns straight into the float matrix a bare estimator (no preprocessing, fitted
    on numeric columns) reads: None -> NaN, in `columns` order."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def transform(self, data: dict[str, list[Any]]) -> np.ndarray[Any, Any]:
        n = len(data[self.columns[0]])
        return np.array([data[c] for c in self.columns], dtype=float).T.reshape(n, -1)


def _linear_scores(est: Any) -> Any:
    """x -> decision scores of a fitted linear model (coef_ / intercept_), or raise TypeError."""
    if not isinstance(est, LINEAR):
        raise TypeError(type(est).__name__)
    coef = np.asarray(est.coef_, dtype=float)
    intercept = np.asarray(est.intercept_, dtype=float)
    if coef.ndim == 1:
        return lambda x: x @ coef + intercept
    if coef.shape[0] == 1:  # binary classifier: one column of scores
        return lambda x: x @ coef[0] + intercept[0]
    return lambda x: x @ coef.T + intercept


def _calibrator(cal: Any) -> Any:
    if SIGMOID is not None and isinstance(cal, SIGMOID):
        a, b = float(cal.a_), float(cal.b_)
        return lambda t: expit(-(a * t + b))
    if isinstance(cal, IsotonicRegression) and cal.out_of_bounds == "clip":
        xs, ys = cal.X_thresholds_, cal.y_thresholds_
        lo, hi = cal.X_min_, cal.X_max_
        return lambda t: np.interp(np.clip(t, lo, hi), xs, ys)
    raise TypeError(type(cal).__name__)


def _binary_calibration(cals: list[Any]) -> Any:
    """Responses (n rows x members) -> the members' mean calibrated p1: all sigmoid in one
    vectorised step; isotonic with one np.interp each (its clip is np.interp's own clamping
    when the bounds are the first and last thresholds, as fitted)."""
    if SIGMOID is not None and all(isinstance(c, SIGMOID) for c in cals):
        a = np.array([float(c.a_) for c in cals])
        b = np.array([float(c.b_) for c in cals])
        return lambda r: expit(-(a * r + b)).mean(axis=1)
    steps = []
    for cal in cals:
        if (
            isinstance(cal, IsotonicRegression)
            and cal.out_of_bounds == "clip"
            and cal.X_min_ == cal.X_thresholds_[0]
            and cal.X_max_ == cal.X_thresholds_[-1]
        ):
            steps.append(partial(np.interp, xp=cal.X_thresholds_, fp=cal.y_thresholds_))
        else:
            steps.append(_calibrator(cal))

    def mean(r: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        total: np.ndarray[Any, Any] = np.asarray(steps[0](r[:, 0]))
        for k in range(1, len(steps)):
            total = total + steps[k](r[:, k])
        return total / len(steps)

    return mean


def _calibration(cc: Any) -> Any:
    """One fitted `_CalibratedClassifier`'s calibrators: its estimator's response (1-D scores
    when binary, a column per class otherwise) -> class probabilities."""
    cals = [_calibrator(c) for c in cc.calibrators]
    if len(cals) == 1:  # binary

        def binary(s: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            p1 = cals[0](s)
            return np.column_stack([1.0 - p1, p1])

        return binary

    def multi(s: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        p = np.column_stack([cal(s[:, k]) for k, cal in enumerate(cals)])
        total = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total == 0, uniform, p / total)

    return multi


class Unavailable(ServewatchError):
    """A fast path exists for this part but is not used here: `code` "disabled" (compiled trees
    turned off) or "onnxruntime_missing"."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def _compiled(estimators: list[Any], compile: bool) -> CompiledTrees:
    """Tree models compiled into one session; Unavailable when compiling is off or onnxruntime
    is missing, TypeError when they are not tree models this compiles (and why)."""
    if not all(is_tree_model(e) for e in estimators):
        raise TypeError("neither replayed (linear models) nor compiled (tree models)")
    if not compile:
        raise Unavailable("disabled", "compiled trees are off (SERVEWATCH_COMPILED_TREES=false)")
    if not compiled_available():
        raise Unavailable("onnxruntime_missing", "onnxruntime is not installed (servewatch[fast])")
    try:
        return CompiledTrees(estimators)
    except (TypeError, AttributeError, ValueError, IndexError) as exc:
        raise TypeError(f"not compiled: {exc}") from None


def _calibrated_members(est: CalibratedClassifierCV, compile: bool) -> tuple[Any, str]:
    """x -> the mean of the members' calibrated probabilities, and "numpy" (linear members
    replayed) or "onnx" (tree members compiled into one session); TypeError otherwise."""
    members = est.calibrated_classifiers_
    cals = [_calibration(cc) for cc in members]
    if all(isinstance(cc.estimator, LINEAR) for cc in members):
        scores = [_linear_scores(cc.estimator) for cc in members]

        def replayed(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            parts = [cal(score(x)) for cal, score in zip(cals, scores, strict=True)]
            return sum(parts) / len(parts)  # type: ignore[no-any-return]

        return replayed, "numpy"
    compiled = _compiled([cc.estimator for cc in members], compile)

    binary = compiled.binary_responses()
    if binary is not None and all(len(cc.calibrators) == 1 for cc in members):
        # binary: the members' responses as one matrix, calibrated together, p1 averaged once
        calibrate = _binary_calibration([cc.calibrators[0] for cc in members])

        def compiled_binary(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            p1 = calibrate(binary(x))
            return np.column_stack([1.0 - p1, p1])

        return compiled_binary, "onnx"

    def compiled_proba(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        parts = [cal(r) for cal, r in zip(cals, compiled.responses(x), strict=True)]
        return sum(parts) / len(parts)  # type: ignore[no-any-return]

    return compiled_proba, "onnx"


def _fused_binary_sigmoid(est: CalibratedClassifierCV) -> Any:
    """The common case in one matrix product: a binary CalibratedClassifierCV whose members are
    linear models with sigmoid calibration (our linear family). The members' weights stack into
    one matrix, so a call is five numpy operations instead of five per member. None otherwise."""
    members = est.calibrated_classifiers_
    if len(est.classes_) != 2 or not all(
        isinstance(cc.estimator, LINEAR)
        and len(cc.calibrators) == 1
        and SIGMOID is not None
        and isinstance(cc.calibrators[0], SIGMOID)
        for cc in members
    ):
        return None
    weights = np.column_stack([np.ravel(cc.estimator.coef_) for cc in members])
    bias = np.array([float(np.ravel(cc.estimator.intercept_)[0]) for cc in members])
    a = np.array([float(cc.calibrators[0].a_) for cc in members])
    b = np.array([float(cc.calibrators[0].b_) for cc in members])

    def proba(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        p1 = expit(-((x @ weights + bias) * a + b)).mean(axis=1)
        return np.column_stack([1.0 - p1, p1])

    return proba


def _finite(fn: Any) -> Any:
    """`fn` refusing non-finite rows as scikit-learn's input check does (an unclipped 1e308
    scaled past the float range): the replay answers exactly when the estimator would."""
    if fn is None:
        return None

    def checked(x: np.ndarray[Any, Any]) -> Any:
        if not np.isfinite(x).all():
            raise ValueError("Input contains NaN or infinity.")
        return fn(x)

    return checked


class FastEstimator:
    """The fitted final estimator on the preprocessed matrix: linear models replayed with numpy
    (`kind` "numpy"), tree models compiled for ONNX Runtime (`kind` "onnx"; not when `compile` is
    False or onnxruntime is missing), plain or inside CalibratedClassifierCV. SVMs, MLPs and
    anything else return None."""

    def __init__(self, proba: Any, predict: Any, kind: str = "numpy") -> None:
        # The compiled trees check their input as scikit-learn's trees do (NaN may be allowed).
        self.predict_proba = _finite(proba) if kind == "numpy" else proba
        self.predict = _finite(predict) if kind == "numpy" else predict
        self.kind = kind

    @classmethod
    def from_estimator(cls, est: Any, *, compile: bool = True) -> FastEstimator | None:
        return cls.attempt(est, compile=compile)[0]

    @classmethod
    def attempt(cls, est: Any, *, compile: bool = True) -> tuple[FastEstimator | None, str, str]:
        """The estimator's replay or compiled form, or None with a reason code ("unsupported",
        "disabled", "onnxruntime_missing") and what it is about."""
        try:
            return cls._build(est, compile), "none", ""
        except Unavailable as exc:
            return None, exc.code, exc.detail
        except (TypeError, AttributeError, ValueError) as exc:
            return None, "unsupported", f"{type(est).__name__}: {exc}"

    @classmethod
    def _build(cls, est: Any, compile: bool) -> FastEstimator:
        if isinstance(est, CalibratedClassifierCV):
            fused = _fused_binary_sigmoid(est)
            if fused is not None:
                return cls(fused, None)
            proba, kind = _calibrated_members(est, compile)
            return cls(proba, None, kind)
        if not isinstance(est, LINEAR):
            compiled = _compiled([est], compile)
            if compiled.n_classes:
                return cls(compiled.predict_proba, None, "onnx")
            return cls(None, compiled.predict, "onnx")
        scores = _linear_scores(est)
        if is_regressor(est):
            return cls(None, scores)
        if getattr(est, "loss", "log_loss") != "log_loss":
            raise TypeError(f"loss={est.loss!r}: no probabilities to replay")
        if len(est.classes_) == 2:

            def logistic(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
                p1 = expit(scores(x))
                return np.column_stack([1.0 - p1, p1])

            return cls(logistic, None)
        if isinstance(est, LogisticRegression):
            return cls(lambda x: softmax(scores(x), axis=1), None)
        raise TypeError("one-vs-rest over several classes")
