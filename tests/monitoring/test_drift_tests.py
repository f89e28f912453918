"""Drift tests sized to the window, and hostile windows (a feature 100% missing, one class)."""

from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.config import MonitorSettings
from monitoring.drift import run_drift
from monitoring.runner import run_monitoring
from predlog.store import PredictionStore
from tests.monitoring.conftest import log_traffic, traffic


def population(n: int, rng: np.random.Generator, positive: float = 0.428) -> pd.DataFrame:
    """A numeric, categoricals of 20 and 100 long-tail levels, a binary prediction."""

    def zipf(levels: int) -> np.ndarray:  # type: ignore[type-arg]
        w = 1.0 / np.arange(1, levels + 1) ** 1.1
        return rng.choice([f"L{i}" for i in range(levels)], n, p=w / w.sum())

    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "cat20": zipf(20),
            "cat100": zipf(100),
            "prediction": np.where(rng.random(n) < positive, "yes", "no"),
        }
    )


CATEGORICAL = ["cat20", "cat100", "prediction"]


def test_healthy_windows_of_200_rows_do_not_drift() -> None:
    """Evidently's default picked distances at a fixed 0.1 from the reference's size alone: the
    long-tail columns drifted in most healthy 200-row windows (issue 33: 75% and 100%)."""
    ref = population(3000, np.random.default_rng(0))
    flagged = []
    for seed in range(1, 4):
        cur = population(200, np.random.default_rng(seed))
        result = run_drift(ref, cur, numeric=["x"], categorical=CATEGORICAL)
        flagged += [c for c, d in result.columns.items() if d.drifted]
        assert result.columns["cat100"].method == "servewatch_chi2"
    assert flagged == []


def test_a_ten_point_shift_in_a_class_share_drifts_at_10000_rows() -> None:
    """42.8% -> 56.9% positive over 10,000 rows scored 0.100 by Jensen-Shannon, not flagged."""
    rng = np.random.default_rng(1)
    ref = population(5000, rng)
    cur = population(10_000, rng, positive=0.569)
    result = run_drift(ref, cur, numeric=["x"], categorical=CATEGORICAL)
    assert result.columns["prediction"].drifted
    assert not any(result.columns[c].drifted for c in ("x", "cat20", "cat100"))
    # Evidently ran servewatch's tests: its p-values are the ones computed here
    from monitoring.drift import choose_test, p_value

    for c in ("x", *CATEGORICAL):
        expected = p_value(ref[c], cur[c], choose_test(ref[c], c == "x"))
        assert result.columns[c].score == expected


def test_large_healthy_windows_of_a_long_tail_do_not_drift() -> None:
    """Rare levels absent from the reference sample gave p = 0 against its frequencies; the
    pooled two-sample test counts them for what they are."""
    from monitoring.drift import pooled_chi2

    rng = np.random.default_rng(2)
    ref = population(5000, rng)["cat100"]
    for _ in range(5):
        assert pooled_chi2(ref, population(10_000, rng)["cat100"]) > 0.001
    unseen = pd.Series(["L0"] * 9000 + ["NEW"] * 1000)  # a real new category still shows
    assert pooled_chi2(ref, unseen) < 1e-6


def test_the_cut_off_holds_the_false_alarm_rate_over_many_columns() -> None:
    from monitoring.drift import bh_threshold, choose_test, p_value

    assert bh_threshold([0.5, 0.2, 0.9], 0.01) == 0.01 / 3  # nothing flagged
    cut = bh_threshold([0.001, 0.004, 0.9, 0.5], 0.01)
    assert cut == 0.01 * 2 / 4  # both small p-values flagged, as Benjamini-Hochberg says
    assert choose_test(pd.Series([1.0, 2.0, 3.0] * 10), numeric=True) == "servewatch_chi2"
    assert choose_test(pd.Series(np.arange(50.0)), numeric=True) == "ks"
    assert p_value(pd.Series(np.arange(50.0)), pd.Series(np.arange(50.0)), "ks") == 1.0


def test_a_feature_arriving_all_missing_is_a_finding_and_an_alert(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    frame = traffic(300, seed=51)
    frame["x2"] = np.nan  # nullable, and now never filled
    log_traffic(store, msettings.registry, frame)
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    assert s["status"] == "ok"
    x2 = s["drift"]["columns"]["x2"]
    assert x2["method"] == "all_missing" and x2["drifted"]
    assert s["quality"]["missing_share"]["x2"] == 1.0
    assert "missing_values" in {a["rule"] for a in s["alerts"]}
    assert "not tested" in (Path(s["report_dir"]) / "report.html").read_text()


def test_a_window_whose_labels_hold_one_class_shows_what_is_defined(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    frame = traffic(600, seed=52)
    frame = frame[frame["label"] == "no"].iloc[:250]
    log_traffic(store, msettings.registry, frame)
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    perf = s["performance"]
    assert perf["realised"]["accuracy"] > 0.5
    assert set(perf["undefined"]) >= {"roc_auc", "recall"}
    assert perf["realised"]["roc_auc"] != perf["realised"]["roc_auc"]  # NaN, not a number
    page = (Path(s["report_dir"]) / "report.html").read_text()
    assert "Cannot find pos_label" not in page and "all hold one class" in page


def test_an_unseen_category_share_has_its_own_rule() -> None:
    from monitoring.alerts import AlertRules, conditions

    quality = {
        "missing_share": {"color": 0.0},
        "missing_increase": {"color": 0.0},
        "unseen_category_share": {"color": 0.3},
        "out_of_range_share": {},
    }
    summary = {"model": "m", "version": 1, "rows": 500, "metric": None, "quality": quality}
    rule = {c.rule: c for c in conditions(summary, AlertRules())}["unseen_categories"]  # type: ignore[arg-type]
    assert rule.breached and rule.value == 0.3 and "'color'" in rule.message
    quality["unseen_category_share"]["color"] = 0.05
    assert not {c.rule: c for c in conditions(summary, AlertRules())}["unseen_categories"].breached  # type: ignore[arg-type]
