"""Tests of the B. Braun Space BCC driver (shared/protocols/bbraun-bcc.md).

Everything runs through the real codec, host and peer: document frames (§3, §7) and the
real captured frames the document describes (§3, §10), hypothesis round-trips and
resynchronisation, expected-bytes tables for the host's session (CONVENTIONS 12), and
host <-> peer sessions over ``MemoryLink`` on its simulated clock.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapmonitor.drivers.codecs.base import Role
from kapmonitor.drivers.codecs.bbraun import (
    UNITS,
    AlarmWord1,
    BBraunCodec,
    BccAck,
    BccNak,
    BccRequest,
    BccResponse,
    PreAlarm,
    PumpStatusBits,
    Quadruple,
    Unparsed,
    checksum,
    parse_address,
    slot_code,
    stuff,
)
from kapmonitor.drivers.devices.bbraun import BBraunHost, is_allowed_request
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import Channel, PumpAlarm, PumpRunState, PumpState, Reading

_CTRL = {"SOH": 0x01, "STX": 0x02, "ETX": 0x03, "EOT": 0x04, "ACK": 0x06, "ETB": 0x17, "RS": 0x1E}


def wire(text: str) -> bytes:
    """The document's notation: ``<SOH>`` etc. are control bytes; anything else (such as
    the captured literal text ``<EE><80><A1>``) stays as written."""
    return re.sub(r"<(SOH|STX|ETX|EOT|ACK|ETB|RS)>", lambda m: chr(_CTRL[m.group(1)]), text).encode(
        "latin-1"
    )


def bcc_frame(bed_id: str, user_data: bytes, last_part: bool = True) -> bytes:
    """The document's reference construction (§3), used to build frames the document
    describes but does not spell out."""
    body = f"{bed_id}/1/1>".encode("ascii") + user_data
    length = 1 + 5 + 1 + len(body) + 1 + 5 + 1
    head = b"\x01" + b"%05d" % length + b"\x02" + body + (b"\x03" if last_part else b"\x17")
    return head + b"%05d" % (sum(head) % 256) + b"\x04"


ACK = b"\x06"

# §7.1 open session
ALIVE_REQ = wire("<SOH>00031<STX>1/1/1>ADMIN:ALIVE<ETX>00061<EOT>")
ALIVE_HEX = bytes.fromhex(
    "01 30 30 30 33 31 02 31 2f 31 2f 31 3e 41 44 4d 49 4e 3a 41 4c 49 56 45 03 30 30 30 36 31 04"
)
GNACK = wire("<SOH>00041<STX>KAPBED1/1/1>5,50100,GNACK,0<ETX>00020<EOT>")
# §7.5 bad checksum: example 1's response with the checksum changed to 00021
GNACK_BAD = wire("<SOH>00041<STX>KAPBED1/1/1>5,50100,GNACK,0<ETX>00021<EOT>")
# §7.2 poll all pumps
GET_REQ = wire("<SOH>00033<STX>KAPBED1/1/1>MEM:GET<ETX>00203<EOT>")
GET_RESP = wire(
    "<SOH>00304<STX>KAPBED1/1/1>1205,50111,INRT,52.50<RS>1205,50111,INSOL,Ketamin1mg/ml<RS>"
    "1205,50111,INVI,17.50<RS>1205,50111,INVOLACT,32.50<RS>1205,50111,INSYR,50<RS>"
    "1205,50111,INDCON,1<RS>1205,50111,INDCONU,31<RS>1205,50111,INDORT,0.75<RS>"
    "1205,50111,INDORTU,69<RS>1205,50111,INBORT,800.00<RS>1205,50111,INBOVAL,0.0<RS>"
    "1205,50111,INRMT,65535<ETX>00015<EOT>"
)
# §7.3 errors
GETSLOT29_REQ = wire("<SOH>00040<STX>KAPBED1/1/1>MEM:GETSLOT#29<ETX>00153<EOT>")
ERR_811 = wire("<SOH>00046<STX>KAPBED1/1/1>1210,50129,GNERR,811<ETX>00055<EOT>")
ERR_68 = wire("<SOH>00045<STX>KAPBED1/1/1>1216,50100,GNERR,68<ETX>00005<EOT>")
ERR_11 = wire("<SOH>00045<STX>KAPBED1/1/1>1221,50100,GNERR,11<ETX>00245<EOT>")
# §7.4 alarm-type events
ERR_39 = wire("<SOH>00045<STX>KAPBED1/1/1>1215,50111,GNERR,39<ETX>00004<EOT>")
GNNEW = wire(
    "<SOH>00071<STX>KAPBED1/1/1>1220,50111,GNNEW,688F030006<RS>1220,50111,INRT,0<ETX>00117<EOT>"
)
INA3 = wire("<SOH>00061<STX>KAPBED1/1/1>1230,50111,INRT,0<RS>1230,50111,INA3,1<ETX>00030<EOT>")
# §4: the simulator's VERSION answer form (parameter = version text, no value), framed per §3
VERSION_REQ = bcc_frame("KAPBED1", b"ADMIN:VERSION")
VERSION_RESP = bcc_frame("KAPBED1", b"6,50100,V3.30")

# §3/§10: real frames captured on a SpaceStation (two Perfusor Space pumps plus an idle one),
# stored in mindleaving/patient-monitor-datalogger PatientMonitorDataLoggerTest/BBraun/
# BBraunBccCommunicatorTest.cs. Parts 1 and 2 verify; part 3 was altered when pasted
# (declared length 1067, actual 1063) and serves as a negative test.
CAPTURE_PART1 = wire(
    "<SOH>01152<STX>ComSystem/1/1>214,50100,FMNOR,1<RS>214,50100,FMSTAT,00051<RS>"
    "214,50100,FMDONGLE,T<RS>214,50100,FMBANY,_NV<RS>214,50100,FMRT,FMS1NSNS<RS>"
    "214,50100,FMRSTAT,00051<RS>214,50111,GNNEW,688F030006<RS>214,50111,INRT,0<RS>"
    "214,50111,INSOL,_NV<RS>214,50111,INSOLSN,_NV<RS>214,50111,INSOLID,_NV<RS>"
    "214,50111,INVOLACT,0<RS>214,50111,INRMT,0<RS>214,50111,INDOCAL,0<RS>"
    "214,50111,INDCON,0<RS>214,50111,INDCONU,23<RS>214,50111,INDORT,0<RS>"
    "214,50111,INDORTU,23<RS>214,50111,INVI,0<RS>214,50111,INTIME,0<RS>"
    "214,50111,INBORT,800.00<RS>214,50111,INNR,60008D98<RS>214,50111,INP1,4<RS>"
    "214,50111,INP2,0<RS>214,50111,INSYR,0<RS>214,50111,INSTBY,0<RS>"
    "214,50111,INSERNUM,36248<RS>214,50111,INDTNR,6144<RS>214,50111,DSSTATUS,00050<RS>"
    "214,50111,INBOVAL,0.0<RS>214,50111,INBOCNT,0<RS>214,50111,INM1,1<RS>"
    "214,50111,INM2,0<RS>214,50111,INM3,0<RS>214,50111,INM4,_NV<RS>214,50111,INM5,0<RS>"
    "214,50111,INM6,0<RS>214,50111,INM7,0<RS>214,50111,INM8,1<RS>214,50111,INM9,_NV<RS>"
    "214,50111,INM10,0<RS>214,50111,INM11,0<RS>214,50111,INM12,0<RS>214,50111,INA1,0<RS>"
    "214,50111,INA2,0<RS>214,50111,INA3,0<RS>214,50111,INA4,0<RS>214,50111,INA5,0<RS>"
    "214,50111,INA6,_NV<RS>214,50111,INA7,0<RS>214,50111,INA8,0<RS>214,50111,INA9,0<RS>"
    "214,50111,INA10,_NV<RS>214,50111,INA11,0<RS>214,50111,INA12,0<RS>"
    "214,50111,INA13,_NV<RS>214,50111,INA14,0<RS>214,50111,INA15,0<ETB>00002<EOT>"
)
CAPTURE_PART2 = wire(
    "<SOH>01073<STX>ComSystem/1/1>215,50113,GNNEW,688F030006<RS>215,50113,INRT,0.30<RS>"
    "215,50113,INSOL,Arterenol4mg/50<RS>215,50113,INSOLSN,Arteren<EE><80><A1><RS>"
    "215,50113,INSOLID,33~4mg/5002<RS>215,50113,INVOLACT,47.64<RS>"
    "215,50113,INRMT,65535<RS>215,50113,INDOCAL,0<RS>215,50113,INDCON,0<RS>"
    "215,50113,INDCONU,32<RS>215,50113,INDORT,0<RS>215,50113,INDORTU,50<RS>"
    "215,50113,INVI,1.4<RS>215,50113,INTIME,97<RS>215,50113,INBORT,800.00<RS>"
    "215,50113,INNR,60009FA0<RS>215,50113,INP1,4<RS>215,50113,INP2,35<RS>"
    "215,50113,INSYR,50<RS>215,50113,INSTBY,0<RS>215,50113,INSERNUM,40864<RS>"
    "215,50113,INDTNR,6144<RS>215,50113,DSSTATUS,00051<RS>215,50113,INBOVAL,0.0<RS>"
    "215,50113,INBOCNT,0<RS>215,50113,INM1,0<RS>215,50113,INM2,0<RS>215,50113,INM3,1<RS>"
    "215,50113,INM4,_NV<RS>215,50113,INM5,1<RS>215,50113,INM6,0<RS>215,50113,INM7,0<RS>"
    "215,50113,INM8,1<RS>215,50113,INM9,_NV<RS>215,50113,INM10,0<RS>215,50113,INM11,0<RS>"
    "215,50113,INM12,0<RS>215,50113,INA1,0<RS>215,50113,INA2,0<RS>215,50113,INA3,0<RS>"
    "215,50113,INA4,0<RS>215,50113,INA5,0<RS>215,50113,INA6,_NV<RS>215,50113,INA7,0<RS>"
    "215,50113,INA8,0<RS>215,50113,INA9,0<RS>215,50113,INA10,_NV<RS>215,50113,INA11,0<RS>"
    "215,50113,INA12,0<RS>215,50113,INA13,_NV<RS>215,50113,INA14,0<RS>"
    "215,50113,INA15,0<ETB>00025<EOT>"
)
CAPTURE_PART3_ALTERED = wire(
    "<SOH>01067<STX>ComSystem/1/1>215,50114,GNNEW,688F030006<RS>215,50114,INRT,0.10<RS>"
    "215,50114,INSOL,Beloc25mg/50<RS>215,50114,INSOLSN,Beloc25<RS>"
    "215,50114,INSOLID,43~25mg/5003<RS>215,50114,INVOLACT,20.39<RS>"
    "215,50114,INRMT,65535<RS>215,50114,INDOCAL,0<RS>215,50114,INDCON,0<RS>"
    "215,50114,INDCONU,32<RS>215,50114,INDORT,0<RS>215,50114,INDORTU,50<RS>"
    "215,50114,INVI,19.0<RS>215,50114,INTIME,6000<RS>215,50114,INBORT,800.00<RS>"
    "215,50114,INNR,60000717<RS>215,50114,INP1,4<RS>215,50114,INP2,0<RS>"
    "215,50114,INSYR,60<RS>215,50114,INSTBY,1434<RS>215,50114,INSERNUM,1815<RS>"
    "215,50114,INDTNR,6144<RS>215,50114,DSSTATUS,00051<RS>215,50114,INBOVAL,0.0<RS>"
    "215,50114,INBOCNT,0<RS>215,50114,INM1,0<RS>215,50114,INM2,0<RS>215,50114,INM3,1<RS>"
    "215,50114,INM4,_NV<RS>215,50114,INM5,1<RS>215,50114,INM6,0<RS>215,50114,INM7,0<RS>"
    "215,50114,INM8,1<RS>215,50114,INM9,_NV<RS>215,50114,INM10,0<RS>215,50114,INM11,0<RS>"
    "215,50114,INM12,0<RS>215,50114,INA1,0<RS>215,50114,INA2,0<RS>215,50114,INA3,0<RS>"
    "215,50114,INA4,0<RS>215,50114,INA5,0<RS>215,50114,INA6,_NV<RS>215,50114,INA7,0<RS>"
    "215,50114,INA8,0<RS>215,50114,INA9,0<RS>215,50114,INA10,_NV<RS>215,50114,INA11,0<RS>"
    "215,50114,INA12,0<RS>215,50114,INA13,_NV<RS>215,50114,INA14,0<RS>"
    "215,50114,INA15,0<ETX>00127<EOT>"
)

DOCUMENT_RESPONSES = [GNACK, GET_RESP, ERR_811, ERR_68, ERR_11, ERR_39, GNNEW, INA3]
DOCUMENT_REQUESTS = [ALIVE_REQ, GET_REQ, GETSLOT29_REQ]


def decode_one(frame: bytes, role: Role = Role.HOST) -> object:
    codec = BBraunCodec(role)
    msgs = codec.feed(frame)
    assert codec.stats.error_count == 0, codec.stats.as_dict()
    assert len(msgs) == 1
    return msgs[0]


# --------------------------------------------------------------------------- document frames
def test_checksum_check_value_section_3() -> None:
    assert ALIVE_REQ == ALIVE_HEX  # §7.1 hex dump equals the notation
    assert checksum(ALIVE_REQ[:-6]) == 61


def test_open_session_frames_section_7_1() -> None:
    assert decode_one(ALIVE_REQ, Role.DEVICE) == BccRequest("1", "ADMIN:ALIVE")
    assert decode_one(GNACK) == BccResponse("KAPBED1", (Quadruple(5, "50100", "GNACK", "0"),))


def test_poll_frames_section_7_2() -> None:
    assert decode_one(GET_REQ, Role.DEVICE) == BccRequest("KAPBED1", "MEM:GET")
    resp = decode_one(GET_RESP)
    assert isinstance(resp, BccResponse)
    assert resp.bed_id == "KAPBED1" and resp.final
    values = {q.parameter: q.value for q in resp.quadruples}
    assert all(q.rel_time == 1205 and q.pump_index == (1, 1) for q in resp.quadruples)
    assert values["INRT"] == "52.50"
    assert values["INVI"] == "17.50"
    assert values["INDCON"] == "1" and UNITS[int(values["INDCONU"])] == "mg/mL"
    assert values["INDORT"] == "0.75" and UNITS[int(values["INDORTU"])] == "mg/kg/h"
    assert values["INSOL"] == "Ketamin1mg/ml"
    assert len(resp.items) == 12


@pytest.mark.parametrize(
    ("frame", "rel", "address", "code"),
    [(ERR_811, 1210, "50129", "811"), (ERR_68, 1216, "50100", "68"),
     (ERR_11, 1221, "50100", "11"), (ERR_39, 1215, "50111", "39")],
)  # fmt: skip
def test_error_frames_sections_7_3_and_7_4(frame: bytes, rel: int, address: str, code: str) -> None:
    assert decode_one(frame) == BccResponse("KAPBED1", (Quadruple(rel, address, "GNERR", code),))


def test_getslot_request_section_7_3() -> None:
    assert decode_one(GETSLOT29_REQ, Role.DEVICE) == BccRequest("KAPBED1", "MEM:GETSLOT#29")


def test_event_frames_section_7_4() -> None:
    assert decode_one(GNNEW) == BccResponse(
        "KAPBED1",
        (
            Quadruple(1220, "50111", "GNNEW", "688F030006"),
            Quadruple(1220, "50111", "INRT", "0"),
        ),
    )
    assert decode_one(INA3).items[1] == Quadruple(1230, "50111", "INA3", "1")  # type: ignore[attr-defined]


def test_bad_checksum_is_rejected_section_7_5() -> None:
    codec = BBraunCodec()
    assert codec.feed(GNACK_BAD + GNACK) == [decode_one(GNACK)]
    assert codec.stats.errors["checksum"] == 1
    assert codec.stats.frames == 1


@pytest.mark.parametrize("frame", [*DOCUMENT_RESPONSES, CAPTURE_PART1, CAPTURE_PART2])
def test_document_responses_reencode_byte_exact(frame: bytes) -> None:
    assert BBraunCodec().encode(decode_one(frame)) == frame


@pytest.mark.parametrize("frame", [*DOCUMENT_REQUESTS, VERSION_REQ])
def test_document_requests_reencode_byte_exact(frame: bytes) -> None:
    assert BBraunCodec(Role.DEVICE).encode(decode_one(frame, Role.DEVICE)) == frame


def test_real_capture_multipart_frames_section_3() -> None:
    codec = BBraunCodec()
    part1, part2 = codec.feed(CAPTURE_PART1 + CAPTURE_PART2)
    assert len(CAPTURE_PART1) == 1152 and len(CAPTURE_PART2) == 1073
    assert isinstance(part1, BccResponse) and isinstance(part2, BccResponse)
    assert part1.bed_id == part2.bed_id == "ComSystem"
    assert not part1.final and not part2.final  # both end in ETB: more parts follow
    rack = {q.parameter: q.value for q in part1.quadruples if q.pump_index == (0, 0)}
    assert rack == {
        "FMNOR": "1", "FMSTAT": "00051", "FMDONGLE": "T", "FMBANY": "_NV",
        "FMRT": "FMS1NSNS", "FMRSTAT": "00051",
    }  # fmt: skip
    idle = {q.parameter: q.value for q in part1.quadruples if q.pump_index == (1, 1)}
    assert idle["GNNEW"] == "688F030006" and idle["INRT"] == "0" and idle["INSOL"] == "_NV"
    assert idle["INA6"] == "_NV" and idle["INA15"] == "0"
    assert len(part1.items) == 6 + 1 + 51  # rack, GNNEW, the 51 pump parameters of §5.2
    noradrenaline = {q.parameter: q.value for q in part2.quadruples}
    assert all(q.rel_time == 215 and q.address == "50113" for q in part2.quadruples)
    assert noradrenaline["INRT"] == "0.30"
    assert noradrenaline["INSOL"] == "Arterenol4mg/50"
    assert noradrenaline["INSOLSN"] == "Arteren<EE><80><A1>"  # literal text in the capture
    assert noradrenaline["INSOLID"] == "33~4mg/5002"
    assert noradrenaline["INVOLACT"] == "47.64" and noradrenaline["INVI"] == "1.4"
    assert UNITS[int(noradrenaline["INDCONU"])] == "µg/mL"
    assert UNITS[int(noradrenaline["INDORTU"])] == "µg/min"
    assert noradrenaline["INRMT"] == "65535" and noradrenaline["DSSTATUS"] == "00051"
    assert codec.stats.error_count == 0


def test_altered_capture_frame_is_a_length_error_section_3() -> None:
    codec = BBraunCodec()
    assert codec.feed(CAPTURE_PART3_ALTERED) == []
    assert codec.stats.errors == {"length": 1}
    assert len(CAPTURE_PART3_ALTERED) == 1063


def test_addresses_section_5() -> None:
    assert parse_address("50100") == (0, 0)
    assert parse_address("50111") == (1, 1)
    assert parse_address("5011B") == (1, 11)
    assert parse_address("5013O") == (3, 24)
    assert parse_address("501110") == (1, 10)  # BCC 3.30's 6-character form (pitfall 5)
    for bad in ("50110", "50101", "5011P", "50411", "4011", "5011", "x"):
        assert parse_address(bad) is None
    assert slot_code(1, 10) == "1A" and slot_code(2, 9) == "29" and slot_code(0, 0) == "00"


def test_unit_table_and_bit_sets_sections_5_3_and_5_4() -> None:
    assert UNITS[1] == "mL/h" and UNITS[69] == "mg/kg/h" and UNITS[155] == "mL/kg/h"
    assert PumpStatusBits.INFUSING == 1 << 7 and PumpStatusBits.VOLUME_BOLUS == 1 << 11
    assert AlarmWord1.OCCLUSION == 1 << 10 and AlarmWord1.VTBI_INFUSED == 1 << 13
    assert AlarmWord1.AIR == 1 << 28 and PreAlarm.VTBI_NEARLY_DELIVERED == 1 << 2


def test_character_stuffing_rule_is_optional_section_2() -> None:
    stuffed = stuff(ALIVE_REQ)
    assert stuffed != ALIVE_REQ  # "ADMIN" has a D, "ALIVE" an E
    assert BBraunCodec(Role.DEVICE, stuffing=True).feed(stuffed) == [BccRequest("1", "ADMIN:ALIVE")]
    assert BBraunCodec(Role.DEVICE, stuffing=True).encode(BccRequest("1", "ADMIN:ALIVE")) == (
        stuffed
    )
    plain = BBraunCodec(Role.DEVICE)
    assert plain.feed(stuffed) == [] and plain.stats.error_count == 1


def test_ack_and_nak_bytes_between_frames() -> None:
    codec = BBraunCodec(Role.DEVICE)
    assert codec.feed(ACK + GET_REQ + b"\x15") == [
        BccAck(),
        BccRequest("KAPBED1", "MEM:GET"),
        BccNak(),
    ]
    host_side = BBraunCodec(Role.HOST)
    assert host_side.feed(ACK) == [] and host_side.stats.errors["garbage"] == 1


def test_unparsed_items_are_kept() -> None:
    frame = bcc_frame("KAPBED1", b"12,50111,INRT,1.00\x1enot a quadruple\x1ex,50111,INVI,2")
    codec = BBraunCodec()
    (msg,) = codec.feed(frame)
    assert msg.items == (
        Quadruple(12, "50111", "INRT", "1.00"),
        Unparsed("not a quadruple"),
        Unparsed("x,50111,INVI,2"),
    )
    assert codec.stats.errors["quadruple"] == 2
    assert codec.encode(msg) == frame


# --------------------------------------------------------------------------- hypothesis
_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)
_token = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=","),
    min_size=1,
    max_size=10,
)
_quadruple = st.builds(
    Quadruple,
    rel_time=st.integers(0, 10**9),
    address=st.one_of(st.sampled_from(["50100", "50111", "5011B", "501110"]), _token),
    parameter=_token,
    value=st.one_of(st.none(), st.sampled_from(["_NV", "_NA", "0", "52.50"]), _text),
)
_unparsed = st.builds(Unparsed, _text.filter(lambda t: t.count(",") < 2))
_bed = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters=">"),
    min_size=1,
    max_size=15,
)
responses = st.builds(
    BccResponse,
    bed_id=_bed,
    items=st.lists(st.one_of(_quadruple, _unparsed), max_size=8)
    .map(tuple)
    .filter(lambda items: items != (Unparsed(""),)),
    final=st.booleans(),
)
requests = st.builds(BccRequest, bed_id=_bed, command=_text)
device_msgs = st.one_of(requests, st.just(BccAck()), st.just(BccNak()))


@settings(max_examples=200, deadline=None)
@given(responses)
def test_response_roundtrip(msg: BccResponse) -> None:
    codec = BBraunCodec(Role.HOST)
    assert codec.feed(codec.encode(msg)) == [msg]
    assert codec.stats.error_count == sum(isinstance(i, Unparsed) for i in msg.items)


@settings(max_examples=200, deadline=None)
@given(device_msgs)
def test_request_roundtrip(msg: object) -> None:
    codec = BBraunCodec(Role.DEVICE)
    assert codec.feed(codec.encode(msg)) == [msg]


@settings(max_examples=200, deadline=None)
@given(st.lists(responses, min_size=1, max_size=5), st.lists(st.integers(0, 5000)), st.booleans())
def test_stream_in_random_pieces(msgs: list[BccResponse], cuts: list[int], stuffing: bool) -> None:
    codec = BBraunCodec(Role.HOST, stuffing=stuffing)
    data = b"".join(codec.encode(m) for m in msgs)
    assert feed_in_pieces(BBraunCodec(Role.HOST, stuffing=stuffing), data, cuts) == msgs


@settings(max_examples=200, deadline=None)
@given(st.lists(device_msgs, min_size=1, max_size=6), st.lists(st.integers(0, 500)))
def test_request_stream_in_random_pieces(msgs: list[object], cuts: list[int]) -> None:
    data = b"".join(BBraunCodec(Role.DEVICE).encode(m) for m in msgs)
    assert feed_in_pieces(BBraunCodec(Role.DEVICE), data, cuts) == msgs


_garbage = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\x04", b"?"))


@st.composite
def noisy_stream(draw: st.DrawFn) -> tuple[bytes, list[BccResponse], int]:
    """Valid frames interleaved with garbage (no EOT, so it cannot close a frame by
    itself), truncated frames and frames with one flipped bit; ends with a valid frame so
    any bad tail has been closed and counted."""
    codec = BBraunCodec()
    out, good, bad = bytearray(), [], 0
    kinds = draw(st.lists(st.sampled_from(["ok", "garbage", "cut", "flip"]), max_size=10))
    for kind in [*kinds, "ok"]:
        frame = codec.encode(draw(responses))
        if kind == "ok":
            out += frame
            good.append(codec.feed(frame)[0])
        elif kind == "garbage":
            out += draw(_garbage)
            bad += 1
        elif kind == "cut":
            out += frame[: draw(st.integers(1, len(frame) - 1))]
            bad += 1
        else:
            pos = draw(st.integers(0, len(frame) - 1))
            flipped = bytearray(frame)
            flipped[pos] ^= 1 << draw(st.integers(0, 7))
            out += flipped
            bad += 1
    return bytes(out), good, bad


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noisy_stream(), st.lists(st.integers(0, 3000)))
def test_resynchronises_on_noise(
    stream: tuple[bytes, list[BccResponse], int], cuts: list[int]
) -> None:
    data, good, bad = stream
    codec = BBraunCodec()
    assert feed_in_pieces(codec, data, cuts) == good
    assert codec.stats.frames == len(good)
    unparsed = sum(isinstance(i, Unparsed) for m in good for i in m.items)
    if bad:
        assert codec.stats.error_count > unparsed
    else:
        assert codec.stats.error_count == unparsed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(Role)), st.booleans())
def test_never_raises_on_any_bytes(data: bytes, role: Role, stuffing: bool) -> None:
    codec = BBraunCodec(role, stuffing=stuffing)
    codec.feed(data)
    codec.feed(ALIVE_REQ if role is Role.DEVICE else GNACK)
    assert codec.stats.errors["internal"] == 0


# --------------------------------------------------------------------------- expected bytes
def run_script(host: BBraunHost, pairs: list[tuple[bytes, bytes]], seconds: float) -> MemoryLink:
    peer = ExpectedExchange(pairs)
    link = MemoryLink(host, peer)
    link.connect()
    link.step(seconds)
    peer.assert_done()
    return link


def pump_states(messages: list[object], source: str | None = None) -> list[PumpState]:
    return [
        m for m in messages if isinstance(m, PumpState) and (source is None or m.source == source)
    ]


def readings(messages: list[object], channel: Channel, source: str | None = None) -> list[Reading]:
    return [
        m
        for m in messages
        if isinstance(m, Reading)
        and m.channel is channel
        and (source is None or m.source == source)
    ]


def test_expected_session_mem_get_sections_6_and_7() -> None:
    """§7.5 bad GNACK is not ACKed and ALIVE is retried after the 5 s timeout (§6); then
    §7.1 session, VERSION (§4), and MEM:GET polls every 5 s answered by §7.2 and §7.4."""
    pairs = [
        (ALIVE_REQ, GNACK_BAD),  # t=0: no ACK may follow
        (ALIVE_REQ, GNACK),  # t=5: retry with bed ID "1"
        (ACK, b""),
        (VERSION_REQ, VERSION_RESP),  # t=5.5: the rack's bed ID from now on
        (ACK, b""),
        (GET_REQ, GET_RESP),  # t=6
        (ACK, b""),
        (GET_REQ, INA3),  # t=11
        (ACK, b""),
        (GET_REQ, ERR_39),  # t=16
        (ACK, b""),
        (GET_REQ, GNNEW),  # t=21
        (ACK, b""),
    ]
    host = BBraunHost("pump")
    link = run_script(host, pairs, 22.0)
    assert host.associated and host.bed_id == "KAPBED1"
    assert host.version == (Quadruple(6, "50100", "V3.30", None),)
    states = pump_states(link.messages)
    assert [s.source for s in states] == ["pump/slot11"] * 4
    running, alarm, removed, back = states
    assert running.state is PumpRunState.RUNNING
    assert running.rate_ml_h == 52.5 and running.volume_infused_ml == 17.5
    assert running.drug == "Ketamin1mg/ml" and running.concentration_mg_ml == 1.0
    assert running.vtbi_ml is None  # INVOLACT is the syringe volume (host docstring)
    assert running.device_t_us == 1205 * 1_000_000
    assert alarm.state is PumpRunState.ALARM and alarm.rate_ml_h == 0.0
    assert alarm.alarms == (PumpAlarm("unclassified", "INA3,1", "pump alarm (type unknown)"),)
    assert removed.state is PumpRunState.UNKNOWN
    assert [a.code for a in removed.alarms] == ["pump_removed"]
    assert removed.alarms[0].raw == "GNERR,39"
    assert back.state is PumpRunState.STOPPED and back.alarms == () and back.rate_ml_h == 0.0
    rates = readings(link.messages, Channel.PUMP_RATE, "pump/slot11")
    assert [r.value for r in rates] == [52.5, 0.0, 0.0]
    assert [r.value for r in readings(link.messages, Channel.VOLUME_INFUSED)] == [17.5]
    assert host.errors["timeout ADMIN:ALIVE"] == 1


def test_expected_session_getslot_section_7_3() -> None:
    """Single-pump polling with MEM:GETSLOT#ps, no VERSION; §7.3's 811 answer."""
    pairs = [
        (ALIVE_REQ, GNACK),
        (ACK, b""),
        (GETSLOT29_REQ, ERR_811),  # t=0.5: 500 ms after the GNACK (§6)
        (ACK, b""),
        (GETSLOT29_REQ, ERR_811),  # t=5.5
        (ACK, b""),
    ]
    host = BBraunHost("pump", slot="29", query_version=False)
    link = run_script(host, pairs, 6.0)
    assert pump_states(link.messages) == []  # never a pump there: nothing to report
    assert host.errors["GNERR 811"] == 2


