"""Sans-I/O device protocols: both ends of a device link as pure state machines.

A ``HostProtocol`` is what the app runs for one device: it gets the bytes the device sent
and the current host time, and returns model messages (readings, wave chunks, pump states)
plus the bytes to send back (association, polls, keep-alives). A ``PeerProtocol`` is the
device's side of the same link, used by the simulator and the tests: it answers the host's
requests byte for byte as the protocol document says, and emits frames from values handed
to it by a feed.

Neither touches a port, a thread or ``time``: the transport (``drivers/transport.py``) runs
a host protocol on a reader thread, the peer server (``drivers/sim/server.py``) runs a peer
on a pty or TCP listener, and the tests can also wire the two straight together in memory.
Keeping the protocol logic out of the transport is the lesson CONVENTIONS 1 and 3 draw from
pyserial and python-can: one transport, one reconnect policy, many protocols.

Lifecycle, same for both ends::

    p.connection_made(now_us)       # link (re)opened: reset state, queue any opening bytes
    p.data_received(data, now_us)   # bytes arrived; returns model messages (host) or []
    p.tick(now_us)                  # called at least every ``tick_interval_s``: polls,
                                    # keep-alives, retries, periodic frames
    p.take_outgoing() -> bytes      # what to write now (drained)
    p.connection_lost()             # link gone
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import serial

from kapmonitor.model import Message

from .codecs.base import Codec

__all__ = ["HostProtocol", "PeerProtocol", "SerialSettings"]


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Line settings a protocol document prescribes; a port may override them."""

    baudrate: int = 9600
    bytesize: int = serial.EIGHTBITS
    parity: str = serial.PARITY_NONE
    stopbits: float = serial.STOPBITS_ONE
    xonxoff: bool = False
    rtscts: bool = False

    def as_kwargs(self) -> dict[str, object]:
        return {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": self.parity,
            "stopbits": self.stopbits,
            "xonxoff": self.xonxoff,
            "rtscts": self.rtscts,
        }

    @property
    def bytes_per_second(self) -> float:
        """Line rate in bytes/s (start + data + parity + stop bits per byte)."""
        bits = 1 + self.bytesize + (0 if self.parity == serial.PARITY_NONE else 1)
        return self.baudrate / (bits + self.stopbits)


class _Endpoint(ABC):
    protocol: ClassVar[str]
    serial_settings: ClassVar[SerialSettings] = SerialSettings()
    #: How often the runner must call tick() at least.
    tick_interval_s: ClassVar[float] = 0.05

    codec: Codec

    def __init__(self) -> None:
        self._outgoing = bytearray()

    def send(self, data: bytes) -> None:
        """Queue bytes for the runner to write (for subclasses)."""
        self._outgoing += data

    def take_outgoing(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def connection_made(self, now_us: int) -> None:  # noqa: B027 - optional hook
        """Link (re)opened."""

    def connection_lost(self) -> None:  # noqa: B027 - optional hook
        """Link gone; forget partial frames and session state."""


class HostProtocol(_Endpoint):
    """The app's end of one device link.

    ``source`` names the device in every message it produces (e.g. "monitor"). A host
    protocol must never queue a command that changes what a clinical device does (pumps:
    queries only); ``last_frame_us`` is the host time of the last valid frame, which the
    transport uses for stale detection.
    """

    #: No valid frame for this long -> the device is stale (a technical alarm).
    stale_after_s: ClassVar[float] = 5.0

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.last_frame_us: int | None = None

    @abstractmethod
    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        """Bytes from the device; returns the model messages they complete."""

    def tick(self, now_us: int) -> list[Message]:
        """Periodic work (polls, keep-alives, handshake retries). May return messages
        derived from time (e.g. a pump state when a poll times out)."""
        return []

    @property
    def associated(self) -> bool:
        """True once any handshake the protocol needs has completed."""
        return True

    #: How long the transport keeps the link open after ``closing()`` on a deliberate
    #: stop, for the device's answer (0: close at once).
    closing_grace_s: ClassVar[float] = 0.0

    def closing(self, now_us: int) -> None:
        """The app is stopping on purpose: queue any goodbye (a release request, a
        request to stop sending). Not called when the link failed."""

    @property
    def closed(self) -> bool:
        """True once the goodbye exchange is complete (ends the grace period early)."""
        return False


class PeerProtocol(_Endpoint):
    """A device's end of the link, played by the simulator and the tests."""

    @abstractmethod
    def data_received(self, data: bytes, now_us: int) -> None:
        """Bytes from the host: decode requests and queue the device's replies."""

    def tick(self, now_us: int) -> None:
        """Emit whatever the device sends unasked by now (streaming frames)."""
