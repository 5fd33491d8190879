"""Recorded sessions for the replay and report tests.

:func:`record_session` records through the real path (tests/ui/sim.py: a GE S/5 and a
B. Braun pump on pseudo-terminals, the transport, a LiveSession writing a SQLite file) at a
scaled clock: a baseline, the pump starting the infusion, an NIBP change, a note, a cue, an
amendment of the note, an SpO2 drop to 85 % long enough for a high-priority alarm that is
acknowledged and then ends, then the session is closed.

:func:`write_session` writes a session with the store's own Recorder (no devices), for
the states a live recording does not reach in seconds: a long session, and one RECOVERED
after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import AlarmAction, AlarmEvent, AlarmKind
from kapmonitor.model import Channel, PumpRunState, PumpState, Reading, WaveChunk
from kapmonitor.store import Abandoned, Recorder, Store, recover

from .sim import start_room

SPEED = 20.0
_US = 1_000_000
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Recorded:
    db: Path
    session_id: int
    t0_us: int
    note_id: int
    amendment_id: int
    cue_id: int
    alarm_raise_us: int


def _wait(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the simulated session did not get there in time")
        time.sleep(0.01)  # polling a condition with a deadline, not a timed wait


def record_session(db: Path) -> Recorded:
    """About 2.5 minutes of session time (some 8 s of wall time at 20x)."""
    room = start_room(db, speed=SPEED)
    s = room.session
    clock = room.clock
    try:
        _wait(lambda: s.live.latest(Channel.SPO2) is not None
              and s.live.latest(Channel.NIBP_SYS) is not None and s.live.pumps)
        baseline_end = clock() + 20 * _US
        _wait(lambda: clock() >= baseline_end)
        assert room.pump is not None
        room.pump.start(clock())
        _wait(lambda: s.t0_us is not None)
        t0 = s.t0_us
        assert t0 is not None
        _wait(lambda: clock() >= t0 + 15 * _US)
        note_id = s.add_entry("observation", "Calm, eyes closd", author="RN A").result(10)
        cue_id = s.add_entry("cue", "Safe place", code="IMG-SAFE", author="Dr B").result(10)
        amend_id = s.amend_entry(note_id, text="Calm, eyes closed", author="RN A").result(10)
        room.vitals.values[Channel.NIBP_SYS] = 150.0
        room.vitals.values[Channel.NIBP_DIA] = 92.0
        _wait(lambda: clock() >= t0 + 40 * _US)
        room.vitals.values[Channel.SPO2] = 85.0
        _wait(lambda: any(a.key == "spo2.low" for a in s.alarms.active()))
        raised = next(a for a in s.alarms.active() if a.key == "spo2.low").raised_us
        _wait(lambda: clock() >= raised + 5 * _US)
        s.acknowledge("spo2.low", user="RN A")
        room.vitals.values[Channel.SPO2] = 97.0
        _wait(lambda: not any(a.key == "spo2.low" for a in s.alarms.active()))
        s.add_entry("assessment", "MOAA/S 4", code="moaa-s", value=4.0,
                    author="RN A").result(10)
        end = clock() + 20 * _US
        _wait(lambda: clock() >= end)
        s.close(author="RN A")
        sid = s.session_id
    finally:
        room.stop()
        room.store.close()
    return Recorded(db, sid, t0, note_id, amend_id, cue_id, raised)


@dataclass(frozen=True)
class Written:
    session_id: int
    t0_us: int
    end_us: int


def write_session(store: Store, *, minutes: float = 30.0, baseline_min: float = 10.0,
                  status: str = "closed", pleth: bool = True, notes_every_min: float = 5.0,
                  patient: str = "KAP-LONG-1", demo: bool = True,
                  monitor_gap_min: tuple[float, float] | None = None) -> Written:
    """A session written with the Recorder: ``baseline_min`` of baseline, then ``minutes``
    of infusion at 1 Hz (HR, SpO2, RR, EtCO2, Temp), NIBP every 5 min, a pump with the
    delivered dose and a Cp estimate, pleth at 125 Hz in 32-sample chunks, a note every
    ``notes_every_min`` and an SpO2 alarm raised and cleared; closed, left open, or
    recovered as after a crash. ``monitor_gap_min``: (from, to) minutes after t0 in which
    the monitor sent nothing (a pulled cable)."""
    start = T0 - int(baseline_min * 60 * _US)
    sid = store.create_session(patient=patient, room="4", clinicians="RN C, Dr D",
                               protocol="KAP 0.5 mg/kg / 40 min", demo=demo, weight_kg=80.0,
                               dose_mg_per_kg=0.5, duration_min=40.0,
                               concentration_mg_ml=1.0, t_us=start, owned=False)
    store.add_device(sid, "monitor", "ge-s5", "/dev/null", t_us=start)
    store.add_device(sid, "pump", "bbraun-bcc", "/dev/null", t_us=start)
    store.add_annotation(sid, "phase", "Baseline", code="baseline", t_us=start,
                         author="kapmonitor")
    store.set_infusion_start(sid, T0, T0)
    store.add_annotation(sid, "phase", "Infusion", code="infusion", t_us=T0, author="pump")
    rec = Recorder(store, sid).start()
    end = T0 + int(minutes * 60 * _US)
    rng = np.random.default_rng(1)
    rate = 60.0
    t = start
    block = 600 * _US
    while t < end:
        stop = min(end, t + block)
        secs = np.arange(t, stop, _US)
        msgs: list = []
        for ts in secs:
            m = (ts - T0) / 60e6
            if monitor_gap_min is not None and monitor_gap_min[0] <= m < monitor_gap_min[1]:
                continue
            hr = 72 + (10 if m > 5 else 0) + rng.normal(0, 1)
            spo2 = 85.0 if 12 <= m < 12.5 else 97.0 + rng.normal(0, 0.3)
            msgs += [Reading(Channel.HR, round(hr), int(ts), "monitor"),
                     Reading(Channel.SPO2, round(spo2), int(ts), "monitor"),
                     Reading(Channel.RR, 14.0, int(ts), "monitor"),
                     Reading(Channel.ETCO2, 36.0, int(ts), "monitor"),
                     Reading(Channel.TEMP, 36.7, int(ts), "monitor")]
            if (ts - start) % (300 * _US) == 0:
                msgs += [Reading(Channel.NIBP_SYS, 125.0 + max(0.0, m), int(ts), "monitor"),
                         Reading(Channel.NIBP_DIA, 80.0, int(ts), "monitor"),
                         Reading(Channel.NIBP_MEAN, 95.0, int(ts), "monitor")]
            if ts >= T0 and (ts - T0) % (10 * _US) == 0:
                ml = rate * (ts - T0) / 3.6e9
                msgs += [PumpState(int(ts), PumpRunState.RUNNING, rate, ml, 40.0 - ml,
                                   drug="ketamine", concentration_mg_ml=1.0, infusion_id=1,
                                   source="pump"),
                         Reading(Channel.DELIVERED_DOSE, ml, int(ts), "dose"),
                         Reading(Channel.PLASMA_ESTIMATE, min(300.0, m * 12), int(ts), "pk")]
        if pleth:
            n = int((stop - t) / _US * 125)
            k = np.arange(n)
            wave = np.sin(2 * np.pi * k / 100).astype(np.float32)
            for c in range(0, n, 32):
                msgs.append(WaveChunk(Channel.PLETH, t + round(c * 8000), 125.0,
                                      wave[c:c + 32], "monitor"))
        rec(msgs)
        t = stop
    for n, (dt, action, msg, user) in enumerate((
            (12 * 60 + 10, AlarmAction.RAISE, "SpO2 LOW 85 % (< 88)", ""),
            (12 * 60 + 20, AlarmAction.ACKNOWLEDGE,
             "SpO2 LOW 85 % (< 88): acknowledged by RN C", "RN C"),
            (12 * 60 + 31, AlarmAction.CLEAR, "SpO2 back to 97 %", ""))):
        rec.record_alarm(AlarmEvent(n + 1, "spo2.low", Channel.SPO2, AlarmKind.PHYSIOLOGICAL,
                                    Priority.HIGH, action, T0 + dt * _US, 85.0, 88.0, msg,
                                    user=user))
    rec.stop(timeout=120)
    k = 0
    m = notes_every_min
    while m < minutes:
        store.add_annotation(sid, "observation", f"Note {k + 1}: settled, breathing easily",
                             t_us=T0 + int(m * 60 * _US), author="RN C")
        k += 1
        m += notes_every_min
    first = store.add_annotation(sid, "observation", "Nausea, mild", t_us=T0 + 3 * 60 * _US,
                                 author="RN C")
    store.amend_annotation(first, text="Nausea, mild; settled with reassurance",
                           author="RN C")
    if status == "closed":
        store.close_session(sid, end)
    elif status == "recovered":
        recover(store, Abandoned(sid, "recording process 999999 is no longer running",
                                 end - _US), now=end + _US)
    return Written(sid, T0, end)