def test_host_reads_real_capture_and_does_not_ack_bad_part() -> None:
    """The captured 3-part answer: parts 1 and 2 are ACKed, the altered part 3 is not; the
    incomplete answer is published when the 5 s answer timeout expires (§6)."""
    gnack = bcc_frame("ComSystem", b"213,50100,GNACK,0")
    pairs = [
        (ALIVE_REQ, gnack),
        (ACK, b""),
        (bcc_frame("ComSystem", b"MEM:GET"), CAPTURE_PART1),
        (ACK, CAPTURE_PART2),
        (ACK, CAPTURE_PART3_ALTERED),
    ]
    host = BBraunHost("pump", query_version=False)
    link = run_script(host, pairs, 5.7)  # poll at 0.5 s, timeout at 5.5 s, next poll at 6 s
    assert host.codec.stats.errors == {"length": 1}
    assert host.rack["FMRT"] == "FMS1NSNS"
    idle, nor = pump_states(link.messages, "pump/slot11"), pump_states(link.messages, "pump/slot13")
    assert len(idle) == len(nor) == 1
    assert idle[0].state is PumpRunState.STOPPED and idle[0].rate_ml_h == 0.0
    assert idle[0].drug is None and idle[0].volume_infused_ml == 0.0
    assert nor[0].state is PumpRunState.RUNNING and nor[0].rate_ml_h == 0.3
    assert nor[0].volume_infused_ml == 1.4 and nor[0].drug == "Arterenol4mg/50"
    assert nor[0].concentration_mg_ml is None  # INDCON 0 = not set
    assert nor[0].alarms == () and nor[0].device_t_us == 215_000_000
    assert [r.value for r in readings(link.messages, Channel.PUMP_RATE, "pump/slot13")] == [0.3]


