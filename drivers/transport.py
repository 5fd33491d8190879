"""One reader thread per device: a host protocol on any pyserial URL, with reconnects.

The port is opened with ``serial.serial_for_url`` (CONVENTIONS 2), so a device path, a pty,
``socket://host:port`` (a serial device server), ``rfc2217://``, ``loop://``, ``spy://``
(a hexdump of the traffic, for debugging a device) and ``fault://`` (scripted failures,
``drivers/faults.py``, registered with pyserial when this module is imported, so a
command line's ``--device P=fault://...`` passes the same URL checks as ``spy://``) all
work unchanged. The protocol logic lives in the
``HostProtocol`` (sans-I/O); this module only moves bytes, keeps time, and owns the
connection state machine every device shares (CONVENTIONS 3, 4):

    CONNECTING -> STREAMING (first valid frame) -> STALE (no valid frame for the
    protocol's ``stale_after_s``) -> DISCONNECTED (port error, or stale for
    ``disconnect_after_s``: closed and reopened, which re-runs the handshake)

Every transition is published as a ``DeviceStatus`` on the bus, where the alarm engine
turns STALE and DISCONNECTED into technical alarms. Reconnects back off exponentially
(0.5 s doubling to 2 s: reopening a port is cheap, and a cleared fault is then noticed
within 2 s) and reset once data flows again. The thread never touches Qt: it
only calls ``publish``.

Why the thread cannot die (issue 12). A device thread that dies silently leaves its device
CONNECTING or STREAMING forever: the screen shows the last numbers and no alarm sounds.
pyserial does not keep to the exceptions it documents: ``Serial.open()`` lets
``termios.error`` out (tcsetattr EINVAL, tcflush EIO when a pty or a USB adapter vanishes
mid-open), a vanished adapter can make ``ioctl`` fail inside ``in_waiting``, and
third-party URL handlers raise whatever they like. So the runner does not guess which
types a port may raise: *every* ``Exception`` from open, read, write or close is a link
failure, reported as DISCONNECTED with the reason in plain words, and retried with
backoff. The exceptions are told apart by *where* they happen, not by their type: an
exception from the host protocol (the device's code) is a protocol bug, counted in
``stats.protocol_errors``, and also resets the link; a codec error is counted by the codec
and is never a disconnection (pyserial issue #355). Only ``stop()`` ends the loop.

If the thread ends anyway (a ``BaseException`` such as ``SystemExit``, or a failure in the
runner's own bookkeeping outside the guarded link cycle), its last act is to publish
``DISCONNECTED`` with ``"driver stopped: <reason>"``, so the alarm engine raises a technical
alarm instead of trusting a frozen device. The session's supervisor watches ``is_alive()``
and calls ``restart()``, which starts a fresh thread (counted in ``stats.thread_restarts``).

Ports open exclusively. Two programs reading one serial port each get part of the bytes,
and both see garbage. pyserial's POSIX ``Serial`` takes a ``flock`` when ``exclusive`` is
set (Windows ports are always exclusive). Every pyserial class accepts the setting, since
it lives in ``SerialBase``, but only the native class acts on it: plain paths and the
handlers built on it (``spy://``, ``alt://``, ``hwgrep://``). ``socket://``,
``rfc2217://`` and ``loop://`` store and ignore it (a device server allows one client at a
time by itself). The runner therefore sets it where it means something: on the native
class, and on wrappers that say they hand it on to a native port inside
(``forwards_exclusive``, as ``fault://`` does). A port locked by another program is
reported as ``"port X is in use by another program"``.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import serial

from kapmonitor.model import DeviceState, DeviceStatus, Message, now_us

from . import faults  # noqa: F401 - registers the fault:// URL handler with pyserial
from .protocol import HostProtocol

try:
    from termios import error as TermiosError
except ImportError:  # Windows: no termios, and nothing raises its error
    class TermiosError(Exception):  # type: ignore[no-redef]
        pass

__all__ = ["DeviceRunner", "RunnerStats", "describe_error"]

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[Message]], None]


@dataclass(slots=True)
class RunnerStats:
    bytes_in: int = 0
    bytes_out: int = 0
    connects: int = 0
    disconnects: int = 0
    publish_errors: int = 0
    protocol_errors: int = 0
    #: Attempts to open the port that failed (any reason, "in use" included).
    open_failures: int = 0
    #: Writes the port accepted only part of; the rest was written after.
    short_writes: int = 0
    #: Failures in the runner's own code inside a link cycle (a bug; the link was reset).
    internal_errors: int = 0
    #: Fresh threads started by ``restart()`` after the previous one died.
    thread_restarts: int = 0


class _LinkError(Exception):
    """A port operation failed; the message says which and why, in plain words."""


def describe_error(exc: BaseException) -> str:
    """An exception as a short sentence for a nurse's screen and the device log:
    ``"Input/output error (errno 5)"``, ``"Invalid argument (termios error 22)"``."""
    if isinstance(exc, TermiosError):
        args = exc.args
        if len(args) == 2 and isinstance(args[0], int):
            return f"{args[1]} (termios error {args[0]})"
        return f"termios error {args}" if args else "termios error"
    if isinstance(exc, serial.SerialTimeoutException):
        return "the port did not take the data in time (write timeout)"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        if "[Errno" in exc.strerror:  # pyserial's "could not open port X: [Errno 2] ..."
            return exc.strerror
        return f"{exc.strerror} (errno {exc.errno})"
    text = str(exc)
    if isinstance(exc, serial.SerialException | OSError) and text:
        return text
    kind = type(exc)
    name = (kind.__qualname__ if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}")  # "struct.error", not "error"
    return f"{name}: {text}" if text else name


def _is_lock_conflict(exc: BaseException) -> bool:
    """True when the port could not be opened because another program holds it."""
    text = str(exc).lower()
    if isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
        return "lock" in text  # pyserial: "Could not exclusively lock port ..."
    # Windows ports are exclusive: a second opener gets "Access is denied"
    return sys.platform == "win32" and "access is denied" in text


def _acts_on_exclusive(port: serial.SerialBase) -> bool:
    """Whether ``exclusive`` means something for this port class (see the module doc)."""
    return isinstance(port, serial.Serial) or bool(getattr(port, "forwards_exclusive", False))


class DeviceRunner:
    """Runs ``host`` on ``url`` until ``stop()``.

    ``serial_overrides`` replace the protocol's line settings for this port (a clinic's
    device server may run another baud rate). ``clock`` gives host time in integer
    microseconds; the simulator's demo passes a scaled clock. ``exclusive=False`` lets
    another program share the port (a debugging aid; never in a clinic).

    Supervision (called from any thread): ``is_alive()`` is True while the runner was
    started, not stopped, and its thread runs; ``restart()`` starts a fresh thread when the
    previous one died. ``death`` holds the reason the last thread died, if one did.
    """

    def __init__(self, url: str, host: HostProtocol, publish: Publish, *,
                 serial_overrides: Mapping[str, Any] | None = None,
                 read_timeout_s: float = 0.02, backoff_s: tuple[float, float] = (0.5, 2.0),
                 disconnect_after_s: float | None = None,
                 clock: Callable[[], int] = now_us, exclusive: bool = True,
                 write_timeout_s: float = 2.0) -> None:
        self.url = url
        self.host = host
        self.publish = publish
        self.settings = {**host.serial_settings.as_kwargs(), **(serial_overrides or {})}
        # ticks are due in the clock's time; at a simulated --speed N, wait N times less
        speed = getattr(clock, "speed", 1.0)
        self.read_timeout_s = max(0.0005, min(read_timeout_s, host.tick_interval_s) / speed)
        self.write_timeout_s = write_timeout_s
        self.backoff_s = backoff_s
        self.disconnect_after_s = (disconnect_after_s if disconnect_after_s is not None
                                   else 3 * host.stale_after_s)
        self.clock = clock
        self.exclusive = exclusive
        self.stats = RunnerStats()
        self.state = DeviceState.STOPPED
        #: Why the last thread died (``None`` while none has): the detail after
        #: "driver stopped: " in the DISCONNECTED it published.
        self.death: str | None = None
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()
        self._started = False  # start() called and stop() not called since
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"device-{self.host.source}")
        self._thread.start()

    def start(self) -> DeviceRunner:
        with self._lifecycle:
            if self._thread is None:
                self._stop.clear()
                self._started = True
                self._spawn()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and join the thread within ``timeout`` seconds."""
        with self._lifecycle:
            self._started = False
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"device thread {thread.name} did not stop in {timeout} s")
            if self.state is not DeviceState.STOPPED:  # the thread had died: say so for it
                self._set_state(DeviceState.STOPPED)

    def is_alive(self) -> bool:
        """True iff ``start()`` was called, ``stop()`` was not, and the thread runs."""
        with self._lifecycle:
            thread = self._thread
            return self._started and thread is not None and thread.is_alive()

    def restart(self) -> bool:
        """Start a fresh thread if the runner is started, not stopped, and its thread has
        ended; return whether it did. Safe to call from any thread at any time."""
        with self._lifecycle:
            thread = self._thread
            if not self._started or thread is None or thread.is_alive():
                return False
            thread.join()  # it has ended: returns at once, and reaps it
            self.stats.thread_restarts += 1
            log.warning("%s %s: restarting the device thread (restart %d) after: %s",
                        self.host.source, self.url, self.stats.thread_restarts, self.death)
            self._spawn()
            return True

    def __enter__(self) -> DeviceRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- publishing ------------------------------------------------------------------------

    def _set_state(self, state: DeviceState, detail: str = "", *, force: bool = False) -> None:
        if state is self.state and not force:
            return
        self.state = state
        log.info("%s %s: %s %s", self.host.source, self.url, state.value, detail)
        try:
            t = self.clock()
        except Exception:  # a broken clock must not keep a state change off the bus
            log.exception("%s: the clock failed", self.host.source)
            t = now_us()
        self._publish([DeviceStatus(self.host.source, state, t, detail, self.host.protocol)])

    def _publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        try:
            self.publish(messages)
        except Exception:  # the bus isolates subscribers; this guards a broken publish hook
            self.stats.publish_errors += 1
            log.exception("%s: publishing failed", self.host.source)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the thread's last words: see the module doc
            reason = describe_error(exc)
            self.death = reason
            log.critical("%s %s: device thread died: %s", self.host.source, self.url, reason,
                         exc_info=True)
            try:
                self._set_state(DeviceState.DISCONNECTED, f"driver stopped: {reason}",
                                force=True)
            except BaseException:  # nothing more can be done; it is logged
                log.critical("%s: could not publish the thread's death", self.host.source,
                             exc_info=True)
            # not re-raised: the death is on the bus and in the log; re-raising would only
            # add a second report through threading.excepthook
            return
        self._set_state(DeviceState.STOPPED)

    def _loop(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                reason, worked = self._cycle()
            except Exception as exc:  # a bug in the runner itself: still only a link reset
                self.stats.internal_errors += 1
                log.exception("%s: device runner failed; resetting the link", self.host.source)
                reason, worked = f"internal error ({describe_error(exc)}): reconnecting", False
            if reason is None:  # stopped on purpose
                break
            self._set_state(DeviceState.DISCONNECTED, reason)
            if worked:
                delay = self.backoff_s[0]  # it worked for a while: retry soon
            self._stop.wait(delay)
            delay = min(self.backoff_s[1], delay * 2)

    def _cycle(self) -> tuple[str | None, bool]:
        """Open, serve and close the port once. Returns (why the link ended or None when
        stopped on purpose, whether valid frames flowed)."""
        self._set_state(DeviceState.CONNECTING, self.url)
        try:
            port = self._open()
        except Exception as exc:
            self.stats.open_failures += 1
            return self._open_failure(exc), False
        self._port = port
        self.stats.connects += 1
        reason: str | None = "closed"
        try:
            reason = self._serve(port)
        finally:
            self._port = None
            try:
                self.host.connection_lost()
            except Exception:
                self.stats.protocol_errors += 1
                log.exception("%s: protocol %s failed on connection_lost", self.host.source,
                              self.host.protocol)
            closing = self._close(port)
        if reason is None:
            return None, False
        self.stats.disconnects += 1
        if closing:
            reason = f"{reason}; {closing}"
        return reason, self.host.last_frame_us is not None

    def _open(self) -> serial.SerialBase:
        port = serial.serial_for_url(self.url, do_not_open=True, timeout=self.read_timeout_s,
                                     write_timeout=self.write_timeout_s, **self.settings)
        if self.exclusive and _acts_on_exclusive(port):
            port.exclusive = True
        try:
            port.open()
        except BaseException:
            try:
                port.close()  # pyserial's own handlers clean up; a plugin's may not
            except Exception:
                log.debug("closing %s after a failed open failed", self.url, exc_info=True)
            raise
        return port

    def _open_failure(self, exc: Exception) -> str:
        if _is_lock_conflict(exc):
            return f"port {self.url} is in use by another program"
        why = describe_error(exc)
        if isinstance(exc, TermiosError) and exc.args and exc.args[0] == errno.EINVAL:
            why = f"the port refuses the line settings {self._line_settings()}: {why}"
        return f"cannot open {self.url}: {why}"

    def _line_settings(self) -> str:
        s = self.settings
        text = f"{s.get('baudrate')} baud {s.get('bytesize')}{s.get('parity')}{s.get('stopbits')}"
        if s.get("rtscts"):
            text += " RTS/CTS"
        if s.get("xonxoff"):
            text += " XON/XOFF"
        return text

    def _close(self, port: serial.SerialBase) -> str:
        """Close the port; returns "" or why closing failed (the fd is gone either way)."""
        try:
            port.close()
        except Exception as exc:
            log.info("%s: closing %s failed", self.host.source, self.url, exc_info=True)
            return f"closing the port failed: {describe_error(exc)}"
        return ""

    # -- port operations: any exception is a link failure -----------------------------------

    def _read(self, port: serial.SerialBase) -> bytes:
        try:
            return port.read(port.in_waiting or 1)
        except Exception as exc:
            raise _LinkError(f"port error while reading: {describe_error(exc)}") from exc

    def _write(self, port: serial.SerialBase) -> None:
        out = self.host.take_outgoing()
        if not out:
            return
        view = memoryview(out)
        deadline: float | None = None
        while view:
            try:
                n = port.write(bytes(view))
            except Exception as exc:
                raise _LinkError(f"port error while writing: {describe_error(exc)}") from exc
            n = len(view) if n is None else n  # a handler that does not say wrote it all
            self.stats.bytes_out += n
            view = view[n:]
            if not view:
                return
            self.stats.short_writes += 1
            if n > 0:
                deadline = None
                continue
            # the port takes nothing: retry briefly, then treat it as a write timeout
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.write_timeout_s
            elif now >= deadline:
                raise _LinkError(f"port error while writing: the port took no data for "
                                 f"{self.write_timeout_s:g} s ({len(view)} bytes left)")
            if self._stop.wait(0.001):
                return

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, port: serial.SerialBase) -> str | None:
        """Pump bytes until the link fails (returns why) or stop() (returns None)."""
        host = self.host
        try:
            opened = self.clock()
            host.last_frame_us = None
            host.connection_made(opened)
            tick_us = round(host.tick_interval_s * 1e6)
            next_tick = opened
            self._write(port)
            while not self._stop.is_set():
                data = self._read(port)
                now = self.clock()
                messages: list[Message] = []
                if data:
                    self.stats.bytes_in += len(data)
                    messages += host.data_received(data, now)
                if now >= next_tick:
                    messages += host.tick(now)
                    next_tick = now + tick_us
                self._write(port)
                last = host.last_frame_us
                if last is not None and now - last < host.stale_after_s * 1e6:
                    self._set_state(DeviceState.STREAMING)
                else:
                    since = (now - (last if last is not None else opened)) / 1e6
                    if since >= self.disconnect_after_s:
                        self._publish(messages)
                        return f"no valid frame for {since:.1f} s: reconnecting"
                    if since >= host.stale_after_s:
                        self._set_state(DeviceState.STALE,
                                        f"no valid frame for {host.stale_after_s:g} s")
                self._publish(messages)
        except _LinkError as exc:
            return str(exc)
        except Exception as exc:  # a bug in a protocol must not kill the device thread
            self.stats.protocol_errors += 1
            log.exception("%s: protocol %s failed; resetting the link", self.host.source,
                          self.host.protocol)
            return f"protocol error ({type(exc).__name__}: {exc}): reconnecting"
        self._close_gracefully(port)
        return None

    def _close_gracefully(self, port: serial.SerialBase) -> None:
        """On a deliberate stop, let the protocol say goodbye (release an association,
        cancel data requests) and hear the answer for up to ``closing_grace_s``."""
        host = self.host
        try:
            host.closing(self.clock())
            self._write(port)
            end = self.clock() + round(host.closing_grace_s * 1e6)
            while self.clock() < end and not host.closed:
                data = port.read(port.in_waiting or 1)
                now = self.clock()
                self._publish(host.data_received(data, now) if data else [])
                self._publish(host.tick(now))
                self._write(port)
        except Exception:
            log.info("%s: closing exchange failed", host.source, exc_info=True)

    def __repr__(self) -> str:
        return f"<DeviceRunner {self.host.protocol} {self.url} {self.state.value}>"
