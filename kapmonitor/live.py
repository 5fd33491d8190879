"""Per-channel numpy ring buffers that the UI reads at frame rate (DESIGN §2).

Device threads write, one GUI timer reads. Reads never block a writer: each ring is a
seqlock. The writer bumps ``_seq`` to odd, writes, bumps it back to even; a reader copies
and retries if ``_seq`` was odd or moved meanwhile. Writers of the same ring serialise on a
small lock (two devices may both report pulse rate), uncontended in practice. This keeps
the data path free of per-sample signals and of Qt, as pyqtgraph's own scrolling examples
do (CONVENTIONS 7, 11): bounded arrays, copied out in time order, NaN where the signal was
absent so a pulled probe draws as a break and not as a flat line.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .model import (
    CHANNELS,
    Channel,
    ChannelKind,
    DeviceState,
    DeviceStatus,
    Message,
    PumpState,
    Quality,
    Reading,
    WaveChunk,
    device_of,
)

__all__ = ["LiveBuffers", "RingBuffer", "Snapshot"]

_T = TypeVar("_T")

#: Qualities that make a value unfit to draw as a measurement: drawn as a gap.
_NOT_A_MEASUREMENT = Quality.INVALID | Quality.SENSOR_OFF | Quality.OUT_OF_RANGE


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent copy of a ring: times (int64 us), values (float64), write version."""

    t_us: np.ndarray
    values: np.ndarray
    version: int

    def __len__(self) -> int:
        return int(self.t_us.shape[0])


class RingBuffer:
    """Fixed-capacity ring of (time, value) pairs in write order."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._t = np.zeros(capacity, dtype=np.int64)
        self._v = np.full(capacity, np.nan, dtype=np.float64)
        self._count = 0  # total ever written
        self._seq = 0
        self._wlock = threading.Lock()

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    @property
    def version(self) -> int:
        """Changes whenever data is written; a reader skips redraws when it has not."""
        return self._count

    def extend(self, t_us: np.ndarray, values: np.ndarray) -> None:
        n = int(t_us.shape[0])
        if n == 0:
            return
        if n > self.capacity:  # only the newest fit
            t_us, values, n = t_us[-self.capacity :], values[-self.capacity :], self.capacity
        with self._wlock:
            self._seq += 1
            start = self._count % self.capacity
            first = min(n, self.capacity - start)
            self._t[start : start + first] = t_us[:first]
            self._v[start : start + first] = values[:first]
            if first < n:
                self._t[: n - first] = t_us[first:]
                self._v[: n - first] = values[first:]
            self._count += n
            self._seq += 1

    def append(self, t_us: int, value: float) -> None:
        with self._wlock:
            self._seq += 1
            i = self._count % self.capacity
            self._t[i] = t_us
            self._v[i] = value
            self._count += 1
            self._seq += 1

    def _copy(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Times, values and write count in time order (consistent only under the seqlock
        check or the write lock)."""
        count = self._count
        n = min(count, self.capacity)
        idx = (count - n + np.arange(n)) % self.capacity
        return self._t[idx], self._v[idx], count

    def _consistent(self, read: Callable[[], _T]) -> _T:
        """Run ``read`` without blocking the writer: retry while a write is under way or
        happened meanwhile; a reader starved for 1000 tries takes the lock once."""
        for _ in range(1000):
            seq = self._seq
            if not seq & 1:
                out = read()
                if self._seq == seq:
                    return out
        with self._wlock:
            return read()

    def snapshot(self, since_us: int | None = None) -> Snapshot:
        """Copy out in time order; ``since_us`` keeps only samples at or after it."""
        t, v, count = self._consistent(self._copy)
        if since_us is not None and len(t):
            k = int(np.searchsorted(t, since_us, side="left"))
            t, v = t[k:], v[k:]
        return Snapshot(t, v, count)

    def _last(self) -> tuple[int, float]:
        i = (self._count - 1) % self.capacity
        return int(self._t[i]), float(self._v[i])

    def latest(self) -> tuple[int, float] | None:
        if self._count == 0:
            return None
        return self._consistent(self._last)