def test_six_character_address_and_no_value_markers() -> None:
    """Pitfall 5 (501110 = slot 10 = index 1A) and pitfall 6 (_NV is never a number)."""
    frame = bcc_frame("KAPBED1", b"7,501110,INRT,_NV\x1e7,501110,INVI,_NA\x1e7,501110,INA2,1")
    pairs = [(ALIVE_REQ, GNACK), (ACK, b""), (GET_REQ, frame), (ACK, b"")]
    link = run_script(BBraunHost("pump", query_version=False), pairs, 1.0)
    (state,) = pump_states(link.messages)
    assert state.source == "pump/slot1A"
    assert state.rate_ml_h is None and state.volume_infused_ml is None
    assert state.state is PumpRunState.UNKNOWN
    assert state.alarms == (PumpAlarm("unclassified", "INA2,1", "pump alarm (type unknown)"),)
    assert not [m for m in link.messages if isinstance(m, Reading)]


def test_undocumented_error_code_for_a_pump_is_an_unclassified_alarm() -> None:
    """§5.1: codes other than 11/39/68/811 are UNCERTAIN; one addressed to a pump is shown
    once as an unclassified alarm, never dropped."""
    odd = bcc_frame("KAPBED1", b"8,50111,GNERR,77\x1e8,50111,INRT,5.00")
    plain = bcc_frame("KAPBED1", b"9,50111,INRT,5.00")
    pairs = [(ALIVE_REQ, GNACK), (ACK, b""), (GET_REQ, odd), (ACK, b""), (GET_REQ, plain)]
    link = run_script(BBraunHost("pump", query_version=False), [*pairs, (ACK, b"")], 6.0)
    first, second = pump_states(link.messages)
    assert [(a.code, a.raw) for a in first.alarms] == [("unclassified", "GNERR,77")]
    assert first.state is PumpRunState.RUNNING and second.alarms == ()


