from pathlib import Path

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive", "models": {}, "problems": []}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {"demo": 1}


def test_not_ready_without_models(settings: Settings, tmp_path: Path) -> None:
    empty = settings.model_copy(update={"registry": tmp_path / "empty"})
    with TestClient(create_app(empty)) as c:
        assert c.get("/healthz").status_code == 200
        res = c.get("/readyz")
        assert res.status_code == 503
        assert "no model is loaded" in res.json()["problems"]


def test_not_ready_when_the_log_store_is_unreachable(settings: Settings) -> None:
    down = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
    with TestClient(create_app(down)) as c:
        res = c.get("/readyz")
        assert res.status_code == 503
        assert any("prediction log store unreachable" in p for p in res.json()["problems"])
        assert c.get("/readyz?store=false").status_code == 200
