"""Simulator -> ptys -> record --headless -> SQLite, in two processes (issue 7).

Tolerances: trends are compared with the simulator's noise-free truth at the same
simulated time; the monitor adds measurement noise (HR +-3 /min, SpO2 +-1 %) and reports
integers, and the two processes' clocks agree to scheduling jitter (a few ms of wall time,
i.e. a fraction of a simulated second at 60x), so HR must match within 6 /min and SpO2
within 2 %. Delivered dose must equal the programme within 1 % (issue 7)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.model import Channel
from kapmonitor.store import SessionReader, Store

from .conftest import record

pytestmark = pytest.mark.slow


def _truth_at(rows: list[dict], key: str, t_us: np.ndarray) -> np.ndarray:
    tt = np.array([r["t_us"] for r in rows])
    vv = np.array([r[key] for r in rows], dtype=float)
    return np.interp(t_us, tt, vv)


def test_full_infusion_at_60x_matches_truth(simulator, tmp_path: Path) -> None:
    run = simulator("standard", 60.0)
    db = tmp_path / "kap.sqlite"
    r = record(db, run, 52 * 60)  # 10 min baseline + 40 min infusion + 2 min
    assert r.returncode == 0, r.stderr
    truth = run.truth_rows()
    store = Store.open(str(db))
    try:
        reader = SessionReader(store.engine, 1)
        session = reader.session()
        assert session["status"] == "closed"
        # infusion start taken from the pump, where the simulator put it
        t0_truth = truth[0]["t_us"] - round(truth[0]["session_min"] * 60e6)
        assert abs(session["t0_us"] - t0_truth) / 1e6 < 10  # one pump poll period

        hr = reader.numeric(Channel.HR)
        assert len(hr) > 2000  # numerics every simulated second
        ok = hr.quality == 0
        err = np.abs(hr.values[ok] - _truth_at(truth, "hr", hr.t_us[ok]))
        assert np.percentile(err, 99) <= 6.0, f"HR off by up to {err.max():.1f}"
        spo2 = reader.numeric(Channel.SPO2)
        err = np.abs(spo2.values - _truth_at(truth, "spo2", spo2.t_us))
        assert np.percentile(err, 99) <= 2.0

        # the response: SBP peaks during the infusion and is above baseline
        sbp = reader.numeric(Channel.NIBP_SYS)
        assert len(sbp) >= 8  # NIBP every 5 min
        t_rel = (sbp.t_us - session["t0_us"]) / 60e6
        baseline = sbp.values[t_rel < 0].mean()
        assert sbp.values[(t_rel > 25) & (t_rel < 41)].max() > baseline + 5

        dose = reader.numeric(Channel.DELIVERED_DOSE)
        assert dose.values[-1] == pytest.approx(35.0, rel=0.01)

        # no wave sample lost or duplicated: what is stored is what the peer sent, up to
        # the samples still in flight when the record stopped (< 1 s of simulated time)
        pleth = reader.wave(Channel.PLETH)
        sent = [r["wave_samples_sent"].get("pleth", 0) for r in truth]
        t_truth = np.array([r["t_us"] for r in truth])
        k = int(np.searchsorted(t_truth, pleth.t_us[-1]))
        sent_then = sent[min(k, len(sent) - 1)]
        rate = pleth.rate_hz
        assert sent_then - 2 * rate <= len(pleth) <= sent_then + 2 * rate
        sent_before_end = sent[-1]
        assert len(pleth) <= sent_before_end
        with sqlite3.connect(db) as conn:
            n_db = conn.execute("SELECT sum(n) FROM wave WHERE channel='pleth'").fetchone()[0]
        assert n_db == len(pleth)
    finally:
        store.close()


def _truth_t0(run) -> int:
    """The infusion start as the simulator scripted it (the recorded t0 is the first pump
    poll that saw it running, up to one poll period later)."""
    row = run.truth_rows()[0]
    return row["t_us"] - round(row["session_min"] * 60e6)


def _events(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_hypertensive_response_alarm_at_the_right_session_time(simulator,
                                                               tmp_path: Path) -> None:
    run = simulator("hypertensive", 60.0)
    db = tmp_path / "kap.sqlite"
    r = record(db, run, 48 * 60)
    assert r.returncode == 0, r.stderr
    t0 = _truth_t0(run)
    raises = _events(db, "SELECT t_us, value, priority FROM alarm_event WHERE "
                         "condition='nibp_sys.high' AND action='raise' ORDER BY t_us")
    assert raises, "no high-BP alarm stored"
    t_raise, value, _ = raises[0]
    minutes = (t_raise - t0) / 60e6
    assert 15 <= minutes <= 40  # clinical.md §3.3: SBP to 180-200 at 20-40 min
    assert value > 180
    # raised by the very NIBP reading that crossed the limit (NIBP has no delay, §5.3)
    crossing = _events(db, "SELECT t_us, value FROM numeric WHERE channel='nibp_sys' AND "
                           "value > 180 ORDER BY t_us LIMIT 1")[0]
    assert crossing[0] == t_raise
    assert crossing[1] == value


def test_occlusion_becomes_a_pump_alarm(simulator, tmp_path: Path) -> None:
    run = simulator("occlusion", 60.0)
    db = tmp_path / "kap.sqlite"
    r = record(db, run, 34 * 60)  # from the simulator's start: ~23 min after t0
    assert r.returncode == 0, r.stderr
    t0 = _truth_t0(run)
    alarms = _events(db, "SELECT t_us, condition, priority FROM alarm_event WHERE "
                         "kind='technical' AND condition LIKE 'tech.pump%.pump.%' AND "
                         "action='raise' ORDER BY t_us")
    assert alarms, "no pump alarm stored"
    minutes = (alarms[0][0] - t0) / 60e6
    # within one 5 s poll period (plus scheduling); the two processes' clocks agree to a
    # few ms of wall time, i.e. ~0.1 s of simulated time at 60x
    assert 20 - 0.1 / 60 <= minutes <= 20 + 8 / 60
    states = _events(db, "SELECT state FROM pump_event ORDER BY t_us")
    assert ("alarm",) in states
    assert states[-1] == ("running",)  # restarted after the line was freed


def test_cable_pulled_disconnects_reconnects_and_marks_the_gap(simulator,
                                                               tmp_path: Path) -> None:
    run = simulator("cable_pulled", 60.0)
    db = tmp_path / "kap.sqlite"
    r = record(db, run, 38 * 60)  # ~27 min after t0
    assert r.returncode == 0, r.stderr
    t0 = _truth_t0(run)
    states = _events(db, "SELECT t_us, state FROM device_event WHERE source='monitor' "
                         "ORDER BY t_us")
    down = [t for t, s in states if s == "disconnected" and (t - t0) / 60e6 > 20]
    assert down, f"no disconnection recorded: {states}"
    back = [t for t, s in states if s == "streaming" and t > down[0]]
    assert back, "never reconnected"
    assert 24.9 <= (down[0] - t0) / 60e6 <= 25.5
    alarm = _events(db, "SELECT action FROM alarm_event WHERE "
                        "condition='tech.monitor.disconnected' ORDER BY t_us")
    assert ("raise",) in alarm
    assert ("clear",) in alarm
    hr = _events(db, "SELECT t_us, device_t_us FROM numeric WHERE channel='hr' ORDER BY t_us")
    # two results arriving in one read share the read's host time; a duplicate is the
    # same measurement twice, i.e. the same device time stamp
    stamps = [d for _, d in hr]
    assert None not in stamps
    assert len(set(stamps)) == len(stamps), "a reading was stored twice"
    gap = np.diff(np.array([t for t, _ in hr])).max() / 1e6
    assert gap >= 20  # the 20 s without a cable is a hole, not interpolated
    nibp = _events(db, "SELECT device_t_us, value FROM numeric WHERE channel='nibp_sys'")
    stamps = [d for d, _ in nibp if d is not None]
    assert len(set(stamps)) == len(stamps), "an NIBP measurement was stored twice"
