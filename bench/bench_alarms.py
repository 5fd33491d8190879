"""What alarm evaluation costs at a full room's data rate, against a naive engine.

A room delivers about 1,000 samples/s: ~20 numerics/s (monitor numerics and pump telemetry),
the rest wave samples (ECG, pleth, CO2) that arrive as chunks and are NOT evaluated per
sample (a chunk only proves its device is alive). The engine also ticks (4 Hz here) for
delays, reminders, the audio pause and the stale watchdog.

The stream is ten simulated minutes with a desaturation, a tachycardia, NIBP every 5 min with
one hypertensive reading, and a pump occlusion, so raises, escalations and clears happen.

Baseline, measured in the same run: a naive engine that keeps the latest value of every
channel and re-evaluates EVERY limit of EVERY channel on each reading (no per-channel index),
with the same delay logic. Target: the real engine uses < 2 % of one core.

    python bench/bench_alarms.py [--minutes 10] [--repeat 5]

Never part of the pass/fail suite: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from kapmonitor.alarm_limits import AlarmLimits, Threshold
from kapmonitor.alarms import AlarmEngine
from kapmonitor.model import (
    Channel,
    Message,
    PumpAlarm,
    PumpRunState,
    PumpState,
    Reading,
    WaveChunk,
)

S = 1_000_000
T0 = 1_700_000_000 * S
WAVES = ((Channel.ECG, 500.0), (Channel.PLETH, 300.0), (Channel.CO2_WAVE, 200.0))  # 1000/s
CHUNK_S = 0.125
NUMERIC_HZ = 2.0  # 8 monitor numerics at 2 Hz = 16/s, + 4 pump numerics at 1 Hz = 20/s
TICK_HZ = 4.0


def vitals(t: float) -> dict[Channel, float]:
    """A patient with a desaturation at 2-4 min and a tachycardia at 5-7 min."""
    spo2 = 97.0 - (11.0 if 120 <= t < 240 else 0.0) + math.sin(t / 7)
    hr = 78.0 + (60.0 if 300 <= t < 420 else 0.0) + 2 * math.sin(t / 5)
    return {
        Channel.HR: hr, Channel.PULSE: hr + 1, Channel.SPO2: min(spo2, 100.0),
        Channel.PERF_INDEX: 2.1, Channel.RR: 14 + math.sin(t / 9), Channel.ETCO2: 37.0,
        Channel.FICO2: 0.0, Channel.TEMP: 36.8,
    }


def build_stream(minutes: float) -> list[tuple[str, int, list[Message]]]:
    """(what, time, messages) in time order: 'num', 'wave', 'pump', 'nibp' or 'tick'."""
    out: list[tuple[str, int, list[Message]]] = []
    dur = minutes * 60
    rng = np.random.default_rng(1)
    n = int(dur * NUMERIC_HZ)
    for i in range(n):
        t = i / NUMERIC_HZ
        tu = T0 + round(t * S)
        out.append(("num", tu, [Reading(ch, v, tu, "monitor") for ch, v in vitals(t).items()]))
    for ch, rate in WAVES:
        k = round(rate * CHUNK_S)
        for i in range(int(dur / CHUNK_S)):
            tu = T0 + round(i * CHUNK_S * S)
            samples = rng.standard_normal(k).astype(np.float32)
            out.append(("wave", tu, [WaveChunk(ch, tu, rate, samples, "monitor")]))
    for i in range(int(dur)):
        tu = T0 + i * S
        alarms = (PumpAlarm("occlusion", "b10"),) if 450 <= i < 470 else ()
        state = PumpRunState.ALARM if alarms else PumpRunState.RUNNING
        ps = PumpState(tu, state, 52.5, i * 52.5 / 3600, 35.0, alarms=alarms, source="pump")
        out.append(("pump", tu, [
            ps,
            Reading(Channel.PUMP_RATE, 52.5, tu, "pump"),
            Reading(Channel.VOLUME_INFUSED, i * 52.5 / 3600, tu, "pump"),
            Reading(Channel.VTBI, 35.0, tu, "pump"),
            Reading(Channel.DELIVERED_DOSE, i * 52.5 / 3600, tu, "pump"),
        ]))
    for i, (sbp, dbp, mean) in enumerate([(128, 80, 96), (185, 112, 136)]):
        tu = T0 + (i * 300 + 30) * S
        out.append(("nibp", tu, [Reading(Channel.NIBP_SYS, sbp, tu, "monitor"),
                                 Reading(Channel.NIBP_DIA, dbp, tu, "monitor"),
                                 Reading(Channel.NIBP_MEAN, mean, tu, "monitor")]))
    for i in range(int(dur * TICK_HZ)):
        out.append(("tick", T0 + round(i / TICK_HZ * S), []))
    out.sort(key=lambda x: x[1])
    return out


class NaiveEngine:
    """The baseline: on every reading, every limit of every channel is evaluated again
    against that channel's latest value (no per-channel indexing), with the same delay
    rule. It raises and clears but has no latching, pause or advisories."""

    def __init__(self, limits: AlarmLimits) -> None:
        self.rules: list[tuple[Channel, str, Threshold, int]] = []
        for ch, lim in limits.channels.items():
            for side, th in (("low", lim.low), ("high", lim.high),
                             ("low_hp", lim.escalate_low), ("high_hp", lim.escalate_high)):
                if th is not None:
                    self.rules.append((ch, side, th, round(lim.delay_s * S)))
        self.latest: dict[Channel, float] = {}
        self.onset: dict[tuple[Channel, str], int] = {}
        self.active: set[tuple[Channel, str]] = set()
        self.events: list[tuple[str, tuple[Channel, str], int]] = []

    def evaluate(self, messages: list[Message]) -> None:
        for m in messages:
            if isinstance(m, Reading):
                self.latest[m.channel] = m.value
                self._all(m.t_us)

    def tick(self, now: int) -> None:
        self._all(now)

    def _all(self, t: int) -> None:
        for ch, side, th, delay in self.rules:
            v = self.latest.get(ch)
            key = (ch, side)
            if v is not None and th.violated(v):
                o = self.onset.setdefault(key, t)
                if key not in self.active and t - o >= delay:
                    self.active.add(key)
                    self.events.append(("raise", key, t))
            else:
                self.onset.pop(key, None)
                if key in self.active:
                    self.active.discard(key)
                    self.events.append(("clear", key, t))


def run(stream: list[tuple[str, int, list[Message]]], make: Callable[[], object]
        ) -> tuple[dict[str, int], dict[str, int], int]:
    """Time each kind of call; returns (ns per kind, calls per kind, events)."""
    eng = make()
    ns = dict.fromkeys(("num", "wave", "pump", "nibp", "tick"), 0)
    calls = dict.fromkeys(ns, 0)
    pc = time.perf_counter_ns
    evaluate, tick = eng.evaluate, eng.tick  # type: ignore[attr-defined]
    for what, t, msgs in stream:
        t0 = pc()
        if what == "tick":
            tick(t)
        else:
            evaluate(msgs)
        ns[what] += pc() - t0
        calls[what] += 1
    events = len(eng.events) if isinstance(eng, NaiveEngine) else eng.stats()["events"]
    return ns, calls, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    stream = build_stream(args.minutes)
    wall_s = args.minutes * 60
    n_numeric = sum(len([m for m in msgs if isinstance(m, Reading)]) for _, _, msgs in stream)
    n_samples = sum(len(m) for _, _, msgs in stream for m in msgs if isinstance(m, WaveChunk))
    limits = AlarmLimits.defaults()
    print(f"stream: {args.minutes:g} min, {n_numeric / wall_s:.1f} numerics/s, "
          f"{n_samples / wall_s:.0f} wave samples/s in {CHUNK_S * 1000:g} ms chunks, "
          f"{TICK_HZ:g} ticks/s")

    results = {}
    for name, make in (("engine", lambda: AlarmEngine(limits)),
                       ("naive", lambda: NaiveEngine(limits))):
        runs = [run(stream, make) for _ in range(args.repeat)]
        totals = [sum(r[0].values()) for r in runs]
        best = runs[totals.index(min(totals))]
        results[name] = (best, statistics.median(totals))

    (ns, calls, events), med = results["engine"]
    (nns, ncalls, nevents), nmed = results["naive"]

    def per_reading(d: dict[str, int]) -> float:
        # monitor frames + pump telemetry + NIBP: every numeric Reading and PumpState
        return (d["num"] + d["pump"] + d["nibp"]) / 1000 / (n_numeric + calls["pump"])

    share = sum(ns.values()) / 1e9 / wall_s * 100
    nshare = sum(nns.values()) / 1e9 / wall_s * 100
    print(f"engine: {events} events; per numeric reading {per_reading(ns):.2f} us, "
          f"per wave chunk {ns['wave'] / 1000 / calls['wave']:.2f} us, "
          f"per tick {ns['tick'] / 1000 / calls['tick']:.2f} us")
    print(f"engine: {share:.4f} % of one core at this rate (median of {args.repeat}: "
          f"{med / 1e9 / wall_s * 100:.4f} %); target < 2 %: "
          f"{'met' if share < 2 else 'NOT met'}")
    print(f"naive : {nevents} events; per numeric reading {per_reading(nns):.2f} us "
          f"(every limit of every channel on each reading), per tick "
          f"{nns['tick'] / 1000 / ncalls['tick']:.2f} us")
    print(f"naive : {nshare:.4f} % of one core (median {nmed / 1e9 / wall_s * 100:.4f} %)")
    print(f"ratio : naive / engine per numeric reading = {per_reading(nns) / per_reading(ns):.2f}"
          f"; total = {sum(nns.values()) / sum(ns.values()):.2f}")
    per_sample = per_reading(nns) * (n_samples + n_numeric) / wall_s / 1e6 * 100
    print(f"naive, waves evaluated per sample (why they are not): ~{per_sample:.1f} % of one "
          f"core")


if __name__ == "__main__":
    main()
