"""The labelled-window query: labelled rows of one model, filtered and capped in the database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.rows import FeedbackRow
from predlog.store import PredictionStore, prediction_rows
from servewatch import retrain
from tests.monitoring.conftest import log_traffic, traffic
from tests.service.conftest import pg_url  # noqa: F401 - a fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> PredictionStore:
    url = (
        f"sqlite:///{tmp_path}/log.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = PredictionStore(url)
    store.create_schema()
    return store


def test_only_labelled_rows_of_the_model_newest_first_capped(
    any_store: PredictionStore, registry_copy: Path
) -> None:
    """120 rows, every other one labelled; a label under another model and a shadow row's
    label join nothing. The query returns the labelled rows only, newest first, at most `cap`,
    and `since` filters by prediction time."""
    store = any_store
    t0 = time.time() - 1000
    ids = log_traffic(store, registry_copy, traffic(120, seed=4), labelled=False, at=t0)
    now = time.time()
    store.write_labels(
        [FeedbackRow(prediction_id=i, model="demo", label='"yes"', received_at=now)
         for i in ids[::2]]
        + [FeedbackRow(prediction_id=ids[1], model="other", label='"no"', received_at=now)]
    )  # fmt: skip
    shadow = prediction_rows(
        ids=["s" * 32], model="demo", version=2, created_at=now, inputs=[{}],
        predictions=["no"], probabilities=None, latency_ms=0.0, shadow=True, ref_ids=[ids[0]],
    )  # fmt: skip
    store.write_predictions(shadow)
    store.write_labels(
        [FeedbackRow(prediction_id="s" * 32, model="demo", label='"no"', received_at=now)]
    )
    every = store.read_labelled("demo", cap=1000)
    assert [r["id"] for r in every] == ids[::2][::-1]
    assert {r["label"] for r in every} == {'"yes"'}
    assert [r["id"] for r in store.read_labelled("demo", cap=10)] == ids[::2][::-1][:10]
    since = store.read_labelled("demo", cap=1000, since=t0 + 100 * 1e-4)  # rows 100 onwards
    assert [r["id"] for r in since] == ids[100::2][::-1]
    assert store.read_labelled("other", cap=1000) == []
    assert store.read_labelled("demo", cap=1000, version=2) == []
    store.engine.dispose()


def test_retraining_reads_at_most_its_cap_of_labelled_rows(
    registry_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retraining window: the newest labelled rows up to the cap, oldest first."""
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    ids = log_traffic(store, registry_copy, traffic(200, seed=5), at=time.time() - 1000)
    monkeypatch.setattr(retrain, "LABELLED_CAP", 30)
    frame = retrain.labelled_window(store, "demo", "label", since=None, time_column=None)
    assert list(frame["__id"]) == ids[-30:]
    assert frame["label"].notna().all()
    store.engine.dispose()


def test_the_shadow_comparison_joins_labels_of_its_own_model(any_store: PredictionStore) -> None:
    """A shadow answer beside the production answer it shadowed and that answer's label; a label
    stored under another model for that id joins nothing."""
    from monitoring.window import read_shadow

    store, now = any_store, time.time()
    answered = prediction_rows(
        ids=["a" * 32], model="m", version=1, created_at=now, inputs=[{}],
        predictions=["yes"], probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    shadow = prediction_rows(
        ids=["b" * 32], model="m", version=2, created_at=now, inputs=[{}],
        predictions=["no"], probabilities=None, latency_ms=0.0, shadow=True, ref_ids=["a" * 32],
    )  # fmt: skip
    store.write_predictions(answered + shadow)
    store.write_labels(
        [FeedbackRow(prediction_id="a" * 32, model="m", label='"yes"', received_at=now)]
    )
    (row,) = read_shadow(store, model="m", since=None, cap=10)
    assert (row["production_version"], row["shadow_version"], row["label"]) == (1, 2, '"yes"')
    store.write_labels(
        [FeedbackRow(prediction_id="a" * 32, model="x", label='"no"', received_at=now)]
    )
    (row,) = read_shadow(store, model="m", since=None, cap=10)
    assert row["label"] is None
    store.engine.dispose()


def test_a_late_label_reaches_the_shadow_comparison_by_the_labels_window(
    any_store: PredictionStore,
) -> None:
    """The shadow's realised comparison reads labels by when they met their production
    prediction: a label that arrives after the shadow rows' window ran is in the next labels
    window, once, though the rows themselves are in no later rows window."""
    from monitoring.window import read_shadow

    store, now = any_store, time.time()
    answered = prediction_rows(
        ids=["c" * 32], model="m", version=1, created_at=now, inputs=[{}],
        predictions=["yes"], probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    shadow = prediction_rows(
        ids=["d" * 32], model="m", version=2, created_at=now, inputs=[{}],
        predictions=["no"], probabilities=None, latency_ms=0.0, shadow=True, ref_ids=["c" * 32],
    )  # fmt: skip
    store.write_predictions(answered + shadow)
    first = store.now()  # the first run's end: the rows are in its window, unlabelled
    assert [r["label"] for r in read_shadow(store, model="m", since=None, cap=10, until=first)] == [
        None
    ]
    assert read_shadow(store, model="m", since=None, cap=10, until=first, labels_met=True) == []
    time.sleep(0.05)
    store.write_labels(
        [FeedbackRow(prediction_id="c" * 32, model="m", label='"yes"', received_at=now)],
        db_clock=True,
    )
    second = store.now()
    assert read_shadow(store, model="m", since=first, cap=10, until=second) == []  # no new rows
    (row,) = read_shadow(store, model="m", since=first, cap=10, until=second, labels_met=True)
    assert (row["shadow_version"], row["label"]) == (2, '"yes"')
    # judged once: the next labels window has nothing
    assert read_shadow(store, model="m", since=second, cap=10, labels_met=True) == []
    store.engine.dispose()
