"""``python -m detector``: the command line."""

from detector.cli import run

run()
