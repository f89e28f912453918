"""Reading data sets, inferring the task and the feature kinds, and splitting without leaks."""

from __future__ import annotations

import decimal
import difflib
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from training import sources
from training.config import SourceOptions, TrainConfig
from training.errors import TrainingError
from training.sources import Loaded

DEMO_PREFIX = "demo:"


def load_dataset(source: str, options: SourceOptions | None = None, seed: int = 0) -> pd.DataFrame:
    """Read a CSV or Parquet file, a Parquet dataset folder, a PostgreSQL query or table
    (training/sources.py), or a packaged demo (`demo:flights`)."""
    return read_data(source, options, seed).frame


def read_data(source: str, options: SourceOptions | None = None, seed: int = 0) -> Loaded:
    """`load_dataset`, with the record of where the rows came from (for the manifest)."""
    if source.startswith(DEMO_PREFIX):
        from training import demo

        if source != "demo:flights":
            raise TrainingError(f"data {source!r}: unknown demo; the packaged one is demo:flights")
        return Loaded(demo.load_flights(), {"kind": "demo", "name": source})
    options = options or SourceOptions()
    if sources.is_source(source) or options.query or options.table:  # the latter: a clear error
        return sources.load(source, options, seed)
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
    return Loaded(frame, {"kind": "file", "path": source})


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
    """Strings as plain Python objects (whole numbers without ".0", as the service turns a
    number sent for a category into text), every missing value (None, NaN, pd.NA, NaT) as NaN: the
    one representation of "missing" from here to the encoder, the one the categorical imputer
    (missing_values=np.nan) replaces; a None would pass it and become a category of its own."""
    if pd.api.types.is_float_dtype(series):  # integer codes with gaps: "3", as the service reads 3
        text = [str(int(v)) if v.is_integer() else str(v) for v in series.to_numpy()]
    else:
        text = series.astype("string").astype(object).tolist()
    values = [np.nan if gap else v for v, gap in zip(text, series.isna(), strict=True)]
    return pd.Series(values, index=series.index, name=series.name, dtype=object)


@dataclass(frozen=True)
class ParsedTimes:
    """The time column read as times, and what could not be read."""

    column: str
    values: pd.Series  # timezone-naive (UTC when the text had an offset); NaT where unreadable
    how: str  # "as given", "day first" (asked), "day first, detected", or the time_format
    unparseable: int  # values present that could not be read
    example: str | None  # one of them
    missing: int  # values absent


def parse_times(raw: pd.Series, column: str, time_format: str | None = None) -> ParsedTimes:
    """Read the time column: with `time_format` (a strftime format, or "dayfirst") as told;
    without, month first and day first are both tried and the reading that leaves fewer values
    unread wins (13/02/2024 is read day first rather than dropped)."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        values = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz else raw
        return ParsedTimes(column, values, "as given", 0, None, int(raw.isna().sum()))
    tries: list[tuple[str, dict[str, object]]]
    if time_format == "dayfirst":
        tries = [("day first", {"dayfirst": True})]
    elif time_format:
        tries = [(time_format, {"format": time_format})]
    else:
        tries = [("as given", {}), ("day first, detected", {"dayfirst": True})]
    present = raw.notna()
    best: ParsedTimes | None = None
    for how, options in tries:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
            parsed = pd.to_datetime(raw, errors="coerce", utc=True, **options)  # type: ignore[call-overload]
        values = parsed.dt.tz_localize(None)
        bad = raw[present & values.isna()]
        example = str(bad.iloc[0]) if len(bad) else None
        found = ParsedTimes(column, values, how, len(bad), example, int((~present).sum()))
        if best is None or found.unparseable < best.unparseable:
            best = found
    assert best is not None
    return best


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
    copies: int = 0
    """Rows that have a copy (identical but for the target), each copy kept on its row's side."""


COPIES_CAP = 10
"""Rows identical to at most max(COPIES_CAP, 1% of the rows) others are copies and are kept on
one side of every split; a value repeated more often is a natural repeat (a table of few
distinct rows, such as a few categorical columns) and its rows are split as any others."""


def copy_groups(x: pd.DataFrame) -> np.ndarray | None:
    """A group id per row: rows identical in every column share one (copies), a natural repeat's
    rows (see COPIES_CAP) and unique rows get their own. None when no row has a copy."""
    n = len(x)
    if n == 0:
        return None
    codes, _ = pd.factorize(pd.util.hash_pandas_object(x, index=False).to_numpy())
    sizes = np.bincount(codes)[codes]
    copied = (sizes > 1) & (sizes <= max(COPIES_CAP, math.ceil(0.01 * n)))
    if not copied.any():
        return None
    groups: np.ndarray = np.arange(n) + codes.max() + 1  # unique ids above every code
    groups[copied] = codes[copied]
    return groups