def test_host_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="poll period"):
        BBraunHost("pump", poll_period_s=1.0)
    with pytest.raises(ValueError, match="pump index"):
        BBraunHost("pump", slot="4Z")
    assert is_allowed_request("MEM:GETSLOT#1B") and is_allowed_request("ADMIN:ALIVE")
    assert not is_allowed_request("MEM:GETSLOT#1Z") and not is_allowed_request("MEM:SET")


# --------------------------------------------------------------------------- host <-> peer
T0 = 1_700_000_000_000_000


def assert_host_only_read(link: MemoryLink) -> None:
    """Every byte the host sent decodes, peer side, to an ACK or an allowed read request."""
    codec = BBraunCodec(Role.DEVICE)
    msgs = codec.feed(bytes(link.host_sent))
    assert codec.stats.error_count == 0 and msgs
    for m in msgs:
        assert isinstance(m, BccAck) or (
            isinstance(m, BccRequest) and is_allowed_request(m.command)
        ), m


def ketamine_link(**peer_options: object) -> tuple[MemoryLink, ProgrammedPump, BBraunPeer]:
    # 0.5 mg/kg over 40 min for 70 kg at 1 mg/mL: 35 mL at 52.5 mL/h
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    pump.start(T0)
    peer = BBraunPeer(pump, **peer_options)  # type: ignore[arg-type]
    link = MemoryLink(BBraunHost("pump"), peer, now_us=T0)
    link.connect()
    return link, pump, peer


