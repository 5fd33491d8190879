"""The simulated patient (drivers/sim/patient.py): determinism, plausible baseline,
the ketamine response of clinical.md §3.1 driven by the drug actually delivered, NIBP
cycles, wave continuity and beat rate, sensor faults and artefact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapmonitor.dosing import DoseProgramme
from kapmonitor.drivers.sim.feed import ProgrammedPump, VitalsFeed
from kapmonitor.drivers.sim.patient import (
    ARCHETYPES,
    PatientModel,
    PatientProfile,
    ResponseModel,
)
from kapmonitor.drivers.sim.pump_model import PumpModel
from kapmonitor.model import Channel, Quality
from kapmonitor.pk import CLEMENTS250

S = 1_000_000
M = 60 * S
START = 1_700_000_000_000_000  # a realistic host time (µs since the epoch)
T0 = START + 10 * M  # infusion start after 10 min of baseline
STANDARD = DoseProgramme(weight_kg=70, dose_mg_per_kg=0.5, duration_min=40,
                         concentration_mg_ml=1.0)


def make(archetype: str = "mild", *, seed: int = 1, pump: bool = True,
         pause: tuple[float, float | None] | None = None, **profile: float) -> PatientModel:
    """A patient on the standard programme started at T0 (optionally paused from
    pause[0] to pause[1] minutes after T0, None = never resumed)."""
    p = None
    if pump:
        p = PumpModel.from_programme(STANDARD, start_us=START)
        p.schedule(T0, "start")
        if pause is not None:
            p.schedule(T0 + round(pause[0] * M), "pause")
            if pause[1] is not None:
                p.schedule(T0 + round(pause[1] * M), "resume")
    return PatientModel(PatientProfile(archetype=archetype, **profile), pump=p, seed=seed,
                        start_us=START, t0_us=T0)


def truth_series(pt: PatientModel, key: str, minutes: np.ndarray) -> np.ndarray:
    return np.array([pt.truth(T0 + round(m * M))[key] for m in minutes])


# --------------------------------------------------------------------------- basics


def test_patient_is_a_vitals_feed() -> None:
    pt = make()
    feed: VitalsFeed = pt  # the protocol the peers use
    vals = feed.numerics(START)
    assert {Channel.HR, Channel.SPO2, Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN,
            Channel.RR, Channel.ETCO2, Channel.TEMP} <= set(vals)
    assert feed.wave(Channel.PLETH, 125.0, 10, START).shape == (10,)


def test_same_seed_same_numbers_and_waves_different_seed_differs() -> None:
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    times = [START + k * 7 * S for k in range(200)]
    na = [a.numerics(t) for t in times]
    assert na == [b.numerics(t) for t in times]
    assert na != [c.numerics(t) for t in times]
    wa = a.wave(Channel.ECG, 250.0, 2500, times[-1] + 10 * S)
    wb = b.wave(Channel.ECG, 250.0, 2500, times[-1] + 10 * S)
    assert np.array_equal(wa, wb)
    assert not np.array_equal(wa, c.wave(Channel.ECG, 250.0, 2500, times[-1] + 10 * S))


def test_numbers_do_not_depend_on_how_often_they_are_asked() -> None:
    """Every value is a function of time: polling every second or every 5 minutes gives
    the same numerics at the shared times."""
    a, b = make(seed=9), make(seed=9)
    every_second = {}
    for k in range(0, 50 * 60 + 1):
        v = a.numerics(START + k * S)
        if k % 300 == 0:
            every_second[k] = v
    for k, v in every_second.items():
        assert b.numerics(START + k * S) == v


def test_baseline_stays_plausible_for_two_hours_without_drug() -> None:
    pt = make(pump=False, seed=11)
    bounds = {Channel.HR: (55, 90), Channel.PULSE: (55, 90), Channel.SPO2: (95, 100),
              Channel.RR: (10, 18), Channel.ETCO2: (33, 41), Channel.TEMP: (36.3, 37.1),
              Channel.NIBP_SYS: (108, 136), Channel.NIBP_DIA: (68, 88),
              Channel.NIBP_MEAN: (82, 104), Channel.PERF_INDEX: (1.5, 5.0)}
    seen: dict[Channel, list[float]] = {ch: [] for ch in bounds}
    for k in range(0, 2 * 3600, 2):
        vals = pt.numerics(START + k * S)
        for ch in bounds:
            seen[ch].append(vals[ch])  # type: ignore[arg-type]
    for ch, (lo, hi) in bounds.items():
        got = np.array(seen[ch])
        assert lo <= got.min() and got.max() <= hi, (ch, got.min(), got.max())
    # noise and drift exist (a flat line would pass the bounds too)
    assert np.ptp(seen[Channel.HR]) >= 3 and np.ptp(seen[Channel.NIBP_SYS]) >= 4


def test_map_is_derived_from_the_measured_pressures() -> None:
    pt = make(seed=3)
    for k in range(0, 90, 5):
        v = pt.numerics(T0 + k * M)
        sys_, dia, mean = v[Channel.NIBP_SYS], v[Channel.NIBP_DIA], v[Channel.NIBP_MEAN]
        assert mean == round(dia + (sys_ - dia) / 3)  # type: ignore[operator]


def test_profile_refuses_implausible_values_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"sbp 400 mmHg is outside 70 to 220"):
        PatientProfile(sbp=400)
    with pytest.raises(ValueError, match="diastolic"):
        PatientProfile(sbp=120, dbp=115)
    with pytest.raises(ValueError, match="unknown response archetype"):
        PatientProfile(archetype="volcanic")
    with pytest.raises(ValueError, match=r"unknown patient field\(s\) \['heart'\]"):
        PatientProfile.from_dict({"heart": 70})


# --------------------------------------------------------------------------- NIBP


def test_nibp_cycle_every_5_min_then_15_min_values_held_between() -> None:
    pt = make(seed=2)
    stamps = []
    last = None
    for k in range(0, 131 * 60, 10):
        t = START + k * S
        v = pt.numerics(t)
        if pt.nibp_measured_us != last:
            last = pt.nibp_measured_us
            stamps.append((last - T0) / M)
        elif last is not None:
            prev = pt.nibp_measurement
            assert prev is not None and v[Channel.NIBP_SYS] == prev.sys  # held
    expected = [-10.0, -5.0, *range(0, 61, 5), 75, 90, 105, 120]
    assert stamps == pytest.approx(expected)


def test_request_nibp_measures_now() -> None:
    pt = make(seed=2)
    t = T0 + 7 * M + 13 * S
    pt.numerics(t)
    pt.request_nibp(t)
    assert pt.nibp_measured_us == t
    m = pt.nibp_measurement
    assert m is not None and m.requested and not m.failed


def test_nibp_fails_during_artefact_and_is_retried_30_s_later() -> None:
    pt = make(seed=2)
    pt.schedule(T0 + 20 * M - 5 * S, "artefact", sensors=["nibp"], duration_s=20)
    v = pt.numerics(T0 + 20 * M + S)
    assert v[Channel.NIBP_SYS] is None and v[Channel.NIBP_MEAN] is None
    assert pt.quality(Channel.NIBP_SYS, T0 + 20 * M + S) & Quality.INVALID
    failed = pt.nibp_measurement
    assert failed is not None and failed.failed and "motion" in failed.reason
    v = pt.numerics(T0 + 20 * M + 31 * S)
    assert v[Channel.NIBP_SYS] is not None
    assert pt.nibp_measured_us == T0 + 20 * M + 30 * S


# --------------------------------------------------------------------------- response


def test_response_reference_is_the_standard_regimen_peak() -> None:
    r = ResponseModel(CLEMENTS250, effect_site=True, ec50_ng_ml=120, hill=4)
    assert r.c_ref_ng_ml == pytest.approx(177.3, abs=1.5)  # clinical.md §2.4 at 40 min
    assert r.fraction(r.c_ref_ng_ml) == pytest.approx(1.0)
    assert r.fraction(0.0) == 0.0


@pytest.mark.parametrize("archetype", ["mild", "typical", "hypertensive"])
def test_bp_rise_peaks_at_30_to_40_min_by_archetype_and_returns_by_90(archetype: str) -> None:
    """clinical.md §3.1: peak at 30-40 min, archetype magnitude, baseline by 60-90 min.
    The drug effect is isolated exactly: same seed with and without the infusion."""
    drug, none = make(archetype, seed=4), make(archetype, seed=4, pump=False)
    minutes = np.arange(0.0, 120.5, 0.5)
    d_sbp = truth_series(drug, "sbp", minutes) - truth_series(none, "sbp", minutes)
    d_dbp = truth_series(drug, "dbp", minutes) - truth_series(none, "dbp", minutes)
    d_hr = truth_series(drug, "hr", minutes) - truth_series(none, "hr", minutes)
    a = ARCHETYPES[archetype]
    peak_at = float(minutes[np.argmax(d_sbp)])
    assert 30.0 <= peak_at <= 40.5
    assert d_sbp.max() == pytest.approx(a.d_sbp, rel=0.03)
    assert d_dbp.max() == pytest.approx(a.d_dbp, rel=0.03)
    assert d_hr.max() == pytest.approx(a.d_hr, rel=0.03)
    at = dict(zip(minutes.tolist(), d_sbp.tolist(), strict=True))
    assert at[30.0] >= 0.75 * a.d_sbp  # already high at 30 min
    assert at[10.0] <= 0.2 * a.d_sbp  # rises over the infusion, not at once
    half = float(minutes[(minutes > 40) & (d_sbp <= 0.5 * d_sbp.max())][0])
    assert 15.0 <= half - 40.0 <= 30.0  # half-time after the stop (§3.1: about 20-30 min)
    assert at[90.0] <= 0.25 * a.d_sbp  # toward baseline by 90 min
    # SpO2 / EtCO2 mostly preserved (§3.1): at most -1 point and +2 mmHg
    d_spo2 = truth_series(drug, "spo2", minutes) - truth_series(none, "spo2", minutes)
    assert -1.05 <= d_spo2.min() <= 0.0


def test_measured_nibp_shows_the_hypertensive_response() -> None:
    pt = make("hypertensive", seed=8, sbp=135, dbp=85)
    sys_ = {}
    for m in range(-10, 121, 5):
        v = pt.numerics(T0 + m * M)
        sys_[m] = v[Channel.NIBP_SYS]
    base = np.mean([sys_[m] for m in (-10, -5, 0)])
    assert max(sys_[m] for m in (35, 40)) - base >= 45
    assert sys_[120] - base <= 15


def test_response_follows_actual_delivery_pause_gives_smaller_response() -> None:
    """The PK is fed with what the pump delivered: a pump paused at 15 min and never
    resumed gives a much smaller rise; a 10-min hold from 20 to 30 min gives a smaller
    rise at 40 min than the uninterrupted infusion."""
    full, stopped = make("typical", seed=4), make("typical", seed=4, pause=(15.0, None))
    held = make("typical", seed=4, pause=(20.0, 30.0))
    minutes = np.arange(0.0, 90.0, 1.0)
    r_full = truth_series(full, "response", minutes)
    r_stop = truth_series(stopped, "response", minutes)
    r_held = truth_series(held, "response", minutes)
    assert r_stop.max() < 0.4 * r_full.max()
    assert r_held[40] < r_full[40] - 0.1
    assert stopped.truth(T0 + 90 * M)["delivered_mg"] == pytest.approx(13.125, abs=1e-6)
    assert full.truth(T0 + 90 * M)["delivered_mg"] == pytest.approx(35.0, abs=1e-6)


def test_any_pump_feed_drives_the_patient_through_the_dose_tracker() -> None:
    """A plain PumpFeed (no cumulative_mg) is read through DeliveredDoseTracker."""
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    pump.start(T0)  # pure: it starts counting at T0
    pt = PatientModel(PatientProfile(), pump=pump, seed=1, start_us=START, t0_us=T0)
    ref = make(seed=1)
    for m in (20, 40, 60):
        pt.numerics(T0 + m * M)
        assert pt.truth(T0 + m * M)["cp_ng_ml"] == pytest.approx(
            ref.truth(T0 + m * M)["cp_ng_ml"], rel=2e-3)


def test_overrides_ramp_to_target_and_release_back() -> None:
    pt = make(pump=False, seed=1)
    pt.schedule(START + 10 * M, "set", channel="hr", value=42, ramp_min=2)
    pt.schedule(START + 15 * M, "release", channel="hr", ramp_min=3)
    base = pt.truth(START + 10 * M)["hr"]
    mid = pt.truth(START + 11 * M)["hr"]
    assert mid == pytest.approx((base + 42) / 2, abs=0.6)
    assert pt.truth(START + 12 * M)["hr"] == pytest.approx(42.0)
    assert pt.truth(START + 14 * M)["hr"] == pytest.approx(42.0)
    free = make(pump=False, seed=1)
    assert pt.truth(START + 19 * M)["hr"] == pytest.approx(free.truth(START + 19 * M)["hr"])
    with pytest.raises(ValueError, match="cannot be set"):
        pt.schedule(START + 20 * M, "set", channel="nibp_mean", value=90)
    with pytest.raises(ValueError, match="must be a number from 0 to 250"):
        pt.schedule(START + 20 * M, "set", channel="hr", value=400)


# --------------------------------------------------------------------------- waves


def chunked(pt: PatientModel, ch: Channel, rate: float, sizes: list[int],
            t_first: int) -> np.ndarray:
    out, done = [], 0
    for n in sizes:
        done += n
        out.append(pt.wave(ch, rate, n, t_first + round(done * 1e6 / rate)))
    return np.concatenate(out)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=30),
       which=st.sampled_from([(Channel.ECG, 250.0), (Channel.ECG, 500.0),
                              (Channel.PLETH, 125.0), (Channel.PLETH, 75.0),
                              (Channel.CO2_WAVE, 62.5)]))
def test_waves_join_across_calls_for_any_chunking(sizes: list[int], which: tuple) -> None:
    ch, rate = which
    a = chunked(make(seed=3), ch, rate, sizes, START)
    assert len(a) == sum(sizes)  # exact counts
    b = make(seed=3).wave(ch, rate, sum(sizes), START + round(sum(sizes) * 1e6 / rate))
    assert np.array_equal(a, b)  # any chunking gives the same samples: no seam


def test_wave_has_no_jump_at_chunk_boundaries() -> None:
    pt = make(seed=3)
    y = chunked(pt, Channel.PLETH, 125.0, [31, 32] * 200, START)
    steps = np.abs(np.diff(y))
    assert steps.max() < 0.1  # a pleth never jumps by 10 % of full scale in 8 ms
    ecg = chunked(make(seed=3), Channel.ECG, 250.0, [64, 63] * 100, START)
    assert np.abs(np.diff(ecg)).max() < 0.6  # the QRS upstroke is the steepest part


def count_peaks(y: np.ndarray, rate: float, min_gap_s: float = 0.3) -> np.ndarray:
    """Sample indices of the pulse peaks: local maxima within ±0.2 s above the
    midpoint of the range."""
    w = int(0.2 * rate)
    thr = (y.max() + y.min()) / 2
    peaks = [i for i in range(w, len(y) - w)
             if y[i] > thr and y[i] == y[i - w:i + w + 1].max()]
    out: list[int] = []
    for i in peaks:
        if not out or i - out[-1] >= min_gap_s * rate:
            out.append(i)
    return np.array(out)


@pytest.mark.parametrize("target_hr", [None, 110.0, 48.0])
def test_pleth_beat_rate_follows_hr_within_2_bpm(target_hr: float | None) -> None:
    pt = make(pump=False, seed=12)
    t_start = START + 5 * M
    if target_hr is not None:
        pt.schedule(START + 2 * M, "set", channel="hr", value=target_hr, ramp_min=1)
    pt.wave(Channel.PLETH, 125.0, 1, t_start)  # the stream starts here
    hrs, parts = [], []
    for k in range(1, 61):
        t = t_start + k * S
        parts.append(pt.wave(Channel.PLETH, 125.0, 125, t))
        hrs.append(pt.numerics(t)[Channel.HR])
    y = np.concatenate(parts)
    peaks = count_peaks(y, 125.0)
    rate = 60.0 / (np.mean(np.diff(peaks)) / 125.0)
    assert abs(rate - np.mean(hrs)) <= 2.0, (rate, np.mean(hrs))
    if target_hr is not None:
        assert np.mean(hrs) == pytest.approx(target_hr, abs=2.0)


def test_ecg_r_waves_match_the_heart_rate_and_are_millivolts() -> None:
    pt = make(pump=False, seed=12)
    y = pt.wave(Channel.ECG, 250.0, 250 * 30, START + 30 * S)
    peaks = count_peaks(y, 250.0)
    assert 0.9 <= np.median(y[peaks]) <= 1.3  # R waves about 1.1 mV
    hr = pt.numerics(START + 30 * S)[Channel.HR]
    rate = 60.0 / (np.mean(np.diff(peaks)) / 250.0)
    assert abs(rate - hr) <= 4.0  # type: ignore[operator]


def test_capnogram_reaches_etco2_follows_rr_and_is_flat_in_apnoea() -> None:
    pt = make(pump=False, seed=12, rr=12, etco2=38)
    y = pt.wave(Channel.CO2_WAVE, 62.5, round(62.5 * 60), START + 60 * S)
    assert 34.0 <= y.max() <= 42.0 and y.min() >= -0.01
    rises = np.flatnonzero((y[:-1] < 19) & (y[1:] >= 19))  # one upstroke per breath
    assert 10 <= len(rises) <= 14
    pt.schedule(START + 120 * S, "set", channel="rr", value=0)
    pt.schedule(START + 160 * S, "set", channel="rr", value=12)
    pt.wave(Channel.CO2_WAVE, 62.5, round(62.5 * 70), START + 130 * S)
    flat = pt.wave(Channel.CO2_WAVE, 62.5, round(62.5 * 20), START + 150 * S)  # 130-150 s
    assert np.abs(flat).max() < 0.5
    assert pt.numerics(START + 150 * S)[Channel.RR] == 0.0


def test_pleth_amplitude_follows_perfusion_and_stays_within_one() -> None:
    pt = make(pump=False, seed=12)
    normal = np.ptp(pt.wave(Channel.PLETH, 125.0, 125 * 10, START + 10 * S))
    pt.schedule(START + 20 * S, "set", channel="pi", value=1.5)
    low = pt.wave(Channel.PLETH, 125.0, 125 * 25, START + 35 * S)[-125 * 10:]  # 25-35 s
    assert np.ptp(low) < 0.7 * normal
    pt.schedule(START + 50 * S, "artefact", sensors=["spo2"], duration_s=20, intensity=3)
    art = pt.wave(Channel.PLETH, 125.0, 125 * 35, START + 70 * S)
    assert np.abs(art).max() < 1.0


# --------------------------------------------------------------------------- faults


def test_sensor_off_gives_none_flat_wave_and_quality_flags() -> None:
    pt = make(pump=False, seed=5)
    pt.schedule(START + 30 * S, "sensor_off", sensor="spo2", duration_s=20)
    pt.wave(Channel.PLETH, 125.0, 125 * 30, START + 30 * S)
    y = pt.wave(Channel.PLETH, 125.0, 125 * 10, START + 40 * S)
    assert np.all(y == 0.0)
    v = pt.numerics(START + 40 * S)
    assert v[Channel.SPO2] is None and v[Channel.PULSE] is None
    assert v[Channel.HR] is not None  # the ECG still counts
    q = pt.quality(Channel.SPO2, START + 40 * S)
    assert q & Quality.SENSOR_OFF and q & Quality.INVALID
    assert pt.quality(Channel.HR, START + 40 * S) == Quality.OK
    assert pt.quality(Channel.SPO2, START + 51 * S) == Quality.OK
    assert pt.numerics(START + 51 * S)[Channel.SPO2] is not None


def test_artefact_flags_quality_and_disturbs_numerics_and_waves() -> None:
    pt, ref = make(pump=False, seed=5), make(pump=False, seed=5)
    pt.schedule(START + 60 * S, "artefact", sensors=["spo2", "ecg"], duration_s=20)
    t = START + 70 * S
    assert pt.quality(Channel.PLETH, t) & Quality.ARTEFACT
    assert pt.quality(Channel.ECG, t) & Quality.ARTEFACT
    assert pt.quality(Channel.ETCO2, t) == Quality.OK
    assert pt.numerics(t)[Channel.SPO2] < ref.numerics(t)[Channel.SPO2]  # type: ignore[operator]
    a = pt.wave(Channel.ECG, 250.0, 250 * 80, START + 80 * S)
    b = ref.wave(Channel.ECG, 250.0, 250 * 80, START + 80 * S)
    assert np.array_equal(a[: 250 * 59], b[: 250 * 59])  # untouched before the burst
    assert np.std(a[250 * 61: 250 * 79] - b[250 * 61: 250 * 79]) > 0.1
    assert pt.quality(Channel.PLETH, START + 81 * S) == Quality.OK


def test_wave_arguments_are_checked() -> None:
    pt = make(pump=False)
    with pytest.raises(ValueError, match="not a simulated wave"):
        pt.wave(Channel.HR, 125.0, 10, START)
    with pytest.raises(ValueError, match="positive number of Hz"):
        pt.wave(Channel.PLETH, 0.0, 10, START)
    with pytest.raises(ValueError, match="whole number"):
        pt.wave(Channel.PLETH, 125.0, -1, START)
    assert pt.wave(Channel.PLETH, 125.0, 0, START).shape == (0,)


def test_truth_reports_physiology_and_pk() -> None:
    pt = make("typical", seed=1)
    tr = pt.truth(T0 + 40 * M)
    assert tr["pk_model"] == "clements250" and tr["archetype"] == "typical"
    assert tr["cp_ng_ml"] == pytest.approx(177.3, abs=0.5)  # clinical.md §2.4 Clements
    assert tr["session_min"] == pytest.approx(40.0)
    assert math.isclose(tr["map"], tr["dbp"] + (tr["sbp"] - tr["dbp"]) / 3)
