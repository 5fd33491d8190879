"""Runs a protocol peer where the app can reach it exactly as it reaches hardware.

``PtyServer`` opens a pseudo-terminal and serves the peer on its master side; the app
opens the slave path (``/dev/pts/N``) with ``serial_for_url`` like any serial port. A stable
symlink can name the pty, as socat's ``link=`` does, so the "device" can go away and come
back under the same name. ``TcpServer`` listens on loopback like a serial device server
(a Moxa NPort, say); the app opens ``socket://127.0.0.1:PORT``.

Both run one thread that waits on the endpoint with ``select`` for at most the peer's tick
interval, feeds what arrives to the peer, ticks it, and writes what it queued. ``clock``
lets a simulation run faster than real time (``--speed``).

Link faults for scenarios and tests act here, below the protocol, as on a real wire:
``cut(seconds)`` pulls the cable (the endpoint closes, then reopens under the same name),
``inject_garbage(n)`` writes random bytes between frames, ``bit_errors(p, seconds)`` flips
one bit in each outgoing byte with probability p.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import select
import socket
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from kapmonitor.model import now_us

from ..protocol import PeerProtocol

__all__ = ["PeerServer", "PtyServer", "TcpServer"]

log = logging.getLogger(__name__)


class PeerServer:
    """Thread, lifecycle and link faults; subclasses provide the endpoint."""

    def __init__(self, peer: PeerProtocol, *, clock: Callable[[], int] = now_us,
                 name: str = "peer", seed: int = 0) -> None:
        self.peer = peer
        self.clock = clock
        self.name = name
        self.bytes_in = 0
        self.bytes_out = 0
        self.faults_applied: list[str] = []
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._down_until: int | None = None
        self._cut_requested: float | None = None
        self._garbage = 0
        self._ber = 0.0
        self._ber_until = 0
        # wait in simulated time: at --speed N the peer must still tick every
        # tick_interval_s of *its* time, or periodic frames fall behind the clock
        self.wait_s = max(0.0005, peer.tick_interval_s / getattr(clock, "speed", 1.0))

    @property
    def url(self) -> str:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PeerServer:
        self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"peer server {self.name} did not stop in {timeout} s")
        self._drain(min(timeout, 1.0))
        self._close()

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults (any thread) ---------------------------------------------------------------

    def cut(self, seconds: float) -> None:
        """Pull the cable for ``seconds`` of simulated time."""
        with self._lock:
            self._cut_requested = seconds

    def inject_garbage(self, n: int) -> None:
        with self._lock:
            self._garbage += n

    def bit_errors(self, probability: float, seconds: float) -> None:
        with self._lock:
            self._ber = probability
            self._ber_until = self.clock() + round(seconds * 1e6)

    @property
    def link_up(self) -> bool:
        return self._down_until is None

    def _corrupt(self, data: bytes, now: int) -> bytes:
        with self._lock:
            garbage, self._garbage = self._garbage, 0
            ber = self._ber if now < self._ber_until else 0.0
        if garbage:
            self.faults_applied.append(f"garbage {garbage} bytes")
            data = bytes(self._rng.getrandbits(8) for _ in range(garbage)) + data
        if ber and data:
            buf = bytearray(data)
            for i in range(len(buf)):
                if self._rng.random() < ber:
                    buf[i] ^= 1 << self._rng.randrange(8)
            data = bytes(buf)
        return data

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            with self._lock:
                cut, self._cut_requested = self._cut_requested, None
            if cut is not None and self._down_until is None:
                self.faults_applied.append(f"link down {cut:g} s")
                self._close()
                self._down_until = now + round(cut * 1e6)
            if self._down_until is not None:
                if now < self._down_until:
                    self._stop.wait(0.01)
                    continue
                self._down_until = None
                self._open()
            try:
                self._serve_once()
            except OSError:
                log.info("%s: endpoint failed", self.name, exc_info=True)
                self._stop.wait(0.05)

    def _exchange(self, ready: bool, read: Callable[[], bytes | None],
                  write: Callable[[bytes], None]) -> bool:
        """Feed what arrived, tick, write. Returns False when the other side is gone."""
        now = self.clock()
        if ready:
            data = read()
            if data is None:
                return False
            if data:
                self.bytes_in += len(data)
                self.peer.data_received(data, now)
        self.peer.tick(now)
        out = self.peer.take_outgoing()
        out = self._corrupt(out, now) if (out or self._garbage) else out
        if out:
            write(out)
            self.bytes_out += len(out)
        return True

    # hooks
    def _drain(self, timeout: float) -> None:
        """On a deliberate stop, give the reader a moment to take what was sent (a pulled
        cable, ``cut``, loses it on purpose)."""

    def _open(self) -> None: ...
    def _close(self) -> None: ...
    def _serve_once(self) -> None: ...


class PtyServer(PeerServer):
    """The peer behind a pseudo-terminal; ``url`` is the slave path (or ``link``)."""

    def __init__(self, peer: PeerProtocol, *, link: str | os.PathLike[str] | None = None,
                 **kwargs: object) -> None:
        super().__init__(peer, **kwargs)  # type: ignore[arg-type]
        self.link = Path(link) if link is not None else None
        self._master = -1
        self._slave = -1
        self.slave_path = ""
        self._next_speed_reset = 0.0

    @property
    def url(self) -> str:
        return str(self.link) if self.link is not None else self.slave_path

    def _open(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes pass untouched: no echo, no CR/LF mapping
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            tmp.replace(self.link)
        self.peer.connection_made(self.clock())

    def _drain(self, timeout: float) -> None:
        """Closing the master discards what the app has not read yet: wait (bounded) until
        the slave's input queue is empty."""
        if self._slave < 0:
            return
        deadline = time.monotonic() + timeout
        buf = bytearray(4)
        while time.monotonic() < deadline:
            try:
                fcntl.ioctl(self._slave, termios.FIONREAD, buf)
            except OSError:
                return
            if int.from_bytes(buf, sys.byteorder) == 0:
                return
            self._stop.wait(0.005)

    def _close(self) -> None:
        if self._master < 0:
            return
        self.peer.connection_lost()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1

    def _read(self) -> bytes | None:
        try:
            return os.read(self._master, 65536)
        except BlockingIOError:
            return b""
        except OSError:
            return None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                select.select([], [self._master], [], 0.1)
                continue
            view = view[n:]

    def _serve_once(self) -> None:
        ready, _, _ = select.select([self._master], [], [], self.wait_s)
        self._exchange(bool(ready), self._read, self._write)
        now = time.monotonic()
        if now >= self._next_speed_reset:
            self._next_speed_reset = now + 0.1
            self._reset_speed()

    def _reset_speed(self) -> None:
        """Keep the pty's line speed at a sentinel nobody uses. A Linux pty keeps CS8 and
        no parity whatever is asked, and a tcsetattr that changes *nothing* it can apply
        fails with EINVAL: a host that reopens the pty asking 7E1 at the speed already set
        (Fresenius, GE S/5) is refused for good (issue 12; a real serial port has no such
        rule). With the speed moved back after every open, each reopen changes the speed
        too and succeeds. A pty ignores its speed, so the bytes are untouched."""
        try:
            attrs = termios.tcgetattr(self._slave)
            if attrs[4] != _SENTINEL_SPEED or attrs[5] != _SENTINEL_SPEED:
                attrs[4] = attrs[5] = _SENTINEL_SPEED
                termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        except (OSError, termios.error):
            log.debug("%s: could not reset the pty's speed", self.name, exc_info=True)


