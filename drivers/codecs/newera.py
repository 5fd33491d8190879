"""New Era NE-1000 family RS-232 protocol: commands and replies in Basic and Safe mode.

Implements shared/protocols/newera-ne1000.md. In Basic mode a command is text ended by CR
and a reply is ``STX address status [data] ETX`` (§3.1); in Safe mode both directions are
``STX LEN data CRC_hi CRC_lo ETX`` with LEN = len(data) + 4 and a CRC-16 over the data
(§3.2, §4). The HOST role decodes replies, the DEVICE role decodes commands. Both roles
take either framing, frame by frame, so one codec reads a capture of a pump in either mode:
after STX a byte in ``SAFE_LEN_RANGE`` is a Safe LEN (Safe data is capped at
``MAX_DATA`` bytes, so LEN never reaches the ASCII digits of a Basic address, 0x30-0x39).
Each message records the framing it came in (``safe``) so ``encode`` gives it back.

Safe packets are read by LEN, never by scanning for ETX (§3.2, §8.7): the CRC bytes may be
0x02 or 0x03. A bad packet is counted and the parser resynchronises one byte after its STX.

Choices where the document is uncertain:

* CRC initial value: ``CRC_INIT`` = 0x0000 (CRC-16/XMODEM, ``binascii.crc_hqx``), as the
  open implementation nesp-lib uses and as the document's recollection of the manual's
  ``SAF0`` packet gives (§4 asks for a cross-check against the manual; not done here).
* Commands are normalised as the pump does (spaces and control characters removed,
  upper case, §3.1) before they are split into address (up to two digits), mnemonic (up to
  three letters) and parameters; ``*`` marks a system command.
* Reply status characters are any letter; the codec does not judge them (the host maps
  the known ones of §5.1). ``A`` is followed by ``?`` and the alarm letter (§5.2); an ``A``
  without ``?x`` is kept with ``alarm=""`` rather than dropped.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Final, Literal

from .base import Codec, Role

__all__ = [
    "CRC_INIT",
    "MAX_DATA",
    "NewEraCodec",
    "NewEraCommand",
    "NewEraReply",
    "crc16",
    "normalise",
]

STX: Final = 0x02
ETX: Final = 0x03
CR: Final = 0x0D
#: CRC-16/XMODEM initial value (§4; the document's one open doubt about Safe mode).
CRC_INIT: Final = 0x0000
#: Longest Safe-mode data accepted; real commands and replies are under 25 bytes.
MAX_DATA: Final = 40
#: LEN = len(data) + 4 (§3.2), data at least one byte.
SAFE_LEN_RANGE: Final = range(5, MAX_DATA + 5)
#: Longest Basic-mode text accepted between STX and ETX, or before CR.
MAX_BASIC: Final = 64

_CMD_RE: Final = re.compile(r"(\*?)(\d{0,2})([A-Z]{0,3})(.*)", re.S)
_REPLY_RE: Final = re.compile(r"(\d+)([A-Z])(.*)", re.S)
_PRINTABLE_RE: Final = re.compile(r"[\x20-\x7e]*")


def crc16(data: bytes) -> int:
    """The Safe-mode CRC over the transmitted data (§4)."""
    return binascii.crc_hqx(data, CRC_INIT)


def normalise(text: str) -> str:
    """What the pump makes of a command: no spaces or control characters, upper case
    (§3.1)."""
    return "".join(c for c in text if c > " " and c != "\x7f").upper()


@dataclass(frozen=True, slots=True)
class NewEraCommand:
    """A command from the host (§3.1, §5): ``[*][address][command[parameters]]``.
    ``command`` "" is the status-only query; no ``params`` makes any command a query."""

    command: str = ""
    params: str = ""
    address: int | None = 0
    system: bool = False
    safe: bool = False

    @property
    def is_query(self) -> bool:
        return self.params == ""

    def text(self) -> str:
        addr = "" if self.address is None else str(self.address)
        return ("*" if self.system else "") + addr + self.command + self.params


@dataclass(frozen=True, slots=True)
class NewEraReply:
    """A reply from the pump (§3.1, §5.1-5.3): address, status character, data.
    ``alarm`` is the letter after ``A?`` when ``status`` is "A" (§5.2), else None."""

    address: int
    status: str
    data: str = ""
    alarm: str | None = None
    safe: bool = False

    @property
    def error(self) -> str | None:
        """The error code of §5.3 ("?", "?NA", "?OOR", "?COM", "?IGN"), or None."""
        return self.data if self.data.startswith("?") else None

    def text(self) -> str:
        head = f"{self.address:02d}{self.status}"
        if self.status == "A" and self.alarm:
            head += "?" + self.alarm
        return head + self.data


def parse_command(text: str, safe: bool = False) -> NewEraCommand:
    """A command from its text (§3.1), normalised first as the pump does."""
    m = _CMD_RE.fullmatch(normalise(text))
    assert m is not None  # every group may be empty: the pattern matches any string
    system, addr, cmd, params = m.groups()
    return NewEraCommand(cmd, params, int(addr) if addr else None, bool(system), safe)


def parse_reply(text: str, safe: bool = False) -> NewEraReply | None:
    """A reply from its text (§3.1, §5.1-5.2); None if it is not one."""
    if not _PRINTABLE_RE.fullmatch(text):
        return None
    m = _REPLY_RE.fullmatch(text)
    if m is None:
        return None
    addr, status, data = m.groups()
    alarm: str | None = None
    if status == "A":
        if len(data) >= 2 and data[0] == "?":
            alarm, data = data[1], data[2:]
        else:
            alarm = ""
    return NewEraReply(int(addr), status, data, alarm, safe)


def _safe_packet(data: bytes) -> bytes:
    """``STX LEN data CRC_hi CRC_lo ETX`` (§3.2, §4)."""
    return bytes([STX, len(data) + 4]) + data + crc16(data).to_bytes(2, "big") + bytes([ETX])


class NewEraCodec(Codec):
    """Replies (HOST role) or commands (DEVICE role), in Basic or Safe framing.

    A host knows its pump's mode and should say so (``mode``): with either framing
    allowed, a bit error that turns a Basic reply's address digit into a plausible LEN
    makes the parser wait for that many bytes before it can resynchronise."""

    protocol = "ne1000"
    document = "newera-ne1000.md"

    def __init__(
        self, role: Role = Role.HOST, *, mode: Literal["basic", "safe"] | None = None
    ) -> None:
        super().__init__(role)
        if mode not in (None, "basic", "safe"):
            raise ValueError(f"mode must be 'basic', 'safe' or None (either), got {mode!r}")
        #: Framing accepted: one mode, or None for either, frame by frame (a capture).
        self.mode = mode
        self._buf = bytearray()
        self._in_garbage = False

    def reset(self) -> None:
        self._buf.clear()
        self._in_garbage = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (for a peer's inter-byte timeout, §3.2)."""
        return len(self._buf)

    # -- encoding --

    def encode(self, message: object) -> bytes:
        if isinstance(message, NewEraCommand):
            text = message.text()
            if parse_command(text, message.safe) != message:
                raise ValueError(f"{message!r} does not survive the pump's parsing")
            return self._frame(text, message.safe, basic_end=b"\r", basic_start=b"")
        if isinstance(message, NewEraReply):
            text = message.text()
            if parse_reply(text, message.safe) != message:
                raise ValueError(f"{message!r} is not a well-formed reply")
            return self._frame(text, message.safe, basic_end=b"\x03", basic_start=b"\x02")
        raise TypeError(f"NewEraCodec cannot encode {type(message).__name__}")

    @staticmethod
    def _frame(text: str, safe: bool, *, basic_end: bytes, basic_start: bytes) -> bytes:
        data = text.encode("ascii")
        if safe:
            if not 1 <= len(data) <= MAX_DATA:
                raise ValueError(f"Safe-mode data must be 1..{MAX_DATA} bytes: {text!r}")
            return _safe_packet(data)
        if len(data) > MAX_BASIC:
            raise ValueError(f"Basic-mode text longer than {MAX_BASIC}: {text!r}")
        return basic_start + data + basic_end

    # -- decoding --

    def feed(self, data: bytes) -> list[object]:
        self.stats.bytes_in += len(data)
        self._buf += data
        try:
            out = self._parse()
        except Exception:  # never raise into a reader thread (CONVENTIONS 1)
            self.stats.error("internal")
            self.reset()
            return []
        self.stats.frames += len(out)
        return out

    def _garbage(self) -> None:
        if not self._in_garbage:
            self.stats.error("garbage")
            self._in_garbage = True

    def _parse(self) -> list[object]:
        out: list[object] = []
        b = self._buf
        host = self.role is Role.HOST
        safe_ok = self.mode in (None, "safe")
        basic_ok = self.mode in (None, "basic")
        i = 0
        while i < len(b):
            if b[i] == STX and safe_ok:
                if len(b) - i < 2:
                    break
                if b[i + 1] in SAFE_LEN_RANGE:
                    step = self._safe_at(i, out)
                elif host and basic_ok:
                    step = self._basic_reply_at(i, out)
                else:
                    self.stats.error("length")  # not a possible Safe LEN
                    step = 1
            elif host and b[i] == STX:
                step = self._basic_reply_at(i, out)
            elif host or not basic_ok:
                j = b.find(STX, i)
                self._garbage()
                step = (len(b) if j < 0 else j) - i
            else:
                step = self._basic_command_at(i, out)
            if step == 0:
                break  # wait for more bytes
            i += step
        del b[:i]
        return out

    def _safe_at(self, i: int, out: list[object]) -> int:
        """A Safe packet at ``i``: bytes consumed, 0 to wait, 1 to resync after a bad one."""
        b = self._buf
        n = b[i + 1]
        if len(b) - i < 1 + n:
            return 0
        if b[i + n] != ETX:
            self.stats.error("framing")
            return 1
        data = bytes(b[i + 2 : i + n - 2])
        if crc16(data) != int.from_bytes(b[i + n - 2 : i + n], "big"):
            self.stats.error("crc")
            return 1
        self._in_garbage = False
        text = data.decode("latin-1")
        msg = parse_reply(text, True) if self.role is Role.HOST else parse_command(text, True)
        if msg is None:
            self.stats.error("format")
        else:
            out.append(msg)
        return 1 + n

    def _basic_reply_at(self, i: int, out: list[object]) -> int:
        """A Basic reply ``STX text ETX`` at ``i`` (§3.1: no STX/ETX inside)."""
        b = self._buf
        window = b[i + 1 : i + 2 + MAX_BASIC]
        e = next((k for k, c in enumerate(window) if c in (STX, ETX)), None)
        if e is None:
            if len(window) > MAX_BASIC:
                self.stats.error("length")
                return 1
            return 0
        if window[e] == STX:
            self.stats.error("truncated")
            return 1 + e
        self._in_garbage = False
        msg = parse_reply(bytes(window[:e]).decode("latin-1"), False)
        if msg is None:
            self.stats.error("format")
        else:
            out.append(msg)
        return e + 2

    def _basic_command_at(self, i: int, out: list[object]) -> int:
        """A Basic command ``text CR`` at ``i``; an STX inside starts a Safe packet."""
        b = self._buf
        window = b[i : i + MAX_BASIC + 1]
        ends = (STX, CR) if self.mode is None else (CR,)
        e = next((k for k, c in enumerate(window) if c in ends), None)
        if e is None:
            if len(window) > MAX_BASIC:
                self.stats.error("length")
                return len(window)
            return 0
        if window[e] == STX:
            self.stats.error("truncated")
            return e
        out.append(parse_command(bytes(window[:e]).decode("latin-1"), False))
        return e + 1
