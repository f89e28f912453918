"""run_drift(): the one place that imports Evidently; returns a small typed result of our own.

Evidently's API is still moving (0.7 rewrote it), so nothing else in servewatch touches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    columns: dict[str, ColumnDrift] = field(default_factory=dict)
    drifted_share: float = 0.0
    drifted_count: int = 0
    evidently_json: dict[str, Any] = field(default_factory=dict)


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    method: str | None = None,
    html_path: Path | None = None,
) -> DriftResult:
    """Column drift of `current` against `reference` with Evidently's DataDriftPreset.

    `method` is any Evidently stat test name (e.g. "psi", "ks", "wasserstein"); None lets
    Evidently pick per column by type and size. The HTML report goes to `html_path` if given.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    cur = Dataset.from_pandas(current[columns], data_definition=definition)
    preset = DataDriftPreset(method=method) if method else DataDriftPreset()
    snapshot = Report([preset], include_tests=True).run(cur, ref)
    data = snapshot.dict()
    if html_path is not None:
        snapshot.save_html(str(html_path))
    verdicts = {
        t["metric_config"]["metric_id"]: t["status"] != "SUCCESS"
        for t in data.get("tests", [])
        if t.get("metric_config", {}).get("params", {}).get("type", "").endswith("ValueDrift")
    }
    result = DriftResult(evidently_json=data)
    for m in data["metrics"]:
        cfg = m.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("ValueDrift"):
            col = cfg["column"]
            result.columns[col] = ColumnDrift(
                column=col,
                method=str(cfg.get("method")),
                score=float(m["value"]),
                threshold=float(cfg.get("threshold") or 0.0),
                drifted=bool(verdicts.get(m["id"], False)),
            )
        elif kind.endswith("DriftedColumnsCount"):
            result.drifted_count = int(m["value"]["count"])
            result.drifted_share = float(m["value"]["share"])
    return result
