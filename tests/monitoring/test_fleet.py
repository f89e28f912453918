"""Monitoring a fleet: shards over a real PostgreSQL, each model run once per slot, never twice at
once (monitoring/fleet.py, monitoring/loop.py `run_fleet`)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from core.registry import Registry
from monitoring import fleet
from monitoring.config import MonitorSettings
from monitoring.loop import run_fleet
from predlog.backfill import backfill
from predlog.store import PredictionStore
from servewatch.cli import app
from service.inference.model import LoadedModel
from tests.monitoring.conftest import FEATURES, log_traffic, traffic
from tests.service.conftest import pg_url  # noqa: F401  (the fixture)


def make_fleet(registry: Path, store: PredictionStore, n: int, rows: int = 120) -> list[str]:
    """`n` models, copies of demo named m00.., each with `rows` logged predictions (10 min old)."""
    names = [f"m{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        dst = registry / name
        shutil.copytree(registry / "demo", dst)
        manifest = dst / "1" / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": name}))
        frame = traffic(rows, seed=i)
        model = LoadedModel.load(Registry(registry), name, 1)
        records = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
        backfill(store, model, records.to_dict(orient="records"), start=time.time() - 600)
    shutil.rmtree(registry / "demo")
    return names


def runs_per_model(store: PredictionStore) -> Counter[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT model FROM sw_monitor_runs")).scalars().all()
    return Counter(rows)


@pytest.fixture
def pg_fleet(
    pg_url: str,  # noqa: F811
    registry_copy: Path,
    tmp_path: Path,
) -> tuple[MonitorSettings, PredictionStore, list[str]]:
    store = PredictionStore(pg_url)
    store.create_schema()
    names = make_fleet(registry_copy, store, 6)
    settings = MonitorSettings(
        registry=registry_copy, database_url=pg_url, monitor_reports_dir=tmp_path / "reports"
    )
    return settings, store, names


def test_shard_assignment_is_stable_and_covers_every_model_once() -> None:
    names = [f"model-{i}" for i in range(200)]
    parts = [fleet.models_of(names, fleet.Shard(k, 3)) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(names) and all(len(p) > 40 for p in parts)
    assert fleet.shard_of("model-7", 3) == fleet.shard_of("model-7", 3)
    assert fleet.parse_shard("1/4") == fleet.Shard(1, 4)
    for bad in ("4/4", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ValueError, match="K/N"):
            fleet.parse_shard(bad)


def test_two_shards_and_an_overlapping_pod_run_each_model_exactly_once(
    pg_fleet: tuple[MonitorSettings, PredictionStore, list[str]],
) -> None:
    settings, store, names = pg_fleet
    pods = [fleet.Shard(0, 2), fleet.Shard(1, 2), fleet.Shard(0, 2)]  # the third overlaps
    outcomes: list[fleet.FleetOutcome] = [fleet.FleetOutcome()] * 3
    start = threading.Barrier(3)

    def pod(i: int) -> None:
        start.wait()
        outcomes[i] = run_fleet(settings, PredictionStore(settings.database_url), pods[i], 3600)

    threads = [threading.Thread(target=pod, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs_per_model(store) == Counter(names)  # every model once, none twice
    ran = [m for o in outcomes for m in o.ran]
    assert sorted(ran) == sorted(names) and not any(o.failed for o in outcomes)
    assert set(outcomes[0].ran) | set(outcomes[2].ran) == set(
        fleet.models_of(names, fleet.Shard(0, 2))
    )
    # the overlapping pod skipped what the other held or had done: never both ran a model
    assert not set(outcomes[0].ran) & set(outcomes[2].ran)
    # a retried pod in the same slot: everything is done, nothing runs again
    again = run_fleet(settings, store, fleet.Shard(1, 2), 3600)
    assert again.ran == [] and sorted(again.done) == sorted(outcomes[1].ran)
    assert runs_per_model(store) == Counter(names)


def test_a_model_locked_elsewhere_is_left_to_that_run(
    pg_fleet: tuple[MonitorSettings, PredictionStore, list[str]],
) -> None:
    settings, store, names = pg_fleet
    other = PredictionStore(settings.database_url)  # another pod's session
    with fleet.model_lock(other, names[0], settings.monitor_reports_dir / ".locks") as held:
        assert held
        outcome = run_fleet(settings, store)
    assert outcome.busy == [names[0]] and sorted(outcome.ran) == sorted(names[1:])
    assert names[0] not in runs_per_model(store)
    # released with the session's lock: the next run takes it (no slot: every run runs)
    assert run_fleet(settings, store).ran == names


def test_a_lock_held_in_another_schema_of_the_database_does_not_block(
    pg_fleet: tuple[MonitorSettings, PredictionStore, list[str]],
) -> None:
    """Advisory locks belong to the database: another deployment in another schema of it, with a
    model of the same name, holds its own lock, not this one's."""
    settings, store, names = pg_fleet
    schema = f"sw_other_{time.time_ns()}"
    admin = sa.create_engine(store.engine.url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        url = settings.database_url.rsplit("%3D", 1)[0] + f"%3D{schema}"
        elsewhere = PredictionStore(url)
        with fleet.model_lock(elsewhere, names[0], settings.monitor_reports_dir / "o") as held:
            assert held
            assert sorted(run_fleet(settings, store).ran) == sorted(names)
        elsewhere.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_the_lock_on_sqlite_is_a_file_per_model(
    registry_copy: Path, store: PredictionStore, tmp_path: Path
) -> None:
    settings = MonitorSettings(
        registry=registry_copy, database_url=store.url, monitor_reports_dir=tmp_path / "reports"
    )
    lock_dir = settings.monitor_reports_dir / ".locks"
    with fleet.model_lock(store, "demo", lock_dir) as first:
        with fleet.model_lock(store, "demo", lock_dir) as second:
            assert first and not second
        assert run_fleet(settings, store).busy == ["demo"]
    with fleet.model_lock(store, "demo", lock_dir) as again:
        assert again
    # the slot record on SQLite too: run once in the slot, then found done
    first = run_fleet(settings, store, None, 3600)
    second = run_fleet(settings, store, None, 3600)
    assert (first.ran, second.ran, second.done) == (["demo"], [], ["demo"])


def test_the_cli_runs_a_shard_and_refuses_a_bad_one(
    pg_fleet: tuple[MonitorSettings, PredictionStore, list[str]],
) -> None:
    settings, store, names = pg_fleet
    env = {
        "SERVEWATCH_REGISTRY": str(settings.registry),
        "SERVEWATCH_DATABASE_URL": settings.database_url,
        "SERVEWATCH_MONITOR_REPORTS_DIR": str(settings.monitor_reports_dir),
    }
    args = ["monitor", "run", "--all", "--shard", "1/2", "--slot", "1h", "--json"]
    res = CliRunner().invoke(app, args, env=env)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted(out["ran"]) == fleet.models_of(names, fleet.Shard(1, 2))
    bad = CliRunner().invoke(app, ["monitor", "run", "--all", "--shard", "2/2"], env=env)
    assert bad.exit_code == 2 and "0 <= K < N" in bad.output
    alone = CliRunner().invoke(app, ["monitor", "run", "--model", "m00", "--shard", "0/2"], env=env)
    assert alone.exit_code == 2 and "go with --all" in alone.output


def test_a_slot_of_zero_is_refused(tmp_path: Path) -> None:
    """`--slot 0s` would run every model every round: refused, naming --slot."""
    env = {
        "SERVEWATCH_REGISTRY": str(tmp_path / "reg"),
        "SERVEWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
        "SERVEWATCH_MONITOR_REPORTS_DIR": str(tmp_path / "reports"),
    }
    res = CliRunner().invoke(app, ["monitor", "run", "--all", "--slot", "0s"], env=env)
    assert res.exit_code == 2 and "--slot 0s: must be longer than 0s" in res.output
    settings = MonitorSettings(
        registry=tmp_path / "reg", database_url=env["SERVEWATCH_DATABASE_URL"]
    )
    store = PredictionStore(settings.database_url)
    with pytest.raises(ValueError, match="--slot"):
        run_fleet(settings, store, None, 0)


def test_each_run_hands_its_summary_to_the_retrain_it_is_given(
    registry_copy: Path, store: PredictionStore, tmp_path: Path
) -> None:
    """Monitoring imports no training module: the retrain is handed in, and called once per run."""
    settings = MonitorSettings(
        registry=registry_copy, database_url=store.url, monitor_reports_dir=tmp_path / "reports"
    )
    log_traffic(store, registry_copy, traffic(120, seed=1), at=time.time() - 600)
    seen: list[tuple[str, int]] = []
    outcome = run_fleet(
        settings,
        store,
        retrain=lambda _s, _st, model, summary: seen.append((model, summary["version"])),
    )
    assert outcome.ran == ["demo"] and seen == [("demo", 1)]
    assert run_fleet(settings, store).ran == ["demo"]  # none handed: none called


def test_the_cli_hands_monitor_run_all_the_gated_retrain(
    registry_copy: Path, store: PredictionStore, tmp_path: Path
) -> None:
    """`servewatch monitor run --all` on a retrain schedule starts the composition root's retrain
    (its stamp is written before it runs); the monitor commands built without one start none."""
    from monitoring.cli import make_monitor_app

    log_traffic(store, registry_copy, traffic(120, seed=1), labelled=False, at=time.time() - 600)
    reports = tmp_path / "reports"
    env = {
        "SERVEWATCH_REGISTRY": str(registry_copy),
        "SERVEWATCH_DATABASE_URL": store.url,
        "SERVEWATCH_MONITOR_REPORTS_DIR": str(reports),
        "SERVEWATCH_RETRAIN_INTERVAL": "3600",
    }
    bare = CliRunner().invoke(make_monitor_app(), ["run", "--all"], env=env)
    assert bare.exit_code == 0, bare.output
    assert not (reports / ".retrain-demo").exists()
    res = CliRunner().invoke(app, ["monitor", "run", "--all"], env=env)
    assert res.exit_code == 0, res.output
    assert (reports / ".retrain-demo").exists()
