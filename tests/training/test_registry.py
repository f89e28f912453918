import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from core.errors import RegistryError
from core.registry import MODEL_FILE, Manifest, Registry, read_verified, verify_files


def minimal_manifest() -> dict[str, Any]:
    return {
        "created_at": "2026-01-01T00:00:00Z",
        "task": "regression",
        "target": "y",
        "features": [{"name": "a", "kind": "numeric", "dtype": "float", "nullable": False}],
    }


def stage_ok(folder: Path) -> dict[str, Any]:
    (folder / "model.joblib").write_bytes(b"model bytes")
    return minimal_manifest()


def test_publish_hashes_every_file_and_numbers_from_one(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.publish("m", stage_ok) == 1
    assert reg.publish("m", stage_ok) == 2
    m = reg.manifest("m", 2)
    assert m.version == 2 and set(m.files) == {"model.joblib"}
    assert verify_files(reg.path("m", 2), m) == []


def test_a_crash_while_staging_leaves_no_version_behind(tmp_path: Path) -> None:
    reg = Registry(tmp_path)

    def stage_crash(folder: Path) -> dict[str, Any]:
        (folder / "model.joblib").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        reg.publish("m", stage_crash)
    assert reg.versions("m") == []
    assert [p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".lock")] == []


def test_a_manifest_that_breaks_the_contract_is_never_published(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(ValueError):
        reg.publish("m", lambda folder: {"task": "regression"})
    assert reg.versions("m") == []


def _publish_many(root: str, n: int, out: Any) -> None:
    reg = Registry(root)
    out.put([reg.publish("m", stage_ok) for _ in range(n)])


def test_concurrent_trainings_never_share_a_version(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_publish_many, args=(str(tmp_path), 5, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [v for _ in procs for v in queue.get(timeout=60)]
    for p in procs:
        p.join()
    assert sorted(got) == list(range(1, 21))
    assert Registry(tmp_path).versions("m") == list(range(1, 21))


def test_tampered_or_missing_files_are_detected(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.publish("m", stage_ok)
    folder = reg.path("m", 1)
    (folder / "model.joblib").write_bytes(b"evil")
    assert verify_files(folder, reg.manifest("m", 1)) == [
        "model.joblib: SHA-256 does not match the manifest"
    ]
    (folder / "model.joblib").unlink()
    assert verify_files(folder, reg.manifest("m", 1)) == ["model.joblib: missing"]


def test_aliases_promote_and_roll_back(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    for _ in range(3):
        reg.publish("m", stage_ok)
    assert reg.resolve("m") == 3  # no production alias: the newest
    reg.set_alias("m", "production", 1)
    reg.set_alias("m", "production", 2)
    assert reg.resolve("m") == 2
    assert reg.resolve("m", "@production") == 2
    assert reg.rollback("m") == 1
    assert reg.resolve("m") == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("m")
    with pytest.raises(RegistryError, match="no version 9"):
        reg.set_alias("m", "production", 9)
    with pytest.raises(RegistryError, match="alias must be one of"):
        reg.set_alias("m", "canary", 1)
    assert json.loads((tmp_path / "m" / "aliases.json").read_text())["production"]["version"] == 1


def test_resolve_errors_name_what_exists(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.publish("m", stage_ok)
    with pytest.raises(RegistryError, match=r"no model named 'x'.*models: m"):
        reg.resolve("x")
    with pytest.raises(RegistryError, match=r"no version '7' \(versions: \[1\]\)"):
        reg.resolve("m", "7")
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        reg.resolve("m", "@staging")


def test_manifest_model_reads_extra_fields(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.publish("m", lambda f: {**stage_ok(f), "anything": 1})
    assert isinstance(reg.manifest("m", 1), Manifest)
    assert reg.raw_manifest("m", 1)["anything"] == 1


def test_read_verified_checks_the_bytes_it_keeps(tmp_path: Path) -> None:
    reg = Registry(tmp_path, signing_key="k" * 20)
    reg.publish("m", stage_ok)
    folder = reg.path("m", 1)
    ok = reg.read_verified("m", 1)
    assert ok.problems == [] and ok.contents == {MODEL_FILE: b"model bytes"}
    assert ok.manifest.version == 1 and ok.raw["signature"]
    assert read_verified(folder, signing_key="another key 0123").problems == [
        "manifest signature does not match (tampered, or signed with another key)"
    ]
    (folder / MODEL_FILE).write_bytes(b"evil")
    bad = reg.read_verified("m", 1)
    assert bad.problems == ["model.joblib: SHA-256 does not match the manifest"]
    assert bad.contents == {}  # bytes that failed their hash are never handed out
    (folder / MODEL_FILE).unlink()
    assert reg.read_verified("m", 1).problems == ["model.joblib: missing"]
    with pytest.raises(RegistryError, match="no version 2"):
        reg.read_verified("m", 2)
