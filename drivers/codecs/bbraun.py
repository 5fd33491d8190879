"""B. Braun Space "BCC" data interface (SpaceStation + SpaceCom): framing and messages.

Implements shared/protocols/bbraun-bcc.md. The official specification is not public; the
document is built from one open implementation tested on real hardware plus real captured
frames, and it marks what is uncertain. This module holds the wire format only:

* §2 framing: ``SOH LLLLL STX <bedID>/1/1> <user data> ETX|ETB CCCCC EOT``; the length is
  the whole frame (SOH..EOT) in 5 decimal digits; ETB marks a part of a multi-part answer.
* §3 checksum: byte sum of SOH..ETX/ETB modulo 256, written as 5 decimal digits.
* §4 requests (client -> server): ``AREA:COMMAND`` text, e.g. ``MEM:GET``.
* §5 responses (server -> client): quadruples ``relTime,address,parameter[,value]``
  separated by RS; addresses ``501`` + pillar + slot (5 characters, or 6 with a two-digit
  slot, §5 pitfall); the error codes of §5.1, the unit table of §5.3 and the bit sets of
  §5.4 (kept for future mapping: which parameter carries them is unknown).
* §2 ACK (and NAK, which the open code never sends) are single bytes outside any frame.

The two directions share the frame but not the user data, so the codec uses ``Role``:
``Role.HOST`` decodes what the rack sends (``BccResponse``), ``Role.DEVICE`` decodes what
the PC sends (``BccRequest``, ``BccAck``, ``BccNak``). ``encode`` accepts all of them.

Choices where the document is uncertain (each in one constant):

* ``CHARACTER_STUFFING = False``: §2 says the stuffing rule is unverified and KAP keeps it
  off. The rule as the document gives it is implemented behind the ``stuffing`` argument so
  a rack configured that way can be tried, but nothing enables it by default.
* ``TEXT_ENCODING = "latin-1"``: §5 says text values may hold non-ASCII bytes and gives no
  encoding. Latin-1 maps every byte to one character, so decoding never fails and
  re-encoding gives back the exact bytes (the checksum of a re-encoded frame stays right);
  a UTF-8 drug name shows as mojibake rather than being altered or dropped.
* ``NO_VALUE_MARKERS``: §5 leaves the difference between ``_NV`` and ``_NA`` open; both
  mean "no data" and are never converted to a number (pitfall 6).

What the codec decodes it never interprets: a quadruple keeps its parameter and value as
text; the mapping to pump state is the device layer's job (drivers/devices/bbraun.py).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from .base import Codec, Role

__all__ = [
    "ACK",
    "CHARACTER_STUFFING",
    "EOT",
    "ETB",
    "ETX",
    "NAK",
    "NO_VALUE_MARKERS",
    "RS",
    "SOH",
    "STX",
    "TEXT_ENCODING",
    "UNITS",
    "AlarmWord1",
    "AlarmWord2",
    "BBraunCodec",
    "BccAck",
    "BccError",
    "BccNak",
    "BccRequest",
    "BccResponse",
    "PreAlarm",
    "PumpStatusBits",
    "Quadruple",
    "Unparsed",
    "checksum",
    "parse_address",
    "slot_address",
    "slot_code",
    "stuff",
]

# --- §2 control characters ----------------------------------------------------------------
SOH: Final = 0x01
STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ACK: Final = 0x06
NAK: Final = 0x15
ETB: Final = 0x17
RS: Final = 0x1E

#: §2: the literal text between the bed ID and the user data.
HEADER_SUFFIX: Final = b"/1/1>"
#: §2: SOH + 5 length digits + STX, and ETX/ETB + 5 checksum digits + EOT.
_HEAD_LEN: Final = 7
_TAIL_LEN: Final = 7
#: §2: the length field has 5 decimal digits, so no frame can be longer.
MAX_FRAME_LEN: Final = 99_999
#: §2: the bed ID has 1..15 characters.
MAX_BED_ID_LEN: Final = 15

#: §2 "Optional character stuffing — UNCERTAIN": off, as the open code was tested on
#: hardware and as the document tells KAP to run.
CHARACTER_STUFFING: Final = False
#: §5: text encoding not given; latin-1 is lossless for any byte (see module docstring).
TEXT_ENCODING: Final = "latin-1"
#: §5: special values meaning "no value" / "not available"; both are "no data" for KAP.
NO_VALUE_MARKERS: Final = frozenset({"_NV", "_NA"})

_FRAME_EDGE = re.compile(b"[\x01\x04]")
_DIGITS5 = re.compile(rb"\d{5}\Z")
_REL_TIME = re.compile(r"\d+\Z")


# --- §3 checksum ---------------------------------------------------------------------------
def checksum(frame_head: bytes) -> int:
    """§3: sum of all bytes from SOH up to and including ETX/ETB, modulo 256."""
    return sum(frame_head) % 256


# --- §2 optional character stuffing (UNVERIFIED rule, off by default) -----------------------
_STUFF = {ord("d"): b"ex", ord("D"): b"EX", ord("e"): b"ee", ord("E"): b"EE"}
_UNSTUFF = {ord("x"): ord("d"), ord("X"): ord("D"), ord("e"): ord("e"), ord("E"): ord("E")}


def stuff(frame: bytes) -> bytes:
    """§2 stuffing as the document describes it, applied to a complete frame after its
    checksum was computed: d->ex, D->EX, e->ee, E->EE."""
    return b"".join(_STUFF.get(b, bytes((b,))) for b in frame)


# --- §5 addresses ---------------------------------------------------------------------------
_SLOT_CHARS: Final = "123456789ABCDEFGHIJKLMNO"  # §1: slots 1..9 then A..O (10..24)
_ADDRESS = re.compile(r"501([0-3])([0-9A-O]|\d\d)\Z")


def parse_address(address: str) -> tuple[int, int] | None:
    """§5 ``501`` + pillar digit + slot character (``50111``, ``5011B``), or the 6-character
    form with a two-digit slot that BCC 3.30 was seen to send (``501110`` = pillar 1 slot
    10). Returns (pillar, slot); (0, 0) is the rack itself. None if not an address."""
    m = _ADDRESS.match(address)
    if m is None:
        return None
    pillar = int(m.group(1))
    s = m.group(2)
    slot = _SLOT_CHARS.index(s) + 1 if len(s) == 1 and s != "0" else int(s)
    if (pillar == 0) != (slot == 0) or slot > len(_SLOT_CHARS):
        return None
    return pillar, slot


def slot_code(pillar: int, slot: int) -> str:
    """The two-character pump index of §4 (``MEM:GETSLOT#ps``): ``11``, ``1B``, ``00``."""
    if pillar == 0 and slot == 0:
        return "00"
    if not (1 <= pillar <= 3 and 1 <= slot <= len(_SLOT_CHARS)):
        raise ValueError(f"no BCC pump index for pillar {pillar} slot {slot}")
    return f"{pillar}{_SLOT_CHARS[slot - 1]}"


def slot_address(code: str) -> str:
    """5-character address of a pump index code (``"1B"`` -> ``"5011B"``)."""
    if len(code) != 2 or parse_address("501" + code) is None:
        raise ValueError(f"not a BCC pump index: {code!r}")
    return "501" + code


# --- §5.1 error codes, §5.3 units, §5.4 bit sets ---------------------------------------------
class BccError(enum.IntEnum):
    """§5.1 ``GNERR`` codes the document confirms. Other codes are UNCERTAIN (the full
    list is in the non-public specification) and stay plain integers."""

    NO_DATA = 11  # no further data available / no pumps in the system
    PUMP_REMOVED = 39  # the pump left the slot named by the address
    SYNTAX = 68  # wrong syntax
    WRONG_ADDRESS = 811  # wrong pump address


#: §5.3 unit codes (the document's selection of the open code's table, which runs to 156).
UNITS: Mapping[int, str] = MappingProxyType(
    {
        1: "mL/h", 2: "mL", 3: "hh:mm", 4: "min:sec", 13: "ms", 15: "%", 22: "kg", 23: "ng",
        24: "mg", 25: "µg", 26: "g", 31: "mg/mL", 32: "µg/mL", 38: "mg/kg", 39: "µg/kg",
        47: "mg/min", 48: "mg/h", 50: "µg/min", 51: "µg/h", 68: "mg/kg/min", 69: "mg/kg/h",
        71: "µg/kg/min", 72: "µg/kg/h", 86: "mmHg", 94: "hour", 153: "mL/kg", 155: "mL/kg/h",
    }
)  # fmt: skip


class PumpStatusBits(enum.IntFlag):
    """§5.4 pump status bits (bit numbers from the open code). The BCC parameter that
    carries them is UNKNOWN, so nothing decodes into this yet."""

    SWITCHED_ON = 1 << 0
    MAINS_POWER = 1 << 1
    STANDBY = 1 << 2
    STARTUP_MENU = 1 << 3
    PRIME = 1 << 4
    DRIVE_PARKED = 1 << 5
    READY_TO_START = 1 << 6
    INFUSING = 1 << 7
    THERAPY_STARTED = 1 << 8
    READY_FOR_BOLUS = 1 << 9
    MANUAL_BOLUS = 1 << 10
    VOLUME_BOLUS = 1 << 11
    KVO_RELEASED = 1 << 12
    KVO_ACTIVE = 1 << 13
    DATA_LOCK = 1 << 14
    DOSE_MODE = 1 << 15
    DOSE_WITH_BODY_WEIGHT = 1 << 16
    PATIENT_STORED = 1 << 17
    ALARM_SILENCED = 1 << 19
    PRE_ALARM_SILENCED = 1 << 20
    SPACECONTROL_CONNECTED = 1 << 21
    AIR_SENSOR_OFF = 1 << 22
    PRIMARY_ACTIVE = 1 << 23
    PARAMETER_EDITOR = 1 << 24


class AlarmWord1(enum.IntFlag):
    """§5.4 alarm word 1 (carrier parameter UNKNOWN)."""

    NO_ALARM = 1 << 0
    BATTERY = 1 << 2
    BATTERY_VOLTAGE_LOW = 1 << 5
    BATTERY_MISSING = 1 << 6
    BATTERY_FLAT_AT_POWER_ON = 1 << 7
    BATTERY_COVER_OPEN = 1 << 8
    SYRINGE_EMPTY = 1 << 9
    OCCLUSION = 1 << 10
    OCCLUSION_DRIVE_BLOCKED = 1 << 11
    STANDBY_EXPIRED = 1 << 12
    VTBI_INFUSED = 1 << 13
    TIME_EXPIRED = 1 << 14
    CLAW_MALFUNCTION = 1 << 15
    PRESSURE_SENSOR_DEFECT = 1 << 16
    SYRINGE_HOLDER_OPEN = 1 << 17
    SYRINGE_INSERTED_INCORRECTLY = 1 << 18
    KVO_END = 1 << 19
    UPSTREAM_PRESSURE = 1 << 20
    DROP_SENSOR_22 = 1 << 22
    DROP_SENSOR_23 = 1 << 23
    DROP_SENSOR_24 = 1 << 24
    DROP_SENSOR_25 = 1 << 25
    DROP_SENSOR_26 = 1 << 26
    DROP_SENSOR_27 = 1 << 27
    AIR = 1 << 28
    AIR_BUBBLE_TOO_LARGE = 1 << 29
    AIR_RATE_EXCEEDED = 1 << 30
    AIR_SENSOR_FAULT = 1 << 31


class AlarmWord2(enum.IntFlag):
    """§5.4 alarm word 2 (carrier parameter UNKNOWN)."""

    UNAUTHORISED_MANIPULATION = 1 << 1
    TIME_LIMIT_REACHED = 1 << 2
    SGC_END = 1 << 3
    TAKE_OVER_4 = 1 << 4
    TAKE_OVER_5 = 1 << 5
    TAKE_OVER_6 = 1 << 6
    FREE_FLOW_DANGER = 1 << 7
    INFUSOMAT_OCCLUSION_TEST_ERROR = 1 << 29
    DOOR_OPENED_DURING_INFUSION = 1 << 30
    SYRINGE_NOT_SECURE = 1 << 31


class PreAlarm(enum.IntFlag):
    """§5.4 pre-alarm reasons (carrier parameter UNKNOWN)."""

    SYRINGE_NEARLY_EMPTY = 1 << 1
    VTBI_NEARLY_DELIVERED = 1 << 2
    TIME_NEARLY_OVER = 1 << 3
    BATTERY_NEARLY_FLAT = 1 << 4
    KVO = 1 << 5
    UNAUTHORISED_MANIPULATION = 1 << 6
    OCCLUSION = 1 << 10
    PRESSURE_LEAP_HIGH = 1 << 11
    PRESSURE_LEAP_LOW = 1 << 12
    BATTERY_DEFECTIVE = 1 << 15


# --- messages -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Quadruple:
    """§5 one server data item. ``value`` is the text after the third comma (it may itself
    hold commas), or None when the quadruple has no value part; ``_NV``/``_NA`` stay text."""

    rel_time: int  # seconds on the SpaceStation's own clock
    address: str  # raw, e.g. "50111" or "501110"
    parameter: str
    value: str | None = None

    @property
    def pump_index(self) -> tuple[int, int] | None:
        """(pillar, slot) of the address, (0, 0) for the rack, None if malformed."""
        return parse_address(self.address)

    @property
    def has_value(self) -> bool:
        """False for an absent value and for the §5 "no data" markers."""
        return self.value is not None and self.value not in NO_VALUE_MARKERS


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A data item of a valid frame that is not a quadruple. Kept, never dropped."""

    text: str


@dataclass(frozen=True, slots=True)
class BccResponse:
    """A frame the SpaceStation sends. ``final`` is False for a part ending in ETB (§2):
    only the ETX frame ends an answer."""

    bed_id: str
    items: tuple[Quadruple | Unparsed, ...] = ()
    final: bool = True

    @property
    def quadruples(self) -> tuple[Quadruple, ...]:
        return tuple(q for q in self.items if isinstance(q, Quadruple))


@dataclass(frozen=True, slots=True)
class BccRequest:
    """A frame the PC sends (§4): ``command`` is the user data, e.g. ``MEM:GETSLOT#11``."""

    bed_id: str
    command: str


@dataclass(frozen=True, slots=True)
class BccAck:
    """§2: the single ACK byte the client sends for every correctly received frame."""


@dataclass(frozen=True, slots=True)
class BccNak:
    """§2: NAK exists but the open code never sends it (its meaning is UNCERTAIN)."""


BccMessage = BccResponse | BccRequest | BccAck | BccNak


# --- text helpers -----------------------------------------------------------------------------
def _text(data: bytes) -> str:
    return data.decode(TEXT_ENCODING)


def _bytes(text: str, what: str) -> bytes:
    try:
        data = text.encode(TEXT_ENCODING)
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not {TEXT_ENCODING} text") from None
    if any(b < 0x20 for b in data):
        raise ValueError(f"{what} {text!r} contains a control character")
    return data


def _bed_id_ok(bed: bytes) -> bool:
    """Bed IDs are 1..15 characters (§2). The document's character ranges (0x2F-0x39,
    0x41-0x7A) are not enforced on decode: a rack outside them still gets its data read;
    only what would break framing (control bytes, ``>``) is refused."""
    return 1 <= len(bed) <= MAX_BED_ID_LEN and all(b >= 0x20 and b != 0x3E for b in bed)


def _parse_item(raw: bytes) -> Quadruple | Unparsed:
    parts = raw.split(b",", 3)
    if len(parts) >= 3:
        rel, address, parameter = (_text(p) for p in parts[:3])
        if _REL_TIME.match(rel) and address and parameter:
            value = _text(parts[3]) if len(parts) == 4 else None
            return Quadruple(int(rel), address, parameter, value)
    return Unparsed(_text(raw))


def _encode_item(item: Quadruple | Unparsed) -> bytes:
    if isinstance(item, Quadruple):
        if item.rel_time < 0:
            raise ValueError(f"negative relative time {item.rel_time}")
        address = _bytes(item.address, "address")
        parameter = _bytes(item.parameter, "parameter")
        if b"," in address or b"," in parameter or not address or not parameter:
            raise ValueError(f"bad address/parameter in {item!r}")
        raw = b"%d," % item.rel_time + address + b"," + parameter
        if item.value is not None:
            raw += b"," + _bytes(item.value, "value")
    elif isinstance(item, Unparsed):
        raw = _bytes(item.text, "item")
    else:
        raise TypeError(f"not a BCC data item: {item!r}")
    if _parse_item(raw) != item:
        raise ValueError(f"{item!r} would not decode to itself")
    return raw


# --- the codec --------------------------------------------------------------------------------
class BBraunCodec(Codec):
    """Incremental BCC frame parser and encoder (§2-§5). Never raises from ``feed``."""

    protocol = "bbraun-bcc"
    document = "bbraun-bcc.md"

    def __init__(self, role: Role = Role.HOST, *, stuffing: bool = CHARACTER_STUFFING) -> None:
        super().__init__(role)
        self.stuffing = stuffing
        self._frame: bytearray | None = None  # None: hunting for SOH
        self._escape = 0  # stuffing: the pending escape byte ('e'/'E'), or 0

    def reset(self) -> None:
        self._frame = None
        self._escape = 0

    # ---- decoding
    def feed(self, data: bytes) -> list[Any]:
        self.stats.bytes_in += len(data)
        try:
            return self._feed(self._unstuff(bytes(data)) if self.stuffing else bytes(data))
        except Exception:  # pragma: no cover - a bug must not kill the reader thread
            self.stats.error("internal")
            self.reset()
            return []

    def _unstuff(self, data: bytes) -> bytes:
        """§2 reading rule: an ``e``/``E`` starts an escape and the next byte maps x->d,
        X->D, e->e, E->E. An escape followed by anything else passes both bytes through
        unchanged, so the frame's length/checksum check rejects it."""
        out = bytearray()
        for b in data:
            if self._escape:
                mapped = _UNSTUFF.get(b)
                if mapped is None:
                    self.stats.error("stuffing")
                    out += bytes((self._escape, b))
                else:
                    out.append(mapped)
                self._escape = 0
            elif b in (0x65, 0x45):  # 'e', 'E'
                self._escape = b
            else:
                out.append(b)
        return bytes(out)

    def _feed(self, data: bytes) -> list[Any]:
        out: list[Any] = []
        i, n = 0, len(data)
        while i < n:
            if self._frame is None:
                j = data.find(b"\x01", i)
                self._between_frames(data[i : n if j < 0 else j], out)
                if j < 0:
                    break
                self._frame = bytearray(b"\x01")
                i = j + 1
                continue
            m = _FRAME_EDGE.search(data, i)
            if m is None:
                self._frame += data[i:]
                if len(self._frame) > MAX_FRAME_LEN:
                    self.stats.error("oversize")
                    self._frame = None
                break
            k = m.start()
            if data[k] == SOH:  # §2: a new SOH discards the partial frame
                self.stats.error("truncated")
                self._frame = bytearray(b"\x01")
            else:
                self._frame += data[i : k + 1]
                msg = self._finish(bytes(self._frame))
                self._frame = None
                if msg is not None:
                    out.append(msg)
            i = k + 1
        return out

    def _between_frames(self, data: bytes, out: list[Any]) -> None:
        """Bytes outside a frame: ACK/NAK from the PC (DEVICE role), else garbage."""
        if not data:
            return
        if self.role is Role.DEVICE:
            for b in data:
                if b == ACK:
                    out.append(BccAck())
                elif b == NAK:
                    out.append(BccNak())
                else:
                    self.stats.error("garbage")
        else:
            self.stats.error("garbage", len(data))

    def _finish(self, frame: bytes) -> BccMessage | None:
        """§2 receiver checks, in the document's order, then the user data."""
        if len(frame) < _HEAD_LEN + len(HEADER_SUFFIX) + 1 + _TAIL_LEN:
            self.stats.error("format")
            return None
        if frame[6] != STX or not frame[1:6].isdigit():
            self.stats.error("format")
            return None
        if int(frame[1:6]) != len(frame):
            self.stats.error("length")
            return None
        end = frame[-_TAIL_LEN]
        if end not in (ETX, ETB) or not _DIGITS5.match(frame[-6:-1]):
            self.stats.error("format")
            return None
        if int(frame[-6:-1]) != checksum(frame[:-6]):
            self.stats.error("checksum")
            return None
        body = frame[_HEAD_LEN:-_TAIL_LEN]
        gt = body.find(b">")
        if gt < 0 or not body[: gt + 1].endswith(HEADER_SUFFIX):
            self.stats.error("format")
            return None
        bed = body[: gt + 1 - len(HEADER_SUFFIX)]
        if not _bed_id_ok(bed):
            self.stats.error("format")
            return None
        user = body[gt + 1 :]
        final = end == ETX
        if self.role is Role.DEVICE:
            if not final:  # a request is always one frame
                self.stats.error("format")
                return None
            self.stats.frames += 1
            return BccRequest(_text(bed), _text(user))
        items = tuple(_parse_item(raw) for raw in user.split(bytes((RS,)))) if user else ()
        bad = sum(isinstance(it, Unparsed) for it in items)
        if bad:
            self.stats.error("quadruple", bad)
        self.stats.frames += 1
        return BccResponse(_text(bed), items, final)

    # ---- encoding
    def encode(self, message: Any) -> bytes:
        if isinstance(message, BccAck):
            return bytes((ACK,))
        if isinstance(message, BccNak):
            return bytes((NAK,))
        if isinstance(message, BccRequest):
            user = _bytes(message.command, "command")
            frame = self._frame_bytes(message.bed_id, user, final=True)
        elif isinstance(message, BccResponse):
            user = bytes((RS,)).join(_encode_item(it) for it in message.items)
            if message.items == (Unparsed(""),):
                raise ValueError("a lone empty item is the same wire as no items")
            frame = self._frame_bytes(message.bed_id, user, final=message.final)
        else:
            raise TypeError(f"not a BCC message: {message!r}")
        return stuff(frame) if self.stuffing else frame

    @staticmethod
    def _frame_bytes(bed_id: str, user: bytes, *, final: bool) -> bytes:
        """§3 reference construction (``bcc_frame`` of the document)."""
        bed = _bytes(bed_id, "bed id")
        if not _bed_id_ok(bed):
            raise ValueError(f"bed id {bed_id!r} must be 1..{MAX_BED_ID_LEN} chars without '>'")
        body = bed + HEADER_SUFFIX + user
        length = _HEAD_LEN + len(body) + _TAIL_LEN
        if length > MAX_FRAME_LEN:
            raise ValueError(f"frame of {length} bytes exceeds the 5-digit length field")
        head = b"\x01%05d\x02" % length + body + bytes((ETX if final else ETB,))
        return head + b"%05d\x04" % checksum(head)
