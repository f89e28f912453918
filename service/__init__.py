"""Online half of servewatch: schema-checked, micro-batched predictions, all of them logged.

Rooms: `inference/` (a version loaded, verified and served on numpy, compiled trees or
scikit-learn), `protocols/` (the HTTP routes of /v1 and /v2, their bodies, schemas and error
replies), and at the top the data plane, micro-batching, the model manager, settings and metrics.
"""

__all__ = [
    "config",
    "errors",
    "inference",
    "main",
    "protocols",
    "supervise",
]
