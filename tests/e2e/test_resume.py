"""Resume after the recording process is killed mid-infusion (issue 13 item 2), in real
processes: ``simulate`` serves the patient and the pump on ptys, ``record --headless``
records until it is SIGKILLed 15 min into the infusion, the pump keeps running for 3 more
simulated minutes unseen, then ``record --resume`` carries the session on, on the same
simulated clock, to the end of the infusion.

It must be the same session (same id, same t0), with a gap marker over the outage, and the
delivered dose and the plasma estimate continued from the pump's volume counter: within
1 % of an uninterrupted run: the simulator's exact delivery through the session's own PK
model."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kapmonitor.drivers.sim.clock import ScaledClock
from kapmonitor.model import Channel
from kapmonitor.pk import DEFAULT_MODEL, PlasmaEstimator
from kapmonitor.resume import load_resume_state
from kapmonitor.store import Store

pytestmark = pytest.mark.slow

SPEED = 60.0


def _query(db: Path, sql: str, *params) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.02)  # polling a condition with a deadline


def test_resume_after_kill_continues_dose_and_plasma_estimate(simulator,
                                                              tmp_path: Path) -> None:
    run = simulator("standard", SPEED)
    clock = ScaledClock(SPEED, run.epoch)
    db = tmp_path / "kap.sqlite"
    devices = []
    for protocol, port in run.ports.items():
        devices += ["--device", f"{protocol}={port}"]
    rec = subprocess.Popen(
        [sys.executable, "-m", "kapmonitor", "record", "--headless", "--db", str(db),
         *devices, "--speed", str(SPEED), "--epoch", str(run.epoch), "--patient", "SIM-R",
         "--weight", "70", "--mg-per-kg", "0.5", "--minutes", "40", "--concentration", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        _wait(lambda: _query(db, "SELECT t0_us FROM session WHERE t0_us IS NOT NULL"), 120,
              "t0 recorded")
        (t0,) = _query(db, "SELECT t0_us FROM session")[0]
        _wait(lambda: clock() >= t0 + 15 * 60e6, 120, "15 min into the infusion")
        rec.send_signal(signal.SIGKILL)
    finally:
        rec.wait(30)
        rec.stdout.close()
        rec.stderr.close()
    killed_at = clock()
    _wait(lambda: clock() >= killed_at + 180e6, 60, "three unseen minutes")

    # the resumed recorder is `record --resume` in a new process, with the devices the
    # session had (from the record), until two minutes after the infusion's end
    store = Store.open(str(db))
    state = load_resume_state(store, 1)
    store.close()
    assert (state.t0_us, state.phase) == (t0, "infusion")
    (delivered_before,), = _query(db, "SELECT value FROM numeric WHERE channel=? ORDER BY "
                                  "t_us DESC LIMIT 1", Channel.DELIVERED_DOSE.value)
    assert 12.0 < delivered_before < 16.0  # about 15 min of 35 mg over 40 min, as stored
    remaining = (t0 + 42 * 60e6 - clock()) / 1e6
    resumed = subprocess.run(
        [sys.executable, "-m", "kapmonitor", "record", "--headless", "--db", str(db),
         "--resume", "1", "--speed", str(SPEED), "--epoch", str(run.epoch),
         "--duration", f"{remaining:.0f}"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(), check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed session 1" in resumed.stdout
    (t_cmp, cp), = _query(db, "SELECT t_us, value FROM numeric WHERE channel=? ORDER BY t_us "
                          "DESC LIMIT 1", Channel.PLASMA_ESTIMATE.value)
    (delivered,), = _query(db, "SELECT value FROM numeric WHERE channel=? ORDER BY t_us DESC "
                           "LIMIT 1", Channel.DELIVERED_DOSE.value)

    # the uninterrupted reference: the simulator's exact delivery (1-s truth rows) through
    # the session's own PK model (the simulated patient's physiology uses another one)
    truth = [r for r in run.truth_rows() if "delivered_mg" in r]
    truth_mg = max(r["delivered_mg"] for r in truth)
    ref = PlasmaEstimator(DEFAULT_MODEL, 70.0, start_us=truth[0]["t_us"])
    given = 0.0
    for r in truth:
        if truth[0]["t_us"] < r["t_us"] <= t_cmp:
            ref.advance(r["t_us"], max(0.0, r["delivered_mg"] - given))
            given = max(given, r["delivered_mg"])
    truth_cp = ref.estimate(t_cmp).cp_ng_ml
    assert truth_mg == pytest.approx(35.0, rel=0.01)
    assert delivered == pytest.approx(truth_mg, rel=0.01)
    assert cp == pytest.approx(truth_cp, rel=0.01)

    # the record: one session, the gap marker over the outage, the stored dose continued
    assert _query(db, "SELECT count(*), status FROM session") == [(1, "closed")]
    ((gap_t, gap_s, text),) = _query(
        db, "SELECT t_us, value, text FROM annotation WHERE kind='gap' AND "
        "code='recording-resumed'")
    assert gap_t <= killed_at and gap_s >= 170
    assert "resumed" in text
    doses = _query(db, "SELECT t_us, value FROM numeric WHERE channel=? ORDER BY t_us",
                   Channel.DELIVERED_DOSE.value)
    after = [v for t, v in doses if t > killed_at]
    assert after[0] > delivered_before + 2.5  # the unseen delivery is counted at once
    assert after[-1] == pytest.approx(truth_mg, rel=0.01)
    phases = [c for (c,) in _query(db, "SELECT code FROM annotation WHERE kind='phase' "
                                   "ORDER BY id")]
    assert phases == ["baseline", "infusion", "emergence", "closed"]
