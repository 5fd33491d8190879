"""Options and helpers every subcommand shares."""

from __future__ import annotations

import argparse

__all__ = ["CliError", "common_parser", "db_option"]


class CliError(Exception):
    """Bad input: reported as one line, exit status 2."""


def common_parser() -> argparse.ArgumentParser:
    """``--db`` and ``--debug``, accepted before or after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--db",
        metavar="PATH|URL",
        default=argparse.SUPPRESS,
        help="database file or SQLAlchemy URL (default: $KAPMONITOR_DB, else a file in the "
        "user data directory)",
    )
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="log details and show tracebacks")
    return p


def db_option(args: argparse.Namespace) -> str | None:
    """The ``--db`` value if given anywhere on the command line."""
    return getattr(args, "db", None)
