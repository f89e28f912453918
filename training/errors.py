"""The exception training raises for a user's mistake; the CLI prints it as one line."""

from core.errors import ServewatchError


class TrainingError(ServewatchError):
    """A problem with the user's data or config, worded for the user."""
