"""Fresenius Kabi Base Primea ASCII host protocol: link bytes, frames and checksum.

Implements shared/protocols/fresenius-base-primea.md (§2 control bytes, §3 framing and
checksum, §4 reply status letters, §5 command syntax). Both directions share one frame
layout, ``STX [module digit] body CC ETX``, and the two kinds of body cannot be confused:
a host command is two upper-case letters (``1LE;dr``), a pump reply or the host's
application-level echo is one status letter (``1C;d20D``, ``1E``). So one codec decodes
either direction and ``role`` is not needed (``kapmonitor decode`` can read a capture of
both directions at once).

Link control bytes (ACK, NAK + code, ENQ, DC4) are sent bare and may arrive at any time,
also between the bytes of a frame (§3 receiver rule, §12 pitfall 3); the parser hands them
out as messages wherever they appear without disturbing the frame being collected.

Choices where the document is uncertain:

- ``MAX_MESSAGE_CHARS``: the 80-character limit (§3, error ``0C``) is applied by
  ``encode`` to module digit + body + checksum; whether STX/ETX count is UNCERTAIN, so
  the receiver is lenient up to ``RECEIVE_LIMIT`` bytes.
- Checksum hex must be upper case on receive, as infupy compares it byte for byte (§3.1).
- Values inside payloads stay text here (``Item.value``); the hex width and case a real
  pump sends are UNCERTAIN (§5.3), so ``hex_value`` accepts any length and case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .base import Codec, Role

__all__ = [
    "ACK",
    "DC4",
    "ENQ",
    "ETX",
    "MAX_MESSAGE_CHARS",
    "NAK",
    "NAK_CODES",
    "STX",
    "Ack",
    "Command",
    "Dc4",
    "Enq",
    "FreseniusCodec",
    "FreseniusMessage",
    "Item",
    "Nak",
    "Reply",
    "checksum",
    "hex_value",
    "items_payload",
    "parse_items",
]

STX, ETX, ENQ, ACK, DC4, NAK = 0x02, 0x03, 0x05, 0x06, 0x14, 0x15

#: §3: maximum message length; applied to module digit + body + checksum (UNCERTAIN
#: whether STX/ETX count), so encoded frames are never longer than 82 bytes.
MAX_MESSAGE_CHARS = 80
#: A frame still open after this many bytes is dropped as garbage (lenient receive side).
RECEIVE_LIMIT = 255

#: §7.1 link error codes sent after NAK.
NAK_CODES: dict[str, str] = {
    "1": "character reception problem",
    "2": "wrong checksum",
    "4": "wrong address",
    "5": "time-out waiting for ACK",
    "6": "receiver not ready",
    "7": "wrong frame length",
    "8": "control character inside a frame",
}

#: Codec error reasons that a receiver answers with NAK + code (§6 step 7, §7.1).
NAK_FOR_ERROR: dict[str, str] = {"checksum": "2", "overlong": "7", "control": "8"}

_COMMAND_RE = re.compile(r"([0-9]?)([A-Z]{2})(?:;(.*))?\Z", re.DOTALL)
_REPLY_RE = re.compile(r"([0-9]?)([A-Z])(?:;(.*))?\Z", re.DOTALL)
_HEX_RE = re.compile(r"[0-9A-Fa-f]+\Z")


def checksum(text: bytes) -> bytes:
    """§3.1: 0xFF minus the low byte of the sum of module digit + body, two upper-case
    hex digits."""
    return b"%02X" % (0xFF - (sum(text) & 0xFF))


@dataclass(frozen=True, slots=True)
class Ack:
    """0x06: the last frame arrived with a correct checksum (§2)."""


@dataclass(frozen=True, slots=True)
class Enq:
    """0x05: the pump's line check; the host answers DC4 at once (§2)."""


@dataclass(frozen=True, slots=True)
class Dc4:
    """0x14: the host's answer to ENQ (§2)."""


@dataclass(frozen=True, slots=True)
class Nak:
    """0x15 + one-character link error code (§7.1, see ``NAK_CODES``)."""

    code: str


