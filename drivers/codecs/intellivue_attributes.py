"""Data types and attribute values of Philips IntelliVue Data Export (big-endian, packed).

Implements shared/protocols/philips-intellivue-mib.md §2.2 (common sub-structures), §5
(attribute decoding: FLOAT-Type, NuObsValue, SaObsValue, SaSpec, ScaleRangeSpec16, time) and
§6 (the nomenclature codes KAP uses). ``intellivue.py`` builds messages from these pieces;
the device layer maps them to channels.

An attribute value assertion (AVA, §2.2) is ``Ava(attribute_id, value)``. Attributes this
module knows (``ATTRIBUTE_TYPES``) decode to typed values; any other attribute, and a known
one whose bytes do not parse *and re-encode to the very same bytes*, keeps its raw ``bytes``.
That rule keeps ``decode(encode(m)) == m`` and never loses a byte a monitor sent: something
we do not understand is passed on, not guessed at.

Choices where the document is uncertain:

* ``NOM_ATTR_ID_LABEL_STRING`` (§5.1 [?]): decoded as UTF-16BE (the guide's encoding per the
  document) when that round-trips; otherwise the raw bytes are kept. NULs are not stripped
  here (that would break round-trip); the device layer strips them.
* ``AbsoluteTime.sec_fractions`` is taken to be hundredths of a second (§2.2 gives only
  "sec_fractions", BCD) — see ``ABS_TIME_FRACTIONS_PER_S``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ATTRIBUTE_TYPES",
    "AbsoluteTime",
    "Ava",
    "AvaValue",
    "DecodeError",
    "Float",
    "ManagedObjectId",
    "NuObsValue",
    "NuObsValueCmp",
    "ObservationPoll",
    "Reader",
    "SaCalibData16",
    "SaObsValue",
    "SaObsValueCmp",
    "SaSpec",
    "ScaleRangeSpec16",
    "SingleContextPoll",
    "TypeId",
    "decode_attribute_list",
    "encode_attribute_list",
]


# --------------------------------------------------------------------------- byte reading


class DecodeError(ValueError):
    """Structure does not fit its length fields; the codec counts it as a ``format`` error."""


class Reader:
    """Bounds-checked big-endian reader over one buffer (§ conventions: everything in the
    payload is big-endian, packed)."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError(f"need {n} bytes at {self.pos}, have {self.remaining}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def sub(self, n: int) -> Reader:
        """A reader over the next ``n`` bytes (a length-prefixed structure); skips them here."""
        start = self.pos
        self.take(n)
        return Reader(self.data, start, start + n)

    def done(self) -> None:
        if self.remaining:
            raise DecodeError(f"{self.remaining} unexpected bytes at {self.pos}")


def u16(x: int) -> bytes:
    return struct.pack(">H", x)


def u32(x: int) -> bytes:
    return struct.pack(">I", x)


# --------------------------------------------------------------------------- FLOAT-Type

_MANT_NAN = (1 << 23) - 1
_MANT_NRES = -(1 << 23)
_MANT_PINF = (1 << 23) - 2
_MANT_NINF = -((1 << 23) - 2)
_SPECIALS = {_MANT_NAN: "NaN", _MANT_NRES: "NRes", _MANT_PINF: "+INF", _MANT_NINF: "-INF"}
#: Largest ordinary mantissa magnitude (§5.2 [1 Koshsky]).
MANTISSA_MAX = (1 << 23) - 3


@dataclass(frozen=True, slots=True)
class Float:
    """FLOAT-Type (§5.2): value = mantissa x 10^exponent, exponent i8 and mantissa i24.

    Kept as the two integers the monitor sent, not as a Python float, so a value is never
    rewritten by a binary round-trip (99.1 stays mantissa 991, exponent -1)."""

    exponent: int
    mantissa: int

    @property
    def special(self) -> str | None:
        """ "NaN", "NRes", "+INF", "-INF" or None. The 24-bit mantissa alone decides (as
        OpenICE and Koshsky do, §5.2), whatever the exponent."""
        return _SPECIALS.get(self.mantissa)

    @property
    def value(self) -> float:
        """The number; NaN for NaN/NRes, +-inf for the infinities."""
        s = self.special
        if s is not None:
            return {"+INF": math.inf, "-INF": -math.inf}.get(s, math.nan)
        if self.exponent < 0:
            return self.mantissa / 10 ** (-self.exponent)
        return float(self.mantissa * 10**self.exponent)

    @property
    def raw(self) -> int:
        return ((self.exponent & 0xFF) << 24) | (self.mantissa & 0xFFFFFF)

    @classmethod
    def from_raw(cls, raw: int) -> Float:
        exp = (raw >> 24) & 0xFF
        mant = raw & 0xFFFFFF
        return cls(exp - 256 if exp & 0x80 else exp, mant - (1 << 24) if mant & 0x800000 else mant)

    @classmethod
    def from_value(cls, value: float, exponent: int) -> Float:
        """Encode ``value`` at resolution 10^exponent (the simulator's quantisation).
        Refuses values that do not fit (CONVENTIONS 19: no silent clipping)."""
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value}")
        m = round(value * 10 ** (-exponent)) if exponent < 0 else round(value / 10**exponent)
        if abs(m) > MANTISSA_MAX:
            raise ValueError(f"{value} does not fit a FLOAT mantissa at 10^{exponent}")
        return cls(exponent, m)


