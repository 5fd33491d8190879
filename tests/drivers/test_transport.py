"""The transport and the peer servers, with a minimal line protocol so the mechanics are
tested apart from any real protocol: byte-for-byte delivery over a real pty and over
socket://, state reporting, stale detection, and reconnection when the device returns
under the same name."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from kapmonitor.drivers.codecs.base import Codec
from kapmonitor.drivers.protocol import HostProtocol, PeerProtocol
from kapmonitor.drivers.sim.server import PtyServer, TcpServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel, DeviceState, DeviceStatus, Reading


class LineCodec(Codec):
    protocol = "line"
    document = "(test protocol)"

    def __init__(self) -> None:
        super().__init__()
        self.buf = b""

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            if line.isascii() and line:
                out.append(line.decode())
                self.stats.frames += 1
            else:
                self.stats.error("garbage")
        return out

    def encode(self, message: str) -> bytes:
        return message.encode() + b"\n"


class LineHost(HostProtocol):
    protocol = "line"
    stale_after_s = 0.5

    def __init__(self, source: str = "dev") -> None:
        super().__init__(source)
        self.codec = LineCodec()
        self.sessions = 0

    def connection_made(self, now_us: int) -> None:
        self.sessions += 1
        self.send(self.codec.encode("HELLO"))

    def data_received(self, data: bytes, now_us: int) -> list:
        out = []
        for line in self.codec.feed(data):
            self.last_frame_us = now_us
            if line == "CRASH":
                raise RuntimeError("a bug in the protocol")
            try:
                value = float(line[2:]) if line.startswith("V ") else None
            except ValueError:
                self.codec.stats.error("format")
                continue
            if value is not None:
                out.append(Reading(Channel.HR, value, now_us, self.source))
        return out


class LinePeer(PeerProtocol):
    protocol = "line"
    tick_interval_s = 0.02

    def __init__(self) -> None:
        super().__init__()
        self.codec = LineCodec()
        self.hello = False
        self.silent = False
        self.n = 0
        self.received: list[str] = []

    def connection_made(self, now_us: int) -> None:
        self.hello = False

    def data_received(self, data: bytes, now_us: int) -> None:
        for line in self.codec.feed(data):
            self.received.append(line)
            if line == "HELLO":
                self.hello = True

    def tick(self, now_us: int) -> None:
        if self.hello and not self.silent:
            self.n += 1
            self.send(self.codec.encode(f"V {self.n}"))


def collect(q: queue.Queue, until, timeout: float = 15.0) -> list:
    got = []
    while True:
        try:
            batch = q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"condition not reached; last messages: {got[-5:]}")
        got.extend(batch)
        if until(got):
            return got


def states(msgs: list) -> list[DeviceState]:
    return [m.state for m in msgs if isinstance(m, DeviceStatus)]


def _server(kind: str, peer: PeerProtocol, tmp_path: Path, port: int = 0):
    if kind == "pty":
        return PtyServer(peer, link=tmp_path / "dev-link", name="line")
    return TcpServer(peer, port=port, name="line")


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_stream_disconnect_and_reconnect_under_the_same_name(kind: str, tmp_path: Path) -> None:
    peer = LinePeer()
    server = _server(kind, peer, tmp_path).start()
    q: queue.Queue = queue.Queue()
    host = LineHost()
    runner = DeviceRunner(server.url, host, q.put, backoff_s=(0.05, 0.2)).start()
    try:
        first = collect(q, lambda m: sum(isinstance(x, Reading) for x in m) >= 5)
        assert states(first)[:2] == [DeviceState.CONNECTING, DeviceState.STREAMING]
        assert peer.received[0] == "HELLO"
        values = [x.value for x in first if isinstance(x, Reading)]
        assert values == [float(i) for i in range(1, len(values) + 1)]  # none lost, in order

        port = getattr(server, "port", 0)
        server.stop()  # the device goes away
        gone = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        assert DeviceState.DISCONNECTED in states(gone)

        peer2 = LinePeer()
        server = _server(kind, peer2, tmp_path, port).start()  # and comes back
        back = collect(q, lambda m: sum(isinstance(x, Reading) for x in m) >= 3)
        assert DeviceState.STREAMING in states(back)
        assert peer2.received[0] == "HELLO"  # the handshake ran again
        assert host.sessions >= 2
    finally:
        runner.stop()
        server.stop()
    assert runner.state is DeviceState.STOPPED


def test_silent_device_goes_stale_then_disconnected_then_recovers(tmp_path: Path) -> None:
    peer = LinePeer()
    server = PtyServer(peer, name="line").start()
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(server.url, LineHost(), q.put, backoff_s=(0.05, 0.2),
                          disconnect_after_s=1.0).start()
    try:
        collect(q, lambda m: DeviceState.STREAMING in states(m))
        peer.silent = True
        quiet = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        assert states(quiet)[-2:] == [DeviceState.STALE, DeviceState.DISCONNECTED]
        peer.silent = False
        collect(q, lambda m: DeviceState.STREAMING in states(m))
    finally:
        runner.stop()
        server.stop()


def test_port_that_does_not_exist_is_disconnected_with_reason(tmp_path: Path) -> None:
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(str(tmp_path / "no-such-port"), LineHost(), q.put,
                          backoff_s=(0.05, 0.1)).start()
    try:
        msgs = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        detail = next(m.detail for m in msgs if isinstance(m, DeviceStatus)
                      and m.state is DeviceState.DISCONNECTED)
        assert "cannot open" in detail
    finally:
        runner.stop()


def test_loop_url_reaches_the_protocol() -> None:
    """loop:// echoes what the host writes: the host's HELLO comes back to it as a frame."""
    q: queue.Queue = queue.Queue()
    host = LineHost()
    runner = DeviceRunner("loop://", host, q.put).start()
    try:
        collect(q, lambda m: DeviceState.STREAMING in states(m))
        assert host.codec.stats.frames >= 1
    finally:
        runner.stop()


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_cable_pulled_for_a_while_then_back(kind: str, tmp_path: Path) -> None:
    """The simulator's "cable pulled" fault: the device drops off the link and comes back
    under the same name; the host sees DISCONNECTED, then re-runs its handshake."""
    peer = LinePeer()
    server = _server(kind, peer, tmp_path).start()
    q: queue.Queue = queue.Queue()
    host = LineHost()
    runner = DeviceRunner(server.url, host, q.put, backoff_s=(0.05, 0.1)).start()
    try:
        collect(q, lambda m: sum(isinstance(x, Reading) for x in m) >= 3)
        server.cut(0.5)
        collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        back = collect(q, lambda m: DeviceState.STREAMING in states(m)
                       and sum(isinstance(x, Reading) for x in m) >= 2)
        assert back
        assert host.sessions >= 2
        assert server.faults_applied == ["link down 0.5 s"]
    finally:
        runner.stop()
        server.stop()


