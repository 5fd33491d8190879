"""BD Alaris GH/CC (Asena) RS-232 protocol: framing, CRC, and the reply layouts.

Implements shared/protocols/alaris-asena.md §2 (frame ``'!' body '|' CCCC CR``, body =
fields joined by ``^``, field 1 the command name, ESC aborts a frame) and §3 (CRC-16/
CCITT-FALSE of the body only, 4 upper-case hex digits; ``binascii.crc_hqx`` with initial
value 0xFFFF is exactly that algorithm). Requests and replies share one frame layout and
a reply repeats the command name (§2, §11 pitfall 2), so one ``AlarisFrame`` type serves
both directions and ``role`` is not needed.

Reply layouts. The document gives some replies from real pumps and leaves others open;
every choice is made here, once, in the typed views below (the simulated pump builds its
replies with them and the host reads replies with them):

- ``InfStatus`` (§5.2): the 13 ``INF`` fields, as in the real frame. Values stay text
  (lossless); ``parse_decimal`` turns the numeric ones into floats. Extra trailing fields
  a newer firmware might add are kept in ``extra``.
- ``VtbiStatus`` (§5.1, UNCERTAIN): chosen ``INF_VTBI^ACTIV^<vtbi, 3 dec>^ml^<end action>``
  or ``INF_VTBI^DEACT^^^`` (§8 example 2); field 2 is the programmed VTBI (empty -> none).
- ``AlarmStatus`` (§5.1, §8 example 3; third field UNCERTAIN): ``ALARM^<code>^<text>^<?>``,
  no alarm = ``ALARM^AL_NOALM^ ^ ``.
- ``INF_RATE`` query reply (UNCERTAIN) ``INF_RATE^<rate, 2 dec>^ml/h`` and ``INF_VI`` reply
  (UNCERTAIN) ``INF_VI^<volume, 3 dec>^ml``: ``RATE_FORMAT`` / ``VOLUME_FORMAT``.

Receiver rules (§2): discard bytes until ``!``; collect to CR; split once at the last
``|``; check the CRC; split at ``^`` keeping empty fields and spaces (§11 pitfalls 3-4).
A CR or LF between frames is not counted as garbage (some peers end lines with CRLF).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import ClassVar

from .base import Codec, Role

__all__ = [
    "CR",
    "ESC",
    "RATE_FORMAT",
    "VOLUME_FORMAT",
    "AlarisCodec",
    "AlarisFrame",
    "AlarmStatus",
    "InfStatus",
    "VtbiStatus",
    "crc16",
    "parse_decimal",
]

START, SEP, CRC_SEP, CR, LF, ESC = 0x21, "^", 0x7C, 0x0D, 0x0A, 0x1B

#: §6: the simulator ignores frames longer than 255 bytes; the receiver drops them too.
MAX_FRAME_BYTES = 255
#: §5.1/§5.2 number formats: rate 2 decimals, volume 3 decimals, pressure 2 decimals.
RATE_FORMAT = "{:.2f}"
VOLUME_FORMAT = "{:.3f}"
PRESSURE_FORMAT = "{:.2f}"

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")
_FORBIDDEN = frozenset("!^|")


def crc16(body: bytes) -> int:
    """§3: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)."""
    return binascii.crc_hqx(body, 0xFFFF)


def parse_decimal(text: str) -> float | None:
    """A decimal field (``52.50``, ``-50.00``, `` 50``) as float; None if it is not one
    (empty, ``24+``, garbage). Surrounding spaces are allowed (§11 pitfall 4)."""
    t = text.strip()
    return float(t) if _DECIMAL_RE.match(t) else None


def _valid_field(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E and c not in _FORBIDDEN for c in text)


@dataclass(frozen=True, slots=True)
class AlarisFrame:
    """One frame: ``command`` (field 1, upper case) and the remaining fields."""

    command: str
    params: tuple[str, ...] = ()

    @property
    def body(self) -> str:
        return SEP.join((self.command, *self.params))


# -- typed views of replies (the one place where reply layouts are chosen) --------------

_INF_FIELDS = 13


@dataclass(frozen=True, slots=True)
class InfStatus:
    """§5.2 ``INF`` reply, fields 1-13 as text."""

    serial: str
    alarm_flag: str  # "-" none, "A" alarm; others UNCERTAIN
    state: str  # "HLD" on hold; "SET"/others UNCERTAIN
    rate: str
    rate_unit: str
    drug: str
    volume: str
    volume_unit: str
    pressure: str
    pressure_unit: str
    time_remaining: str  # HH:MM:SS or "24+"
    log_type: str
    event_id: str
    extra: tuple[str, ...] = ()

    COMMAND: ClassVar[str] = "INF"

    @classmethod
    def from_frame(cls, frame: AlarisFrame) -> InfStatus | None:
        p = frame.params
        if frame.command != cls.COMMAND or len(p) < _INF_FIELDS:
            return None
        return cls(*p[:_INF_FIELDS], extra=tuple(p[_INF_FIELDS:]))

    def to_frame(self) -> AlarisFrame:
        return AlarisFrame(
            self.COMMAND,
            (
                self.serial,
                self.alarm_flag,
                self.state,
                self.rate,
                self.rate_unit,
                self.drug,
                self.volume,
                self.volume_unit,
                self.pressure,
                self.pressure_unit,
                self.time_remaining,
                self.log_type,
                self.event_id,
                *self.extra,
            ),
        )


@dataclass(frozen=True, slots=True)
class VtbiStatus:
    """``INF_VTBI`` reply in the chosen layout (see the module docstring)."""

    status: str  # "ACTIV" or "DEACT"
    vtbi: str = ""
    unit: str = ""
    end_action: str = ""

    COMMAND: ClassVar[str] = "INF_VTBI"
    ACTIVE: ClassVar[str] = "ACTIV"
    INACTIVE: ClassVar[str] = "DEACT"

    @classmethod
    def from_frame(cls, frame: AlarisFrame) -> VtbiStatus | None:
        p = frame.params
        if frame.command != cls.COMMAND or not 1 <= len(p) <= 4:
            return None
        return cls(*p)

    def to_frame(self) -> AlarisFrame:
        return AlarisFrame(self.COMMAND, (self.status, self.vtbi, self.unit, self.end_action))

    @property
    def vtbi_ml(self) -> float | None:
        """The programmed VTBI in mL, or None when none is set (DEACT, empty field) or
        the unit is not mL (never converted by guesswork)."""
        if self.status != self.ACTIVE or self.unit.strip().lower() != "ml":
            return None
        return parse_decimal(self.vtbi)


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """``ALARM`` reply: code (§5.4), text, third field (meaning UNCERTAIN)."""

    code: str
    text: str = ""
    extra: str = ""

    COMMAND: ClassVar[str] = "ALARM"
    NO_ALARM: ClassVar[str] = "AL_NOALM"

    @classmethod
    def from_frame(cls, frame: AlarisFrame) -> AlarmStatus | None:
        p = frame.params
        if frame.command != cls.COMMAND or not 1 <= len(p) <= 3:
            return None
        return cls(*p)

    def to_frame(self) -> AlarisFrame:
        return AlarisFrame(self.COMMAND, (self.code, self.text, self.extra))


# -- the codec -------------------------------------------------------------------------


class AlarisCodec(Codec):
    """Incremental parser and encoder of Alaris frames (either direction)."""

    protocol: ClassVar[str] = "alaris"
    document: ClassVar[str] = "alaris-asena.md"

    def __init__(self, role: Role = Role.HOST) -> None:
        super().__init__(role)  # both directions decode alike; role is informational
        self._frame: bytearray | None = None
        self._in_garbage = False

    @property
    def in_frame(self) -> bool:
        """True while a frame has started but its CR has not arrived (the simulator
        discards such a partial frame after 1 s, §6)."""
        return self._frame is not None

    def reset(self) -> None:
        self._frame = None
        self._in_garbage = False

    def feed(self, data: bytes) -> list[AlarisFrame]:
        self.stats.bytes_in += len(data)
        out: list[AlarisFrame] = []
        for b in data:
            if b == START:
                if self._frame is not None:
                    self.stats.error("truncated")
                self._frame = bytearray()
                self._in_garbage = False
            elif b == ESC:  # §2: abort the frame in progress
                if self._frame is not None:
                    self.stats.error("aborted")
                    self._frame = None
            elif self._frame is None:
                if b in (CR, LF):
                    self._in_garbage = False
                elif not self._in_garbage:  # one count per run of stray bytes
                    self.stats.error("garbage")
                    self._in_garbage = True
            elif b == CR:
                msg = self._close(bytes(self._frame))
                self._frame = None
                if msg is not None:
                    self.stats.frames += 1
                    out.append(msg)
            else:
                self._frame.append(b)
                if len(self._frame) > MAX_FRAME_BYTES:
                    self.stats.error("overlong")
                    self._frame = None
                    self._in_garbage = True
        return out

    def _close(self, raw: bytes) -> AlarisFrame | None:
        body, sep, crc = raw.rpartition(b"|")
        if not sep:
            self.stats.error("format")
            return None
        if crc != b"%04X" % crc16(body):
            self.stats.error("crc")
            return None
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            self.stats.error("format")
            return None
        command, *params = text.split(SEP)
        if not _NAME_RE.match(command) or not all(_valid_field(p) for p in params):
            self.stats.error("format")
            return None
        return AlarisFrame(command, tuple(params))

    def encode(self, message: AlarisFrame) -> bytes:
        if not isinstance(message, AlarisFrame):
            raise TypeError(f"not an Alaris frame: {message!r}")
        if not _NAME_RE.match(message.command):
            raise ValueError(f"command must be upper case letters, digits, _: {message.command!r}")
        for p in message.params:
            if not _valid_field(p):
                raise ValueError(f"field must be printable ASCII without ! ^ |: {p!r}")
        body = message.body.encode("ascii")
        if len(body) + 5 > MAX_FRAME_BYTES:
            raise ValueError(f"frame longer than {MAX_FRAME_BYTES} bytes: {message.body!r}")
        return b"!" + body + b"|" + b"%04X" % crc16(body) + b"\r"
