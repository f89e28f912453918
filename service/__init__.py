"""Online half of servewatch: schema-checked, micro-batched predictions, all of them logged."""

__all__ = [
    "config",
    "errors",
    "main",
    "model",
    "schemas",
    "supervise",
]
