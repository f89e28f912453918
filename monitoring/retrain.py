"""retrain(): the version's original data plus the labelled prediction log -> a gated challenger.

The most recent share of the labelled window is held out from retraining. The challenger is scored
against the champion on that recent window and on the original test split; it is promoted only when
the objective metric is not worse by more than `margin` on either and no fairness gap (demographic
parity difference) is wider by more than `fairness_margin`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from service.store import PredictionStore
from training import data, evaluate, fairness, labels
from training import metrics as metric_contract
from training.config import TrainConfig
from training.ecosystem import load_model
from training.errors import TrainingError
from training.registry import MODEL_FILE, Registry
from training.train import TrainResult, run_training


def labelled_window(
    store: PredictionStore, model: str, target: str, *, since: float | None, time_column: str | None
) -> pd.DataFrame:
    """Logged inputs with their feedback labels, oldest first, one row per prediction id."""
    rows = [r for r in store.read_window(model) if r["label"] is not None]
    if since is not None:
        rows = [r for r in rows if r["created_at"] >= since]
    records = []
    for r in rows:
        rec = orjson.loads(r["inputs"])
        rec[target] = orjson.loads(r["label"])
        rec["__id"] = r["id"]
        rec["__logged_at"] = r["created_at"]
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return frame
    frame = frame.drop_duplicates("__id").sort_values("__logged_at", kind="stable")
    if time_column:
        frame[time_column] = pd.to_datetime(frame["__logged_at"], unit="s")
    return frame.reset_index(drop=True)


def _usable_labels(window: pd.DataFrame, target: str, manifest: dict[str, Any]) -> pd.DataFrame:
    """The rows whose label is one of the parent's classes (in its label type) or, for a
    regressor, a finite number; others (logged before labels were checked) are left out."""
    if window.empty:
        return window
    classes = manifest.get("classes") if manifest["task"] == "classification" else None
    label_type: labels.LabelType = manifest.get("label_type") or (
        "string" if classes is not None else "float"
    )

    def typed(value: Any) -> Any:
        try:
            return labels.coerce(value, label_type, classes)
        except ValueError:
            return None

    values = window[target].map(typed)
    keep = values.notna()
    return window[keep].assign(**{target: values[keep]}).reset_index(drop=True)


def _score(pipeline: Any, x: pd.DataFrame, y: pd.Series, task: str, metric: str) -> float:
    return evaluate.score_model(pipeline, x, y, task)[metric]


def retrain(
    *,
    registry: Registry,
    store: PredictionStore,
    model: str,
    since: float | None = None,
    holdout_share: float = 0.3,
    margin: float = 0.01,
    fairness_margin: float = 0.05,
    min_rows: int = 50,
    dry_run: bool = False,
    incremental: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: Any = None,
) -> TrainResult:
    """Retrain `model` from its production version's config; gate; promote when the gate passes."""

    parent = registry.resolve(model)
    raw = registry.raw_manifest(model, parent)
    config = TrainConfig.model_validate({**raw["config"], **(overrides or {})})
    target, task = raw["target"], raw["task"]
    metric = raw["objective"]["metric"]
    features = [f["name"] for f in raw["features"]]
    if not config.data:
        raise TrainingError(f"{model} v{parent} records no training data to start from")
    original = data.load_dataset(config.data)
    window = labelled_window(store, model, target, since=since, time_column=config.time_column)
    window = _usable_labels(window, target, raw)
    if len(window) < min_rows:
        raise TrainingError(
            f"only {len(window)} labelled predictions for {model}; "
            f"at least {min_rows} are needed to retrain"
        )
    n_hold = max(1, int(len(window) * holdout_share))
    recent = window.iloc[-n_hold:]
    fresh = window.iloc[:-n_hold]
    champion = load_model(registry.path(model, parent) / MODEL_FILE)
    # The original test split, rebuilt exactly as the champion's training run made it.
    champ_kinds = data.FeatureKinds(
        numeric=[f["name"] for f in raw["features"] if f["kind"] == "numeric"],
        categorical=[f["name"] for f in raw["features"] if f["kind"] == "categorical"],
        datetime=[f["name"] for f in raw["features"] if f["kind"] == "datetime"],
    )
    orig = data.coerce_types(original, champ_kinds)
    orig = orig[orig[target].notna()]
    keep = [
        *features,
        target,
        *(
            [config.time_column]
            if config.time_column and config.time_column not in features
            else []
        ),
    ]
    test = data.split(orig[keep], target, task, config).x_test
    y_test_orig = orig.loc[test.index, target]
    # The challenger never trains on the rows it will be judged on: the original test split stays
    # held out, as it was for the champion.
    combined = pd.concat(
        [original.drop(index=test.index), fresh.drop(columns=["__id", "__logged_at"])],
        ignore_index=True,
    )
    x_recent = data.coerce_types(recent, champ_kinds)[features]
    y_recent = recent[target]
    sensitive = [c for c in config.fairness.sensitive if c in recent.columns]

    judge = metric_contract.get(metric)

    def gate(challenger: Any, manifest: dict[str, Any]) -> dict[str, Any]:
        checks = {}
        for label, x, y in (
            ("recent_window", x_recent, y_recent),
            ("original_test", test[features], y_test_orig),
        ):
            champ_s = _score(champion, x, y, task, metric)
            chall_s = _score(challenger, x, y, task, metric)
            worse_by = judge.worse_by(champ_s, chall_s)
            checks[label] = {
                "champion": champ_s,
                "challenger": chall_s,
                "rows": len(x),
                "worse_by": worse_by,
                "passed": bool(worse_by <= margin),
            }
        fair: dict[str, Any] = {}
        if task == "classification" and sensitive:
            positive = labels.key(manifest["classes"][-1])  # compared as text, like classes
            y_text = y_recent.map(labels.key)
            for name, pipe in (("champion", champion), ("challenger", challenger)):
                predicted = pd.Series([labels.key(p) for p in pipe.predict(x_recent)])
                rep = fairness.fairness_report(
                    recent[sensitive], y_text, predicted.to_numpy(), task, positive
                )
                fair[name] = {c: r["demographic_parity_difference"] for c, r in rep.items()}
            wider = [
                c
                for c in sensitive
                if fair["challenger"][c] > fair["champion"][c] + fairness_margin
            ]
            fair["passed"] = not wider
            fair["wider_gaps"] = wider
        passed = all(c["passed"] for c in checks.values()) and fair.get("passed", True)
        return {
            "passed": bool(passed),
            "metric": metric,
            "margin": margin,
            "fairness_margin": fairness_margin,
            "checks": checks,
            "fairness": fair,
            "data_quality": "passed (the run would have failed otherwise)",
        }

    # The recorded config names the original source: a later retrain starts from it again.
    lineage = {
        "config": json.loads(config.model_dump_json()),
        "lineage": {
            "parent_version": parent,
            "original": {"source": config.data, "rows": len(original)},
            "log_window": {
                "from": float(window["__logged_at"].min()),
                "to": float(window["__logged_at"].max()),
                "labelled_rows": len(window),
                "used_for_training": len(fresh),
                "held_out_for_gate": len(recent),
            },
        },
    }
    if incremental:
        x_fresh = data.coerce_types(fresh, champ_kinds)[features]
        return _incremental(
            registry,
            model,
            parent,
            raw,
            champion,
            x_fresh,
            fresh[target],
            gate,
            lineage,
            test[features],
            y_test_orig,
            dry_run=dry_run,
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retrain.parquet"
        for col in combined.columns:
            if combined[col].dtype == object:
                combined[col] = combined[col].map(lambda v: None if v is None or v != v else v)
        combined.to_parquet(path, index=False)
        cfg = config.model_copy(update={"data": str(path)})
        result = run_training(
            cfg,
            registry,
            progress=progress,
            promote="gate",
            gate=gate,
            extra=lineage,
            publish=not dry_run,
        )
    return result


def summary_lines(result: TrainResult) -> list[str]:
    g = result.manifest["gate"]
    lines = [
        f"gate {'PASSED' if g['passed'] else 'REFUSED'} on {g['metric']} (margin {g['margin']})"
    ]
    for label, c in g["checks"].items():
        lines.append(
            f"  {label}: champion {c['champion']:.4f}, challenger {c['challenger']:.4f} "
            f"on {c['rows']} rows -> {'ok' if c['passed'] else 'worse'}"
        )
    if g["fairness"]:
        lines.append(f"  fairness (demographic parity difference): {json.dumps(g['fairness'])}")
    return lines


def _incremental(
    registry: Registry,
    model: str,
    parent: int,
    raw: dict[str, Any],
    champion: Any,
    x_fresh: pd.DataFrame,
    y_fresh: pd.Series,
    gate: Any,
    lineage: dict[str, Any],
    x_test: pd.DataFrame,
    y_test: pd.Series,
    *,
    dry_run: bool,
) -> TrainResult:
    """Update the parent from the new window only, gate it like a full retrain, publish."""
    import time
    from datetime import UTC, datetime

    import joblib

    from training import card, incremental
    from training.registry import LABEL_COL, REFERENCE_FILE
    from training.train import _reference_frame

    if len(x_fresh) == 0:
        raise TrainingError("no labelled rows left for the update after the gate's hold-out")
    started = time.perf_counter()
    if hasattr(champion, "classes_"):  # labels as the pipeline holds its classes (text or not)
        own = {labels.key(c): c for c in champion.classes_}
        y_fresh = y_fresh.map(lambda v: own[labels.key(v)])
    challenger = incremental.update(champion, x_fresh, y_fresh)
    seconds = time.perf_counter() - started
    task = raw["task"]
    manifest = {k: v for k, v in raw.items() if k not in {"version", "files", "signature", "name"}}
    manifest.update(lineage)
    manifest["created_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest["lineage"]["incremental"] = True
    manifest["model"] = {
        **raw["model"],
        "incremental_update": {"rows": len(x_fresh), "seconds": round(seconds, 3)},
    }
    test_metrics = evaluate.score_model(challenger, x_test, y_test, task)
    metric = raw["objective"]["metric"]
    manifest["metrics"] = {**raw["metrics"], "test": test_metrics}
    manifest["objective"] = {**raw["objective"], "test_score": test_metrics[metric]}
    # Figures that described the parent and were not recomputed are left out, not carried over.
    manifest["explanations"] = {"permutation_importance": {}}
    manifest["error_analysis"] = {"worst_slices": []}
    manifest["fairness"] = {}
    manifest["plots"] = []
    manifest["gate"] = gate(challenger, manifest)
    if dry_run:
        return TrainResult(model, None, manifest, None)
    ref = pd.read_parquet(registry.path(model, parent) / REFERENCE_FILE)
    features = [f["name"] for f in raw["features"]]
    reference = _reference_frame(challenger, ref[features], ref[LABEL_COL], task, len(ref), 0)

    def stage(folder: Path) -> dict[str, Any]:
        joblib.dump(challenger, folder / MODEL_FILE, compress=3)
        reference.to_parquet(folder / REFERENCE_FILE, index=False)
        (folder / "model_card.md").write_text(card.render({**manifest, "name": model}))
        return manifest

    version = registry.publish(model, stage)
    manifest["version"] = version
    promoted = None
    if manifest["gate"]["passed"]:
        registry.set_alias(model, "production", version)
        promoted = "production"
    return TrainResult(model, version, manifest, promoted)
