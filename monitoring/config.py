"""MonitorSettings: the monitoring run's knobs, from SERVEWATCH_ environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVEWATCH_", extra="ignore")

    registry: Path = Path("registry")
    database_url: str = "sqlite:///var/servewatch.db"
    monitor_interval: float = Field(300, ge=0)
    """Seconds between runs inside `servewatch serve`; 0 turns the loop off (use a CronJob)."""
    monitor_max_rows: int = Field(50_000, ge=100)
    """Cap on the window; larger windows are sampled down in the database with a fixed rule."""
    monitor_settle_s: float = Field(5, ge=0)
    """A window ends this long before the run starts, so that rows still inside a store
    transaction (stamped, not yet committed) are never skipped; they fall into the next window."""
    monitor_reports_dir: Path = Path("var/reports")
    monitor_keep_runs: int = Field(100, ge=1)
    """Runs (and their reports) kept per model; older ones are pruned."""
    monitor_drift_false_alarm: float = Field(0.01, gt=0, lt=1)
    """Chance per run that healthy traffic flags any column as drifted (the drift tests' level,
    Benjamini-Hochberg over the columns)."""
    monitor_drift_method: str | None = None
    """Evidently stat test for every column (psi, ks, wasserstein, ...) instead of servewatch's
    choice; its default threshold, no stated false-alarm rate."""
    alert_rules: Path | None = None
    """YAML file of alert thresholds (see docs/monitoring.md); unset: the defaults."""
    alert_webhook_url: str | None = None
    alertmanager_url: str | None = None
    """Base URL of Alertmanager; alerts go to <url>/api/v2/alerts."""
    retrain_on_alert: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Alert rules (e.g. realised_performance,dataset_drift) whose firing starts a gated retrain."""
    retrain_interval: float = Field(0, ge=0)
    """Seconds between scheduled gated retrains per model; 0: no schedule."""
    retrain_incremental: bool = False
    """Automatic retrains update the model incrementally instead of retraining it fully."""
    evidently_workspace: str = "var/evidently"
    """Where each run's Evidently snapshot goes: a workspace folder, or the URL of an Evidently UI
    service (http(s)://...); empty: no snapshots."""
    evidently_token: SecretStr | None = None
    """The Evidently UI service's secret (its EVIDENTLY_SECRET), sent with every request."""
    evidently_retention_days: float | None = Field(None, gt=0)
    """Snapshots older than this are removed from the model's project; unset: the prediction
    log's retention (SERVEWATCH_LOG_RETENTION_DAYS), and kept forever when that is unset too."""
    log_retention_days: float | None = Field(None, gt=0)
    """The prediction log's retention (a service setting), read for the snapshots' default."""
    public_url: str | None = None
    """Where people reach the service; used for report links in alerts."""

    @field_validator("retrain_on_alert", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
