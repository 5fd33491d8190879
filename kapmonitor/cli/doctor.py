"""``kapmonitor doctor [--json] [--port PATH ...]``: what would stop this workstation, with
fixes (DESIGN §5).

One line per check, OK, WARN or FAIL, each with the command that fixes it: Python and
PySide6, the system libraries Qt needs (with the ``sudo apt install`` line), the display and
offscreen rendering, an audio output for the alarm tones, the serial ports and the
``dialout`` group, the database folder and free disk. Exit 0 when nothing FAILs, 1
otherwise, so a provisioning script can stop on it; ``--json`` for machines.

The checks live in ``kapmonitor.doctor`` (no Qt); the questions only Qt can answer are asked
of ``kapmonitor.ui.doctor_checks`` in separate processes, because Qt aborts a process whose
platform plugin cannot load and the doctor must live to report it. The database is never
created or opened.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .common import CliError, db_option

if TYPE_CHECKING:
    from kapmonitor.doctor import Check, Probe

NAME = "doctor"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME, parents=[common], help="check this workstation: Qt libraries, display, audio, "
        "serial ports, database",
        description="Check what would stop this workstation, one line per check (OK, WARN "
        "or FAIL) with the fix: Python and PySide6; the system libraries Qt needs, with the "
        "apt command that installs them; the display, and offscreen rendering without one; "
        "an audio output for the alarm tones; every serial port and whether you may open "
        "it; the database folder and free disk (the database is never created). Exits 1 "
        "when a check FAILs.")
    p.add_argument("--json", action="store_true", help="one JSON object: the checks and "
                   "every Debian package they ask for")
    p.add_argument("--port", action="append", default=[], metavar="PATH",
                   help="also check this serial port (repeatable; pyserial's list does not "
                   "show ptys or unusual adapters)")
    p.set_defaults(func=run)


def _probe_script() -> Path | None:
    """ui/doctor_checks.py, found without importing ``kapmonitor.ui`` (whose import may
    refuse the Qt binding; the probes must run anyway)."""
    try:
        spec = importlib.util.find_spec("kapmonitor.ui")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    script = Path(next(iter(spec.submodule_search_locations))) / "doctor_checks.py"
    return script if script.is_file() else None


def _binding() -> tuple[str | None, str | None]:
    """(refusal, import failure) of ``kapmonitor.ui``: its import runs the check that
    refuses a PySide6 release known to crash a long-running window (a ``RuntimeError``)."""
    try:
        importlib.import_module("kapmonitor.ui")
    except RuntimeError as exc:
        return str(exc), None
    except ImportError as exc:
        return None, str(exc).splitlines()[0] if str(exc) else "ImportError"
    return None, None


def collect(args: argparse.Namespace) -> list[Check]:
    """Every check, in the order a person fixes them: Python, the binding, its libraries,
    the display, then audio, serial ports and the database."""
    from kapmonitor import doctor as d

    database = d.check_database(db_option(args))
    if database.details.get("unusable_url") and db_option(args):
        raise CliError(f"--db {database.summary}")  # bad input, as for every command
    env = dict(os.environ)
    version = d.pyside_version()
    refused, import_error = _binding() if version is not None else (None, None)
    checks = [d.check_python(), d.check_pyside(version, refused, import_error)]
    qt = d.check_qt_libraries(env=env)
    checks.append(qt)

    script = _probe_script() if version is not None else None

    def probe(name: str, changes: dict[str, str | None] | None = None) -> Probe:
        if script is None:
            return d.Probe(None, "PySide6 or kapmonitor.ui is not installed")
        return d.run_probe(script, name, env=changes)

    has_display = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    forced = env.get("QT_QPA_PLATFORM", "").split(":")[0]
    platform = (probe("platform") if has_display and forced not in ("offscreen", "minimal")
                else None)
    checks.append(d.check_display(env, platform))
    checks.append(d.check_offscreen(probe("offscreen", {
        "QT_QPA_PLATFORM": "offscreen", "DISPLAY": None, "WAYLAND_DISPLAY": None})))

    root = d.pyside_dir()
    audio_missing: dict[str, list[str]] = {}
    if root is not None and qt.details.get("pyside6"):  # Linux, and ldd ran
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # then the probe says
            audio_missing = d.scan_libraries(root, d.QT_AUDIO)["missing"]
    checks.append(d.check_audio(audio_missing, None if audio_missing else probe("audio")))
    checks.append(d.check_serial(args.port))
    checks.append(database)
    return checks


def run(args: argparse.Namespace) -> int:
    from kapmonitor import doctor as d

    checks = collect(args)
    print(d.render_json(checks) if args.json else d.render_text(checks))
    return d.exit_code(checks)
