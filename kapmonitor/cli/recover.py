"""``kapmonitor recover``: close sessions that a crashed recorder left open.

A database that does not exist has nothing to recover: it is refused, not created.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from .common import open_store

NAME = "recover"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="close sessions left open by a crash",
                       description="Find open sessions whose recording process is gone and "
                       "close them as 'recovered' with a gap marker at their last data. "
                       "Nothing is deleted. The app does this on start as well.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kapmonitor.store import recover_all

    store = open_store(args, create=False)
    try:
        done = recover_all(store)
    finally:
        store.close()
    if not done:
        print("no abandoned sessions")
    for a in done:
        end = "-" if a.last_data_us is None else datetime.fromtimestamp(
            a.last_data_us / 1e6, UTC).isoformat(timespec="milliseconds")
        print(f"recovered session {a.session_id}: {a.reason}; gap marked at {end}")
    return 0
