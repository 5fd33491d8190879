"""A clock that runs ``speed`` times faster than the wall clock, for ``--speed N``.

Host time stays in integer microseconds since the epoch. The clock is anchored at
``epoch_us``: it reads exactly the wall time there and runs ``speed`` times faster from it,
``t = epoch + (wall - epoch) * speed``. Two processes given the same speed and epoch (a
``kapmonitor simulate`` and a ``kapmonitor record`` started a moment apart) therefore agree
on the simulated time, which is what lets a recording at speed line up with the
simulator's ground truth. With no epoch the clock starts at the wall time of its creation.
"""

from __future__ import annotations

import time

__all__ = ["ScaledClock"]


class ScaledClock:
    def __init__(self, speed: float = 1.0, epoch_us: int | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = float(speed)
        self.epoch_us = epoch_us if epoch_us is not None else time.time_ns() // 1000
        # wall time from a monotonic source, so a wall-clock step does not jump the sim
        self._offset_ns = time.time_ns() - time.monotonic_ns()

    def wall_us(self) -> int:
        return (time.monotonic_ns() + self._offset_ns) // 1000

    def __call__(self) -> int:
        if self.speed == 1.0:
            return self.wall_us()
        return self.epoch_us + int((self.wall_us() - self.epoch_us) * self.speed)

    def seconds(self, sim_seconds: float) -> float:
        """Wall seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.speed
