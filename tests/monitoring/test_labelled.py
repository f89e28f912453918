"""The labelled-window query: labelled rows of one model, filtered and capped in the database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.rows import FeedbackRow
from predlog.store import PredictionStore, WindowQuery, prediction_rows
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
    every = store.read_log_window(WindowQuery("demo"), cap=1000)
    assert [r["id"] for r in every] == ids[::2][::-1]
    assert {r["label"] for r in every} == {'"yes"'}
    assert [r["id"] for r in store.read_log_window(WindowQuery("demo"), cap=10)] == ids[::2][::-1][
        :10
    ]
    since = store.read_log_window(WindowQuery("demo", since=t0 + 100 * 1e-4), cap=1000)
    assert [r["id"] for r in since] == ids[100::2][::-1]  # rows 100 onwards
    assert store.read_log_window(WindowQuery("other"), cap=1000) == []
    assert store.read_log_window(WindowQuery("demo", version=2), cap=1000) == []
    assert store.count_window(WindowQuery("demo")) == len(ids[::2])
    # unlabelled ones too: the answered rows only, never the shadow's (export --no-labelled)
    rows = store.read_log_window(WindowQuery("demo", labelled=False), cap=1000)
    assert [r["id"] for r in rows] == ids[::-1] and "s" * 32 not in {r["id"] for r in rows}
    store.engine.dispose()


def test_the_same_query_reads_by_ingest_time_and_by_when_a_label_met_its_row(
    any_store: PredictionStore, registry_copy: Path
) -> None:
    """Monitoring's windows through the one query: rows made a day ago and ingested now fall in
    the ingest window, not the prediction-time one; labels by when they met their prediction;
    shadow rows never; over the cap, the same sample by id bits every time."""
    store = any_store
    ids = log_traffic(
        store, registry_copy, traffic(200, seed=6), labelled=False, at=time.time() - 86400
    )
    shadow = prediction_rows(
        ids=["s" * 32], model="demo", version=1, created_at=time.time(), inputs=[{}],
        predictions=["no"], probabilities=None, latency_ms=0.0, shadow=True, ref_ids=[ids[0]],
    )  # fmt: skip
    store.write_predictions(shadow)
    now = store.now()
    made = WindowQuery("demo", 1, since=now - 3600, until=now + 60, labelled=False)
    assert store.count_window(made) == 0
    rows = WindowQuery(
        "demo", 1, since=now - 3600, until=now + 60, clock="ingested", labelled=False
    )
    size, newest = store.window_size(rows)
    assert size == 200 and newest is not None and now - 3600 < newest <= now + 60
    every = store.read_log_window(rows, cap=1000, sample_over=size)
    assert sorted(r["id"] for r in every) == sorted(ids)
    sample = store.read_log_window(rows, cap=50, sample_over=size, inputs=False)
    assert 0 < len(sample) <= 50 and "inputs" not in sample[0]
    bits = [r["id"][-4:] for r in sample]
    assert bits == sorted(bits)  # drawn by the ids' random bits, in their order
    again = store.read_log_window(rows, cap=50, sample_over=size, inputs=False)
    assert [r["id"] for r in again] == [r["id"] for r in sample]
    store.write_labels(
        [FeedbackRow(prediction_id=i, model="demo", label='"yes"', received_at=now + 10)
         for i in [*ids[:60], "s" * 32]]
    )  # fmt: skip
    met = WindowQuery("demo", 1, since=now + 5, until=now + 20, clock="met")
    assert store.count_window(met) == 60
    assert sorted(r["id"] for r in store.read_log_window(met, cap=1000)) == sorted(ids[:60])
    assert store.count_window(WindowQuery("demo", 1, since=now + 20, clock="met")) == 0
    with pytest.raises(ValueError, match="labelled rows only"):
        store.count_window(WindowQuery("demo", clock="met", labelled=False))
    store.engine.dispose()


def test_retraining_reads_at_most_its_cap_of_labelled_rows(
    registry_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retraining window: the newest labelled rows up to the cap, oldest first."""
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    ids = log_traffic(store, registry_copy, traffic(200, seed=5), at=time.time() - 1000)
    monkeypatch.setattr(retrain, "LABELLED_CAP", 30)
    read = store.read_log_window
    asked: list[dict[str, object]] = []
    monkeypatch.setattr(store, "read_log_window", lambda *a, **k: asked.append(k) or read(*a, **k))
    frame = retrain.labelled_window(store, "demo", "label", since=None, time_column=None)
    assert list(frame["__id"]) == ids[-30:]
    assert frame["label"].notna().all()
    # it reads the inputs and labels only, not the logged outputs (memory: 200,000 rows)
    assert asked == [{"cap": 30, "outputs": False}]
    (row,) = read(WindowQuery("demo"), cap=1, outputs=False)
    assert set(row) == {"id", "version", "created_at", "inputs", "label"}
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
