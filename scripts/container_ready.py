"""Time from `docker run` to a 200 from /readyz, for images compared in one run (alternating).

    python scripts/container_ready.py IMAGE [IMAGE ...] [--runs 3] [--registry DIR]

Without --registry it trains the suite's four model shapes (tests/deploy/test_container.py) into a
temporary registry. Each container runs as docs/deploy.md says (read-only root, tmpfs /tmp, the
registry read-only, a fresh /data), with the image's defaults (2 workers), on the host's network.
Needs a running dockerd and the dev extra. Prints one row per image: the median and every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd


def train_shapes(root: Path) -> None:
    from core.registry import Registry
    from tests.deploy.test_container import SHAPES, SMALL
    from training.config import TrainConfig
    from training.train import run_training

    old = os.umask(0o022)
    try:
        for name, (frame, family, _kind) in SHAPES.items():
            csv = root.parent / f"{name}.csv"
            pd.DataFrame(frame).to_csv(csv, index=False)
            cfg = TrainConfig.model_validate(
                {**SMALL, "name": name, "data": str(csv), "target": "target", "models": [family]}
            )
            run_training(cfg, Registry(root))
    finally:
        os.umask(old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--registry", type=Path)
    args = parser.parse_args()

    from tests.deploy.test_container import Container, _data_dir

    top = Path(tempfile.mkdtemp(prefix="sw-ready-"))
    top.chmod(0o755)
    try:
        registry = args.registry or top / "registry"
        if args.registry is None:
            train_shapes(registry)
        times: dict[str, list[float]] = {image: [] for image in args.images}
        for run in range(args.runs):
            for image in args.images:
                data = _data_dir(top, f"data-{run}-{len(times[image])}-{image.replace(':', '_')}")
                box = Container(image, registry, data)
                try:
                    times[image].append(box.wait_ready(timeout=600))
                finally:
                    box.remove()
        for image, runs in times.items():
            shown = ", ".join(f"{t:.1f}" for t in runs)
            print(f"{image}: median {statistics.median(runs):.1f} s to ready ({shown})")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
