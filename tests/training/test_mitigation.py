"""fairness.mitigation: each method applied, exported and served; the manifest and card compare
it with no mitigation; what a run cannot apply is refused by name. Data: the flights demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from core.registry import Registry
from service.inference.model import LoadedModel
from training import card
from training.config import TrainConfig
from training.demo import FEATURES, TARGET, load_flights
from training.errors import TrainingError
from training.mitigation import resample_index
from training.prepare import prepare, quiet
from training.train import run_training

# default_first false (issue 19): the gaps below were measured on the searched linear model; the
# untuned default chosen first has a gap of 0.019 that resampling does not halve
FAST = {"search": {"method": "random", "trials": 2, "default_first": False},
        "split": {"cv_folds": 2}, "reference_rows": 100, "models": ["linear"],
        "calibration": "none"}  # fmt: skip
COLUMNS = [c for c in FEATURES if c != "wind_gust"]  # wind_gust: 75% missing (the gate fails it)


@pytest.fixture(scope="module")
def flights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 flights of January to April: EWR departures are late more often (28% vs 18%)."""
    path = tmp_path_factory.mktemp("flights") / "flights.csv"
    load_flights([1, 2, 3, 4]).sample(6000, random_state=0)[[*COLUMNS, TARGET]].to_csv(
        path, index=False
    )
    return path


def _train(path: Path, root: Path, name: str, **fairness: Any) -> dict[str, Any]:
    cfg = TrainConfig.model_validate(
        {**FAST, "name": name, "data": str(path), "target": TARGET,
         "fairness": {"sensitive": ["origin"], **fairness}}
    )  # fmt: skip
    return run_training(cfg, Registry(root)).manifest


def test_resampling_measurably_narrows_the_gap_and_the_card_shows_the_trade_off(
    flights: Path, tmp_path: Path
) -> None:
    m = _train(flights, tmp_path, "late", mitigation="resample")
    mit = m["mitigation"]
    assert mit["method"] == "resample" and mit["attribute"] == "origin"
    none = mit["none"]["fairness"]["origin"]["demographic_parity_difference"]
    fixed = mit["resample"]["fairness"]["origin"]["demographic_parity_difference"]
    assert fixed < 0.5 * none, (none, fixed)  # measured 0.050 -> 0.008
    assert mit["resample"]["test_score"] > mit["none"]["test_score"] - 0.05  # at a small cost
    # the mitigated model is the one exported and measured in `fairness`
    assert m["fairness"]["origin"]["demographic_parity_difference"] == fixed
    text = card.render({**m, "version": 1})
    assert "Mitigation: **resample**" in text
    assert "| none | " in text and "| resample | " in text


def test_a_budget_leaves_the_search_its_trials_and_the_resampling_its_small_cost(
    flights: Path, tmp_path: Path
) -> None:
    """With a budget the reserve for the steps after the search (what fits nothing: per feature,
    not per test cell; the mitigation's fit) leaves the search its two trials: reserved at 1.5 ms
    a test cell (1,200 x 16: 30 s at the least) it took the whole 30 s, the search ran its first
    trial only, and that configuration's resampling cost 0.076."""
    cfg = TrainConfig.model_validate(
        {**FAST, "name": "late", "data": str(flights), "target": TARGET,
         "search": {**FAST["search"], "budget_seconds": 30},
         "fairness": {"sensitive": ["origin"], "mitigation": "resample"}}
    )  # fmt: skip
    m = run_training(cfg, Registry(tmp_path)).manifest
    (linear,) = m["model"]["candidates"]
    assert linear["trials"] == 2, m["model"]["search"]["budget"]
    mit = m["mitigation"]
    assert mit["resample"]["test_score"] > mit["none"]["test_score"] - 0.05


def test_the_quality_report_lists_each_group_and_flags_the_small_ones(flights: Path) -> None:
    frame = pd.read_csv(flights)
    cfg = TrainConfig.model_validate(
        {**FAST, "data": str(flights), "target": TARGET,
         "fairness": {"sensitive": ["origin", "carrier"], "min_group_rows": 50}}
    )  # fmt: skip
    report = prepare(cfg, quiet).report.to_dict()
    groups: Any = report["sensitive_groups"]
    origin = {g["group"]: g for g in groups["origin"]}
    assert set(origin) == {"EWR", "JFK", "LGA"}
    assert sum(g["share"] for g in origin.values()) == pytest.approx(1.0, abs=1e-4)
    ewr = frame[frame.origin == "EWR"][TARGET]
    assert origin["EWR"]["rows"] == len(ewr)
    assert origin["EWR"]["positive_rate"] == pytest.approx(ewr.mean())
    small = {g["group"] for g in groups["carrier"] if g["too_small"]}
    counts = frame["carrier"].value_counts()
    assert small == set(counts[counts < 50].index) and small  # e.g. HA, OO, YV
    flagged = {f["message"] for f in report["findings"] if f["rule"] == "small_group"}  # type: ignore[attr-defined]
    assert len(flagged) == len(small) and all("carrier" in f for f in flagged)


