"""What a protocol peer reports: the values handed to a simulated device.

A peer knows its protocol, not the patient. It asks a feed for the numerics to put in the
next frame and for the next n wave samples at its own wave rate, or, for a pump peer, for
the pump's state now. The patient and pump models of the simulator implement these
interfaces; the tests use the small scripted feeds below, so a test states exactly which
values must come out the far end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kapmonitor.model import Channel, PumpAlarm, PumpRunState, PumpState

__all__ = ["ProgrammedPump", "PumpFeed", "ScriptedVitals", "VitalsFeed", "stopping_alarms"]


class VitalsFeed(Protocol):
    def numerics(self, now_us: int) -> Mapping[Channel, float | None]:
        """Current value of each numeric channel; None = not available (sent as the
        protocol's invalid marker)."""
        ...

    def wave(self, channel: Channel, rate_hz: float, n: int, now_us: int) -> np.ndarray:
        """The next n samples of a wave at the peer's rate (float, channel units)."""
        ...


def stopping_alarms(alarms: tuple[PumpAlarm, ...]) -> tuple[PumpAlarm, ...]:
    """The alarms a protocol without non-stopping notices can report. A richer pump model
    raises low-priority notices ("near end") that such a pump (B. Braun's unclassified
    flags, New Era's letters) can only express as an alarm, which the host must then take
    for an unknown, high-priority one."""
    return tuple(a for a in alarms if a.high_priority)


class PumpFeed(Protocol):
    def pump(self, now_us: int) -> PumpState:
        """What the pump is doing now."""
        ...


@dataclass
class ScriptedVitals:
    """Fixed numerics (changeable between frames) and deterministic sine waves whose
    samples are numbered, so a test can check none is lost or duplicated: sample k of a
    wave is ``amplitude * sin(2*pi*k/period)`` rounded to ``step``."""

    values: dict[Channel, float | None] = field(default_factory=dict)
    period: int = 50
    amplitude: float = 1.0
    step: float = 0.0
    sent: dict[Channel, int] = field(default_factory=dict)

    def numerics(self, now_us: int) -> Mapping[Channel, float | None]:
        return dict(self.values)

    def wave(self, channel: Channel, rate_hz: float, n: int, now_us: int) -> np.ndarray:
        k0 = self.sent.get(channel, 0)
        k = np.arange(k0, k0 + n, dtype=np.float64)
        y = self.amplitude * np.sin(2 * math.pi * k / self.period)
        if self.step:
            y = np.round(y / self.step) * self.step
        self.sent[channel] = k0 + n
        return y


@dataclass
class ProgrammedPump:
    """A pump running one programme: ``rate_ml_h`` until ``vtbi_ml`` is infused, started
    at ``start_us``. Alarms can be injected and cleared; an active alarm stops delivery.
    The volume is exact (integrated piecewise), so a test can check a driver's reading
    against it to the protocol's resolution."""

    rate_ml_h: float
    vtbi_ml: float
    start_us: int | None = None
    drug: str | None = "ketamine"
    concentration_mg_ml: float | None = 1.0
    alarms: tuple[PumpAlarm, ...] = ()
    infusion_id: int = 1
    _infused_before_ml: float = 0.0
    _segment_start_us: int | None = None
    _paused: bool = False

    def __post_init__(self) -> None:
        # a pump built with a start time is running from then on
        if self.start_us is not None and self._segment_start_us is None and not self._paused:
            self._segment_start_us = self.start_us

    def start(self, now_us: int) -> None:
        self.start_us = self.start_us or now_us
        self._segment_start_us = now_us
        self._paused = False

    def pause(self, now_us: int) -> None:
        self._infused_before_ml = self._volume(now_us)
        self._segment_start_us = None
        self._paused = True

    def raise_alarm(self, alarm: PumpAlarm, now_us: int) -> None:
        self.pause(now_us)
        self.alarms = (*self.alarms, alarm)

    def clear_alarms(self) -> None:
        self.alarms = ()

    def _volume(self, now_us: int) -> float:
        v = self._infused_before_ml
        if self._segment_start_us is not None:
            v += self.rate_ml_h * max(0, now_us - self._segment_start_us) / 3.6e9
        return min(v, self.vtbi_ml)

    def pump(self, now_us: int) -> PumpState:
        if self.start_us is None and self._segment_start_us is None and not self._paused:
            state = PumpRunState.STOPPED
        elif self.alarms:
            state = PumpRunState.ALARM
        elif self._volume(now_us) >= self.vtbi_ml:
            state = PumpRunState.COMPLETE
        elif self._paused:
            state = PumpRunState.PAUSED
        else:
            state = PumpRunState.RUNNING
        v = self._volume(now_us)
        return PumpState(
            t_us=now_us,
            state=state,
            rate_ml_h=self.rate_ml_h if state is PumpRunState.RUNNING else 0.0,
            volume_infused_ml=v,
            vtbi_ml=max(0.0, self.vtbi_ml - v),
            drug=self.drug,
            concentration_mg_ml=self.concentration_mg_ml,
            alarms=self.alarms,
            infusion_id=self.infusion_id,
            source="sim-pump",
        )
