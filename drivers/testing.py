"""Test kit for device protocols, public so plugin authors test their devices the same way
(CONVENTIONS 20).

- ``MemoryLink`` wires a host protocol to a peer protocol in memory with a simulated
  clock, recording every byte each way, so a test can step a whole session
  deterministically without threads or ports.
- ``ExpectedExchange`` is a scripted device holding (sent, reply) pairs taken from a
  protocol document, in the spirit of PyMeasure's ``expected_protocol``
  (CONVENTIONS 12): the host's bytes must equal the next expected request exactly, and
  at the end every pair must have been used.
- ``GearedClock`` is a simulated clock whose speed can change while threads read it, so
  a test over a real pty can run a long scenario fast and shift down for the moments
  whose deadlines it measures (see its docstring for why).

Port failures on demand (``fault://``, ``FaultPlan``, ``FlappingPty``) live in
``kapmonitor.drivers.faults``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from kapmonitor.model import Message

from .codecs.base import Codec
from .protocol import HostProtocol, PeerProtocol

__all__ = ["ExpectedExchange", "GearedClock", "MemoryLink", "UnexpectedBytesError",
           "feed_in_pieces"]


class UnexpectedBytesError(AssertionError):
    pass


@dataclass
class MemoryLink:
    """Host and peer joined by two in-memory pipes and one simulated clock (integer us).

    ``step(dt_s)`` advances the clock in ticks no longer than either side's
    ``tick_interval_s``, delivering bytes between the sides after every tick, so polled
    protocols see their replies within one tick. ``chunk`` splits every delivery into
    pieces of at most that many bytes, to exercise incremental parsing.
    """

    host: HostProtocol
    peer: PeerProtocol
    now_us: int = 1_700_000_000_000_000
    chunk: int | None = None
    host_sent: bytearray = field(default_factory=bytearray)
    peer_sent: bytearray = field(default_factory=bytearray)
    messages: list[Message] = field(default_factory=list)
    connected: bool = False

    def connect(self) -> None:
        self.connected = True
        self.peer.connection_made(self.now_us)
        self.host.connection_made(self.now_us)
        self._shuttle()

    def disconnect(self) -> None:
        self.connected = False
        self.host.connection_lost()
        self.peer.connection_lost()

    def _deliver(self, data: bytes, to_host: bool) -> None:
        size = self.chunk or len(data) or 1
        for i in range(0, len(data), size):
            piece = data[i : i + size]
            if to_host:
                self.messages.extend(self.host.data_received(piece, self.now_us))
            else:
                self.peer.data_received(piece, self.now_us)

    def _shuttle(self) -> None:
        for _ in range(100):  # request/reply ping-pong within one instant
            h = self.host.take_outgoing()
            p = self.peer.take_outgoing()
            if not h and not p:
                return
            if h:
                self.host_sent += h
                self._deliver(h, to_host=False)
            if p:
                self.peer_sent += p
                self._deliver(p, to_host=True)
        raise AssertionError("host and peer keep exchanging bytes without time passing")

    def step(self, seconds: float) -> list[Message]:
        """Advance the clock by ``seconds``; return the messages the host produced."""
        start = len(self.messages)
        tick_us = round(
            1e6 * min(self.host.tick_interval_s, self.peer.tick_interval_s)
        )
        end = self.now_us + round(seconds * 1e6)
        while self.now_us < end:
            self.now_us = min(end, self.now_us + tick_us)
            if self.connected:
                self.peer.tick(self.now_us)
                self.messages.extend(self.host.tick(self.now_us))
                self._shuttle()
            else:
                self.messages.extend(self.host.tick(self.now_us))
                self.host.take_outgoing()  # written into a closed port: lost
        return self.messages[start:]


class ExpectedExchange(PeerProtocol):
    """A scripted device: ``pairs`` are (expected bytes from the host, reply bytes).

    A pair whose expected part is ``b""`` is sent unasked (a device-initiated frame) as
    soon as the previous pair completed. ``assert_done()`` fails if any pair is unused or
    the host sent bytes beyond the script.
    """

    protocol = "expected"
    tick_interval_s = 0.01

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.index = 0
        self.pending = bytearray()

    def _flush_unsolicited(self) -> None:
        while self.index < len(self.pairs) and self.pairs[self.index][0] == b"":
            self.send(self.pairs[self.index][1])
            self.index += 1

    def connection_made(self, now_us: int) -> None:
        self._flush_unsolicited()

    def tick(self, now_us: int) -> None:
        self._flush_unsolicited()

    def data_received(self, data: bytes, now_us: int) -> None:
        self.pending += data
        while self.pending:
            if self.index >= len(self.pairs):
                raise UnexpectedBytesError(f"host sent {bytes(self.pending)!r} after the script")
            expected, reply = self.pairs[self.index]
            n = min(len(expected), len(self.pending))
            if bytes(self.pending[:n]) != expected[:n]:
                raise UnexpectedBytesError(
                    f"pair {self.index}: expected {expected!r}, host sent {bytes(self.pending)!r}"
                )
            if n < len(expected):
                return  # wait for the rest
            del self.pending[:n]
            self.index += 1
            self.send(reply)
            self._flush_unsolicited()

    def assert_done(self) -> None:
        if self.index != len(self.pairs):
            raise AssertionError(
                f"{len(self.pairs) - self.index} expected exchanges unused, next: "
                f"{self.pairs[self.index]!r}"
            )
        if self.pending:
            raise UnexpectedBytesError(f"host sent {bytes(self.pending)!r} beyond the script")


def feed_in_pieces(codec: Codec, data: bytes, cuts: Iterable[int]) -> list[object]:
    """Feed ``data`` to ``codec`` split at the given offsets; return all messages."""
    out: list[object] = []
    last = 0
    for c in sorted({c for c in cuts if 0 < c < len(data)}):
        out.extend(codec.feed(data[last:c]))
        last = c
    out.extend(codec.feed(data[last:]))
    return out


class GearedClock:
    """Simulated host time (integer us since the epoch) whose speed can be shifted while
    device and peer threads read it.

    Why: a real pty puts the operating system's scheduler between host and peer. On a
    loaded machine a thread can wait 10-300 ms for a core; at a fixed 300x that is up to
    90 s of simulated time, longer than a Fresenius base waits for its ENQ answer (2 s)
    or a test's "within one poll period" allows. Running a whole 40-minute programme
    slowly enough to absorb that would take many minutes. So a test runs the long,
    uneventful stretches in a high gear and shifts down (``with clock.geared(5): ...``)
    for the moment whose deadline it asserts; time stays continuous and monotonic across
    shifts, so a pump model driven by this clock delivers exactly the same volume.

    ``speed`` is the top gear and never changes: ``DeviceRunner`` and the peer servers
    size their waits from it once, and waits sized for the fastest gear are short enough
    for every slower one (they only wake more often than needed).
    """

    def __init__(self, top_speed: float, epoch_us: int | None = None) -> None:
        if not top_speed > 0:
            raise ValueError(f"speed must be positive, got {top_speed}")
        self.speed = float(top_speed)
        self._gear = self.speed
        self._lock = threading.Lock()
        self._wall_ns = time.monotonic_ns()
        self._sim_us = epoch_us if epoch_us is not None else time.time_ns() // 1000

    @property
    def gear(self) -> float:
        """The speed the clock runs at now."""
        return self._gear

    def _at(self, wall_ns: int) -> int:
        return self._sim_us + int((wall_ns - self._wall_ns) * self._gear / 1000)

    def __call__(self) -> int:
        with self._lock:
            return self._at(time.monotonic_ns())

    def shift(self, speed: float) -> None:
        """Run at ``speed`` from now on (0 < speed <= the top speed)."""
        if not 0 < speed <= self.speed:
            raise ValueError(f"a gear must be in (0, {self.speed:g}], got {speed}")
        with self._lock:
            wall = time.monotonic_ns()
            self._sim_us = self._at(wall)
            self._wall_ns = wall
            self._gear = float(speed)

    @contextmanager
    def geared(self, speed: float) -> Iterator[GearedClock]:
        """Run at ``speed`` inside the block, at the previous gear after it."""
        before = self._gear
        self.shift(speed)
        try:
            yield self
        finally:
            self.shift(before)
