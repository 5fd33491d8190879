"""GE Datex-Ohmeda S/5 computer interface ("Datex Record Interface", DRI) codec.

Implements shared/protocols/ge-datex-s5.md. One frame carries one record (§2)::

    7E | escaped( record , checksum ) | 7E

where the record is a 40-byte little-endian header (§3) followed by a data area whose
subrecords the header's ``sr_desc`` list locates. The same framing serves both directions,
and the header says what a record is (``r_maintype`` and the first ``sr_type``), so one
decoder reads requests (host -> monitor, §4) and monitor output (§5, §6) alike; ``Role``
is accepted but not needed. That also lets ``kapmonitor decode`` show a whole capture.

The messages keep the wire's integers (raw int16 values, special codes included, §5.3) so
that nothing is rescaled or rounded before the device layer (drivers/devices/ge_s5.py)
decides what a value means; the scale of each value is given beside the layout below.

Choices where the document is uncertain (each kept in one named constant):

* ``ESCAPE_CHECKSUM``: the checksum byte is escaped like any other byte (§2 says the
  VSCapture transmitter writes it raw, but its own receiver unescapes it; escaping is the
  consistent choice the document recommends). The decoder accepts both, because a raw
  0x7E/0x7D checksum can't occur without breaking the frame anyway.
* ``CLASS_FROM_CL_DRILVL_SUBT``: a physiological subrecord's class (basic, ext1..3) is read
  from bits 8-11 of ``cl_drilvl_subt`` (§5, two secondary sources; VSCapture instead assumes
  subrecord *i* is class *i*). The document's own example (§7.1, 0x0001 -> class 0) agrees.
* Classes ext1..ext3 are not decoded: their 270 bytes are kept raw (``class_data``) so a
  capture still round-trips; KAP needs only the basic class (§5.2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from .base import Codec, Role

__all__ = [
    "BASIC_GROUPS",
    "BasicPhdb",
    "GeS5Codec",
    "Group",
    "OtherRecord",
    "PhdbRecord",
    "PhdbRequest",
    "PhdbSubrecord",
    "WaveRecord",
    "WaveRequest",
    "WaveSubrecord",
    "checksum",
    "is_special",
]

# --- §2 framing ---------------------------------------------------------------------------
FRAMECHAR = 0x7E
CTRLCHAR = 0x7D
ESCAPE_XOR = 0x20
#: Escape the checksum byte too (§2, marked uncertain; see the module docstring).
ESCAPE_CHECKSUM = True
#: Longest record accepted (§8: VSCapture buffers 40 + 1450 bytes; r_len is an int16).
MAX_RECORD_LEN = 4096

# --- §3 header ------------------------------------------------------------------------------
HEADER_LEN = 40
_HEADER = struct.Struct("<hBBHIBBHh")  # r_len .. r_maintype: 16 bytes
_SR_DESC = struct.Struct("<hB")  # sr_offset, sr_type
SR_DESC_COUNT = 8
DRI_EOL_SUBR_LIST = 0xFF

DRI_MT_PHDB = 0
DRI_MT_WAVE = 1
DRI_MT_ALARM = 4
DRI_MT_NETWORK = 5

# --- §4.1 physiological data request --------------------------------------------------------
DRI_PH_XMIT_REQ = 0  # sr_type of a request subrecord
DRI_PH_DISPL = 1  # displayed values; also the sr_type of a displayed-values subrecord
DRI_PH_10S_TREND = 2
DRI_PH_60S_TREND = 3
DRI_PH_AUX_INFO = 4
PHDB_RECORD_TYPES = (DRI_PH_DISPL, DRI_PH_10S_TREND, DRI_PH_60S_TREND, DRI_PH_AUX_INFO)
PHDB_REQ_LEN = HEADER_LEN + 9  # 49
_PHDB_REQ = struct.Struct("<BhIh")
CLASS_DENY_BASIC = 0x1
CLASS_EXT1, CLASS_EXT2, CLASS_EXT3 = 0x2, 0x4, 0x8

# --- §4.2 waveform request ------------------------------------------------------------------
DRI_WF_CMD = 0
WF_REQ_CONT_START = 0
WF_REQ_CONT_STOP = 1
WF_REQ_LEN = HEADER_LEN + 32  # 72
WF_REQ_MAX_WAVES = 8
_WF_REQ = struct.Struct("<hh8B10h")

WAVE_ECG1 = 1
WAVE_PLETH = 8
WAVE_CO2 = 9

# --- §5 physiological data record -----------------------------------------------------------
PHDB_SUBRECORD_LEN = 278
CLASS_DATA_LEN = 270
_PHDB_SUB_HEAD = struct.Struct("<I")  # time
_PHDB_SUB_TAIL = struct.Struct("<BBH")  # marker, reserved, cl_drilvl_subt
#: Read a subrecord's class from cl_drilvl_subt bits 8-11 (§5, uncertain; module docstring).
CLASS_FROM_CL_DRILVL_SUBT = True
CLASS_BASIC = 0

_GROUP_HDR = struct.Struct("<IH")  # status bits, label

#: The basic class (§5.2) in wire order: (group name, has a 6-byte header, value names).
#: Every value is an int16. Scales (§5.2): hr/pr/rr/imp_rr x1 /min; pressures x0.01 mmHg;
#: temp x0.01 degC; SpO2 x0.01 %; gases et/fi x0.01 % (volume); amb_press x0.1 mmHg;
#: st x0.01 mm; ir_amp scale unknown.
BASIC_GROUPS: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    ("ecg", True, ("hr", "st1", "st2", "st3", "imp_rr")),
    ("p1", True, ("sys", "dia", "mean", "hr")),
    ("p2", True, ("sys", "dia", "mean", "hr")),
    ("p3", True, ("sys", "dia", "mean", "hr")),
    ("p4", True, ("sys", "dia", "mean", "hr")),
    ("nibp", True, ("sys", "dia", "mean", "hr")),
    ("t1", True, ("temp",)),
    ("t2", True, ("temp",)),
    ("t3", True, ("temp",)),
    ("t4", True, ("temp",)),
    ("spo2", True, ("spo2", "pr", "ir_amp", "svo2")),
    ("co2", True, ("et", "fi", "rr", "amb_press")),
    ("o2", True, ("et", "fi")),
    ("n2o", True, ("et", "fi")),
    ("aa", True, ("et", "fi", "mac_sum")),
    (
        "flow_vol",
        True,
        ("rr", "ppeak", "peep", "pplat", "tv_insp", "tv_exp", "compliance", "mv_exp"),
    ),
    ("co_wedge", True, ("co", "blood_temp", "ref", "pcwp")),
    ("nmt", True, ("t1", "tratio", "ptc")),
    ("ecg_extra", False, ("hr_ecg", "hr_max", "hr_min")),
    ("svo2", True, ("svo2",)),
    ("p5", True, ("sys", "dia", "mean", "hr")),
    ("p6", True, ("sys", "dia", "mean", "hr")),
)

# --- §5.3 special values --------------------------------------------------------------------
DATA_INVALID = -32767
DATA_NOT_UPDATED = -32766
DATA_DISCONT = -32765
DATA_UNDER_RANGE = -32764
DATA_OVER_RANGE = -32763
DATA_NOT_CALIBRATED = -32762
#: A measured value at or below this is a code, not data (§5.3).
LAST_SPECIAL_VALUE = -32001
#: Waveform samples at or below this are control codes (§5.3, last sentence).
LAST_SPECIAL_SAMPLE = -32000

# --- §5.1 group status bits -----------------------------------------------------------------
STATUS_EXISTS = 0x1
STATUS_ACTIVE = 0x2

_WAVE_SUB_HEAD = struct.Struct("<hHH")  # act_len, status, reserved (§6)


def checksum(record: bytes) -> int:
    """§2: 8-bit sum (mod 256) of the unescaped record bytes."""
    return sum(record) & 0xFF


def is_special(value: int) -> bool:
    """§5.3: True if an int16 measured value is a status code rather than data."""
    return value <= LAST_SPECIAL_VALUE


def _escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in (FRAMECHAR, CTRLCHAR):
            out += bytes((CTRLCHAR, b ^ ESCAPE_XOR))
        else:
            out.append(b)
    return bytes(out)


def frame(record: bytes) -> bytes:
    """§2: flag, escaped record and checksum, flag."""
    cs = bytes((checksum(record),))
    body = _escape(record) + (_escape(cs) if ESCAPE_CHECKSUM else cs)
    return bytes((FRAMECHAR,)) + body + bytes((FRAMECHAR,))


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhdbRequest:
    """§4.1: ask for physiological data every ``interval_s`` seconds (0 stops, -1 once)."""

    record_type: int = DRI_PH_DISPL
    interval_s: int = 5
    class_bf: int = 0
    dri_level: int = 0


@dataclass(frozen=True, slots=True)
class WaveRequest:
    """§4.2: start (``req_type`` 0) or stop (1) continuous waveforms ``waves`` (ids)."""

    req_type: int = WF_REQ_CONT_START
    waves: tuple[int, ...] = (WAVE_PLETH,)
    dri_level: int = 0


@dataclass(frozen=True, slots=True)
class Group:
    """§5.1: one parameter group: status bits, label and its int16 values (wire order
    and names from ``BASIC_GROUPS``)."""

    status: int
    label: int
    values: tuple[int, ...]

    @property
    def exists(self) -> bool:
        return bool(self.status & STATUS_EXISTS)

    @property
    def active(self) -> bool:
        return bool(self.status & STATUS_ACTIVE)


@dataclass(frozen=True, slots=True)
class BasicPhdb:
    """§5.2: the basic class, group by group, raw integers (scales in ``BASIC_GROUPS``)."""

    ecg: Group
    p1: Group
    p2: Group
    p3: Group
    p4: Group
    nibp: Group
    t1: Group
    t2: Group
    t3: Group
    t4: Group
    spo2: Group
    co2: Group
    o2: Group
    n2o: Group
    aa: Group
    flow_vol: Group
    co_wedge: Group
    nmt: Group
    ecg_extra: tuple[int, ...]  # no group header on the wire
    svo2: Group
    p5: Group
    p6: Group
    reserved: int = 0

    def value(self, group: str, name: str) -> int:
        """A value by group and value name, e.g. ``value("nibp", "sys")``."""
        for gname, _, names in BASIC_GROUPS:
            if gname == group:
                g = getattr(self, group)
                return (g if isinstance(g, tuple) else g.values)[names.index(name)]
        raise KeyError(group)


@dataclass(frozen=True, slots=True)
class PhdbSubrecord:
    """§5: one 278-byte physiological subrecord. ``basic`` holds class 0, ``class_data``
    the undecoded 270 bytes of an extended class (exactly one of the two is set)."""

    sr_type: int
    time: int
    basic: BasicPhdb | None = None
    class_data: bytes | None = None
    marker: int = 0
    reserved: int = 0
    cl_drilvl_subt: int = 0

    @property
    def phdb_class(self) -> int:
        return (self.cl_drilvl_subt >> 8) & 0x0F


@dataclass(frozen=True, slots=True)
class PhdbRecord:
    """§5: a physiological data record (monitor -> host), ``r_maintype`` 0."""

    time: int
    subrecords: tuple[PhdbSubrecord, ...]
    record_no: int = 0
    dri_level: int = 0
    plug_id: int = 0


@dataclass(frozen=True, slots=True)
class WaveSubrecord:
    """§6: ``act_len`` int16 samples of waveform ``wave_id`` (raw, codes kept)."""

    wave_id: int
    samples: tuple[int, ...]
    status: int = 0
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class WaveRecord:
    """§6: a waveform record (monitor -> host), ``r_maintype`` 1."""

    time: int
    subrecords: tuple[WaveSubrecord, ...]
    record_no: int = 0
    dri_level: int = 0
    plug_id: int = 0


@dataclass(frozen=True, slots=True)
class OtherRecord:
    """A well-framed record of a main type KAP does not interpret (alarm 4, network 5,
    ...): kept whole so nothing on the wire is silently dropped."""

    maintype: int
    sr_desc: tuple[tuple[int, int], ...]
    data: bytes
    time: int = 0
    record_no: int = 0
    dri_level: int = 0
    plug_id: int = 0


GeS5Message = PhdbRequest | WaveRequest | PhdbRecord | WaveRecord | OtherRecord


class _FormatError(ValueError):
    pass


# --- record encoding ------------------------------------------------------------------------


def _header(
    r_len: int,
    maintype: int,
    sr_desc: list[tuple[int, int]],
    *,
    record_no: int = 0,
    dri_level: int = 0,
    plug_id: int = 0,
    time: int = 0,
) -> bytes:
    if len(sr_desc) > SR_DESC_COUNT:
        raise ValueError(f"at most {SR_DESC_COUNT} subrecords per record, got {len(sr_desc)}")
    if r_len > MAX_RECORD_LEN:
        raise ValueError(f"record of {r_len} bytes exceeds {MAX_RECORD_LEN}")
    entries = list(sr_desc)
    if len(entries) < SR_DESC_COUNT:
        entries.append((0, DRI_EOL_SUBR_LIST))
    entries += [(0, 0)] * (SR_DESC_COUNT - len(entries))
    head = _HEADER.pack(r_len, record_no, dri_level, plug_id, time, 0, 0, 0, maintype)
    return head + b"".join(_SR_DESC.pack(o, t) for o, t in entries)


def _encode_basic(b: BasicPhdb) -> bytes:
    out = bytearray()
    for name, has_header, names in BASIC_GROUPS:
        g = getattr(b, name)
        values = g if isinstance(g, tuple) else g.values
        if len(values) != len(names):
            raise ValueError(f"group {name} needs {len(names)} values, got {len(values)}")
        if has_header:
            out += _GROUP_HDR.pack(g.status, g.label)
        out += struct.pack(f"<{len(names)}h", *values)
    out += struct.pack("<h", b.reserved)
    assert len(out) == CLASS_DATA_LEN
    return bytes(out)


def _encode_phdb_sub(s: PhdbSubrecord) -> bytes:
    if (s.basic is None) == (s.class_data is None):
        raise ValueError("a subrecord holds exactly one of basic or class_data")
    if s.basic is not None:
        if s.phdb_class != CLASS_BASIC:
            raise ValueError(
                f"basic data in a subrecord whose cl_drilvl_subt names class {s.phdb_class}"
            )
        body = _encode_basic(s.basic)
    else:
        assert s.class_data is not None
        if len(s.class_data) != CLASS_DATA_LEN:
            raise ValueError(f"class_data must be {CLASS_DATA_LEN} bytes")
        if s.phdb_class == CLASS_BASIC:
            raise ValueError("raw class_data in a subrecord of the basic class")
        body = s.class_data
    return (
        _PHDB_SUB_HEAD.pack(s.time)
        + body
        + _PHDB_SUB_TAIL.pack(s.marker, s.reserved, s.cl_drilvl_subt)
    )


def encode_record(m: GeS5Message) -> bytes:
    """The unframed record bytes of one message (header + data)."""
    try:
        return _encode_record(m)
    except struct.error as e:
        raise ValueError(f"{type(m).__name__}: field out of range ({e})") from None


def _encode_record(m: GeS5Message) -> bytes:
    if isinstance(m, PhdbRequest):
        data = _PHDB_REQ.pack(m.record_type, m.interval_s, m.class_bf, 0)
        return (
            _header(PHDB_REQ_LEN, DRI_MT_PHDB, [(0, DRI_PH_XMIT_REQ)], dri_level=m.dri_level) + data
        )
    if isinstance(m, WaveRequest):
        if len(m.waves) > WF_REQ_MAX_WAVES or DRI_EOL_SUBR_LIST in m.waves:
            raise ValueError(f"a waveform request names 1..8 wave ids, got {m.waves}")
        ids = list(m.waves)
        if len(ids) < WF_REQ_MAX_WAVES:
            ids.append(DRI_EOL_SUBR_LIST)
        ids += [0] * (WF_REQ_MAX_WAVES - len(ids))
        data = _WF_REQ.pack(m.req_type, 0, *ids, *([0] * 10))
        return _header(WF_REQ_LEN, DRI_MT_WAVE, [(0, DRI_WF_CMD)], dri_level=m.dri_level) + data
    if isinstance(m, PhdbRecord):
        subs = [_encode_phdb_sub(s) for s in m.subrecords]
        for s in m.subrecords:
            if s.sr_type not in PHDB_RECORD_TYPES:
                raise ValueError(f"physiological subrecord type {s.sr_type} unknown")
        desc = [(i * PHDB_SUBRECORD_LEN, s.sr_type) for i, s in enumerate(m.subrecords)]
        data = b"".join(subs)
        return (
            _header(
                HEADER_LEN + len(data),
                DRI_MT_PHDB,
                desc,
                record_no=m.record_no,
                dri_level=m.dri_level,
                plug_id=m.plug_id,
                time=m.time,
            )
            + data
        )
    if isinstance(m, WaveRecord):
        desc, parts, offset = [], [], 0
        for s in m.subrecords:
            if not 0 < s.wave_id < DRI_EOL_SUBR_LIST:
                raise ValueError(f"wave id {s.wave_id} out of range 1..254")
            part = _WAVE_SUB_HEAD.pack(len(s.samples), s.status, s.reserved) + struct.pack(
                f"<{len(s.samples)}h", *s.samples
            )
            desc.append((offset, s.wave_id))
            parts.append(part)
            offset += len(part)
        data = b"".join(parts)
        return (
            _header(
                HEADER_LEN + len(data),
                DRI_MT_WAVE,
                desc,
                record_no=m.record_no,
                dri_level=m.dri_level,
                plug_id=m.plug_id,
                time=m.time,
            )
            + data
        )
    if isinstance(m, OtherRecord):
        if m.maintype in (DRI_MT_PHDB, DRI_MT_WAVE):
            raise ValueError("OtherRecord is for main types other than 0 and 1")
        if any(t == DRI_EOL_SUBR_LIST for _, t in m.sr_desc):
            raise ValueError("sr_desc entries may not use the end-of-list type")
        return (
            _header(
                HEADER_LEN + len(m.data),
                m.maintype,
                list(m.sr_desc),
                record_no=m.record_no,
                dri_level=m.dri_level,
                plug_id=m.plug_id,
                time=m.time,
            )
            + m.data
        )
    raise TypeError(f"not a GE S/5 message: {m!r}")


# --- record decoding ------------------------------------------------------------------------


def _decode_basic(data: bytes) -> BasicPhdb:
    pos = 0
    fields: dict[str, object] = {}
    for name, has_header, names in BASIC_GROUPS:
        status = label = 0
        if has_header:
            status, label = _GROUP_HDR.unpack_from(data, pos)
            pos += _GROUP_HDR.size
        values = struct.unpack_from(f"<{len(names)}h", data, pos)
        pos += 2 * len(names)
        fields[name] = values if not has_header else Group(status, label, values)
    (reserved,) = struct.unpack_from("<h", data, pos)
    return BasicPhdb(**fields, reserved=reserved)  # type: ignore[arg-type]


def decode_record(rec: bytes) -> GeS5Message:
    """Parse one unframed record (checksum already removed). Raises _FormatError."""
    if len(rec) < HEADER_LEN:
        raise _FormatError("short")
    r_len, r_nbr, level, plug_id, r_time, _, _, _, maintype = _HEADER.unpack_from(rec, 0)
    if r_len != len(rec):
        raise _FormatError("length")
    desc: list[tuple[int, int]] = []
    for i in range(SR_DESC_COUNT):
        off, typ = _SR_DESC.unpack_from(rec, 16 + 3 * i)
        if typ == DRI_EOL_SUBR_LIST:
            break
        desc.append((off, typ))
    data = rec[HEADER_LEN:]
    common = {"record_no": r_nbr, "dri_level": level, "plug_id": plug_id}

    if maintype == DRI_MT_PHDB and desc and desc[0][1] == DRI_PH_XMIT_REQ:
        if len(desc) != 1 or len(data) != PHDB_REQ_LEN - HEADER_LEN:
            raise _FormatError("format")
        rtype, interval, class_bf, _ = _PHDB_REQ.unpack(data)
        return PhdbRequest(rtype, interval, class_bf, level)
    if maintype == DRI_MT_WAVE and desc and desc[0][1] == DRI_WF_CMD:
        if len(desc) != 1 or len(data) != WF_REQ_LEN - HEADER_LEN:
            raise _FormatError("format")
        fields = _WF_REQ.unpack(data)
        req_type, ids = fields[0], fields[2:10]
        waves = []
        for w in ids:
            if w == DRI_EOL_SUBR_LIST:
                break
            waves.append(w)
        return WaveRequest(req_type, tuple(waves), level)
    if maintype == DRI_MT_PHDB:
        subs = []
        for off, typ in desc:
            if typ not in PHDB_RECORD_TYPES or off < 0 or off + PHDB_SUBRECORD_LEN > len(data):
                raise _FormatError("format")
            raw = data[off : off + PHDB_SUBRECORD_LEN]
            (t,) = _PHDB_SUB_HEAD.unpack_from(raw, 0)
            marker, reserved, cl = _PHDB_SUB_TAIL.unpack_from(raw, 4 + CLASS_DATA_LEN)
            body = raw[4 : 4 + CLASS_DATA_LEN]
            cls = (cl >> 8) & 0x0F if CLASS_FROM_CL_DRILVL_SUBT else len(subs)
            if cls == CLASS_BASIC:
                subs.append(PhdbSubrecord(typ, t, _decode_basic(body), None, marker, reserved, cl))
            else:
                subs.append(PhdbSubrecord(typ, t, None, bytes(body), marker, reserved, cl))
        return PhdbRecord(r_time, tuple(subs), **common)
    if maintype == DRI_MT_WAVE:
        wsubs = []
        for off, typ in desc:
            if off < 0 or off + _WAVE_SUB_HEAD.size > len(data):
                raise _FormatError("format")
            n, status, reserved = _WAVE_SUB_HEAD.unpack_from(data, off)
            start = off + _WAVE_SUB_HEAD.size
            if n < 0 or start + 2 * n > len(data):
                raise _FormatError("format")
            samples = struct.unpack_from(f"<{n}h", data, start)
            wsubs.append(WaveSubrecord(typ, samples, status, reserved))
        return WaveRecord(r_time, tuple(wsubs), **common)
    return OtherRecord(maintype, tuple(desc), bytes(data), r_time, **common)


# --- the codec ------------------------------------------------------------------------------


class GeS5Codec(Codec):
    """Incremental deframer/decoder and encoder for DRI records (§2-§6).

    Any 0x7E is a frame boundary (§8 "Resync"): bytes between two flags are unescaped and
    checked (checksum, r_len, structure); an empty frame (shared or doubled flags) is no
    error; an escape right before a flag means a broken frame (§8) and is discarded. Bytes
    before the first flag after a reset are garbage. Nothing here raises on input.
    """

    protocol: ClassVar[str] = "ge-s5"
    document: ClassVar[str] = "ge-datex-s5.md"

    def __init__(self, role: Role = Role.HOST) -> None:
        super().__init__(role)
        self.reset()

    def reset(self) -> None:
        self._buf = bytearray()
        self._in_frame = False  # a flag has been seen since the reset
        self._escape = False
        self._overflow = False
        self._garbage = False

    def encode(self, message: GeS5Message) -> bytes:
        return frame(encode_record(message))

    def feed(self, data: bytes) -> list[GeS5Message]:
        out: list[GeS5Message] = []
        self.stats.bytes_in += len(data)
        for b in data:
            if b == FRAMECHAR:
                self._end_frame(out)
                continue
            if not self._in_frame:
                if not self._garbage:
                    self._garbage = True
                    self.stats.error("garbage")
                continue
            if self._overflow:
                continue
            if self._escape:
                self._escape = False
                b ^= ESCAPE_XOR
            elif b == CTRLCHAR:
                self._escape = True
                continue
            self._buf.append(b)
            if len(self._buf) > MAX_RECORD_LEN + 1:
                self._overflow = True
                self._buf.clear()
                self.stats.error("overflow")
        return out

    def _end_frame(self, out: list[GeS5Message]) -> None:
        buf, escape, overflow = self._buf, self._escape, self._overflow
        self._buf = bytearray()
        self._escape = self._overflow = self._garbage = False
        self._in_frame = True
        if overflow:
            return  # already counted
        if escape:
            self.stats.error("escape")  # 7D right before 7E: broken frame (§8)
            return
        if not buf:
            return  # shared or doubled flag (§8): not an error
        if len(buf) < HEADER_LEN + 1:
            self.stats.error("short")
            return
        rec, cs = bytes(buf[:-1]), buf[-1]
        if checksum(rec) != cs:
            self.stats.error("checksum")
            return
        try:
            msg = decode_record(rec)
        except (_FormatError, struct.error) as e:
            self.stats.error(str(e) if isinstance(e, _FormatError) else "format")
            return
        self.stats.frames += 1
        out.append(msg)
