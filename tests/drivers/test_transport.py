"""The transport and the peer servers, with a minimal line protocol so the mechanics are
tested apart from any real protocol: byte-for-byte delivery over a real pty and over
socket://, state reporting, stale detection, and reconnection when the device returns
under the same name.

Issue 12 (threads that cannot die), through the real path, a pty from the simulator's
server: a pty that flaps for a while, a termios.error on open, a second program on a port
the first holds, a thread killed outright and brought back by ``restart()``, and a
Fresenius pump whose pty refuses its line settings when reopened (the CI failure that
started the issue). ``tests/drivers/test_faults.py`` runs every protocol through every
fault kind."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from kapmonitor.drivers import registry
from kapmonitor.drivers.codecs.base import Codec
from kapmonitor.drivers.faults import Fault, FaultPlan, FlappingPty, Op
from kapmonitor.drivers.protocol import HostProtocol, PeerProtocol
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.server import PtyServer, TcpServer
from kapmonitor.drivers.transport import DeviceRunner, _acts_on_exclusive
from kapmonitor.model import Channel, DeviceState, DeviceStatus, PumpState, Reading


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


def collect(q: queue.Queue, until: Callable[[list], bool], timeout: float = 30.0) -> list:
    """Collect published batches until ``until(all collected)``, for at most ``timeout``
    seconds in all (a runner that keeps publishing CONNECTING/DISCONNECTED must not keep
    a failing wait alive)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            batch = q.get(timeout=left)
        except queue.Empty:
            pytest.fail(f"condition not reached in {timeout} s; last messages: {got[-5:]}")
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


# -- issue 12: device threads that cannot die ------------------------------------------------


def until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Wait for ``condition`` (checked every few ms) for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.005)
    return True


def readings(msgs: list) -> list[float]:
    return [m.value for m in msgs if isinstance(m, Reading)]


def details(msgs: list, state: DeviceState = DeviceState.DISCONNECTED) -> list[str]:
    return [m.detail for m in msgs if isinstance(m, DeviceStatus) and m.state is state]


def test_a_flapping_pty_does_not_kill_the_device_thread(tmp_path: Path) -> None:
    """A pty closed and recreated every 300 us under one name: the runner meets ptys that
    vanish between open and tcsetattr (termios.error), symlinks to closed ptys, reads that
    fail a moment after open. Before issue 12 this killed the thread within a second."""
    link = tmp_path / "flapping"
    flapper = FlappingPty(link, period_s=0.0003).start()
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(str(link), LineHost(), q.put, backoff_s=(0.0005, 0.002)).start()
    server = None
    try:
        flapped = collect(q, lambda m: len(details(m)) >= 200 and flapper.cycles >= 1000,
                          timeout=30)
        assert runner.is_alive()
        assert all(d and "driver stopped" not in d for d in details(flapped))
        flapper.stop()  # it settles: the last pty stays named until the server takes over
        server = PtyServer(LinePeer(), link=link, name="line").start()
        flapper.close()
        back = collect(q, lambda m: DeviceState.STREAMING in states(m) and len(readings(m)) >= 3)
        assert states(back)[-1] is DeviceState.STREAMING
        assert runner.is_alive()
        assert runner.stats.thread_restarts == 0
        assert runner.death is None
    finally:
        flapper.close()
        runner.stop()
        if server is not None:
            server.stop()


def test_termios_error_on_open_then_streaming_again() -> None:
    """pyserial 3.5 lets termios.error out of open(); it must read as a disconnection."""
    server = PtyServer(LinePeer(), name="line").start()
    plan = FaultPlan().add(Op.OPEN, Fault.TERMIOS, times=2)
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(plan.url(server.url), LineHost(), q.put,
                          backoff_s=(0.02, 0.05)).start()
    try:
        msgs = collect(q, lambda m: DeviceState.STREAMING in states(m) and len(readings(m)) >= 3)
        assert states(msgs)[:5] == [DeviceState.CONNECTING, DeviceState.DISCONNECTED,
                                    DeviceState.CONNECTING, DeviceState.DISCONNECTED,
                                    DeviceState.CONNECTING]
        assert details(msgs)[0] == (f"cannot open {plan.url(server.url)}: the port refuses the "
                                    "line settings 9600 baud 8N1: Invalid argument "
                                    "(termios error 22)")
        assert runner.is_alive()
        assert runner.stats.open_failures == 2
    finally:
        runner.stop()
        server.stop()


