"""Crash recovery: a session whose recording process died is closed, never deleted.

A session records which process owns it (host, pid) and that process refreshes a heartbeat
with every commit. On the next start, an open session whose owner is gone (same host: the
pid is not running; another host: no heartbeat for ``HEARTBEAT_TIMEOUT_S``) is closed as
*recovered*: its end is the last data it holds, and a ``gap`` annotation marks where the
record stops, so a reader sees the hole instead of a session that seems to end normally.
Everything committed before the crash stays as it was (DESIGN §3).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from kapmonitor.model import now_us

from .schema import (
    AlarmEventRow,
    DeviceEventRow,
    PumpEventRow,
    SessionRow,
    numeric_table,
    wave_table,
)
from .store import Store, update_audited

__all__ = ["HEARTBEAT_TIMEOUT_S", "Abandoned", "find_abandoned", "recover", "recover_all"]

HEARTBEAT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Abandoned:
    session_id: int
    reason: str
    last_data_us: int | None
    gap_annotation_id: int | None = None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: it records nothing any more
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _owner_gone(row: Any, now: int) -> str | None:
    age_s = (now - (row.heartbeat_us or row.created_us)) / 1e6
    if row.owner_pid is not None and row.owner_host == socket.gethostname():
        if row.owner_pid == os.getpid():
            return None
        if not _pid_running(row.owner_pid):
            return f"recording process {row.owner_pid} is no longer running"
        return None
    if age_s > HEARTBEAT_TIMEOUT_S:
        where = f" on {row.owner_host}" if row.owner_host else ""
        return f"no heartbeat from its recorder{where} for {age_s:.0f} s"
    return None


def owner_alive(row: Any, now: int | None = None) -> str | None:
    """Who still records an open session ("process 123 on host"), or None when nobody
    does: a session is resumed or recovered only when its recorder is gone."""
    now = now if now is not None else now_us()
    if row.status != "open" or _owner_gone(row, now) is not None:
        return None
    if row.owner_pid is None and not row.owner_host:
        return None
    where = f" on {row.owner_host}" if row.owner_host else ""
    return f"by process {row.owner_pid}{where}"


def _last_data_us(conn: Connection, session_id: int) -> int | None:
    candidates = [
        select(func.max(numeric_table.c.t_us)).where(numeric_table.c.session_id == session_id),
        select(func.max(wave_table.c.t_us + wave_table.c.n * 1e6 / wave_table.c.rate_hz)).where(
            wave_table.c.session_id == session_id),
        select(func.max(PumpEventRow.t_us)).where(PumpEventRow.session_id == session_id),
        select(func.max(AlarmEventRow.t_us)).where(AlarmEventRow.session_id == session_id),
        select(func.max(DeviceEventRow.t_us)).where(DeviceEventRow.session_id == session_id),
    ]
    values = [conn.execute(q).scalar() for q in candidates]
    found = [int(v) for v in values if v is not None]
    return max(found) if found else None


def find_abandoned(store: Store, now: int | None = None) -> list[Abandoned]:
    now = now if now is not None else now_us()
    out = []
    with store.engine.connect() as conn:
        table = SessionRow.__table__
        for row in conn.execute(select(table).where(table.c.status == "open")):
            reason = _owner_gone(row, now)
            if reason:
                out.append(Abandoned(row.id, reason, _last_data_us(conn, row.id)))
    return out


def recover(store: Store, abandoned: Abandoned, now: int | None = None) -> Abandoned:
    """Close one abandoned session with a gap marker at its last data."""
    now = now if now is not None else now_us()
    with store.engine.begin() as conn:
        table = SessionRow.__table__
        row = conn.execute(select(table).where(table.c.id == abandoned.session_id)).one()
        if row.status != "open":
            return abandoned
        end = abandoned.last_data_us or row.heartbeat_us or row.created_us
        gap_id = store.add_annotation(
            row.id, "gap", f"Recording interrupted: {abandoned.reason}. Data after this "
            "point is missing; the session was closed on recovery.", t_us=end,
            author="kapmonitor", code="recording-interrupted", conn=conn)
        update_audited(conn, SessionRow.__table__, row.id,  # type: ignore[arg-type]
                       {"status": "recovered", "closed_us": end}, now)
        conn.execute(SessionRow.__table__.update().where(SessionRow.id == row.id)
                     .values(owner_pid=None))
    return Abandoned(abandoned.session_id, abandoned.reason, end, gap_id)


def recover_all(store: Store) -> list[Abandoned]:
    return [recover(store, a) for a in find_abandoned(store)]

