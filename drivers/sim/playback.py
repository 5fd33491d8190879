"""Playback of real recordings as a ``VitalsFeed``: a peer sends recorded signals through
the real protocols instead of the model's (shared/data/README.md "Ideas for use").

Sources:

- WFDB records (``read_wfdb``, via the ``wfdb`` package): a signal whose name is in
  ``WFDB_SIGNALS`` becomes a channel; signals at >= 1 Hz whose channel is a wave are wave
  tracks (a103l: ECG II and PLETH at 250 Hz), the others numeric tracks (the s00001
  numerics record: HR, PULSE, SpO2, RESP, NIBP at 1/min). In those MIMIC-II numerics a
  value of 0 means "no value" (e.g. HR 0 in the first minute, ABP 0 without a line), so
  0 and the WFDB invalid sample both read as missing; NIBP is intermittent.
- The project's CSV format (``read_csv``), long form, one row per value, header::

      session_time_s,utc_time,channel,value,unit,quality

  ``session_time_s`` seconds from infusion start (negative in the baseline),
  ``utc_time`` ISO 8601 (``2024-05-01T10:00:00.000000Z``), ``channel`` a
  ``kapmonitor.model.Channel`` value, ``value`` a number (empty = invalid), ``unit``
  the channel's UCUM or display unit (checked), ``quality`` the integer
  ``kapmonitor.model.Quality`` flags (empty = 0). An optional seventh column ``source``
  (the device; ``kapmonitor export --format csv`` writes it) is accepted and not used.
  Wave channels must be evenly sampled
  (their rate is the reciprocal of the median spacing). Playback time 0 is the first row.

``PlaybackVitals``: stream k of a wave at rate r is record time ``offset_s + k / r``;
a stream's first call starts at the sample due at ``now_us`` minus n (as the patient
model). When r equals the record's rate the record's samples are returned exactly, in
order; otherwise they are resampled by LINEAR INTERPOLATION between the two neighbouring
samples (no anti-alias filter: downsampling 250 -> 125 Hz keeps what a monitor's own
decimation would roughly keep; good enough for a display and protocol test). With
``loop`` the record repeats (interpolation joins the last sample to the first); without
it, samples after the end are NaN and the quality is INVALID. Numerics hold the last
value at or before the record time; NIBP reports a new measurement only where the record
has one (``nibp_measured_us``). HR and PULSE, when the record has none, are derived from
the ECG and pleth beats (median RR of the last 10 s). Channels the recording lacks come
from ``fallback`` (the patient model in the playback scenario), so EtCO2 or NIBP still
exist beside recorded waves.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from kapmonitor.model import CHANNELS, Channel, ChannelKind, Quality

__all__ = [
    "CSV_COLUMNS",
    "WFDB_SIGNALS",
    "NumericTrack",
    "PlaybackError",
    "PlaybackVitals",
    "Recording",
    "WaveTrack",
    "detect_beats",
    "import_wfdb",
    "read_csv",
    "read_recording",
    "read_wfdb",
]

#: WFDB signal name -> channel (the names used by PhysioNet's ICU databases).
WFDB_SIGNALS: Mapping[str, Channel] = {
    "II": Channel.ECG, "ECG": Channel.ECG, "ECG II": Channel.ECG,
    "PLETH": Channel.PLETH, "CO2": Channel.CO2_WAVE,
    "HR": Channel.HR, "PULSE": Channel.PULSE, "SpO2": Channel.SPO2, "SPO2": Channel.SPO2,
    "RESP": Channel.RR, "RR": Channel.RR, "NBPSys": Channel.NIBP_SYS,
    "NBPDias": Channel.NIBP_DIA, "NBPMean": Channel.NIBP_MEAN, "etCO2": Channel.ETCO2,
    "Temp": Channel.TEMP,
}
#: Units a WFDB signal may carry for a channel, with the factor to the channel's unit.
_WFDB_UNITS: Mapping[Channel, Mapping[str, float]] = {
    Channel.ECG: {"mV": 1.0, "uV": 1e-3},
    Channel.PLETH: {"NU": 1.0, "": 1.0, "1": 1.0, "%": 1.0},
    Channel.CO2_WAVE: {"mmHg": 1.0},
    Channel.HR: {"bpm": 1.0, "/min": 1.0}, Channel.PULSE: {"bpm": 1.0, "/min": 1.0},
    Channel.SPO2: {"%": 1.0}, Channel.RR: {"pm": 1.0, "bpm": 1.0, "/min": 1.0, "rpm": 1.0},
    Channel.NIBP_SYS: {"mmHg": 1.0}, Channel.NIBP_DIA: {"mmHg": 1.0},
    Channel.NIBP_MEAN: {"mmHg": 1.0}, Channel.ETCO2: {"mmHg": 1.0},
    Channel.TEMP: {"degC": 1.0, "C": 1.0, "Cel": 1.0},
}
#: Channels where 0 means "no value" in the MIMIC-II numerics (a real 0 is not a reading).
_ZERO_IS_MISSING = frozenset({Channel.HR, Channel.PULSE, Channel.SPO2, Channel.RR,
                              Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN})
_INTERMITTENT = frozenset({Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN})
CSV_COLUMNS = ("session_time_s", "utc_time", "channel", "value", "unit", "quality")
CSV_OPTIONAL_COLUMNS = ("source",)
_HR_WINDOW_S = 10.0


class PlaybackError(ValueError):
    """A recording that cannot be played; the message names the file and the reason."""


@dataclass(frozen=True, slots=True, eq=False)
class WaveTrack:
    """Evenly sampled wave: sample j at record time ``t0_s + j / rate_hz``."""

    channel: Channel
    rate_hz: float
    samples: np.ndarray
    t0_s: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        arr = np.array(self.samples, dtype=np.float64).reshape(-1)
        arr.setflags(write=False)
        object.__setattr__(self, "samples", arr)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate_hz


@dataclass(frozen=True, slots=True, eq=False)
class NumericTrack:
    """Values at record times (NaN = missing). ``intermittent``: each valid value is a
    new measurement (NIBP); otherwise a value holds until the next."""

    channel: Channel
    times_s: np.ndarray
    values: np.ndarray
    quality: np.ndarray | None = None
    intermittent: bool = False
    label: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class Recording:
    name: str
    waves: Mapping[Channel, WaveTrack] = field(default_factory=dict)
    numerics: Mapping[Channel, NumericTrack] = field(default_factory=dict)
    duration_s: float = 0.0
    source: str = ""


# --------------------------------------------------------------------------- readers


def import_wfdb() -> Any:
    """The ``wfdb`` module. wfdb 4.x calls, at import time, a pandas API that recent
    pandas deprecates; that warning is about wfdb's code, not ours, and would fail a test
    run that turns warnings into errors, so it is silenced for the import only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import wfdb
    return wfdb



