"""Monitoring a fleet of models: shards of the registry, a lock per model, one run per slot."""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from predlog.store import PredictionStore, insert_or

metadata = sa.MetaData()

slots = sa.Table(
    "sw_monitor_slots",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("slot", sa.BigInteger, primary_key=True),
    sa.Column("finished_at", sa.Float, nullable=False),
)
"""A model's run finished in schedule slot `slot` (the database's clock // slot length): a
second run in that slot (a retried pod, an overlapping job) skips it."""

LOCK_PREFIX = "servewatch-monitor:"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based, as Kubernetes' JOB_COMPLETION_INDEX)."""

    index: int
    count: int

    def holds(self, model: str) -> bool:
        return shard_of(model, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`K/N` -> Shard(K, N); ValueError naming the rule otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/2")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_of(model: str, count: int) -> int:
    """The shard a model belongs to: SHA-256 of its name mod `count` (stable across processes,
    releases and machines; Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(model.encode()).digest()[:8], "big") % count


@dataclass
class FleetOutcome:
    """What one sharded pass did with each of its models."""

    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # locked by another run right now
    done: list[str] = field(default_factory=list)  # already run in this slot


@contextmanager
def model_lock(store: PredictionStore, model: str, lock_dir: Path) -> Iterator[bool]:
    """True while this process holds the model's lock, False when another holds it.
    PostgreSQL: a session advisory lock (pg_try_advisory_lock on a hash of the schema and the
    name: advisory locks are the database's, and two deployments in two schemas of one database
    have models of the same name; a dead pod's session ends and frees it); SQLite: an flock on a
    file per model next to the reports."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            key = sa.text("SELECT hashtextextended(current_schema() || ':' || :name, 0)")
            key = key.bindparams(name=LOCK_PREFIX + model)
            lock_id = conn.execute(key).scalar_one()
            got = bool(
                conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_id}).scalar()
            )
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
                    conn.commit()
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{model}.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def create_schema(store: PredictionStore) -> None:
    """Monitoring's tables and the slots, created by one pod at a time: pods of a new fleet
    starting together would otherwise race on CREATE TABLE (PostgreSQL's unique violation)."""
    from monitoring.store import metadata as monitoring_tables

    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            key = "hashtextextended(current_schema() || ':' || :name, 0)"
            lock = sa.text(f"SELECT pg_advisory_xact_lock({key})")
            conn.execute(lock, {"name": LOCK_PREFIX + "schema"})
        monitoring_tables.create_all(conn)
        metadata.create_all(conn)


def slot_done(store: PredictionStore, model: str, slot: int) -> bool:
    """Whether `model`'s run of `slot` finished."""
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(slots.c.model).where(slots.c.model == model, slots.c.slot == slot)
        ).first()
    return row is not None


def mark_done(store: PredictionStore, model: str, slot: int) -> None:
    """Record `model`'s run of `slot` as finished (once; a repeat is a no-op)."""
    stmt = insert_or(store.engine, slots).on_conflict_do_nothing(index_elements=["model", "slot"])
    with store.engine.begin() as conn:
        conn.execute(stmt, {"model": model, "slot": slot, "finished_at": store.now()})


def current_slot(store: PredictionStore, seconds: float) -> int:
    """The schedule slot now is in, by the database's clock (every pod agrees on it)."""
    return int(store.now() // seconds)


def models_of(models: Sequence[str], shard: Shard | None) -> list[str]:
    """The models `shard` monitors (all of them without a shard)."""
    return [m for m in models if shard is None or shard.holds(m)]
