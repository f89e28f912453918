"""Monitoring's own tables (runs, alert state per version, the scheduled windows' cursors), in
the same database as the prediction log."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import orjson
import sqlalchemy as sa

from monitoring.summary import AlertState, MonitorSummary, Severity, StoredRun
from predlog.store import PredictionStore

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
    "sw_monitor_alerts",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("streak", sa.Integer, nullable=False),
    sa.Column("since", sa.Float, nullable=True),
)
"""Hysteresis state per model, version and rule (replaces `sw_alert_state`, kept per model)."""

cursors = sa.Table(
    "sw_monitor_cursors",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("rows_until", sa.Float, nullable=True),
    sa.Column("labels_until", sa.Float, nullable=True),
)
"""Where the next scheduled run of a version starts: rows ingested, and labels paired with their
prediction, after these times (the database's clock). Only scheduled runs move them."""

OLD_ALERT_STATE = "sw_alert_state"


@dataclass(frozen=True)
class Cursor:
    """A version's scheduled windows: predictions ingested, and labels paired, after these."""

    rows_until: float | None
    labels_until: float | None


class MonitorStore:
    """Reads and writes runs and alert state through the prediction store's engine."""

    def __init__(self, store: PredictionStore) -> None:
        self.store = store
        self.engine = store.engine

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        self._migrate_alert_state()

    def _migrate_alert_state(self) -> None:
        """Alert states of releases before per-version state (`sw_alert_state`, per model) are
        given to the version of the model's newest run, so a firing alert still resolves."""
        if not sa.inspect(self.engine).has_table(OLD_ALERT_STATE):
            return
        old = sa.Table(OLD_ALERT_STATE, sa.MetaData(), autoload_with=self.engine)
        try:
            with self.engine.begin() as conn:
                for r in conn.execute(sa.select(old)).all():
                    newest = conn.execute(
                        sa.select(runs.c.version)
                        .where(runs.c.model == r.model)
                        .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
                        .limit(1)
                    ).scalar()
                    if newest is None:
                        continue
                    key = (
                        (alert_state.c.model == r.model)
                        & (alert_state.c.version == newest)
                        & (alert_state.c.rule == r.rule)
                    )
                    if conn.execute(sa.select(alert_state.c.rule).where(key)).first() is None:
                        conn.execute(
                            alert_state.insert().values(
                                model=r.model,
                                version=newest,
                                rule=r.rule,
                                active=r.active,
                                streak=r.streak,
                                since=r.since,
                            )
                        )
                old.drop(conn)
        except sa.exc.DBAPIError:  # another process migrated it at the same moment
            if sa.inspect(self.engine).has_table(OLD_ALERT_STATE):
                raise

    def save_run(
        self,
        *,
        model: str,
        version: int,
        window_end: float,
        rows: int,
        summary: MonitorSummary,
        report_dir: str | None,
        alert_states: Mapping[str, AlertState] | None,
        cursor: Cursor | None = None,
        retired: list[int] | None = None,
        other_cursors: Mapping[int, Cursor] | None = None,
    ) -> int:
        """The run, its version's new alert state and cursor in one transaction: a killed run
        leaves none of them. None leaves the state or the cursor as it was (manual runs);
        `retired` versions' alert states are dropped (their alerts were resolved)."""
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
            if alert_states is not None:
                conn.execute(
                    alert_state.delete().where(
                        (alert_state.c.model == model) & (alert_state.c.version == version)
                    )
                )
                if alert_states:
                    conn.execute(
                        alert_state.insert(),
                        [
                            {"model": model, "version": version, "rule": rule, **state}
                            for rule, state in alert_states.items()
                        ],
                    )
            if retired:
                conn.execute(
                    alert_state.delete().where(
                        (alert_state.c.model == model) & alert_state.c.version.in_(retired)
                    )
                )
            moved = dict(other_cursors or {})
            if cursor is not None:
                moved[version] = cursor
            for v, c in moved.items():
                mine = (cursors.c.model == model) & (cursors.c.version == v)
                values = {"rows_until": c.rows_until, "labels_until": c.labels_until}
                if conn.execute(sa.update(cursors).where(mine).values(**values)).rowcount == 0:
                    conn.execute(cursors.insert().values(model=model, version=v, **values))
            key = res.inserted_primary_key
            assert key is not None
            return int(key[0])

    def update_summary(self, run_id: int, summary: MonitorSummary) -> None:
        """Replace a stored run's summary (a note added after the run was committed)."""
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(summary=orjson.dumps(summary, option=orjson.OPT_SERIALIZE_NUMPY).decode())
            )

    def cursor(self, model: str, version: int) -> Cursor:
        """Where the version's next scheduled run starts. A version whose runs came from a
        release before cursors starts after its newest scheduled run's window; one never
        monitored, from its first row."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(cursors.c.rows_until, cursors.c.labels_until).where(
                    (cursors.c.model == model) & (cursors.c.version == version)
                )
            ).first()
            if row is not None:
                return Cursor(row.rows_until, row.labels_until)
            for r in conn.execute(
                sa.select(runs.c.window_end, runs.c.summary)
                .where((runs.c.model == model) & (runs.c.version == version))
                .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
                .limit(20)
            ):
                if not orjson.loads(r.summary).get("manual"):
                    return Cursor(r.window_end, r.window_end)
        return Cursor(None, None)

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

    def latest_scheduled(self, model: str) -> list[StoredRun]:
        """The newest run that is not manual, or none: what the gauges show (a manual run's
        alerts are its window's breaches, not the alert state)."""
        newest = self.latest(model)
        if not newest or not newest[0]["summary"].get("manual"):
            return newest
        return next(([r] for r in self.latest(model, 50) if not r["summary"].get("manual")), [])

    def models(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(runs.c.model).distinct()))

    def cursors(self, model: str) -> dict[int, Cursor]:
        """Every version of the model with a scheduled run since cursors exist."""
        with self.engine.connect() as conn:
            return {
                int(r.version): Cursor(r.rows_until, r.labels_until)
                for r in conn.execute(sa.select(cursors).where(cursors.c.model == model))
            }

    def alert_states(self, model: str, version: int) -> dict[str, AlertState]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(alert_state).where(
                    (alert_state.c.model == model) & (alert_state.c.version == version)
                )
            )
            return {
                r.rule: {"active": bool(r.active), "streak": int(r.streak), "since": r.since}
                for r in rows
            }

    def other_versions_active(self, model: str, version: int) -> dict[int, dict[str, Severity]]:
        """Rules still firing for the model's other versions: version -> rule -> severity (as
        the version's newest run fired it; notifiers match a resolution by it)."""
        out: dict[int, dict[str, Severity]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(
                sa.select(alert_state.c.version, alert_state.c.rule)
                .where(
                    (alert_state.c.model == model)
                    & (alert_state.c.version != version)
                    & alert_state.c.active.is_(True)
                )
                .order_by(alert_state.c.version, alert_state.c.rule)
            ):
                out.setdefault(int(r.version), {})[r.rule] = "warning"
            for old, fired in out.items():
                newest = conn.execute(
                    sa.select(runs.c.summary)
                    .where((runs.c.model == model) & (runs.c.version == old))
                    .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
                    .limit(1)
                ).scalar()
                for a in orjson.loads(newest).get("alerts", []) if newest else []:
                    if a.get("rule") in fired:
                        fired[a["rule"]] = a.get("severity", "warning")
        return out

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
