"""`python -m servewatch` runs the command line."""

from servewatch.cli import main

main()
