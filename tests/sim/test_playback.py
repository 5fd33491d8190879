"""Playback of real recordings (drivers/sim/playback.py) from shared/data (not in the
repository; it must be there: these tests fail, never skip, without it), and of the
project's long-form CSV (a fixture written here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.drivers.sim.feed import ScriptedVitals, VitalsFeed
from kapmonitor.drivers.sim.playback import (
    CSV_COLUMNS,
    PlaybackError,
    PlaybackVitals,
    Recording,
    detect_beats,
    import_wfdb,
    read_csv,
    read_recording,
    read_wfdb,
)
from kapmonitor.model import Channel, Quality

S = 1_000_000
START = 1_700_000_000_000_000
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
A103L = DATA / "physionet" / "a103l"
S00001 = DATA / "physionet" / "s00001-2896-10-10-00-31n"


@pytest.fixture(scope="module")
def a103l() -> Recording:
    assert A103L.with_suffix(".hea").is_file(), (
        f"recording a103l is missing: expected {A103L}.hea (shared/data, next to the "
        "repository; see shared/data/README.md)")
    return read_wfdb(A103L)


@pytest.fixture(scope="module")
def raw_a103l() -> np.ndarray:
    assert A103L.with_suffix(".hea").is_file(), f"recording a103l is missing at {A103L}"
    return import_wfdb().rdrecord(str(A103L)).p_signal


@pytest.fixture(scope="module")
def s00001() -> Recording:
    assert Path(str(S00001) + ".hea").is_file(), (
        f"numerics record s00001 is missing: expected {S00001}.hea (shared/data)")
    return read_wfdb(S00001)


def pull(feed: PlaybackVitals, ch: Channel, rate: float, sizes: list[int],
         t_first: int = START) -> np.ndarray:
    out, done = [], 0
    for n in sizes:
        done += n
        out.append(feed.wave(ch, rate, n, t_first + round(done * 1e6 / rate)))
    return np.concatenate(out)


# --------------------------------------------------------------------------- WFDB


def test_a103l_is_read_as_ecg_and_pleth_at_250_hz(a103l: Recording) -> None:
    assert set(a103l.waves) == {Channel.ECG, Channel.PLETH}  # lead V has no channel
    for w in a103l.waves.values():
        assert w.rate_hz == 250.0 and len(w.samples) == 82_500
    assert a103l.waves[Channel.ECG].label == "II"
    assert a103l.duration_s == pytest.approx(330.0)


def test_a103l_samples_come_out_exactly_at_250_hz(a103l: Recording,
                                                  raw_a103l: np.ndarray) -> None:
    feed = PlaybackVitals(a103l, start_us=START)
    rng = np.random.default_rng(1)
    sizes = list(rng.integers(1, 400, size=300))
    sizes.append(82_500 - sum(sizes))
    assert sizes[-1] > 0
    ecg = pull(feed, Channel.ECG, 250.0, sizes)
    pleth = pull(feed, Channel.PLETH, 250.0, [82_500])
    assert np.array_equal(ecg, raw_a103l[:, 0])  # sample by sample, in order
    assert np.array_equal(pleth, raw_a103l[:, 2])
    again = feed.wave(Channel.ECG, 250.0, 10, START + 330 * S + 40_000)  # looped
    assert np.array_equal(again, raw_a103l[:10, 0])


def test_a103l_resampled_at_125_hz_has_the_right_counts_and_values(
        a103l: Recording, raw_a103l: np.ndarray) -> None:
    feed = PlaybackVitals(a103l, start_us=START)
    sizes = [32] * 300 + [17, 1, 0, 250]
    y = pull(feed, Channel.PLETH, 125.0, sizes)
    assert len(y) == sum(sizes)
    # 125 Hz falls on every other recorded sample: linear interpolation gives them exactly
    assert np.allclose(y, raw_a103l[: 2 * len(y): 2, 2], rtol=0, atol=1e-12)
    # at 100 Hz the value is the linear interpolation between the neighbours
    z = pull(PlaybackVitals(a103l, start_us=START), Channel.ECG, 100.0, [64] * 50)
    t_rec = np.arange(82_500) / 250.0
    expect = np.interp(np.arange(len(z)) / 100.0, t_rec, raw_a103l[:, 0])
    assert np.allclose(z, expect, rtol=0, atol=1e-12)


def test_without_loop_samples_after_the_end_are_nan_and_flagged(a103l: Recording) -> None:
    feed = PlaybackVitals(a103l, start_us=START, loop=False, offset_s=329.0)
    y = feed.wave(Channel.ECG, 250.0, 500, START + 2 * S)
    assert np.all(np.isfinite(y[:250])) and np.all(np.isnan(y[250:]))
    assert feed.quality(Channel.ECG, START + S // 2) == Quality.OK
    assert feed.quality(Channel.ECG, START + 3 * S) == Quality.INVALID


def test_hr_and_pulse_are_derived_from_the_recorded_beats(a103l: Recording) -> None:
    feed = PlaybackVitals(a103l, start_us=START)
    feed_vitals: VitalsFeed = feed
    v = feed_vitals.numerics(START + 60 * S)
    assert 118 <= v[Channel.HR] <= 134  # type: ignore[operator]  # about 126 /min
    assert 118 <= v[Channel.PULSE] <= 134  # type: ignore[operator]
    beats = detect_beats(a103l.waves[Channel.PLETH].samples, 250.0, "pleth")
    assert 620 <= len(beats) <= 720  # ~126 /min over 330 s
    assert feed.quality(Channel.HR, START + 60 * S) == Quality.OK
    assert feed.numerics(START + 2 * S)[Channel.HR] is not None  # window across the seam


def test_channels_the_recording_lacks_come_from_the_fallback(a103l: Recording) -> None:
    fb = ScriptedVitals(values={Channel.SPO2: 97.0, Channel.HR: 60.0, Channel.ETCO2: 35.0})
    feed = PlaybackVitals(a103l, start_us=START, fallback=fb)
    v = feed.numerics(START + 30 * S)
    assert v[Channel.SPO2] == 97.0 and v[Channel.ETCO2] == 35.0
    assert v[Channel.HR] != 60.0  # the recording's own rate wins
    assert feed.wave(Channel.CO2_WAVE, 62.5, 5, START).shape == (5,)
    with pytest.raises(ValueError, match="has no co2_wave wave"):
        PlaybackVitals(a103l, start_us=START).wave(Channel.CO2_WAVE, 62.5, 5, START)


def test_numerics_record_s00001(s00001: Recording) -> None:
    """1/min HR, SpO2, RESP and intermittent NIBP; 0 and the WFDB invalid sample are
    missing values."""
    assert {Channel.HR, Channel.PULSE, Channel.SPO2, Channel.RR, Channel.NIBP_SYS,
            Channel.NIBP_DIA, Channel.NIBP_MEAN} <= set(s00001.numerics)
    assert not s00001.waves
    raw = import_wfdb().rdrecord(str(S00001))
    hr = raw.p_signal[:, raw.sig_name.index("HR")]
    nbp = raw.p_signal[:, raw.sig_name.index("NBPSys")]
    feed = PlaybackVitals(s00001, start_us=START)
    assert feed.numerics(START + 30 * S)[Channel.HR] is None  # minute 0: HR 0 = no value
    for minute in (1, 2, 100, 1000):
        v = feed.numerics(START + minute * 60 * S + 30 * S)
        assert v[Channel.HR] == pytest.approx(hr[minute])
    measured = np.flatnonzero(np.isfinite(nbp) & (nbp > 0))
    first, second = int(measured[0]), int(measured[1])
    assert feed.numerics(START + (first * 60 - 1) * S)[Channel.NIBP_SYS] is None
    v = feed.numerics(START + (first * 60 + 5) * S)
    assert v[Channel.NIBP_SYS] == nbp[first]
    assert feed.nibp_measured_us == START + first * 60 * S
    v = feed.numerics(START + (second * 60 - 5) * S)  # held until the next measurement
    assert v[Channel.NIBP_SYS] == nbp[first] and feed.nibp_measured_us == START + first * 60 * S
    feed.numerics(START + (second * 60 + 5) * S)
    assert feed.nibp_measured_us == START + second * 60 * S


def test_numerics_record_beside_a_wave_record(a103l: Recording, s00001: Recording) -> None:
    feed = PlaybackVitals(a103l, start_us=START, numerics_recording=s00001)
    v = feed.numerics(START + 14 * 60 * S)
    assert v[Channel.SPO2] == 96.0  # from the numerics record (minute 14)
    assert v[Channel.HR] == feed.tracks[Channel.HR].values[14]  # the record's HR wins
    assert v[Channel.NIBP_SYS] == 120.0


def test_missing_record_is_refused_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(PlaybackError, match=r"no header file nothing\.hea"):
        read_wfdb(tmp_path / "nothing")


# --------------------------------------------------------------------------- CSV


def write_csv(path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] = CSV_COLUMNS
              ) -> Path:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in r)
                                  for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def utc(t: float) -> str:
    return f"2024-05-01T10:{int(t) // 60 + 10:02d}:{t % 60:09.6f}Z"


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    rows: list[tuple[object, ...]] = []
    for k in range(4):  # numerics every 2 s, the session starting 6 s before t0
        t = -6.0 + 2 * k
        rows.append((t, utc(t + 600), "hr", 70 + k, "/min", 0))
        rows.append((t, utc(t + 600), "spo2", 98 if k != 2 else None, "%", 1 if k == 2 else 0))
    rows.append((-3.0, utc(597), "nibp_sys", 120, "mm[Hg]", 0))
    rows.append((-3.0, utc(597), "nibp_dia", 80, "mm[Hg]", 0))
    for j in range(100):  # a pleth at 50 Hz for 2 s
        t = -6.0 + j / 50
        rows.append((f"{t:.3f}", utc(t + 600), "pleth", round(math.sin(j / 5), 4), "1", 0))
    return write_csv(tmp_path / "session.csv", rows)


def test_csv_is_read_and_played(tiny_csv: Path) -> None:
    rec = read_recording(tiny_csv)
    assert rec.waves[Channel.PLETH].rate_hz == 50.0
    assert len(rec.waves[Channel.PLETH].samples) == 100
    feed = PlaybackVitals(rec, start_us=START, loop=False)
    assert feed.numerics(START + S)[Channel.HR] == 70.0
    v = feed.numerics(START + 4 * S + 1)
    assert v[Channel.HR] == 72.0 and v[Channel.SPO2] is None  # empty value = invalid
    assert feed.quality(Channel.SPO2, START + 4 * S + 1) == Quality.INVALID
    assert feed.quality(Channel.HR, START + 4 * S + 1) == Quality.OK
    assert v[Channel.NIBP_SYS] == 120.0 and feed.nibp_measured_us == START + 3 * S
    assert feed.numerics(START + 2 * S)[Channel.NIBP_SYS] is None  # not yet measured
    y = feed.wave(Channel.PLETH, 50.0, 100, START + 2 * S)
    assert np.array_equal(y, np.round(np.sin(np.arange(100) / 5), 4))
    assert len(feed.wave(Channel.PLETH, 125.0, 250, START + 2 * S)) == 250


@pytest.mark.parametrize(("row", "message"), [
    ((0.0, "", "heart", 70, "/min", 0), "unknown channel 'heart'"),
    ((0.0, "", "hr", 70, "mmHg", 0), "hr in 'mmHg'"),
    ((0.0, "", "hr", "seventy", "/min", 0), "line 2"),
    ((0.0, "yesterday", "hr", 70, "/min", 0), "line 2"),
    (("nan", "", "hr", 70, "/min", 0), "not a finite number"),
])
def test_bad_csv_rows_are_refused_with_the_line(tmp_path: Path, row: tuple, message: str
                                                ) -> None:
    with pytest.raises(PlaybackError, match=r"line 2|unknown channel|in 'mmHg'") as exc:
        read_csv(write_csv(tmp_path / "bad.csv", [row]))
    assert message in str(exc.value)


def test_bad_csv_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PlaybackError, match="header"):
        read_csv(write_csv(tmp_path / "h.csv", [], header=("time", "channel", "value")))
    with pytest.raises(PlaybackError, match="no data rows"):
        read_csv(write_csv(tmp_path / "e.csv", []))
    uneven = [(t, "", "ecg", 0.1, "mV", 0) for t in (0.0, 0.004, 0.008, 0.02)]
    with pytest.raises(PlaybackError, match="not evenly sampled"):
        read_csv(write_csv(tmp_path / "u.csv", uneven))
    with pytest.raises(PlaybackError, match="No such file"):
        read_csv(tmp_path / "absent.csv")
