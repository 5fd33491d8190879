"""Masimo pulse oximeter serial output, "ASCII 1" text lines: codec.

Implements shared/protocols/masimo-ascii.md. The oximeter streams one line a second and
listens to nothing (§1), so there is one direction and one message, ``MasimoRecord``::

    MM/DD/YY HH:MM:SS SN=.. SPO2=097% BPM=072 PI=03.45% SPCO=--.-% SPMET=00.8% DESAT=00
    PIDELTA=+02 [PVI=014] ALARM=0000 EXC=000000<CR><LF>

Decoding follows §2, §4 and §8: lines end at LF (CR optional); fields are parsed by tag,
never by column, so absent or extra fields don't break anything; unknown tags are kept in
``extra``; a value whose digits are dashes is missing (None). There is no checksum (§8), so
format checks are all there is: the head must be ``NN/NN/NN NN:NN:SS``, every field must
parse, and ``REQUIRED_TAGS`` must be present (a line cut anywhere before its last field
fails that). Bytes before the line's head (noise, the tail of a partial line) are counted
and skipped: the decoder takes the *last* head in a line, which resynchronises on the
next line even when its LF was lost.

Choices where the document is uncertain:

* ``REQUIRED_TAGS``: SPO2, BPM, ALARM and EXC are in every layout the document shows
  (§2, §6, Radical-5 included); a line without one of them is refused as damaged.
* A missing ALARM/EXC word (dashes, not documented) decodes to None like any value.
* The document does not say whether unlicensed parameters are printed as dashes or omitted
  (§2, §9): both decode to None, and ``layout`` (the tags in line order) tells them apart,
  so a device's layout is re-encoded as it came. ALARM/EXC are always encoded with the
  current 4/6 hex digits (a Radical-5's 2/3 digits decode to the same values).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

from .base import Codec, Role

__all__ = ["RADICAL7_LAYOUT", "REQUIRED_TAGS", "MasimoCodec", "MasimoRecord", "parse_value"]

#: Tags a line must carry to be accepted (see the module docstring).
REQUIRED_TAGS: tuple[str, ...] = ("SPO2", "BPM", "ALARM", "EXC")
#: §8: cap a line without LF at this many bytes, then resynchronise.
MAX_LINE = 512
_HEAD = re.compile(rb"(?=(\d\d/\d\d/\d\d \d\d:\d\d:\d\d))")
_DATE = re.compile(r"\d\d/\d\d/\d\d")
_TIME = re.compile(r"\d\d:\d\d:\d\d")
_TAG = re.compile(r"[A-Z][A-Z0-9_]*")
_WS = b" \t\r\n\x0b\x0c"

# tag -> (attribute, kind, width of digits for encoding, suffix)
_FIELDS: dict[str, tuple[str, str, int, str]] = {
    "SN": ("serial", "str", 10, ""),
    "SPO2": ("spo2", "int", 3, "%"),
    "BPM": ("bpm", "int", 3, ""),
    "PI": ("pi", "f2", 5, "%"),
    "SPCO": ("spco", "f1", 4, "%"),
    "SPMET": ("spmet", "f1", 4, "%"),
    "DESAT": ("desat", "int", 2, ""),
    "PIDELTA": ("pidelta", "signed", 2, ""),
    "PVI": ("pvi", "int", 3, ""),
    "ALARM": ("alarm", "hex", 4, ""),
    "EXC": ("exc", "hex", 6, ""),
}
#: The fields of a Radical-7 / Rad-97 line in order (§2); a Rad-8 has no PVI.
RADICAL7_LAYOUT: tuple[str, ...] = (
    "SN", "SPO2", "BPM", "PI", "SPCO", "SPMET", "DESAT", "PIDELTA", "PVI", "ALARM", "EXC",
)  # fmt: skip


class _LineError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MasimoRecord:
    """One ASCII 1 line (§2, §3). Values as printed: integers, PI with 2 decimals,
    SpCO/SpMet with 1; None = missing (dashes, §4) or absent. ``date``/``time`` are the
    device's own clock (``MM/DD/YY``, ``HH:MM:SS``), not to be trusted as wall time (§2).
    ``alarm`` and ``exc`` are the status bit words of §5; ``extra`` keeps unknown tags;
    ``layout`` lists the tags the line carries, in order (a tag not in it is absent, so
    its attribute is None)."""

    date: str
    time: str
    spo2: int | None = None
    bpm: int | None = None
    pi: float | None = None
    alarm: int | None = 0
    exc: int | None = 0
    serial: str | None = None
    spco: float | None = None
    spmet: float | None = None
    desat: int | None = None
    pidelta: int | None = None
    pvi: int | None = None
    extra: tuple[tuple[str, str], ...] = ()
    layout: tuple[str, ...] = RADICAL7_LAYOUT

    def has(self, tag: str) -> bool:
        """True if the device printed this field (possibly as dashes)."""
        return tag in self.layout


def parse_value(kind: str, text: str) -> int | float | str | None:
    """§4 rule: strip a trailing ``%``; strip one leading sign only if a digit follows;
    what remains containing ``-`` is missing (None); otherwise it must parse."""
    if kind == "str":
        return None if set(text) == {"-"} else text
    t = text[:-1] if text.endswith("%") else text
    sign = ""
    if t[:1] in "+-" and t[1:2].isdigit():
        sign, t = t[0], t[1:]
    if not t:
        raise _LineError("empty value")
    if "-" in t:
        return None
    if kind == "hex":
        if sign or not all(c in "0123456789abcdefABCDEF" for c in t):
            raise _LineError(f"bad hex {text!r}")
        return int(t, 16)
    if kind in ("int", "signed"):
        if not t.isdigit() or (sign and kind != "signed"):
            raise _LineError(f"bad integer {text!r}")
        return int(sign + t)
    if not re.fullmatch(r"\d+\.\d+|\d+", t) or sign:
        raise _LineError(f"bad decimal {text!r}")
    return float(t)


def _format(kind: str, width: int, value: object) -> str:
    if value is None:
        return {
            "str": "-" * width,
            "int": "-" * width,
            "f2": "--.--",
            "f1": "--.-",
            "signed": "+" + "-" * width,
            "hex": "-" * width,
        }[kind]
    if kind == "str":
        s = str(value)
        if not s or any(c.isspace() or not c.isprintable() or not c.isascii() for c in s):
            raise ValueError(f"serial number must be printable ASCII without spaces: {s!r}")
        # Fuzzing (bench/fuzz_codecs.py, message target): serial "-" was printed as
        # "SN=-", which reads back as a missing serial (None, §4).
        if set(s) == {"-"}:
            raise ValueError(f"a serial number of dashes would read as missing: {s!r}")
        return s
    if kind == "hex":
        assert isinstance(value, int)
        if not 0 <= value < 16**width:
            raise ValueError(f"status word {value:#x} does not fit {width} hex digits")
        return f"{value:0{width}X}"
    if kind == "signed":
        assert isinstance(value, int)
        if not -(10**width) < value < 10**width:
            raise ValueError(f"{value} does not fit sign + {width} digits")
        return f"{value:+0{width + 1}d}"
    if kind == "int":
        assert isinstance(value, int)
        if not 0 <= value < 10**width:
            raise ValueError(f"{value} does not fit {width} digits")
        return f"{value:0{width}d}"
    decimals = 2 if kind == "f2" else 1
    assert isinstance(value, float | int)
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a number the field can print")
    # Fuzzing (bench/fuzz_codecs.py, message target): -0.0 printed as "-0.00", which the
    # decoder refuses (no sign on PI, §4), so the line was lost; + 0.0 makes it 0.0.
    s = f"{value + 0.0:0{width}.{decimals}f}"
    if value < 0 or len(s) != width:
        raise ValueError(f"{value} does not fit the {width}-character field")
    # Fuzzing (tests/protocols/fuzz_cases/masimo-roundtrip-pi-with-3-decimals.bin): the
    # decoder takes any number of decimals ("PI=02.5290%" -> 2.529), and printing that
    # with 2 decimals silently changed it to 2.53. Refuse instead of rounding.
    if float(s) != value:
        raise ValueError(f"{value} has more than {decimals} decimals; {s} would round it")
    return s


def encode_line(r: MasimoRecord) -> str:
    """The text of one record without the line end (§2 layout)."""
    if not _DATE.fullmatch(r.date) or not _TIME.fullmatch(r.time):
        raise ValueError(f"date/time must be MM/DD/YY HH:MM:SS, got {r.date!r} {r.time!r}")
    extra = dict(r.extra)
    if len(set(r.layout)) != len(r.layout) or len(extra) != len(r.extra):
        raise ValueError("a tag appears twice")
    if missing := [t for t in REQUIRED_TAGS if t not in r.layout]:
        raise ValueError(f"layout lacks the required tags {missing}")
    if stray := [t for t in extra if t not in r.layout]:
        raise ValueError(f"extra tags {stray} are not in the layout")
    for tag, (attr, _, _, _) in _FIELDS.items():
        if tag not in r.layout and getattr(r, attr) is not None:
            raise ValueError(f"{attr} is set but {tag} is not in the layout")
    parts = [r.date, r.time]
    for tag in r.layout:
        if tag in _FIELDS:
            attr, kind, width, suffix = _FIELDS[tag]
            parts.append(f"{tag}={_format(kind, width, getattr(r, attr))}{suffix}")
            continue
        text = extra.get(tag)
        if text is None or not _TAG.fullmatch(tag):
            raise ValueError(f"layout tag {tag!r} is neither known nor in extra")
        if any(c.isspace() or not c.isascii() or not c.isprintable() for c in text) or not text:
            raise ValueError(f"extra value {text!r} must be printable ASCII without spaces")
        parts.append(f"{tag}={text}")
    return " ".join(parts)


def decode_line(text: str) -> MasimoRecord:
    """Parse one line that starts at its head. Raises _LineError."""
    tokens = text.split()
    if len(tokens) < 2:
        raise _LineError("no head")
    date, time = tokens[0], tokens[1]
    if not _DATE.fullmatch(date) or not _TIME.fullmatch(time):
        raise _LineError("bad head")
    values: dict[str, object] = {}
    extra: list[tuple[str, str]] = []
    seen: list[str] = []
    for tok in tokens[2:]:
        tag, eq, val = tok.partition("=")
        if not eq or not val or not _TAG.fullmatch(tag):
            raise _LineError(f"not a TAG=value field: {tok!r}")
        if tag in seen:
            raise _LineError(f"{tag} twice")
        seen.append(tag)
        spec = _FIELDS.get(tag)
        if spec is None:
            extra.append((tag, val))
            continue
        attr, kind, _, _ = spec
        values[attr] = parse_value(kind, val)
    missing = [t for t in REQUIRED_TAGS if t not in seen]
    if missing:
        raise _LineError(f"missing {missing}")
    return MasimoRecord(  # type: ignore[arg-type]
        date=date, time=time, extra=tuple(extra), layout=tuple(seen), **values
    )


class MasimoCodec(Codec):
    """Line splitter and ASCII 1 parser/formatter (§2, §4, §8). Never raises on input.

    Error reasons: ``partial`` (the first line after a reset did not parse: the usual
    start-up fragment, §8), ``garbage`` (bytes before a line's head), ``format`` (a line
    that fails the checks), ``overflow`` (``MAX_LINE`` bytes without LF).
    """

    protocol: ClassVar[str] = "masimo"
    document: ClassVar[str] = "masimo-ascii.md"

    def __init__(self, role: Role = Role.HOST) -> None:
        super().__init__(role)
        self.reset()

    def reset(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self._first = True

    def encode(self, message: MasimoRecord) -> bytes:
        return encode_line(message).encode("ascii") + b"\r\n"

    def feed(self, data: bytes) -> list[MasimoRecord]:
        self.stats.bytes_in += len(data)
        out: list[MasimoRecord] = []
        start = 0
        while True:
            lf = data.find(b"\n", start)
            if lf < 0:
                self._append(data[start:])
                return out
            self._append(data[start:lf])
            line, overflow = bytes(self._buf), self._overflow
            self._buf.clear()
            self._overflow = False
            start = lf + 1
            if not overflow:
                rec = self._line(line)
                if rec is not None:
                    out.append(rec)

    def _append(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buf += chunk
        if len(self._buf) > MAX_LINE:
            self._buf.clear()
            self._overflow = True
            self._first = False
            self.stats.error("overflow")

    def _line(self, line: bytes) -> MasimoRecord | None:
        line = line.strip(_WS)
        if not line:
            return None  # empty lines are ignored (§8)
        first, self._first = self._first, False
        heads = [m.start() for m in _HEAD.finditer(line)]
        if not heads:
            self.stats.error("partial" if first else "format")
            return None
        head = heads[-1]
        try:
            text = line[head:].decode("ascii")
            if not all(c.isprintable() or c == "\t" for c in text):
                raise _LineError("non-printable")
            rec = decode_line(text)
        except (_LineError, UnicodeDecodeError):
            self.stats.error("partial" if first else "format")
            return None
        if line[:head].strip(_WS):
            self.stats.error("partial" if first else "garbage")
        self.stats.frames += 1
        return rec
