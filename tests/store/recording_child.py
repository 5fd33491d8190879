"""A recording process for the crash test: publishes numerics at 100 Hz per channel in
real time through the bus into the recorder, and prints the time of the last sample it
published after every publish, so the parent knows what existed when it killed us."""

from __future__ import annotations

import sys
import time

from kapmonitor.bus import Bus
from kapmonitor.model import Channel, Reading
from kapmonitor.store import Recorder, Store

CHANNELS = (Channel.HR, Channel.SPO2, Channel.RR, Channel.ETCO2, Channel.PULSE)
PERIOD_US = 10_000  # 100 Hz per channel: 500 numerics/s, a busy room's numeric rate


def main(db: str) -> None:
    store = Store.open(db)
    sid = store.create_session(patient="CRASH-1", room="test")
    bus = Bus()
    recorder = Recorder(store, sid).start()
    bus.subscribe(recorder, name="recorder", critical=True)
    t0 = time.time_ns() // 1000
    print(f"session {sid} t0 {t0}", flush=True)
    k = 0
    start = time.monotonic()
    while True:
        due = int((time.monotonic() - start) * 1e6 // PERIOD_US)
        batch = []
        while k <= due:
            t = t0 + k * PERIOD_US
            batch += [Reading(c, float(k % 1000), t, "sim") for c in CHANNELS]
            k += 1
        if batch:
            bus.publish(batch)
            print(f"published {t0 + (k - 1) * PERIOD_US}", flush=True)
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1])
