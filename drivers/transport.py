"""One reader thread per device: a host protocol on any pyserial URL, with reconnects.

The port is opened with ``serial.serial_for_url`` (CONVENTIONS 2), so a device path, a pty,
``socket://host:port`` (a serial device server), ``rfc2217://``, ``loop://`` and
``spy://`` (a hexdump of the traffic, for debugging a device) all work unchanged. The
protocol logic lives in the ``HostProtocol`` (sans-I/O); this module only moves bytes,
keeps time, and owns the connection state machine every device shares (CONVENTIONS 3, 4):

    CONNECTING -> STREAMING (first valid frame) -> STALE (no valid frame for the
    protocol's ``stale_after_s``) -> DISCONNECTED (port error, or stale for
    ``disconnect_after_s``: closed and reopened, which re-runs the handshake)

Every transition is published as a ``DeviceStatus`` on the bus, where the alarm engine
turns STALE and DISCONNECTED into technical alarms. Reconnects back off exponentially
(0.5 s doubling to 10 s) and reset once data flows again. An I/O error is a state change,
never a dead thread; a codec error is counted by the codec, never a disconnection
(pyserial issue #355). The thread never touches Qt: it only calls ``publish``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import serial

from kapmonitor.model import DeviceState, DeviceStatus, Message, now_us

from .protocol import HostProtocol

__all__ = ["DeviceRunner", "RunnerStats"]

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


class DeviceRunner:
    """Runs ``host`` on ``url`` until ``stop()``.

    ``serial_overrides`` replace the protocol's line settings for this port (a clinic's
    device server may run another baud rate). ``clock`` gives host time in integer
    microseconds; the simulator's demo passes a scaled clock.
    """

    def __init__(self, url: str, host: HostProtocol, publish: Publish, *,
                 serial_overrides: Mapping[str, Any] | None = None,
                 read_timeout_s: float = 0.02, backoff_s: tuple[float, float] = (0.5, 10.0),
                 disconnect_after_s: float | None = None,
                 clock: Callable[[], int] = now_us) -> None:
        self.url = url
        self.host = host
        self.publish = publish
        self.settings = {**host.serial_settings.as_kwargs(), **(serial_overrides or {})}
        # ticks are due in the clock's time; at a simulated --speed N, wait N times less
        speed = getattr(clock, "speed", 1.0)
        self.read_timeout_s = max(0.0005, min(read_timeout_s, host.tick_interval_s) / speed)
        self.backoff_s = backoff_s
        self.disconnect_after_s = (disconnect_after_s if disconnect_after_s is not None
                                   else 3 * host.stale_after_s)
        self.clock = clock
        self.stats = RunnerStats()
        self.state = DeviceState.STOPPED
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DeviceRunner:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"device-{self.host.source}")
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and join the thread within ``timeout`` seconds."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"device thread {thread.name} did not stop in {timeout} s")

    def __enter__(self) -> DeviceRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the thread ------------------------------------------------------------------------

    def _set_state(self, state: DeviceState, detail: str = "") -> None:
        if state is self.state:
            return
        self.state = state
        log.info("%s %s: %s %s", self.host.source, self.url, state.value, detail)
        self._publish([DeviceStatus(self.host.source, state, self.clock(), detail,
                                    self.host.protocol)])

    def _publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        try:
            self.publish(messages)
        except Exception:  # the bus isolates subscribers; this guards a broken publish hook
            self.stats.publish_errors += 1
            log.exception("%s: publishing failed", self.host.source)

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            self._set_state(DeviceState.CONNECTING, self.url)
            try:
                port = serial.serial_for_url(self.url, timeout=self.read_timeout_s,
                                             write_timeout=2.0, **self.settings)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._set_state(DeviceState.DISCONNECTED, f"cannot open {self.url}: {exc}")
                self._stop.wait(delay)
                delay = min(self.backoff_s[1], delay * 2)
                continue
            self._port = port
            self.stats.connects += 1
            try:
                reason = self._serve(port)
                if reason is None:  # stopped on purpose
                    break
                if self.host.last_frame_us is not None:
                    delay = self.backoff_s[0]  # it worked for a while: retry soon
            finally:
                self.host.connection_lost()
                try:
                    port.close()
                except Exception:
                    log.debug("closing %s failed", self.url, exc_info=True)
                self._port = None
            self.stats.disconnects += 1
            self._set_state(DeviceState.DISCONNECTED, reason)
            self._stop.wait(delay)
            delay = min(self.backoff_s[1], delay * 2)
        self._set_state(DeviceState.STOPPED)

    def _write(self, port: serial.SerialBase) -> None:
        out = self.host.take_outgoing()
        if out:
            port.write(out)
            self.stats.bytes_out += len(out)

    def _serve(self, port: serial.SerialBase) -> str | None:
        """Pump bytes until the link fails (returns why) or stop() (returns None)."""
        host = self.host
        opened = self.clock()
        host.last_frame_us = None
        host.connection_made(opened)
        tick_us = round(host.tick_interval_s * 1e6)
        next_tick = opened
        try:
            self._write(port)
            while not self._stop.is_set():
                data = port.read(port.in_waiting or 1)
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
        except (serial.SerialException, OSError) as exc:
            return f"port error: {exc}"
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