def test_ketamine_infusion_to_completion() -> None:
    link, pump, peer = ketamine_link(seed=3)
    link.step(40 * 60 + 30)
    states = pump_states(link.messages, "pump/slot11")
    assert states[0].state is PumpRunState.RUNNING and states[0].rate_ml_h == 52.5
    assert states[-1].state is PumpRunState.COMPLETE
    assert states[-1].volume_infused_ml == pytest.approx(35.0, abs=0.005)
    assert {s.infusion_id for s in states} == {1}
    assert all(s.drug == "ketamine" and s.concentration_mg_ml == 1.0 for s in states)
    volumes = [r.value for r in readings(link.messages, Channel.VOLUME_INFUSED)]
    assert volumes == sorted(volumes) and volumes[-1] == pytest.approx(35.0, abs=0.005)
    rates = {r.value for r in readings(link.messages, Channel.PUMP_RATE)}
    assert rates == {52.5, 0.0}
    for r in readings(link.messages, Channel.VOLUME_INFUSED):  # volume matches the feed
        assert r.value == pytest.approx(pump._volume(r.t_us), abs=0.005 + 1e-9)
    gaps = [b.t_us - a.t_us for a, b in itertools.pairwise(states)]
    assert max(gaps) <= 5_000_000  # a PumpState at every 5 s poll (at least every 60 s)
    assert_host_only_read(link)
    assert peer.violations == []
    assert all(r.bed_id == "KAPBED1" for r in peer.requests if r.command != "ADMIN:ALIVE")


