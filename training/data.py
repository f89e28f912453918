"""Reading data sets, inferring the task and the feature kinds, and splitting without leaks."""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from training.config import TrainConfig
from training.errors import TrainingError

DEMO_PREFIX = "demo:"


def load_dataset(source: str) -> pd.DataFrame:
    """Read a CSV or Parquet file, or a packaged demo (`demo:flights`)."""
    if source.startswith(DEMO_PREFIX):
        from training import demo

        if source != "demo:flights":
            raise TrainingError(f"data {source!r}: unknown demo; the packaged one is demo:flights")
        return demo.load_flights()
    path = Path(source)
    if not path.is_file():
        raise TrainingError(f"data {source}: no such file")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise TrainingError(f"data {source}: the file is empty") from None
    except Exception as exc:  # parsers raise many types; the user needs one line
        raise TrainingError(
            f"data {source}: cannot read it ({type(exc).__name__}: {exc})"
        ) from None
    if frame.empty:
        raise TrainingError(f"data {source}: no rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Fail with the closest existing names when a configured column is missing."""
    for col in columns:
        if col not in frame.columns:
            close = difflib.get_close_matches(col, [str(c) for c in frame.columns], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TrainingError(f"{what} column {col!r} is not in the data{hint}")


def infer_task(target: pd.Series) -> str:
    """Classification for strings, booleans and integers with few values; regression otherwise."""
    values = target.dropna()
    if (
        values.dtype == object
        or values.dtype == bool
        or isinstance(values.dtype, pd.CategoricalDtype)
    ):
        return "classification"
    if pd.api.types.is_integer_dtype(values) or np.all(np.mod(values, 1) == 0):
        return "classification" if values.nunique() <= 20 else "regression"
    return "regression"


@dataclass(frozen=True)
class FeatureKinds:
    numeric: list[str]
    categorical: list[str]
    datetime: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.datetime]


def infer_feature_kinds(
    frame: pd.DataFrame, config: TrainConfig, excluded: set[str]
) -> FeatureKinds:
    """Use the declared kinds where given; infer the rest from dtypes."""
    feats = config.features
    candidates = [c for c in frame.columns if c not in excluded]
    dt = list(feats.datetime)
    numeric = feats.numeric
    categorical = feats.categorical
    if numeric is None:
        declared_cat = set(categorical or [])
        numeric = [
            c
            for c in candidates
            if c not in dt
            and c not in declared_cat
            and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
    if categorical is None:
        categorical = [c for c in candidates if c not in dt and c not in numeric]
        for col in list(categorical):
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                categorical.remove(col)
                dt.append(col)
    return FeatureKinds(numeric=list(numeric), categorical=list(categorical), datetime=dt)


def coerce_types(frame: pd.DataFrame, kinds: FeatureKinds) -> pd.DataFrame:
    """Numeric columns to float, categoricals to strings, datetimes parsed; junk fails loudly."""
    out = frame.copy()
    for col in kinds.numeric:
        if not pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col]):
            converted = pd.to_numeric(out[col], errors="coerce")
            bad = out[col][converted.isna() & out[col].notna()]
            if len(bad):
                raise TrainingError(
                    f"column {col!r} is numeric but holds {len(bad)} non-numeric value(s), "
                    f"e.g. {str(bad.iloc[0])!r}; declare it under features.categorical or clean it"
                )
            out[col] = converted
        out[col] = out[col].astype("float64")
    for col in kinds.categorical:
        out[col] = as_text(out[col])
    for col in kinds.datetime:
        parsed = pd.to_datetime(out[col], errors="coerce", utc=True).dt.tz_localize(None)
        if parsed.isna().sum() > out[col].isna().sum():
            raise TrainingError(f"column {col!r} is declared datetime but holds unparseable values")
        out[col] = parsed
    return out


def as_text(series: pd.Series) -> pd.Series:
    """Strings as plain Python objects, missing values as None (what the encoders expect)."""
    out = series.astype("string").astype(object)
    out[series.isna()] = None
    return out


@dataclass(frozen=True)
class DataSize:
    """How much data a model is fitted on: what folds, search spaces and estimators size to."""

    rows: int
    features: int
    n_classes: int = 0  # 0 for regression
    smallest_class: int | None = None  # rows of the rarest class (classification)

    def fold_train(self, folds: int) -> DataSize:
        """The size of one cross-validation fold's training part."""
        share = (folds - 1) / folds
        smallest = None if self.smallest_class is None else int(self.smallest_class * share)
        return DataSize(int(self.rows * share), self.features, self.n_classes, smallest)


def size_of(x: pd.DataFrame, y: pd.Series, task: str) -> DataSize:
    """The DataSize of training rows `x`, `y`."""
    if task != "classification":
        return DataSize(len(x), x.shape[1])
    counts = y.value_counts()
    return DataSize(len(x), x.shape[1], len(counts), int(counts.min()) if len(counts) else 0)


@dataclass(frozen=True)
class Splits:
    x_train: pd.DataFrame
    y_train: pd.Series
    x_val: pd.DataFrame
    y_val: pd.Series
    x_test: pd.DataFrame
    y_test: pd.Series


def split(frame: pd.DataFrame, target: str, task: str, config: TrainConfig) -> Splits:
    """Hold out the test set first, then split the rest into train and validation.

    With a time column every split is ordered in time: test is the latest rows, validation
    the latest of the rest, so no future row is ever used for training.
    """
    x, y = frame.drop(columns=[target]), frame[target]
    s = config.split
    if config.time_column:
        order = np.argsort(frame[config.time_column].to_numpy(), kind="stable")
        x, y = x.iloc[order], y.iloc[order]
        n_test = max(1, int(round(len(x) * s.test_size)))
        rest_x, rest_y = x.iloc[:-n_test], y.iloc[:-n_test]
        n_val = max(1, int(round(len(rest_x) * s.validation_size)))
        return Splits(
            rest_x.iloc[:-n_val],
            rest_y.iloc[:-n_val],
            rest_x.iloc[-n_val:],
            rest_y.iloc[-n_val:],
            x.iloc[-n_test:],
            y.iloc[-n_test:],
        )
    strat = y if task == "classification" else None
    try:
        rest_x, x_test, rest_y, y_test = train_test_split(
            x,
            y,
            test_size=_held_out(len(x), s.test_size, strat),
            random_state=config.seed,
            stratify=strat,
        )
        strat_rest = rest_y if task == "classification" else None
        x_tr, x_val, y_tr, y_val = train_test_split(
            rest_x,
            rest_y,
            test_size=_held_out(len(rest_x), s.validation_size, strat_rest),
            random_state=config.seed,
            stratify=strat_rest,
        )
    except ValueError as exc:
        raise TrainingError(f"cannot split the data: {exc}") from None
    return Splits(x_tr, y_tr, x_val, y_val, x_test, y_test)


def _held_out(rows: int, share: float, strat: pd.Series | None) -> int:
    """Rows to hold out: the share, but at least one per class when stratified (on small data a
    share of 150 rows can be fewer rows than there are classes, which stratification refuses)."""
    n = max(1, math.ceil(rows * share))
    return n if strat is None else max(n, int(strat.nunique()))


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 over the rows' content hash: the same data always gives the same fingerprint."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(row_hashes.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()
