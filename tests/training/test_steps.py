"""The training steps one by one: what each decides, and that composed they are run_training."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier

from core.registry import REFERENCE_FILE, ManifestDraft, Refit, Registry, verify_files
from tests.conftest import fast_config
from training import data, ensemble, fingerprints, refit, threshold
from training.assessment import assess
from training.errors import TrainingError
from training.fitting import fit_and_calibrate
from training.gate import Gate, Rows
from training.manifest import build_manifest
from training.prepare import prepare
from training.publishing import (
    Release,
    promote,
    promote_mode,
    promote_through_gate,
    publish,
)
from training.selection import search
from training.train import run_training

ROOT = Path(__file__).resolve().parents[2]


def test_the_steps_composed_by_hand_make_the_manifest_run_training_publishes(
    tmp_path: Path, clf_csv: Path
) -> None:
    # A budget no machine hits, so that both runs try every trial and pick alike (at the FAST
    # budget a loaded machine cut one run's search short of the other's).
    cfg = fast_config(
        name="steps",
        data=str(clf_csv),
        target="label",
        fairness={"sensitive": ["group"]},
        search={"method": "random", "trials": 2, "budget_seconds": 3600, "max_rows": 1000},
    )
    said: list[str] = []
    prepared = prepare(cfg, said.append)
    assert prepared.metric == "roc_auc" == prepared.config.objective.metric  # default filled in
    assert prepared.classes == ["no", "yes"] and prepared.label_type == "string"
    assert said == [f"reading {clf_csv}", "data-quality gate"]
    _, rows = fingerprints.of_run(prepared)  # issue 34: which rows each split holds
    assert len(rows.of("test")) == len(prepared.splits.x_test)
    selection = search(prepared, said.append)
    # Sized to one fold's training part of the rows actually searched, folds as split.
    x_train, y_train = prepared.splits.x_train, prepared.splits.y_train
    assert selection.rows == len(x_train) and selection.folds == 2
    assert selection.size == data.size_of(
        x_train[prepared.features], y_train, "classification"
    ).fold_train(2)
    assert selection.family in {"linear", "hgb"} and selection.scoring == "roc_auc"
    fitted = fit_and_calibrate(prepared, selection, said.append)
    assert len(fitted.x_full) == len(x_train) + len(prepared.splits.x_val)
    fitted = ensemble.consider(prepared, selection, fitted, said.append)  # issue 19: a step
    fitted, chosen = threshold.step(prepared, fitted, said.append)
    assert chosen is not None and chosen.threshold is None  # balanced classes: argmax
    assert said[-1].startswith("decision: argmax (the most probable class)")
    assessment = assess(prepared, fitted, selection, said.append, chosen)
    manifest = build_manifest(
        prepared, selection, fitted, assessment, None, chosen, started=0.0, rows=rows
    )
    assert said[-1] == "explaining the model (contributions on the test set)"
    model, refitted = refit.all_rows(prepared, fitted, said.append)
    manifest.model.refit = Refit.model_validate(refitted)
    assert model is fitted.model and manifest.model.refit.all_rows is False

    published = run_training(cfg, Registry(tmp_path)).manifest
    keys = ("classes", "features", "objective", "model", "metrics", "fairness", "data", "decision")
    built = manifest.body()
    for key in keys:
        assert _untimed(built[key]) == _untimed(published[key])
    assert published["model"]["search"]["folds"] == 2


TIMED = (
    "seconds", "after_search_seconds", "reserved_seconds", "reserved_besides_fits_seconds",
    "calibration_slowdown",
)  # fmt: skip
"""Manifest fields that measure time (issue 32): two runs of the same steps differ in them."""


def _untimed(value: Any) -> str:
    """`value` as JSON without the fields that measure time."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in TIMED}
        return [strip(x) for x in v] if isinstance(v, list) else v

    return json.dumps(strip(value), default=str)


def test_a_missed_objective_stops_at_the_evaluation_step(clf_csv: Path) -> None:
    cfg = fast_config(
        name="m", data=str(clf_csv), target="label", objective={"min_test_score": 0.999}
    )
    prepared = prepare(cfg, lambda _m: None)
    selection = search(prepared, lambda _m: None)
    fitted = fit_and_calibrate(prepared, selection, lambda _m: None)
    with pytest.raises(TrainingError, match=r"objective not met: test roc_auc = .* >= 0.999"):
        assess(prepared, fitted, selection, lambda _m: None)


def test_promote_has_three_modes_only() -> None:
    assert [promote_mode(m) for m in ("auto", "always", "never")] == ["auto", "always", "never"]
    with pytest.raises(TrainingError, match="--promote must be auto, always or never, not 'gate'"):
        promote_mode("gate")


