"""Noise bands (issue 33): a breach needs a drop beyond the spread a healthy window shows by
chance that may reach max_drop, the spread read from rows the version never trained on; the
figures bootstrapped are the ones shown."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from core.metrics import class_codes, classification_metrics, regression_metrics
from core.registry import LABEL_COL, MANIFEST, PREDICTION_COL, Manifest
from monitoring import noise, runner
from monitoring.alerts import AlertRules, conditions
from monitoring.collector import MonitoringCollector
from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from monitoring.store import MonitorStore
from predlog.store import PredictionStore
from tests.monitoring.conftest import log_traffic, traffic


@pytest.mark.parametrize(("k", "threshold", "positive"), [(2, None, 1), (2, 0.3, 0), (3, None, 1)])
def test_weighted_figures_are_the_realised_metrics(
    k: int, threshold: float | None, positive: int
) -> None:
    """The bootstrap computes exactly what core.metrics reports, so the band is of the figure."""
    rng = np.random.default_rng(k)
    proba = np.round(rng.dirichlet(np.ones(k), size=400), 2)  # rounded: ties, as in the log
    y = np.array([str(rng.choice(k, p=p / p.sum())) for p in proba])
    classes = [str(c) for c in range(k)]
    expected = classification_metrics(y, proba, classes, threshold, positive)
    got = noise.weighted_classification(class_codes(y, classes), proba, threshold, positive)
    assert {m: float(v[0]) for m, v in got.items()} == pytest.approx(expected, abs=1e-12)
    truth, pred = rng.normal(size=300), rng.normal(size=300)
    reg = noise.weighted_regression(truth, pred)
    assert {m: float(v[0]) for m, v in reg.items()} == pytest.approx(
        regression_metrics(truth, pred), abs=1e-12
    )


def heavy_tailed(
    n: int, rng: np.random.Generator, scale: float = 1.0, df: float = 3
) -> pd.DataFrame:
    """Prices and predictions whose errors have a heavy tail (as the diamonds table's; normal
    errors with `df` infinite)."""
    truth = rng.lognormal(7.5, 0.8, n)
    noise = rng.standard_t(df, n) if np.isfinite(df) else rng.normal(size=n)
    pred = truth + scale * noise * 0.25 * np.sqrt(truth) * 20
    return pd.DataFrame({LABEL_COL: truth, PREDICTION_COL: pred})


def regression_summary(window: pd.DataFrame, reference: pd.DataFrame, test_score: float) -> Any:
    band = noise.performance_noise(
        unseen=True,
        reference=noise.from_reference(reference, None),
        reference_proba=None,
        window=noise.Labelled(),
        window_proba=None,
        realised_rows=len(window),
        decision=(None, 1),
        confidence=0.99,
        test_rows=len(reference),
    )
    realised = regression_metrics(window[LABEL_COL], window[PREDICTION_COL])
    return {
        "model": "diamonds",
        "version": 1,
        "rows": len(window),
        "labelled_rows": len(window),
        "metric": "rmse",
        "test_score": test_score,
        "performance": {
            "realised": realised,
            "estimated": None,
            "reference_estimated": None,
            "realised_rows": len(window),
            "noise": band,
        },
    }


def test_a_healthy_window_above_test_rmse_plus_max_drop_but_inside_the_band_does_not_fire() -> None:
    """The diamonds false alarm: 1,000 healthy rows whose RMSE is above the test RMSE + 5% by
    chance fired `realised_performance`, critical. Inside the band it stays quiet; a window
    whose errors really grew still fires."""
    rng = np.random.default_rng(7)
    reference = heavy_tailed(4000, rng)  # the test rows, published with the version
    test_score = regression_metrics(reference[LABEL_COL], reference[PREDICTION_COL])["rmse"]
    rules = AlertRules()  # max_drop 0.05, confidence 0.99
    healthy = [heavy_tailed(1000, rng) for _ in range(60)]
    above = [w for w in healthy if regression_metrics(w[LABEL_COL], w[PREDICTION_COL])["rmse"]
             > test_score * 1.05]  # fmt: skip
    assert above, "some healthy windows are above test RMSE + max_drop by chance"
    for window in above:
        verdict = {
            c.rule: c for c in conditions(regression_summary(window, reference, test_score), rules)
        }
        cond = verdict["realised_performance"]
        assert cond.breached is False, cond.message
        assert "noise band" in cond.message and "1,000 rows" in cond.message
        assert cond.value is not None and cond.value > test_score * 1.05
    worse = heavy_tailed(1000, rng, scale=1.6)  # the model got 60% worse
    verdict = {
        c.rule: c for c in conditions(regression_summary(worse, reference, test_score), rules)
    }
    assert verdict["realised_performance"].breached is True
    assert "above" in verdict["realised_performance"].message


def test_the_band_narrows_with_the_window_and_max_drop_still_binds() -> None:
    """At 10,000 rows the band is narrower than half of `max_drop` (10%): the rule breaches from
    `max_drop` less the band (a material drop cannot be ruled out), and a significant drop that
    is below `max_drop` by more than the band stays quiet."""
    rng = np.random.default_rng(3)
    reference = heavy_tailed(20_000, rng, df=np.inf)
    ref = noise.from_reference(reference, None)
    assert ref.y is not None and ref.pred is not None
    widths = [
        noise.regression_spread(ref.y, ref.pred, n, 0.99).widths["rmse"]  # type: ignore[union-attr]
        for n in (100, 1000, 10_000)
    ]
    assert widths[0] > widths[1] > widths[2] > 0
    test_score = regression_metrics(reference[LABEL_COL], reference[PREDICTION_COL])["rmse"]
    s = regression_summary(heavy_tailed(10_000, rng, df=np.inf), reference, test_score)
    width = s["performance"]["noise"]["realised"]["widths"]["rmse"]
    rules = AlertRules(max_drop=0.1)
    assert 0 < width < 0.05 * test_score
    # significant (beyond the band) but below max_drop by more than the band: quiet
    s["performance"]["realised"]["rmse"] = test_score * 1.1 - width * 1.1
    assert s["performance"]["realised"]["rmse"] > test_score + width
    (cond,) = [c for c in conditions(s, rules) if c.rule == "realised_performance"]
    assert cond.breached is False
    # within the band of max_drop: a material drop cannot be ruled out
    s["performance"]["realised"]["rmse"] = test_score * 1.1 - width * 0.9
    (cond,) = [c for c in conditions(s, rules) if c.rule == "realised_performance"]
    assert cond.breached is True and cond.threshold == pytest.approx(test_score * 1.1 - width)


@pytest.mark.parametrize(
    ("metric", "baseline", "width", "max_drop", "expected"),
    [
        ("accuracy", 0.8, 0.04, 0.05, 0.76),  # wide band: the band decides
        ("accuracy", 0.8, 0.01, 0.05, 0.76),  # narrow band: max_drop less the band
        ("accuracy", 0.8, None, 0.05, 0.75),  # no band: max_drop alone
        ("accuracy", 0.8, 0.02, 0.0, 0.78),  # max_drop 0: the band alone
        ("log_loss", 0.5, 0.2, 0.05, 0.7),  # lower is better
        ("log_loss", 0.5, 0.01, 0.05, 0.54),
        ("rmse", 100.0, 2.0, 0.05, 103.0),  # a share of the baseline: 105 less the band
        ("rmse", 100.0, 30.0, 0.05, 130.0),
    ],
)
def test_drop_bound_is_significant_and_material(
    metric: str, baseline: float, width: float | None, max_drop: float, expected: float
) -> None:
    from core.metrics import get
    from monitoring.alerts import drop_bound

    assert drop_bound(get(metric), baseline, max_drop, width) == pytest.approx(expected)


def test_a_floor_needs_the_band_too() -> None:
    s = {
        "model": "m",
        "version": 1,
        "rows": 100,
        "labelled_rows": 100,
        "metric": "accuracy",
        "test_score": 0.8,
        "performance": {
            "realised": {"accuracy": 0.76},
            "estimated": None,
            "reference_estimated": None,
            "realised_rows": 100,
            "noise": {
                "confidence": 0.99,
                "source": "unseen",
                "note": "",
                "realised": {"rows": 100, "widths": {"accuracy": 0.09}},
                "estimated": None,
            },
        },
    }
    (cond,) = [
        c
        for c in conditions(s, AlertRules(performance_floor=0.78, max_drop=1.0))
        if c.rule == "realised_performance"
    ]
    assert cond.breached is False and cond.threshold == pytest.approx(0.69)
    s["performance"]["realised"]["accuracy"] = 0.6
    (cond,) = [
        c
        for c in conditions(s, AlertRules(performance_floor=0.78, max_drop=1.0))
        if c.rule == "realised_performance"
    ]
    assert cond.breached is True


def explanation(change: float, band: float) -> dict[str, Any]:
    return {
        "model": "m",
        "version": 1,
        "rows": 1000,
        "labelled_rows": 0,
        "metric": None,
        "test_score": None,
        "explanation_drift": {
            "method": "linear_exact",
            "features": {
                "a": {"reference": 1.0, "current": 1.0 + change, "change": change, "band": band},
                "b": {"reference": 0.5, "current": 0.5, "change": 0.0, "band": 0.05},
                "tiny": {"reference": 0.001, "current": 0.01, "change": 0.009, "band": 0.0},
            },
        },
    }


def test_explanation_drift_needs_both_the_change_and_the_band() -> None:
    rules = AlertRules()  # explanation_change 0.25
    verdict = {c.rule: c for c in conditions(explanation(0.3, 0.4), rules)}
    assert verdict["explanation_drift"].breached is False  # 30% but inside its band
    verdict = {c.rule: c for c in conditions(explanation(0.3, 0.1), rules)}
    assert verdict["explanation_drift"].breached is True
    assert "a +30%" in verdict["explanation_drift"].message
    assert "tiny" not in verdict["explanation_drift"].message  # 0.07% of the attribution
    verdict = {c.rule: c for c in conditions(explanation(0.2, 0.01), rules)}
    assert verdict["explanation_drift"].breached is False  # beyond the band, under 25%
    verdict = {c.rule: c for c in conditions(explanation(-0.4, 0.1), rules)}
    assert verdict["explanation_drift"].breached is True  # mattering less counts too
    assert "a -40%" in verdict["explanation_drift"].message


def test_runs_show_the_band_and_the_reference_drawn_from_unseen_rows(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(400, seed=11))
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    assert s["reference"]["unseen"] is True
    assert s["reference"]["drawn_from"].startswith("test")
    band = s["performance"]["noise"]
    assert band["source"] == "unseen" and band["confidence"] == 0.99
    assert band["realised"]["rows"] == s["performance"]["realised_rows"] == 400
    assert band["estimated"]["rows"] == 400
    assert set(band["realised"]["widths"]) >= {"roc_auc", "accuracy", "log_loss", "brier"}
    assert all(w > 0 for w in band["realised"]["widths"].values())
    assert {"log_loss", "brier", "f1"} <= set(s["performance"]["estimated"])
    for f in s["explanation_drift"]["features"].values():
        assert f["band"] > 0
    reg = CollectorRegistry()
    reg.register(MonitoringCollector(MonitorStore(store), cache_s=0))
    text = generate_latest(reg).decode()
    width = band["realised"]["widths"]["roc_auc"]
    assert (
        'servewatch_model_performance_band{kind="realised",metric="roc_auc",model="demo",'
        f'version="1"}} {width}'
    ) in text
    # the dashboard plots each figure with its band (value -/+ band, matched on every label):
    # every figure has a band series with the same labels, so neither expression comes back empty
    samples = {
        m.name: {tuple(sorted(x.labels.items())) for x in m.samples}
        for m in reg.collect()
        if m.name.startswith("servewatch_model_performance")
    }
    assert samples["servewatch_model_performance"] <= samples["servewatch_model_performance_band"]
    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "deploy/grafana/servewatch.json").read_text())
    (panel,) = [
        p
        for p in dashboard["panels"]
        if any("servewatch_model_performance_band" in t["expr"] for t in p["targets"])
    ]
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("band" not in e and "servewatch_model_performance{" in e for e in exprs)
    for sign in "-+":
        assert any(
            "servewatch_model_performance{" in e
            and f"{sign} servewatch_model_performance_band{{" in e
            for e in exprs
        ), sign


def test_a_version_published_before_says_its_reference_is_in_sample_and_still_runs(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """Versions without the manifest's `reference` (published before issue 33) keep working:
    the band is the window's own spread, and the run record says the reference is in-sample."""
    path = Path(msettings.registry) / "demo" / "1" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.pop("reference")
    path.write_text(json.dumps(manifest))
    log_traffic(store, msettings.registry, traffic(400, seed=12))
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    assert s["status"] == "ok"
    assert s["reference"] == {
        "drawn_from": "train+validation",
        "unseen": False,
        "note": s["reference"]["note"],
    }
    assert "in-sample" in s["reference"]["note"]
    band = s["performance"]["noise"]
    assert band["source"] == "window" and "no sample of unseen rows" in band["note"]
    assert band["realised"]["widths"]["roc_auc"] > 0
    # no realised alarm; the estimate may fire: without the record the whole reference is its
    # baseline, out-of-fold rows included, whose sharper probabilities put it 0.027 above this
    # traffic's (the edge of its band at 400 rows): what an in-sample reference cannot avoid
    fired = {c["rule"] for c in s["alerts"]}
    assert fired <= {"dataset_drift", "feature_drift", "estimated_performance"}


