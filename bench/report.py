"""The HTML report's cost beside the drift figures alone, in one run (ratios, medians of runs).

On the flights demo (v1's reference sample and a window of `--rows` rows drawn from it, shifted),
interleaved `--repeat` times in one process after one warm-up:

- drift figures only: `run_drift` without a page (what the alerts need);
- the page before the performance and summary sections: the same Evidently drift report saved
  with `save_html` (Evidently called directly, as `run_drift` did);
- page without labels: drift, its tests and the data summary of the window, written as HTML;
- page with labels: the same plus Evidently's classification performance on the labelled rows.

    python -m bench.report [--registry registry] [--rows 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import ensure_demo_model, load_average, machine, table

VARIANTS = ("figures", "drift-page", "page", "page+performance")
LABELS = {
    "figures": "drift figures only (no page)",
    "drift-page": "page before: drift only",
    "page": "page: drift + data summary",
    "page+performance": "page: drift + performance + data summary",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", type=Path, default=Path("registry"))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ensure_demo_model(args.registry)

    import numpy as np
    import pandas as pd

    from core import labels as label_types
    from core.registry import LABEL_COL, PREDICTION_COL, PROBA_PREFIX, REFERENCE_FILE, Registry
    from monitoring.drift import PREDICTION, TARGET, Labelled, run_drift

    reg = Registry(args.registry)
    version = reg.resolve("flights")
    manifest = reg.manifest("flights", version)
    reference = pd.read_parquet(reg.path("flights", version) / REFERENCE_FILE)
    numeric = [f.name for f in manifest.features if f.kind == "numeric"]
    categorical = [f.name for f in manifest.features if f.kind == "categorical"]
    rng = np.random.default_rng(0)
    current = reference.sample(args.rows, replace=True, random_state=1).reset_index(drop=True)
    for col in numeric[:3]:
        current[col] = current[col] + rng.normal(0, current[col].std(), len(current))
    for frame in (reference, current):
        for col in categorical:
            frame[col] = frame[col].map(lambda v: None if v is None or v != v else str(v))
    classes = [label_types.key(c) for c in manifest.classes or []]

    def labelled_rows(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(
            {
                TARGET: [label_types.key(v) for v in frame[LABEL_COL]],
                PREDICTION: [label_types.key(v) for v in frame[PREDICTION_COL]],
            }
        )
        for c in classes:
            out[c] = frame[f"{PROBA_PREFIX}{c}"].to_numpy(float)
        return out

    labelled = Labelled(
        "classification", labelled_rows(current), labelled_rows(reference), classes, True
    )
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def drift_page(html: Path) -> None:
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset

            columns = [*numeric, *categorical]
            definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
            ref = Dataset.from_pandas(reference[columns], data_definition=definition)
            cur = Dataset.from_pandas(current[columns], data_definition=definition)
            snapshot = Report([DataDriftPreset()], include_tests=True).run(cur, ref)
            snapshot.dict()
            snapshot.save_html(str(html))

        def once(variant: str) -> float:
            html = None if variant == "figures" else Path(tmp) / f"{variant}.html"
            started = time.perf_counter()
            if variant == "drift-page":
                assert html is not None
                drift_page(html)
                sizes[variant] = html.stat().st_size
                return time.perf_counter() - started
            run_drift(
                reference,
                current,
                numeric=numeric,
                categorical=categorical,
                html_path=html,
                labelled=labelled if variant == "page+performance" else None,
            )
            seconds = time.perf_counter() - started
            if html is not None:
                sizes[variant] = html.stat().st_size
            return seconds

        for variant in VARIANTS:  # warm-up: imports, caches
            once(variant)
        for _ in range(args.repeat):
            for variant in VARIANTS:
                times[variant].append(once(variant))
    base = statistics.median(times["figures"])
    rows = [
        [
            LABELS[v],
            f"{statistics.median(times[v]):.2f}",
            f"{statistics.median(times[v]) / base:.2f}",
            f"{sizes[v] / 1e6:.1f}" if v in sizes else "-",
        ]
        for v in VARIANTS
    ]
    print(f"{machine()}; load average {load_average()}")
    print(
        f"flights v{version}: reference {len(reference)} rows, window {len(current)} rows, "
        f"{len(numeric) + len(categorical)} features; median of {args.repeat} interleaved runs"
    )
    print(table(["variant", "seconds", "x figures only", "page MB"], rows))


if __name__ == "__main__":
    main()
