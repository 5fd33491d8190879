"""Philips IntelliVue Data Export (MIB/RS232): codec, host and peer.

Document: shared/protocols/philips-intellivue-mib.md. Byte strings marked with a section
number are copied from the document; where a test changes a documented field (a poll
period, an invoke id) the comment says which and why.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapmonitor.drivers import registry
from kapmonitor.drivers.codecs import intellivue_attributes as at
from kapmonitor.drivers.codecs import intellivue_nomenclature as nom
from kapmonitor.drivers.codecs.base import Role
from kapmonitor.drivers.codecs.intellivue import (
    MDS_OBJECT,
    Abort,
    AssociationRefuse,
    AssociationRequest,
    AssociationResult,
    EventReport,
    EventReportResult,
    IntellivueCodec,
    LinkedState,
    MdibObjectSupport,
    MdsCreateEventReport,
    PollProfileSupport,
    PollRequest,
    PollResult,
    ReleaseRequest,
    ReleaseResult,
    RemoteError,
    RemoteOperation,
    UserInfo,
    decode_user_data,
    encode_user_data,
)
from kapmonitor.drivers.codecs.intellivue_attributes import (
    AbsoluteTime,
    Ava,
    Float,
    ManagedObjectId,
    NuObsValue,
    NuObsValueCmp,
    ObservationPoll,
    SaCalibData16,
    SaObsValue,
    SaObsValueCmp,
    SaSpec,
    ScaleRangeSpec16,
    SingleContextPoll,
    TypeId,
)
from kapmonitor.drivers.codecs.intellivue_framing import escape, fcs16, frame
from kapmonitor.drivers.codecs.intellivue_session import (
    ABORT,
    PRES_HEADER_REQUEST,
    RELEASE_RESULT,
    monitor_timeout_s,
)
from kapmonitor.drivers.codecs.intellivue_waves import samples_to_bytes, scale_samples
from kapmonitor.drivers.devices.intellivue import (
    ASSOCIATION_REQUEST,
    HOST_MESSAGE_TYPES,
    IntellivueHost,
)
from kapmonitor.drivers.sim.feed import ScriptedVitals
from kapmonitor.drivers.sim.peers.intellivue import PEER_WAVES, IntellivuePeer
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import CHANNELS, Channel, Quality, Reading, WaveChunk


def hx(s: str) -> bytes:
    return bytes.fromhex(s)


# §1.5: the MDS Create Event Result, framed.
MDS_RESULT_WIRE = hx(
    "C0 11 01 00 1C E1 00 00 02 00 02 00 14 00 01 00 01 00 0E 00 21 00 00 00 00 00 0A BD 00"
    "0D 06 00 00 39 17 C1"
)
# §1.5: the Association Release Request, framed, with an escaped C1.
RELEASE_WIRE = hx(
    "C0 11 01 00 1A 09 18 7D E1 16 61 80 30 80 02 01 01 A0 80 62 80 80 01 00 00 00 00 00 00"
    "00 00 00 41 08 C1"
)
# §3.1 variant A (VSCaptureMP aarq_msg), 238 bytes.
AARQ_A = hx(
    "0D EC 05 08 13 01 00 16 01 02 80 00 14 02 00 02 C1 DC 31 80 A0 80 80 01 01 00 00 A2 80"
    "A0 03 00 00 01 A4 80 30 80 02 01 01 06 04 52 01 00 01 30 80 06 02 51 01 00 00 00 00 30"
    "80 02 01 02 06 0C 2A 86 48 CE 14 02 01 00 00 00 01 01 30 80 06 0C 2A 86 48 CE 14 02 01"
    "00 00 00 02 01 00 00 00 00 00 00 61 80 30 80 02 01 01 A0 80 60 80 A1 80 06 0C 2A 86 48"
    "CE 14 02 01 00 00 00 03 01 00 00 BE 80 28 80 06 0C 2A 86 48 CE 14 02 01 00 00 00 01 01"
    "02 01 02 81 48 80 00 00 00 40 00 00 00 00 00 00 00 80 00 00 00 20 00 00 00 00 00 00 00"
    "00 01 00 2C 00 01 00 28 80 00 00 00 00 00 09 C4 00 00 09 C4 00 00 03 E8 FF FF FF FF 60"
    "00 00 00 00 01 00 0C F0 01 00 08 8C 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 00 00 00 00 00"
)
# §3.6
RELEASE_REQUEST_DOC = hx(
    "09 18 C1 16 61 80 30 80 02 01 01 A0 80 62 80 80 01 00 00 00 00 00 00 0000 00"
)
ABORT_DOC = hx(
    "19 2E 11 01 03 C1 29 A0 80 A0 80 30 80 02 01 01 06 02 51 01 00 00 00 00 61 80 30 80 02"
    "01 01 A0 80 64 80 80 01 01 00 00 00 00 00 00 00 00 00 00"
)
# §3.4
MDS_RESULT_DOC = hx(
    "E1 00 00 02 00 02 00 14 00 01 00 01 00 0E 00 21 00 00 00 00 00 0A BD 000D 06 00 00"
)
# §4.2: extended poll for numerics, TIME_PD_POLL 30 s.
EXT_POLL_NU_DOC = hx(
    "E1 00 00 02 00 01 00 28 00 01 00 07 00 22 00 21 00 00 00 00 00 00 00 00 F1 3B 00 14 00"
    "01 00 01 00 06 00 00 00 01 00 08 F1 3E 00 04 00 03 A9 80"
)
# §4.3: extended poll for waves, TIME_PD_POLL 600 s.
EXT_POLL_WAVE_DOC = hx(
    "E1 00 00 02 00 01 00 28 00 04 00 07 00 22 00 21 00 00 00 00 00 00 00 00 F1 3B 00 14 00"
    "03 00 01 00 09 00 00 00 01 00 08 F1 3E 00 04 00 49 3E 00"
)
# §4.3: SET of the RTSA priority list (ECG II); not modelled, must pass through intact.
SET_RTSA_PRIO_DOC = hx(
    "E1 00 00 02 00 01 00 22 00 00 00 05 00 1C 00 21 00 00 00 00 00 00 00 00 00 01 00 0E 00"
    "00 F2 3A 00 08 00 01 00 04 00 02 01 02"
)
# §4.4: synthetic extended-poll result, HR 72 and NIBP 120/80/93 mmHg.
POLL_RESULT_DOC = hx(
    "E1 00 00 02 00 02 00 70 00 03 00 07 00 6A 00 21 00 00 00 00 F1 3B 00 60 00 05 00 01 00"
    "12 34 56 20 24 01 15 10 30 00 00 00 01 00 06 00 00 00 01 00 46 00 00 00 02 00 40 00 10"
    "00 01 00 0E 09 50 00 0A 41 82 00 00 0A A0 00 00 00 48 00 11 00 01 00 26 09 4B 00 22 00"
    "03 00 1E 4A 05 00 00 0F 20 00 00 00 78 4A 06 00 00 0F 20 00 00 00 50 4A 07 00 00 0F 20"
    "00 00 00 5D"
)


def build_aarq_b() -> bytes:
    """§9: the document's builder for Association Request variant B (300 bytes)."""
    H = lambda x: struct.pack(">H", x)  # noqa: E731 - transcribed from the document
    I = lambda x: struct.pack(">I", x)  # noqa: E731, E741

    def alist(items: list[tuple[int, bytes]]) -> bytes:
        body = b"".join(H(i) + H(len(v)) + v for i, v in items)
        return H(len(items)) + H(len(body)) + body

    def li(n: int) -> bytes:
        return bytes([n]) if n < 255 else b"\xff" + H(n)

    def ber(n: int) -> bytes:
        if n < 128:
            return bytes([n])
        k = n.bit_length() // 8 + 1
        return bytes([0x80 | k]) + n.to_bytes(k, "big")

    pres_hdr = hx(
        "3180a0808001010000a280a003000001a4803080020101060452010001308006025101000000003080020102"
        "060c2a8648ce14020100000001013080060c2a8648ce140201000000020100000000000061803080020101a0"
        "806080a180060c2a8648ce14020100000003010000be802880060c2a8648ce140201000000010102010281"
    )
    pp_ext = I(0x8E000000) + alist([])
    pps = (
        I(0x80000000)
        + I(0x0FA0)
        + I(0x05B0)
        + I(0x05B0)
        + I(0xFFFFFFFF)
        + I(0x60000000)
        + alist([(0xF001, pp_ext)])
    )
    mdib = [(0x21, 1), (0x06, 0xC9), (0x09, 0x3C), (0x05, 0x10), (0x2A, 1), (0x36, 1)]
    mdib_v = H(len(mdib)) + H(8 * len(mdib)) + b"".join(H(1) + H(c) + I(n) for c, n in mdib)
    ui = (
        I(0x80000000)
        + I(0x40000000)
        + I(0)
        + I(0x80000000)
        + I(0x20000000)
        + alist([])
        + alist([(0x0001, pps), (0x0102, mdib_v)])
    )
    pres = pres_hdr + ber(len(ui)) + ui + bytes(16)
    body = hx("0508130100160102800014020002") + b"\xc1" + li(len(pres)) + pres
    return b"\x0d" + li(len(body)) + body


