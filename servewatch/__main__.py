"""`python -m servewatch` runs the command line."""

from servewatch.cli import app

app()
