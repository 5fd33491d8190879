"""The chart record's computations (kapmonitor/export/flowsheet.py; issue 13 item 12): the
flowsheet rows, the NIBP measurements, the dose in running segments with the pauses between
them, and the alarm wording for paper.

Two shipped scenarios are recorded through the real alarm engine and Recorder into SQLite
(tests/export/scenario_recording.py) and read back through a SessionReader: desaturation,
where the clinician holds the infusion 5.5 min at T+27:30 (and starts one NIBP by hand at
T+28:10), and occlusion, where a pump alarm stops it for 3 min. The rules at their edges
(the ±60-s window, flagged values, held NIBP repeats, counter restarts, a notice that did
not stop the pump) are checked on small hand-made series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kapmonitor.export.flowsheet import (
    INTERVAL_US,
    ChartData,
    NibpMeasurement,
    alarm_event_word,
    alarm_wording,
    dose_segments,
    duration_text,
    flowsheet_rows,
    nibp_measurements,
    session_clock,
)
from kapmonitor.model import Channel, Quality
from kapmonitor.store import Store
from kapmonitor.store.reader import NumericSeries, SessionReader

from .scenario_recording import ScenarioRecording, record_scenario

S = 1_000_000
M = 60 * S
EXTRA_NIBP_MIN = 28 + 10 / 60  # T+28:10, during the desaturation


@pytest.fixture(scope="module")
def desaturation(tmp_path_factory: pytest.TempPathFactory) -> ScenarioRecording:
    return record_scenario(tmp_path_factory.mktemp("desat") / "kap.sqlite", "desaturation",
                           extra_nibp_min=(EXTRA_NIBP_MIN,),
                           acknowledge=("spo2.low", "rr.apnoea"))


@pytest.fixture(scope="module")
def occlusion(tmp_path_factory: pytest.TempPathFactory) -> ScenarioRecording:
    return record_scenario(tmp_path_factory.mktemp("occl") / "kap.sqlite", "occlusion")


def _chart(r: ScenarioRecording) -> Iterator[tuple[ChartData, SessionReader]]:
    store = Store.open(str(r.db))
    try:
        reader = SessionReader(store.engine, r.session_id)
        yield ChartData.from_reader(reader), reader
    finally:
        store.close()


@pytest.fixture
def desat_chart(desaturation: ScenarioRecording) -> Iterator[tuple[ChartData, SessionReader]]:
    yield from _chart(desaturation)


@pytest.fixture
def occl_chart(occlusion: ScenarioRecording) -> Iterator[tuple[ChartData, SessionReader]]:
    yield from _chart(occlusion)


# ----------------------------------------------------------------------------- dose


def test_the_desaturation_hold_is_a_pause_between_two_running_segments(
        desaturation: ScenarioRecording, desat_chart: tuple[ChartData, SessionReader]) -> None:
    chart, _ = desat_chart
    t0 = desaturation.t0_us
    assert chart.origin_us == t0

    def at(seg: Any) -> tuple[float, float]:
        return (seg.start_us - t0) / M, (seg.end_us - t0) / M

    first, second = chart.running
    assert first.state == second.state == "running"
    assert at(first) == (0.0, 27.5) and at(second) == (33.0, 45.5)  # completes 5.5 min late
    assert first.rate_ml_h == second.rate_ml_h == 52.5
    # 52.5 mL/h for 27.5 min, then the rest of the 35 mL; 1 mg/mL
    assert first.volume_ml == pytest.approx(24.0625, abs=1e-6)
    assert second.volume_ml == pytest.approx(10.9375, abs=1e-6)
    assert first.mg == pytest.approx(24.0625, abs=1e-6)
    assert first.volume_ml + second.volume_ml == pytest.approx(35.0, abs=1e-6)
    [pause] = chart.pauses
    assert pause.state == "paused" and pause.resumed and pause.is_pause
    assert at(pause) == (27.5, 33.0) and pause.duration_s == 330.0
    assert duration_text(pause.duration_s) == "5 min 30 s"
    assert pause.alarms == ()  # held by the clinician, not by a pump alarm
    # then the pump completes: the end of the infusion, not a pause
    last = chart.segments[-1]
    assert last.state == "complete" and last.open_end and not last.resumed
    assert not last.is_pause and last.end_us == desaturation.end_us
    assert [s.state for s in chart.segments] == ["running", "paused", "running", "complete"]


def test_a_pump_alarm_that_stopped_the_infusion_is_named_as_the_cause(
        occlusion: ScenarioRecording, occl_chart: tuple[ChartData, SessionReader]) -> None:
    chart, _ = occl_chart
    t0 = occlusion.t0_us
    [stop] = chart.pauses
    # the occlusion at T+20, cleared at T+22.5 (pump still paused), restarted at T+23
    assert stop.state == "alarm" and stop.describe() == "STOPPED BY A PUMP ALARM"
    assert ((stop.start_us - t0) / M, (stop.end_us - t0) / M) == (20.0, 23.0)
    assert stop.duration_s == 180.0
    assert len(stop.alarms) == 1 and "occlusion" in stop.alarms[0]
    assert len(chart.running) == 2
    assert sum(s.volume_ml or 0 for s in chart.running) == pytest.approx(35.0, abs=1e-6)


def _ev(t_s: float, state: str, rate: float | None = 60.0, vol: float | None = 0.0,
        alarms: tuple[str, ...] = (), infusion: int = 1, source: str = "pump",
        **extra: Any) -> dict[str, Any]:
    return {"t_us": round(t_s * S), "id": 0, "source": source, "state": state,
            "rate_ml_h": rate, "volume_infused_ml": vol, "infusion_id": infusion,
            "concentration_mg_ml": 2.0, "bolus_ml": None,
            "alarms": [{"code": a, "raw": a, "text": ""} for a in alarms], **extra}


def test_segments_split_at_rate_changes_and_sum_a_restarted_counter() -> None:
    events = [
        _ev(-60, "stopped", 0.0, 0.0),  # set up before the infusion: not a hold
        _ev(0, "running", 60.0, 0.0),
        _ev(60, "running", 60.02, 1.0),  # under 0.05 mL/h: the same rate
        _ev(120, "running", 30.0, 2.0),  # a new rate: a new segment
        _ev(240, "running", 30.0, 3.0, alarms=("near_end",)),
        _ev(300, "paused", 0.0, 3.5, alarms=("near_end",)),  # the notice did not stop it
        _ev(360, "running", 30.0, 0.0, infusion=2),  # a new infusion: the counter restarts
        _ev(480, "stopped", 0.0, 1.0, infusion=2),
    ]
    segs = dose_segments(events, end_us=600 * S)
    assert [(s.state, s.start_us // S, s.end_us // S) for s in segs] == [
        ("running", 0, 120), ("running", 120, 300), ("paused", 300, 360),
        ("running", 360, 480), ("stopped", 480, 600)]
    assert [s.volume_ml for s in segs if s.delivering] == [2.0, 1.5, 1.0]
    assert [s.mg for s in segs if s.delivering] == [4.0, 3.0, 2.0]  # 2 mg/mL
    assert segs[2].alarms == () and segs[2].is_pause
    assert segs[-1].open_end and not segs[-1].resumed and not segs[-1].is_pause
    # a pump that never ran has no segments; one still running runs to the end
    assert dose_segments([_ev(0, "stopped")], end_us=S) == []
    [run] = dose_segments([_ev(0, "running", vol=0.0), _ev(10, "running", vol=0.5)],
                          end_us=60 * S, concentration_mg_ml=1.0)
    assert run.open_end and run.end_us == 60 * S and run.volume_ml == 0.5 and run.mg == 1.0


def test_an_alarm_reported_on_the_poll_after_the_stop_is_still_its_cause() -> None:
    events = [_ev(0, "running"), _ev(10, "paused", 0.0, 0.1),
              _ev(12, "paused", 0.0, 0.1, alarms=("air_in_line",)),
              _ev(40, "paused", 0.0, 0.1, alarms=("battery",)),  # later: not the cause
              _ev(70, "running", vol=0.1)]
    hold = dose_segments(events, end_us=100 * S)[1]
    assert hold.alarms == ("air in line",) and hold.duration_s == 60.0


# ----------------------------------------------------------------------------- flowsheet


def test_flowsheet_has_a_row_every_5_min_and_one_at_every_nibp(
        desaturation: ScenarioRecording, desat_chart: tuple[ChartData, SessionReader]) -> None:
    chart, reader = desat_chart
    t0 = desaturation.t0_us
    rows = chart.rows
    # T-10:00 (the first data, 10 min of baseline) to T+60:00 (the close) every 5 min,
    # and the NIBP started by hand at T+28:10
    grid = [round(m * M) for m in range(-10, 61, 5)]
    extra = round(EXTRA_NIBP_MIN * M)
    assert len(rows) == len(grid) + 1 == 16
    assert [r.t_us - t0 for r in rows] == sorted([*grid, extra])
    assert [r.session_time for r in rows][:3] == ["T-10:00", "T-05:00", "T+00:00"]
    assert rows[-1].session_time == "T+1:00:00"
    hand = next(r for r in rows if r.t_us - t0 == extra)
    assert not hand.scheduled and hand.session_time == "T+28:10"
    assert all(r.scheduled for r in rows if r is not hand)
    # the NIBP rows carry the stored measurement at its own time, one per measurement
    assert [r.nibp.t_us for r in rows if r.nibp] == list(desaturation.nibp_us)
    stored = reader.numeric(Channel.NIBP_SYS)
    assert [r.nibp.sys for r in rows if r.nibp] == stored.values.tolist()
    assert chart.nibp == [r.nibp for r in rows if r.nibp]
    # HR, SpO2, RR and EtCO2: the value measured at the row's time (1-Hz data)
    for r in rows:
        for ch in (Channel.HR, Channel.SPO2, Channel.RR, Channel.ETCO2):
            s = reader.numeric(ch)
            i = int(np.searchsorted(s.t_us, r.t_us))
            assert r.values[ch] == s.values[i], (r.session_time, ch)
    # the desaturation shows at T+28:10, the pump column says the infusion was held
    assert hand.values[Channel.SPO2] is not None and hand.values[Channel.SPO2] < 92
    assert [r.pump for r in rows if 27.5 * M <= r.t_us - t0 < 33 * M] == ["PAUSED"] * 2
    assert rows[0].pump == "\u2014" and rows[2].pump == "52.5 mL/h"
    assert rows[-1].pump == "complete"


def _series(points: list[tuple[float, float]], bad: tuple[int, ...] = ()) -> NumericSeries:
    t = np.array([round(x * S) for x, _ in points], dtype=np.int64)
    v = np.array([y for _, y in points], dtype=np.float64)
    q = np.array([int(Quality.INVALID) if i in bad else 0 for i in range(len(points))],
                 dtype=np.int32)
    return NumericSeries(t, v, q, ["monitor"] * len(points), [None] * len(points))


def test_a_row_takes_the_nearest_measurement_within_60_s_or_shows_none() -> None:
    series = {
        Channel.HR: _series([(-100, 60), (30, 70), (290, 80), (301, 81)]),
        Channel.SPO2: _series([(-61, 97), (61, 96)]),  # 61 s either side: none
        Channel.RR: _series([(-5, 12), (2, 99)], bad=(1,)),  # the nearest is flagged
        Channel.NIBP_SYS: _series([(0, 120)]),
    }
    rows = flowsheet_rows(series, origin_us=0, end_us=10 * M)
    assert [r.t_us // S for r in rows] == [0, 300, 600]  # the first data is T-100 s
    assert rows[0].values[Channel.HR] == 70 and rows[1].values[Channel.HR] == 81
    assert rows[0].values[Channel.SPO2] is None and rows[0].values[Channel.ETCO2] is None
    assert rows[0].values[Channel.RR] == 12
    assert rows[2].values[Channel.HR] is None  # nothing within 60 s of T+10:00
    # an NIBP on a 5-min row's second shares that row (it prints the same time)
    assert rows[0].nibp == NibpMeasurement(0, 120.0, None, None) and rows[0].scheduled
    rows = flowsheet_rows({Channel.HR: _series([(-400, 60)])}, origin_us=0, end_us=0)
    assert [r.session_time for r in rows] == ["T-05:00", "T+00:00"]
    assert flowsheet_rows({}, origin_us=0, end_us=INTERVAL_US) == []


def test_held_nibp_repeats_are_one_measurement_and_equal_ones_apart_are_two() -> None:
    # a GE S/5 repeats the held values with every frame; a new cycle gives new values
    held = [(t, 120.0) for t in range(0, 60, 5)] + [(t, 131.0) for t in range(60, 120, 5)]
    dia = [(t, 80.0) for t in range(0, 120, 5)]
    m = nibp_measurements({Channel.NIBP_SYS: _series(held), Channel.NIBP_DIA: _series(dia)})
    assert [(x.t_us // S, x.sys, x.dia) for x in m] == [(0, 120, 80), (60, 131, 80)]
    assert m[0].text() == "120/80"
    # one value per measurement (IntelliVue): equal values 5 min apart are two
    m = nibp_measurements({Channel.NIBP_SYS: _series([(0, 120), (300, 120)])})
    assert [x.t_us // S for x in m] == [0, 300]
    # a failed cycle between two equal values: two measurements; the failed one is none
    m = nibp_measurements({Channel.NIBP_SYS: _series([(0, 120), (5, 0), (10, 120)],
                                                     bad=(1,))})
    assert [x.t_us // S for x in m] == [0, 10]
    assert NibpMeasurement(0, 118, 76, 90).text() == "118/76 (90)"


# ----------------------------------------------------------------------------- alarms


def test_alarm_wording_is_plain_with_the_priority_as_a_word(
        desat_chart: tuple[ChartData, SessionReader]) -> None:
    _, reader = desat_chart
    events = reader.alarm_events()
    assert len(events) > 10
    words = [alarm_wording(ev) for ev in events]
    assert not [w for w in words if "*" in w]
    raises = [w for ev, w in zip(events, words, strict=True) if ev["action"] == "raise"]
    assert all(w.split(" \u2014 ")[0] in ("HIGH", "MEDIUM", "LOW") for w in raises)
    assert "HIGH \u2014 APNOEA: no breath for 20 s (RR 0)" in words
    assert any(w.startswith("LOW \u2014 CONSIDER HOLD: SpO2 < 90 %") for w in words)
    assert any(w.endswith("acknowledged by RN A") for w in words)
    ev = {"action": "raise", "kind": "physiological", "priority": "high",
          "message": "SpO2 LOW 85 % (< 88)", "condition": "spo2.low", "user": ""}
    assert alarm_wording(ev) == "HIGH \u2014 SpO2 LOW 85 % (< 88)"
    assert alarm_wording({**ev, "action": "escalate"}).endswith("(escalated)")
    assert alarm_wording({**ev, "action": "clear", "message": "SpO2 back to 97 %"}) == \
        "ended: SpO2 back to 97 %"
    assert alarm_event_word("clear") == "ended" and alarm_event_word("raise") == "raised"


def test_session_clock_and_durations_read_as_on_the_screen() -> None:
    assert session_clock(0, 0) == "T+00:00"
    assert session_clock(-190 * S, 0) == "T-03:10"
    assert session_clock(3723 * S, 0) == "T+1:02:03"
    assert duration_text(45) == "45 s" and duration_text(300) == "5 min"
    assert duration_text(3720) == "1 h 02 min"