def read_recording(path: str | os.PathLike[str]) -> Recording:
    """A CSV file (``.csv``) or a WFDB record (path without extension)."""
    return read_csv(path) if str(path).endswith(".csv") else read_wfdb(path)


def read_wfdb(path: str | os.PathLike[str]) -> Recording:
    """A WFDB record (``path`` without extension) with the signals ``WFDB_SIGNALS``
    knows; the others are left out (a103l's lead V has no channel)."""
    wfdb = import_wfdb()
    p = Path(path)
    if not p.with_suffix(".hea").is_file() and not Path(str(p) + ".hea").is_file():
        raise PlaybackError(f"WFDB record {p}: no header file {p.name}.hea in {p.parent}")
    try:
        rec = wfdb.rdrecord(str(p))
    except Exception as exc:  # wfdb raises many types for a damaged record
        raise PlaybackError(f"WFDB record {p}: cannot read it: {exc}") from exc
    fs = float(rec.fs)
    sig = np.asarray(rec.p_signal, dtype=np.float64)
    waves: dict[Channel, WaveTrack] = {}
    nums: dict[Channel, NumericTrack] = {}
    for j, (name, unit) in enumerate(zip(rec.sig_name, rec.units, strict=True)):
        ch = WFDB_SIGNALS.get(name)
        if ch is None or ch in waves or ch in nums:
            continue
        factors = _WFDB_UNITS.get(ch, {})
        if unit not in factors:
            raise PlaybackError(f"WFDB record {p}: signal {name} is in {unit!r}; "
                                f"{ch.value} accepts {sorted(factors)}")
        x = sig[:, j] * factors[unit]
        if CHANNELS[ch].kind is ChannelKind.WAVE and fs >= 1.0:
            waves[ch] = WaveTrack(ch, fs, x, label=name)
        else:
            x = x.copy()
            if ch in _ZERO_IS_MISSING:
                x[x <= 0] = np.nan
            times = np.arange(len(x)) / fs
            nums[ch] = NumericTrack(ch, times, x, None, ch in _INTERMITTENT, name)
    if not waves and not nums:
        raise PlaybackError(f"WFDB record {p}: none of its signals {rec.sig_name} maps to "
                            "a channel")
    return Recording(p.name, waves, nums, sig.shape[0] / fs, str(p))