def test_a_version_is_judged_against_its_baseline_and_an_older_one_against_its_test_score(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """The realised rules' baseline is the manifest's `reference.baseline` (test and out-of-fold
    rows), the band widened for its rows; a version published without it is judged against its
    test score, the band widened for the test rows (wider)."""
    path = Path(msettings.registry) / "demo" / "1" / MANIFEST
    manifest = json.loads(path.read_text())
    record, split = manifest["reference"]["baseline"], manifest["data"]["split"]
    log_traffic(store, msettings.registry, traffic(400, seed=13))
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[], last=400)
    metric = s["metric"]
    assert s["baseline"] == {
        "score": record["metrics"][metric],
        "rows": split["test"] + split["train"] + split["validation"],
        "drawn_from": "test+out_of_fold",
    }
    with_baseline = s["performance"]["noise"]["realised"]["widths"][metric]
    manifest["reference"].pop("baseline")
    path.write_text(json.dumps(manifest))
    old = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[], last=400)
    assert old["status"] == "ok" and "baseline" not in old
    without = old["performance"]["noise"]["realised"]["widths"][metric]
    n = s["performance"]["realised_rows"]
    assert without / with_baseline == pytest.approx(
        noise.widening(n, split["test"]) / noise.widening(n, s["baseline"]["rows"])
    )