def group_members(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each group's first row and all its rows, groups in the order of their first rows."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    members = np.split(order, starts[1:])
    first = np.array([m[0] for m in members])
    by_row = np.argsort(first, kind="stable")
    return first[by_row], [members[i] for i in by_row]


def _expand(positions: np.ndarray, members: list[np.ndarray] | None) -> np.ndarray:
    """The rows of the groups at `positions` (the positions themselves without groups)."""
    if members is None:
        return np.asarray(positions)
    if not len(positions):
        return np.asarray(positions, dtype=int)
    return np.concatenate([members[i] for i in positions])


_NUMBERS = (bool, int, float, decimal.Decimal, np.number, np.bool_)
_NULL, _NUMBER, _TEXT = 0, 1, 2


def row_keys(frame: pd.DataFrame) -> np.ndarray:
    """A content hash per row, the same whichever read of one source the row came from: each
    VALUE normalised, whatever dtype its column was read as (a bool column with a NULL reads as
    object, an int column with a NULL as float, a chunk of NULLs as object): a bool, an integer,
    a Decimal or any number as a float, None, NaN, pd.NA and NaT as one null, anything else as
    its text."""
    norm: dict[str, np.ndarray] = {}
    for col in sorted(frame.columns, key=str):
        kind, number, text = _value_keys(frame[col])
        norm[f"{col}\0k"], norm[f"{col}\0n"], norm[f"{col}\0t"] = kind, number, text
    return pd.util.hash_pandas_object(pd.DataFrame(norm), index=False).to_numpy()


def _value_keys(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per value: its kind (null, number, text), its float (0.0 unless a number) and its text
    ("" unless text)."""
    n = len(series)
    kind = np.full(n, _TEXT, dtype=np.int8)
    number = np.zeros(n, dtype=np.float64)
    text = np.full(n, "", dtype=object)
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        gap = np.isnan(values)
        kind[:] = np.where(gap, _NULL, _NUMBER)
        number[~gap] = values[~gap] + 0.0  # -0.0 as 0.0: the hash reads the bits
        return kind, number, text
    for i, value in enumerate(series.to_numpy(dtype=object)):
        if isinstance(value, str):
            text[i] = value
        elif isinstance(value, _NUMBERS):
            f = float(value)
            if math.isnan(f):
                kind[i] = _NULL
            else:
                kind[i], number[i] = _NUMBER, f + 0.0
        elif value is None or value is pd.NA or value is pd.NaT or _is_nat(value):
            kind[i] = _NULL
        else:
            text[i] = str(value)
    return kind, number, text


def _is_nat(value: object) -> bool:
    return isinstance(value, np.datetime64) and bool(np.isnat(value))


def split(
    frame: pd.DataFrame,
    target: str,
    task: str,
    config: TrainConfig,
    pinned: np.ndarray | None = None,
) -> Splits:
    """Hold out the test set first, then split the rest into train and validation; rows
    `pinned` (a mask: the search's sample, drawn in the source) always go to train, so the
    search never saw a validation or test row. Not with a time column.

    With a time column every split is ordered in time: test is the latest rows, validation
    the latest of the rest, so no future row is ever used for training. Copies (rows identical
    in every column but the target) are kept on one side of each split: a test row's copy in
    training would score the model on a row it learned (see `copy_groups`).
    """
    x, y = frame.drop(columns=[target]), frame[target]
    s = config.split
    groups = copy_groups(x) if s.keep_copies_together else None
    copies = 0 if groups is None else int((np.bincount(groups)[groups] > 1).sum())
    if config.time_column:
        assert pinned is None, "a time-ordered split takes no pinned rows"
        order = np.argsort(frame[config.time_column].to_numpy(), kind="stable")
        x, y = x.iloc[order], y.iloc[order]
        n_test = max(1, int(round(len(x) * s.test_size)))
        n_rest = len(x) - n_test
        n_val = max(1, int(round(n_rest * s.validation_size)))
        side = np.zeros(len(x), dtype=int)
        side[n_rest - n_val :] = 1
        side[n_rest:] = 2
        if groups is not None:  # a copy goes with its latest twin (copies share their time)
            side = pd.Series(side).groupby(groups[order]).transform("max").to_numpy()
        parts = [np.flatnonzero(side == k) for k in range(3)]
        if not all(len(p) for p in parts):
            raise TrainingError("cannot split the data: too few distinct rows for every split")
        tr, va, te = parts
        return Splits(
            x.iloc[tr], y.iloc[tr], x.iloc[va], y.iloc[va], x.iloc[te], y.iloc[te], copies
        )
    reps, members = (np.arange(len(x)), None) if groups is None else group_members(groups)
    strat = y.iloc[reps] if task == "classification" else None
    held = np.zeros(len(reps), dtype=bool)
    if pinned is not None:  # a group of copies is pinned when any of its rows is
        held = pinned[reps] if members is None else np.array([pinned[m].any() for m in members])
    free, fixed = np.flatnonzero(~held), np.flatnonzero(held)
    try:
        rest, test = train_test_split(
            free,
            test_size=_held_out(len(reps), s.test_size, strat),
            random_state=config.seed,
            stratify=None if strat is None else strat.iloc[free],
        )
        strat_rest = strat.iloc[rest] if strat is not None else None
        tr, va = train_test_split(
            rest,
            test_size=_held_out(len(rest) + len(fixed), s.validation_size, strat_rest),
            random_state=config.seed,
            stratify=strat_rest,
        )
    except ValueError as exc:
        hint = f" ({len(fixed)} rows are the search's sample)" if len(fixed) else ""
        raise TrainingError(f"cannot split the data: {exc}{hint}") from None
    tr, va, te = (_expand(p, members) for p in (np.concatenate([tr, fixed]), va, test))
    return Splits(x.iloc[tr], y.iloc[tr], x.iloc[va], y.iloc[va], x.iloc[te], y.iloc[te], copies)


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