def decode_one(wire: bytes) -> object:
    codec = IntellivueCodec()
    msgs = codec.feed(wire)
    assert codec.stats.error_count == 0, codec.stats.as_dict()
    assert len(msgs) == 1
    return msgs[0]


# ============================================================ §1: framing


def test_fcs_check_values_section_1_3() -> None:
    assert fcs16(b"123456789") == 0x906E
    assert fcs16(hx("11 01 00 00")) == 0x7918
    assert fcs16(hx("11 01 00 02 12 34")) == 0xDE6E


def _fcs_bitwise(data: bytes) -> int:  # §1.3 reference implementation
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fcs_matches_reference_and_good_residue(data: bytes) -> None:
    fcs = fcs16(data)
    assert fcs == _fcs_bitwise(data)
    # §1.3 (b): register (no final XOR) over data + FCS (low byte first) ends at 0xF0B8
    assert _fcs_bitwise(data + bytes((fcs & 0xFF, fcs >> 8))) ^ 0xFFFF == 0xF0B8


def test_escape_vector_section_1_4() -> None:
    assert escape(hx("C0 7D C1")) == hx("7D E0 7D 5D 7D E1")


def test_framed_examples_section_1_5() -> None:
    assert decode_one(MDS_RESULT_WIRE) == EventReportResult(1, 0x000ABD00, 0x0D06, MDS_OBJECT)
    assert frame(MDS_RESULT_DOC) == MDS_RESULT_WIRE
    assert decode_one(RELEASE_WIRE) == ReleaseRequest()
    assert IntellivueCodec().encode(ReleaseRequest()) == RELEASE_WIRE


def test_frame_abort_truncation_and_bad_fcs_are_counted() -> None:
    codec = IntellivueCodec()
    good = MDS_RESULT_WIRE
    bad_fcs = good[:-3] + bytes((good[-3] ^ 1,)) + good[-2:]
    aborted = good[:10] + hx("7D C1")
    truncated = good[:12]
    out = codec.feed(b"xx" + aborted + good + truncated + good + bad_fcs + good)
    assert len(out) == 3
    assert codec.stats.errors == Counter(garbage=1, aborted=1, truncated=1, checksum=1)
    assert codec.stats.frames == 3


# ============================================================ §3: session messages


def test_association_request_variant_a_section_3_1() -> None:
    m = decode_user_data(AARQ_A)
    assert isinstance(m, AssociationRequest)
    p = m.user_info.poll_profile
    assert p is not None
    assert (p.min_poll_period, p.max_mtu_rx, p.max_mtu_tx, p.max_bw_tx) == (
        0x9C4,
        2500,
        1000,
        0xFFFFFFFF,
    )
    assert p.ext_options == 0x8C000000
    assert m.user_info.mdib_support is None
    assert m.user_info.startup_mode == 0x20000000
    assert encode_user_data(m) == AARQ_A