def test_garbage_and_bit_errors_are_counted_not_fatal(tmp_path: Path) -> None:
    peer = LinePeer()
    server = PtyServer(peer, name="line", seed=7).start()
    q: queue.Queue = queue.Queue()
    host = LineHost()
    runner = DeviceRunner(server.url, host, q.put).start()
    try:
        collect(q, lambda m: sum(isinstance(x, Reading) for x in m) >= 3)
        server.inject_garbage(200)
        server.bit_errors(0.05, 0.5)
        collect(q, lambda m: host.codec.stats.error_count > 0
                and sum(isinstance(x, Reading) for x in m) >= 30)
        assert runner.state is DeviceState.STREAMING
    finally:
        runner.stop()
        server.stop()


def test_a_protocol_bug_resets_the_link_instead_of_killing_the_thread() -> None:
    peer = LinePeer()
    server = PtyServer(peer, name="line").start()
    q: queue.Queue = queue.Queue()
    host = LineHost()
    runner = DeviceRunner(server.url, host, q.put, backoff_s=(0.05, 0.1)).start()
    try:
        collect(q, lambda m: DeviceState.STREAMING in states(m))
        peer.send(b"CRASH\n")
        msgs = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        detail = [m.detail for m in msgs if isinstance(m, DeviceStatus)][-1]
        assert "protocol error (RuntimeError: a bug in the protocol)" in detail
        collect(q, lambda m: DeviceState.STREAMING in states(m))
        assert runner.stats.protocol_errors == 1
        assert host.sessions == 2
    finally:
        runner.stop()
        server.stop()
