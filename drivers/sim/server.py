"""Runs a protocol peer where the app can reach it exactly as it reaches hardware.

``PtyServer`` opens a pseudo-terminal and serves the peer on its master side; the app
opens the slave path (``/dev/pts/N``) with ``serial_for_url`` like any serial port. A stable
symlink can name the pty, as socat's ``link=`` does, so a test can close the "device" and
bring it back under the same name. ``TcpServer`` listens on loopback like a serial device
server (a Moxa NPort, say); the app opens ``socket://127.0.0.1:PORT``.

Both run one thread that waits on the file descriptor with ``select`` for at most the
peer's tick interval, feeds what arrives to the peer, ticks it, and writes what it queued.
``clock`` lets a simulation run faster than real time (``--speed``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import tty
from collections.abc import Callable
from pathlib import Path

from kapmonitor.model import now_us

from ..protocol import PeerProtocol

__all__ = ["PeerServer", "PtyServer", "TcpServer"]

log = logging.getLogger(__name__)


class PeerServer:
    """Common thread and lifecycle; subclasses provide the endpoint."""

    def __init__(self, peer: PeerProtocol, *, clock: Callable[[], int] = now_us,
                 name: str = "peer") -> None:
        self.peer = peer
        self.clock = clock
        self.name = name
        self.bytes_in = 0
        self.bytes_out = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

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
        self._close()

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # hooks
    def _open(self) -> None: ...
    def _close(self) -> None: ...
    def _run(self) -> None: ...

    def _service(self, fd_read: Callable[[], bytes | None], fd_write: Callable[[bytes], None],
                 fileno: int) -> bool:
        """One wait-read-tick-write round. Returns False when the link is gone."""
        timeout = self.peer.tick_interval_s
        ready, _, _ = select.select([fileno], [], [], timeout)
        now = self.clock()
        if ready:
            data = fd_read()
            if data is None:
                return False
            if data:
                self.bytes_in += len(data)
                self.peer.data_received(data, now)
        self.peer.tick(now)
        out = self.peer.take_outgoing()
        if out:
            fd_write(out)
            self.bytes_out += len(out)
        return True


class PtyServer(PeerServer):
    """The peer behind a pseudo-terminal; ``url`` is the slave path (or ``link``)."""

    def __init__(self, peer: PeerProtocol, *, link: str | os.PathLike[str] | None = None,
                 **kwargs: object) -> None:
        super().__init__(peer, **kwargs)  # type: ignore[arg-type]
        self.link = Path(link) if link is not None else None
        self._master = -1
        self._slave = -1
        self.slave_path = ""

    @property
    def url(self) -> str:
        return str(self.link) if self.link is not None else self.slave_path

    def _open(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes pass untouched: no echo, no CR/LF mapping
        tty.setraw(self._master)
        self.slave_path = os.ttyname(self._slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            tmp.replace(self.link)
        self.peer.connection_made(self.clock())

    def _close(self) -> None:
        self.peer.connection_lost()
        for fd in (self._master, self._slave):
            if fd >= 0:
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

    def _run(self) -> None:
        os.set_blocking(self._master, False)
        while not self._stop.is_set():
            try:
                if not self._service(self._read, self._write, self._master):
                    break
            except OSError:
                log.exception("%s: pty failed", self.name)
                break


class TcpServer(PeerServer):
    """The peer behind a loopback TCP listener, one client at a time (as a serial device
    server allows); a new client starts a new peer session."""

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

    def _close(self) -> None:
        for s in (self._client, self._listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._client = self._listener = None

    def _run(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if not ready:
                continue
            client, _ = self._listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(2.0)  # recv only after select; sendall may wait
            self._client = client
            self.connections += 1
            self.peer.connection_made(self.clock())

            def read(c: socket.socket = client) -> bytes | None:
                try:
                    data = c.recv(65536)
                except OSError:
                    return None
                return data or None  # b"" from recv: the client closed

            try:
                while not self._stop.is_set() and self._service(read, client.sendall,
                                                                client.fileno()):
                    pass
            except OSError:
                log.info("%s: client went away", self.name)
            finally:
                self.peer.connection_lost()
                with contextlib.suppress(OSError):
                    client.close()
                self._client = None