@dataclass(frozen=True, slots=True)
class Command:
    """Host -> pump: ``[module]XX[;args]`` (§5). ``module`` None = stand-alone pump."""

    module: int | None
    command: str
    args: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A status frame ``[module]S[;payload]`` (§4): pump replies C/I, spontaneous E/M,
    and the host's application-level echo ``[module]E`` / ``[module]M`` (no payload).
    ``payload`` None means no ``;`` at all; it is kept as text so nothing on the wire is
    lost (use ``parse_items`` for C/E payloads; an I payload is a 2-hex error code)."""

    module: int | None
    status: str
    payload: str | None = None

    @property
    def items(self) -> tuple[Item, ...]:
        return parse_items(self.payload) if self.payload else ()


FreseniusMessage = Ack | Enq | Dc4 | Nak | Command | Reply


@dataclass(frozen=True, slots=True)
class Item:
    """One ``;``-separated payload item: identifier letter + value text (§4, §5.3)."""

    ident: str
    value: str


def parse_items(payload: str) -> tuple[Item, ...]:
    """Split a C/E payload into items. Unknown identifiers are kept, not skipped (§4:
    "KAP should store unknown items raw")."""
    return tuple(Item(seg[:1], seg[1:]) for seg in payload.split(";"))


def items_payload(items: tuple[Item, ...] | list[Item]) -> str:
    return ";".join(i.ident + i.value for i in items)


def hex_value(value: str) -> int | None:
    """A §5.3 hex number of any width and case, or None if the text is not hex."""
    return int(value, 16) if _HEX_RE.match(value) else None


def _printable(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E for c in text)


class FreseniusCodec(Codec):
    """Incremental parser and encoder for both directions of the Base Primea link."""

    protocol: ClassVar[str] = "fresenius"
    document: ClassVar[str] = "fresenius-base-primea.md"

    def __init__(self, role: Role = Role.HOST) -> None:
        super().__init__(role)  # both directions decode alike; role is informational
        self._frame: bytearray | None = None
        self._nak_pending = False
        self._in_garbage = False

    def reset(self) -> None:
        self._frame = None
        self._nak_pending = False
        self._in_garbage = False

    # -- decoding ---------------------------------------------------------------------

    def feed(self, data: bytes) -> list[FreseniusMessage]:
        self.stats.bytes_in += len(data)
        out: list[FreseniusMessage] = []
        for b in data:
            if self._nak_pending:
                self._nak_pending = False
                if 0x20 <= b <= 0x7E:
                    self._emit(out, Nak(chr(b)))
                    continue
                self.stats.error("nak_code")  # NAK without its code: look at b afresh
            if b == ACK:
                self._emit(out, Ack())
            elif b == ENQ:
                self._emit(out, Enq())
            elif b == DC4:
                self._emit(out, Dc4())
            elif b == NAK:
                self._in_garbage = False
                self._nak_pending = True
            elif b == STX:
                if self._frame is not None:
                    self.stats.error("truncated")
                self._in_garbage = False
                self._frame = bytearray()
            elif self._frame is None:
                if not self._in_garbage:  # one count per run of stray bytes
                    self.stats.error("garbage")
                    self._in_garbage = True
            elif b == ETX:
                msg = self._close(bytes(self._frame))
                self._frame = None
                if msg is not None:
                    self._emit(out, msg)
            else:
                self._frame.append(b)
                if len(self._frame) > RECEIVE_LIMIT:
                    self.stats.error("overlong")
                    self._frame = None
                    self._in_garbage = True
        return out

    def _emit(self, out: list[FreseniusMessage], msg: FreseniusMessage) -> None:
        self._in_garbage = False
        self.stats.frames += 1
        out.append(msg)

    def _close(self, raw: bytes) -> Command | Reply | None:
        if len(raw) < 3:
            self.stats.error("format")
            return None
        text, cc = raw[:-2], raw[-2:]
        if cc != checksum(text):
            self.stats.error("checksum")
            return None
        if not all(0x20 <= c <= 0x7E for c in text):
            self.stats.error("control")
            return None
        msg = _parse_body(text.decode("ascii"))
        if msg is None:
            self.stats.error("format")
        return msg

    # -- encoding ---------------------------------------------------------------------

    def encode(self, message: FreseniusMessage) -> bytes:
        match message:
            case Ack():
                return bytes([ACK])
            case Enq():
                return bytes([ENQ])
            case Dc4():
                return bytes([DC4])
            case Nak(code=code):
                if len(code) != 1 or not _printable(code):
                    raise ValueError(f"NAK code must be one printable character, got {code!r}")
                return bytes([NAK]) + code.encode("ascii")
            case Command(module=module, command=cmd, args=args):
                if not re.fullmatch(r"[A-Z]{2}", cmd):
                    raise ValueError(f"command must be two upper-case letters, got {cmd!r}")
                body = cmd if args is None else f"{cmd};{args}"
                return _frame(module, body)
            case Reply(module=module, status=status, payload=payload):
                if not re.fullmatch(r"[A-Z]", status):
                    raise ValueError(f"status must be one upper-case letter, got {status!r}")
                body = status if payload is None else f"{status};{payload}"
                return _frame(module, body)
        raise TypeError(f"not a Fresenius message: {message!r}")


def _frame(module: int | None, body: str) -> bytes:
    if module is not None and not (isinstance(module, int) and 0 <= module <= 9):
        raise ValueError(f"module must be a digit 0-9 or None, got {module!r}")
    if not _printable(body):
        raise ValueError(f"frame body must be printable ASCII, got {body!r}")
    text = (("" if module is None else str(module)) + body).encode("ascii")
    if len(text) + 2 > MAX_MESSAGE_CHARS:
        raise ValueError(f"message longer than {MAX_MESSAGE_CHARS} characters: {body!r}")
    return bytes([STX]) + text + checksum(text) + bytes([ETX])


def _parse_body(text: str) -> Command | Reply | None:
    m = _COMMAND_RE.match(text)
    if m:
        return Command(int(m[1]) if m[1] else None, m[2], m[3])
    m = _REPLY_RE.match(text)
    if m:
        return Reply(int(m[1]) if m[1] else None, m[2], m[3])
    return None
