"""Latency from the last byte of a frame written into the pty to the model message on the
bus, per protocol (issue 4: p99 <= 20 ms; issue 5: pump state change to PumpState at the
document's poll period). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_latency.py [--seconds 10]

The peer runs on a real pty in this process; the host runs in a DeviceRunner, as in the
app. Each write into the pty is time-stamped; each published batch of data is measured
against the last write before it. Pump latency is also measured end to end: the time from
an occlusion raised on the peer to the first PumpState reporting it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from bench_codecs import VITALS

from kapmonitor.drivers import registry
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import PumpAlarm, PumpState, Reading, WaveChunk, now_us


class StampedPty(PtyServer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_write_ns = 0

    def _write(self, data: bytes) -> None:
        # stamped just before the bytes go in: the reader may publish before write returns
        self.last_write_ns = time.perf_counter_ns()
        super()._write(data)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def run(entry: registry.ProtocolEntry, seconds: float) -> tuple[list[float], float | None]:
    feed = (ScriptedVitals(values=dict(VITALS)) if entry.kind == "monitor"
            else ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0))
    if entry.kind == "pump":
        feed.start(now_us())
    server = StampedPty(entry.peer_class()(feed, seed=1), name=entry.name).start()
    lat: list[float] = []
    alarm_seen = threading.Event()

    def publish(msgs) -> None:
        t = time.perf_counter_ns()
        if server.last_write_ns and any(isinstance(m, Reading | WaveChunk | PumpState)
                                        for m in msgs):
            lat.append((t - server.last_write_ns) / 1e6)
        if any(isinstance(m, PumpState) and m.alarms for m in msgs):
            alarm_seen.set()

    runner = DeviceRunner(server.url, entry.host_class()(entry.kind), publish).start()
    alarm_ms = None
    try:
        time.sleep(seconds)  # a benchmark: let it run for the stated time
        if entry.kind == "pump":
            t0 = time.perf_counter()
            feed.raise_alarm(PumpAlarm("occlusion", "bench", "Occlusion"), now_us())
            if alarm_seen.wait(30):
                alarm_ms = (time.perf_counter() - t0) * 1e3
    finally:
        runner.stop()
        server.stop()
    return lat, alarm_ms


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(f"{'protocol':12} {'batches':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}"
          f" {'alarm->PumpState':>18}")
    for name in registry.available():
        entry = registry.get(name)
        lat, alarm_ms = run(entry, args.seconds)
        alarm = "-" if entry.kind == "monitor" else (
            "not seen" if alarm_ms is None else f"{alarm_ms:.0f} ms")
        print(f"{name:12} {len(lat):8d} {statistics.median(lat):10.2f} {pct(lat, 99):8.2f} "
              f"{max(lat):8.2f} {alarm:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
