import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from monitoring.window import read_window
from predlog.ids import IdKeys
from predlog.store import PredictionStore, WindowQuery, feedback, prediction_rows
from service.config import Settings
from service.dataplane import DataPlane
from service.main import create_app
from tests.service.conftest import example


def predict_ids(c: TestClient, settings: Settings, n: int = 2, model: str = "demo") -> list[str]:
    res = c.post(
        f"/v1/models/{model}/predict", json={"instances": [example(settings.registry)] * n}
    )
    assert res.status_code == 200, res.text
    return [p["prediction_id"] for p in res.json()["predictions"]]


def post(c: TestClient, ids: list[str], label: Any = "yes", model: str = "demo") -> Any:
    body = {"labels": [{"prediction_id": i, "label": label} for i in ids]}
    return c.post(f"/v1/models/{model}/feedback", json=body)


def labels_in(settings: Settings) -> dict[str, tuple[str, str]]:
    """Every stored label: id -> (model, label JSON)."""
    store = PredictionStore(settings.database_url)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(feedback)).all()
    store.dispose()
    return {r.prediction_id: (r.model, r.label) for r in rows}


def hex_id(t: float, rest: str = "b" * 20) -> str:
    """An id shaped like ours, dated `t` (Unix s), not tagged by any key of the service."""
    return f"{int(t * 1000):012x}" + rest


def rules(res: Any) -> list[tuple[str, str]]:
    return [(d["field"], d["rule"]) for d in res.json()["error"]["details"]]