def test_association_request_variant_b_section_9_is_what_the_host_sends() -> None:
    wire = build_aarq_b()
    assert len(wire) == 300 and wire[:4] == hx("0D FF 01 28")
    assert wire[18:22] == hx("C1 FF 01 16")  # presentation LI (§3.1 variant B)
    m = decode_user_data(wire)
    assert m == ASSOCIATION_REQUEST
    p = m.user_info.poll_profile
    assert p is not None and (p.min_poll_period, p.max_mtu_rx, p.ext_options) == (
        0x0FA0,
        0x05B0,
        0x8E000000,
    )
    assert m.user_info.mdib_support is not None
    assert [(e.obj_type.code, e.max_inst) for e in m.user_info.mdib_support] == [
        (0x21, 1),
        (0x06, 201),
        (0x09, 60),
        (0x05, 16),
        (0x2A, 1),
        (0x36, 1),
    ]
    assert encode_user_data(ASSOCIATION_REQUEST) == wire
    assert wire[22 : 22 + 131] == PRES_HEADER_REQUEST


def test_release_and_abort_section_3_6() -> None:
    assert decode_user_data(RELEASE_REQUEST_DOC) == ReleaseRequest()
    assert encode_user_data(ReleaseRequest()) == RELEASE_REQUEST_DOC
    result = RELEASE_REQUEST_DOC.replace(b"\x62", b"\x63")
    result = b"\x0a" + result[1:]
    assert result == RELEASE_RESULT
    assert decode_user_data(result) == ReleaseResult()
    assert decode_user_data(ABORT_DOC) == Abort()
    assert ABORT == ABORT_DOC and len(ABORT_DOC) == 48


def test_association_result_user_info_found_behind_any_header() -> None:
    ui = ASSOCIATION_REQUEST.user_info
    wire = encode_user_data(AssociationResult(ui))
    assert wire[0] == 0x0E
    assert decode_user_data(wire) == AssociationResult(ui)


def test_monitor_timeout_rule_section_3_5() -> None:
    assert monitor_timeout_s(0x0FA0) == 10.0  # 500 ms
    assert monitor_timeout_s(8000 * 10) == 30.0
    assert monitor_timeout_s(8000 * 60) == 130.0


# ============================================================ §4: polls


def test_mds_create_result_section_3_4() -> None:
    assert decode_user_data(MDS_RESULT_DOC) == EventReportResult(
        1, 0x000ABD00, nom.NOM_NOTI_MDS_CREAT, MDS_OBJECT
    )


def test_extended_poll_numerics_section_4_2() -> None:
    m = decode_user_data(EXT_POLL_NU_DOC)
    assert m == PollRequest(
        1,
        1,
        TypeId(1, nom.NOM_MOC_VMO_METRIC_NU),
        0,
        True,
        (Ava(at.NOM_ATTR_TIME_PD_POLL, 0x0003A980),),
    )
    assert encode_user_data(m) == EXT_POLL_NU_DOC
    assert frame(EXT_POLL_NU_DOC).endswith(hx("00 03 A9 80 58 71 C1"))  # §9


def test_extended_poll_waves_section_4_3() -> None:
    m = decode_user_data(EXT_POLL_WAVE_DOC)
    assert m == PollRequest(
        4,
        3,
        TypeId(1, nom.NOM_MOC_VMO_METRIC_SA_RT),
        0,
        True,
        (Ava(at.NOM_ATTR_TIME_PD_POLL, 600 * 8000),),
    )
    assert encode_user_data(m) == EXT_POLL_WAVE_DOC


def test_single_poll_of_mds_matches_section_9_fcs() -> None:
    # §9: "framed MDS single poll ends … 00 21 00 00 B0 1A C1" (VSCaptureMP's blob: invoke 0,
    # poll number 1); the FCS pins every other byte.
    wire = frame(encode_user_data(PollRequest(0, 1, TypeId(1, nom.NOM_MOC_VMS_MDS))))
    assert wire.endswith(hx("00 21 00 00 B0 1A C1"))


def test_unmodelled_set_passes_through_section_4_3() -> None:
    m = decode_user_data(SET_RTSA_PRIO_DOC)
    assert isinstance(m, RemoteOperation) and m.ro_type == 1
    assert encode_user_data(m) == SET_RTSA_PRIO_DOC


def test_poll_result_section_4_4() -> None:
    m = decode_user_data(POLL_RESULT_DOC)
    assert isinstance(m, PollResult)
    assert (m.invoke_id, m.poll_number, m.sequence_no, m.rel_time) == (3, 5, 1, 0x00123456)
    assert m.extended and m.linked is None
    assert m.obj_type == TypeId(1, nom.NOM_MOC_VMO_METRIC_NU)
    assert m.abs_time.to_datetime() == datetime(2024, 1, 15, 10, 30, 0)
    (ctx,) = m.contexts
    hr, nibp = ctx.observations
    assert hr.handle == 0x10
    assert hr.attributes == (
        Ava(
            at.NOM_ATTR_NU_VAL_OBS,
            NuObsValue(nom.NOM_ECG_CARD_BEAT_RATE, 0, nom.NOM_DIM_BEAT_PER_MIN, Float(0, 72)),
        ),
    )
    assert nibp.handle == 0x11
    (cmp_ava,) = nibp.attributes
    assert isinstance(cmp_ava.value, NuObsValueCmp)
    assert [(v.physio_id, v.unit_code, v.value.value) for v in cmp_ava.value.values] == [
        (0x4A05, nom.NOM_DIM_MMHG, 120),
        (0x4A06, nom.NOM_DIM_MMHG, 80),
        (0x4A07, nom.NOM_DIM_MMHG, 93),
    ]
    assert encode_user_data(m) == POLL_RESULT_DOC


