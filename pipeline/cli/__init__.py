"""The `prep` command: every stage as a subcommand, plus the views (show, summary, plots).

The top layer: it may import everything below; nothing below imports it.
"""

from pipeline.cli.app import app

__all__ = ["app"]
