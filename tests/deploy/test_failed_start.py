"""A `servewatch serve` that cannot serve exits non-zero with one line naming the cause, with one
worker and with several (uvicorn's supervisor alone returns 0 when its workers fail to start)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.service.conftest import free_port

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _without_root_file_powers() -> None:
    """In the child before exec: root that obeys file modes (as the image's uid 10001 does)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def serve(
    env: dict[str, str], tmp_path: Path, workers: int, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        "SERVEWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/log.db",
        "SERVEWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "SERVEWATCH_PORT": str(free_port()),
        "SERVEWATCH_WORKERS": str(workers),
    }
    return subprocess.run(
        [sys.executable, "-m", "servewatch", "serve"],
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=90,
        preexec_fn=preexec,
    )


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_no_models(tmp_path: Path, workers: int) -> None:
    (tmp_path / "empty").mkdir()
    res = serve({"SERVEWATCH_REGISTRY": str(tmp_path / "empty")}, tmp_path, workers)
    assert res.returncode == 3
    assert "holds no model" in one_line_error(res)


def test_missing_registry_folder(tmp_path: Path) -> None:
    res = serve({"SERVEWATCH_REGISTRY": str(tmp_path / "nowhere")}, tmp_path, 2)
    assert res.returncode == 3
    assert str(tmp_path / "nowhere") in one_line_error(res)


@pytest.mark.parametrize(
    ("var", "value", "said"),
    [
        ("SERVEWATCH_WORKERS", "two", "SERVEWATCH_WORKERS='two'"),
        ("SERVEWATCH_BATCH_MAX_ROWS", "0", "SERVEWATCH_BATCH_MAX_ROWS='0': Input should be"),
        ("SERVEWATCH_MONITOR_INTERVAL", "soon", "SERVEWATCH_MONITOR_INTERVAL='soon'"),
    ],
)
def test_bad_setting(registry_copy: Path, tmp_path: Path, var: str, value: str, said: str) -> None:
    env = {"SERVEWATCH_REGISTRY": str(registry_copy), var: value}
    res = serve(env, tmp_path, 2)
    assert res.returncode == 2
    assert said in one_line_error(res)


@pytest.mark.parametrize("workers", [1, 2])
def test_unreadable_registry(registry_copy: Path, tmp_path: Path, workers: int) -> None:
    """A version published by another uid with a private mode (what mkdtemp gave every version)."""
    version = registry_copy / "demo" / "1"
    preexec = None
    if os.geteuid() == 0:
        for path in [version, *version.rglob("*")]:
            os.chown(path, 65534, 65534)
        preexec = _without_root_file_powers
    version.chmod(0o700)
    try:
        res = serve({"SERVEWATCH_REGISTRY": str(registry_copy)}, tmp_path, workers, preexec)
    finally:
        version.chmod(0o755)
    assert res.returncode == 3
    line = one_line_error(res)
    assert "cannot read" in line and "permission denied" in line and str(version) in line


def test_a_worker_that_fails_to_start_fails_the_server(registry_copy: Path, tmp_path: Path) -> None:
    """A failure only the workers meet (the log's folder is a file) still exits non-zero."""
    (tmp_path / "spool").write_text("not a folder")
    res = serve({"SERVEWATCH_REGISTRY": str(registry_copy)}, tmp_path, 2)
    assert res.returncode == 3, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: a worker failed to start")


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["monitor", "run", "--all"], "evidently", "monitor"),
        (["train", "--data", "x.csv", "--target", "y"], "optuna", "train"),
        (["retrain", "--model", "m"], "optuna", "train"),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(
    argv: list[str], module: str, extra: str
) -> None:
    """As in the serve image, which lacks Evidently and Optuna: one line, status 1, at once."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['servewatch', *{argv!r}]; "
        "from servewatch.cli import main; main()"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert res.returncode == 1, res.stderr
    assert one_line_error(res) == (
        f"error: `servewatch {argv[0] if argv[0] != 'monitor' else 'monitor run'}` needs the "
        f"Python package {module!r}, which is not installed here: "
        f"pip install 'servewatch[{extra}]' (or use the full image)"
    )