# ============================================================ §5: values


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0xFEFE7960, -1000.0),
        (0xFD007D00, 32.0),
        (0xFF000140, 32.0),
        (0x00000048, 72.0),
        (0xFF0003DF, 99.1),
    ],
)
def test_float_vectors_section_5_2(raw: int, value: float) -> None:
    f = Float.from_raw(raw)
    assert f.value == value and f.special is None and f.raw == raw


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (0x007FFFFF, "NaN"),
        (0x00800000, "NRes"),
        (0x007FFFFE, "+INF"),
        (0x00800002, "-INF"),
        (0x027FFFFF, "NaN"),
    ],  # the mantissa alone decides
)
def test_float_specials_section_5_2(raw: int, name: str) -> None:
    f = Float.from_raw(raw)
    assert f.special == name
    assert math.isnan(f.value) if name in ("NaN", "NRes") else math.isinf(f.value)


def test_float_encoding_section_5_2() -> None:
    assert Float.from_value(36.7, -1).raw == 0xFF00016F
    with pytest.raises(ValueError, match="does not fit"):
        Float.from_value(1e9, 0)


def test_wave_scaling_section_5_4() -> None:
    # VSCaptureMP's ECG default (§5.4): -40.96..40.955 <-> 0..0x3FFF, 14 significant bits
    spec = SaSpec(4, 16, 14, 0)
    scale = ScaleRangeSpec16(Float(-3, -40960), Float(-3, 40955), 0, 0x3FFF)
    data = struct.pack(">4H", 0, 0x3FFF, 8192, 0xC000 | 8192)  # upper bits masked off
    values, outside = scale_samples(data, spec, scale)
    assert values is not None and list(values) == [-40.96, 40.955, 0.0, 0.0]
    assert not outside
    assert samples_to_bytes(np.array([-40.96, 40.955, 0.0, 0.0]), spec, scale) == struct.pack(
        ">4H", 0, 0x3FFF, 8192, 8192
    )
    # not clamped: outside the scaled range is extrapolated and flagged
    narrow = ScaleRangeSpec16(Float(0, 0), Float(0, 100), 0, 100)
    values, outside = scale_samples(struct.pack(">H", 200), SaSpec(1, 16, 16, 0), narrow)
    assert values is not None and list(values) == [200.0] and outside


def test_attribute_that_does_not_parse_stays_raw() -> None:
    ava = Ava(at.NOM_ATTR_NU_VAL_OBS, b"\x01\x02\x03")  # too short for a NuObsValue
    wire = at.ava_bytes(ava)
    assert at.read_ava(at.Reader(wire)) == ava


# ============================================================ hypothesis: codec


u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
floats = st.builds(Float, st.integers(-128, 127), st.integers(-(1 << 23), (1 << 23) - 1))
bcd = st.one_of(st.none(), st.integers(0, 99))
abs_times = st.builds(AbsoluteTime, bcd, bcd, bcd, bcd, bcd, bcd, bcd, bcd)
type_ids = st.builds(TypeId, u16, u16)
mos = st.builds(ManagedObjectId, u16, u16, u16)
nu_values = st.builds(NuObsValue, u16, u16, u16, floats)
sa_values = st.builds(SaObsValue, u16, u16, st.binary(max_size=24))
small = {"max_size": 3}
TYPED = {
    at.NOM_ATTR_ID_HANDLE: u16,
    at.NOM_ATTR_UNIT_CODE: u16,
    at.NOM_ATTR_ID_LABEL: u32,
    at.NOM_ATTR_TIME_PD_SAMP: u32,
    at.NOM_ATTR_TIME_REL: u32,
    at.NOM_ATTR_TIME_STAMP_REL: u32,
    at.NOM_ATTR_TIME_PD_POLL: u32,
    at.NOM_ATTR_ID_LABEL_STRING: st.text(max_size=8),
    at.NOM_ATTR_ID_BED_LABEL: st.text(max_size=8),
    at.NOM_ATTR_ID_TYPE: type_ids,
    at.NOM_ATTR_SYS_TYPE: type_ids,
    at.NOM_ATTR_TIME_ABS: abs_times,
    at.NOM_ATTR_TIME_STAMP_ABS: abs_times,
    at.NOM_ATTR_NU_VAL_OBS: nu_values,
    at.NOM_ATTR_NU_CMPD_VAL_OBS: st.builds(
        NuObsValueCmp, st.tuples() | st.lists(nu_values, **small).map(tuple)
    ),
    at.NOM_ATTR_SA_VAL_OBS: sa_values,
    at.NOM_ATTR_SA_CMPD_VAL_OBS: st.builds(SaObsValueCmp, st.lists(sa_values, **small).map(tuple)),
    at.NOM_ATTR_SA_SPECN: st.builds(SaSpec, u16, u8, u8, u16),
    at.NOM_ATTR_SCALE_SPECN_I16: st.builds(ScaleRangeSpec16, floats, floats, u16, u16),
    at.NOM_ATTR_SA_CALIB_I16: st.builds(SaCalibData16, floats, floats, u16, u16, u16, u16),
}
assert set(TYPED) == set(at.ATTRIBUTE_TYPES)


def avas(exclude: frozenset[int] = frozenset()) -> st.SearchStrategy[Ava]:
    raw = st.builds(
        Ava, u16.filter(lambda i: i not in TYPED and i not in exclude), st.binary(max_size=12)
    )
    typed = st.sampled_from(sorted(TYPED)).flatmap(lambda i: st.builds(Ava, st.just(i), TYPED[i]))
    return st.one_of(raw, typed)


ava_lists = st.lists(avas(), **small).map(tuple)
observations = st.builds(ObservationPoll, u16, ava_lists)
contexts = st.lists(
    st.builds(SingleContextPoll, u16, st.lists(observations, **small).map(tuple)), max_size=2
).map(tuple)
profiles = st.one_of(st.tuples(st.none(), st.just(())), st.tuples(u32, ava_lists)).flatmap(
    lambda ext: st.builds(
        PollProfileSupport,
        u32,
        u32,
        u32,
        u32,
        u32,
        st.just(ext[0]),
        st.just(ext[1]),
        u32,
        st.lists(avas(frozenset({0xF001})), max_size=2).map(tuple),
    )
)
user_infos = st.builds(
    UserInfo,
    st.none() | profiles,
    st.none() | st.lists(st.builds(MdibObjectSupport, type_ids, u32), **small).map(tuple),
    u32,
    u32,
    u32,
    u32,
    u32,
    ava_lists,
    st.lists(
        st.builds(Ava, u16.filter(lambda i: i not in (1, 0x102)), st.binary(max_size=8)), max_size=2
    ).map(tuple),
)


