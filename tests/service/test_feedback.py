import time

from fastapi.testclient import TestClient

from service.config import Settings
from service.ids import new_ids
from service.main import create_app
from service.store import PredictionStore
from tests.service.conftest import example


def predict_ids(c: TestClient, settings: Settings, n: int = 2) -> list[str]:
    res = c.post("/v1/models/demo/predict", json={"instances": [example(settings.registry)] * n})
    return [p["prediction_id"] for p in res.json()["predictions"]]


def test_labels_join_their_predictions_and_unknown_ids_are_reported(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        ids = predict_ids(c, settings)
        old_unknown = "0000000000aa" + "b" * 20  # well-formed, issued in 1970
        res = c.post(
            "/v1/models/demo/feedback",
            json={
                "labels": [
                    {"prediction_id": ids[0], "label": "yes"},
                    {"prediction_id": ids[1], "label": "no"},
                    {"prediction_id": old_unknown, "label": "yes"},
                    {"prediction_id": "not-an-id", "label": "yes"},
                ]
            },
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["stored"] == 2 and body["unknown"] == 2
        assert [i["status"] for i in body["items"]] == [
            "stored",
            "stored",
            "unknown_prediction",
            "unknown_prediction",
        ]
    rows = {r["id"]: r["label"] for r in PredictionStore(settings.database_url).read_window("demo")}
    assert rows[ids[0]] == '"yes"' and rows[ids[1]] == '"no"'


def test_a_label_that_arrives_before_its_row_is_flushed_still_joins(settings: Settings) -> None:
    slow = settings.model_copy(update={"log_flush_ms": 60_000, "log_batch_rows": 10_000})
    store = PredictionStore(slow.database_url)
    with TestClient(create_app(slow)) as c:
        ids = predict_ids(c, slow, 1)
        assert store.count_predictions() == 0  # not flushed yet
        res = c.post(
            "/v1/models/demo/feedback", json={"labels": [{"prediction_id": ids[0], "label": "yes"}]}
        )
        assert res.json()["stored"] == 1
    rows = store.read_window("demo")
    assert rows[0]["id"] == ids[0] and rows[0]["label"] == '"yes"'


def test_recent_ids_from_another_replica_are_accepted() -> None:
    (fresh,) = new_ids(1)
    from service.ids import issued_at

    issued = issued_at(fresh)
    assert issued is not None and abs(issued - time.time()) < 5


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
    body = {"labels": [{"prediction_id": "a" * 32, "label": "yes"}]}
    with TestClient(create_app(guarded)) as c:
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
        res = c.post(
            "/v1/models/demo/feedback",
            json={"labels": [{"prediction_id": "a" * 32, "label": "yes"}]},
        )
        assert res.status_code == 503 and "unreachable" in res.json()["error"]["message"]
