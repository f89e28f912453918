"""The one exception training raises for a user's mistake; the CLI prints it as one line."""


class TrainingError(Exception):
    """A problem with the user's data, config or registry, worded for the user."""