def test_publish_then_promote_in_the_metric_direction(registry_copy: Path) -> None:
    reg = Registry(registry_copy)
    folder = reg.path("demo", 1)
    parent = reg.raw_manifest("demo", 1)
    kept = {k: v for k, v in parent.items() if k not in {"name", "version", "files"}}
    manifest = ManifestDraft.model_validate(kept)
    release = Release(
        joblib.load(folder / "model.joblib"),
        pd.read_parquet(folder / REFERENCE_FILE),
        manifest,
    )
    version = publish(reg, "demo", release, lambda _m: None)
    assert version == 2 and manifest.version == 2 and manifest.name == "demo"
    assert set(manifest.files) == {"model.joblib", "reference.parquet", "model_card.md"}
    assert verify_files(reg.path("demo", 2), reg.manifest("demo", 2)) == []
    assert "# Model card: demo v(new)" in (reg.path("demo", 2) / "model_card.md").read_text()

    # log_loss: lower is better, so a higher challenger loss is worse and goes to staging.
    worse = {"version": 1, "champion_score": 0.30, "challenger_score": 0.35, "metric": "log_loss"}
    assert promote(reg, "demo", 2, "never", worse, "log_loss") is None
    assert reg.alias_version("demo", "staging") is None
    assert promote(reg, "demo", 2, "auto", worse, "log_loss") == "staging"
    assert reg.alias_version("demo", "production") == 1
    better = {**worse, "challenger_score": 0.25}
    assert promote(reg, "demo", 2, "auto", better, "log_loss") == "production"
    assert reg.alias_version("demo", "production") == 2
    unscored = {"version": 2, "error": "KeyError: 'x1'"}
    assert promote(reg, "demo", 1, "auto", unscored, "log_loss") == "staging"
    assert promote(reg, "demo", 1, "always", unscored, "log_loss") == "production"
    assert promote_through_gate(reg, "demo", 2, passed=False) is None
    assert reg.alias_version("demo", "production") == 1
    assert promote_through_gate(reg, "demo", 2, passed=True) == "production"
    assert reg.alias_version("demo", "production") == 2


def _classification_gate() -> tuple[Gate, DecisionTreeClassifier]:
    """x 0..9, 'yes' from 5 up; group a is x < 5. The champion always says 'no'."""
    x = pd.DataFrame({"x": np.arange(10.0)})
    y = pd.Series(np.where(x["x"] >= 5, "yes", "no"))
    groups = pd.DataFrame({"group": np.where(x["x"] < 5, "a", "b")})
    champion = DummyClassifier(strategy="constant", constant="no").fit(x, y)
    challenger = DecisionTreeClassifier(max_depth=1).fit(x, y)
    rows = Rows(x, y)
    gate = Gate(
        champion=champion,
        task="classification",
        metric="accuracy",
        margin=0.01,
        fairness_margin=0.05,
        checks={"recent_window": rows, "original_test": rows},
        fairness_rows=rows,
        groups=groups,
    )
    return gate, challenger


def test_the_gate_verdict_holds_the_figures_and_refuses_a_wider_parity_gap() -> None:
    gate, challenger = _classification_gate()
    verdict = gate.verdict(challenger, ["no", "yes"])
    recent = verdict["checks"]["recent_window"]
    # accuracy: the champion gets the five 'no' rows right, the stump all ten.
    assert (recent["champion"], recent["challenger"], recent["rows"]) == (0.5, 1.0, 10)
    assert recent["worse_by"] == -0.5 and recent["passed"]
    # Selection rate of 'yes': champion 0 in both groups; challenger 0 in a and 1 in b.
    assert verdict["fairness"] == {
        "champion": {"group": 0.0},
        "challenger": {"group": 1.0},
        "passed": False,
        "wider_gaps": ["group"],
    }
    assert verdict["passed"] is False
    no_groups = replace(gate, groups=gate.groups[[]])
    assert no_groups.verdict(challenger, ["no", "yes"])["fairness"] == {}
    assert no_groups.verdict(challenger, ["no", "yes"])["passed"] is True
    # The other way round the challenger is 0.5 worse in accuracy: refused on both checks.
    swapped = replace(no_groups, champion=challenger)
    refused = swapped.verdict(gate.champion, ["no", "yes"])
    assert [c["worse_by"] for c in refused["checks"].values()] == [0.5, 0.5]
    assert refused["passed"] is False


def test_the_gate_judges_rmse_relative_to_the_champion() -> None:
    x = pd.DataFrame({"x": np.arange(8.0)})
    y = pd.Series(2.0 * x["x"] + np.array([0.5, -0.5] * 4))  # the line is off by 0.5 everywhere
    line = LinearRegression().fit(x, y)
    mean = DummyRegressor().fit(x, y)
    rows = Rows(x, y)
    gate = Gate(line, "regression", "rmse", 0.01, 0.05, {"recent_window": rows}, rows, x[[]])
    verdict = gate.verdict(mean, None)
    check = verdict["checks"]["recent_window"]
    rmse_line = float(np.sqrt(np.mean((line.predict(x) - y) ** 2)))
    rmse_mean = float(np.sqrt(np.mean((y.mean() - y) ** 2)))
    assert check["champion"] == pytest.approx(rmse_line)
    assert check["challenger"] == pytest.approx(rmse_mean)
    assert check["worse_by"] == pytest.approx((rmse_mean - rmse_line) / rmse_line)
    assert not check["passed"] and verdict["fairness"] == {}


def test_no_package_imports_a_private_name_from_another() -> None:
    offenders = []
    packages = ("core", "predlog", "training", "service", "monitoring", "servewatch")
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ImportFrom) or not node.module:
                    continue
                other = node.module.split(".")[0]
                private = [a.name for a in node.names if a.name.startswith("_")]
                if other != package and other in packages and private:
                    offenders.append(f"{path.relative_to(ROOT)}: {node.module} {private}")
    assert offenders == []
