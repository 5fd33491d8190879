"""``kapmonitor verify``: check the database file's integrity, the audit chain, and that
every sample belongs to an audited batch.

It never creates a database (a typo must not verify as "ok") and never refuses a damaged
one: printing what is wrong with a damaged file is its job. SQLite's ``integrity_check``
runs first, on the raw file; a damaged file is then read without migrating it, so
``verify`` does not write into a broken b-tree. On success it prints the chain's length
and latest hash, to be written down outside the file (chart, log): a later
``verify --expect-hash`` shows whether the chain still contains it (see ``store.audit``
for what the chain can and cannot prove).

Exit status: 0 all well, 1 findings (each on its own line), 2 no database / bad input.
"""

from __future__ import annotations

import argparse
import string
import sys

from .common import CliError, db_option

NAME = "verify"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="check audit chain and database integrity",
                       description="Check SQLite's integrity, the audit hash chain over "
                       "every clinical write, and that every sample is in an audited batch; "
                       "exit 1 naming each broken row. On success print the chain's latest "
                       "hash, to be written down outside the file as an anchor.")
    p.add_argument("--expect-hash", metavar="HASH",
                   help="a chain hash written down earlier (at least 16 hex digits): fail "
                   "unless the audit chain still contains it")
    p.set_defaults(func=run)


def _anchor(value: str | None) -> str | None:
    from kapmonitor.store.audit import MIN_ANCHOR_CHARS

    if value is None:
        return None
    h = value.strip().lower()
    if len(h) < MIN_ANCHOR_CHARS or len(h) > 64 or set(h) - set(string.hexdigits.lower()):
        raise CliError(f"--expect-hash wants {MIN_ANCHOR_CHARS} to 64 hex digits of a "
                       f"chain hash, not {value!r}")
    return h


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from kapmonitor.store import audit
    from kapmonitor.store.engine import (
        integrity_findings,
        migrate,
        open_engine,
        resolve_db_url,
        sqlite_file,
    )
    from kapmonitor.store.errors import DatabaseDamaged, StoreError

    anchor = _anchor(getattr(args, "expect_hash", None))
    url = resolve_db_url(db_option(args))
    problems: list[str] = []
    damaged = False
    try:
        # create=False: a missing file is exit 2 ("no database at PATH"), never a new
        # empty database; check=False: damage is reported below rather than refused
        engine = open_engine(url, create=False, check=False, migrate_schema=False)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    try:
        path = sqlite_file(url) if url.get_backend_name() == "sqlite" else None
        if path is not None:
            try:
                findings = integrity_findings(path, full=True)
            except DatabaseDamaged as exc:  # not a SQLite file at all: nothing more to read
                print(f"kapmonitor verify: FAILED: {exc}", file=sys.stderr)
                return 1
            except StoreError as exc:
                raise CliError(str(exc)) from exc
            problems += [f"integrity_check: {f}" for f in findings]
            damaged = bool(findings)
        report = None
        try:
            if not damaged:  # migrating a damaged file would write into it
                migrate(engine)
            with engine.connect() as conn:
                report = audit.verify_report(conn, expect_hash=anchor)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            problems.append(f"the audit chain could not be read ({reason})")
    finally:
        engine.dispose()
    if report is not None:
        problems += [str(f) for f in report.faults]
    if problems or report is None:
        problems = problems or ["nothing was checked"]
        print(f"kapmonitor verify: FAILED: {problems[0]}", file=sys.stderr)
        for p in problems[1:]:
            print(f"  also: {p}", file=sys.stderr)
        return 1
    n_num, n_wave = report.samples.get("numeric", 0), report.samples.get("wave", 0)
    integrity = "database integrity ok, " if path is not None else ""
    print(f"ok: {integrity}audit chain of {report.records} records intact, "
          f"{n_num} numeric and {n_wave} wave rows all in audited batches")
    head = f"audit #{report.head_id}" if report.head_id is not None else "empty chain"
    print(f"chain head: {report.head_hash} ({head}, {report.records} records)")
    if anchor is not None:
        print(f"anchor {anchor} found at audit #{report.anchor_id} of {report.records}")
    else:
        print("write the chain head down outside this file (chart, log); "
              "`kapmonitor verify --expect-hash HASH` checks it later")
    return 0
