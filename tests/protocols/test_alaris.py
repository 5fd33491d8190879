"""BD Alaris GH/CC (Asena): codec, host and simulated pump against
shared/protocols/alaris-asena.md (section numbers in the comments)."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapmonitor.drivers.codecs.alaris import (
    AlarisCodec,
    AlarisFrame,
    AlarmStatus,
    InfStatus,
    VtbiStatus,
    crc16,
    parse_decimal,
)
from kapmonitor.drivers.devices.alaris import (
    ALARM_INTERPRETATION,
    READ_ONLY_QUERIES,
    SERIAL,
    AlarisHost,
    host_may_send,
    interpret_alarm,
)
from kapmonitor.drivers.registry import ALARIS
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.peers.alaris import AlarisPeer
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import Channel, PumpAlarm, PumpRunState, PumpState, Reading


def crc_ccitt_false(data: bytes) -> int:
    """The document's own bitwise CRC (§3), independent of binascii."""
    reg = 0xFFFF
    for b in data:
        reg ^= b << 8
        for _ in range(8):
            reg = ((reg << 1) ^ 0x1021) & 0xFFFF if reg & 0x8000 else (reg << 1) & 0xFFFF
    return reg


def frame(body: str) -> bytes:
    """§3 ``alaris_frame``."""
    b = body.encode("ascii")
    return b"!" + b + b"|" + b"%04X" % crc_ccitt_false(b) + b"\r"


def decode_all(data: bytes) -> tuple[list[AlarisFrame], AlarisCodec]:
    codec = AlarisCodec()
    return codec.feed(data), codec


# -- document examples -----------------------------------------------------------------

# §3 table and §10 verification script
CRC_TABLE = [
    ("123456789", 0x29B1),
    ("INF", 0x4961),
    ("INST_SERIALNO", 0x457D),
    ("INST_SERIALNO^8002-51740", 0x050B),
    ("COMMS_PROTOCOL^Asena Rev 2.1.5", 0x661A),
    ("REMOTE_CTRL^ENABLED^****^PERMIT^0^ms", 0x7BB0),
    ("INF^8002-51733^A^HLD^0.00^ml/h^^0.969^ml^530.15^mmHg^00:04:09^EVENT^214725", 0xDB9D),
    ("8002-51740", 0x3CC1),
    ("REMQUERY^DEACT^^^^", 0xE5C9),
    ("REMQUERY^DEACT^^^", 0xB968),
    ("REMOTE_CTRL^ENABLED^3CC1", 0xB1F1),
    ("ALARM", 0x50B2),
    ("INF_VTBI", 0x8456),
]


@pytest.mark.parametrize(("body", "crc"), CRC_TABLE)
def test_crc_check_values(body: str, crc: int) -> None:
    assert crc16(body.encode()) == crc == crc_ccitt_false(body.encode())