def read_csv(path: str | os.PathLike[str]) -> Recording:
    """The project's long-form CSV (see the module docstring); refuses, with the line
    number, anything it cannot take at face value."""
    p = Path(path)
    try:
        f = p.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise PlaybackError(f"CSV {p}: {exc.strerror or exc}") from exc
    rows: dict[Channel, list[tuple[float, float, int]]] = {}
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise PlaybackError(f"CSV {p}: empty file")
        names = tuple(h.strip().lower().replace(" ", "_") for h in header)
        if names not in (CSV_COLUMNS, CSV_COLUMNS + CSV_OPTIONAL_COLUMNS):
            raise PlaybackError(f"CSV {p}: header {header} is not {list(CSV_COLUMNS)}")
        for line, row in enumerate(reader, 2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(names):
                raise PlaybackError(f"CSV {p} line {line}: {len(row)} columns, expected "
                                    f"{len(names)}")
            st, utc, chs, val, unit, qual = (c.strip() for c in row[:6])
            where = f"CSV {p} line {line}"
            try:
                ch = Channel(chs)
            except ValueError:
                raise PlaybackError(f"{where}: unknown channel {chs!r}") from None
            info = CHANNELS[ch]
            if unit not in (info.ucum, info.display_unit):
                raise PlaybackError(f"{where}: {ch.value} in {unit!r}; expected "
                                    f"{info.ucum!r}")
            try:
                t = float(st)
                v = float(val) if val else math.nan
                q = int(qual) if qual else 0
                if utc:
                    datetime.fromisoformat(utc)
            except ValueError as exc:
                raise PlaybackError(f"{where}: {exc}") from None
            if not math.isfinite(t):
                raise PlaybackError(f"{where}: session time {st!r} is not a finite number")
            rows.setdefault(ch, []).append((t, v, q))
    if not rows:
        raise PlaybackError(f"CSV {p}: no data rows")
    t_first = min(r[0] for rs in rows.values() for r in rs)
    t_last = max(r[0] for rs in rows.values() for r in rs)
    waves: dict[Channel, WaveTrack] = {}
    nums: dict[Channel, NumericTrack] = {}
    for ch, rs in rows.items():
        rs.sort(key=lambda r: r[0])
        arr = np.array(rs, dtype=np.float64)
        times = arr[:, 0] - t_first
        if CHANNELS[ch].kind is ChannelKind.WAVE:
            d = np.diff(times)
            if len(d) == 0 or np.median(d) <= 0:
                raise PlaybackError(f"CSV {p}: wave {ch.value} needs at least two samples at "
                                    "distinct times")
            med = float(np.median(d))
            if np.max(np.abs(d - med)) > 0.01 * med:
                raise PlaybackError(f"CSV {p}: wave {ch.value} is not evenly sampled "
                                    f"(spacing {d.min():g} to {d.max():g} s)")
            waves[ch] = WaveTrack(ch, round(1.0 / med, 6), arr[:, 1], float(times[0]), ch.value)
        else:
            nums[ch] = NumericTrack(ch, times, arr[:, 1], arr[:, 2].astype(np.int64),
                                    ch in _INTERMITTENT, ch.value)
    dur = max([t_last - t_first] + [w.t0_s + w.duration_s for w in waves.values()])
    return Recording(p.stem, waves, nums, dur, str(p))


# --------------------------------------------------------------------------- beats


def _movavg(x: np.ndarray, w: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(len(x))
    lo = np.clip(idx - w // 2, 0, len(x))
    hi = np.clip(idx + w // 2 + 1, 0, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def detect_beats(x: np.ndarray, rate_hz: float, kind: str) -> np.ndarray:
    """Beat times (s) in an ECG (``kind="ecg"``: peaks of the smoothed squared slope) or
    a pleth (``"pleth"``: peaks above the 0.75-s moving average). A peak counts when it
    is the maximum within ±0.3 s, above 40 % of the 98th percentile of its 2-s block, and
    at least 0.3 s after the previous beat (<= 200 /min). Simple and deterministic; good
    for a displayed rate, not for arrhythmia analysis."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    if len(x) < 3:
        return np.zeros(0)
    if kind == "ecg":
        d = np.diff(x, prepend=x[0])
        y = _movavg(d * d, max(1, int(0.08 * rate_hz)))
    elif kind == "pleth":
        y = x - _movavg(x, max(1, int(0.75 * rate_hz)))
    else:
        raise ValueError(f"beat detection for {kind!r}: use 'ecg' or 'pleth'")
    w = int(0.6 * rate_hz) | 1
    pad = np.pad(y, (w // 2, w // 2), mode="edge")
    local_max = np.lib.stride_tricks.sliding_window_view(pad, w).max(axis=1)
    block = max(1, int(2 * rate_hz))
    ref = np.repeat([np.percentile(y[i:i + block], 98) for i in range(0, len(y), block)],
                    block)[: len(y)]
    cand = np.flatnonzero((y == local_max) & (y > 0.4 * ref) & (ref > 0))
    out: list[int] = []
    for c in cand:
        if not out or c - out[-1] >= 0.3 * rate_hz:
            out.append(int(c))
    return np.array(out, dtype=np.float64) / rate_hz


# --------------------------------------------------------------------------- feed


class PlaybackVitals:
    """A ``VitalsFeed`` playing ``recording`` from host time ``start_us`` (see the
    module docstring). ``numerics_recording`` adds numeric tracks (e.g. a 1/min record
    beside a 250-Hz wave record); ``fallback`` provides whatever both lack."""

    def __init__(self, recording: Recording, *, start_us: int, loop: bool = True,
                 offset_s: float = 0.0, numerics_recording: Recording | None = None,
                 fallback: Any = None) -> None:
        if not (math.isfinite(offset_s) and offset_s >= 0):
            raise PlaybackError(f"offset_s must be >= 0, got {offset_s!r}")
        self.recording = recording
        self.start_us = int(start_us)
        self.loop = bool(loop)
        self.offset_s = float(offset_s)
        self.fallback = fallback
        self.waves = dict(recording.waves)
        self.tracks: dict[Channel, NumericTrack] = dict(recording.numerics)
        self.numerics_duration_s = recording.duration_s
        if numerics_recording is not None:
            self.tracks.update(numerics_recording.numerics)
            self.numerics_duration_s = numerics_recording.duration_s
        self.duration_s = recording.duration_s
        if self.duration_s <= 0:
            raise PlaybackError(f"recording {recording.name} is empty")
        self._beats: dict[Channel, np.ndarray] = {}
        for ch, src, kind in ((Channel.HR, Channel.ECG, "ecg"),
                              (Channel.PULSE, Channel.PLETH, "pleth")):
            if ch not in self.tracks and src in self.waves:
                w = self.waves[src]
                self._beats[ch] = w.t0_s + detect_beats(w.samples, w.rate_hz, kind)
        if self.loop:  # beats of the previous pass, for the window across the seam
            self._beats = {ch: np.concatenate([b - self.duration_s, b])
                           for ch, b in self._beats.items()}
        self._recorded_nibp = any(tr.intermittent for tr in self.tracks.values())
        self._streams: dict[tuple[Channel, float], int] = {}
        self.nibp_measured_us: int | None = None

    @classmethod
    def from_spec(cls, spec: Any, data_dir: str | os.PathLike[str], *, start_us: int,
                  fallback: Any = None) -> PlaybackVitals:
        """From a scenario's ``[playback]`` (``scenario.PlaybackSpec``); paths are
        relative to ``data_dir``."""
        base = Path(data_dir)
        if not base.is_dir():
            raise PlaybackError(f"data directory {base} does not exist (the recordings of "
                                "shared/data are not in the repository)")
        rec = read_recording(base / spec.record)
        nums = read_recording(base / spec.numerics_record) if spec.numerics_record else None
        return cls(rec, start_us=start_us, loop=spec.loop, offset_s=spec.offset_s,
                   numerics_recording=nums, fallback=fallback)

    # ------------------------------------------------------------------ VitalsFeed

    def numerics(self, now_us: int) -> dict[Channel, float | None]:
        """Recorded (or derived) numerics, the fallback's for the channels the recording
        lacks. ``nibp_measured_us`` follows the recording's NIBP when it has one."""
        out: dict[Channel, float | None] = {}
        if self.fallback is not None:
            out.update(self.fallback.numerics(now_us))
            if not self._recorded_nibp:
                self.nibp_measured_us = getattr(self.fallback, "nibp_measured_us", None)
        tau, k = self._record_time(now_us, self.numerics_duration_s)
        for ch, tr in self.tracks.items():
            value, measured_us = self._track_value(tr, tau, k)
            out[ch] = value
            if measured_us is not None:
                self.nibp_measured_us = measured_us
        for ch, beats in self._beats.items():
            out[ch] = self._derived_rate(beats, now_us)
        return out

    def wave(self, channel: Channel, rate_hz: float, n: int, now_us: int) -> np.ndarray:
        ch = Channel(channel)
        if not (isinstance(rate_hz, int | float) and math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"wave rate must be a positive number of Hz, got {rate_hz!r}")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"sample count must be a whole number >= 0, got {n!r}")
        track = self.waves.get(ch)
        if track is None:
            if self.fallback is None:
                raise ValueError(f"recording {self.recording.name} has no {ch.value} wave "
                                 "and there is no fallback")
            return np.asarray(self.fallback.wave(ch, rate_hz, n, now_us), dtype=np.float64)
        key = (ch, float(rate_hz))
        k0 = self._streams.get(key)
        if k0 is None:
            k0 = max(0, round((int(now_us) - self.start_us) * rate_hz / 1e6) - int(n))
        self._streams[key] = k0 + int(n)
        k = np.arange(k0, k0 + int(n), dtype=np.int64)
        return self._samples(track, k, float(rate_hz))

    def quality(self, channel: Channel, now_us: int) -> Quality:
        ch = Channel(channel)
        track = self.waves.get(ch)
        if track is not None:
            j = self._wave_index(track, now_us)
            if j is None or not math.isfinite(float(track.samples[j])):
                return Quality.INVALID
            return Quality.OK
        if ch in self._beats:
            ok = self._derived_rate(self._beats[ch], now_us) is not None
            return Quality.OK if ok else Quality.INVALID
        tr = self.tracks.get(ch)
        if tr is not None:
            tau, _ = self._record_time(now_us, self.numerics_duration_s)
            i = self._index(tr, tau)
            if tau is None or i is None or not math.isfinite(float(tr.values[i])):
                return Quality.INVALID
            return Quality(int(tr.quality[i])) if tr.quality is not None else Quality.OK
        if self.fallback is not None and hasattr(self.fallback, "quality"):
            return Quality(self.fallback.quality(ch, now_us))
        return Quality.INVALID

    def request_nibp(self, now_us: int) -> None:
        """Passed to the fallback when it measures NIBP (a recording cannot)."""
        if self.fallback is not None and hasattr(self.fallback, "request_nibp"):
            self.fallback.request_nibp(now_us)

    # ------------------------------------------------------------------ internals

    def _record_time(self, now_us: int, duration: float) -> tuple[float | None, int]:
        """(record time, loop count) at host ``now_us``; None past the end without loop."""
        tau = self.offset_s + (int(now_us) - self.start_us) / 1e6
        if tau < 0:
            return None, 0
        if duration <= 0:
            return tau, 0
        if self.loop:
            k = math.floor(tau / duration)
            return tau - k * duration, k
        return (tau if tau < duration else None), 0

    @staticmethod
    def _index(tr: NumericTrack, tau: float | None) -> int | None:
        if tau is None:
            return None
        i = int(np.searchsorted(tr.times_s, tau, side="right")) - 1
        return i if i >= 0 else None

    def _track_value(self, tr: NumericTrack, tau: float | None,
                     loops: int) -> tuple[float | None, int | None]:
        """(value, host time of its measurement for an intermittent track)."""
        if tau is None:
            return None, None
        if tr.intermittent:
            valid = np.flatnonzero(np.isfinite(tr.values) & (tr.times_s <= tau))
            if len(valid) == 0:
                return None, None
            i = int(valid[-1])
            t_meas = self.start_us + round(
                (loops * self.numerics_duration_s + float(tr.times_s[i]) - self.offset_s) * 1e6)
            return float(tr.values[i]), t_meas
        i = self._index(tr, tau)
        if i is None or not math.isfinite(float(tr.values[i])):
            return None, None
        return float(tr.values[i]), None

    def _derived_rate(self, beats: np.ndarray, now_us: int) -> float | None:
        tau, _ = self._record_time(now_us, self.duration_s)
        if tau is None or len(beats) < 2:
            return None
        lo = int(np.searchsorted(beats, tau - _HR_WINDOW_S, side="right"))
        hi = int(np.searchsorted(beats, tau, side="right"))
        b = beats[lo:hi]
        if len(b) < 2:
            return None
        d = sorted(np.diff(b).tolist())
        mid = len(d) // 2
        median = d[mid] if len(d) % 2 else 0.5 * (d[mid - 1] + d[mid])
        return float(round(60.0 / median))

    def _wave_index(self, track: WaveTrack, now_us: int) -> int | None:
        tau, _ = self._record_time(now_us, self.duration_s)
        if tau is None:
            return None
        j = math.floor((tau - track.t0_s) * track.rate_hz)
        n = len(track.samples)
        if self.loop:
            return j % n
        return j if 0 <= j < n else None

    def _samples(self, track: WaveTrack, k: np.ndarray, rate: float) -> np.ndarray:
        s = track.samples
        n = len(s)
        start = (self.offset_s - track.t0_s) * track.rate_hz
        if rate == track.rate_hz and float(start).is_integer():
            j = k + int(start)
            if self.loop:
                return s[j % n].copy()
            out = np.full(len(k), np.nan)
            ok = (j >= 0) & (j < n)
            out[ok] = s[j[ok]]
            return out
        x = start + k.astype(np.float64) * (track.rate_hz / rate)
        j0 = np.floor(x).astype(np.int64)
        f = x - j0
        j1 = j0 + 1
        if self.loop:
            return s[j0 % n] * (1.0 - f) + s[j1 % n] * f
        out = np.full(len(k), np.nan)
        ok = (j0 >= 0) & (j1 < n)
        out[ok] = s[j0[ok]] * (1.0 - f[ok]) + s[j1[ok]] * f[ok]
        last = (j0 == n - 1) & (f == 0.0)  # exactly on the final sample
        out[last] = s[n - 1]
        return out
