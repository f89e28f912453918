"""The prediction log: its tables and store, the writer and spool, partitions, retention, ids.

The service writes it and monitoring reads it; this package imports only `core`. `backfill()` (log
history as the service would) lives in `predlog.backfill`, named there rather than here so that the
function does not hide its module.
"""

from predlog.ids import IdKeys
from predlog.logwriter import LogFull, LogUnavailable, LogWriter, Spool
from predlog.partitions import Maintenance
from predlog.retention import RetentionCollector, maintain, maintenance_loop
from predlog.store import PredictionStore, SchemaGap, normalise_url, prediction_rows

__all__ = [
    "IdKeys",
    "LogFull",
    "LogUnavailable",
    "LogWriter",
    "Maintenance",
    "PredictionStore",
    "RetentionCollector",
    "SchemaGap",
    "Spool",
    "ids",
    "logwriter",
    "maintain",
    "maintenance_loop",
    "metrics",
    "normalise_url",
    "prediction_rows",
    "retention",
    "store",
]