def test_a_second_program_on_a_held_port_is_told_it_is_in_use() -> None:
    peer = LinePeer()
    server = PtyServer(peer, name="line").start()
    q1: queue.Queue = queue.Queue()
    q2: queue.Queue = queue.Queue()
    first = DeviceRunner(server.url, LineHost("first"), q1.put).start()
    second = DeviceRunner(server.url, LineHost("second"), q2.put, backoff_s=(0.02, 0.05))
    try:
        collect(q1, lambda m: len(readings(m)) >= 2)
        second.start()
        refused = collect(q2, lambda m: len(details(m)) >= 3)  # and it keeps trying
        assert set(details(refused)) == {f"port {server.url} is in use by another program"}
        assert second.stats.connects == 0
        # the first never lost a byte to the second: values still count up one by one
        more = collect(q1, lambda m: len(readings(m)) >= 10)
        values = readings(more)
        assert values == [values[0] + i for i in range(len(values))]
        assert DeviceState.DISCONNECTED not in states(more)
        assert first.state is DeviceState.STREAMING
        first.stop()  # the first lets go: the second gets the port
        collect(q2, lambda m: DeviceState.STREAMING in states(m) and len(readings(m)) >= 2)
    finally:
        first.stop()
        second.stop()
        server.stop()


def test_exclusive_is_set_only_where_pyserial_acts_on_it(tmp_path: Path) -> None:
    def port(url: str) -> serial.SerialBase:
        return serial.serial_for_url(url, do_not_open=True)

    assert _acts_on_exclusive(port(str(tmp_path / "ttyUSB0")))  # the native class: flock
    assert _acts_on_exclusive(port(f"spy://{tmp_path / 'ttyUSB0'}"))  # built on the native
    assert _acts_on_exclusive(port("fault://loop://"))  # hands it on to its inner port
    for url in ("loop://", "socket://127.0.0.1:7", "rfc2217://127.0.0.1:7"):
        assert not _acts_on_exclusive(port(url)), url  # accepted and ignored there


def test_restart_brings_back_a_thread_that_died() -> None:
    """A BaseException ends the thread; its last act is a DISCONNECTED "driver stopped";
    the port is let go; restart() starts a fresh thread that streams again."""
    server = PtyServer(LinePeer(), name="line").start()
    plan = FaultPlan()
    q: queue.Queue = queue.Queue()
    host = LineHost()
    runner = DeviceRunner(plan.url(server.url), host, q.put, backoff_s=(0.02, 0.05))
    assert not runner.is_alive() and not runner.restart()  # not started: nothing to do
    runner.start()
    try:
        collect(q, lambda m: len(readings(m)) >= 2)
        assert runner.is_alive() and not runner.restart()  # alive: nothing to do
        plan.add(Op.READ, Fault.DEATH)
        died = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        assert details(died) == ["driver stopped: kapmonitor.drivers.faults.InjectedDeath: "
                                 "injected thread death on read"]
        assert until(lambda: not runner.is_alive())
        assert runner.death is not None and "InjectedDeath" in runner.death
        # the dead thread let go of the port: another program may open it exclusively
        serial.serial_for_url(server.url, exclusive=True).close()

        assert runner.restart()
        assert runner.stats.thread_restarts == 1
        back = collect(q, lambda m: DeviceState.STREAMING in states(m) and len(readings(m)) >= 2)
        assert states(back)[0] is DeviceState.CONNECTING
        assert runner.is_alive() and not runner.restart()
        assert host.sessions == 2
    finally:
        runner.stop()
        server.stop()
    assert not runner.is_alive() and not runner.restart()  # stopped: nothing to do
    assert runner.state is DeviceState.STOPPED


def test_death_on_open_and_stop_of_a_dead_runner() -> None:
    """A thread that dies while opening publishes its death too; stop() on a runner whose
    thread died still ends in STOPPED."""
    plan = FaultPlan().add(Op.OPEN, Fault.DEATH)
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(plan.url("loop://"), LineHost(), q.put).start()
    try:
        died = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        assert details(died)[0].startswith("driver stopped: ")
        assert until(lambda: not runner.is_alive())
    finally:
        runner.stop()
    after = collect(q, lambda m: DeviceState.STOPPED in states(m), timeout=1)
    assert states(after) == [DeviceState.STOPPED]
    assert runner.stats.thread_restarts == 0


