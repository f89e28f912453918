"""Row fingerprints: a 64-bit hash of each raw row (features and label, as read) a version trained,
validated and was tested on, kept in its folder so later runs know which rows it has seen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.registry import Manifest
from training.prepare import Prepared

ROWS_FILE = "training_rows.parquet"
"""Columns `hash` (uint64) and `split` (train, validation, test, refit); listed and hashed in
`files`."""
SPLITS = ("train", "validation", "test")
REFIT = "refit"
"""Rows only the refit on all rows learnt (a retrain's parent's test rows, training/refit.py)."""
LEARNED = ("train", "validation")
"""The splits a tested model learnt from (its final fit is on train + validation); a version
refitted on all rows (`model.refit.all_rows`, training/refit.py) learnt every split."""

Hashes = npt.NDArray[np.uint64]


def learned(manifest: Manifest) -> tuple[str, ...]:
    """The splits a version's published model learnt from: every split and its refit's own rows
    when it was refitted on all rows (`model.refit.all_rows`), else train and validation."""
    refit = manifest.model.refit
    return (*SPLITS, REFIT) if refit is not None and refit.all_rows else LEARNED


_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: combines the column hashes


def hashes(frame: pd.DataFrame, columns: list[str]) -> Hashes:
    """One hash per row of `frame[columns]`, in that column order. Numbers and booleans hash by
    their float value, missing values alike, anything else by its text: the same row hashes the
    same whether a column was read as int, float or object, from CSV or Parquet."""
    out = np.zeros(len(frame), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in columns:
            out = (out ^ _column(frame[col])) * _MULTIPLIER
    return out


MANTISSA_BITS = 40
"""Floats hash by their value rounded to this many bits (about 12 significant digits): a value
written to CSV and read back can come back one unit in the last place off."""


def _floats(values: npt.NDArray[np.float64]) -> Hashes:
    mantissa, exponent = np.frexp(values + 0.0)  # -0.0 is 0.0
    scale = float(2**MANTISSA_BITS)
    rounded = np.ldexp(np.round(mantissa * scale) / scale, exponent)
    return np.asarray(pd.util.hash_array(rounded), dtype=np.uint64)


def _column(series: pd.Series) -> Hashes:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return _floats(series.to_numpy(dtype=np.float64, na_value=np.nan))
    if pd.api.types.is_datetime64_dtype(series):  # as text, fast: str() of 100k Timestamps is 1s
        stamps = series.to_numpy()
        known = stamps[~np.isnat(stamps)]
        whole = bool((known.astype("datetime64[s]") == known).all())
        text = np.char.replace(np.datetime_as_string(stamps, unit="s" if whole else "ns"), "T", " ")
        values = text.astype(object)
        values[np.isnat(stamps)] = None
        series = pd.Series(values, index=series.index)
    values = series.astype(object).to_numpy()
    missing = np.asarray(pd.isna(values), dtype=bool)
    numeric = np.fromiter(
        (isinstance(v, int | float | np.number | np.bool_) for v in values),
        dtype=bool,
        count=len(values),
    )
    floats: npt.NDArray[np.float64] = np.full(len(values), np.nan)
    number_rows = numeric & ~missing
    floats[number_rows] = values[number_rows].astype(float)
    out = _floats(floats)
    text_rows = ~numeric & ~missing
    if text_rows.any():
        texts = np.array([str(v) for v in values[text_rows]], dtype=object)
        out[text_rows] = pd.util.hash_array(texts)
    return out


@dataclass(frozen=True)
class RowPrints:
    """A version's row fingerprints: the hashes of its rows per split, over `columns`."""

    columns: list[str]  # the model's features and the target, as the manifest records them
    table: pd.DataFrame  # `hash` (uint64) and `split`

    def of(self, *splits: str) -> Hashes:
        """The hashes of the rows in `splits`."""
        return np.asarray(self.table.loc[self.table["split"].isin(splits), "hash"], np.uint64)

    def record(self) -> dict[str, Any]:
        """The manifest's `data.row_fingerprints`."""
        counts = self.table["split"].value_counts()
        rows = {s: int(counts.get(s, 0)) for s in SPLITS}
        if counts.get(REFIT, 0):
            rows[REFIT] = int(counts[REFIT])
        return {"file": ROWS_FILE, "columns": self.columns, "rows": rows}

    def save(self, folder: Path) -> None:
        table = self.table.assign(split=self.table["split"].astype(str))
        table.to_parquet(folder / ROWS_FILE, index=False)


def of_splits(raw: pd.DataFrame, columns: list[str], index: dict[str, pd.Index]) -> RowPrints:
    """The fingerprints of the rows of `raw` (as read) at each split's `index`."""
    parts = [
        pd.DataFrame({"hash": hashes(raw.loc[idx], columns), "split": name})
        for name, idx in index.items()
    ]
    return RowPrints(list(columns), pd.concat(parts, ignore_index=True))


def load(folder: Path, manifest: Manifest) -> RowPrints | None:
    """A version's fingerprints; None for versions published before they were recorded (or
    imported ones)."""
    record = manifest.data.row_fingerprints if manifest.data is not None else None
    if record is None or not (folder / ROWS_FILE).is_file():
        return None
    table = pd.read_parquet(folder / ROWS_FILE)
    return RowPrints(list(record.columns), table.assign(hash=table["hash"].astype(np.uint64)))


def with_rows(prints: RowPrints, frame: pd.DataFrame, split: str) -> RowPrints:
    """`prints` and the rows of `frame` (holding `prints.columns`) as `split`."""
    more = pd.DataFrame({"hash": hashes(frame, prints.columns), "split": split})
    return RowPrints(prints.columns, pd.concat([prints.table, more], ignore_index=True))


def of_run(prepared: Prepared) -> tuple[pd.DataFrame, RowPrints]:
    """The run's data as read (the rows the splits index: a source read again could return other
    rows, or the same in another order), and its fingerprints over features and target."""
    raw = prepared.raw
    s = prepared.splits
    index = {"train": s.x_train.index, "validation": s.x_val.index, "test": s.x_test.index}
    return raw, of_splits(raw, [*prepared.features, prepared.target], index)
