"""Ring buffers are written by device threads and read by the GUI timer at the same time:
every snapshot must be internally consistent (times increasing, values matching their
times), whatever the interleaving."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from kapmonitor.live import LiveBuffers, RingBuffer
from kapmonitor.model import Channel, DeviceState, DeviceStatus, Quality, Reading, WaveChunk


def test_ring_keeps_newest_in_time_order() -> None:
    ring = RingBuffer(5)
    ring.extend(np.arange(3, dtype=np.int64), np.arange(3.0))
    ring.extend(np.arange(3, 9, dtype=np.int64), np.arange(3.0, 9.0))
    snap = ring.snapshot()
    assert snap.t_us.tolist() == [4, 5, 6, 7, 8]
    assert snap.values.tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert ring.snapshot(since_us=7).t_us.tolist() == [7, 8]
    assert ring.latest() == (8, 8.0)
    ring.extend(np.arange(100, 120, dtype=np.int64), np.arange(20.0))  # more than capacity
    assert ring.snapshot().t_us.tolist() == [115, 116, 117, 118, 119]


def test_hammered_from_several_threads_snapshots_stay_consistent() -> None:
    """Four writers append (t, value=t) pairs in their own increasing sequences while
    two readers snapshot continuously; every snapshot must pair each time with its own
    value, and after the writers finish nothing written was lost from the newest window."""
    ring = RingBuffer(4096)
    writers, per_writer = 4, 20_000
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def write(w: int) -> None:
        for k in range(per_writer // 10):
            t = np.arange(k * 10, k * 10 + 10, dtype=np.int64) * writers + w
            ring.extend(t, t.astype(np.float64))

    def read() -> None:
        while not stop.is_set():
            snap = ring.snapshot()
            if not np.array_equal(snap.t_us.astype(np.float64), snap.values):
                errors.append("a time was paired with another time's value")
                return
            reads[0] += 1

    readers = [threading.Thread(target=read, name=f"reader-{i}") for i in range(2)]
    ws = [threading.Thread(target=write, args=(w,), name=f"writer-{w}") for w in range(writers)]
    for t in readers + ws:
        t.start()
    for t in ws:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(60)
    assert not errors, errors
    assert reads[0] > 0
    assert ring.version == writers * per_writer
    assert len(ring.snapshot()) == 4096


def test_live_buffers_route_messages_and_break_on_disconnect() -> None:
    live = LiveBuffers(numeric_seconds=60, wave_seconds=2)
    t = 1_000_000_000
    live([Reading(Channel.HR, 72, t, "monitor"), Reading(Channel.SPO2, 97, t, "monitor"),
          Reading(Channel.RR, 14, t, "capno")])
    live([WaveChunk(Channel.PLETH, t, 125.0, np.ones(300), "monitor")])
    assert live.latest(Channel.HR) == (t, 72.0)
    pleth = live.ring(Channel.PLETH)
    assert pleth is not None and len(pleth) == 250  # 2 s at 125 Hz
    last_t = pleth.snapshot().t_us[-1]
    assert last_t == t + (299 * 8000)

    live([DeviceStatus("monitor", DeviceState.DISCONNECTED, t + 5_000_000)])
    assert math.isnan(live.latest(Channel.HR)[1])
    assert math.isnan(live.latest(Channel.PLETH)[1])
    assert live.latest(Channel.RR) == (t, 14.0)  # another device, untouched
    assert live.devices["monitor"].state is DeviceState.DISCONNECTED


@pytest.mark.parametrize("quality", [Quality.INVALID, Quality.SENSOR_OFF, Quality.OUT_OF_RANGE])
def test_unusable_values_are_drawn_as_gaps(quality: Quality) -> None:
    live = LiveBuffers()
    live([Reading(Channel.SPO2, 0.0, 1, "ox", quality=quality)])
    assert math.isnan(live.latest(Channel.SPO2)[1])
    assert live.last_quality[Channel.SPO2] == quality