def test_labels_join_their_predictions(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        ids = predict_ids(c, settings)
        res = c.post(
            "/v1/models/demo/feedback",
            json={
                "labels": [
                    {"prediction_id": ids[0], "label": "yes"},
                    {"prediction_id": ids[1], "label": "no"},
                ]
            },
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["stored"] == 2 and body["unknown"] == 0
        assert [i["status"] for i in body["items"]] == ["stored", "stored"]
    rows = {r["id"]: r["label"] for r in PredictionStore(settings.database_url).read_window("demo")}
    assert rows[ids[0]] == '"yes"' and rows[ids[1]] == '"no"'


def test_every_id_we_did_not_issue_is_a_422_naming_its_rule(settings: Settings) -> None:
    """Ids not shaped like ours, dated ahead (also past year 9999), older than the retention, or
    well-formed and recent but issued by no one here: each a 422 naming its field and rule, and
    not one label of the request is stored."""
    kept = settings.model_copy(update={"log_retention_days": 1.0})
    now = time.time()
    with TestClient(create_app(kept)) as c:
        (good,) = predict_ids(c, kept, 1)
        cases = {
            "not-an-id": "id_format",
            "a\x00" + "b" * 30: "id_format",
            hex_id(now + 86_400): "id_future",
            "f" * 32: "id_future",  # year 10889: what overflowed maintenance
            hex_id(now + 76 * 365 * 86_400): "id_future",  # 2100
            hex_id(now - 2 * 86_400): "id_expired",
        }
        for pid, rule in cases.items():
            res = post(c, [good, pid])
            assert res.status_code == 422, (pid, res.text)
            assert rules(res) == [("labels.1.prediction_id", rule)], pid
        forged = post(c, [good, hex_id(now), hex_id(now, "c" * 20)])
        assert forged.status_code == 422
        assert rules(forged) == [
            ("labels.1.prediction_id", "id_not_issued"),
            ("labels.2.prediction_id", "id_not_issued"),
        ]
        assert "'demo'" in forged.json()["error"]["details"][0]["message"]
        assert "[]" not in forged.text
    assert labels_in(kept) == {}


def test_an_upper_case_id_is_ours_and_stored_in_its_own_case(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        (pid,) = predict_ids(c, settings, 1)
        res = post(c, [pid.upper()])
        assert res.status_code == 200, res.text
        assert res.json()["items"][0]["prediction_id"] == pid
    assert labels_in(settings) == {pid: ("demo", '"yes"')}


@pytest.fixture
def twin(settings: Settings) -> Settings:
    """The registry with a second model, `twin` (a copy of demo: the same classes)."""
    src, dst = settings.registry / "demo", settings.registry / "twin"
    shutil.copytree(src, dst)
    manifest = dst / "1" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": "twin"}))
    return settings


def test_a_label_for_another_models_id_is_a_422_and_never_its_ground_truth(twin: Settings) -> None:
    """An id demo issued, labelled at twin (whose classes accept the label): refused, both before
    and after the row is in the log, and demo's window never gets it as ground truth."""
    slow = twin.model_copy(update={"log_flush_ms": 60_000, "log_batch_rows": 10_000})
    with TestClient(create_app(slow)) as c:
        (early,) = predict_ids(c, slow, 1)
        res = post(c, [early], model="twin")  # the row is not in the log yet
        assert res.status_code == 422 and rules(res) == [
            ("labels.0.prediction_id", "id_not_issued")
        ]
    with TestClient(create_app(twin)) as c:
        (logged,) = predict_ids(c, twin, 1)
        store = PredictionStore(twin.database_url)
        deadline = time.monotonic() + 10
        while not store.existing_ids("demo", [logged]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert store.existing_ids("twin", [logged]) == set()
        res = post(c, [logged], model="twin")
        assert res.status_code == 422 and rules(res) == [
            ("labels.0.prediction_id", "id_not_issued")
        ]
        assert post(c, [logged], label="no").status_code == 200  # its own model takes it
    assert labels_in(twin) == {logged: ("demo", '"no"')}
    window = read_window(
        store, model="demo", version=1, since=None, last=None, cap=10, classes=None
    )
    assert sorted(window.labels, key=str) == [None, "no"]


def test_labels_match_model_and_id_when_read(settings: Settings) -> None:
    """A label stored under another model (by a release that checked ids only) joins nothing:
    not in the window, not in the labelled rows retraining reads."""
    store = PredictionStore(settings.database_url)
    store.create_schema()
    row = prediction_rows(
        ids=["a" * 32], model="demo", version=1, created_at=time.time(), inputs=[{"x1": 1.0}],
        predictions=["yes"], probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    store.write_predictions(row)
    with store.engine.begin() as conn:
        conn.execute(
            feedback.insert().values(
                prediction_id="a" * 32, model="twin", label='"no"', received_at=time.time()
            )
        )
    assert store.read_window("demo")[0]["label"] is None
    assert store.read_log_window(WindowQuery("demo"), cap=10) == []
    window = read_window(
        store, model="demo", version=1, since=None, last=None, cap=10, classes=None
    )
    assert window.labels == [None]
    # its own model's label then replaces it whole (model included)
    from core.rows import FeedbackRow

    store.write_labels(
        [FeedbackRow(prediction_id="a" * 32, model="demo", label='"yes"', received_at=time.time())]
    )
    assert [r["label"] for r in store.read_log_window(WindowQuery("demo"), cap=10)] == ['"yes"']


def test_ids_from_before_tags_are_accepted_where_the_log_holds_them(twin: Settings) -> None:
    """An id of the old format (32 hex, no tag) written by the release before: accepted for the
    model the log holds it under, refused for another."""
    store = PredictionStore(twin.database_url)
    store.create_schema()
    old = hex_id(time.time() - 3600, "0123456789abcdef0123")
    store.write_predictions(
        prediction_rows(
            ids=[old],
            model="demo",
            version=1,
            created_at=time.time() - 3600,
            inputs=[{}],
            predictions=["yes"],
            probabilities=None,
            latency_ms=1.0,
        )  # fmt: skip
    )
    with TestClient(create_app(twin)) as c:
        assert rules(post(c, [old], model="twin")) == [("labels.0.prediction_id", "id_not_issued")]
        assert post(c, [old]).status_code == 200
    assert labels_in(twin) == {old: ("demo", '"yes"')}


def test_a_label_that_arrives_before_its_row_is_flushed_still_joins(settings: Settings) -> None:
    slow = settings.model_copy(update={"log_flush_ms": 60_000, "log_batch_rows": 10_000})
    store = PredictionStore(slow.database_url)
    with TestClient(create_app(slow)) as c:
        ids = predict_ids(c, slow, 1)
        assert store.count_predictions() == 0  # not flushed yet
        res = post(c, ids)
        assert res.json()["stored"] == 1
    rows = store.read_window("demo")
    assert rows[0]["id"] == ids[0] and rows[0]["label"] == '"yes"'


def test_workers_share_the_key_kept_in_the_log(settings: Settings) -> None:
    """SERVEWATCH_ID_KEY unset: a second worker (or replica) on the same log accepts the ids the
    first issued, before their rows are flushed; a log of its own would not."""
    slow = settings.model_copy(update={"log_flush_ms": 60_000, "log_batch_rows": 10_000})
    with TestClient(create_app(slow)) as one, TestClient(create_app(slow)) as two:
        ids = predict_ids(one, slow, 2)
        assert post(two, ids).status_code == 200
    elsewhere = settings.model_copy(
        update={"database_url": settings.database_url.replace("log.db", "other.db")}
    )
    with TestClient(create_app(elsewhere)) as three:
        assert post(three, ids).status_code == 422


def test_key_rotation_keeps_the_labels_of_the_previous_key(settings: Settings) -> None:
    """Ids tagged under the previous key (not in this log) are accepted while it is listed in
    SERVEWATCH_ID_PREVIOUS_KEYS, and refused once it is not."""
    old_key, new_key = "old-id-key-0123456789", "new-id-key-0123456789"
    ids = IdKeys(old_key).new(3, "demo")
    rotated = settings.model_copy(update={"id_key": new_key, "id_previous_keys": [old_key]})
    with TestClient(create_app(rotated)) as c:
        assert post(c, ids[:1]).status_code == 200
        fresh = predict_ids(c, rotated, 1)
        assert IdKeys(new_key).issued(fresh[0], "demo")  # new ids: the current key
        assert not IdKeys(old_key).issued(fresh[0], "demo")
    dropped = settings.model_copy(update={"id_key": new_key})
    with TestClient(create_app(dropped)) as c:
        res = post(c, ids[1:])
        assert rules(res) == [
            ("labels.0.prediction_id", "id_not_issued"),
            ("labels.1.prediction_id", "id_not_issued"),
        ]


def test_id_keys_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="SERVEWATCH_ID_KEY"):
        Settings(id_key="short")
    with pytest.raises(ValueError, match="SERVEWATCH_ID_PREVIOUS_KEYS"):
        Settings(id_key="k" * 16, id_previous_keys="k" * 20 + ",short")  # type: ignore[arg-type]
    assert Settings(id_previous_keys="a" * 16 + ", " + "b" * 16).id_previous_keys == [  # type: ignore[arg-type]
        "a" * 16,
        "b" * 16,
    ]


class _Away:
    """A store that is unreachable."""

    def id_secrets(self, pending: str | None = None) -> list[str]:
        raise ConnectionError("store away")


def test_a_key_made_while_the_store_was_away_is_learned_by_the_others(settings: Settings) -> None:
    """A process that started with the store away tags with a key of its own; once the store
    answers it adds that key to the log, and another process accepts its ids."""
    store = PredictionStore(settings.database_url)
    away = DataPlane(None, None, _Away(), settings)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        away.read_keys()
    ids = away.ids.new(2, "demo")
    other = DataPlane(None, None, store, settings)  # type: ignore[arg-type]
    assert other.read_keys()
    assert not any(other.ids.issued(i, "demo") for i in ids)
    away.store = store
    assert away.read_keys()
    assert away.ids.current == other.ids.current  # both now tag with the deployment's key
    assert all(away.ids.issued(i, "demo") for i in ids)  # and its own is still accepted
    assert not other.read_keys()  # read less than KEY_RELOAD_S ago: not again
    other._keys_read_at = -1e9  # KEY_RELOAD_S later
    assert other.read_keys() and all(other.ids.issued(i, "demo") for i in ids)


def test_the_key_task_retries_until_the_store_answers(settings: Settings) -> None:
    """keep_keys: the background task a process runs while its own key is not in the log."""
    import asyncio

    store = PredictionStore(settings.database_url)

    class Flaky:
        tries = 0

        def id_secrets(self, pending: str | None = None) -> list[str]:
            self.tries += 1
            if self.tries < 3:
                raise ConnectionError("store away")
            return store.id_secrets(pending)

    flaky = Flaky()
    plane = DataPlane(None, None, flaky, settings)  # type: ignore[arg-type]
    ids = plane.ids.new(1, "demo")
    asyncio.run(asyncio.wait_for(plane.keep_keys(every_s=0.01), 10))
    assert flaky.tries == 3
    other = DataPlane(None, None, store, settings)  # type: ignore[arg-type]
    assert other.read_keys() and other.ids.issued(ids[0], "demo")


def test_ids_are_tagged_for_their_model_and_time_ordered() -> None:
    keys = IdKeys("k" * 16, ["p" * 16])
    first = keys.new(100, "demo")
    time.sleep(0.002)
    later = keys.new(1, "demo")[0]
    assert all(len(i) == 32 for i in first) and len(set(first)) == 100
    assert all(i < later for i in first)  # the time prefix sorts them
    assert all(keys.issued(i, "demo") for i in first)
    assert not any(keys.issued(i, "twin") for i in first)
    assert not any(keys.issued(i[:-1] + ("0" if i[-1] != "0" else "1"), "demo") for i in first)
    assert IdKeys("p" * 16, ["k" * 16]).issued(first[0], "demo")  # a previous key
    assert not IdKeys("q" * 16).issued(first[0], "demo")


def test_bad_feedback_bodies(client: TestClient) -> None:
    assert client.post("/v1/models/demo/feedback", json={"labels": []}).status_code == 422
    res = client.post("/v1/models/demo/feedback", json={"labels": [{"label": "x"}]})
    assert res.status_code == 422 and "prediction_id" in res.text
    assert (
        client.post(
            "/v1/models/ghost/feedback", json={"labels": [{"prediction_id": "a", "label": "yes"}]}
        ).status_code
        == 404
    )


def test_feedback_token(settings: Settings) -> None:
    guarded = settings.model_copy(update={"feedback_token": "feedback-token-0123456789"})
    with TestClient(create_app(guarded)) as c:
        (pid,) = predict_ids(c, guarded, 1)
        body = {"labels": [{"prediction_id": pid, "label": "yes"}]}
        assert c.post("/v1/models/demo/feedback", json=body).status_code == 401
        ok = c.post(
            "/v1/models/demo/feedback",
            json=body,
            headers={"authorization": "Bearer feedback-token-0123456789"},
        )
        assert ok.status_code == 200


def test_feedback_when_the_store_is_down_is_503_not_500(settings: Settings) -> None:
    down = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
    with TestClient(create_app(down)) as c:
        (pid,) = predict_ids(c, down, 1)
        res = post(c, [pid])
        assert res.status_code == 503 and "unreachable" in res.json()["error"]["message"]
        old = post(c, [hex_id(time.time())])  # an untagged id: the log is asked
        assert old.status_code == 503


@pytest.fixture
def pg_settings(settings: Settings, pg_url: str) -> Iterator[Settings]:
    yield settings.model_copy(update={"database_url": pg_url})


def test_feedback_rules_on_postgresql(pg_settings: Settings) -> None:
    """The same rules on PostgreSQL: a NUL or a future date never reaches the store; a good
    label is stored and joins."""
    with TestClient(create_app(pg_settings)) as c:
        (pid,) = predict_ids(c, pg_settings, 1)
        assert rules(post(c, ["a\x00" + "b" * 30])) == [("labels.0.prediction_id", "id_format")]
        assert rules(post(c, ["f" * 32])) == [("labels.0.prediction_id", "id_future")]
        assert post(c, [pid.upper()]).status_code == 200
        twice = c.post(
            "/v1/models/demo/feedback",
            json={"labels": [{"prediction_id": pid, "label": "no"},
                             {"prediction_id": pid.upper(), "label": "yes"}]},
        )  # fmt: skip
        assert twice.status_code == 200, twice.text  # one upsert, the last label
        assert twice.json()["stored"] == 1
    assert labels_in(pg_settings) == {pid: ("demo", '"yes"')}
