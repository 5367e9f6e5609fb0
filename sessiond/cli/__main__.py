"""python -m sessiond.cli: sessionc."""

from sessiond.cli.main import entry

entry()