@st.composite
def poll_results(draw: st.DrawFn) -> PollResult:
    ext = draw(st.booleans())
    return PollResult(
        draw(u16),
        draw(u16),
        draw(u32),
        draw(type_ids),
        draw(contexts),
        ext,
        draw(u16) if ext else None,
        draw(abs_times),
        draw(u16),
        draw(st.none() | st.builds(LinkedState, u8, u8)),
        draw(mos),
    )


@st.composite
def poll_requests(draw: st.DrawFn) -> PollRequest:
    ext = draw(st.booleans())
    return PollRequest(
        draw(u16),
        draw(u16),
        draw(type_ids),
        draw(u16),
        ext,
        draw(ava_lists) if ext else (),
        draw(mos),
        draw(u32),
    )


@st.composite
def event_reports(draw: st.DrawFn) -> EventReport:
    confirmed = draw(st.booleans())
    etype = draw(u16.filter(lambda e: not confirmed or e != nom.NOM_NOTI_MDS_CREAT))
    return EventReport(
        draw(u16), confirmed, draw(mos), draw(u32), etype, draw(st.binary(max_size=16))
    )


messages = st.one_of(
    st.builds(AssociationRequest, user_infos),
    st.builds(AssociationResult, user_infos),
    st.builds(AssociationRefuse, st.binary(max_size=300)),
    st.just(ReleaseRequest()),
    st.just(ReleaseResult()),
    st.just(Abort()),
    st.builds(MdsCreateEventReport, u16, u32, ava_lists, mos, mos),
    event_reports(),
    st.builds(EventReportResult, u16, u32, u16, mos, st.binary(max_size=8)),
    poll_requests(),
    poll_results(),
    st.builds(RemoteError, u16, u16, st.binary(max_size=8)),
    st.builds(RemoteOperation, u16.filter(lambda t: t not in (1, 2, 3, 5)), st.binary(max_size=16)),
)
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(messages)
def test_round_trip(m: object) -> None:
    for role in Role:
        codec = IntellivueCodec(role)
        assert codec.feed(codec.encode(m)) == [m]
        assert codec.stats.error_count == 0


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.lists(st.integers(0, 4000), max_size=12))
def test_stream_in_pieces(ms: list[object], cuts: list[int]) -> None:
    codec = IntellivueCodec()
    wire = b"".join(codec.encode(m) for m in ms)
    assert feed_in_pieces(IntellivueCodec(), wire, cuts) == ms


def _corrupt(kind: str, wire: bytes, data: st.DataObject) -> bytes:
    if kind == "garbage":
        return data.draw(st.binary(min_size=1, max_size=20))
    if kind == "truncated":
        return wire[: data.draw(st.integers(1, len(wire) - 1))]
    i = data.draw(st.integers(0, len(wire) - 1))
    return wire[:i] + bytes((wire[i] ^ (1 << data.draw(st.integers(0, 7))),)) + wire[i + 1 :]


@SETTINGS
@given(
    st.lists(messages, min_size=1, max_size=4),
    st.lists(st.sampled_from(["garbage", "truncated", "bitflip"]), max_size=4),
    st.data(),
)
def test_garbage_truncation_and_bit_flips(
    ms: list[object], bad: list[str], data: st.DataObject
) -> None:
    codec = IntellivueCodec()
    frames = [codec.encode(m) for m in ms]
    wire = b""
    for i, f in enumerate(frames):
        if i < len(bad):
            wire += _corrupt(bad[i], frames[data.draw(st.integers(0, len(frames) - 1))], data)
        wire += f
    rx = IntellivueCodec()
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    assert feed_in_pieces(rx, wire, cuts) == ms
    assert rx.stats.error_count >= min(len(bad), len(ms))
    assert rx.stats.frames == len(ms)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_feed_never_raises(data: bytes) -> None:
    codec = IntellivueCodec()
    codec.feed(data)
    codec.feed(b"\xc0" + data + b"\xc1")
    # valid frames around arbitrary content, reaching every decoder below the framing
    body = b"\x11\x01" + struct.pack(">H", len(data)) + data
    assert frame(data) == b"\xc0" + escape(body + struct.pack("<H", fcs16(body))) + b"\xc1"
    payloads = [data]
    for ro_type in (1, 2, 3, 5):
        payloads.append(hx("E1 00 00 02") + struct.pack(">HH", ro_type, len(data)) + data)
    for spdu in (0x0D, 0x0E, 0x0C, 0x09, 0x0A, 0x19):
        payloads.append(bytes((spdu, 0xFF)) + struct.pack(">H", len(data)) + data)
    for p in payloads:
        codec.feed(frame(p))
    assert codec.stats.errors["internal"] == 0


# ============================================================ host: expected bytes (§3, §4, §8)


def _patch(doc: bytes, old: str, new: str) -> bytes:
    o, n = hx(old), hx(new)
    assert doc.count(o) == 1, (old, doc.hex())
    return doc.replace(o, n)


def _time_attrs() -> tuple[Ava, ...]:
    return (
        Ava(at.NOM_ATTR_TIME_ABS, AbsoluteTime(20, 24, 1, 15, 10, 30, 0, 0)),
        Ava(at.NOM_ATTR_TIME_REL, 0x00123456),
    )