class LiveBuffers:
    """The live state the UI draws from: one ring per channel, the latest pump state per
    pump, the latest device state per device. It is a bus subscriber (call it with a batch
    of messages) and is best-effort: a display, not the record.

    ``numeric_seconds`` sizes trend rings (at ``numeric_rate_hz`` per channel), and
    ``wave_seconds`` sizes wave rings at the wave's own rate.
    """

    def __init__(self, numeric_seconds: float = 6 * 3600, numeric_rate_hz: float = 2.0,
                 wave_seconds: float = 30.0) -> None:
        self._numeric_capacity = max(16, math.ceil(numeric_seconds * numeric_rate_hz))
        self.wave_seconds = wave_seconds
        self._rings: dict[Channel, RingBuffer] = {}
        self._rates: dict[Channel, float] = {}
        self._sources: dict[Channel, str] = {}
        self._lock = threading.Lock()  # only for creating rings
        self.pumps: dict[str, PumpState] = {}
        self.devices: dict[str, DeviceStatus] = {}
        self.last_quality: dict[Channel, Quality] = {}

    def ring(self, channel: Channel) -> RingBuffer | None:
        return self._rings.get(channel)

    def rate_hz(self, channel: Channel) -> float | None:
        return self._rates.get(channel)

    def channels(self) -> list[Channel]:
        return list(self._rings)

    def _ring_for(self, channel: Channel, rate_hz: float | None = None) -> RingBuffer:
        ring = self._rings.get(channel)
        if ring is None:
            with self._lock:
                ring = self._rings.get(channel)
                if ring is None:
                    if CHANNELS[channel].kind is ChannelKind.WAVE:
                        rate = rate_hz or CHANNELS[channel].nominal_rate_hz or 250.0
                        cap = math.ceil(rate * self.wave_seconds)
                        self._rates[channel] = rate
                    else:
                        cap = self._numeric_capacity
                    ring = RingBuffer(cap)
                    self._rings[channel] = ring
        return ring

    def __call__(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if isinstance(m, Reading):
                value = m.value if not (m.quality & _NOT_A_MEASUREMENT) else math.nan
                self._ring_for(m.channel).append(m.t_us, value)
                self._sources[m.channel] = m.source
                self.last_quality[m.channel] = m.quality
            elif isinstance(m, WaveChunk):
                self._add_wave(m)
            elif isinstance(m, PumpState):
                self.pumps[m.source] = m
            elif isinstance(m, DeviceStatus):
                self.devices[m.source] = m
                if m.state in (DeviceState.DISCONNECTED, DeviceState.STALE,
                               DeviceState.STOPPED):
                    self._break(m.source, m.t_us)

    def _add_wave(self, chunk: WaveChunk) -> None:
        n = len(chunk)
        if n == 0:
            return
        ring = self._ring_for(chunk.channel, chunk.rate_hz)
        t = chunk.t_us + np.round(np.arange(n) * (1e6 / chunk.rate_hz)).astype(np.int64)
        v = chunk.samples.astype(np.float64)
        if chunk.quality & _NOT_A_MEASUREMENT:
            v[:] = np.nan
        ring.extend(t, v)
        self._sources[chunk.channel] = chunk.source

    def _break(self, source: str, t_us: int) -> None:
        """A NaN after the last sample of every channel this device fed: plots show a gap."""
        for channel in self._channels_of(source):
            ring = self._rings[channel]
            last = ring.latest()
            if last is not None and not math.isnan(last[1]):
                ring.append(max(t_us, last[0] + 1), math.nan)

    def _channels_of(self, source: str) -> Iterable[Channel]:
        return [c for c, s in list(self._sources.items()) if device_of(s) == source]

    def latest(self, channel: Channel) -> tuple[int, float] | None:
        ring = self._rings.get(channel)
        return ring.latest() if ring is not None else None
