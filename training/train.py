"""run_training(): the whole offline path from a config to a published registry version."""

from __future__ import annotations

import json
import platform
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from training import card, data, evaluate, explain, fairness, labels, quality
from training import metrics as metric_contract
from training.candidates import calibrated, make_estimator, model_space, preprocessing_space
from training.config import TrainConfig
from training.ecosystem import load_model
from training.errors import TrainingError
from training.pipeline import build_pipeline
from training.registry import (
    LABEL_COL,
    MODEL_FILE,
    PREDICTION_COL,
    PROBA_PREFIX,
    REFERENCE_FILE,
    Registry,
)
from training.schema import infer_schema
from training.search import FamilyResult, make_cv, search_family

Progress = Callable[[str], None]


Gate = Callable[[Any, dict[str, Any]], dict[str, Any]]


@dataclass
class TrainResult:
    name: str
    version: int | None  # None for a dry run
    manifest: dict[str, Any]
    promoted_to: str | None


def _library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("scikit-learn", "pandas", "numpy", "joblib", "servewatch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


def _reference_frame(
    model: Any, x: pd.DataFrame, y: pd.Series, task: str, rows: int, seed: int
) -> pd.DataFrame:
    if len(x) > rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))
        x, y = x.iloc[idx], y.iloc[idx]
    ref = x.reset_index(drop=True).copy()
    if task == "classification":
        proba = model.predict_proba(x)
        classes = list(model.classes_)
        ref[PREDICTION_COL] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        for i, c in enumerate(classes):
            ref[f"{PROBA_PREFIX}{c}"] = proba[:, i]
        ref[PREDICTION_COL] = ref[PREDICTION_COL].astype(str)
        ref[LABEL_COL] = y.astype(str).to_numpy()
    else:
        ref[PREDICTION_COL] = model.predict(x)
        ref[LABEL_COL] = y.to_numpy(dtype=float)
    return ref


