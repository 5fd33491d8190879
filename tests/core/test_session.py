"""The live session through the real path: a protocol peer on a pseudo-terminal, the
transport, the bus, the alarm engine, the recorder, a real SQLite file. Time runs 10x
faster (the simulator's --speed) on one clock shared by the peer and the session."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from kapmonitor.drivers.devices.bbraun import BBraunHost
from kapmonitor.drivers.devices.masimo import MasimoHost
from kapmonitor.drivers.sim.clock import ScaledClock
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.masimo import MasimoPeer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel
from kapmonitor.session import LiveSession, Phase, SessionConfig
from kapmonitor.store import SessionReader, Store

SPEED = 10.0


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)  # polling a condition with a deadline, not a timed wait


@pytest.fixture
def store(db_path: Path):
    s = Store.open(str(db_path))
    yield s
    s.close()


def test_desaturation_on_the_wire_becomes_alarm_events_in_the_file(store: Store,
                                                                    db_path: Path) -> None:
    clock = ScaledClock(SPEED)
    vitals = ScriptedVitals(values={Channel.SPO2: 97.0, Channel.PULSE: 72.0,
                                    Channel.PERF_INDEX: 2.0})
    server = PtyServer(MasimoPeer(vitals), clock=clock, name="masimo").start()
    session = LiveSession(store, SessionConfig(patient="KAP-9", room="2", weight_kg=70.0),
                          clock=clock).start()
    try:
        runner = DeviceRunner(server.url, MasimoHost("oximeter"), session.bus.publish,
                              clock=clock)
        session.attach("oximeter", runner, protocol="masimo", port=server.url)
        wait_until(lambda: session.live.latest(Channel.SPO2) is not None)
        session.mark_infusion_start(author="RN A")
        t0 = session.t0_us
        vitals.values[Channel.SPO2] = 85.0  # below the high-priority limit (< 88 %)
        drop_us = clock()
        wait_until(lambda: any(a.key == "spo2.low" for a in session.alarms.active()))
        active = next(a for a in session.alarms.active() if a.key == "spo2.low")
        assert active.priority.value == "high"
        session.acknowledge("spo2.low", user="RN A")
        vitals.values[Channel.SPO2] = 96.0
        wait_until(lambda: not any(a.key == "spo2.low" and a.present
                                   for a in session.alarms.active()))
    finally:
        session.close(author="RN A")
        server.stop()

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT action, priority, t_us, value, user FROM alarm_event "
            "WHERE condition='spo2.low' ORDER BY id").fetchall()
    actions = [r[0] for r in rows]
    assert actions[0] == "raise"
    assert "acknowledge" in actions
    assert actions[-1] == "clear"
    raise_t = rows[0][2]
    # raised after the 10 s condition delay (clinical.md §5.3), in session time, within the
    # 1 s line period of the oximeter and the scheduling slack of a 10x clock
    delay_s = (raise_t - drop_us) / 1e6
    assert 10.0 <= delay_s <= 13.0
    assert (raise_t - t0) / 1e6 == pytest.approx(delay_s + (drop_us - t0) / 1e6)
    assert rows[0][3] == 85.0
    assert next(r for r in rows if r[0] == "acknowledge")[4] == "RN A"
    reader = SessionReader(store.engine, session.session_id)
    assert reader.session()["status"] == "closed"
    assert reader.session()["t0_us"] == t0
    phases = [e.code for e in reader.entries() if e.kind == "phase"]
    assert phases == ["baseline", "infusion", "closed"]
    assert len(reader.numeric(Channel.SPO2)) > 10


def test_pump_start_sets_t0_and_dose_and_plasma_estimate_flow(store: Store) -> None:
    clock = ScaledClock(SPEED)
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    server = PtyServer(BBraunPeer(pump), clock=clock, name="pump").start()
    config = SessionConfig(patient="KAP-10", weight_kg=70.0, dose_mg_per_kg=0.5,
                           duration_min=40, concentration_mg_ml=1.0)
    session = LiveSession(store, config, clock=clock).start()
    try:
        session.attach("pump", DeviceRunner(server.url, BBraunHost("pump"), session.bus.publish,
                                            clock=clock), protocol="bbraun-bcc")
        wait_until(lambda: session.live.pumps)  # connected, pump stopped
        assert session.t0_us is None
        pump.start(clock())
        wait_until(lambda: session.t0_us is not None)
        assert session.phase is Phase.INFUSION
        wait_until(lambda: session.live.latest(Channel.PLASMA_ESTIMATE) is not None
                   and (session.last_dose is not None and session.last_dose.delivered_mg))
        assert session.plasma_now() > 0
    finally:
        session.close()
        server.stop()


def test_manual_start_then_pump_start_moves_t0_when_accepted(store: Store,
                                                              db_path: Path) -> None:
    """Issue 13 item 1: "Start infusion" pressed while the pump was stopped made that moment
    t0 for good. The pump's first delivery is offered instead; accepted, it becomes t0 in
    the record (the manual entry kept, amended), so every session time is right."""
    clock = ScaledClock(60.0)
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    server = PtyServer(BBraunPeer(pump), clock=clock, name="pump").start()
    config = SessionConfig(patient="KAP-11", weight_kg=70.0, dose_mg_per_kg=0.5,
                           duration_min=40, concentration_mg_ml=1.0)
    session = LiveSession(store, config, clock=clock).start()
    proposals: list[int] = []
    session.on_t0_proposal(proposals.append)
    try:
        session.attach("pump", DeviceRunner(server.url, BBraunHost("pump"), session.bus.publish,
                                            clock=clock), protocol="bbraun-bcc")
        wait_until(lambda: session.live.pumps)
        assert session.pump_running() is False
        session.mark_infusion_start(author="RN A")
        manual = session.t0_us
        wait_until(lambda: clock() > manual + 9.5 * 60e6)
        pump.start(clock())
        wait_until(lambda: proposals)
        assert session.t0_us == manual  # nothing moves without the nurse
        assert session.t0_proposal_us == proposals[0] > manual + 9.5 * 60e6
        moved = session.accept_pump_t0(author="RN A")
        moved.result(timeout=30)
        assert session.t0_us == proposals[0]
        wait_until(lambda: session.last_dose is not None and session.last_dose.delivered_mg)
        assert session.session_time_s() < 120  # T+ counts from the pump, not 9.5 min early
    finally:
        session.close()
        server.stop()
    with sqlite3.connect(db_path) as conn:
        (t0,) = conn.execute("SELECT t0_us FROM session").fetchone()
        entries = conn.execute("SELECT id, t_us, amends_id, author FROM annotation WHERE "
                               "kind='phase' AND code='infusion' ORDER BY id").fetchall()
        audit_t0 = [p for (p,) in conn.execute(
            "SELECT payload FROM audit WHERE table_name='session' ORDER BY id")]
    assert t0 == proposals[0]
    (first_id, first_t, first_amends, _), (_, second_t, second_amends, who) = entries
    assert (first_t, first_amends) == (manual, None)  # the manual entry is kept
    assert (second_t, second_amends, who) == (proposals[0], first_id, "RN A")
    assert any(f'"t0_us":{manual}' in p for p in audit_t0)  # the audit keeps the old t0


def test_keeping_the_manual_start_needs_a_reason(store: Store, db_path: Path) -> None:
    session = LiveSession(store, SessionConfig(patient="KAP-11b")).start()
    try:
        session.mark_infusion_start(author="RN A")
        with pytest.raises(ValueError, match="why"):
            session.keep_manual_t0("  ")
        session.keep_manual_t0("IM dose given by hand; pump only for fluids",
                               author="RN A").result(timeout=30)
    finally:
        session.close()
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT code, text FROM annotation WHERE kind='observation'")
        (code, text), = rows.fetchall()
    assert code == "t0-kept-manual" and "IM dose given by hand" in text


def test_phase_changes_that_contradict_the_room_ask_and_can_be_undone(store: Store,
                                                                       db_path: Path) -> None:
    """Issue 13 item 3: End infusion -> Recovery -> Discharge ready went through in 32 s while
    the pump ran, with no undo and no discharge assessment."""
    from kapmonitor.model import PumpRunState, PumpState
    from kapmonitor.session import PhaseNeedsConfirmation

    clock = ScaledClock(SPEED)
    config = SessionConfig(patient="KAP-3", weight_kg=70.0, concentration_mg_ml=1.0)
    session = LiveSession(store, config, clock=clock).start()
    try:
        session.bus.publish([PumpState(clock(), PumpRunState.RUNNING, rate_ml_h=52.5,
                                       volume_infused_ml=0.0, source="pump")])
        assert session.t0_us is not None  # the pump started the infusion
        with pytest.raises(PhaseNeedsConfirmation, match=r"still reports delivery at 52\.5"):
            session.set_phase(Phase.EMERGENCE, author="RN A")
        assert session.phase is Phase.INFUSION
        session.set_phase(Phase.EMERGENCE, author="RN A", confirmed=True)
        session.undo_phase(author="RN A").result(timeout=30)
        assert session.phase is Phase.INFUSION and session.infusion_end_us is None
        session.bus.publish([PumpState(clock(), PumpRunState.COMPLETE, rate_ml_h=0.0,
                                       volume_infused_ml=35.0, source="pump")])
        assert session.phase is Phase.EMERGENCE  # the pump's own end needs nobody
        session.set_phase(Phase.RECOVERY, author="RN A")
        checks = session.phase_checks(Phase.DISCHARGE_READY)
        assert [c.needs_reason for c in checks] == [False, True]  # observation, assessment
        assert session.observation_remaining_s() > 59 * 60
        with pytest.raises(ValueError, match="say why"):
            session.set_phase(Phase.DISCHARGE_READY, confirmed=True)
        session.add_entry("assessment", "Aldrete 9", code="aldrete", value=9.0)
        assert [c.needs_reason for c in session.phase_checks(Phase.DISCHARGE_READY)] == [False]
        session.set_phase(Phase.DISCHARGE_READY, author="RN A", confirmed=True,
                          reason="escort waiting")
    finally:
        session.close()
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT id, code, text, amends_id FROM annotation WHERE "
                            "kind='phase' ORDER BY id").fetchall()
    codes = [(code, amends is not None) for _, code, _, amends in rows]
    assert codes == [("baseline", False), ("infusion", False), ("emergence", False),
                     ("infusion", True), ("emergence", False), ("recovery", False),
                     ("discharge-ready", False), ("closed", False)]
    first_end = rows[2]
    assert "confirmed although the pump still reports delivery" in first_end[2]
    assert rows[3][3] == first_end[0] and "undone" in rows[3][2]  # the undo points at it
    assert "reason: escort waiting" in rows[6][2] and "minimum observation" in rows[6][2]
