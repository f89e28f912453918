"""Partition maintenance defended: out-of-range ids never reach it, DEFAULT is kept too."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from predlog import partitions, retention
from predlog.store import PredictionStore
from service.config import Settings
from service.main import create_app
from tests.service.conftest import all_at_once, example
from tests.service.test_retention import ids_in, insert

DAY = 86_400.0
YEAR_2100 = 4_102_444_800.0


def hex_id(t: float, n: int) -> str:
    return f"{int(t * 1000):012x}{n:020x}"


def raw_labels(
    store: PredictionStore, pids: list[str], received_at: float, model: str = "m"
) -> None:
    """Labels as a release that checked no id stored them."""
    store.write_labels(
        [{"prediction_id": p, "model": model, "label": '"yes"', "received_at": received_at}
         for p in pids]
    )  # fmt: skip


def feedback_partitions(store: PredictionStore) -> list[partitions.Partition]:
    with store.engine.connect() as conn:
        return [p for p in partitions.partitions(conn, "sw_feedback") if not p.is_default]


def test_a_label_dated_past_year_9999_never_stops_maintenance(pg_url: str) -> None:
    """A label stored under an id dated in year 10889 (by a release that let it in) waits in
    DEFAULT: maintenance and a restart's create_schema still run, and retention removes it (it
    joins no row) once it is older than the setting."""
    store = PredictionStore(pg_url)
    store.create_schema()
    now = store.now()
    raw_labels(store, ["f" * 32, "ffffffffffff" + "0" * 20], received_at=now)
    before = feedback_partitions(store)
    done = retention.maintain(store, None)
    assert feedback_partitions(store) == before and done.labels_moved == 0
    PredictionStore(pg_url).create_schema()  # a restart
    kept = retention.maintain(store, 1.0, now=now + 0.5 * DAY)
    assert kept.labels_dropped == 0  # younger than the setting
    gone = retention.maintain(store, 1.0, now=now + 2 * DAY)
    assert gone.labels_dropped == 2 and ids_in(store, "sw_feedback") == set()
    store.engine.dispose()


def test_ids_dated_2100_make_no_partitions_and_retention_removes_their_labels(
    pg_url: str,
) -> None:
    """50 labels dated in 2100, one a day: no partition is made for them (the release before made
    50), and 40 days later with a 1-day retention no prediction and no label is left."""
    store = PredictionStore(pg_url)
    store.create_schema()
    now = store.now()
    before = len(feedback_partitions(store))
    insert(store, {hex_id(now, k): (now, now) for k in range(3)})
    raw_labels(store, [hex_id(now, k) for k in range(3)], received_at=now)
    raw_labels(store, [hex_id(YEAR_2100 + k * DAY, k) for k in range(50)], received_at=now)
    retention.maintain(store, None)
    assert len(feedback_partitions(store)) == before
    later = retention.maintain(store, 1.0, now=now + 40 * DAY)
    assert store.count_predictions() == 0
    assert ids_in(store, "sw_feedback") == set()
    assert later.labels_dropped == 53
    store.engine.dispose()


def test_far_future_partitions_made_before_are_emptied_and_dropped(pg_url: str) -> None:
    """A label partition for 2100 (made by the release before): its labels that join no row are
    removed once older than the setting, and the empty partition is dropped."""
    store = PredictionStore(pg_url)
    store.create_schema()
    now = store.now()
    start = partitions.period_start(YEAR_2100, 86_400)
    with store.engine.begin() as conn:
        partitions.lock(conn)
        name, _ = partitions.ensure_period(conn, "sw_feedback", start, start + 86_400)
    raw_labels(store, [hex_id(YEAR_2100 + 5, 1), hex_id(YEAR_2100 + 6, 2)], received_at=now)
    assert ids_in(store, name) == {hex_id(YEAR_2100 + 5, 1), hex_id(YEAR_2100 + 6, 2)}
    assert retention.maintain(store, 1.0, now=now + 0.5 * DAY).dropped == []
    done = retention.maintain(store, 1.0, now=now + 2 * DAY)
    assert name in done.dropped and done.labels_dropped == 2
    assert name not in {p.name for p in feedback_partitions(store)}
    store.engine.dispose()


def test_default_holds_only_what_retention_then_removes(pg_url: str) -> None:
    """Upper-case and foreign ids wait in DEFAULT; retention removes those that join no row of
    their model once older than the setting, and keeps younger ones."""
    store = PredictionStore(pg_url)
    store.create_schema()
    now = store.now()
    upper = hex_id(now, 7).upper()
    raw_labels(store, [upper, "not-ours"], received_at=now - 3 * DAY)
    raw_labels(store, ["young-label"], received_at=now)
    assert ids_in(store, "sw_feedback_default") == {upper, "not-ours", "young-label"}
    done = retention.maintain(store, 1.0, now=now)
    assert done.labels_dropped == 2
    assert ids_in(store, "sw_feedback_default") == {"young-label"}
    store.engine.dispose()


def test_partition_names_refuse_periods_out_of_range() -> None:
    assert partitions.partition_name("t", 0) == "t_p19700101_0000"
    for start in (-86_400, partitions.MAX_PERIOD_START, int(0xFFFFFFFFFFFF / 1000)):
        with pytest.raises(ValueError, match="no partition"):
            partitions.partition_name("t", start)


def test_future_dated_ids_posted_to_the_service_never_reach_the_log(
    settings: Settings, pg_url: str
) -> None:
    """The issue's attack on PostgreSQL: future-dated and year-9999 ids are 422s; maintenance,
    a restart and the next prediction's log row all go on as before."""
    pg = settings.model_copy(update={"database_url": pg_url})
    bad = ["f" * 32] + [hex_id(YEAR_2100 + k * DAY, k) for k in range(20)]
    with TestClient(create_app(pg)) as c:
        res = c.post(
            "/v1/models/demo/feedback",
            json={"labels": [{"prediction_id": p, "label": "yes"} for p in bad]},
        )
        assert res.status_code == 422
        assert {d["rule"] for d in res.json()["error"]["details"]} == {"id_future"}
    store = PredictionStore(pg_url)
    assert ids_in(store, "sw_feedback") == set()
    before = feedback_partitions(store)
    retention.maintain(store, None)
    assert feedback_partitions(store) == before
    with TestClient(create_app(pg)) as c:  # a restart
        ok = c.post("/v1/models/demo/predict", json={"instances": [example()]})
        assert ok.status_code == 200
    deadline = time.monotonic() + 10
    while store.count_predictions("demo") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    store.engine.dispose()


