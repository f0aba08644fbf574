"""The `trainyard` command line (``trainyard --help``); `python -m trainyard` runs it too."""

from trainyard.cli.app import app, main

__all__ = ["app", "main"]
