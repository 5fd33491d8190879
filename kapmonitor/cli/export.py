"""``kapmonitor export SESSION --format csv|pdf|fhir|edf|vital --out PATH`` (DESIGN §5).

The formats live in ``kapmonitor.export`` (csv, fhir, edf, vital) and, for the PDF
report that draws plots, in the GUI package (``kapmonitor.ui.report``). Prints what was
written, and every warning (a session still OPEN, one RECOVERED after a crash, DEMO data)
on standard error, so a script that keeps only the output still sees them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .common import CliError, finite_float, open_store, session_ref

NAME = "export"
FORMATS = ("csv", "pdf", "fhir", "edf", "vital")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME, parents=[common], help="export a session as CSV, PDF, FHIR, EDF+ or .vital",
        description="Export a recorded session. csv: a folder of tables (or one .zip when "
        "--out ends in .zip); fhir: one FHIR R4 Bundle (JSON); edf: EDF+ with waves, "
        "1-Hz numerics and annotations; vital: a VitalDB .vital file; pdf: the session "
        "report (needs the GUI package). A session still open or recovered after a crash "
        "is exported with a warning inside the file and on standard error. Nothing is "
        "overwritten unless --force is given (a CSV folder never is).")
    p.add_argument("session", metavar="SESSION", help="session id, or uid (or a uid prefix)")
    p.add_argument("--format", "-f", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", "-o", required=True, metavar="PATH", help="file (or folder for "
                   "csv) to write; must not exist unless --force")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--waves", action="store_true",
                   help="csv: add waves.csv; fhir: add waves as valueSampledData (both off "
                   "by default; edf and vital always hold the waves)")
    p.add_argument("--interval", type=finite_float, metavar="SECONDS",
                   help="fhir: one Observation per channel per this many seconds (default "
                   "60; 0 = every reading; NIBP is always every measurement)")
    p.add_argument("--bundle", choices=("collection", "transaction"),
                   help="fhir: Bundle type (default collection; transaction can be POSTed "
                   "to a FHIR server)")
    p.add_argument("--hold", type=finite_float, metavar="SECONDS",
                   help="edf: hold a numeric at most this long when no new value came "
                   "(default 10)")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"overwrite": args.force}
    given = {"waves": args.waves or None, "interval": args.interval, "bundle": args.bundle,
             "hold": args.hold}
    allowed = {"csv": {"waves"}, "fhir": {"waves", "interval", "bundle"}, "edf": {"hold"},
               "vital": set(), "pdf": set()}[args.fmt]
    for name, value in given.items():
        if value is None:
            continue
        if name not in allowed:
            raise CliError(f"--{name} does not apply to {args.fmt} export")
        key = {"interval": "interval_s", "bundle": "bundle_type", "hold": "hold_s"}.get(name,
                                                                                          name)
        opts[key] = value
    return opts


def _pdf_module() -> Any:
    """The report module of the GUI package, or a one-line refusal saying why not."""
    try:
        found = importlib.util.find_spec("kapmonitor.ui.report") is not None
        reason = "kapmonitor.ui.report is not installed"
    except Exception as exc:  # the GUI package itself may refuse to import (Qt binding)
        found, reason = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not found:
        raise CliError(f"pdf export needs the GUI package ({reason})")
    return importlib.import_module("kapmonitor.ui.report")


def run(args: argparse.Namespace) -> int:
    from kapmonitor.export import ExportError, export_session

    ref = session_ref(args.session)
    out = Path(args.out).expanduser()
    if not out.parent.is_dir():
        raise CliError(f"--out {args.out}: the folder {out.parent} does not exist")
    options = _options(args)
    pdf = _pdf_module() if args.fmt == "pdf" else None
    store = open_store(args, create=False)
    try:
        row = store.session_row(ref)
        try:
            if pdf is not None:
                result = pdf.export_session(store.engine, row.id, out, **options)
            else:
                result = export_session(args.fmt, store.engine, row.id, out, **options)
        except ExportError as exc:
            raise CliError(str(exc)) from None
    finally:
        store.close()
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    for path in result.paths:
        print(f"wrote {args.fmt} export of session {row.id} to {path}"
              + (f" ({counts})" if counts else ""))
    for warning in result.warnings:
        print(f"kapmonitor: warning: {warning}", file=sys.stderr)
    return 0
