"""The ``kapmonitor`` command (DESIGN §5: a contract that tests and tools rely on).

One module per subcommand in this package, each with ``add_parser(subparsers, common)``
that registers its parser and sets ``func`` to a ``run(args) -> int``. Heavy imports
happen inside ``run`` so ``kapmonitor --help`` stays fast.

Whatever goes wrong, the user reads exactly one line on standard error, in their words,
and the exit status says whose problem it is (``main`` maps every exception):

- 2, bad input: a ``CliError`` (including argparse's refusals) or a ``StoreError`` (no
  such session, no database at that path, a damaged file), an unusable file path;
- 1, a fault that is not the input: the database busy, the disk full or read-only, and
  anything unexpected ("internal error: ... (run with --debug for details)"). The SQL,
  its parameters and exception class names are never shown; ``--debug`` shows the
  traceback;
- 141, standard output closed early (``kapmonitor sessions --json | head``): the rest of
  the output is dropped quietly, as ``cat`` does when killed by SIGPIPE (128 + 13), so a
  pipeline with ``pipefail`` can still tell the output was cut short;
- 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import pkgutil
import re
import sys
from collections.abc import Sequence

from .common import ArgumentParser, CliError, UsageError, common_parser, db_option

__all__ = ["CliError", "describe_error", "main"]

#: Modules of this package that are not subcommands.
_NOT_COMMANDS = frozenset({"common"})

#: Exit status when standard output was closed by the reader (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
#: Errors about a path the user gave (bad input) rather than a failing disk.
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR,
                          errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
                          errno.EROFS, errno.EINVAL})
_CLASS_NAME = re.compile(r"\b[A-Z][a-zA-Z]+(?:Error|Exception)\b:?\s*")
_MAX_LINE = 400


def command_modules() -> list[str]:
    """Every subcommand module in this package, found rather than listed, so adding a
    subcommand is adding one file."""
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in _NOT_COMMANDS
    )


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = ArgumentParser(
        prog="kapmonitor",
        description="KAP Monitor: bedside display and record for ketamine infusion rooms. "
        "A secondary display and record, not a primary alarm device.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        logging.basicConfig(
            level=logging.DEBUG if debug else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        func = getattr(args, "func", None)
        if func is None:  # no subcommand: the bedside window
            from . import gui

            args.devices = False
            func = gui.run
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug and not isinstance(exc, CliError):
            raise
        line, code = describe_error(exc, db=db_option(args) if args is not None else None)
        _say(line)
        return code


def describe_error(exc: BaseException, *, db: str | None = None) -> tuple[str, int]:
    """The one line printed for ``exc`` (with its ``kapmonitor...: error:`` prefix) and the
    exit status: 2 when the input is wrong, 1 for a fault that is not."""
    from kapmonitor.store.errors import StoreError

    if isinstance(exc, UsageError):
        return _one_line(str(exc)), 2
    if isinstance(exc, CliError | StoreError):
        return "kapmonitor: error: " + _one_line(str(exc)), 2
    db_fault = _database_fault(exc, db)
    if db_fault is not None:
        return "kapmonitor: error: " + _one_line(db_fault[0]), db_fault[1]
    if isinstance(exc, OSError):
        reason = exc.strerror or _plain(str(exc)) or "operating system error"
        where = f": {exc.filename}" if exc.filename else ""
        code = 2 if exc.errno in _PATH_ERRNOS else 1
        return "kapmonitor: error: " + _one_line(f"{reason}{where}"), code
    if isinstance(exc, MemoryError):
        return "kapmonitor: error: out of memory", 1
    short = _plain(str(exc))[:160] or "unexpected failure"
    return f"kapmonitor: internal error: {_one_line(short)} (run with --debug for details)", 1


def _database_fault(exc: BaseException, db: str | None) -> tuple[str, int] | None:
    """A database driver's or migration's failure in plain words, or None when ``exc`` is
    not one. ``describe_db_error`` (the store's) gives the sentence; the command line adds
    what to do about it."""
    import sqlite3

    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from kapmonitor.store.errors import describe_db_error

    if isinstance(exc, CommandError):
        # alembic cannot place the file's schema revision: a newer app wrote it, or it is
        # another program's database
        return (f"the database{_at(db)} has a schema this version of KAP Monitor does not "
                "know (written by a newer version, or not a KAP Monitor database)"), 2
    if not isinstance(exc, SQLAlchemyError | sqlite3.Error):
        return None
    orig = getattr(exc, "orig", None) or exc
    low = str(orig).lower()
    said = describe_db_error(exc)
    if "locked" in low or "busy" in low:
        return "the database is busy (another program is writing to it); try again", 1
    if "full" in low:
        return f"{said}: the database{_at(db)} cannot grow; free some space and try again", 1
    if "readonly" in low or "read-only" in low or "read only" in low:
        return (f"{said}{_at(db)}: check the file's permissions, or that its disk is not "
                "mounted read-only"), 1
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return f"{said}{_at(db)}: run `kapmonitor verify` for the findings", 2
    if "unable to open" in low:
        return f"{said}{_at(db)}: check that its folder exists and you may write there", 2
    return f"database error{_at(db)}: {_plain(said)[:200]}", 1


def _at(db: str | None) -> str:
    return f" at {db}" if db else ""


def _plain(text: str) -> str:
    """The first line of a message without exception class names (a user does not know
    what an ``OverflowError`` is; the words after it say what happened)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _CLASS_NAME.sub("", first).strip()


def _one_line(text: str) -> str:
    """Exactly one line: line breaks joined with "; ", control characters dropped, and
    long echoes of the input cut (a 5000-character note is not printed back)."""
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    line = "; ".join(parts)
    line = "".join(c for c in line if c >= " " and c != "\x7f")
    return line if len(line) <= _MAX_LINE else line[:_MAX_LINE - 1] + "\u2026"


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr itself may be closed
        print(line, file=sys.stderr, flush=True)


def _drop_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's final flush of what is
    still buffered does not fail a second time (the Python docs' SIGPIPE recipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
