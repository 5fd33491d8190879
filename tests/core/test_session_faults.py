"""The session under store faults (issue 12), through the real path: protocol peers on
pseudo-terminals, the transport, the bus, the recorder, a real SQLite file, and the fault
made for real: another *process* holding SQLite's write lock, or SQLite itself answering
SQLITE_FULL ("database or disk is full") because the file may not grow.

What must hold: no database call on a device thread (a lock across the infusion start
leaves the pump read on time and t0 stored), a fault is an alarm that is stored once the
database works again, rows are kept in memory and written in order, memory is bounded
with what was dropped counted in the record, and a close during a fault reports what it
could not write instead of losing it silently."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.drivers.devices.bbraun import POLL_PERIOD_S, BBraunHost
from kapmonitor.drivers.devices.masimo import MasimoHost
from kapmonitor.drivers.sim.clock import ScaledClock
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.masimo import MasimoPeer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel, WaveChunk
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import Abandoned, Store, recover
from kapmonitor.store.faults import DiskFull

from ..conftest import run_cli

SPEED = 10.0


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.01)  # polling a condition with a deadline, not a timed wait


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(str(db_path))
    yield s
    s.close()


class LockHolder:
    """Another process holding SQLite's write lock (``BEGIN EXCLUSIVE``) for ``seconds``,
    as a `kapmonitor note`, a backup or a sync would."""

    def __init__(self, db: Path, seconds: float) -> None:
        code = ("import sqlite3, sys, time\n"
                f"c = sqlite3.connect({str(db)!r}, timeout=30, isolation_level=None)\n"
                "c.execute('BEGIN EXCLUSIVE')\n"
                "print('locked', flush=True)\n"
                f"end = time.monotonic() + {seconds}\n"
                "while time.monotonic() < end:\n"
                "    time.sleep(0.05)\n"
                "c.execute('ROLLBACK')\n"
                "print('released', flush=True)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def wait_released(self, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "released"
        self.proc.wait(timeout)
        self.proc.stdout.close()


def rows(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_write_lock_held_12s_across_the_infusion_start(store: Store, db_path: Path) -> None:
    """Issue 12 item 2: t0 came from the pump's thread and was written there; a lock held
    past the busy timeout stalled the pump (false stale/disconnected alarms, missing pump
    data) and could lose t0 for good."""
    clock = ScaledClock(SPEED)
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    server = PtyServer(BBraunPeer(pump), clock=clock, name="pump").start()
    config = SessionConfig(patient="KAP-12", weight_kg=70.0, dose_mg_per_kg=0.5,
                           duration_min=40, concentration_mg_ml=1.0)
    session = LiveSession(store, config, clock=clock).start()
    sid = session.session_id
    try:
        session.attach("pump", DeviceRunner(server.url, BBraunHost("pump"), session.bus.publish,
                                            clock=clock), protocol="bbraun-bcc")
        wait_until(lambda: session.live.pumps, what="pump connected")
        session.recorder.flush_now(30)
        lock = LockHolder(db_path, 12.0)
        locked_at = clock()
        pump.start(clock())
        wait_until(lambda: session.t0_us is not None, what="t0 from the pump")
        t0 = session.t0_us
        wait_until(lambda: any(a.key == "tech.database" for a in session.alarms.active()),
                   what="database alarm while locked")
        lock.wait_released()
        released_at = clock()
        wait_until(lambda: rows(db_path, "SELECT t0_us FROM session WHERE id=?", sid)
                   == [(t0,)], what="t0 stored")
        # two more pump polls after the lock, so a gap would show at its end too
        wait_until(lambda: clock() > released_at + 3 * POLL_PERIOD_S * 1e6, what="polls")
    finally:
        session.close()
        server.stop()

    phase = rows(db_path, "SELECT t_us, author FROM annotation WHERE session_id=? AND "
                 "kind='phase' AND code='infusion'", sid)
    assert phase == [(t0, "pump")]
    raised = [k for (k,) in rows(db_path, "SELECT condition FROM alarm_event WHERE "
                                 "session_id=? AND action='raise'", sid)]
    assert "tech.database" in raised  # stored once the lock was gone
    assert not [k for k in raised if k.startswith("tech.pump")], raised
    assert rows(db_path, "SELECT action FROM alarm_event WHERE condition='tech.database' "
                "ORDER BY id")[-1] == ("clear",)
    # the pump was read every poll period through the lock: no gap in its stored data
    times = [t for (t,) in rows(db_path, "SELECT t_us FROM numeric WHERE session_id=? AND "
                                "channel=? AND t_us BETWEEN ? AND ? ORDER BY t_us", sid,
                                Channel.VOLUME_INFUSED.value, locked_at, released_at)]
    assert len(times) >= (released_at - locked_at) / 1e6 / POLL_PERIOD_S - 2
    assert max(np.diff(times)) <= 2 * POLL_PERIOD_S * 1e6
    status = rows(db_path, "SELECT status FROM session WHERE id=?", sid)
    assert status == [("closed",)]


def _oximeter(session: LiveSession, clock: ScaledClock,
              vitals: ScriptedVitals) -> PtyServer:
    server = PtyServer(MasimoPeer(vitals), clock=clock, name="masimo").start()
    session.attach("oximeter", DeviceRunner(server.url, MasimoHost("oximeter"),
                                            session.bus.publish, clock=clock),
                   protocol="masimo", port=server.url)
    wait_until(lambda: session.live.latest(Channel.SPO2) is not None, what="oximeter")
    return server


def test_disk_full_then_freed_loses_nothing_and_stores_its_alarm(
        store: Store, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = ScaledClock(SPEED)
    vitals = ScriptedVitals(values={Channel.SPO2: 97.0, Channel.PULSE: 72.0,
                                    Channel.PERF_INDEX: 2.0})
    session = LiveSession(store, SessionConfig(patient="KAP-13"), clock=clock).start()
    sid = session.session_id
    disk = DiskFull(store.engine)
    server = None
    try:
        server = _oximeter(session, clock, vitals)
        session.recorder.flush_now(30)
        caplog.set_level(logging.WARNING, logger="kapmonitor.store.recorder")
        disk.full = True
        full_at = clock()
        wait_until(lambda: session.recorder.stats.errors >= 5, what="five failed commits")
        active = {a.key: a for a in session.alarms.active()}
        assert "the disk is full" in active["tech.database"].message
        note = session.add_entry("observation", "written while the disk was full")
        assert not note.done()  # kept, not refused
        disk.full = False
        freed_at = clock()
        assert note.result(timeout=30) > 0
        wait_until(lambda: not any(a.key == "tech.database" for a in session.alarms.active()),
                   what="alarm cleared")
        session.recorder.flush_now(30)
    finally:
        session.close()
        if server is not None:
            server.stop()
        disk.remove()

    # one log line per fault episode, not a traceback per retry
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "the disk is full" in errors[0].getMessage()
    assert errors[0].exc_info is None
    # every SpO2 sample across the fault, in order, nothing missing (Masimo sends 1/s)
    times = [t for (t,) in rows(db_path, "SELECT t_us FROM numeric WHERE session_id=? AND "
                                "channel='spo2' ORDER BY rowid", sid)]
    assert times == sorted(times)
    span = [t for t in times if full_at - 2e6 <= t <= freed_at + 2e6]
    assert max(np.diff(span)) <= 2.5e6
    alarms = rows(db_path, "SELECT action, message FROM alarm_event WHERE session_id=? AND "
                  "condition='tech.database' ORDER BY id", sid)
    assert alarms[0][0] == "raise" and "disk is full" in alarms[0][1]
    assert "SELECT" not in alarms[0][1] and "Error" not in alarms[0][1]
    assert alarms[-1][0] == "clear"
    assert rows(db_path, "SELECT text FROM annotation WHERE session_id=? AND "
                "kind='observation'", sid) == [("written while the disk was full",)]
    assert rows(db_path, "SELECT count(*) FROM data_loss") == [(0,)]


def test_disk_full_to_the_end_reports_what_was_not_written(store: Store,
                                                           db_path: Path) -> None:
    clock = ScaledClock(SPEED)
    vitals = ScriptedVitals(values={Channel.SPO2: 97.0, Channel.PULSE: 72.0,
                                    Channel.PERF_INDEX: 2.0})
    session = LiveSession(store, SessionConfig(patient="KAP-14"), clock=clock).start()
    sid = session.session_id
    disk = DiskFull(store.engine)
    server = None
    try:
        server = _oximeter(session, clock, vitals)
        session.recorder.flush_now(30)
        disk.full = True
        wait_until(lambda: session.recorder.pending_rows >= 10, what="rows pending")
        unwritten = session.close(timeout=2.0)
    finally:
        if server is not None:
            server.stop()
        disk.remove()
        session.close()
    assert unwritten
    assert unwritten.numerics > 0
    assert "the session's close" in unwritten.ops
    assert "the disk is full" in str(unwritten)
    # the session stays open, so the next start recovers it with a gap marker
    assert rows(db_path, "SELECT status FROM session WHERE id=?", sid) == [("open",)]
    # the recorder's process is this one and still alive, so recover it as the next start
    # would once this process has ended
    recover(store, Abandoned(sid, "the recording process ended", None))
    assert rows(db_path, "SELECT status FROM session WHERE id=?", sid) == [("recovered",)]


def test_memory_bound_drops_waves_first_and_counts_them(store: Store, db_path: Path) -> None:
    """Beyond the bound, waves go before numerics; what was dropped is in data_loss and in
    `sessions`, and everything else arrives when the disk is back."""
    session = LiveSession(store, SessionConfig(patient="KAP-15")).start()
    sid = session.session_id
    rec = session.recorder
    rec.max_pending_wave_samples = 3_200  # 100 chunks of 32
    disk = DiskFull(store.engine)
    t = 1_800_000_000_000_000
    try:
        rec.flush_now(30)
        disk.full = True
        early: list[int] = []

        def one_more_until_refused() -> bool:  # free space in the last page takes a few
            early.append(t - 1_000_000_000 + len(early))
            session.bus.publish([_hr(early[-1], 59)])
            return rec.stats.errors >= 1
        wait_until(one_more_until_refused, what="the disk full")
        for k in range(300):  # 300 chunks: 200 must go, oldest first
            session.bus.publish([
                WaveChunk(Channel.PLETH, t + k * 256_000, 125.0, np.zeros(32), "mon"),
                *([] if k % 10 else [_hr(t + k * 256_000, 60 + k // 10)])])
        wait_until(lambda: rec.stats.dropped_wave_samples > 0, what="waves shed")
        wait_until(lambda: any(a.key == "tech.database.loss"
                               for a in session.alarms.active()), what="loss alarm")
        disk.full = False
        rec.flush_now(30)
    finally:
        session.close()
        disk.remove()
    kept = rows(db_path, "SELECT t_us FROM wave WHERE session_id=? ORDER BY rowid", sid)
    dropped = rec.stats.dropped_wave_samples // 32
    assert dropped >= 200 and len(kept) == 300 - dropped
    assert kept[0][0] == t + dropped * 256_000  # the oldest went first
    assert len(rows(db_path, "SELECT 1 FROM numeric WHERE session_id=? AND channel='hr'",
                    sid)) == 30 + len(early)  # no numeric dropped
    (loss,) = rows(db_path, "SELECT kind, channel, rows, samples, first_t_us, last_t_us, "
                   "reason FROM data_loss WHERE session_id=?", sid)
    assert loss[:4] == ("wave", "pleth", dropped, dropped * 32)
    assert loss[4] == t and loss[5] == t + (dropped - 1) * 256_000
    assert "disk is full" in loss[6]
    (info,) = [s for s in store.sessions() if s.id == sid]
    assert info.lost_wave_samples == dropped * 32 and info.lost_numerics == 0
    listing = run_cli("sessions", "--db", str(db_path))
    assert listing.returncode == 0, listing.stderr
    assert (f"! session {sid} lacks data the recorder had to drop: 0 numerics, "
            f"{dropped * 32} wave samples") in listing.stdout


def _hr(t_us: int, v: float):
    from kapmonitor.model import Reading
    return Reading(Channel.HR, float(v), t_us, "mon")


def test_database_file_removed_is_restored_from_the_open_copy(store: Store,
                                                              db_path: Path) -> None:
    """A SQLite file removed while open keeps taking writes into an inode that vanishes
    with the process: the recorder notices, puts the file back from its open connection,
    and the record (with the alarm) is whole and verifies."""
    from kapmonitor.store import audit

    clock = ScaledClock(SPEED)
    vitals = ScriptedVitals(values={Channel.SPO2: 97.0, Channel.PULSE: 72.0,
                                    Channel.PERF_INDEX: 2.0})
    session = LiveSession(store, SessionConfig(patient="KAP-16"), clock=clock).start()
    sid = session.session_id
    server = None
    try:
        server = _oximeter(session, clock, vitals)
        session.recorder.flush_now(30)
        before = len(rows(db_path, "SELECT 1 FROM numeric WHERE session_id=?", sid))
        db_path.unlink()
        wait_until(db_path.exists, what="file restored")
        session.recorder.flush_now(30)
        wait_until(lambda: len(rows(db_path, "SELECT 1 FROM numeric WHERE session_id=?",
                                    sid)) > before + 5, what="recording into the restored file")
    finally:
        session.close()
        if server is not None:
            server.stop()
    alarms = rows(db_path, "SELECT action, message FROM alarm_event WHERE "
                  "condition='tech.database' ORDER BY id")
    assert [a for a, _ in alarms] == ["raise", "clear"]
    assert "was removed while recording" in alarms[0][1]
    assert rows(db_path, "SELECT status FROM session WHERE id=?", sid) == [("closed",)]
    with store.engine.connect() as conn:
        assert audit.verify(conn) == []