def run_training(
    config: TrainConfig,
    registry: Registry,
    *,
    progress: Progress | None = None,
    promote: str = "auto",
    gate: Gate | None = None,
    extra: dict[str, Any] | None = None,
    publish: bool = True,
) -> TrainResult:
    """Train, evaluate and publish one version. Raises TrainingError; writes nothing on failure.

    `gate(model, manifest)` (retraining) decides promotion: its verdict goes into the manifest and
    the version becomes `production` only when it passed. `extra` adds manifest keys (lineage);
    `publish=False` stops before anything is written (a dry run).
    """
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    if not config.data:
        raise TrainingError("no data: pass --data FILE (or data: in the config)")
    if not config.target:
        raise TrainingError("no target: pass --target COLUMN (or target: in the config)")
    say(f"reading {config.data}")
    frame = data.load_dataset(config.data)
    target = config.target
    data.require_columns(frame, [target], "target")
    feats = config.features
    declared = [*(feats.numeric or []), *(feats.categorical or []), *feats.datetime]
    data.require_columns(frame, declared + feats.drop + feats.personal, "feature")
    data.require_columns(frame, config.fairness.sensitive, "sensitive")
    if config.time_column:
        data.require_columns(frame, [config.time_column], "time")
    task = config.task or data.infer_task(frame[target])
    label_type: labels.LabelType = "float"
    if task == "classification":
        label_type = labels.label_type_of(frame[target].dropna().unique().tolist())
        frame[target] = frame[target].where(frame[target].isna(), frame[target].astype(str))
    elif not pd.api.types.is_numeric_dtype(frame[target]):
        raise TrainingError(f"target {target!r} must be numeric for regression")

    excluded = {target, *feats.drop, *feats.personal}
    if not config.fairness.include_in_model:
        excluded |= set(config.fairness.sensitive)
    if config.time_column and config.time_column not in feats.datetime:
        excluded.add(config.time_column)
    kinds = data.infer_feature_kinds(frame, config, excluded)
    if not kinds.all:
        raise TrainingError("no feature columns left after excluding target, drop and personal")
    frame = data.coerce_types(frame, kinds)
    if config.time_column and config.time_column not in kinds.datetime:
        frame[config.time_column] = pd.to_datetime(frame[config.time_column], errors="coerce")

    say("data-quality gate")
    report = quality.check(
        frame,
        target=target,
        task=task,
        kinds=kinds,
        declared=set(declared),
        rules=config.quality,
        seed=config.seed,
    )
    report.raise_if_failed()
    kinds = data.FeatureKinds(
        numeric=[c for c in kinds.numeric if c not in report.dropped_columns],
        categorical=[c for c in kinds.categorical if c not in report.dropped_columns],
        datetime=[c for c in kinds.datetime if c not in report.dropped_columns],
    )
    classes = sorted(frame[target].unique().tolist()) if task == "classification" else None
    n_classes = len(classes) if classes else 0
    metric = config.objective.metric or metric_contract.default_metric(task, n_classes)
    if config.objective.metric is None:
        config = config.model_copy(
            update={"objective": config.objective.model_copy(update={"metric": metric})}
        )
    TrainConfig.model_validate({**config.model_dump(), "task": task})  # metric fits the task

    keep = [*kinds.all, target, *[c for c in config.fairness.sensitive if c not in kinds.all]]
    if config.time_column and config.time_column not in keep:
        keep.append(config.time_column)
    splits = data.split(frame[keep], target, task, config)
    feature_cols = kinds.all

    # ---- search: every family on the same CV folds of the same rows --------------------------
    x_search, y_search = splits.x_train, splits.y_train
    if len(x_search) > config.search.max_rows:
        if config.time_column:
            x_search, y_search = (
                x_search.iloc[-config.search.max_rows :],
                y_search.iloc[-config.search.max_rows :],
            )
        else:
            idx = np.random.default_rng(config.seed).choice(
                len(x_search), config.search.max_rows, replace=False
            )
            x_search, y_search = x_search.iloc[np.sort(idx)], y_search.iloc[np.sort(idx)]
    cv = make_cv(task, config.split.cv_folds, bool(config.time_column), config.seed)
    folds = cv.get_n_splits(x_search, y_search)  # fewer than asked on small data
    # Spaces and estimators are sized to one fold's training rows; the final fits keep the
    # same sizing so that the model fitted is the one the search chose.
    size = data.size_of(x_search[kinds.all], y_search, task).fold_train(folds)
    scoring = metric_contract.get(metric).scorer(n_classes)
    families = [
        f for f in config.models if not (f == "svm" and len(splits.x_train) > config.svm_max_rows)
    ]
    skipped = sorted(set(config.models) - set(families))
    if not families:
        raise TrainingError("no model family left to try (svm is skipped on large data)")
    weights_search = None
    sens = config.fairness.sensitive
    if config.fairness.mitigation == "reweight":
        if not sens:
            raise TrainingError("fairness.mitigation reweight needs fairness.sensitive columns")
        weights_search = fairness.reweighting(x_search[sens[0]], y_search)

    deadline = time.monotonic() + config.search.budget_seconds
    results: list[FamilyResult] = []
    for i, family in enumerate(families):
        family_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(families) - i)
        space = {
            **preprocessing_space(family, config, size),
            **model_space(family, task, size),
        }

        def build(params: dict[str, Any], family: str = family) -> Pipeline:
            return _pipeline(kinds, family, params, task, config, size=size)

        fit_params = None
        if weights_search is not None and has_fit_parameter(
            make_estimator(family, task, {}, 0), "sample_weight"
        ):
            fit_params = {"model__sample_weight": weights_search}
        res = search_family(
            family,
            space,
            build,
            x_search[feature_cols],
            y_search,
            method=config.search.method,
            trials=config.search.trials,
            deadline=family_deadline,
            cv=cv,
            scoring=scoring,
            seed=config.seed,
            fit_params=fit_params,
            on_trial=lambda fam, n, s: say(
                f"search {fam}: trial {n}/{config.search.trials} cv {scoring}={s:.4f}"
            ),
        )
        results.append(res)
    ranked = sorted((r for r in results if r.best), key=lambda r: -r.best.score)  # type: ignore[union-attr]
    if not ranked:
        raise TrainingError("every candidate failed to fit; check the data-quality report")
    best = ranked[0]
    assert best.best is not None
    say(f"best family: {best.family} (cv {scoring}={best.best.score:.4f})")

    # ---- fit on train, decide calibration on validation, refit on train+validation -----------
    x_tr, y_tr = splits.x_train[feature_cols], splits.y_train
    x_val, y_val = splits.x_val[feature_cols], splits.y_val
    weights_tr = (
        fairness.reweighting(splits.x_train[sens[0]], y_tr)
        if config.fairness.mitigation == "reweight"
        else None
    )
    calibration = "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = {
            "none": _fit(
                _pipeline(kinds, best.family, best.best.params, task, config, size=size),
                x_tr,
                y_tr,
                weights_tr,
            )
        }
        if best.family == "svm" and task == "classification":
            calibration = "sigmoid (built into the svm family)"
            fitted[calibration] = fitted["none"]
        elif task == "classification" and config.calibration != "none":
            options = (
                ["sigmoid", "isotonic"] if config.calibration == "auto" else [config.calibration]
            )
            briers = {"none": _brier(fitted["none"], x_val, y_val)}
            for method in options:
                fitted[method] = _fit(
                    _pipeline(
                        kinds, best.family, best.best.params, task, config, method, size=size
                    ),
                    x_tr,
                    y_tr,
                    weights_tr,
                )
                briers[method] = _brier(fitted[method], x_val, y_val)
            if config.calibration == "auto":
                calibration = min(briers, key=lambda k: (briers[k], k != "none"))
            else:
                calibration = config.calibration
            say(f"calibration: {calibration} (validation Brier {briers})")
        val_metrics = evaluate.score_model(fitted[calibration], x_val, y_val, task)
        x_full = pd.concat([x_tr, x_val])
        y_full = pd.concat([y_tr, y_val])
        w_full = None
        if config.fairness.mitigation == "reweight":
            w_full = fairness.reweighting(
                pd.concat([splits.x_train, splits.x_val])[sens[0]], y_full
            )
        say("final fit on train + validation")
        model = _fit(
            _pipeline(
                kinds,
                best.family,
                best.best.params,
                task,
                config,
                calibrate=calibration if calibration in ("sigmoid", "isotonic") else None,
                size=size,
            ),
            x_full,
            y_full,
            w_full,
        )

    # ---- the held-out test set, touched once ------------------------------------------------
    say("evaluating on the held-out test set")
    x_test, y_test = splits.x_test[feature_cols], splits.y_test
    test_metrics = evaluate.score_model(model, x_test, y_test, task)
    baseline = evaluate.baseline_metrics(x_full, y_full, x_test, y_test, task)
    test_score = test_metrics[metric]
    judge = metric_contract.get(metric)
    passed = judge.meets(test_score, config.objective.min_test_score)
    if not passed:
        raise TrainingError(
            f"objective not met: test {metric} = {test_score:.4f}, required "
            f"{judge.comparison} {config.objective.min_test_score}; "
            "nothing was published"
        )
    pred_test = model.predict(x_test)
    slices = evaluate.worst_slices(x_test, y_test, pred_test, task, feature_cols)
    importances = evaluate.importance(model, x_test, y_test, scoring, config.seed)
    say("explaining the model (contributions on the test set)")
    shap_summary, contributions = explain.global_summary(
        model, x_test, x_full, task=task, seed=config.seed
    )
    fair: dict[str, Any] = {}
    if sens:
        positive = classes[-1] if classes and len(classes) == 2 else None
        fair = fairness.fairness_report(splits.x_test[sens], y_test, pred_test, task, positive)

    # ---- champion / challenger ----------------------------------------------------------------
    champion = None
    prod_version = (
        registry.alias_version(config.name, "production")
        if registry.versions(config.name)
        else None
    )
    if prod_version is not None:
        champion = _score_champion(
            registry, config.name, prod_version, frame.loc[x_test.index], y_test, task, metric
        )
        champion["challenger_score"] = test_score

    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    schema = infer_schema(x_full, kinds)
    manifest: dict[str, Any] = {
        "name": config.name,
        "created_at": created,
        "task": task,
        "target": target,
        "classes": labels.native_classes(classes, label_type) if classes else None,
        "label_type": label_type,
        "features": [f.model_dump(exclude_none=True) for f in schema],
        "objective": {
            "metric": metric,
            "min_test_score": config.objective.min_test_score,
            "test_score": test_score,
            "passed": passed,
        },
        "model": {
            "family": best.family,
            "params": best.best.params,
            "calibration": calibration,
            "candidates": [
                {
                    "family": r.family,
                    "cv_score": r.best.score if r.best else None,
                    "cv_std": r.best.std if r.best else None,
                    "trials": len(r.trials),
                }
                for r in results
            ],
            "skipped_families": skipped,
            "search": {
                "method": config.search.method,
                "scoring": scoring,
                "rows": len(x_search),
                "folds": folds,
            },
        },
        "metrics": {
            "cv": {"score": best.best.score, "std": best.best.std, "scoring": scoring},
            "validation": val_metrics,
            "test": test_metrics,
            "baseline": baseline,
        },
        "fairness": fair,
        "champion": champion,
        "error_analysis": {"worst_slices": slices},
        "explanations": {"permutation_importance": importances, "shap": shap_summary},
        "data_quality": report.to_dict(),
        "data": {
            "source": config.data,
            "rows": len(frame),
            "fingerprint": data.fingerprint(frame[keep]),
            "split": {
                "train": len(splits.x_train),
                "validation": len(splits.x_val),
                "test": len(splits.x_test),
                "ordered_by": config.time_column,
            },
            "time_range": _time_range(splits, config.time_column),
        },
        "personal_data": config.features.personal,
        "config": json.loads(config.model_copy(update={"task": task}).model_dump_json()),
        "libraries": _library_versions(),
        "git_commit": _git_commit(),
        "training_seconds": round(time.monotonic() - started, 1),
    }
    reference = _reference_frame(model, x_full, y_full, task, config.reference_rows, config.seed)

    if extra:
        manifest.update(extra)
    if gate is not None:
        say("promotion gate")
        manifest["gate"] = gate(model, manifest)
    if not publish:
        return TrainResult(config.name, None, manifest, None)

    def stage(folder: Path) -> dict[str, Any]:
        joblib.dump(model, folder / MODEL_FILE, compress=3)
        reference.to_parquet(folder / REFERENCE_FILE, index=False)
        (folder / "data_quality.json").write_text(json.dumps(report.to_dict(), indent=2))
        plots = evaluate.save_plots(folder, task, y_test, pred_test, classes, importances)
        plots.append(
            evaluate.save_contribution_plot(
                folder, contributions.features, contributions.contributions, contributions.method
            )
        )
        manifest["plots"] = plots
        (folder / "model_card.md").write_text(card.render(manifest))
        return manifest

    say("publishing to the registry")
    version = registry.publish(config.name, stage)
    manifest["version"] = version
    if gate is not None:
        promoted = None
        if promote != "never" and manifest["gate"]["passed"]:
            registry.set_alias(config.name, "production", version)
            promoted = "production"
    else:
        promoted = _promote(registry, config.name, version, promote, champion, metric)
    return TrainResult(config.name, version, manifest, promoted)