def test_inf_query_bytes_match_the_document() -> None:
    # §3 / EBME forum: 21 49 4E 46 7C 34 39 36 31 0D
    wire = bytes.fromhex("21 49 4E 46 7C 34 39 36 31 0D")
    assert AlarisCodec().encode(AlarisFrame("INF")) == wire == b"!INF|4961\r"
    assert decode_all(wire)[0] == [AlarisFrame("INF")]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # §8 example 1 (real bytes)
        (
            bytes.fromhex("21 49 4E 53 54 5F 53 45 52 49 41 4C 4E 4F 7C 34 35 37 44 0D"),
            AlarisFrame("INST_SERIALNO"),
        ),
        (
            bytes.fromhex(
                "21 49 4E 53 54 5F 53 45 52 49 41 4C 4E 4F 5E 38 30 30 32 2D 35 31 37 34 30 "
                "7C 30 35 30 42 0D"
            ),
            AlarisFrame("INST_SERIALNO", ("8002-51740",)),
        ),
        (b"!COMMS_PROTOCOL|E8DA\r", AlarisFrame("COMMS_PROTOCOL")),
        (
            bytes.fromhex(
                "21 43 4F 4D 4D 53 5F 50 52 4F 54 4F 43 4F 4C 5E 41 73 65 6E 61 20 52 65 76 "
                "20 32 2E 31 2E 35 7C 36 36 31 41 0D"
            ),
            AlarisFrame("COMMS_PROTOCOL", ("Asena Rev 2.1.5",)),
        ),
        # §8 example 2
        (
            bytes.fromhex(
                "21 49 4E 46 5E 4B 41 50 2D 30 30 30 30 31 5E 2D 5E 49 4E 46 5E 35 32 2E 35 "
                "30 5E 6D 6C 2F 68 5E 5E 31 37 2E 35 30 30 5E 6D 6C 5E 31 32 2E 34 30 5E 6D "
                "6D 48 67 5E 30 30 3A 32 30 3A 30 30 5E 45 56 45 4E 54 5E 31 30 32 31 7C 32 "
                "39 42 33 0D"
            ),
            AlarisFrame(
                "INF",
                (
                    "KAP-00001",
                    "-",
                    "INF",
                    "52.50",
                    "ml/h",
                    "",
                    "17.500",
                    "ml",
                    "12.40",
                    "mmHg",
                    "00:20:00",
                    "EVENT",
                    "1021",
                ),
            ),
        ),
        (b"!INF_VTBI|8456\r", AlarisFrame("INF_VTBI")),
        (
            b"!INF_VTBI^ACTIV^35.000^ml^STOP|B75C\r",
            AlarisFrame("INF_VTBI", ("ACTIV", "35.000", "ml", "STOP")),
        ),
        # §8 example 3
        (bytes.fromhex("21 41 4C 41 52 4D 7C 35 30 42 32 0D"), AlarisFrame("ALARM")),
        (
            bytes.fromhex(
                "21 41 4C 41 52 4D 5E 41 4C 5F 4F 43 43 4C 55 5E 4F 43 43 4C 55 53 49 4F 4E "
                "5E 7C 36 36 34 44 0D"
            ),
            AlarisFrame("ALARM", ("AL_OCCLU", "OCCLUSION", "")),
        ),
        (b"!ALARM^AL_NOALM^ ^ |C73B\r", AlarisFrame("ALARM", ("AL_NOALM", " ", " "))),
        # §5.3 (real reply) and §9 queries
        (
            b"!REMOTE_CTRL^ENABLED^****^PERMIT^0^ms|7BB0\r",
            AlarisFrame("REMOTE_CTRL", ("ENABLED", "****", "PERMIT", "0", "ms")),
        ),
        (b"!INF_RATE|8E6D\r", AlarisFrame("INF_RATE")),
        (b"!INF_VI|B42C\r", AlarisFrame("INF_VI")),
        (b"!REMQUERY^DEACT^^^^|E5C9\r", AlarisFrame("REMQUERY", ("DEACT", "", "", "", ""))),
    ],
)
def test_document_frames_decode_and_reencode(wire: bytes, expected: AlarisFrame) -> None:
    msgs, codec = decode_all(wire)
    assert msgs == [expected]
    assert codec.stats.error_count == 0
    assert codec.encode(expected) == wire


def test_inf_fields_decode_to_documented_values() -> None:
    # §5.2 real alarm frame and §8 example 2
    (real,), _ = decode_all(
        b"!INF^8002-51733^A^HLD^0.00^ml/h^^0.969^ml^530.15^mmHg^00:04:09^EVENT^214725|DB9D\r"
    )
    inf = InfStatus.from_frame(real)
    assert inf is not None
    assert (inf.serial, inf.alarm_flag, inf.state) == ("8002-51733", "A", "HLD")
    assert parse_decimal(inf.rate) == 0.0 and inf.rate_unit == "ml/h"
    assert inf.drug == ""
    assert parse_decimal(inf.volume) == 0.969 and inf.volume_unit == "ml"
    assert parse_decimal(inf.pressure) == 530.15 and inf.pressure_unit == "mmHg"
    assert (inf.time_remaining, inf.log_type, inf.event_id) == ("00:04:09", "EVENT", "214725")
    assert inf.to_frame() == real
    assert parse_decimal("-50.00") == -50.0 and parse_decimal(" 50") == 50.0
    assert parse_decimal("24+") is None and parse_decimal("") is None
    vtbi = VtbiStatus.from_frame(AlarisFrame("INF_VTBI", ("ACTIV", "35.000", "ml", "STOP")))
    assert vtbi is not None and vtbi.vtbi_ml == 35.0
    none = VtbiStatus.from_frame(AlarisFrame("INF_VTBI", ("DEACT", "", "", "")))
    assert none is not None and none.vtbi_ml is None


