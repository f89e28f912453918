"""Offline half of servewatch: data set + YAML config -> a versioned, self-describing model."""

__all__ = [
    "cli",
    "config",
    "data",
    "errors",
    "fingerprints",
    "gate",
    "incremental",
    "prepare",
    "publishing",
    "refit",
    "train",
    "transformers",
]
