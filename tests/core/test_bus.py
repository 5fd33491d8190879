"""The bus fans out from device threads; a failing subscriber never stops the others, and a
failing critical subscriber is reported, never swallowed."""

from __future__ import annotations

import threading

from kapmonitor.bus import Bus
from kapmonitor.model import Channel, Reading


def _r(i: int) -> Reading:
    return Reading(Channel.HR, float(i), i, "m")


def test_every_subscriber_gets_every_message_from_many_threads() -> None:
    bus = Bus()
    got: list[list[Reading]] = [[], []]
    lock = threading.Lock()

    def sub(i: int):
        def cb(msgs):
            with lock:
                got[i].extend(msgs)
        return cb

    bus.subscribe(sub(0), name="a", critical=True)
    bus.subscribe(sub(1), name="b")
    threads = [threading.Thread(target=lambda k=k: [bus.publish([_r(k * 1000 + j)])
                                                    for j in range(1000)], name=f"dev{k}")
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.t_us for r in got[0]) == list(range(4000))
    assert sorted(r.t_us for r in got[1]) == list(range(4000))


def test_critical_error_is_reported_and_others_still_served() -> None:
    reported = []
    bus = Bus(on_critical_error=lambda sub, exc: reported.append((sub.name, str(exc))))
    seen = []

    def broken(msgs):
        raise OSError("disk full")

    crit = bus.subscribe(broken, name="recorder", critical=True)
    best = bus.subscribe(lambda m: 1 / 0, name="plot")
    bus.subscribe(seen.extend, name="alarms", critical=True)
    bus.publish([_r(1)])
    bus.publish([_r(2)])
    assert reported == [("recorder", "disk full"), ("recorder", "disk full")]
    assert crit.errors == 2 and best.errors == 2
    assert [r.t_us for r in seen] == [1, 2]


def test_unsubscribe() -> None:
    bus = Bus()
    seen = []
    sub = bus.subscribe(seen.extend, name="x")
    sub.close()
    bus.publish([_r(1)])
    assert seen == []
