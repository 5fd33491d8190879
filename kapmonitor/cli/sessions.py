"""``kapmonitor sessions``: the recorded sessions, as a table or as JSON.

Reads only: a missing database is refused ("no database at PATH"), never created, so a
mistyped ``--db`` cannot answer "no sessions recorded".
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from .common import open_store

NAME = "sessions"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="list recorded sessions",
                       description="List recorded sessions with status, duration, dose "
                       "(programmed mg/kg and mg; GIVEN: the last delivered dose recorded from "
                       "the pump) and alarm counts. Sessions are never deleted (clinical data "
                       "is append-only).")
    p.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    p.set_defaults(func=run)


def _when(t_us: int | None) -> str:
    if t_us is None:
        return "-"
    return datetime.fromtimestamp(t_us / 1e6, UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def run(args: argparse.Namespace) -> int:
    from kapmonitor.store import find_abandoned

    store = open_store(args, create=False)
    try:
        sessions = store.sessions()
        abandoned = {a.session_id: a.reason for a in find_abandoned(store)}
    finally:
        store.close()
    if args.json:
        out = []
        for s in sessions:
            d = s.as_json()
            d["abandoned"] = abandoned.get(s.id)
            out.append(d)
        print(json.dumps(out, indent=2))
        return 0
    if not sessions:
        print("no sessions recorded")
        return 0
    header = f"{'ID':>4}  {'STARTED':16}  {'PATIENT':12}  {'ROOM':8}  {'STATUS':10}  " \
             f"{'LENGTH':>8}  {'DOSE':>19}  {'GIVEN':>9}  {'ALARMS':>6}  {'NOTES':>5}"
    print(header)
    for s in sessions:
        dose = "-"
        if s.dose_mg_per_kg is not None:
            dose = f"{s.dose_mg_per_kg:g} mg/kg"
            if s.programmed_mg is not None:
                dose += f" {s.programmed_mg:.1f} mg"
        given = "-" if s.delivered_mg is None else f"{s.delivered_mg:.1f} mg"
        status = s.status + ("*" if s.id in abandoned else "")
        print(f"{s.id:>4}  {_when(s.created_us):16}  {(s.patient or '-')[:12]:12}  "
              f"{s.room[:8]:8}  {status:10}  {_duration(s.duration_s):>8}  {dose:>19}  "
              f"{given:>9}  {s.alarm_events:>6}  {s.annotations:>5}")
    for s in sessions:
        if s.lost_numerics or s.lost_wave_samples:
            print(f"! session {s.id} lacks data the recorder had to drop: {s.lost_numerics} "
                  f"numerics, {s.lost_wave_samples} wave samples")
    for sid, reason in abandoned.items():
        print(f"* session {sid} was left open: {reason} (run `kapmonitor recover`)")
    return 0
