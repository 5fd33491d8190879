"""The shape every wire-protocol codec has.

A codec is pure and incremental (CONVENTIONS 1): ``feed(chunk)`` takes whatever bytes
arrived, keeps the incomplete tail for the next call, and returns the complete messages it
found; ``encode(message)`` gives the bytes of one message. It never sees a port, a thread
or a clock, and it never raises on bad input: a bad frame is counted in ``stats`` under a
reason and the parser resynchronises on the next frame boundary. That is what lets one
reader thread, one fuzz target and one ``kapmonitor decode`` serve every protocol, and what
keeps a parse error from looking like a disconnection (pyserial issue #355).

Messages are frozen dataclasses of the protocol's own vocabulary (a poll reply, a Nonin
frame, ...); mapping them to model channels is the device layer's job, not the codec's.
``decode(encode(m)) == m`` holds for every message a codec can encode.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar

__all__ = ["Codec", "CodecStats", "Role"]


class Role(enum.Enum):
    """Which end of the link a codec instance serves. Where the two directions of a
    protocol are framed differently (ASCII command in, binary reply out), the host decodes
    what the device sends and the device (a peer) decodes what the host sends."""

    HOST = "host"
    DEVICE = "device"


class CodecStats:
    """Counters a codec keeps instead of raising. ``errors`` maps a short reason
    ("checksum", "format", "garbage", "truncated", ...) to a count."""

    __slots__ = ("bytes_in", "errors", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes_in = 0
        self.errors: Counter[str] = Counter()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def error(self, reason: str, n: int = 1) -> None:
        self.errors[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "bytes": self.bytes_in, "errors": dict(self.errors)}


class Codec(ABC):
    """Base class of all codecs. Subclasses set ``protocol`` (the registry name) and
    ``document`` (the file in shared/protocols/ they implement)."""

    protocol: ClassVar[str]
    document: ClassVar[str]

    def __init__(self, role: Role = Role.HOST) -> None:
        self.role = role
        self.stats = CodecStats()

    @abstractmethod
    def feed(self, data: bytes) -> list[Any]:
        """Consume bytes, return the complete messages decoded from them. Never raises
        on any input."""

    @abstractmethod
    def encode(self, message: Any) -> bytes:
        """Bytes of one message, framed and checksummed as on the wire."""

    def reset(self) -> None:  # noqa: B027 - optional hook, most codecs need no reset
        """Forget any partial frame (after a reconnect). Counters are kept."""