def test_any_exception_from_a_port_is_a_disconnection_not_a_protocol_error() -> None:
    """struct.error from read() is not an I/O error pyserial documents; it is still the
    port's, so it resets the link as a port error, not as a protocol bug."""
    server = PtyServer(LinePeer(), name="line").start()
    plan = FaultPlan()
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(plan.url(server.url), LineHost(), q.put,
                          backoff_s=(0.02, 0.05)).start()
    try:
        collect(q, lambda m: len(readings(m)) >= 2)
        plan.add(Op.READ, Fault.STRUCT).add(Op.WRITE, Fault.EAGAIN)
        msgs = collect(q, lambda m: len(details(m)) >= 2 and len(readings(m)) >= 2
                       and states(m)[-1] is DeviceState.STREAMING)
        assert details(msgs) == [
            "port error while reading: struct.error: unpack requires a buffer of 4 bytes",
            "port error while writing: Resource temporarily unavailable (errno 11)"]
        assert runner.stats.protocol_errors == 0
        assert runner.is_alive()
    finally:
        runner.stop()
        server.stop()


def test_a_pty_that_refuses_the_pumps_line_settings_on_reopen(tmp_path: Path) -> None:
    """The CI failure behind issue 12: Fresenius runs 7E1. A Linux pty forces 8 bits without
    parity, and recent kernels (6.18 here) refuse with EINVAL a tcsetattr that changes
    nothing else, so reopening the same pty raises termios.error from pyserial's open().
    The runner reports it in plain words and keeps trying; a fresh pty under the same name
    (the simulator restarted) streams again. On a kernel that accepts the reopen, the pump
    simply streams again at once."""
    entry = registry.get("fresenius")
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    server = PtyServer(entry.peer_class()(pump, seed=1), link=tmp_path / "pump",
                       name=entry.name).start()
    plan = FaultPlan()
    q: queue.Queue = queue.Queue()
    runner = DeviceRunner(plan.url(server.url), entry.host_class()("pump"), q.put,
                          backoff_s=(0.05, 0.1)).start()

    def pump_states(m: list) -> int:  # rate and volume readings come with every poll
        return sum(isinstance(x, PumpState | Reading) for x in m)

    try:
        collect(q, lambda m: pump_states(m) >= 1, timeout=30)
        plan.add(Op.READ, Fault.EIO)  # the link resets: the runner reopens the same pty
        reset = collect(q, lambda m: DeviceState.DISCONNECTED in states(m))
        assert details(reset) == ["port error while reading: Input/output error (errno 5)"]
        reopened = collect(q, lambda m: len(details(m)) >= 1 or pump_states(m) >= 1,
                           timeout=30)
        refusals = details(reopened)
        if refusals:
            assert refusals[0] == (f"cannot open {plan.url(server.url)}: the port refuses "
                                   "the line settings 19200 baud 7E1: Invalid argument "
                                   "(termios error 22)")
            assert runner.is_alive()
            server.cut(0.05)  # a new pty under the same name
        collect(q, lambda m: pump_states(m) >= 1, timeout=30)
        assert runner.is_alive()
        assert runner.stats.thread_restarts == 0
    finally:
        runner.stop()
        server.stop()


def test_the_pty_server_lets_a_7e1_host_reopen_its_pty() -> None:
    """A Linux pty refuses a tcsetattr that changes nothing it can apply; a Fresenius or GE
    S/5 host reopening the simulator's pty at 7E1 was refused for good. The server moves the
    speed back after each open, so every reopen succeeds (drivers/sim/server.py)."""
    import os
    import termios

    import serial

    from kapmonitor.drivers.sim.feed import ProgrammedPump
    from kapmonitor.drivers.sim.peers.fresenius import FreseniusPeer
    from kapmonitor.drivers.sim.server import PtyServer

    server = PtyServer(FreseniusPeer(ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)),
                       name="fresenius").start()

    def speed() -> int:
        fd = os.open(server.url, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return termios.tcgetattr(fd)[4]
        finally:
            os.close(fd)

    try:
        for _ in range(3):
            deadline = time.monotonic() + 10
            while speed() != termios.B50:  # the server's sentinel, set after each open
                assert time.monotonic() < deadline, "the pty's speed was never reset"
                time.sleep(0.01)  # polling a condition with a deadline
            port = serial.serial_for_url(server.url, baudrate=19200, bytesize=7, parity="E",
                                         stopbits=1, timeout=0.1)
            port.close()
    finally:
        server.stop()
