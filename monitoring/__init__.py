"""Watching served models: drift and performance over the prediction log, estimates and alerts."""

__all__ = [
    "cli",
    "collector",
    "config",
    "loop",
    "routes",
    "store",
    "summary",
]
