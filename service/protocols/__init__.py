"""The HTTP protocols: /v1's routes and envelope, the Open Inference Protocol's /v2, bodies,
schemas, health, admin, and the domain errors as replies."""

__all__ = [
    "admin",
    "body",
    "deps",
    "errors",
    "explain",
    "health",
    "hotpath",
    "oip",
    "predict",
    "schemas",
    "v2",
]