def test_sqlite_retention_removes_labels_that_join_no_row_of_their_model(
    settings: Settings,
) -> None:
    """A label stored under another model than its id's row (the release before joined by id
    only) joins nothing: retention removes it like any label without a row."""
    store = PredictionStore(settings.database_url)
    store.create_schema()
    now = store.now()
    insert(store, {hex_id(now, 1): (now, now)})  # model 'm'
    raw_labels(store, [hex_id(now, 1)], received_at=now - 3 * DAY, model="other")
    raw_labels(store, [hex_id(YEAR_2100, 2)], received_at=now - 3 * DAY)
    done = retention.maintain(store, 1.0, now=now)
    assert done.labels_dropped == 2 and ids_in(store, "sw_feedback") == set()
    assert ids_in(store) == {hex_id(now, 1)}
    store.engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_maintenance_totals_add_up_when_passes_run_at_once(
    backend: str, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """Eight passes recording at once (workers, the CronJob): no total is lost, none fails."""
    url = settings.database_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = PredictionStore(url)
    store.create_schema()
    done = partitions.Maintenance(rows_dropped=3, labels_dropped=1, dropped=["p"])
    raised = all_at_once(lambda _: retention._record(store, done), range(8))
    assert raised == []
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM sw_log_retention")).one()
    assert (row.rows_dropped, row.labels_dropped, row.partitions_dropped) == (24, 8, 8)
    store.engine.dispose()


def test_the_start_pass_on_an_unpartitioned_log_keeps_the_oldest_it_knows(pg_url: str) -> None:
    """A service records a pass as it starts, without the whole-table scan an unpartitioned
    PostgreSQL log needs for its oldest row: the oldest recorded before stays."""
    from tests.service.test_retention import OLD_FEEDBACK, OLD_PREDICTIONS

    store = PredictionStore(pg_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text(OLD_PREDICTIONS))
        conn.execute(sa.text(OLD_FEEDBACK))
    store.create_schema()  # stays unpartitioned, gains ingested_at
    insert(store, {hex_id(1000.0, 1): (1000.0, 1000.0)})
    assert retention.maintain(store, None).oldest_ingested_at == 1000.0

    def recorded() -> tuple[float, float | None]:
        with store.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM sw_log_retention")).one()
        return row.ran_at, row.oldest_ingested_at

    first, _ = recorded()
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM sw_predictions"))
    retention.maintain(store, None, at_start=True)
    ran, oldest = recorded()
    # not measured at start; nor a run of retention (restarts must not hide a broken CronJob)
    assert ran == first and oldest == 1000.0
    retention.maintain(store, None)
    ran_after, oldest = recorded()
    assert oldest is None and ran_after > first  # measured: the log is empty
    store.engine.dispose()


def test_a_tagged_id_waiting_in_default_moves_to_its_partition(pg_url: str) -> None:
    """A label for a tagged id (base32hex in its middle) from a period without a partition waits
    in DEFAULT and is moved once maintenance makes the partition, as a legacy id's is."""
    store = PredictionStore(pg_url)
    store.create_schema()
    then = store.now() - 5 * DAY
    tagged = f"{int(then * 1000):012x}" + "uv0g" * 2 + "0123456789ab"
    legacy = hex_id(then, 9)
    raw_labels(store, [tagged, legacy], received_at=then)
    assert ids_in(store, "sw_feedback_default") == {tagged, legacy}
    done = retention.maintain(store, None)
    assert done.labels_moved == 2 and ids_in(store, "sw_feedback_default") == set()
    store.engine.dispose()
