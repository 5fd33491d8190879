"""A clock that runs ``speed`` times faster than the wall clock, for ``--speed N``.

Host time stays in integer microseconds since the epoch, starting at the real time of
creation, so records made at speed still look like real records; only their spacing is
compressed relative to the wall clock."""

from __future__ import annotations

import time

__all__ = ["ScaledClock"]


class ScaledClock:
    def __init__(self, speed: float = 1.0, start_us: int | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = float(speed)
        self._t0_ns = time.monotonic_ns()
        self.start_us = start_us if start_us is not None else time.time_ns() // 1000

    def __call__(self) -> int:
        return self.start_us + int((time.monotonic_ns() - self._t0_ns) * self.speed) // 1000

    def seconds(self, sim_seconds: float) -> float:
        """Wall seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.speed
