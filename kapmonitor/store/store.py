"""Clinical writes and session bookkeeping, each in one transaction with its audit row.

The ``Store`` is the only way the app writes metadata: creating and closing sessions,
marking the infusion start, adding and amending annotations. Every such write appends to
the audit hash chain in the same transaction, so a row and its audit record commit or fail
together. Nothing here deletes or rewrites clinical content: ``amend_annotation`` adds a
new row pointing at the one it corrects, and closing a session only fills in its end.
High-rate data (samples, alarm, pump and device events) goes through the ``Recorder``.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select

from kapmonitor.model import Channel, now_us

from . import audit
from .engine import open_engine
from .errors import StoreError
from .schema import (
    AlarmEventRow,
    AnnotationRow,
    Base,
    DataLossRow,
    DeviceRow,
    PatientRow,
    SessionRow,
    numeric_table,
    wave_table,
)

__all__ = ["ANNOTATION_KINDS", "SessionInfo", "Store", "StoreError"]

#: observation, cue, assessment and phase come from the people in the room; gap is written
#: by the app when it closes a session that a crash left open.
ANNOTATION_KINDS = frozenset({"observation", "cue", "assessment", "phase", "gap"})
SESSION_STATUSES = frozenset({"open", "closed", "recovered"})
#: Shorter uid prefixes are refused: they match by chance (``kapmonitor sessions`` shows 8).
MIN_UID_PREFIX = 4


def _tbl(cls: type[Base]) -> Table:
    return cls.__table__  # type: ignore[return-value]


def insert_audited(conn: Connection, table: Table, values: Mapping[str, Any], t_us: int) -> int:
    """Insert one row and its audit record; return the new id."""
    rid = conn.execute(table.insert().values(**values)).inserted_primary_key[0]
    row = conn.execute(select(table).where(table.c.id == rid)).mappings().one()
    audit.append(conn, table.name, rid, "insert", t_us, audit.row_payload(table.name, dict(row)))
    return int(rid)


def update_audited(conn: Connection, table: Table, row_id: int, values: Mapping[str, Any],
                   t_us: int) -> None:
    conn.execute(table.update().where(table.c.id == row_id).values(**values))
    row = conn.execute(select(table).where(table.c.id == row_id)).mappings().one()
    audit.append(conn, table.name, row_id, "update", t_us,
                 audit.row_payload(table.name, dict(row)))


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as listed by ``kapmonitor sessions``."""

    id: int
    uid: str
    patient: str | None
    room: str
    status: str
    created_us: int
    t0_us: int | None
    closed_us: int | None
    last_data_us: int | None
    weight_kg: float | None
    dose_mg_per_kg: float | None
    duration_min: float | None
    concentration_mg_ml: float | None
    demo: bool
    annotations: int
    alarm_events: int
    alarm_limits: dict[str, Any]
    #: the last delivered-dose value recorded (mg), from pump telemetry; None if none
    delivered_mg: float | None = None
    #: rows the recorder had to drop (data_loss): numerics and wave samples
    lost_numerics: int = 0
    lost_wave_samples: int = 0

    @property
    def duration_s(self) -> float | None:
        end = self.closed_us or self.last_data_us
        return None if end is None else (end - self.created_us) / 1e6

    @property
    def programmed_mg(self) -> float | None:
        """The programmed dose in mg (mg/kg x weight), when both are known."""
        if self.dose_mg_per_kg is None or self.weight_kg is None:
            return None
        return self.dose_mg_per_kg * self.weight_kg

    def as_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["duration_s"] = self.duration_s
        d["programmed_mg"] = self.programmed_mg
        return d


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, db: str | None = None, *, create: bool = True, check: bool = True) -> Store:
        """Open (and migrate) the database named by ``--db``/``$KAPMONITOR_DB``/default.

        ``create=False`` is for commands that only read: a missing file raises
        ``DatabaseMissing`` instead of becoming an empty database. ``check`` runs SQLite's
        quick check first and raises ``DatabaseDamaged`` on a damaged file."""
        return cls(open_engine(db, create=create, check=check))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's transaction when it gives one (the recorder runs clinical writes
        inside its own), else a new one."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as c:
            yield c

    # -- sessions -------------------------------------------------------------------------

    def _patient_id(self, conn: Connection, pseudonym: str, t_us: int) -> int:
        pid = conn.execute(
            select(PatientRow.id).where(PatientRow.pseudonym == pseudonym)
        ).scalar()
        if pid is not None:
            return int(pid)
        return insert_audited(conn, _tbl(PatientRow),
                              {"pseudonym": pseudonym, "created_us": t_us}, t_us)

    def create_session(self, *, patient: str | None = None, room: str = "",
                       clinicians: str = "", protocol: str = "", demo: bool = False,
                       alarm_limits: Mapping[str, Any] | None = None,
                       t_us: int | None = None, owned: bool = True,
                       **programme: Any) -> int:
        """Open a session. ``programme`` takes the SessionRow programme columns (weight_kg,
        dose_mg_per_kg, duration_min, concentration_mg_ml, bag_ml, route, drug, ...).
        ``owned`` records this process as the recorder, for crash recovery."""
        t_us = t_us if t_us is not None else now_us()
        allowed = {c.name for c in _tbl(SessionRow).columns}
        unknown = set(programme) - allowed
        if unknown:
            raise StoreError(f"unknown session fields: {', '.join(sorted(unknown))}")
        with self.engine.begin() as conn:
            values: dict[str, Any] = {
                "uid": str(uuid.uuid4()),
                "room": room,
                "clinicians": clinicians,
                "protocol": protocol,
                "demo": int(demo),
                "alarm_limits": json.dumps(dict(alarm_limits or {}), sort_keys=True),
                "created_us": t_us,
                "status": "open",
                **programme,
            }
            if patient:
                values["patient_id"] = self._patient_id(conn, patient, t_us)
            if owned:
                values.update(owner_host=socket.gethostname(), owner_pid=os.getpid(),
                              heartbeat_us=t_us)
            return insert_audited(conn, _tbl(SessionRow), values, t_us)

    def session_row(self, session: int | str) -> SessionRow:
        """A session by id or uid (or uid prefix of at least ``MIN_UID_PREFIX`` characters),
        detached from the database. A number is an id first; when no session has that id
        a long enough one is tried as a uid prefix (an 8-digit prefix like ``42279470`` is
        all digits in about 2 % of uids), but ``99`` never silently means some uid."""
        from sqlalchemy.orm import Session as OrmSession

        with OrmSession(self.engine, expire_on_commit=False) as s:
            row = None
            if isinstance(session, int) or str(session).isdigit():
                row = s.get(SessionRow, int(session))
            if row is None and not isinstance(session, int) and len(session) >= MIN_UID_PREFIX:
                rows = s.scalars(
                    select(SessionRow).where(SessionRow.uid.like(f"{session}%"))
                ).all()
                if len(rows) > 1:
                    raise StoreError(f"session {session!r} is ambiguous ({len(rows)} match)")
                row = rows[0] if rows else None
            if row is None:
                raise StoreError(f"no session {session!r}")
            s.expunge(row)
            return row

    def set_infusion_start(self, session_id: int, t0_us: int, t_us: int | None = None, *,
                           conn: Connection | None = None) -> None:
        """Mark t0 (from the pump starting, or by hand). A later correction is allowed and
        audited: the audit keeps every earlier value."""
        with self._tx(conn) as c:
            update_audited(c, _tbl(SessionRow), session_id, {"t0_us": t0_us},
                           t_us if t_us is not None else now_us())

    def set_alarm_limits(self, session_id: int, limits: Mapping[str, Any],
                         t_us: int | None = None) -> None:
        with self.engine.begin() as conn:
            update_audited(conn, _tbl(SessionRow), session_id,
                           {"alarm_limits": json.dumps(dict(limits), sort_keys=True)},
                           t_us if t_us is not None else now_us())

    def close_session(self, session_id: int, t_us: int | None = None,
                      status: str = "closed", *, conn: Connection | None = None) -> None:
        if status not in ("closed", "recovered"):
            raise StoreError(f"cannot close a session as {status!r}")
        t_us = t_us if t_us is not None else now_us()
        with self._tx(conn) as conn:
            current = conn.execute(
                select(SessionRow.status).where(SessionRow.id == session_id)
            ).scalar()
            if current is None:
                raise StoreError(f"no session {session_id}")
            if current != "open":
                raise StoreError(f"session {session_id} is already {current}")
            update_audited(conn, _tbl(SessionRow), session_id,
                           {"closed_us": t_us, "status": status}, t_us)
            conn.execute(_tbl(SessionRow).update().where(SessionRow.id == session_id)
                         .values(owner_pid=None))

    def claim_session(self, session_id: int, t_us: int | None = None) -> None:
        """This process records the session from now on (a resume): the ownership columns
        are operational, not clinical, so this is not audited (audit.UNAUDITED)."""
        t_us = t_us if t_us is not None else now_us()
        with self.engine.begin() as conn:
            status = conn.execute(select(SessionRow.status).where(
                SessionRow.id == session_id)).scalar()
            if status != "open":
                raise StoreError(f"session {session_id} is {status or 'missing'}: only an "
                                 "open session can be resumed")
            conn.execute(_tbl(SessionRow).update().where(SessionRow.id == session_id).values(
                owner_host=socket.gethostname(), owner_pid=os.getpid(), heartbeat_us=t_us))

    def heartbeat(self, conn: Connection, session_id: int, t_us: int) -> None:
        conn.execute(_tbl(SessionRow).update().where(SessionRow.id == session_id)
                     .values(heartbeat_us=t_us))

    def add_device(self, session_id: int, source: str, protocol: str = "", port: str = "",
                   serial_number: str = "", t_us: int | None = None, *,
                   conn: Connection | None = None) -> int:
        t_us = t_us if t_us is not None else now_us()
        with self._tx(conn) as conn:
            return insert_audited(conn, _tbl(DeviceRow), {
                "session_id": session_id, "source": source, "protocol": protocol,
                "port": port, "serial_number": serial_number, "created_us": t_us}, t_us)

    def devices(self, session_id: int) -> list[tuple[str, str, str]]:
        """The session's devices as attached: (source, protocol, port), in order."""
        t = _tbl(DeviceRow)
        with self.engine.connect() as conn:
            return [(r.source, r.protocol, r.port) for r in conn.execute(
                select(t.c.source, t.c.protocol, t.c.port)
                .where(t.c.session_id == session_id).order_by(t.c.id))]

    # -- annotations -----------------------------------------------------------------------

    def add_annotation(self, session_id: int, kind: str, text: str = "", *,
                       t_us: int | None = None, author: str = "", code: str = "",
                       value: float | None = None, amends_id: int | None = None,
                       conn: Connection | None = None) -> int:
        """Add an entry at ``t_us`` (default: now). Allowed on closed sessions too: a note
        written after the fact is still a note, and its ``created_us`` says when."""
        if kind not in ANNOTATION_KINDS:
            raise StoreError(f"unknown annotation kind {kind!r}; one of "
                             f"{', '.join(sorted(ANNOTATION_KINDS))}")
        if not text.strip() and value is None and not code:
            raise StoreError("an annotation needs text, a code or a value")
        created = now_us()
        values = {"session_id": session_id, "kind": kind, "t_us": t_us or created,
                  "author": author, "text": text, "code": code, "value": value,
                  "amends_id": amends_id, "created_us": created}
        with self._tx(conn) as c:
            return self._insert_annotation(c, values, created)

    def _insert_annotation(self, conn: Connection, values: dict[str, Any], t_us: int) -> int:
        exists = conn.execute(select(SessionRow.id).where(SessionRow.id == values["session_id"]))
        if exists.scalar() is None:
            raise StoreError(f"no session {values['session_id']}")
        if values["amends_id"] is not None:
            target = conn.execute(select(AnnotationRow).where(
                AnnotationRow.id == values["amends_id"])).mappings().first()
            if target is None or target["session_id"] != values["session_id"]:
                raise StoreError(f"annotation {values['amends_id']} is not in this session")
        return insert_audited(conn, _tbl(AnnotationRow), values, t_us)

    def amend_annotation(self, annotation_id: int, *, text: str | None = None,
                         value: float | None = None, author: str = "",
                         t_us: int | None = None, code: str | None = None,
                         conn: Connection | None = None) -> int:
        """Correct an entry: a new row that points at ``annotation_id``; the original
        stays. Fields not given are carried over from the entry being corrected."""
        with self._tx(conn) as conn:
            old = conn.execute(select(_tbl(AnnotationRow)).where(
                AnnotationRow.id == annotation_id)).mappings().first()
            if old is None:
                raise StoreError(f"no annotation {annotation_id}")
            return self.add_annotation(
                old["session_id"], old["kind"], old["text"] if text is None else text,
                t_us=old["t_us"] if t_us is None else t_us, author=author or old["author"],
                code=old["code"] if code is None else code,
                value=old["value"] if value is None else value,
                amends_id=annotation_id, conn=conn)

    # -- listing ---------------------------------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        s, p = _tbl(SessionRow), _tbl(PatientRow)
        n_ann = (select(func.count()).select_from(_tbl(AnnotationRow))
                 .where(AnnotationRow.session_id == s.c.id).scalar_subquery())
        n_alarm = (select(func.count()).select_from(_tbl(AlarmEventRow))
                   .where(AlarmEventRow.session_id == s.c.id,
                          # AlarmAction.RAISE (alarms.py) is stored as "raise"
                          AlarmEventRow.action == "raise").scalar_subquery())
        last_num = (select(func.max(numeric_table.c.t_us))
                    .where(numeric_table.c.session_id == s.c.id).scalar_subquery())
        last_wave = (select(func.max(wave_table.c.t_us))
                     .where(wave_table.c.session_id == s.c.id).scalar_subquery())
        delivered = (select(numeric_table.c.value)
                     .where(numeric_table.c.session_id == s.c.id,
                            numeric_table.c.channel == Channel.DELIVERED_DOSE.value)
                     .order_by(numeric_table.c.t_us.desc()).limit(1).scalar_subquery())
        loss = _tbl(DataLossRow)

        def lost(kind: str, col: str) -> Any:
            return (select(func.coalesce(func.sum(loss.c[col]), 0))
                    .where(loss.c.session_id == s.c.id, loss.c.kind == kind)
                    .scalar_subquery())

        q = (select(s, p.c.pseudonym, n_ann.label("n_ann"), n_alarm.label("n_alarm"),
                    last_num.label("last_num"), last_wave.label("last_wave"),
                    delivered.label("delivered"), lost("numeric", "rows").label("lost_n"),
                    lost("wave", "samples").label("lost_w"))
             .outerjoin(p, s.c.patient_id == p.c.id).order_by(s.c.id))
        out = []
        with self.engine.connect() as conn:
            for r in conn.execute(q).mappings():
                last = max((x for x in (r["last_num"], r["last_wave"]) if x is not None),
                           default=None)
                out.append(SessionInfo(
                    id=r["id"], uid=r["uid"], patient=r["pseudonym"], room=r["room"],
                    status=r["status"], created_us=r["created_us"], t0_us=r["t0_us"],
                    closed_us=r["closed_us"], last_data_us=last, weight_kg=r["weight_kg"],
                    dose_mg_per_kg=r["dose_mg_per_kg"], duration_min=r["duration_min"],
                    concentration_mg_ml=r["concentration_mg_ml"], demo=bool(r["demo"]),
                    annotations=r["n_ann"], alarm_events=r["n_alarm"],
                    alarm_limits=json.loads(r["alarm_limits"] or "{}"),
                    delivered_mg=r["delivered"], lost_numerics=int(r["lost_n"]),
                    lost_wave_samples=int(r["lost_w"])))
        return out
