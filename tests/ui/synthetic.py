"""Synthetic patient data for screenshots and the UI benchmark.

Two pieces, both using only the model types, so they run without a device:

- :func:`publish_history` puts a plausible session history onto a session's bus (baseline,
  infusion start from the pump, a pressor response, NIBP every 5 min, a late desaturation),
  timestamped in the past, so the window opens on a session already under way. It goes
  through the same bus as live data: recorder, alarm engine, live buffers, dose tracking.
- :class:`RealisticVitals` is a ``VitalsFeed`` for the simulated monitor with pulse-shaped
  pleth and a capnogram with a plateau, so the wave strips look like a monitor's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from kapmonitor.model import Channel, Message, PumpRunState, PumpState, Reading, WaveChunk

_US = 1_000_000
_MIN = 60 * _US


def _smooth(t_min: float, start: float, end: float, a: float, b: float) -> float:
    """a before ``start``, b after ``end``, a cosine ramp between."""
    if t_min <= start:
        return a
    if t_min >= end:
        return b
    x = (t_min - start) / (end - start)
    return a + (b - a) * (1 - math.cos(math.pi * x)) / 2


def scenario(t_min: float, *, desat_from_min: float | None = None) -> dict[Channel, float]:
    """Vitals at ``t_min`` minutes from the infusion start: a ketamine pressor response
    (clinical.md §3.1: SBP +15-25 mmHg, HR +10-15 /min, peaking around 20-40 min)."""
    rng = np.random.default_rng(int((t_min + 1000) * 60))
    hr = _smooth(t_min, 2, 22, 72, 91) + rng.normal(0, 1.2)
    sbp = _smooth(t_min, 3, 25, 126, 162) + rng.normal(0, 2)
    dbp = _smooth(t_min, 3, 25, 78, 96) + rng.normal(0, 1.5)
    spo2 = 97.0 + rng.normal(0, 0.4)
    if desat_from_min is not None and t_min >= desat_from_min:
        spo2 = _smooth(t_min, desat_from_min, desat_from_min + 0.6, 97, 85) + rng.normal(0, .3)
    rr = _smooth(t_min, 5, 20, 14, 12) + rng.normal(0, 0.5)
    etco2 = _smooth(t_min, 5, 20, 36, 39) + rng.normal(0, 0.4)
    return {
        Channel.HR: round(hr), Channel.PULSE: round(hr + rng.normal(0, 0.8)),
        Channel.SPO2: round(min(100.0, spo2)), Channel.RR: round(rr),
        Channel.ETCO2: round(etco2), Channel.TEMP: round(36.6 + t_min * 0.002, 1),
        Channel.NIBP_SYS: round(sbp), Channel.NIBP_DIA: round(dbp),
        Channel.NIBP_MEAN: round((sbp + 2 * dbp) / 3),
    }


NIBP = (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN)
CONTINUOUS = (Channel.HR, Channel.PULSE, Channel.SPO2, Channel.RR, Channel.ETCO2, Channel.TEMP)


def publish_history(publish: Callable[[list[Message]], None], now_us: int, *,
                    baseline_min: float, infusion_min: float, rate_ml_h: float,
                    vtbi_ml: float, period_s: float = 5.0, nibp_every_min: float = 5.0,
                    desat_from_min: float | None = None, monitor: str = "monitor",
                    pump: str = "pump/slot11", waves: Mapping[Channel, float] | None = None
                    ) -> int:
    """Publish ``baseline_min`` + ``infusion_min`` minutes ending at ``now_us``; returns t0
    (the infusion start, as the pump's first RUNNING state). ``waves``: channel -> rate Hz
    for wave history (the benchmark fills its strips this way)."""
    t0 = now_us - int(infusion_min * _MIN)
    start = t0 - int(baseline_min * _MIN)
    step = int(period_s * _US)
    next_nibp = start
    batch: list[Message] = []
    wave_next = {ch: start for ch in (waves or {})}
    t = start
    while t <= now_us:
        m = (t - t0) / _MIN
        v = scenario(m, desat_from_min=desat_from_min)
        for ch in CONTINUOUS:
            batch.append(Reading(ch, float(v[ch]), t, monitor))
        if t >= next_nibp:
            next_nibp += int(nibp_every_min * _MIN)
            for ch in NIBP:
                batch.append(Reading(ch, float(v[ch]), t, monitor))
        if t >= t0:
            ran_h = (t - t0) / 3.6e9
            vol = min(vtbi_ml, rate_ml_h * ran_h)
            state = PumpRunState.RUNNING if vol < vtbi_ml else PumpRunState.COMPLETE
            batch.append(PumpState(t, state, rate_ml_h if state is PumpRunState.RUNNING
                                   else 0.0, vol, vtbi_ml - vol, drug="ketamine",
                                   concentration_mg_ml=1.0, infusion_id=1, source=pump))
        else:
            batch.append(PumpState(t, PumpRunState.STOPPED, 0.0, 0.0, vtbi_ml, drug="ketamine",
                                   concentration_mg_ml=1.0, infusion_id=1, source=pump))
        for ch, rate in (waves or {}).items():
            n = round((t + step - wave_next[ch]) * rate / _US)
            if n > 0:
                batch.append(WaveChunk(ch, wave_next[ch], rate,
                                       wave_samples(ch, wave_next[ch], rate, n, 80.0, 13.0),
                                       monitor))
                wave_next[ch] += round(n * _US / rate)
        if len(batch) >= 500:
            publish(batch)
            batch = []
        t += step
    if batch:
        publish(batch)
    return t0


def wave_samples(channel: Channel, t_us: int, rate: float, n: int, hr: float,
                 rr: float) -> np.ndarray:
    """Pleth: a systolic peak and a dicrotic wave per beat; CO2: a capnogram (rise,
    plateau at EtCO2, fall) per breath; ECG: a narrow QRS per beat. Phase-continuous in
    absolute time, so consecutive chunks join."""
    ts = (t_us / _US) + np.arange(n) / rate
    if channel is Channel.CO2_WAVE:
        ph = (ts * rr / 60.0) % 1.0
        rise = np.clip((ph - 0.05) / 0.08, 0, 1)
        fall = np.clip((ph - 0.55) / 0.06, 0, 1)
        return (38.0 * rise * (1 - fall) + 1.5 * ph * rise * (1 - fall)).astype(np.float32)
    ph = (ts * hr / 60.0) % 1.0
    if channel is Channel.ECG:
        return (1.2 * np.exp(-((ph - 0.3) / 0.012) ** 2)
                - 0.2 * np.exp(-((ph - 0.27) / 0.01) ** 2)
                + 0.25 * np.exp(-((ph - 0.6) / 0.05) ** 2)).astype(np.float32)
    return (np.exp(-((ph - 0.18) / 0.07) ** 2) + 0.45 * np.exp(-((ph - 0.45) / 0.09) ** 2)
            ).astype(np.float32)


@dataclass
class RealisticVitals:
    """A ``VitalsFeed``: numerics from ``values`` (changeable), shaped waves."""

    values: dict[Channel, float | None] = field(default_factory=dict)

    def numerics(self, now_us: int) -> Mapping[Channel, float | None]:
        return dict(self.values)

    def wave(self, channel: Channel, rate_hz: float, n: int, now_us: int) -> np.ndarray:
        hr = float(self.values.get(Channel.HR) or 75.0)
        rr = float(self.values.get(Channel.RR) or 14.0)
        t_start = now_us - int(n * _US / rate_hz)
        y = wave_samples(channel, t_start, rate_hz, n, hr, rr)
        if channel is Channel.CO2_WAVE:
            return y.astype(np.float64)
        return y.astype(np.float64) * (40.0 if channel is Channel.PLETH else 1.0)
