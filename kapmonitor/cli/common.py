"""Options, checks and helpers every subcommand shares.

The command line is a contract (DESIGN §5): bad input exits 2 with one line that says
what is wrong, and nothing is written. The pieces that make that true for every
subcommand live here, so each one uses the same words and the same limits:

- ``ArgumentParser`` turns argparse's own refusals (usage block, then the error) into one
  line; ``finite_float``, ``positive_float``, ``bounded_int`` are argparse types that refuse
  ``nan``, ``inf`` and numbers no clock, port or database column can hold;
- ``text_field`` bounds free text by the database column it goes to (a 70-character room
  is refused here with its reason rather than truncated or rejected by a server later);
- ``session_ref`` refuses, as "no session", a session reference that cannot be an id or a
  uid (a 30-digit number would otherwise overflow the database integer);
- ``open_store`` opens the database the way a command needs: read commands never create
  one (a typo in ``--db`` must not look like an empty record).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from kapmonitor.store import Store

__all__ = [
    "MAX_ID",
    "ArgumentParser",
    "CliError",
    "UsageError",
    "bounded_int",
    "common_parser",
    "db_option",
    "finite_float",
    "open_store",
    "positive_float",
    "session_ref",
    "text_field",
    "text_limit",
]

#: The largest row id a database integer holds (SQLite and PostgreSQL BIGINT).
MAX_ID = 2**63 - 1
_UID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")


class CliError(Exception):
    """Bad input: reported as one line, exit status 2."""


class UsageError(CliError):
    """An argument argparse refused; the message already names the subcommand."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a refused argument raises ``UsageError`` instead of printing
    the usage block and exiting: the contract is one line (``main`` prints it), and a
    caller of ``main`` gets a return code rather than a ``SystemExit``. Subparsers are made
    with the same class, so this holds for every subcommand."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def finite_float(text: str) -> float:
    """A number that is neither ``nan`` nor infinite: every quantity the app takes
    (weights, seconds, speeds) is finite, and ``inf`` seconds overflows a timer."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number above zero (a speed, a duration)."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def bounded_int(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse type for a whole number in ``low..high``: a TCP port, a seed, a row
    id. Python's ints are unbounded, but the socket, the random generator and the
    database integer are not, and would fail with an internal error instead of a reason."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            kind = f" ({what})" if what else ""
            raise argparse.ArgumentTypeError(f"{value} is outside {low} to {high}{kind}")
        return value

    parse.__name__ = "whole number"
    return parse


def text_limit(column: object) -> int:
    """The length of a ``String(N)`` column, so a text bound follows the schema."""
    length = getattr(getattr(column, "type", None), "length", None)
    if not isinstance(length, int):
        raise TypeError(f"{column!r} has no length")
    return length


def text_field(value: str | None, option: str, limit: int, *,
               one_line: bool = True) -> str:
    """``value`` stripped, refused when longer than ``limit`` characters (the database
    column it is stored in) or, for a name-like field, when it holds a line break or
    another control character (it would break every table and report it appears in)."""
    text = (value or "").strip()
    if len(text) > limit:
        raise CliError(f"{option} is {len(text)} characters long; at most {limit} are kept "
                       "in the record")
    if one_line and any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise CliError(f"{option} must be one line of text without control characters")
    if not one_line and any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127
                            for c in text):
        raise CliError(f"{option} holds control characters; write plain text")
    return text


def session_ref(text: str) -> str:
    """A session named by id or uid (prefix), refused as "no session" when it cannot be
    either: the store would otherwise overflow on a 30-digit id or read ``%`` and ``_`` as
    wildcards of a uid prefix."""
    ref = text.strip()
    if ref.isascii() and ref.isdigit():
        if int(ref) <= MAX_ID:
            return ref
    elif _UID_PREFIX.fullmatch(ref):
        return ref
    raise CliError(f"no session {text!r} (name a session by its id or uid; see "
                   "`kapmonitor sessions`)")


def common_parser() -> ArgumentParser:
    """``--db`` and ``--debug``, accepted before or after the subcommand."""
    p = ArgumentParser(add_help=False)
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


def open_store(args: argparse.Namespace, *, create: bool) -> Store:
    """The database for this command. ``create=False`` for every command that reads or
    adds to an existing record (``sessions``, ``export``, ``replay``, ``note``,
    ``recover``): a missing file is refused (``DatabaseMissing``, exit 2) instead of
    becoming an empty database that answers "no sessions". Only ``record``, ``demo`` and
    the GUI create one. A ``--db`` URL SQLAlchemy cannot use is refused with the reason."""
    from sqlalchemy.exc import ArgumentError

    from kapmonitor.store import Store

    value = db_option(args)
    try:
        return Store.open(value, create=create)
    except ArgumentError as exc:  # includes NoSuchModuleError (unknown dialect)
        raise CliError(f"--db {value!r} is not a database URL this app can use "
                       f"({_first_line(exc)})") from None
    except ModuleNotFoundError as exc:  # a dialect whose driver is not installed
        raise CliError(f"--db {value!r} needs the database driver {exc.name!r}, which is "
                       "not installed") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
