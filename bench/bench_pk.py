"""Cost of the live PK update and of the planned curve (clinical.md §2.2 exact stepping).

Prints figures; never part of the pass/fail suite. Run:
    .venv/bin/python bench/bench_pk.py
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np

from kapmonitor import pk
from kapmonitor.dosing import DeliveredDoseTracker
from kapmonitor.model import PumpRunState, PumpState

US_PER_S = 1_000_000


def per_call(fn: Callable[[int], object], n: int) -> float:
    """Mean µs per call of fn(i) over n calls (best of 3 runs)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def show(label: str, value: float, unit: str) -> None:
    print(f"{label:<58}{value:8.2f} {unit}")


def main() -> None:
    n = 20_000
    rng = np.random.default_rng(1)
    jitter = rng.integers(900_000, 1_100_000, size=3 * n + 10)  # ~1 s telemetry, uneven
    times = np.cumsum(jitter)

    for label, model, effect in (("domino", pk.DOMINO, False),
                                 ("clements250", pk.CLEMENTS250, False),
                                 ("domino + effect site", pk.DOMINO, True)):
        est = pk.PlasmaEstimator(model, 70.0, start_us=0, effect_site=effect)
        tick = itertools.count(1)  # times keep rising across the repeated runs
        us = per_call(lambda i, e=est, c=tick: e.advance(int(times[next(c)]), 0.0146), n)
        show(f"PlasmaEstimator.advance, {label}, uneven dt", us, "µs/step")
    q = est.t_us
    us = per_call(lambda i: est.estimate(q + 500_000 + i, rate_mg_min=0.875), n)
    show("PlasmaEstimator.estimate, projection", us, "µs/query")
    us = per_call(lambda i: est.estimate(q // 2 + i), n)
    show("PlasmaEstimator.estimate, past (history)", us, "µs/query")

    a, b = pk._system(pk.DOMINO, 70.0, None)
    pade = pk._Propagator(a, b, method="pade")
    x = np.array([1.0, 2.0, 3.0])
    us = per_call(lambda i: pade.step(x, 1.0 / 60 + i * 1e-9, 0.875), 5_000)
    show("Padé expm step, augmented 4x4, new dt", us, "µs/step")

    sched = (pk.Infusion(0, 40, 35.0),)
    grid25 = np.arange(0, 121, 5.0)
    grid_dense = np.round(np.arange(0, 120.05, 0.1), 6)
    us = per_call(lambda i: pk.predict_curve(pk.DOMINO, 70.0, sched, grid25), 500)
    show("predict_curve, 25 points (CLI table)", us / 1000, "ms")
    us = per_call(lambda i: pk.predict_curve(pk.DOMINO, 70.0, sched, grid_dense), 50)
    show("predict_curve, 1201 points (CLI peak search)", us / 1000, "ms")

    tracker = DeliveredDoseTracker(concentration_mg_ml=1.0, weight_kg=70.0)
    states = [PumpState(t_us=i * 5 * US_PER_S, state=PumpRunState.RUNNING, rate_ml_h=52.5,
                        volume_infused_ml=52.5 * i * 5 / 3600) for i in range(n)]
    us = per_call(lambda i: tracker.update(states[i]), n // 3)
    show("DeliveredDoseTracker.update", us, "µs/state")

    curve = pk.predict_curve(pk.DOMINO, 70.0, sched, [40.0])
    print(f"check: Domino Cp at 40 min = {curve.cp_ng_ml[0]:.2f} ng/mL (table 240.3)")


if __name__ == "__main__":
    main()