#: B50 baud: no device protocol here runs at it (see PtyServer._reset_speed)
_SENTINEL_SPEED = termios.B50


class TcpServer(PeerServer):
    """The peer behind a loopback TCP listener, one client at a time (as a serial device
    server allows); each new client starts a new peer session."""

    def __init__(self, peer: PeerProtocol, *, port: int = 0, host: str = "127.0.0.1",
                 **kwargs: object) -> None:
        super().__init__(peer, **kwargs)  # type: ignore[arg-type]
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def _open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(1)
        self.port = s.getsockname()[1]
        self._listener = s

    def _drop_client(self) -> None:
        if self._client is not None:
            self.peer.connection_lost()
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None

    def _close(self) -> None:
        self._drop_client()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None

    def _serve_once(self) -> None:
        if self._client is None:
            assert self._listener is not None
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if not ready:
                return
            client, _ = self._listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(2.0)  # recv only after select; sendall may wait
            self._client = client
            self.connections += 1
            self.peer.connection_made(self.clock())
        client = self._client

        def read() -> bytes | None:
            try:
                return client.recv(65536) or None  # b"": the client closed
            except OSError:
                return None

        ready, _, _ = select.select([client], [], [], self.wait_s)
        try:
            alive = self._exchange(bool(ready), read, client.sendall)
        except OSError:
            alive = False
        if not alive:
            self._drop_client()
