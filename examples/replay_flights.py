"""Replay later months of the flights data through a running servewatch, with feedback.

    servewatch serve &                      # the flights model trained on January to April
    python examples/replay_flights.py --months 5 6 --rows 20000
    servewatch monitor run --model flights

Each batch of flights is sent to /predict; the true outcome (arrived > 15 min late) is then sent to
/feedback with the prediction ids, as an application would once the flight has landed.
"""

from __future__ import annotations

import argparse
import math

import httpx
from rich.progress import Progress

from training.demo import FEATURES, TARGET, load_flights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--months", type=int, nargs="+", default=[7])
    ap.add_argument("--rows", type=int, default=10_000, help="at most this many flights")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--label-share", type=float, default=1.0, help="share of flights labelled")
    args = ap.parse_args()
    frame = load_flights(months=args.months)
    frame = frame.sample(min(args.rows, len(frame)), random_state=0).sort_values("time_hour")
    records = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    rows = records.to_dict(orient="records")
    labels = frame[TARGET].astype(str).tolist()
    sent = labelled = 0
    with httpx.Client(base_url=args.url, timeout=30) as client, Progress() as bar:
        task = bar.add_task(f"replaying months {args.months}", total=len(rows))
        for start in range(0, len(rows), args.batch):
            chunk = rows[start : start + args.batch]
            clean = [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in chunk
            ]
            res = client.post("/v1/models/flights/predict", json={"instances": clean})
            res.raise_for_status()
            ids = [p["prediction_id"] for p in res.json()["predictions"]]
            keep = int(len(ids) * args.label_share)
            if keep:
                fb = [
                    {"prediction_id": i, "label": lab}
                    for i, lab in zip(ids[:keep], labels[start : start + keep], strict=True)
                ]
                client.post("/v1/models/flights/feedback", json={"labels": fb}).raise_for_status()
            sent += len(ids)
            labelled += keep
            bar.advance(task, len(chunk))
    print(f"sent {sent} predictions, {labelled} labels to {args.url}")


if __name__ == "__main__":
    main()