def test_injected_occlusion_is_reported_within_one_poll() -> None:
    link, pump, _peer = ketamine_link()
    link.step(600)
    pump.raise_alarm(PumpAlarm("occlusion", "sim"), link.now_us)
    t_alarm = link.now_us
    new = link.step(5.0)
    (state,) = pump_states(new)
    assert state.t_us - t_alarm <= 5_000_000
    assert state.state is PumpRunState.ALARM and state.rate_ml_h == 0.0
    assert [(a.code, a.raw) for a in state.alarms] == [("unclassified", "INA3,1")]
    pump.clear_alarms()
    pump.start(link.now_us)
    assert pump_states(link.step(5.0))[0].state is PumpRunState.RUNNING


def test_rack_with_several_pumps() -> None:
    p11 = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    p12 = ProgrammedPump(rate_ml_h=10.0, vtbi_ml=50, drug="NaCl 0.9%", concentration_mg_ml=None)
    p1b = ProgrammedPump(rate_ml_h=2.5, vtbi_ml=20)
    for p in (p11, p12, p1b):
        p.start(T0)
    peer = BBraunPeer(p11, extra_pumps={"12": p12, "1B": p1b})
    link = MemoryLink(BBraunHost("pump"), peer, now_us=T0, chunk=97)
    link.connect()
    link.step(60)
    for source, rate in (("pump/slot11", 52.5), ("pump/slot12", 10.0), ("pump/slot1B", 2.5)):
        states = pump_states(link.messages, source)
        assert len(states) == 12  # one per 5 s poll
        assert {s.rate_ml_h for s in states} == {rate}
        assert {r.value for r in readings(link.messages, Channel.PUMP_RATE, source)} == {rate}
    assert pump_states(link.messages, "pump/slot12")[0].drug == "NaCl 0.9%"
    assert peer.acks == 2 + 3 * 12  # GNACK, VERSION, then 3 parts per answer, all ACKed
    peer.remove_pump("12")
    new = link.step(5.0)
    (gone,) = pump_states(new, "pump/slot12")
    assert gone.state is PumpRunState.UNKNOWN and gone.alarms[0].code == "pump_removed"
    assert len(pump_states(link.step(10.0), "pump/slot12")) == 0
    assert_host_only_read(link)
    assert peer.violations == []


