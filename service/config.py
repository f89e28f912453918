"""Settings: every knob of the service, from SERVEWATCH_ environment variables or flags."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVEWATCH_", extra="ignore")

    registry: Path = Path("registry")
    """Registry root; read-only for the service."""
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """What to serve: NAME, NAME:VERSION or NAME@ALIAS, comma-separated. Empty: every model at
    its production alias, else its newest version."""
    shadow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Models whose `staging` version runs in shadow: same inputs, logged, never returned."""
    canary: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    """Share of traffic per model sent to its `staging` version, e.g. `flights:0.1`."""
    canary_min_requests: int = Field(50, ge=1)
    canary_max_error_rate_increase: float = Field(0.02, ge=0)
    canary_max_latency_ratio: float = Field(2.0, gt=1)
    database_url: str = "sqlite:///var/servewatch.db"
    """Prediction log: a SQLite file on one machine, postgresql://... for several replicas."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    admin_token: str | None = None
    """Bearer token for admin routes (reload). Unset: admin routes are off."""
    signing_key: str | None = None
    """HMAC key: when set, only versions whose manifest is signed with it are loaded."""
    personal_data_key: str | None = None
    """HMAC key for personal-data columns in requests: logged as keyed hashes; unset: dropped."""
    feedback_token: str | None = None
    """Bearer token for feedback. Unset: feedback is open."""
    id_key: str | None = None
    """Key prediction ids are tagged with: feedback is accepted only for an id tagged for its
    model. Unset: a key generated once and kept in the log database (`sw_id_keys`), shared by
    every worker and replica writing to it."""
    id_previous_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Keys ids were tagged with before a rotation, comma-separated: labels for their ids are
    still accepted (keep a key here until the log's retention has passed)."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_instances: int = Field(1000, ge=1)
    explain_max_instances: int = Field(100, ge=1)
    """Most instances one /explain request may carry (sampling Shapley costs thousands of model
    calls a row); more get a 422 naming the limit."""
    explain_threads: int = Field(1, ge=1)
    """Threads that compute explanations, apart from the model thread (predictions never wait
    for an explanation); four times as many explain requests may wait, more get a 503."""
    shadow_max_inflight: int = Field(64, ge=1)
    """Shadow calls (requests) a worker runs or queues at once; beyond it a request's shadow is
    dropped, counted as servewatch_shadow_predictions_total{result="dropped"}, never delaying
    the answer."""
    batch_max_rows: int = Field(256, ge=1)
    """Micro-batching: most rows gathered into one model call."""
    batch_max_wait_ms: float = Field(1.0, ge=0)
    """Micro-batching: how long a batch may wait for more rows once the model is free."""
    batch_inline_max_ms: float = Field(0.5, ge=0)
    """Model calls that average under this run on the event loop instead of the model thread
    (0 keeps every call on the thread)."""
    log_batch_rows: int = Field(500, ge=1)
    log_flush_ms: float = Field(200, gt=0)
    log_queue_rows: int = Field(50_000, ge=100)
    """Rows waiting in memory for the log writer; a full queue pushes back on requests."""
    log_durability: Literal["async", "sync"] = "async"
    """async: answer once the row is queued (a SIGKILL can lose the last flush interval);
    sync: answer once the row is committed to the store or the fsynced spool (group commit)."""
    log_ack_timeout_s: float = Field(10.0, gt=0)
    """Longest a request waits for the log to take its rows (the sync acknowledgement, or the
    direct spool write of a full queue); then 503, never an unbounded wait."""
    log_retention_days: float | None = Field(None, gt=0)
    """Prediction rows older than this (by ingest time) are removed, with labels no row joins
    any more: partitions dropped on PostgreSQL, batched deletes on SQLite. Unset: kept forever."""
    log_partition_hours: int = Field(24, ge=1, le=24 * 31)
    """PostgreSQL: the time span of one partition of the log (daily by default)."""
    log_partitions_ahead: int = Field(3, ge=1)
    """PostgreSQL: partitions created ahead of the current one."""
    log_maintenance_interval_s: float = Field(3600, ge=0)
    """How often each worker runs log maintenance (partitions ahead, retention); 0: never (a
    CronJob running `servewatch log maintain` does it)."""
    spool_dir: Path = Path("var/spool")
    """Where log rows wait on disk while the log store is unreachable; each worker process owns
    a folder in it (`w-<k>`, under an flock) and replays the folders of stopped workers."""
    spool_max_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    """Disk for the whole spool, shared out equally among the workers."""
    reload_interval_s: float = Field(5.0, ge=0)
    """How often to check the registry's aliases for a new version (0: never)."""
    task_retry_s: float = Field(1.0, gt=0)
    """Pause before a failed background task (watcher, log maintenance, monitoring loop) starts
    again; doubled with each failure in a row, up to 60 s. Three in a row fail /readyz."""
    opentelemetry: bool = False
    """FastAPI's own OpenTelemetry spans, metrics and logs, for an OTel SDK you configure; off by
    default (Prometheus metrics are always on), which also skips its per-request check."""
    compiled_trees: bool = True
    """Tree models (trees, forests, boosting) compiled for ONNX Runtime when onnxruntime is
    installed and the compiled model matches scikit-learn at load; false keeps them on
    scikit-learn (the numpy replays still apply)."""
    model_threads: int = Field(1, ge=1)
    """OpenMP/BLAS threads for the model call (one per worker avoids over-subscription)."""

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        for key in ("models", "shadow", "id_previous_keys"):
            if isinstance(data.get(key), str):
                data[key] = [m.strip() for m in data[key].split(",") if m.strip()]
        if isinstance(data.get("canary"), str):
            shares = {}
            for item in filter(None, (p.strip() for p in data["canary"].split(","))):
                name, _, share = item.partition(":")
                try:
                    shares[name.strip()] = float(share)
                except ValueError:
                    raise ValueError(f"SERVEWATCH_CANARY: {item!r} is not NAME:SHARE") from None
            data["canary"] = shares
        return data

    @model_validator(mode="after")
    def _check_tokens(self) -> Settings:
        for name, share in self.canary.items():
            if not 0 < share < 1:
                raise ValueError(f"SERVEWATCH_CANARY: share for {name} must be between 0 and 1")
            if name in self.shadow:
                raise ValueError(f"{name} cannot have both a shadow and a canary")
        for name in ("admin_token", "feedback_token", "signing_key", "personal_data_key", "id_key"):
            token = getattr(self, name)
            if token is not None and len(token) < 16:
                raise ValueError(f"SERVEWATCH_{name.upper()} must be at least 16 characters")
        if any(len(k) < 16 for k in self.id_previous_keys):
            raise ValueError("SERVEWATCH_ID_PREVIOUS_KEYS: each key must be at least 16 characters")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