def test_negative_and_error_examples() -> None:
    # §8 example 4: bad CRC, mis-copied REMQUERY CRC, ESC abort
    msgs, codec = decode_all(b"!INF|4962\r")
    assert msgs == [] and codec.stats.errors["crc"] == 1
    msgs, codec = decode_all(b"!REMQUERY^DEACT^^^|E5C9\r")
    assert msgs == [] and codec.stats.errors["crc"] == 1
    msgs, codec = decode_all(b"!IN\x1b!INF|4961\r")
    assert msgs == [AlarisFrame("INF")] and codec.stats.errors["aborted"] == 1
    msgs, codec = decode_all(b"!INF|49\x1b61\r")  # the rest after ESC is not a frame
    assert msgs == [] and codec.stats.errors["aborted"] == 1
    msgs, codec = decode_all(b"!inf|4961\r")  # lower-case hex/name are not this protocol
    assert msgs == [] and codec.stats.error_count == 1
    msgs, codec = decode_all(b"!INF|4961\r\n!INF|4961\r")  # a stray LF is not an error
    assert msgs == [AlarisFrame("INF")] * 2 and codec.stats.error_count == 0


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    codec = AlarisCodec()
    for bad in (
        AlarisFrame("inf"),
        AlarisFrame("INF", ("a^b",)),
        AlarisFrame("INF", ("a|b",)),
        AlarisFrame("INF", ("\r",)),
        AlarisFrame("INF", ("x" * 300,)),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - several reasons
            codec.encode(bad)


# -- hypothesis ------------------------------------------------------------------------

_field = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="!^|"),
    max_size=20,
)
frames = st.builds(
    AlarisFrame,
    st.builds(
        str.__add__,
        st.sampled_from(string.ascii_uppercase),
        st.text(string.ascii_uppercase + string.digits + "_", max_size=15),
    ),
    st.lists(_field, max_size=13).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, min_size=1, max_size=20), st.lists(st.integers(0, 5000)))
def test_round_trip_and_pieces(msgs: list[AlarisFrame], cuts: list[int]) -> None:
    codec = AlarisCodec()
    wire = b"".join(codec.encode(m) for m in msgs)
    assert codec.feed(wire) == msgs
    pieces = AlarisCodec()
    assert feed_in_pieces(pieces, wire, cuts) == msgs
    assert pieces.stats.error_count == 0 and pieces.stats.frames == len(msgs)
    assert pieces.stats.bytes_in == len(wire)


def _is_subsequence(needles: list[object], haystack: list[object]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


corruptions = st.one_of(
    st.tuples(st.just("none"), st.just(b"")),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=30)),
    st.tuples(st.just("truncate"), st.integers(1, 200)),
    st.tuples(st.just("flip"), st.integers(0, 100_000)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(corruptions, frames, frames), min_size=1, max_size=12))