def test_getslot_polls_only_that_pump() -> None:
    p11, p12 = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35), ProgrammedPump(1.0, 5.0)
    p11.start(T0)
    peer = BBraunPeer(p11, extra_pumps={"12": p12})
    link = MemoryLink(BBraunHost("pump", slot="11"), peer, now_us=T0)
    link.connect()
    link.step(30)
    assert {s.source for s in pump_states(link.messages)} == {"pump/slot11"}
    assert {r.command for r in peer.requests} == {"ADMIN:ALIVE", "ADMIN:VERSION", "MEM:GETSLOT#11"}


def test_silent_peer_goes_stale_then_session_restarts() -> None:
    link, _pump, peer = ketamine_link()
    host = link.host
    link.step(20)
    last = host.last_frame_us
    peer.silent = True
    quiet_s = (last + 59_000_000 - link.now_us) / 1e6  # until 59 s after the last frame
    assert not [m for m in link.step(quiet_s) if isinstance(m, (PumpState, Reading))]
    assert host.last_frame_us == last
    assert host.associated  # stale (the transport's job), session not yet given up
    link.step(2)
    assert not host.associated and host.errors["session lost"] == 1  # §6: 60 s -> ALIVE
    peer.silent = False
    link.step(10)
    assert host.associated and host.last_frame_us > last
    assert pump_states(link.messages)[-1].state is PumpRunState.RUNNING