def _pipeline(
    kinds: data.FeatureKinds,
    family: str,
    params: dict[str, Any],
    task: str,
    config: TrainConfig,
    calibrate: str | None = None,
    *,
    size: data.DataSize | None = None,
) -> Pipeline:
    pre = {k[4:]: v for k, v in params.items() if k.startswith("pre_")}
    model_params = {k: v for k, v in params.items() if not k.startswith("pre_")}
    est = make_estimator(family, task, model_params, config.seed, size)
    if calibrate:
        est = calibrated(est, calibrate, size)
    return build_pipeline(
        kinds,
        est,
        family=family,
        prep=config.preprocessing,
        scaler=pre.get("scaler", "standard"),
        interactions=bool(pre.get("interactions", False)),
        pca=pre.get("pca"),
    )


def _fit(pipe: Pipeline, x: pd.DataFrame, y: pd.Series, weights: Any) -> Pipeline:
    est = pipe.named_steps["model"]
    inner = getattr(est, "estimator", est)
    if weights is not None and has_fit_parameter(inner, "sample_weight"):
        return pipe.fit(x, y, model__sample_weight=weights)
    return pipe.fit(x, y)


def _brier(model: Any, x: pd.DataFrame, y: pd.Series) -> float:
    proba = model.predict_proba(x)
    return metric_contract.classification_metrics(y, proba, list(model.classes_))["brier"]


