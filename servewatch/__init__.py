"""The composition root: the `servewatch` command wires training, service and monitoring."""

__all__ = [
    "cli",
]
