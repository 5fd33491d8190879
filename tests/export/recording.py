"""A real session for the export tests, recorded the way the app records one.

Simulated devices speak their real protocols on pseudo-terminals (an IntelliVue monitor
with numerics and ECG/pleth/CO2 waves, a B. Braun pump at the rate of 0.5 mg/kg over 40 min
for a 70-kg patient), the transport, bus, alarm engine and recorder write a real SQLite file, and
time runs ``SPEED`` times faster on one clock shared by peers and session (as
tests/core/test_session.py does). Along the way the script changes NIBP (two
measurements), drops SpO2 below the high-priority limit long enough to raise an alarm, adds
an observation, a cue and an assessment, amends the observation, and adds a note through
``kapmonitor note`` as a clinician at another terminal would; the pump reaches its VTBI
(so the infusion completes) before the session closes.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kapmonitor.cli import main as cli_main
from kapmonitor.drivers.devices.bbraun import BBraunHost
from kapmonitor.drivers.devices.intellivue import IntellivueHost
from kapmonitor.drivers.sim.clock import ScaledClock
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.intellivue import IntellivuePeer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import Store

SPEED = 30.0
VITALS = {Channel.HR: 64.0, Channel.PULSE: 64.0, Channel.SPO2: 98.0, Channel.RR: 12.0,
          Channel.ETCO2: 36.0, Channel.TEMP: 36.6, Channel.NIBP_SYS: 118.0,
          Channel.NIBP_DIA: 76.0, Channel.NIBP_MEAN: 90.0}


@dataclass(frozen=True)
class Recorded:
    db: Path
    session_id: int
    observation_id: int
    amendment_id: int
    cli_note_id: int


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the simulated session did not get there in time")
        time.sleep(0.01)  # polling a condition with a deadline, not a timed wait


def record_session(db: Path, *, sim_seconds: float = 80.0) -> Recorded:
    """Record about ``sim_seconds`` of simulated time into ``db`` and close the session."""
    clock = ScaledClock(SPEED)
    vitals = ScriptedVitals(values=dict(VITALS), period=100, amplitude=1.0, step=0.001)
    # 52.5 mL/h as for 35 mg over 40 min, but a VTBI of 0.8 mL so the infusion completes
    # within the recording (about 55 s after the pump starts)
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=0.8, concentration_mg_ml=1.0)
    monitor = PtyServer(IntellivuePeer(vitals), clock=clock, name="intellivue").start()
    pumpsrv = PtyServer(BBraunPeer(pump), clock=clock, name="bbraun").start()
    store = Store.open(str(db))
    config = SessionConfig(patient="KAP-EXP-1", room="3", weight_kg=70.0, dose_mg_per_kg=0.5,
                           duration_min=40.0, concentration_mg_ml=1.0)
    session = LiveSession(store, config, clock=clock).start()
    try:
        session.attach("monitor", DeviceRunner(monitor.url, IntellivueHost("monitor"),
                                               session.bus.publish, clock=clock),
                       protocol="intellivue", port=monitor.url)
        session.attach("pump", DeviceRunner(pumpsrv.url, BBraunHost("pump"),
                                            session.bus.publish, clock=clock),
                       protocol="bbraun-bcc", port=pumpsrv.url)
        _wait(lambda: session.live.latest(Channel.SPO2) is not None and session.live.pumps)
        start = clock()

        def at(seconds: float) -> None:
            _wait(lambda: clock() >= start + seconds * 1e6)

        at(5)
        pump.start(clock())
        _wait(lambda: session.t0_us is not None)
        at(15)
        obs = session.add_entry("observation", "Calm, eyes closed", author="RN A").result()
        session.add_entry("cue", "Safe place", code="IMG-SAFE", author="Dr B").result()
        at(25)
        vitals.values[Channel.NIBP_SYS] = 134.0  # a second NIBP measurement
        vitals.values[Channel.NIBP_DIA] = 84.0
        vitals.values[Channel.NIBP_MEAN] = 101.0
        vitals.values[Channel.SPO2] = 85.0  # below the high-priority limit (< 88 %)
        _wait(lambda: any(a.key == "spo2.low" for a in session.alarms.active()))
        session.acknowledge("spo2.low", user="RN A")
        vitals.values[Channel.SPO2] = 97.0
        amend = session.amend_entry(obs, text="Calm, eyes closed, slow breathing",
                                    author="RN A").result()
        session.add_entry("assessment", "Nausea NRS 2/10", code="nausea-nrs", value=2.0,
                          author="RN A").result()
        # a note from another terminal, through the command line, into the same file
        note_id = _cli_note(db, session.session_id, clock())
        at(sim_seconds)
    finally:
        session.close(author="RN A")
        monitor.stop()
        pumpsrv.stop()
        store.close()
    return Recorded(db, session.session_id, obs, amend, note_id)


def _cli_note(db: Path, session_id: int, t_us: int) -> int:
    out = io.StringIO()
    at = datetime.fromtimestamp(t_us / 1e6, UTC).isoformat()
    with contextlib.redirect_stdout(out):
        rc = cli_main(["note", str(session_id), "Patient says: floating feeling",
                       "--author", "Dr B", "--at", at, "--json", "--db", str(db)])
    assert rc == 0, out.getvalue()
    return int(json.loads(out.getvalue())["id"])