def test_host_connection_and_polling_sequence_expected_bytes() -> None:
    codec = IntellivueCodec()
    # Replies a monitor would send; the document has no captured accept or create report,
    # so they are built with the codec: accept echoing the request (§3.2), MDS create with
    # invoke 1 and event time 0x000ABD00 so that the host's echo is exactly §1.5's frame.
    accept = codec.encode(AssociationResult(ASSOCIATION_REQUEST.user_info))
    create = codec.encode(MdsCreateEventReport(1, 0x000ABD00, _time_attrs()))
    # §4.2 with TIME_PD_POLL 30 s -> 60 s (the §8 recommendation the host follows)
    nu_poll = _patch(EXT_POLL_NU_DOC, "F1 3E 00 04 00 03 A9 80", "F1 3E 00 04 00 07 53 00")
    # §4.3 with invoke id 4 -> 2, poll number 3 -> 2 (the host's counters) and 600 s -> 60 s
    wave_poll = _patch(EXT_POLL_WAVE_DOC, "00 04 00 07 00 22", "00 02 00 07 00 22")
    wave_poll = _patch(wave_poll, "00 14 00 03 00 01 00 09", "00 14 00 02 00 01 00 09")
    wave_poll = _patch(wave_poll, "00 49 3E 00", "00 07 53 00")
    # §4.4 with invoke id 3 -> 1, the invoke id of the host's numerics poll
    nu_result = _patch(POLL_RESULT_DOC, "00 03 00 07 00 6A", "00 01 00 07 00 6A")
    # keep-alive: the §9 MDS single poll with invoke id 0 -> 3 and poll number 1 -> 3
    keepalive = frame(encode_user_data(PollRequest(3, 3, TypeId(1, nom.NOM_MOC_VMS_MDS))))
    keepalive_doc = frame(encode_user_data(PollRequest(0, 1, TypeId(1, nom.NOM_MOC_VMS_MDS))))
    assert keepalive_doc.endswith(hx("B0 1A C1"))
    keepalive_result = codec.encode(PollResult(3, 3, 0x00200000, TypeId(1, 0x21), ()))
    peer = ExpectedExchange(
        [
            (frame(ABORT_DOC), b""),  # §8 step 1: clear a stale session
            (frame(build_aarq_b()), accept + create),  # §8 step 2
            (MDS_RESULT_WIRE, b""),  # §8 step 3, §1.5
            (frame(nu_poll), frame(nu_result)),  # §8 step 5
            (frame(wave_poll), b""),
            (keepalive, keepalive_result),  # §8 step 6, after 4 s without transmission
            (RELEASE_WIRE, frame(RELEASE_RESULT)),  # §8 step 7, §1.5
        ]
    )
    host = IntellivueHost("mon")
    link = MemoryLink(host, peer)
    link.connect()
    msgs = link.step(0.6)
    assert host.associated
    t = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    device_us = int(t.timestamp()) * 1_000_000
    readings = {m.channel: m for m in msgs if isinstance(m, Reading)}
    assert {ch: r.value for ch, r in readings.items()} == {
        Channel.HR: 72.0,
        Channel.NIBP_SYS: 120.0,
        Channel.NIBP_DIA: 80.0,
        Channel.NIBP_MEAN: 93.0,
    }
    assert all(
        r.device_t_us == device_us and r.source == "mon" and r.quality == Quality.OK
        for r in readings.values()
    )
    link.step(3.8)
    assert peer.index == 5  # 4.4 s: the last transmission (0.5 s) is not 4 s old yet
    link.step(0.2)
    assert peer.index == 6  # 4.6 s: keep-alive sent and answered
    host.release(link.now_us)
    link.step(0.1)
    assert host.state == "closed"
    peer.assert_done()


# ============================================================ host <-> peer


VITALS = {
    Channel.HR: 72.0,
    Channel.PULSE: 71.0,
    Channel.SPO2: 97.0,
    Channel.NIBP_SYS: 121.0,
    Channel.NIBP_DIA: 79.0,
    Channel.NIBP_MEAN: 93.0,
    Channel.RR: 14.0,
    Channel.ETCO2: 38.0,
    Channel.FICO2: 1.0,
    Channel.TEMP: 36.7,
}
RESOLUTION = {Channel.ECG: 0.005, Channel.PLETH: 0.001, Channel.CO2_WAVE: 0.1}


def _pair(
    **peer_options: object,
) -> tuple[MemoryLink, IntellivueHost, IntellivuePeer, ScriptedVitals]:
    feed = ScriptedVitals(values=dict(VITALS), period=50, amplitude=1.0)
    host = IntellivueHost("mon")
    peer = IntellivuePeer(feed, seed=1, **peer_options)  # type: ignore[arg-type]
    link = MemoryLink(host, peer)
    link.connect()
    return link, host, peer, feed


def _waves(msgs: list[object]) -> dict[Channel, list[WaveChunk]]:
    out: dict[Channel, list[WaveChunk]] = {}
    for m in msgs:
        if isinstance(m, WaveChunk):
            out.setdefault(m.channel, []).append(m)
    return out


def _check_waves(chunks: dict[Channel, list[WaveChunk]], feed: ScriptedVitals) -> None:
    assert set(chunks) == set(PEER_WAVES)
    for ch, cs in chunks.items():
        spec = PEER_WAVES[ch]
        assert {c.rate_hz for c in cs} == {spec.rate_hz}
        samples = np.concatenate([c.samples for c in cs])
        assert len(samples) == feed.sent[ch]  # every sample the peer took, exactly once
        k = np.arange(len(samples))
        expected = np.sin(2 * np.pi * k / feed.period)
        assert np.max(np.abs(samples - expected)) <= RESOLUTION[ch] / 2 + 1e-6
        for a, b in itertools.pairwise(cs):
            assert b.t_us == a.end_us  # contiguous, no jitter
        assert all(c.quality == Quality.OK for c in cs)


