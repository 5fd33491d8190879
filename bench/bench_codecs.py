"""Decode throughput of every registered codec, and its ratio to the protocol's line rate
(issues 4 and 5: each >= 100x). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_codecs.py

The input is what the protocol's own peer sends in 10 minutes of a simulated session
(host and peer joined in memory), so the frame mix is realistic: numerics, waves, replies.
It is decoded in 4 KiB pieces, as a reader thread delivers it.
"""

from __future__ import annotations

import sys
import time

from kapmonitor.drivers import registry
from kapmonitor.drivers.codecs.base import Role
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.testing import MemoryLink
from kapmonitor.model import Channel

VITALS = {Channel.HR: 72.0, Channel.PULSE: 71.0, Channel.SPO2: 97.0, Channel.NIBP_SYS: 124.0,
          Channel.NIBP_DIA: 78.0, Channel.NIBP_MEAN: 93.0, Channel.RR: 14.0,
          Channel.ETCO2: 37.0, Channel.FICO2: 0.0, Channel.TEMP: 36.8, Channel.PERF_INDEX: 2.5}


def capture(entry: registry.ProtocolEntry, seconds: float = 600.0) -> bytes:
    if entry.kind == "monitor":
        feed = ScriptedVitals(values=dict(VITALS))
    else:
        feed = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    link = MemoryLink(entry.host_class()(entry.kind), entry.peer_class()(feed, seed=1))
    link.connect()
    if entry.kind == "pump":
        feed.start(link.now_us)
    link.step(seconds)
    return bytes(link.peer_sent)


def throughput(entry: registry.ProtocolEntry, data: bytes,
               min_seconds: float = 1.0) -> tuple[float, int]:
    chunk = 4096
    total, t0, rounds = 0, time.perf_counter(), 0
    while True:
        codec = entry.codec_class()(Role.HOST)
        for i in range(0, len(data), chunk):
            codec.feed(data[i : i + chunk])
        total += len(data)
        rounds += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and rounds >= 2:
            return total / dt, codec.stats.error_count


def main() -> int:
    print(f"{'protocol':12} {'capture':>10} {'decode MB/s':>12} {'line kB/s':>10} {'ratio':>8}"
          f" {'errors':>7}")
    for name in registry.available():
        entry = registry.get(name)
        data = capture(entry)
        rate, errors = throughput(entry, data)
        line = entry.host_class().serial_settings.bytes_per_second
        print(f"{name:12} {len(data) / 1024:8.0f} KiB {rate / 1e6:12.2f} "
              f"{line / 1e3:10.2f} {rate / line:7.0f}x {errors:7d}")
    print("(errors: bytes a decoder without the conversation cannot place, e.g. Nonin's ACK "
          "to the host's format command)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
