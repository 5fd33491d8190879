"""``kapmonitor verify``: check the audit chain and the database file's integrity."""

from __future__ import annotations

import argparse
import sys

from .common import db_option

NAME = "verify"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="check audit chain and database integrity",
                       description="Check SQLite's integrity and the audit hash chain over "
                       "every clinical write; exit 1 naming the first broken row.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy import text

    from kapmonitor.store import Store
    from kapmonitor.store.audit import verify

    store = Store.open(db_option(args))
    try:
        with store.engine.connect() as conn:
            problems: list[str] = []
            if store.engine.url.get_backend_name() == "sqlite":
                result = [r for (r,) in conn.execute(text("PRAGMA integrity_check"))]
                if result != ["ok"]:
                    problems += [f"integrity_check: {r}" for r in result]
            faults = verify(conn)
            audited = conn.execute(text("SELECT count(*) FROM audit")).scalar_one()
    finally:
        store.close()
    problems += [str(f) for f in faults]
    if problems:
        print(f"kapmonitor verify: FAILED: {problems[0]}", file=sys.stderr)
        for p in problems[1:]:
            print(f"  also: {p}", file=sys.stderr)
        return 1
    print(f"ok: database integrity ok, audit chain of {audited} records intact")
    return 0
