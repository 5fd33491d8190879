"""The pump model (drivers/sim/pump_model.py), the scenario files and loader, and the
``Simulation`` (drivers/sim/scenario.py): every shipped scenario loads and runs its whole
duration; each adverse-event scenario of clinical.md §3.3 shows what it promises."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.dosing import DoseProgramme, calculate
from kapmonitor.drivers.sim.feed import PumpFeed
from kapmonitor.drivers.sim.patient import PatientModel
from kapmonitor.drivers.sim.playback import PlaybackVitals
from kapmonitor.drivers.sim.pump_model import PumpCommandError, PumpModel
from kapmonitor.drivers.sim.scenario import (
    DATA_ENV,
    Scenario,
    ScenarioError,
    Simulation,
    load_scenario,
    parse_scenario,
    scenario_names,
)
from kapmonitor.model import Channel, PumpAlarm, PumpRunState, Quality

S = 1_000_000
M = 60 * S
START = 1_700_000_000_000_000
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
STANDARD = DoseProgramme(weight_kg=70, dose_mg_per_kg=0.5, duration_min=40,
                         concentration_mg_ml=1.0)
EXPECTED = {"standard", "hypertensive", "desaturation", "bradycardia", "occlusion",
            "cable_pulled", "garbage", "motion", "playback_a103l"}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    assert (DATA / "physionet" / "a103l.hea").is_file(), (
        f"the shared recordings are missing: expected {DATA}/physionet/a103l.hea "
        "(shared/data, next to the repository; see shared/data/README.md)")
    return DATA


def sim(name: str, data_dir: Path | None = None, seed: int = 3) -> Simulation:
    return Simulation.from_scenario(name, seed=seed, start_us=START, data_dir=data_dir)


# --------------------------------------------------------------------------- pump model


def standard_pump() -> PumpModel:
    p = PumpModel.from_programme(STANDARD, start_us=START)
    p.start(START)
    return p


def test_pump_is_a_pump_feed_and_delivers_35_ml_exactly() -> None:
    p = standard_pump()
    feed: PumpFeed = p
    st = feed.pump(START + 20 * M)
    assert st.state is PumpRunState.RUNNING and st.rate_ml_h == 52.5
    assert st.volume_infused_ml == pytest.approx(17.5, abs=1e-9)
    assert st.vtbi_ml == pytest.approx(17.5, abs=1e-9)
    assert st.concentration_mg_ml == 1.0 and st.infusion_id == 1
    end = p.pump(START + 40 * M)
    assert round(end.volume_infused_ml, 2) == 35.00  # type: ignore[arg-type]
    assert end.state is PumpRunState.COMPLETE and end.rate_ml_h == 0.0  # KVO 0
    later = p.pump(START + 90 * M)
    assert later.volume_infused_ml == pytest.approx(35.0, abs=1e-9)
    assert later.state is PumpRunState.COMPLETE
    assert p.cumulative_mg(START + 90 * M) == pytest.approx(35.0)
    assert calculate(STANDARD).volume_ml == 35.0


def test_near_end_then_end_alarms_are_low_priority_and_do_not_stop() -> None:
    p = standard_pump()
    assert p.pump(START + 34 * M).alarms == ()
    near = p.pump(START + 36 * M)
    assert [a.code for a in near.alarms] == ["near_end"]
    assert not near.alarms[0].high_priority and near.state is PumpRunState.RUNNING
    assert p.pump(START + 35 * M + 1).alarms[0].code == "near_end"  # 5 min before the end
    end = p.pump(START + 41 * M)
    assert [a.code for a in end.alarms] == ["end"] and not end.alarms[0].high_priority
    p.clear_alarm(START + 42 * M)
    assert p.pump(START + 43 * M).alarms == ()  # acknowledged for this infusion


def test_occlusion_stops_delivery_until_cleared_and_restarted() -> None:
    p = standard_pump()
    p.inject_alarm("occlusion", START + 10 * M)
    st = p.pump(START + 12 * M)
    assert st.state is PumpRunState.ALARM and st.rate_ml_h == 0.0
    assert st.volume_infused_ml == pytest.approx(8.75)
    assert st.alarms[0].code == "occlusion" and st.alarms[0].high_priority
    assert p.start(START + 12 * M) is False  # a pump refuses to start with the alarm
    assert "clear it first" in p.refusals[-1].reason
    p.clear_alarm(START + 13 * M)
    assert p.pump(START + 14 * M).state is PumpRunState.PAUSED
    assert p.pump(START + 14 * M).volume_infused_ml == pytest.approx(8.75)
    assert p.start(START + 15 * M)
    assert p.pump(START + 20 * M).volume_infused_ml == pytest.approx(8.75 + 52.5 * 5 / 60)
    done = p.pump(START + 46 * M)
    assert done.state is PumpRunState.COMPLETE and done.volume_infused_ml == pytest.approx(35.0)


def test_pause_resume_bolus_and_new_programme() -> None:
    p = standard_pump()
    p.pause(START + 10 * M)
    assert p.pump(START + 15 * M).volume_infused_ml == pytest.approx(8.75)
    p.resume(START + 15 * M)
    assert p.bolus(2.0, START + 20 * M, rate_ml_h=600.0)
    b = p.pump(START + 20 * M + 6 * S)
    assert b.state is PumpRunState.BOLUS and b.rate_ml_h == 600.0 and b.bolus_ml == 2.0
    after = p.pump(START + 21 * M)  # 12-s bolus done, back to 52.5 mL/h
    assert after.state is PumpRunState.RUNNING
    expected = 8.75 + 52.5 * 5 / 60 + 2.0 + 52.5 * (60 - 12) / 3600
    assert after.volume_infused_ml == pytest.approx(expected)
    with pytest.raises(PumpCommandError, match="pause or stop"):
        p.program(10.0, 5.0, START + 22 * M)
    p.stop(START + 22 * M)
    p.program(10.0, 5.0, START + 23 * M, concentration_mg_ml=2.0)
    st = p.pump(START + 23 * M)
    assert st.infusion_id == 2 and st.volume_infused_ml == 0.0
    assert st.state is PumpRunState.STOPPED and st.concentration_mg_ml == 2.0
    p.start(START + 24 * M)
    assert p.pump(START + 60 * M).volume_infused_ml == pytest.approx(5.0)
    mg_first = 8.75 + 52.5 * 5 / 60 + 2.0 + 52.5 * (2 * 60 - 12) / 3600
    assert p.cumulative_mg(START + 60 * M) == pytest.approx(mg_first + 10.0)


def test_bench_commands_and_programmed_pump_attributes() -> None:
    """The NE-1000-like bench commands (set_rate, set_vtbi, run, stop) and the attributes
    the peers duck-type (rate_ml_h, vtbi_ml settable; clear_alarms; raise_alarm)."""
    p = PumpModel(rate_ml_h=60.0, vtbi_ml=10.0, start_us=START)
    assert p.run(START)
    p.set_rate(120.0, START + 1 * M)
    assert p.pump(START + 2 * M).volume_infused_ml == pytest.approx(1.0 + 2.0)
    p.set_vtbi(1.0, START + 2 * M)  # one more mL from now
    assert p.pump(START + 3 * M).state is PumpRunState.COMPLETE
    assert p.pump(START + 3 * M).volume_infused_ml == pytest.approx(4.0)
    p.vtbi_ml = 8.0  # a limit again, at the latest time seen
    assert p.run(START + 3 * M)
    p.stop(START + 4 * M)
    assert p.pump(START + 5 * M).state is PumpRunState.STOPPED
    assert p.pump(START + 5 * M).volume_infused_ml == pytest.approx(6.0)
    p.rate_ml_h = 30.0
    assert p.rate_ml_h == 30.0
    p.raise_alarm(PumpAlarm("comms", "AL_COMTO", "communications failure"), START + 6 * M)
    assert p.pump(START + 6 * M).state is PumpRunState.ALARM
    p.clear_alarms()
    assert p.pump(START + 7 * M).alarms == ()
    with pytest.raises(PumpCommandError, match="rate"):
        p.set_rate(-1.0, START + 8 * M)
    with pytest.raises(PumpCommandError, match="unknown pump alarm"):
        p.inject_alarm("lava", START + 8 * M)
    with pytest.raises(PumpCommandError, match="above the pump's maximum"):
        p.set_rate(5000.0, START + 8 * M)


def test_a_late_command_never_rewrites_what_was_reported() -> None:
    p = standard_pump()
    reported = p.pump(START + 10 * M).volume_infused_ml
    p.pause(START + 9 * M)  # another thread's clock, a little behind
    assert p.pump(START + 10 * M).volume_infused_ml == reported
    assert p.pump(START + 11 * M).volume_infused_ml == reported


def test_scripted_pump_actions_apply_at_their_exact_times() -> None:
    p = PumpModel.from_programme(STANDARD, start_us=START)
    p.schedule(START + M, "start")
    p.schedule(START + 11 * M, "alarm", code="occlusion")
    p.schedule(START + 13 * M, "clear_alarm")
    p.schedule(START + 14 * M, "resume")
    assert p.pump(START + 60 * M).volume_infused_ml == pytest.approx(35.0)
    assert p.volume_ml(START + 12 * M) == pytest.approx(8.75)
    assert p.pump(START + 12 * M).state is PumpRunState.ALARM  # history answers
    assert p.pump(START + 13 * M + S).state is PumpRunState.PAUSED


# --------------------------------------------------------------------------- loading


def test_all_expected_scenarios_are_shipped() -> None:
    assert set(scenario_names()) == EXPECTED


@pytest.mark.slow  # an end-to-end run (about 0.8 s of CPU each); never skipped by default
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_loads_and_runs_its_full_duration_at_1_s_steps(name: str,
                                                                 data_dir: Path) -> None:
    s = sim(name, data_dir)
    assert s.scenario.name == name and s.scenario.description
    n = int(s.duration_s)
    assert n == round(s.scenario.duration_min * 60)
    chans = (Channel.HR, Channel.SPO2, Channel.PLETH, Channel.ECG, Channel.NIBP_SYS,
             Channel.ETCO2)
    faults = []
    for k in range(n + 1):
        now = s.start_us + k * S
        vals = s.vitals.numerics(now)
        assert all(v is None or math.isfinite(v) for v in vals.values())
        s.pump.pump(now)
        faults += s.events(now)
        if k % 10 == 0 and k:  # the last 10 s of each wave, as a peer asks for them
            for ch, rate in ((Channel.ECG, 250.0), (Channel.PLETH, 125.0),
                             (Channel.CO2_WAVE, 62.5)):
                y = s.vitals.wave(ch, rate, round(10 * rate), now)
                assert len(y) == round(10 * rate) and np.all(np.isfinite(y))
        if k % 30 == 0:
            for ch in chans:
                assert isinstance(s.vitals.quality(ch, now), Quality)
    assert faults == list(s.link_faults)
    tr = s.truth(s.end_us)
    assert tr["scenario"] == name and tr["session_min"] == pytest.approx(
        s.scenario.duration_min - s.scenario.baseline_min)
    assert s.pump.refusals == []  # every scripted pump action was possible


def test_standard_scenario_numbers() -> None:
    sc = load_scenario("standard")
    assert sc.duration_min == 140 and sc.baseline_min == 10
    assert sc.profile.weight_kg == 70 and sc.profile.archetype == "mild"
    assert calculate(sc.programme).rate_ml_h == 52.5  # type: ignore[arg-type]
    s = sim("standard")
    assert s.t0_us == START + 10 * M and s.end_us == START + 140 * M
    assert s.pump.pump(s.t0_us - S).state is PumpRunState.STOPPED
    st = s.pump.pump(s.t0_us + 40 * M)
    assert st.state is PumpRunState.COMPLETE and round(st.volume_infused_ml, 2) == 35.0
    assert s.session_min(START) == -10.0


def test_same_seed_same_simulation() -> None:
    a, b = sim("desaturation", seed=4), sim("desaturation", seed=4)
    for k in range(0, 45 * 60, 37):
        t = START + k * S
        assert a.vitals.numerics(t) == b.vitals.numerics(t)
    assert a.truth(START + 45 * M) == b.truth(START + 45 * M)


# --------------------------------------------------------------------------- adverse events


def nibp_series(s: Simulation, minutes: range) -> dict[float, tuple[float, float]]:
    """Measured NIBP (sys, dia) keyed by the session minute of each measurement."""
    out = {}
    for m in minutes:
        for k in range(0, 60, 5):
            s.vitals.numerics(s.t0_us + m * M + k * S)
            meas = s.patient.nibp_measurement
            if meas is not None and not meas.failed:
                out[round(s.session_min(meas.t_us), 3)] = (meas.sys, meas.dia)
    return out


def test_hypertensive_crosses_sbp_180_between_20_and_40_min() -> None:
    s = sim("hypertensive")
    nibp = nibp_series(s, range(-10, 110))
    high = [t for t, (sy, _) in nibp.items() if sy >= 180]
    assert high and 20 <= min(high) <= 40  # crosses within its window (clinical.md §3.3)
    peak_sys = max(sy for sy, _ in nibp.values())
    peak_dia = max(d for _, d in nibp.values())
    assert 180 <= peak_sys <= 205 and 100 <= peak_dia <= 118
    assert nibp[90.0][0] < 170 and nibp[105.0][0] < 160  # resolving after the stop


def test_desaturation_crosses_spo2_90_with_slow_breathing_and_apnoea() -> None:
    s = sim("desaturation")
    spo2, rr = {}, {}
    for k in range(20 * 60, 40 * 60, 5):
        t = s.t0_us + k * S
        v = s.vitals.numerics(t)
        spo2[k / 60], rr[k / 60] = v[Channel.SPO2], v[Channel.RR]
    low = [m for m, v in spo2.items() if v is not None and v < 90]
    assert low and 25 <= min(low) <= 28  # over 1-3 min from 25 min
    assert min(v for v in spo2.values() if v is not None) >= 87
    assert max(spo2[m] for m in spo2 if m >= 33) >= 95  # recovered
    assert rr[27.0 + 10 / 60] == 0.0 and 6 <= rr[26.0] <= 10
    # the capnogram is flat in the second half of the 20-s apnoea
    s.vitals.wave(Channel.CO2_WAVE, 62.5, 1, s.t0_us + 27 * M)
    s.vitals.wave(Channel.CO2_WAVE, 62.5, round(62.5 * 10), s.t0_us + 27 * M + 10 * S)
    flat = s.vitals.wave(Channel.CO2_WAVE, 62.5, round(62.5 * 8), s.t0_us + 27 * M + 18 * S)
    assert np.abs(flat).max() < 1.0
    assert s.pump.pump(s.t0_us + 30 * M).state is PumpRunState.PAUSED


def test_bradycardia_hr_40_45_and_sbp_85_90() -> None:
    s = sim("bradycardia")
    hr = s.vitals.numerics(s.t0_us + 16 * M + 45 * S)[Channel.HR]
    assert 38 <= hr <= 47  # type: ignore[operator]
    s.vitals.numerics(s.t0_us + 16 * M + 31 * S)
    meas = s.patient.nibp_measurement
    assert meas is not None and meas.requested
    assert 80 <= meas.sys <= 95 and meas.dia <= 58  # type: ignore[operator]
    assert s.vitals.numerics(s.t0_us + 23 * M)[Channel.HR] >= 58  # type: ignore[operator]


def test_occlusion_scenario_stops_delivery_for_three_minutes() -> None:
    s = sim("occlusion")
    v20 = s.pump.pump(s.t0_us + 20 * M).volume_infused_ml
    mid = s.pump.pump(s.t0_us + 21 * M)
    assert mid.state is PumpRunState.ALARM and mid.volume_infused_ml == v20
    assert s.pump.pump(s.t0_us + 22 * M + 45 * S).state is PumpRunState.PAUSED
    assert s.pump.pump(s.t0_us + 42 * M + 50 * S).state is PumpRunState.RUNNING
    done = s.pump.pump(s.t0_us + 43 * M + S)
    assert done.state is PumpRunState.COMPLETE and done.volume_infused_ml == pytest.approx(35.0)
    assert s.truth(s.t0_us + 60 * M)["delivered_mg"] == pytest.approx(35.0)


def test_cable_pulled_link_fault_is_handed_out_once_when_due() -> None:
    s = sim("cable_pulled")
    (f,) = s.link_faults
    assert (f.kind, f.device, f.duration_s) == ("link_down", "monitor", 20)
    assert f.t_us == s.t0_us + 25 * M and f.end_us == f.t_us + 20 * S
    assert s.events(f.t_us - 1) == []
    assert s.events(f.t_us) == [f]
    assert s.events(f.t_us + 5 * S) == []
    assert s.truth(f.t_us + 5 * S)["link_faults"] == ["link_down:monitor"]
    assert s.truth(f.end_us)["link_faults"] == []


def test_garbage_scenario_lists_bursts_streams_and_bit_errors() -> None:
    s = sim("garbage")
    kinds = [(f.kind, f.device) for f in s.link_faults]
    assert kinds == [("garbage", "monitor"), ("garbage", "pump"), ("bit_errors", "monitor"),
                     ("bit_errors", "pump"), ("garbage", "monitor")]
    burst, stream, bits = s.link_faults[0], s.link_faults[1], s.link_faults[2]
    assert burst.bytes == 64 and burst.duration_s is None
    assert stream.rate_bytes_s == 20 and stream.duration_s == 30
    assert bits.probability == 0.0005 and bits.duration_s == 60
    assert [f.kind for f in s.events(s.t0_us + 25 * M)] == ["garbage", "garbage", "bit_errors"]


def test_motion_scenario_flags_artefact_and_sensor_faults() -> None:
    s = sim("motion")
    t = s.t0_us + 12 * M + 10 * S
    assert s.vitals.quality(Channel.PLETH, t) & Quality.ARTEFACT
    assert s.vitals.quality(Channel.ECG, t) & Quality.ARTEFACT
    assert s.vitals.quality(Channel.ETCO2, t) == Quality.OK
    s.vitals.numerics(s.t0_us + 22 * M + 13 * S)
    failed = s.patient.nibp_measurement
    assert failed is not None and failed.failed  # NIBP during the retching fails ...
    s.vitals.numerics(s.t0_us + 22 * M + 45 * S)
    retry = s.patient.nibp_measurement
    assert retry is not None and not retry.failed  # ... and the retry 30 s later works
    t = s.t0_us + 35 * M + 30 * S
    assert s.vitals.numerics(t)[Channel.SPO2] is None
    assert s.vitals.quality(Channel.SPO2, t) & Quality.SENSOR_OFF
    assert s.vitals.numerics(s.t0_us + 50 * M + 10 * S)[Channel.HR] is None
    assert s.vitals.numerics(s.t0_us + 51 * M)[Channel.HR] is not None


def test_playback_scenario_sends_the_recording(data_dir: Path) -> None:
    import wfdb

    s = sim("playback_a103l", data_dir)
    assert isinstance(s.vitals, PlaybackVitals) and isinstance(s.patient, PatientModel)
    rec = wfdb.rdrecord(str(data_dir / "physionet" / "a103l"))
    y = s.vitals.wave(Channel.ECG, 250.0, 1000, s.start_us)
    assert np.array_equal(y, rec.p_signal[:1000, 0])
    v = s.vitals.numerics(s.start_us + 30 * S)
    assert 115 <= v[Channel.HR] <= 135  # type: ignore[operator]  # from the recorded ECG
    assert v[Channel.NIBP_SYS] is not None and v[Channel.ETCO2] is not None  # the model's
    assert s.vitals.wave(Channel.CO2_WAVE, 62.5, 10, s.start_us).shape == (10,)


def test_playback_scenario_without_data_dir_fails_with_a_clear_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(ScenarioError, match=r"data directory.*KAPMONITOR_DATA"):
        sim("playback_a103l")
    monkeypatch.setenv(DATA_ENV, str(DATA / "nowhere"))
    with pytest.raises(ScenarioError, match=r"playback_a103l: data directory .*nowhere"):
        sim("playback_a103l")
    monkeypatch.setenv(DATA_ENV, str(DATA))
    assert isinstance(sim("playback_a103l").vitals, PlaybackVitals)


# --------------------------------------------------------------------------- validation

MINIMAL = """
[scenario]
name = "t"
description = "test"
duration_min = 30
baseline_min = 5
[patient]
weight_kg = 70
[programme]
dose_mg_per_kg = 0.5
duration_min = 40
concentration_mg_ml = 1.0
"""


@pytest.mark.parametrize(("extra", "message"), [
    ("[[event]]\nat_min = 40\nkind = \"nibp\"\n", "outside the run"),
    ("[[event]]\nat_min = 1\nkind = \"set\"\nchannel = \"nibp_mean\"\nvalue = 80\n",
     "cannot be set"),
    ("[[event]]\nat_min = 1\nkind = \"set\"\nchannel = \"spo2\"\nvalue = 20\n",
     "from 50 to 100"),
    ("[[event]]\nat_min = 1\nkind = \"link_down\"\ndevice = \"printer\"\nduration_s = 5\n",
     "device must be one of monitor, pump"),
    ("[[event]]\nat_min = 1\nkind = \"garbage\"\ndevice = \"pump\"\n", "either bytes"),
    ("[[event]]\nat_min = 1\nkind = \"bit_errors\"\ndevice = \"pump\"\nprobability = 2\n"
     "duration_s = 5\n", "above 1"),
    ("[[event]]\nat_min = 1\nkind = \"pump\"\naction = \"explode\"\n", "is not one of"),
    ("[[event]]\nat_min = 1\nkind = \"pump\"\naction = \"bolus\"\n", "missing ['volume_ml']"),
    ("[[event]]\nat_min = 1\nkind = \"alarm\"\ncode = \"lava\"\n", "alarm code 'lava'"),
    ("[[event]]\nat_min = 1\nkind = \"dance\"\n", "unknown event kind"),
    ("[[event]]\nat_min = 1\nkind = \"artefact\"\nsensors = \"spo2\"\nduration_s = 5\n",
     "non-empty list"),
    ("[extras]\nx = 1\n", "unknown table"),
])
def test_bad_scenarios_are_refused_with_the_reason(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=r"scenario t|unknown table") as exc:
        parse_scenario(MINIMAL + extra, "bad.toml")
    assert message in str(exc.value)


def test_programme_is_checked_by_the_dose_calculator_bounds() -> None:
    text = MINIMAL.replace("dose_mg_per_kg = 0.5", "dose_mg_per_kg = 3.0")
    with pytest.raises(ScenarioError, match=r"refused by the dose calculator.*hard maximum"):
        parse_scenario(text, "bad.toml")
    with pytest.raises(ScenarioError, match=r"\[patient\].*sbp 20"):
        parse_scenario(MINIMAL.replace("weight_kg = 70", "weight_kg = 70\nsbp = 20"), "b")
    with pytest.raises(ScenarioError, match="no scenario named 'nope'"):
        load_scenario("nope")


def test_scenario_from_a_file_and_a_direct_programme(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL.split("[programme]")[0] + "[programme]\nrate_ml_h = 60\n"
                    "vtbi_ml = 10\nconcentration_mg_ml = 2\n[[event]]\nat_min = 0\n"
                    "kind = \"pump\"\naction = \"start\"\n", encoding="utf-8")
    sc = load_scenario(path)
    assert isinstance(sc, Scenario) and sc.direct == (60.0, 10.0, 2.0)
    s = Simulation.from_scenario(path, start_us=START)
    assert s.pump.pump(s.t0_us + 20 * M).volume_infused_ml == pytest.approx(10.0)
    assert s.pump.cumulative_mg(s.t0_us + 20 * M) == pytest.approx(20.0)
    other = dataclasses.replace(sc, profile=dataclasses.replace(sc.profile, archetype="typical"))
    assert Simulation.from_scenario(other, start_us=START).patient.truth(START)[
        "archetype"] == "typical"


def test_desaturation_scenario_raises_its_apnoea_alarm() -> None:
    """Issue 13 item 6: the scenario's header expects a high-priority apnoea alarm; its
    20-s RR 0 with EtCO2 still reading 24 gave only a medium "RR LOW 0"."""
    from kapmonitor.alarms import AlarmEngine
    from kapmonitor.drivers.sim.scenario import Simulation
    from kapmonitor.model import Channel, Reading

    t0 = 1_800_000_000_000_000
    sim = Simulation(load_scenario("desaturation"), seed=7, start_us=t0)
    eng = AlarmEngine()
    events = []
    for s in range(26 * 60, 29 * 60):
        t = t0 + 10 * 60_000_000 + s * 1_000_000  # 10 min baseline, then session time s
        values = sim.patient.numerics(t)
        events += eng.evaluate([Reading(ch, float(values[ch]), t, "mon")
                                for ch in (Channel.RR, Channel.ETCO2, Channel.SPO2)
                                if values.get(ch) is not None])
        events += eng.tick(t)
    raised = [e for e in events if e.key == "rr.apnoea" and e.action.value == "raise"]
    assert len(raised) == 1 and raised[0].priority.value == "high"
    minute = (raised[0].t_us - t0) / 60e6 - 10
    assert 27 + 20 / 60 <= minute <= 27 + 23 / 60  # 20 s after breathing stopped