def test_an_accuracy_band_is_the_binomial_tail_within_3_percent() -> None:
    """The band of accuracy on n rows is z(99%) binomial standard errors (accuracy's skewness is
    nil at these sizes): read from 400 replicates it was off by up to 6%, and a 1,000-row band of
    2.21 standard errors fired on 1.2% of healthy windows."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, 3, 2000)
        proba = rng.dirichlet(np.ones(3), 2000)
        p = float(np.mean(proba.argmax(axis=1) == codes))
        for n in (100, 1000):
            spread = noise.classification_spread(codes, proba, n, 0.99)
            assert spread is not None
            exact = 2.3263 * np.sqrt(p * (1 - p) / n)
            assert spread.widths["accuracy"] == pytest.approx(exact, rel=0.03), (seed, n)


def test_the_report_names_the_realised_baseline_beside_the_test_score() -> None:
    from monitoring import bands

    band = {"rows": 1000, "widths": {"accuracy": 0.04}}
    summary: Any = {
        "metric": "accuracy",
        "rows": 1000,
        "labelled_rows": 1000,
        "test_score": 0.452,
        "performance": {
            "realised": {"accuracy": 0.40},
            "estimated": None,
            "reference_estimated": None,
            "realised_rows": 1000,
            "noise": {"confidence": 0.99, "source": "unseen", "note": "n", "realised": band,
                      "estimated": None},
        },
    }  # fmt: skip
    (table,) = bands.tables(summary, AlertRules())
    assert "unseen rows" not in table.note
    summary["baseline"] = {"score": 0.459, "rows": 30_000, "drawn_from": "test+out_of_fold"}
    (table,) = bands.tables(summary, AlertRules())
    assert "realised baseline 0.459 on 30,000 unseen rows (test+out_of_fold)" in table.note
    assert "realised_performance: BREACHED" in table.note  # 0.40 < 0.459 - 0.04


def _with_baseline(baseline: dict[str, Any], split: dict[str, Any]) -> Manifest:
    return Manifest.model_validate(
        {
            "name": "m", "version": 1, "created_at": "now", "task": "classification",
            "target": "y", "classes": ["no", "yes"], "features": [],
            "objective": {"metric": "roc_auc", "test_score": 0.63},
            "reference": {"drawn_from": "test", "unseen": True, "rows": {"test": 600},
                          "baseline": baseline},
            "data": {"split": split},
        }
    )  # fmt: skip


def test_the_baseline_counts_only_rows_that_were_unseen() -> None:
    """A baseline published before its folds were split as the search's (plain shuffled folds:
    no `copies_together`) predicted rows of data with copies by copies fitted on their
    duplicates, and with a time column on later rows (0.957 where the test rows read 0.630):
    such a version is judged against its test score, its band widened for the test rows alone.
    Without copies or a time column, or with the record saying how it split, every row counts."""
    old = {"metrics": {"roc_auc": 0.957}, "rows": {"test": 600, "out_of_fold": 2400}, "folds": 5}
    plain = {"train": 1920, "validation": 480, "test": 600, "copies_kept_together": 0,
             "ordered_by": None}  # fmt: skip
    expected = {"score": 0.957, "rows": 3000, "drawn_from": "test+out_of_fold"}
    assert runner._baseline(_with_baseline(old, plain), "roc_auc") == expected
    for split in ({**plain, "copies_kept_together": 3000}, {**plain, "ordered_by": "when"}):
        manifest = _with_baseline(old, split)
        assert runner._baseline(manifest, "roc_auc") is None
        assert runner._baseline_rows(manifest) == 600
    new = {**old, "copies_together": True, "ordered": False}
    copied = _with_baseline(new, {**plain, "copies_kept_together": 3000})
    assert runner._baseline(copied, "roc_auc") == expected
    assert runner._baseline_rows(copied) == 3000
    ordered = {**new, "rows": {"test": 600}, "folds": 0, "ordered": True}
    by_time = _with_baseline(ordered, {**plain, "ordered_by": "when"})
    assert runner._baseline(by_time, "roc_auc") == {**expected, "rows": 600, "drawn_from": "test"}
