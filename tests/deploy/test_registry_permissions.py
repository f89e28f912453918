"""A published version has the modes the publisher's umask gives ordinary files and folders, so
another uid (the image's 10001, another machine after a copy) can read it when the umask allows."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.registry import MODEL_FILE, Registry

OTHER_UID = 65534  # nobody


def _stage(folder: Path) -> dict[str, Any]:
    (folder / MODEL_FILE).write_bytes(b"model bytes")
    (folder / "reports").mkdir()
    (folder / "reports" / "card.md").write_text("# card\n")
    return {
        "created_at": "2026-01-01T00:00:00Z",
        "task": "regression",
        "target": "y",
        "features": [{"name": "a", "kind": "numeric", "dtype": "float", "nullable": False}],
    }


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A registry root that any uid can reach (pytest's tmp_path sits under a 0700 folder)."""
    top = Path(tempfile.mkdtemp(prefix="sw-registry-perm-"))
    top.chmod(0o755)
    try:
        yield top / "registry"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _publish_under(umask: int, root: Path) -> int:
    old = os.umask(umask)
    try:
        return Registry(root).publish("m", _stage)
    finally:
        os.umask(old)


def _as_other_uid(action: Callable[[], None]) -> str:
    """Run `action` in a forked child that has dropped to uid/gid 65534; '' or the error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_fd)
        message = b""
        try:
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            action()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}".encode() or b"error"
        os.write(write_fd, message)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    return out


def _modes(root: Path, version: int) -> dict[str, int]:
    version_dir = root / "m" / str(version)
    paths = [version_dir, *sorted(version_dir.rglob("*"))]
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in paths}


@pytest.mark.parametrize(
    ("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)]
)
def test_published_modes_follow_the_umask(
    shared_root: Path, umask: int, folder: int, file: int
) -> None:
    version = _publish_under(umask, shared_root)
    modes = _modes(shared_root, version)
    assert modes == {
        "m/1": folder,
        "m/1/manifest.json": file,
        f"m/1/{MODEL_FILE}": file,
        "m/1/reports": folder,
        "m/1/reports/card.md": file,
    }
    assert stat.S_IMODE((shared_root / "m").stat().st_mode) == folder
    # Still atomic: no staging folder is left, the version has its manifest.
    assert sorted(p.name for p in (shared_root / "m").iterdir()) == ["1"]


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another uid needs root (CI runs as root)")
def test_another_uid_reads_a_version_published_under_umask_022(shared_root: Path) -> None:
    version = _publish_under(0o022, shared_root)

    def read() -> None:
        verified = Registry(shared_root).read_verified("m", version)
        assert not verified.problems, verified.problems
        assert verified.contents[MODEL_FILE] == b"model bytes"
        assert (shared_root / "m" / "1" / "reports" / "card.md").read_text() == "# card\n"

    assert _as_other_uid(read) == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another uid needs root (CI runs as root)")
def test_another_uid_cannot_read_a_version_published_under_umask_077(shared_root: Path) -> None:
    """The publisher's choice holds: a 077 umask keeps the version private."""
    version = _publish_under(0o077, shared_root)
    error = _as_other_uid(lambda: Registry(shared_root).read_verified("m", version) and None)
    assert error.startswith("PermissionError"), error