@pytest.mark.parametrize(
    ("method", "constraint"),
    [("reductions", "true_positive_rate_parity"), ("adversarial", "demographic_parity")],
)
def test_in_processing_trains_exports_and_answers_the_same_twice(
    flights: Path, tmp_path: Path, method: str, constraint: str
) -> None:
    if method == "adversarial":
        pytest.importorskip("torch")
    small = tmp_path / "small.csv"
    pd.read_csv(flights).head(1200).to_csv(small, index=False)
    m = _train(small, tmp_path / "r", "late", mitigation=method, constraint=constraint)
    mit = m["mitigation"]
    assert mit["constraint"] == constraint and {"none", method} <= set(mit)
    assert mit["family"] == ("deep" if method == "adversarial" else "linear")
    model = LoadedModel.load(Registry(tmp_path / "r"), "late", 1)
    rows = pd.read_csv(small).head(50)[COLUMNS]
    cols = {k: [None if v != v else v for v in vals] for k, vals in rows.to_dict("list").items()}
    first = model.predict_columns(cols)
    assert first.predictions == model.predict_columns(cols).predictions  # deterministic
    assert set(first.predictions) <= {0, 1}


def test_post_processing_needs_the_attribute_at_prediction_time(
    flights: Path, tmp_path: Path
) -> None:
    m = _train(flights, tmp_path, "late", mitigation="postprocess", constraint="equalized_odds")
    (origin,) = [f for f in m["features"] if f["name"] == "origin"]
    assert origin["required_for"] == "postprocess" and origin["nullable"] is False
    model = LoadedModel.load(Registry(tmp_path), "late", 1)
    assert model.manifest.model_dump()["features"]  # the schema the service shows
    first = pd.read_csv(flights).iloc[0][COLUMNS]
    row = {c: (v.item() if hasattr(v, "item") else v) for c, v in first.items() if v == v}
    problems = model.validator.check([{k: v for k, v in row.items() if k != "origin"}])
    assert isinstance(problems, list)
    assert [(p.feature, p.rule) for p in problems] == [("origin", "required")]
    assert "postprocess" in problems[0].message
    # per-group thresholds: the same inputs from another origin may get another answer
    out = model.predict_columns({k: [v] for k, v in row.items()})
    assert out.predictions[0] in (0, 1)


def test_resample_draws_cells_as_if_group_and_label_were_independent() -> None:
    groups = pd.Series(["a"] * 80 + ["b"] * 20)
    y = pd.Series(["1"] * 60 + ["0"] * 20 + ["1"] * 2 + ["0"] * 18)
    idx = resample_index(groups, y, 0)
    cells = pd.crosstab(groups.iloc[idx].to_numpy(), y.iloc[idx].to_numpy())
    # P(a)=0.8, P(b)=0.2, P(1)=0.62, P(0)=0.38 over 100 rows
    assert cells.loc["a", "1"] == 50 and cells.loc["a", "0"] == 30
    assert cells.loc["b", "1"] == 12 and cells.loc["b", "0"] == 8
    assert np.array_equal(idx, resample_index(groups, y, 0))  # seeded


def _iris(tmp_path: Path) -> Path:
    raw = datasets.load_iris(as_frame=True)
    frame = raw.frame.copy()
    frame["target"] = raw.target.map(dict(enumerate(raw.target_names)))
    frame["size"] = np.where(frame["sepal length (cm)"] > 5.8, "big", "small")
    frame.to_csv(tmp_path / "iris.csv", index=False)
    return tmp_path / "iris.csv"


@pytest.mark.parametrize(
    ("fairness", "target", "message"),
    [
        ({"mitigation": "reductions"}, "three", "needs a binary classification target"),
        ({"mitigation": "postprocess"}, "regression", "needs a binary classification target"),
        ({"mitigation": "resample"}, "regression", "needs a classification target"),
        ({"mitigation": "postprocess", "include_in_model": False}, "binary",
         "needs the sensitive attribute 'size' at prediction time"),
        ({"mitigation": "adversarial", "constraint": "true_positive_rate_parity"}, "binary",
         "not true_positive_rate_parity"),
        ({"mitigation": "resample", "sensitive": []}, "binary", "needs fairness.sensitive"),
    ],
)  # fmt: skip
def test_what_a_run_cannot_apply_is_refused_by_key_before_fitting(
    tmp_path: Path, fairness: dict[str, Any], target: str, message: str
) -> None:
    path = _iris(tmp_path)
    frame = pd.read_csv(path)
    if target == "binary":
        frame["target"] = frame["target"] == "setosa"
    elif target == "regression":
        frame["target"] = frame["petal width (cm)"] * 2 + frame["sepal width (cm)"]
        frame = frame.drop(columns="petal width (cm)")
    frame.to_csv(path, index=False)
    cfg = TrainConfig.model_validate(
        {
            **FAST,
            "data": str(path),
            "target": "target",
            "quality": {"fail_on": []},
            "fairness": {"sensitive": ["size"], **fairness},
        }
    )  # iris: setosa is separable, the gate's leakage rule would fail first
    with pytest.raises(TrainingError, match=f"fairness.mitigation .*{message}"):
        run_training(cfg, Registry(tmp_path / "r"))
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_an_unknown_method_or_constraint_is_refused_with_its_key() -> None:
    with pytest.raises(Exception, match="fairness.mitigation"):
        TrainConfig.model_validate({"fairness": {"mitigation": "magic"}})
    with pytest.raises(Exception, match="fairness.constraint"):
        TrainConfig.model_validate({"fairness": {"constraint": "parity"}})
