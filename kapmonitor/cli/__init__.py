"""The ``kapmonitor`` command (DESIGN §5: a contract that tests and tools rely on).

One module per subcommand in this package, each with ``add_parser(subparsers, common)``
that registers its parser and sets ``func`` to a ``run(args) -> int``. Heavy imports
happen inside ``run`` so ``kapmonitor --help`` stays fast. Bad input raises ``CliError``
and exits 2 with a one-line reason, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from .common import CliError, common_parser

__all__ = ["CliError", "main"]

#: Modules of this package that are not subcommands.
_NOT_COMMANDS = frozenset({"common"})


def command_modules() -> list[str]:
    """Every subcommand module in this package, found rather than listed, so adding a
    subcommand is adding one file."""
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in _NOT_COMMANDS
    )


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
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
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"kapmonitor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"kapmonitor: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
