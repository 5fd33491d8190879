"""Every pump protocol over a real pseudo-terminal (issue 5), on one simulated clock shared
by the peer and the host: the 0.5 mg/kg over 40 min programme for 70 kg at 1 mg/mL reports
52.5 mL/h and reaches 35 mL; an occlusion mid-infusion reaches the bus as a pump alarm
within one poll period; a silent pump becomes stale, then disconnected.

Steady under CPU load (issue 12). A pty puts the scheduler between host and peer, and on a
loaded 2-core machine a thread can wait 10-300 ms for a core (measured here with another
process spinning on one core). Whatever waits in *simulated* time is that wait times the
speed: at the former 300x, a 100 ms hiccup was 30 s, far beyond the Fresenius base's 2 s
for an ENQ answer and the 1 s of slack the occlusion check allows. Hence:

- A ``GearedClock``: the long uneventful stretches of the programme run at ``CRUISE``
  (a hiccup there only delays a poll or, for Fresenius, makes the simulated base drop
  and the host reopen its session: volumes are the pump's own counter, so nothing is
  lost); the occlusion deadline is measured at ``CAREFUL``, where 300 ms of wall time is
  0.6 s of simulated time, inside the slack. Time is continuous across the shifts, so
  the pump model delivers the same 35 mL.
- ``DISCONNECT_AFTER_S`` of simulated silence before the transport reconnects: at cruise
  that is still 0.6 s of wall time, so only the silence the test scripts disconnects,
  never a hiccup. (A reconnect would reopen the same pty, and a Fresenius pty reopened
  with 7E1 is refused on recent kernels; see test_transport.py.) STALE may flicker
  during cruise; only the final silence is asserted.
- Every wait is on a condition, with an overall deadline in wall seconds.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import pytest

from kapmonitor.drivers import registry
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.testing import GearedClock
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import DeviceState, DeviceStatus, Message, PumpAlarm, PumpState, Reading

PUMPS = [registry.get(n) for n in registry.available("pump")]
#: Simulated speed for the long stretches (the Fresenius ENQ deadline is the tightest:
#: 2 s simulated is 13 ms of wall time at 150x, so it cruises lower).
CRUISE = 150.0
CRUISE_FOR = {"fresenius": 100.0}
#: Simulated speed while a deadline is measured.
CAREFUL = 2.0
#: Simulated seconds without a valid frame before the transport reconnects.
DISCONNECT_AFTER_S = 90.0

#: The poll period of each protocol's host (its document), in simulated seconds.
POLL_S = {"bbraun-bcc": 5.0, "fresenius": 1.0, "alaris": 5.0, "ne1000": 1.0}


def _wait(q: queue.Queue, until: Callable[[list[Message]], bool],
          timeout: float = 60.0) -> list[Message]:
    """Collect published batches until ``until(all collected)``, for at most ``timeout``
    wall seconds in all."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise queue.Empty
            got.extend(q.get(timeout=left))
        except queue.Empty:
            tail = [(m.state.value, m.detail) for m in got if isinstance(m, DeviceStatus)]
            pytest.fail(f"timed out after {timeout} s; states {tail[-4:]}, last: {got[-3:]}")
    return got


def _states(msgs: list[Message]) -> list[PumpState]:
    return [m for m in msgs if isinstance(m, PumpState)]


def _link_states(msgs: list[Message]) -> list[DeviceState]:
    """The transport's states (a Fresenius base also reports its modules, "pump/1")."""
    return [m.state for m in msgs if isinstance(m, DeviceStatus) and m.source == "pump"]


def _polled(msgs: list[Message]) -> int:
    """Poll replies seen: rate and volume readings come with every one."""
    return sum(isinstance(m, Reading) for m in msgs)


@pytest.mark.parametrize("entry", PUMPS, ids=[e.name for e in PUMPS])
def test_programme_occlusion_and_silence_over_a_pty(entry: registry.ProtocolEntry) -> None:
    clock = GearedClock(CRUISE_FOR.get(entry.name, CRUISE))
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    peer = entry.peer_class()(pump, seed=2)
    server = PtyServer(peer, clock=clock, name=entry.name).start()
    q: queue.Queue = queue.Queue()
    host = entry.host_class()("pump")
    runner = DeviceRunner(server.url, host, q.put, clock=clock, backoff_s=(0.02, 0.05),
                          disconnect_after_s=DISCONNECT_AFTER_S).start()
    try:
        _wait(q, lambda m: any(isinstance(x, DeviceStatus) and x.state is DeviceState.STREAMING
                               for x in m))
        pump.start(clock())
        first = _wait(q, lambda m: any(s.rate_ml_h and s.rate_ml_h > 0 for s in _states(m)))
        assert max(s.rate_ml_h or 0 for s in _states(first)) == pytest.approx(52.5, abs=0.1)

        # occlusion half way: on the bus within one poll period (plus a tick of slack)
        _wait(q, lambda m: any((s.volume_infused_ml or 0) >= 17.5 for s in _states(m)))
        with clock.geared(CAREFUL):
            _wait(q, lambda m: _polled(m) >= 2)  # the link answers in this gear
            t_occl = clock()
            pump.raise_alarm(PumpAlarm("occlusion", "sim", "Occlusion"), t_occl)
            seen = _wait(q, lambda m: any(s.alarms for s in _states(m)))
        t_seen = next(s.t_us for s in _states(seen) if s.alarms)
        assert (t_seen - t_occl) / 1e6 <= POLL_S[entry.name] + 1.0
        pump.clear_alarms()
        pump.start(clock())  # the nurse frees the line and restarts

        done = _wait(q, lambda m: any((s.volume_infused_ml or 0) >= 35.0 - 0.01
                                      for s in _states(m)), timeout=120)
        volumes = [s.volume_infused_ml for s in _states(done) if s.volume_infused_ml is not None]
        assert max(volumes) == pytest.approx(35.0, abs=0.01)
        assert volumes == sorted(volumes)  # monotonic within the infusion

        peer.silent = True
        quiet = _wait(q, lambda m: DeviceState.DISCONNECTED in _link_states(m))
        states = _link_states(quiet)
        assert DeviceState.STALE in states
        assert host.codec.stats.error_count == 0  # no fault scripted, no decoding error
        assert runner.is_alive()
    finally:
        runner.stop()
        server.stop()
