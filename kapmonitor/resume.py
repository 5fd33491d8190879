"""What a session left open needs to go on as the same session (issue 13 item 2: resume).

After the window was closed mid-infusion or the app crashed, "recover" closes the record;
*resume* carries it on: same session id, same t0 and programme, the phase it had reached,
the devices reconnected, a gap marker over the outage, and the delivered dose and plasma
estimate continued rather than restarted from zero.

The dose and the estimate are rebuilt by replaying the stored pump events through the same
``DeliveredDoseTracker`` and ``PlasmaEstimator`` the live session uses, so the state after a
resume is exactly the state a session that never stopped would have had at its last stored
pump event. The first pump report after the outage then closes the gap by the pump's own
volume counter, spread evenly over the outage (the estimator's intervals are constant-rate):
the plasma estimate integrates the delivery it did not see, as issue 13 asks.

This module reads the store; it never writes (``LiveSession.resume`` does, through its
recorder) and never touches a device.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from .alarm_limits import AlarmLimits, LimitsError
from .model import PumpAlarm, PumpRunState, PumpState
from .phases import DischargeRules
from .store import Store, StoreError
from .store.schema import (
    AnnotationRow,
    DeviceRow,
    PatientRow,
    PumpEventRow,
    SessionRow,
    numeric_table,
    wave_table,
)

__all__ = ["ResumeState", "load_resume_state", "stored_pump_states"]


@dataclass
class ResumeState:
    """One open session as the store has it."""

    session_id: int
    uid: str
    patient: str | None
    room: str
    clinicians: str
    protocol: str
    demo: bool
    programme: dict[str, Any]
    alarm_limits: AlarmLimits | None
    t0_us: int | None
    created_us: int
    #: the phase code of the latest phase entry (amendments applied): "baseline", ...
    phase: str
    #: the last time anything was stored for the session (sample, event or heartbeat)
    last_data_us: int
    #: devices as attached before the outage: (source, protocol, port)
    devices: list[tuple[str, str, str]] = field(default_factory=list)
    #: the pump's source name whose states drove the dose, if any
    pump_source: str | None = None
    #: when the infusion ended (the current Emergence entry), for the observation countdown
    infusion_end_us: int | None = None
    #: discharge-assessment totals recorded so far (resources/discharge.toml's scale)
    discharge_scores: list[float] = field(default_factory=list)


def stored_pump_states(store: Store, session_id: int,
                       source: str | None = None) -> Iterator[PumpState]:
    """The session's pump events as ``PumpState`` again, in time order (one source when
    given). Fields the table does not keep (device time, quality) take their defaults."""
    t = PumpEventRow.__table__
    q = select(t).where(t.c.session_id == session_id)
    if source is not None:
        q = q.where(t.c.source == source)
    with store.engine.connect() as conn:
        for r in conn.execute(q.order_by(t.c.t_us, t.c.id)).mappings():
            alarms = tuple(PumpAlarm(a.get("code", ""), a.get("raw", ""), a.get("text", ""))
                           for a in json.loads(r["alarms"] or "[]"))
            yield PumpState(
                t_us=r["t_us"], state=PumpRunState(r["state"]), rate_ml_h=r["rate_ml_h"],
                volume_infused_ml=r["volume_infused_ml"], vtbi_ml=r["vtbi_ml"],
                bolus_ml=r["bolus_ml"], drug=r["drug"],
                concentration_mg_ml=r["concentration_mg_ml"], alarms=alarms,
                infusion_id=r["infusion_id"], source=r["source"])


def load_resume_state(store: Store, session_id: int) -> ResumeState:
    """Read everything ``LiveSession.resume`` needs; refuse a session that is not open."""
    s, a, d = SessionRow.__table__, AnnotationRow.__table__, DeviceRow.__table__
    with store.engine.connect() as conn:
        row = conn.execute(select(s).where(s.c.id == session_id)).mappings().first()
        if row is None:
            raise StoreError(f"no session {session_id}")
        if row["status"] != "open":
            raise StoreError(f"session {session_id} is {row['status']}: only an open session "
                             "can be resumed")
        patient = None
        if row["patient_id"] is not None:
            patient = conn.execute(select(PatientRow.pseudonym).where(
                PatientRow.id == row["patient_id"])).scalar()
        phases = conn.execute(select(a.c.id, a.c.code, a.c.amends_id, a.c.t_us).where(
            a.c.session_id == session_id, a.c.kind == "phase").order_by(a.c.id)).all()
        amended = {p.amends_id for p in phases if p.amends_id is not None}
        current = [p for p in phases if p.id not in amended]
        phase = current[-1].code if current else "baseline"
        ends = [p.t_us for p in current if p.code == "emergence"]
        scale = DischargeRules.defaults().scale
        scores = [float(v) for (v,) in conn.execute(select(a.c.value).where(
            a.c.session_id == session_id, a.c.kind == "assessment", a.c.code == scale,
            a.c.value.is_not(None)))]
        devices = [(r.source, r.protocol, r.port) for r in conn.execute(
            select(d.c.source, d.c.protocol, d.c.port).where(d.c.session_id == session_id)
            .order_by(d.c.id))]
        last = max(v for v in (
            conn.execute(select(numeric_table.c.t_us).where(
                numeric_table.c.session_id == session_id)
                .order_by(numeric_table.c.t_us.desc()).limit(1)).scalar(),
            conn.execute(select(wave_table.c.t_us).where(wave_table.c.session_id == session_id)
                         .order_by(wave_table.c.t_us.desc()).limit(1)).scalar(),
            conn.execute(select(PumpEventRow.t_us).where(PumpEventRow.session_id == session_id)
                         .order_by(PumpEventRow.t_us.desc()).limit(1)).scalar(),
            row["heartbeat_us"], row["created_us"]) if v is not None)
        pump_source = conn.execute(select(PumpEventRow.source).where(
            PumpEventRow.session_id == session_id).order_by(PumpEventRow.id).limit(1)).scalar()
    limits: AlarmLimits | None
    try:
        doc = json.loads(row["alarm_limits"] or "{}")
        limits = AlarmLimits.from_mapping(doc) if doc else None
    except (LimitsError, ValueError):
        limits = None  # the installation defaults, as a new session would have
    programme = {k: row[k] for k in ("weight_kg", "weight_basis", "dose_mg_per_kg",
                                     "duration_min", "concentration_mg_ml", "bag_ml", "route")}
    return ResumeState(
        session_id=session_id, uid=row["uid"], patient=patient, room=row["room"],
        clinicians=row["clinicians"], protocol=row["protocol"], demo=bool(row["demo"]),
        programme=programme, alarm_limits=limits, t0_us=row["t0_us"],
        created_us=row["created_us"], phase=phase,
        last_data_us=int(last), devices=devices, pump_source=pump_source,
        infusion_end_us=ends[-1] if ends else None, discharge_scores=scores)