FLOAT_NAN = Float(0, _MANT_NAN)
FLOAT_NRES = Float(0, _MANT_NRES)
FLOAT_PINF = Float(0, _MANT_PINF)
FLOAT_NINF = Float(0, _MANT_NINF)


def _read_float(r: Reader) -> Float:
    return Float.from_raw(r.u32())


def _float_bytes(f: Float) -> bytes:
    if not (-128 <= f.exponent <= 127 and -(1 << 23) <= f.mantissa < (1 << 23)):
        raise ValueError(f"FLOAT out of range: {f}")
    return u32(f.raw)


# --------------------------------------------------------------------------- time

#: BCD sec_fractions unit (§2.2 [?]): hundredths of a second.
ABS_TIME_FRACTIONS_PER_S = 100
#: RelativeTime unit (§2.2): 125 us ticks.
REL_TIME_TICK_US = 125
REL_TIME_TICKS_PER_S = 8000


def _bcd(b: int) -> int | None:
    hi, lo = b >> 4, b & 0x0F
    return 10 * hi + lo if hi <= 9 and lo <= 9 else None


def _to_bcd(v: int | None) -> int:
    if v is None:
        return 0xFF
    if not 0 <= v <= 99:
        raise ValueError(f"BCD field out of range: {v}")
    return ((v // 10) << 4) | (v % 10)


@dataclass(frozen=True, slots=True)
class AbsoluteTime:
    """AbsoluteTime (§2.2, §5.5): eight BCD bytes. A field is None when its byte is not
    valid BCD; all-0xFF (every field None) means "not set" on monitors without a clock."""

    century: int | None = None
    year: int | None = None
    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None
    second: int | None = None
    sec_fractions: int | None = None

    def to_datetime(self) -> datetime | None:
        """The monitor's wall clock as a naive datetime (the protocol carries no time
        zone), or None when unset or not a valid date."""
        f = (self.century, self.year, self.month, self.day, self.hour, self.minute, self.second)
        if any(x is None for x in f):
            return None
        c, y, mo, d, h, mi, s = f  # type: ignore[misc]
        frac = self.sec_fractions or 0
        try:
            return datetime(
                c * 100 + y,
                mo,
                d,
                h,
                mi,
                s,  # type: ignore[operator]
                frac * (1_000_000 // ABS_TIME_FRACTIONS_PER_S),
            )
        except ValueError:
            return None

    @classmethod
    def from_datetime(cls, dt: datetime) -> AbsoluteTime:
        return cls(
            dt.year // 100,
            dt.year % 100,
            dt.month,
            dt.day,
            dt.hour,
            dt.minute,
            dt.second,
            dt.microsecond // (1_000_000 // ABS_TIME_FRACTIONS_PER_S),
        )

    @classmethod
    def from_epoch_us(cls, t_us: int) -> AbsoluteTime:
        dt = datetime.fromtimestamp(t_us // 1_000_000, UTC)
        return cls.from_datetime(dt.replace(microsecond=t_us % 1_000_000))


ABS_TIME_UNSET = AbsoluteTime()


def read_abs(r: Reader) -> AbsoluteTime:
    return AbsoluteTime(*(_bcd(b) for b in r.take(8)))


def abs_bytes(t: AbsoluteTime) -> bytes:
    return bytes(_to_bcd(getattr(t, f)) for f in AbsoluteTime.__slots__)


# --------------------------------------------------------------------------- structures


@dataclass(frozen=True, slots=True)
class TypeId:
    """TYPE (§2.2): nomenclature partition and code (partition 1 = object classes, 2 =
    SCADA physio ids, ...)."""

    partition: int
    code: int


@dataclass(frozen=True, slots=True)
class ManagedObjectId:
    """ManagedObjectId (§2.2): object class, context, handle. The MDS is (0x21, 0, 0)."""

    obj_class: int
    context_id: int = 0
    handle: int = 0


def read_type(r: Reader) -> TypeId:
    return TypeId(r.u16(), r.u16())


def type_bytes(t: TypeId) -> bytes:
    return u16(t.partition) + u16(t.code)


def read_mo(r: Reader) -> ManagedObjectId:
    return ManagedObjectId(r.u16(), r.u16(), r.u16())


def mo_bytes(m: ManagedObjectId) -> bytes:
    return u16(m.obj_class) + u16(m.context_id) + u16(m.handle)


@dataclass(frozen=True, slots=True)
class NuObsValue:
    """NuObsValue (§5.3): one numeric with its own physio id, MeasurementState and unit."""

    physio_id: int
    state: int
    unit_code: int
    value: Float


@dataclass(frozen=True, slots=True)
class NuObsValueCmp:
    """NOM_ATTR_NU_CMPD_VAL_OBS (§5.3): several numerics of one object (NIBP sys/dia/mean)."""

    values: tuple[NuObsValue, ...]


@dataclass(frozen=True, slots=True)
class SaObsValue:
    """SaObsValue (§5.4): one block of raw wave samples (scaled by the object's specs)."""

    physio_id: int
    state: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SaObsValueCmp:
    values: tuple[SaObsValue, ...]


@dataclass(frozen=True, slots=True)
class SaSpec:
    """SaSpec (§5.4): samples per block, bits per sample, significant bits, flags."""

    array_size: int
    sample_size: int
    significant_bits: int
    flags: int


@dataclass(frozen=True, slots=True)
class ScaleRangeSpec16:
    """ScaleRangeSpec16 (§5.4): the linear map raw [lower_scaled, upper_scaled] ->
    physical [lower_absolute, upper_absolute]."""

    lower_absolute: Float
    upper_absolute: Float
    lower_scaled: int
    upper_scaled: int


@dataclass(frozen=True, slots=True)
class SaCalibData16:
    """SaCalibData16 (§5.4), optional; kept for completeness, the scale spec is used."""

    lower_absolute: Float
    upper_absolute: Float
    lower_scaled: int
    upper_scaled: int
    increment: int
    cal_type: int


AvaValue = (
    int
    | str
    | bytes
    | TypeId
    | AbsoluteTime
    | NuObsValue
    | NuObsValueCmp
    | SaObsValue
    | SaObsValueCmp
    | SaSpec
    | ScaleRangeSpec16
    | SaCalibData16
)


@dataclass(frozen=True, slots=True)
class Ava:
    """Attribute value assertion (§2.2): ``attribute_id u16, length u16, value``."""

    attribute_id: int
    value: AvaValue


@dataclass(frozen=True, slots=True)
class ObservationPoll:
    """One object in a poll result (§4.4): its handle and the attributes sent for it."""

    handle: int
    attributes: tuple[Ava, ...]


@dataclass(frozen=True, slots=True)
class SingleContextPoll:
    """SingleContextPoll (§4.4): the objects of one context (count 0 occurs)."""

    context_id: int
    observations: tuple[ObservationPoll, ...]


# --------------------------------------------------------------------------- value codecs


def _read_nu(r: Reader) -> NuObsValue:
    return NuObsValue(r.u16(), r.u16(), r.u16(), _read_float(r))


def _nu_bytes(v: NuObsValue) -> bytes:
    return u16(v.physio_id) + u16(v.state) + u16(v.unit_code) + _float_bytes(v.value)


def _read_sa(r: Reader) -> SaObsValue:
    pid, state, n = r.u16(), r.u16(), r.u16()
    return SaObsValue(pid, state, r.take(n))


def _sa_bytes(v: SaObsValue) -> bytes:
    return u16(v.physio_id) + u16(v.state) + u16(len(v.data)) + bytes(v.data)


def _read_list(r: Reader, item: Callable[[Reader], Any]) -> tuple[Any, ...]:
    count, length = r.u16(), r.u16()
    s = r.sub(length)
    out = tuple(item(s) for _ in range(count))
    s.done()
    return out


def _list_bytes(items: tuple[Any, ...], enc: Callable[[Any], bytes]) -> bytes:
    body = b"".join(enc(i) for i in items)
    return u16(len(items)) + u16(len(body)) + body


def _read_string(r: Reader) -> str:
    n = r.u16()
    raw = r.take(n)
    if n % 2:
        raise DecodeError("odd-length UTF-16 string")
    try:
        return raw.decode("utf-16-be")
    except UnicodeDecodeError as e:
        raise DecodeError(str(e)) from None


def _string_bytes(s: str) -> bytes:
    raw = s.encode("utf-16-be")
    return u16(len(raw)) + raw


def _read_scale(r: Reader) -> ScaleRangeSpec16:
    return ScaleRangeSpec16(_read_float(r), _read_float(r), r.u16(), r.u16())


def _scale_bytes(s: ScaleRangeSpec16) -> bytes:
    return (
        _float_bytes(s.lower_absolute)
        + _float_bytes(s.upper_absolute)
        + u16(s.lower_scaled)
        + u16(s.upper_scaled)
    )


def _read_calib(r: Reader) -> SaCalibData16:
    return SaCalibData16(_read_float(r), _read_float(r), r.u16(), r.u16(), r.u16(), r.u16())


def _calib_bytes(s: SaCalibData16) -> bytes:
    return (
        _float_bytes(s.lower_absolute)
        + _float_bytes(s.upper_absolute)
        + u16(s.lower_scaled)
        + u16(s.upper_scaled)
        + u16(s.increment)
        + u16(s.cal_type)
    )


@dataclass(frozen=True, slots=True)
class _Kind:
    type: type
    read: Callable[[Reader], Any]
    write: Callable[[Any], bytes]


_U16 = _Kind(int, lambda r: r.u16(), u16)
_U32 = _Kind(int, lambda r: r.u32(), u32)
_TYPE = _Kind(TypeId, read_type, type_bytes)
_ABS = _Kind(AbsoluteTime, read_abs, abs_bytes)
_STR = _Kind(str, _read_string, _string_bytes)

# Attribute ids (§5.1, §3.3, §4.1)
NOM_ATTR_ID_HANDLE = 0x0921
NOM_ATTR_ID_LABEL = 0x0924
NOM_ATTR_ID_LABEL_STRING = 0x0927
NOM_ATTR_ID_TYPE = 0x092F
NOM_ATTR_ID_BED_LABEL = 0x091E
NOM_ATTR_ID_MODEL = 0x0928
NOM_ATTR_METRIC_SPECN = 0x093F
NOM_ATTR_NU_CMPD_VAL_OBS = 0x094B
NOM_ATTR_NU_VAL_OBS = 0x0950
NOM_ATTR_SA_CALIB_I16 = 0x0964
NOM_ATTR_SA_CMPD_VAL_OBS = 0x0967
NOM_ATTR_SA_RANGE_PHYS_I16 = 0x096A
NOM_ATTR_SA_SPECN = 0x096D
NOM_ATTR_SA_VAL_OBS = 0x096E
NOM_ATTR_SCALE_SPECN_I16 = 0x096F
NOM_ATTR_SYS_TYPE = 0x0986
NOM_ATTR_TIME_ABS = 0x0987
NOM_ATTR_TIME_PD_SAMP = 0x098D
NOM_ATTR_TIME_REL = 0x098F
NOM_ATTR_TIME_STAMP_ABS = 0x0990
NOM_ATTR_TIME_STAMP_REL = 0x0991
NOM_ATTR_UNIT_CODE = 0x0996
NOM_ATTR_SA_FIXED_VAL_SPECN = 0x0A16
NOM_ATTR_TIME_PD_POLL = 0xF13E
NOM_ATTR_POLL_PROFILE_EXT = 0xF001

#: How each known attribute's value is typed. Anything else stays raw bytes.
ATTRIBUTE_TYPES: dict[int, _Kind] = {
    NOM_ATTR_ID_HANDLE: _U16,
    NOM_ATTR_ID_LABEL: _U32,
    NOM_ATTR_ID_LABEL_STRING: _STR,
    NOM_ATTR_ID_BED_LABEL: _STR,
    NOM_ATTR_ID_TYPE: _TYPE,
    NOM_ATTR_SYS_TYPE: _TYPE,
    NOM_ATTR_NU_VAL_OBS: _Kind(NuObsValue, _read_nu, _nu_bytes),
    NOM_ATTR_NU_CMPD_VAL_OBS: _Kind(
        NuObsValueCmp,
        lambda r: NuObsValueCmp(_read_list(r, _read_nu)),
        lambda v: _list_bytes(v.values, _nu_bytes),
    ),
    NOM_ATTR_SA_VAL_OBS: _Kind(SaObsValue, _read_sa, _sa_bytes),
    NOM_ATTR_SA_CMPD_VAL_OBS: _Kind(
        SaObsValueCmp,
        lambda r: SaObsValueCmp(_read_list(r, _read_sa)),
        lambda v: _list_bytes(v.values, _sa_bytes),
    ),
    NOM_ATTR_SA_SPECN: _Kind(
        SaSpec,
        lambda r: SaSpec(r.u16(), r.u8(), r.u8(), r.u16()),
        lambda s: u16(s.array_size) + bytes((s.sample_size, s.significant_bits)) + u16(s.flags),
    ),
    NOM_ATTR_SCALE_SPECN_I16: _Kind(ScaleRangeSpec16, _read_scale, _scale_bytes),
    NOM_ATTR_SA_CALIB_I16: _Kind(SaCalibData16, _read_calib, _calib_bytes),
    NOM_ATTR_TIME_PD_SAMP: _U32,
    NOM_ATTR_TIME_ABS: _ABS,
    NOM_ATTR_TIME_REL: _U32,
    NOM_ATTR_TIME_STAMP_ABS: _ABS,
    NOM_ATTR_TIME_STAMP_REL: _U32,
    NOM_ATTR_UNIT_CODE: _U16,
    NOM_ATTR_TIME_PD_POLL: _U32,
}


def encode_value(attribute_id: int, value: AvaValue) -> bytes:
    """Bytes of one attribute value. Raw bytes pass through; a typed value must be the type
    its attribute id is registered with."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    kind = ATTRIBUTE_TYPES.get(attribute_id)
    if kind is None or not isinstance(value, kind.type) or isinstance(value, bool):
        raise ValueError(f"attribute 0x{attribute_id:04X} cannot carry {value!r}")
    try:
        return kind.write(value)
    except struct.error as e:
        raise ValueError(f"attribute 0x{attribute_id:04X}: {e}") from None


def decode_value(attribute_id: int, raw: bytes) -> AvaValue:
    """Typed value if the attribute is known and its bytes parse and re-encode identically,
    else the raw bytes (never an exception: unknown content is kept, not guessed)."""
    kind = ATTRIBUTE_TYPES.get(attribute_id)
    if kind is None:
        return raw
    try:
        r = Reader(raw)
        value = kind.read(r)
        r.done()
        if kind.write(value) != raw:
            return raw
    except (DecodeError, ValueError, struct.error):
        return raw
    return value  # type: ignore[no-any-return]


def ava_bytes(a: Ava) -> bytes:
    v = encode_value(a.attribute_id, a.value)
    return u16(a.attribute_id) + u16(len(v)) + v


def read_ava(r: Reader) -> Ava:
    aid, n = r.u16(), r.u16()
    return Ava(aid, decode_value(aid, r.take(n)))


def decode_attribute_list(r: Reader) -> tuple[Ava, ...]:
    """AttributeList (§2.2): count u16, length u16, AVA[count]; counts must agree."""
    return _read_list(r, read_ava)


def encode_attribute_list(avas: tuple[Ava, ...]) -> bytes:
    return _list_bytes(avas, ava_bytes)


def read_observation(r: Reader) -> ObservationPoll:
    return ObservationPoll(r.u16(), decode_attribute_list(r))


def observation_bytes(o: ObservationPoll) -> bytes:
    return u16(o.handle) + encode_attribute_list(o.attributes)


def read_context(r: Reader) -> SingleContextPoll:
    return SingleContextPoll(r.u16(), _read_list(r, read_observation))


def context_bytes(c: SingleContextPoll) -> bytes:
    return u16(c.context_id) + _list_bytes(c.observations, observation_bytes)


def read_poll_info_list(r: Reader) -> tuple[SingleContextPoll, ...]:
    """PollInfoList (§4.4)."""
    return _read_list(r, read_context)


def poll_info_list_bytes(contexts: tuple[SingleContextPoll, ...]) -> bytes:
    return _list_bytes(contexts, context_bytes)


def attribute(avas: tuple[Ava, ...], attribute_id: int) -> AvaValue | None:
    """The value of the first AVA with this id, or None."""
    for a in avas:
        if a.attribute_id == attribute_id:
            return a.value
    return None
