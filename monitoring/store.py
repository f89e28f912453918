"""Monitoring's own tables (runs and alert state), in the same database as the prediction log."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import cast

import orjson
import sqlalchemy as sa

from monitoring.summary import AlertState, MonitorSummary, StoredRun
from service.store import PredictionStore

metadata = sa.MetaData()

runs = sa.Table(
    "sw_monitor_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Column("window_end", sa.Float, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("report_dir", sa.Text, nullable=True),
    sa.Index("ix_sw_monitor_runs_model", "model", "finished_at"),
)

alert_state = sa.Table(
    "sw_alert_state",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("streak", sa.Integer, nullable=False),
    sa.Column("since", sa.Float, nullable=True),
)


class MonitorStore:
    """Reads and writes runs and alert state through the prediction store's engine."""

    def __init__(self, store: PredictionStore) -> None:
        self.store = store
        self.engine = store.engine

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def save_run(
        self,
        *,
        model: str,
        version: int,
        window_end: float,
        rows: int,
        summary: MonitorSummary,
        report_dir: str | None,
        alert_states: Mapping[str, AlertState],
    ) -> int:
        """The run and the new alert state in one transaction: a killed run leaves neither."""
        with self.engine.begin() as conn:
            res = conn.execute(
                runs.insert().values(
                    model=model,
                    version=version,
                    finished_at=time.time(),
                    window_end=window_end,
                    rows=rows,
                    summary=orjson.dumps(summary, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                    report_dir=report_dir,
                )
            )
            conn.execute(alert_state.delete().where(alert_state.c.model == model))
            if alert_states:
                conn.execute(
                    alert_state.insert(),
                    [
                        {"model": model, "rule": rule, **state}
                        for rule, state in alert_states.items()
                    ],
                )
            key = res.inserted_primary_key
            assert key is not None
            return int(key[0])

    def latest(self, model: str, n: int = 1) -> list[StoredRun]:
        """The newest `n` runs, newest first. Each summary is the stored JSON as it is: older
        releases' and failed runs' summaries lack keys (see monitoring.summary)."""
        stmt = (
            sa.select(runs)
            .where(runs.c.model == model)
            .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
            .limit(n)
        )
        with self.engine.connect() as conn:
            return [
                {
                    "id": r.id,
                    "model": r.model,
                    "version": r.version,
                    "finished_at": r.finished_at,
                    "window_end": r.window_end,
                    "rows": r.rows,
                    "summary": cast(MonitorSummary, orjson.loads(r.summary)),
                    "report_dir": r.report_dir,
                }
                for r in conn.execute(stmt)
            ]

    def models(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(runs.c.model).distinct()))

    def alert_states(self, model: str) -> dict[str, AlertState]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(alert_state).where(alert_state.c.model == model))
            return {
                r.rule: {"active": bool(r.active), "streak": int(r.streak), "since": r.since}
                for r in rows
            }

    def prune(self, model: str, keep: int) -> list[str]:
        """Drop runs beyond the newest `keep`; returns their report folders to delete."""
        with self.engine.begin() as conn:
            old = conn.execute(
                sa.select(runs.c.id, runs.c.report_dir)
                .where(runs.c.model == model)
                .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
                .offset(keep)
            ).all()
            if old:
                conn.execute(runs.delete().where(runs.c.id.in_([r.id for r in old])))
        return [r.report_dir for r in old if r.report_dir]