def test_garbage_truncation_and_bit_flips(
    parts: list[tuple[tuple[str, object], AlarisFrame, AlarisFrame]],
) -> None:
    """Each part: a corruption (garbage, a truncated or bit-flipped frame) then a valid
    frame. Every valid frame is still recovered in order; corruptions are counted."""
    enc = AlarisCodec()
    wire = bytearray()
    valid: list[AlarisFrame] = []
    damaged = 0
    for (kind, arg), victim, good in parts:
        victim_bytes = enc.encode(victim)
        if kind == "garbage":
            assert isinstance(arg, bytes)
            wire += arg
        elif kind == "truncate":
            assert isinstance(arg, int)
            wire += victim_bytes[: max(1, min(arg, len(victim_bytes) - 1))]
            damaged += 1
        elif kind == "flip":
            assert isinstance(arg, int)
            bit = arg % (len(victim_bytes) * 8)
            flipped = bytearray(victim_bytes)
            flipped[bit // 8] ^= 1 << (bit % 8)
            wire += flipped
            damaged += 1
        wire += enc.encode(good)
        valid.append(good)
    codec = AlarisCodec()
    out = codec.feed(bytes(wire))
    assert _is_subsequence(valid, out)
    assert codec.stats.frames == len(out)
    if damaged:
        assert codec.stats.error_count >= 1


# -- host against an expected-bytes table (§4, §8) ------------------------------------------

INF_RUNNING = "INF^KAP-00001^-^INF^52.50^ml/h^^17.500^ml^12.40^mmHg^00:20:00^EVENT^1021"
INF_ALARM = "INF^8002-51733^A^HLD^0.00^ml/h^^0.969^ml^530.15^mmHg^00:04:09^EVENT^214725"


def test_host_identification_and_polling_match_the_document() -> None:
    pairs = [
        # §8 example 1 (real request and reply bytes)
        (b"!INST_SERIALNO|457D\r", b"!INST_SERIALNO^8002-51740|050B\r"),
        # §4 step 2 (reply value from the OpenICE simulator)
        (frame("COMMS_RESPONSE_MAX"), frame("COMMS_RESPONSE_MAX^4000^ms")),
        (b"!COMMS_PROTOCOL|E8DA\r", b"!COMMS_PROTOCOL^Asena Rev 2.1.5|661A\r"),
        # §8 example 2
        (b"!INF|4961\r", b"!" + INF_RUNNING.encode() + b"|29B3\r"),
        (b"!ALARM|50B2\r", b"!ALARM^AL_NOALM^ ^ |C73B\r"),  # §7: flag seen -> ALARM
        (b"!INF_VTBI|8456\r", b"!INF_VTBI^ACTIV^35.000^ml^STOP|B75C\r"),
        # §8 example 3, one poll period later: flag A -> ALARM asked at once
        (b"!INF|4961\r", b"!" + INF_ALARM.encode() + b"|DB9D\r"),
        (b"!ALARM|50B2\r", b"!ALARM^AL_OCCLU^OCCLUSION^|664D\r"),
    ]
    script = ExpectedExchange(pairs)
    host = AlarisHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    assert host.associated
    assert host.serial_number == "8002-51740"
    assert host.protocol_version == "Asena Rev 2.1.5"
    assert host.response_max_s == 4.0
    first = list(link.messages)
    assert [(m.channel, m.value) for m in first if isinstance(m, Reading)] == [
        (Channel.PUMP_RATE, 52.5),
        (Channel.VOLUME_INFUSED, 17.5),
        (Channel.VTBI, 17.5),  # programmed 35 mL, 17.5 mL in: 17.5 mL still to go
    ]
    # one PumpState once ALARM has answered, another when INF_VTBI adds the VTBI
    states = [m for m in first if isinstance(m, PumpState)]
    assert [s.vtbi_ml for s in states] == [None, 17.5]
    assert (states[-1].rate_ml_h, states[-1].volume_infused_ml) == (52.5, 17.5)
    assert states[-1].alarms == ()
    msgs = link.step(1.05)
    script.assert_done()
    (state,) = [m for m in msgs if isinstance(m, PumpState)]
    assert [(a.code, a.raw) for a in state.alarms] == [("occlusion", "AL_OCCLU")]
    assert "(interpreted)" in state.alarms[0].text
    assert state.state is PumpRunState.ALARM  # on hold with an alarm
    assert state.rate_ml_h == 0.0 and state.volume_infused_ml == 0.969
    assert state.infusion_id == 2  # the volume went down: another infusion


def test_host_waits_for_comms_response_max_before_resending() -> None:
    """§4/§11 pitfall 7: timeout = COMMS_RESPONSE_MAX + 0.5 s, then one resend."""
    pairs = [
        (b"!INST_SERIALNO|457D\r", b"!INST_SERIALNO^8002-51740|050B\r"),
        (frame("COMMS_RESPONSE_MAX"), frame("COMMS_RESPONSE_MAX^2000^ms")),
        (b"!COMMS_PROTOCOL|E8DA\r", b"!COMMS_PROTOCOL^Asena Rev 2.1.5|661A\r"),
        (b"!INF|4961\r", b""),  # no reply
        (b"!INF|4961\r", b"!" + INF_RUNNING.encode() + b"|29B3\r"),  # the one resend
        (b"!ALARM|50B2\r", b"!ALARM^AL_NOALM^ ^ |C73B\r"),
        (
            b"!INF_VTBI|8456\r",
            b"!INF_VTBI^DEACT^^^|" + b"%04X" % crc16(b"INF_VTBI^DEACT^^^") + b"\r",
        ),
    ]
    script = ExpectedExchange(pairs)
    host = AlarisHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    assert host.response_max_s == 2.0
    link.step(2.45)
    assert script.index == 4, "no resend before COMMS_RESPONSE_MAX + 0.5 s"
    msgs = link.step(0.1)
    script.assert_done()
    (state,) = [m for m in msgs if isinstance(m, PumpState)]
    assert state.vtbi_ml is None  # DEACT: no VTBI set
    assert not [m for m in msgs if isinstance(m, Reading) and m.channel is Channel.VTBI]


def test_bad_crc_and_foreign_replies_are_not_taken() -> None:
    """§6: a reply with a bad CRC is dropped (then the timeout resends); a reply naming
    another command is ignored."""
    pairs = [
        (b"!INST_SERIALNO|457D\r", b"!INST_SERIALNO^8002-51740|050C\r"),  # bad CRC
        (b"!INST_SERIALNO|457D\r", b"!COMMS_PROTOCOL^x|0000\r!ALARM^AL_NOALM^ ^ |C73B\r"),
    ]
    script = ExpectedExchange(pairs)
    host = AlarisHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    link.step(4.6)
    script.assert_done()
    assert host.codec.stats.errors["crc"] == 2
    assert host.link_events["unexpected_reply"] == 1
    assert host.serial_number is None and not host.associated


# -- host <-> simulated pump over MemoryLink -------------------------------------------------


def _link(pump: ProgrammedPump, **options: object) -> tuple[MemoryLink, AlarisPeer]:
    peer = AlarisPeer(pump, **options)  # type: ignore[arg-type]
    return MemoryLink(AlarisHost("pump"), peer), peer


def _assert_host_sent_only_queries(link: MemoryLink) -> None:
    codec = AlarisCodec()
    sent = codec.feed(bytes(link.host_sent))
    assert codec.stats.error_count == 0
    assert sent and all(host_may_send(f) for f in sent), [f for f in sent if not host_may_send(f)]
    assert {f.command for f in sent} <= READ_ONLY_QUERIES
    assert "REMOTE_CTRL" not in READ_ONLY_QUERIES
    assert b"\x1b" not in link.host_sent


def test_ketamine_infusion_to_completion() -> None:
    """0.5 mg/kg over 40 min for 70 kg at 1 mg/mL: 52.5 mL/h, 35 mL."""
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, _ = _link(pump)
    pump.start(link.now_us)
    link.connect()
    msgs = link.step(41 * 60)
    readings = [m for m in msgs if isinstance(m, Reading) and m.source == "pump"]
    rates = [r.value for r in readings if r.channel is Channel.PUMP_RATE]
    volumes = [r.value for r in readings if r.channel is Channel.VOLUME_INFUSED]
    vtbis = [r.value for r in readings if r.channel is Channel.VTBI]
    assert rates[0] == 52.5 and rates[-1] == 0.0
    assert volumes == sorted(volumes), "volume infused must be monotonic within an infusion"
    assert volumes[-1] == pytest.approx(35.0, abs=0.001)  # 3 decimals (§5.2)
    # VTBI is what is still to go (model.PumpState): the programmed 35 mL less what went in
    assert vtbis[0] == pytest.approx(35.0, abs=0.5)
    assert vtbis[-1] == 0.0
    assert vtbis == sorted(vtbis, reverse=True)
    assert 40 * 60 < len(volumes) <= 41 * 60 + 1
    states = [m for m in msgs if isinstance(m, PumpState)]
    assert any(s.state is PumpRunState.RUNNING and s.rate_ml_h == 52.5 for s in states)
    assert all(s.infusion_id == 1 for s in states)
    gaps = [b.t_us - a.t_us for a, b in itertools.pairwise(states)]
    assert max(gaps) <= 61_000_000, "a PumpState at least every 60 s"
    end = states[-1]
    assert end.state is PumpRunState.COMPLETE
    assert end.volume_infused_ml == pytest.approx(35.0, abs=0.001)
    assert [(a.code, a.raw) for a in end.alarms] == [("end", "AL_VTBIS")]
    _assert_host_sent_only_queries(link)


def test_occlusion_shows_within_one_poll_period() -> None:
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, _ = _link(pump)
    pump.start(link.now_us)
    link.connect()
    link.step(10)
    pump.raise_alarm(PumpAlarm("occlusion", "sim"), link.now_us)
    msgs = link.step(1.0)
    (state,) = [m for m in msgs if isinstance(m, PumpState)]
    assert [(a.code, a.raw) for a in state.alarms] == [("occlusion", "AL_OCCLU")]
    assert state.state is PumpRunState.ALARM
    _assert_host_sent_only_queries(link)


def test_alarm_change_under_a_raised_flag_is_seen_at_once() -> None:
    """The flag stays 'A' but f13 (event log id) changes: ALARM is asked at once (§7)."""
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, _ = _link(pump)
    pump.start(link.now_us)
    link.connect()
    link.step(3)
    pump.raise_alarm(PumpAlarm("near_end", "sim"), link.now_us)
    link.step(1.0)
    pump.raise_alarm(PumpAlarm("x", "AL_TITCA"), link.now_us)  # undocumented code
    pump.alarms = pump.alarms[::-1]
    msgs = link.step(1.0)
    (state,) = [m for m in msgs if isinstance(m, PumpState)]
    assert [(a.code, a.raw) for a in state.alarms] == [("unclassified", "AL_TITCA")]


def test_alarm_interpretation_table() -> None:
    # §5.4: interpreted codes carry the raw code and say so; others are unclassified
    occl = interpret_alarm(AlarmStatus("AL_OCCLU", "OCCLUSION", ""))
    assert occl == PumpAlarm(
        "occlusion", "AL_OCCLU", "Alaris AL_OCCLU OCCLUSION: occlusion (interpreted)", True
    )
    assert interpret_alarm(AlarmStatus("AL_NOALM", " ", " ")) is None
    for code in ("AL_LDSCN", "AL_TCITG", "AL_TITCA", "AL_TITNC", "AL_NEWONE"):
        alarm = interpret_alarm(AlarmStatus(code))
        assert alarm is not None and (alarm.code, alarm.raw) == ("unclassified", code)
    assert len(ALARM_INTERPRETATION) + 5 == 23  # the 23 codes of §5.4 (AL_NOALM aside)


def test_unknown_alarm_flag_is_unclassified() -> None:
    """§5.2 f2: values other than '-' and 'A' are UNCERTAIN -> unclassified, raw kept."""
    pairs = [
        (b"!INST_SERIALNO|457D\r", b"!INST_SERIALNO^8002-51740|050B\r"),
        (frame("COMMS_RESPONSE_MAX"), frame("COMMS_RESPONSE_MAX^4000^ms")),
        (b"!COMMS_PROTOCOL|E8DA\r", b"!COMMS_PROTOCOL^Asena Rev 2.1.5|661A\r"),
        (b"!INF|4961\r", frame(INF_RUNNING.replace("^-^", "^X^"))),
        (b"!ALARM|50B2\r", b"!ALARM^AL_NOALM^ ^ |C73B\r"),  # §7: flag seen -> ALARM
        (b"!INF_VTBI|8456\r", b"!INF_VTBI^ACTIV^35.000^ml^STOP|B75C\r"),
    ]
    script = ExpectedExchange(pairs)
    link = MemoryLink(AlarisHost("pump"), script)
    link.connect()
    script.assert_done()
    states = [m for m in link.messages if isinstance(m, PumpState)]
    assert states
    assert all([(a.code, a.raw) for a in s.alarms] == [("unclassified", "X")] for s in states)


def test_silent_pump_goes_stale_and_recovers() -> None:
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, peer = _link(pump)
    host = link.host
    pump.start(link.now_us)
    link.connect()
    link.step(5)
    peer.silent = True
    last = host.last_frame_us
    msgs = link.step(30)
    assert host.last_frame_us == last
    assert not [m for m in msgs if isinstance(m, Reading)]
    assert link.now_us - last > host.stale_after_s * 1e6
    peer.silent = False
    msgs = link.step(15)
    assert [m for m in msgs if isinstance(m, Reading)], "data must resume"
    assert host.associated
    _assert_host_sent_only_queries(link)


def test_disconnect_and_reconnect_reidentifies() -> None:
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, _ = _link(pump)
    pump.start(link.now_us)
    link.connect()
    link.step(5)
    link.disconnect()
    assert not link.host.associated
    assert not [m for m in link.step(5) if isinstance(m, Reading)]
    sent_before = len(link.host_sent)
    link.connect()
    assert link.host_sent[sent_before:].startswith(b"!INST_SERIALNO|457D\r")
    msgs = link.step(3)
    vols = [m.value for m in msgs if isinstance(m, Reading) and m.channel is Channel.VOLUME_INFUSED]
    assert vols and vols[0] > 0.1
    assert link.host.associated


def test_volume_reset_starts_a_new_infusion() -> None:
    first = ProgrammedPump(rate_ml_h=100.0, vtbi_ml=50)
    link, peer = _link(first)
    first.start(link.now_us)
    link.connect()
    link.step(30)
    second = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    second.start(link.now_us)
    peer.feed = second
    msgs = link.step(3)
    states = [m for m in msgs if isinstance(m, PumpState)]
    assert states and states[-1].infusion_id == 2


def test_simulated_pump_remote_control_needs_the_security_code() -> None:
    """§5.3 (simulator only): REMOTE_CTRL^ENABLED^<CRC of serial>, then INF_RATE sets."""
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    peer = AlarisPeer(pump, serial_number="8002-51740")
    codec = AlarisCodec()
    peer.connection_made(0)

    def ask(body: str) -> list[AlarisFrame]:
        peer.data_received(frame(body), 0)
        return codec.feed(peer.take_outgoing())

    assert ask("INF_RATE^10^ml/h") == []  # not enabled: no reply
    assert ask("REMOTE_CTRL^ENABLED^0000") == []
    assert ask("REMOTE_CTRL^ENABLED^3CC1") == [
        AlarisFrame("REMOTE_CTRL", ("ENABLED", "****", "PERMIT", "0", "ms"))
    ]
    assert ask("INF_RATE^0.1^ml/h") == [AlarisFrame("INF_RATE", ("0.10", "ml/h"))]  # §5.3
    assert pump.rate_ml_h == 0.1
    assert ask("INF_BOGUS") == []  # §8 example 4: unknown command, no reply
    assert ask("REMQUERY^DEACT") == [AlarisFrame("REMQUERY", ("DEACT", "", "", "", ""))]
    peer.data_received(b"!INF|4962\r", 0)  # bad CRC: no reply
    assert peer.take_outgoing() == b""


def test_registry_and_serial_settings() -> None:
    assert ALARIS.codec_class() is AlarisCodec
    assert ALARIS.host_class() is AlarisHost
    assert ALARIS.peer_class() is AlarisPeer
    assert (SERIAL.baudrate, SERIAL.bytesize, SERIAL.parity, SERIAL.stopbits) == (38400, 8, "N", 1)
    assert AlarisHost.serial_settings == AlarisPeer.serial_settings == SERIAL
    assert AlarisCodec.document == ALARIS.document
