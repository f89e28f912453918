import asyncio
import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.registry import Registry
from service.config import Settings
from service.main import create_app
from tests.service.conftest import ADMIN, Server, example

AUTH = {"authorization": f"Bearer {ADMIN}"}


def add_version(registry: Path, src: int = 1) -> int:
    """Publish a copy of version `src` as the next version (same files, new number)."""
    reg = Registry(registry)
    new = max(reg.versions("demo")) + 1
    shutil.copytree(reg.path("demo", src), reg.path("demo", new))
    manifest_path = reg.path("demo", new) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = new
    manifest_path.write_text(json.dumps(manifest))
    return new


def test_admin_reload_follows_the_alias(client: TestClient, settings: Settings) -> None:
    v2 = add_version(settings.registry)
    Registry(settings.registry).set_alias("demo", "production", v2)
    res = client.post("/v1/models/demo/reload", headers=AUTH)
    assert res.status_code == 200, res.text
    assert res.json() == {"model": "demo", "previous_version": 1, "version": v2}
    pred = client.post("/v1/models/demo/predict", json={"instances": [example(settings.registry)]})
    assert pred.json()["version"] == v2


def test_admin_routes_need_the_token_and_are_off_without_one(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/models/demo/reload").status_code == 401
        assert (
            c.post("/v1/models/demo/reload", headers={"authorization": "Bearer wrong"}).status_code
            == 401
        )
        assert c.post("/v1/models/demo/reload", headers=AUTH).status_code == 200
    with TestClient(create_app(settings.model_copy(update={"admin_token": None}))) as c:
        res = c.post("/v1/models/demo/reload", headers=AUTH)
        assert res.status_code == 404 and "admin routes are off" in res.json()["error"]["message"]


def test_short_tokens_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(admin_token="short")


@pytest.mark.parametrize("damage", ["bytes", "missing", "manifest"])
def test_a_tampered_version_is_refused_and_the_old_keeps_serving(
    client: TestClient, settings: Settings, damage: str
) -> None:
    v2 = add_version(settings.registry)
    folder = Registry(settings.registry).path("demo", v2)
    if damage == "bytes":
        with (folder / "model.joblib").open("r+b") as fh:
            fh.seek(100)
            fh.write(b"\x00\x01\x02")
    elif damage == "missing":
        (folder / "reference.parquet").unlink()
    else:
        m = json.loads((folder / "manifest.json").read_text())
        m["files"]["model.joblib"] = "0" * 64
        (folder / "manifest.json").write_text(json.dumps(m))
    Registry(settings.registry).set_alias("demo", "production", v2)
    res = client.post("/v1/models/demo/reload", headers=AUTH)
    assert res.status_code == 503
    assert "old version keeps serving" in res.json()["error"]["message"]
    pred = client.post("/v1/models/demo/predict", json={"instances": [example(settings.registry)]})
    assert pred.status_code == 200 and pred.json()["version"] == 1


def test_the_service_notices_a_promotion_by_itself(settings: Settings) -> None:
    watching = settings.model_copy(update={"reload_interval_s": 0.1})
    with TestClient(create_app(watching)) as c:
        v2 = add_version(settings.registry)
        Registry(settings.registry).set_alias("demo", "production", v2)
        for _ in range(100):
            if c.get("/v1/models/demo").json()["version"] == v2:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert c.get("/v1/models/demo").json()["version"] == v2


def test_no_request_fails_during_swaps_under_load(
    server_env: dict[str, str], registry_copy: Path
) -> None:
    """Real HTTP: clients hammer predict while the alias flips between versions."""
    server = Server(server_env)
    failures: list[str] = []
    versions: set[int] = set()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                r = c.post(
                    "/v1/models/demo/predict", json={"instances": [example(registry_copy)] * 4}
                )
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.add(r.json()["version"])

    try:
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        reg = Registry(registry_copy)
        for _ in range(3):
            v = add_version(registry_copy)
            reg.set_alias("demo", "production", v)
            with httpx.Client(base_url=server.url) as c:
                assert c.post("/v1/models/demo/reload", headers=AUTH).status_code == 200
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        server.stop()
    assert failures == []
    assert len(versions) >= 2


@pytest.mark.parametrize("endpoint", ["predict", "explain"])
def test_a_request_whose_body_arrives_across_a_swap_is_answered(
    server_env: dict[str, str], registry_copy: Path, endpoint: str
) -> None:
    """The body is still arriving when a new version is swapped in and the old one's batcher is
    retired. The request must still be answered: the data plane chooses the version only once
    the body has arrived, so it is the new one."""
    import socket
    import time

    server = Server(server_env)
    try:
        body = json.dumps({"instances": [example(registry_copy)]}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        head = (
            f"POST /v1/models/demo/{endpoint} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:10])  # the route is now waiting for the rest of the body
        time.sleep(0.3)
        v2 = add_version(registry_copy)
        Registry(registry_copy).set_alias("demo", "production", v2)
        res = httpx.post(f"{server.url}/v1/models/demo/reload", headers=AUTH, timeout=30)
        assert res.json()["version"] == v2
        time.sleep(0.5)  # the old batcher has no call in flight: it is retired now
        sock.sendall(body[10:])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # a stranded request times out here (15 s)
            if not chunk:
                break
            reply += chunk
        sock.close()
        status = reply.split(b" ", 2)[1]
        assert status == b"200", reply[:500]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["version"] == v2
        after = httpx.post(
            f"{server.url}/v1/models/demo/{endpoint}",
            json={"instances": [example(registry_copy)]},
            timeout=30,
        )
        assert after.status_code == 200 and after.json()["version"] == v2
    finally:
        server.stop()