def _time_range(splits: data.Splits, column: str | None) -> dict[str, str] | None:
    if not column:
        return None
    t = pd.concat([splits.x_train[column], splits.x_val[column], splits.x_test[column]])
    return {"start": str(t.min()), "end": str(t.max())}


def _score_champion(
    registry: Registry,
    name: str,
    version: int,
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    metric: str,
) -> dict[str, Any]:
    """Score the production version on the challenger's test rows, with its own feature schema."""
    try:
        champ = registry.manifest(name, version)
        cols = {f.name: f.kind for f in champ.features}
        data.require_columns(x, list(cols), "champion feature")
        x = x[list(cols)].copy()
        for col, kind in cols.items():
            if kind == "numeric":
                x[col] = pd.to_numeric(x[col], errors="coerce")
            elif kind == "categorical":
                x[col] = data.as_text(x[col])
        old = load_model(registry.path(name, version) / MODEL_FILE)
        metrics = evaluate.score_model(old, x, y, task)
    except Exception as exc:  # an incompatible champion is reported, never fatal
        return {"version": version, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "version": version,
        "metrics": metrics,
        "champion_score": metrics[metric],
        "metric": metric,
    }


def _promote(
    registry: Registry,
    name: str,
    version: int,
    mode: str,
    champion: dict[str, Any] | None,
    metric: str,
) -> str | None:
    """auto: production when there is none or the challenger beats the champion, else staging."""
    if mode == "never":
        return None
    if mode == "always" or champion is None:
        registry.set_alias(name, "production", version)
        return "production"
    if "champion_score" in champion and metric_contract.get(metric).better(
        champion["challenger_score"], champion["champion_score"]
    ):
        registry.set_alias(name, "production", version)
        return "production"
    registry.set_alias(name, "staging", version)
    return "staging"