def test_numerics_and_waves_over_60_s() -> None:
    link, host, peer, feed = _pair()
    msgs = link.step(60.0)
    assert host.associated and peer.associated
    readings = [m for m in msgs if isinstance(m, Reading)]
    by_ch = Counter(r.channel for r in readings)
    for ch in (
        Channel.HR,
        Channel.PULSE,
        Channel.SPO2,
        Channel.RR,
        Channel.ETCO2,
        Channel.FICO2,
        Channel.TEMP,
    ):
        assert 58 <= by_ch[ch] <= 61, (ch, by_ch[ch])  # one a second (§4.2)
    for ch in (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN):
        assert by_ch[ch] == 1  # episodic: one measurement
    for r in readings:
        assert r.value == VITALS[r.channel] and r.quality == Quality.OK and r.source == "mon"
        lo, hi = CHANNELS[r.channel].plausible
        assert lo <= r.value <= hi
        assert r.device_t_us is not None and abs(r.device_t_us - r.t_us) < 300_000
    chunks = _waves(msgs)
    _check_waves(chunks, feed)
    # Samples due against the peer's clock: waves start when the poll arrives (0.5 s, after
    # the abort settle time) and go out in whole 256 ms blocks of 128 / 32 / 16 samples.
    blocks = (60_000_000 - 500_000) // 256_000
    assert [feed.sent[ch] for ch in (Channel.ECG, Channel.PLETH, Channel.CO2_WAVE)] == [
        128 * blocks,
        32 * blocks,
        16 * blocks,
    ]
    assert host.counters == Counter()
    assert host.codec.stats.error_count == 0 and peer.codec.stats.error_count == 0


def test_polls_are_renewed_and_keepalive_holds_the_association() -> None:
    link, host, peer, feed = _pair()
    msgs = link.step(185.0)  # three poll periods
    assert host.associated and peer.associated
    hr = [m for m in msgs if isinstance(m, Reading) and m.channel is Channel.HR]
    gaps = np.diff([r.t_us for r in hr])
    assert len(hr) >= 183 and gaps.max() <= 1_100_000
    _check_waves(_waves(msgs), feed)
    sent = IntellivueCodec(Role.DEVICE).feed(bytes(link.host_sent))
    assert {type(m) for m in sent} <= HOST_MESSAGE_TYPES
    ext = [m for m in sent if isinstance(m, PollRequest) and m.extended]
    assert len(ext) == 8  # NU + SA at 0, 50, 100, 150 s
    assert len({m.invoke_id for m in sent if isinstance(m, PollRequest)}) == len(
        [m for m in sent if isinstance(m, PollRequest)]
    )
    host_tx = [m for m in sent if isinstance(m, PollRequest) and not m.extended]
    assert host_tx  # keep-alives were needed between renewals


def test_values_change_invalid_and_new_nibp() -> None:
    link, _host, _peer, feed = _pair()
    link.step(3.0)
    feed.values[Channel.SPO2] = None  # probe off: the monitor's NaN
    feed.values[Channel.NIBP_SYS] = 130.0  # a new cuff measurement
    feed.values[Channel.HR] = 400.0  # implausible
    msgs = link.step(1.5)
    spo2 = [m for m in msgs if isinstance(m, Reading) and m.channel is Channel.SPO2]
    assert spo2 and all(math.isnan(r.value) and r.quality & Quality.INVALID for r in spo2)
    nibp = [m for m in msgs if isinstance(m, Reading) and m.channel is Channel.NIBP_SYS]
    assert [r.value for r in nibp] == [130.0]
    hr = [m for m in msgs if isinstance(m, Reading) and m.channel is Channel.HR]
    assert hr and all(r.value == 400.0 and r.quality == Quality.OUT_OF_RANGE for r in hr)


def test_linked_results_when_the_mtu_is_small() -> None:
    link, _host, _peer, feed = _pair(mtu=200)
    msgs = link.step(20.0)
    results = [
        m for m in IntellivueCodec().feed(bytes(link.peer_sent)) if isinstance(m, PollResult)
    ]
    assert any(r.linked is not None and r.linked.state == nom.RORLS_LAST for r in results)
    _check_waves(_waves(msgs), feed)
    assert Counter(m.channel for m in msgs if isinstance(m, Reading))[Channel.HR] >= 19


def test_relative_time_wraps_without_a_gap() -> None:
    link, _host, _peer, feed = _pair(rel_time_start=(1 << 32) - 8000 * 5)
    msgs = link.step(20.0)
    chunks = _waves(msgs)
    _check_waves(chunks, feed)
    dev = [c.device_t_us for c in chunks[Channel.PLETH]]
    assert all(d is not None for d in dev) and dev == sorted(dev)  # type: ignore[type-var]


def test_silent_peer_stops_frames_then_host_reassociates() -> None:
    link, host, peer, _feed = _pair()
    link.step(5.0)
    peer.silent = True
    link.step(0.3)  # frames in flight
    last = host.last_frame_us
    assert link.step(6.0) == []
    assert host.last_frame_us == last
    assert link.now_us - (last or 0) > host.stale_after_s * 1e6  # the transport calls it stale
    link.step(5.0)
    assert not host.associated  # nothing for 10 s: back to association (§8 step 6)
    peer.silent = False
    msgs = link.step(10.0)
    assert host.associated and peer.associated
    assert any(isinstance(m, Reading) and m.channel is Channel.HR for m in msgs)
    assert _waves(msgs)


def test_disconnect_and_reconnect_reassociate() -> None:
    link, host, peer, _feed = _pair()
    link.step(5.0)
    link.disconnect()
    assert not host.associated and not peer.associated
    assert link.step(3.0) == []
    link.connect()
    msgs = link.step(5.0)
    assert host.associated and peer.associated
    by_ch = Counter(m.channel for m in msgs if isinstance(m, Reading))
    assert by_ch[Channel.HR] >= 4
    assert by_ch[Channel.NIBP_SYS] == 0  # the same cuff measurement is not a new reading
    assert set(_waves(msgs)) == set(PEER_WAVES)


def test_peer_drops_a_silent_client_and_host_recovers() -> None:
    link, host, peer, _feed = _pair()
    link.step(2.0)
    t = link.now_us + 11_000_000  # §3.5: 10 s without client traffic
    peer.tick(t)
    out = IntellivueCodec().feed(peer.take_outgoing())
    assert Abort() in out and not peer.associated
    link.now_us = t
    host.data_received(IntellivueCodec().encode(Abort()), t)
    assert not host.associated and host.counters["aborted"] == 1
    link.step(3.0)
    assert host.associated and peer.associated


