"""Alarm tones as clinical.md §5.2 describes them, the player's schedule without a sound
device, and the plot pieces (sweeping strip, bounded series) in isolation."""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import AudioMode, AudioState
from kapmonitor.live import LiveBuffers
from kapmonitor.model import Channel, Reading, WaveChunk
from kapmonitor.ui.sounds import RATE_HZ, TONES, AlarmSounder, write_tones


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE_HZ)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)


def _pulses(y: np.ndarray) -> list[tuple[float, float]]:
    """(start s, length s) of each pulse, from a 5 ms envelope."""
    win = int(0.005 * RATE_HZ)
    env = np.abs(y[: len(y) // win * win]).reshape(-1, win).max(axis=1)
    on = env > 0.05 * env.max()
    out, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start * 0.005, (i - start) * 0.005))
            start = None
    if start is not None:
        out.append((start * 0.005, (len(on) - start) * 0.005))
    return out


@pytest.mark.parametrize(("priority", "count"), [(Priority.HIGH, 10), (Priority.MEDIUM, 3),
                                                 (Priority.LOW, 1)])
def test_tones_follow_the_standard(tmp_path: Path, priority: Priority, count: int) -> None:
    paths = write_tones(tmp_path)
    y = _read(paths[priority])
    pulses = _pulses(y)
    assert len(pulses) == count
    lo, hi = (0.075, 0.200) if priority is Priority.HIGH else (0.125, 0.250)
    for _, length in pulses:
        assert lo - 0.01 <= length <= hi + 0.01
    if priority is Priority.HIGH:  # grouped 3 + 2, 3 + 2: the gaps show the grouping
        gaps = [b[0] - (a[0] + a[1]) for a, b in itertools.pairwise(pulses)]
        short = min(gaps)
        groups = [i for i, g in enumerate(gaps) if g > 1.8 * short]
        assert groups == [2, 4, 7]
    # spectrum of one pulse: fundamental in 150-1000 Hz, >= 4 harmonics within 15 dB
    start, length = pulses[0]
    seg = y[int(start * RATE_HZ): int((start + length) * RATE_HZ)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    freqs = np.fft.rfftfreq(seg.size, 1 / RATE_HZ)
    f0 = TONES[priority].fundamental_hz
    assert 150 <= f0 <= 1000

    def level(f: float) -> float:
        band = (freqs > f * 0.97) & (freqs < f * 1.03)
        return float(spec[band].max())

    base = level(f0)
    harmonics = [k * f0 for k in range(2, 6) if 300 <= k * f0 <= 4000]
    assert len(harmonics) >= 4
    for f in harmonics:
        assert 20 * np.log10(level(f) / base) >= -15


def test_player_schedule_without_a_device_and_room_mute(qapp, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    s = AlarmSounder(settings, "7", cache_dir=tmp_path / "snd")
    try:
        # offscreen there is no audio output: the window says so, nothing fails
        assert not s.available
        assert s.status() == "no audio output"
        s.update_state(AudioState(AudioMode.SOUNDING, Priority.MEDIUM))
        s.update_state(AudioState(AudioMode.SOUNDING, Priority.MEDIUM))  # no change
        s.update_state(AudioState(AudioMode.SOUNDING, Priority.HIGH))  # escalation
        assert [p for p, _ in s.played] == [Priority.MEDIUM, Priority.HIGH]
        assert s._timer.isActive() and s._timer.interval() == 10_000
        s.update_state(AudioState(AudioMode.PAUSED, Priority.HIGH, 120.0))
        assert not s._timer.isActive() and s.priority is None
        # a room mute an earlier version kept in the settings is ignored: AUDIO OFF is the
        # engine's, recorded with a reason, and ends with the session (issue 13 item 4)
        settings.setValue("audio/muted/7", True)
        again = AlarmSounder(settings, "7", enable_output=False)
        assert again.status() == "no audio output"
        again.update_state(AudioState(AudioMode.OFF, Priority.HIGH, off_reason="asleep"))
        assert again.priority is None and again.played == []
    finally:
        s.shutdown()


def test_sweep_blanks_ahead_of_the_write_point_and_breaks_at_the_wrap(qapp) -> None:
    from kapmonitor.ui.plots import WaveStrip

    strip = WaveStrip(Channel.PLETH, 10.0)
    try:
        rate = 100
        t0 = 1_000_000_000_000_000 + 3_500_000
        t = t0 + np.arange(10 * rate) * 10_000  # exactly one window of samples
        v = np.sin(np.arange(t.size) / 10.0)
        x, y = strip.sweep(t, v, int(t[-1]))
        assert x.min() >= 0 and x.max() < 10
        assert np.isnan(y[:39]).all()  # the oldest ~0.4 s are erased ahead of the pen
        assert not np.isnan(y[45])
        wrap = int(np.flatnonzero(np.diff(x) < 0)[0])
        assert np.isnan(y[wrap])
        live = LiveBuffers()
        live([WaveChunk(Channel.PLETH, int(t[0]), 100.0, v.astype(np.float32), "m")])
        assert strip.refresh(live, int(t[-1]))
        assert not strip.refresh(live, int(t[-1]))  # nothing new: nothing redrawn
    finally:
        strip.deleteLater()


def test_series_appends_only_new_samples_and_stays_bounded(qapp) -> None:
    import pyqtgraph as pg

    from kapmonitor.ui.plots import Series

    live = LiveBuffers(numeric_seconds=3600, numeric_rate_hz=1.0)
    s = Series(Channel.HR, pg.PlotDataItem(), capacity=1000)
    base = 1_700_000_000_000_000
    live([Reading(Channel.HR, 60.0 + i % 7, base + i * 1_000_000, "m") for i in range(600)])
    assert s.pull(live) and s.n == 600
    assert not s.pull(live)
    live([Reading(Channel.HR, 70.0, base + (600 + i) * 1_000_000, "m") for i in range(900)])
    assert s.pull(live)
    assert s.n <= 1000 and s.last_t_us == base + 1499 * 1_000_000
    t = s._t[: s.n]
    assert (np.diff(t) > 0).all()


def test_installed_qt_binding_does_not_leak_none(qapp) -> None:
    """PySide6 6.12.0 dropped a reference to None on every void call, which aborts a
    window on Python 3.11 within minutes: the binding we run must not do that, and the
    known-bad release is refused with a clear reason (ui/_qt_check.py)."""
    import sys
    from unittest import mock

    from kapmonitor.ui import _qt_check

    if sys.version_info < (3, 12):
        assert not _qt_check.void_calls_leak(20_000)
        with mock.patch("PySide6.__version__", "6.12.0"), \
                pytest.raises(_qt_check.QtBindingError, match=r"pip install 'PySide6!=6\.12\.0'"):
            _qt_check.check_binding()
