"""The real data path for UI tests: protocol peers on pseudo-terminals, the transport, a
LiveSession on a SQLite file, at a scaled clock (like tests/core/test_session.py).

A GE S/5 peer gives HR, SpO2, NIBP, RR, EtCO2, Temp and the pleth/CO2 waves; a B. Braun
peer gives the pump. The values are scripted (``ScriptedVitals``), so a test states what
must appear on the screen and can change it mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kapmonitor.drivers.devices.bbraun import BBraunHost
from kapmonitor.drivers.devices.ge_s5 import GeS5Host
from kapmonitor.drivers.sim.clock import ScaledClock
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.ge_s5 import GeS5Peer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import Store

SPEED = 10.0

BASELINE = {
    Channel.HR: 72.0, Channel.SPO2: 97.0, Channel.NIBP_SYS: 128.0, Channel.NIBP_DIA: 78.0,
    Channel.NIBP_MEAN: 95.0, Channel.RR: 14.0, Channel.ETCO2: 36.0, Channel.TEMP: 36.7,
}


@dataclass
class SimRoom:
    store: Store
    session: LiveSession
    clock: ScaledClock
    vitals: ScriptedVitals
    pump: ProgrammedPump | None
    servers: list[PtyServer] = field(default_factory=list)

    def stop(self) -> None:
        """Close the session if still open (a test may have abandoned it), stop peers."""
        try:
            if not self.session.closed:
                self.session.close(author="test")
        finally:
            for s in self.servers:
                s.stop()


def start_room(db_path: Path, *, speed: float = SPEED, pump: bool = True,
               values: dict[Channel, float] | None = None,
               config: SessionConfig | None = None) -> SimRoom:
    clock = ScaledClock(speed)
    store = Store.open(str(db_path))
    vitals = ScriptedVitals(values=dict(values or BASELINE), period=50, amplitude=1.0)
    monitor = PtyServer(GeS5Peer(vitals), clock=clock, name="monitor").start()
    servers = [monitor]
    cfg = config or SessionConfig(patient="KAP-UI-1", room="3", clinicians="RN A, Dr B",
                                  weight_kg=70.0, dose_mg_per_kg=0.5, duration_min=40,
                                  concentration_mg_ml=1.0, demo=True)
    session = LiveSession(store, cfg, clock=clock).start()
    room = SimRoom(store, session, clock, vitals, None, servers)
    try:
        session.attach("monitor", DeviceRunner(monitor.url, GeS5Host("monitor"),
                                               session.bus.publish, clock=clock),
                       protocol="ge-s5", port=monitor.url)
        if pump:
            prog = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
            pserver = PtyServer(BBraunPeer(prog), clock=clock, name="pump").start()
            servers.append(pserver)
            room.pump = prog
            session.attach("pump", DeviceRunner(pserver.url, BBraunHost("pump"),
                                                session.bus.publish, clock=clock),
                           protocol="bbraun-bcc", port=pserver.url)
    except BaseException:
        room.stop()
        store.close()
        raise
    return room