def test_refused_association_is_retried() -> None:
    codec = IntellivueCodec()
    peer = ExpectedExchange(
        [
            (frame(ABORT_DOC), b""),
            (frame(build_aarq_b()), codec.encode(AssociationRefuse(b""))),
            (frame(build_aarq_b()), b""),  # again after ASSOCIATION_RETRY_S
        ]
    )
    host = IntellivueHost()
    link = MemoryLink(host, peer)
    link.connect()
    link.step(2.4)
    assert host.state == "wait_retry"
    link.step(0.2)
    peer.assert_done()
    link.step(5.0)  # no answer for 5 s: gives up on this attempt
    assert host.counters["association_timeout"] == 1


def test_release_without_answer_ends_in_abort() -> None:
    link, host, peer, _feed = _pair()
    link.step(2.0)
    peer.silent = True
    host.release(link.now_us)
    link.step(2.5)
    sent = IntellivueCodec().feed(bytes(link.host_sent))
    assert sent[-2:] == [ReleaseRequest(), Abort()]
    assert host.state == "closed"


# ============================================================ host mapping details


def _associated_host() -> tuple[IntellivueHost, int, int]:
    """A host taken through association by hand; returns it, the numerics poll's invoke id
    and the current time."""
    codec = IntellivueCodec()
    host = IntellivueHost("mon")
    t = 1_700_000_000_000_000
    host.connection_made(t)
    t += 600_000
    host.tick(t)
    host.take_outgoing()
    host.data_received(codec.encode(AssociationResult(ASSOCIATION_REQUEST.user_info)), t)
    host.data_received(codec.encode(MdsCreateEventReport(7, 100, _time_attrs())), t)
    sent = IntellivueCodec(Role.DEVICE).feed(host.take_outgoing())
    assert sent[0] == EventReportResult(7, 100)
    nu = next(
        m
        for m in sent
        if isinstance(m, PollRequest) and m.obj_type.code == nom.NOM_MOC_VMO_METRIC_NU
    )
    return host, nu.invoke_id, t


def _nu_result(invoke: int, *obs: ObservationPoll) -> bytes:
    return IntellivueCodec().encode(
        PollResult(
            invoke,
            1,
            0x00123456,
            TypeId(1, nom.NOM_MOC_VMO_METRIC_NU),
            (SingleContextPoll(0, obs),),
            True,
            1,
        )
    )


def _nu_obs(handle: int, pid: int, unit: int, value: Float, state: int = 0) -> ObservationPoll:
    return ObservationPoll(
        handle, (Ava(at.NOM_ATTR_NU_VAL_OBS, NuObsValue(pid, state, unit, value)),)
    )


def test_units_are_converted_or_refused() -> None:
    host, inv, t = _associated_host()
    msgs = host.data_received(
        _nu_result(
            inv,
            _nu_obs(1, nom.NOM_AWAY_CO2_ET, nom.NOM_DIM_KILO_PASCAL, Float(-1, 50)),
            _nu_obs(2, nom.NOM_TEMP, nom.NOM_DIM_FAHR, Float(-1, 986)),
            _nu_obs(3, nom.NOM_AWAY_CO2_INSP_MIN, nom.NOM_DIM_PERCENT, Float(-1, 5)),
        ),
        t,
    )
    got = {m.channel: m.value for m in msgs if isinstance(m, Reading)}
    assert got[Channel.ETCO2] == pytest.approx(37.503, abs=1e-3)
    assert got[Channel.TEMP] == pytest.approx(37.0)
    assert Channel.FICO2 not in got and host.counters["unit"] == 1


def test_rr_source_priority_and_state_flags() -> None:
    host, inv, t = _associated_host()
    msgs = host.data_received(
        _nu_result(
            inv,
            _nu_obs(1, nom.NOM_RESP_RATE, nom.NOM_DIM_RESP_PER_MIN, Float(0, 20)),
            _nu_obs(2, nom.NOM_AWAY_RESP_RATE, nom.NOM_DIM_RESP_PER_MIN, Float(0, 12)),
            _nu_obs(
                3,
                nom.NOM_PULS_OXIM_SAT_O2,
                nom.NOM_DIM_PERCENT,
                Float(0, 95),
                nom.MS_DEMO_DATA | nom.MS_QUESTIONABLE,
            ),
        ),
        t,
    )
    rr = [m for m in msgs if isinstance(m, Reading) and m.channel is Channel.RR]
    assert [r.value for r in rr] == [12.0]  # airway RR preferred (NUMERIC_SOURCES)
    spo2 = next(m for m in msgs if isinstance(m, Reading) and m.channel is Channel.SPO2)
    assert spo2.quality == Quality.DEMO | Quality.QUESTIONABLE
    assert spo2.device_t_us == int(datetime(2024, 1, 15, 10, 30, tzinfo=UTC).timestamp()) * 10**6


def test_results_of_foreign_invoke_ids_are_ignored() -> None:
    host, inv, t = _associated_host()
    hr = _nu_obs(1, nom.NOM_ECG_CARD_BEAT_RATE, nom.NOM_DIM_BEAT_PER_MIN, Float(0, 60))
    assert host.data_received(_nu_result(inv + 100, hr), t) == []
    assert host.counters["foreign_invoke_id"] == 1
    assert host.last_frame_us == t  # still a valid frame for stale detection


def test_wave_without_scale_is_counted_not_guessed() -> None:
    host, inv, t = _associated_host()
    sa = ObservationPoll(9, (Ava(at.NOM_ATTR_SA_VAL_OBS, SaObsValue(nom.NOM_PLETH, 0, b"\0\1")),))
    wave_inv = inv + 1  # the host polls waves right after numerics
    res = IntellivueCodec().encode(
        PollResult(
            wave_inv,
            2,
            100,
            TypeId(1, nom.NOM_MOC_VMO_METRIC_SA_RT),
            (SingleContextPoll(0, (sa,)),),
            True,
            1,
        )
    )
    assert host.data_received(res, t) == []
    assert host.counters["wave_no_spec"] == 1


def test_registry_names_these_classes() -> None:
    entry = registry.get("intellivue")
    assert entry.codec_class() is IntellivueCodec
    assert entry.host_class() is IntellivueHost
    assert entry.peer_class() is IntellivuePeer
    assert IntellivueCodec.document == entry.document
    assert IntellivueHost.serial_settings.baudrate == 115200