def test_reconnect_reassociates_and_data_resumes() -> None:
    link, _pump, peer = ketamine_link()
    link.step(30)
    before = pump_states(link.messages)[-1]
    link.disconnect()
    assert not link.step(20)
    link.connect()
    new = link.step(10)
    after = pump_states(new)
    assert after and after[0].infusion_id == before.infusion_id
    assert after[0].volume_infused_ml > before.volume_infused_ml
    alive = [r for r in peer.requests if r.command == "ADMIN:ALIVE"]
    assert [r.bed_id for r in alive] == ["1", "1"]
    assert peer.violations == []


def test_new_infusion_increments_infusion_id() -> None:
    link, _pump, peer = ketamine_link()
    link.step(60)
    second = ProgrammedPump(rate_ml_h=20.0, vtbi_ml=10, infusion_id=2)
    second.start(link.now_us)
    peer.insert_pump("11", second)  # a fresh syringe: the volume starts again from 0
    link.step(10)
    states = pump_states(link.messages)
    assert states[0].infusion_id == 1 and states[-1].infusion_id == 2
    assert states[-1].rate_ml_h == 20.0
    by_id: dict[int, list[float]] = {}
    for s in states:
        by_id.setdefault(s.infusion_id, []).append(s.volume_infused_ml or 0.0)
    assert all(v == sorted(v) for v in by_id.values())


def test_peer_answers_errors_like_the_document() -> None:
    """§5.1/§7.3: unknown request -> GNERR 68 at 50100; empty slot -> GNERR 811 at that
    address; empty rack -> GNERR 11."""
    peer = BBraunPeer(ProgrammedPump(1.0, 1.0), bed_id="KAPBED1")
    peer.connection_made(T0)
    host_codec, dev = BBraunCodec(Role.HOST), BBraunCodec(Role.DEVICE)

    def ask(command: str) -> Quadruple:
        peer.data_received(dev.encode(BccRequest("KAPBED1", command)), T0)
        (resp,) = host_codec.feed(peer.take_outgoing())
        peer.data_received(ACK, T0)
        return resp.quadruples[-1]

    assert ask("MEM:FOO").parameter == "GNERR" and ask("MEM:FOO").value == "68"
    q = ask("MEM:GETSLOT#29")
    assert (q.address, q.parameter, q.value) == ("50129", "GNERR", "811")
    peer.remove_pump("11")
    q = ask("MEM:GET")
    assert (q.address, q.parameter, q.value) == ("50100", "GNERR", "11")


def test_peer_reports_the_captured_parameter_set() -> None:
    """§5.2: the simulated rack sends the rack parameters and each pump's parameters in the
    order of the real capture, GNNEW first in a session."""
    peer = BBraunPeer(ProgrammedPump(52.5, 35.0), bed_id="ComSystem")
    peer.connection_made(T0)
    dev, host_codec = BBraunCodec(Role.DEVICE), BBraunCodec(Role.HOST)
    peer.data_received(dev.encode(BccRequest("ComSystem", "MEM:GET")), T0)
    (ours,) = host_codec.feed(peer.take_outgoing())
    (captured,) = BBraunCodec().feed(CAPTURE_PART1)
    assert [(q.address, q.parameter) for q in ours.quadruples] == [
        (q.address, q.parameter) for q in captured.quadruples
    ]
    assert ours.final  # a single pump: the first part is the last


def test_pump_model_near_end_notice_is_not_reported_as_an_alarm_flag() -> None:
    """The simulator's low-priority "near end" notice has no BCC flag of its own; sending it
    as an INA flag would make the host report an unknown high-priority pump alarm."""
    from kapmonitor.drivers.sim.pump_model import PumpModel

    pump = PumpModel(rate_ml_h=52.5, vtbi_ml=35.0, start_us=0)
    link = MemoryLink(BBraunHost("pump"), BBraunPeer(pump))
    pump.start_us = link.now_us
    link.connect()
    pump.start(link.now_us)
    msgs = link.step(38 * 60)  # past the near-end notice at 35 min
    states = [m for m in msgs if isinstance(m, PumpState)]
    assert any(a.code == "near_end" for a in pump.pump(link.now_us).alarms)
    assert not any(s.alarms for s in states)
    assert states[-1].state is PumpRunState.RUNNING
