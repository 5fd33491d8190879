"""New Era NE-1000 family (shared/protocols/newera-ne1000.md): codec, read-only host and
simulated bench pump, through the real code on an in-memory link with a simulated clock.
Every byte the host sends is checked to be an allowed query."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapmonitor.drivers.codecs.base import Role
from kapmonitor.drivers.codecs.newera import (
    CRC_INIT,
    MAX_DATA,
    NewEraCodec,
    NewEraCommand,
    NewEraReply,
    crc16,
)
from kapmonitor.drivers.devices.newera import (
    HOST_QUERIES,
    NewEraHost,
    is_allowed_host_command,
    parse_number,
    pump_alarm,
)
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.peers.newera import NewEraPeer, format_number
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import Channel, PumpAlarm, PumpRunState, PumpState, Quality, Reading

HYP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ne_safe_packet(text: str) -> bytes:
    """§4's reference packet builder, copied from the document."""
    data = text.encode("ascii")
    crc = binascii.crc_hqx(data, 0)
    return bytes([0x02, len(data) + 4]) + data + crc.to_bytes(2, "big") + b"\x03"


def _basic_reply(text: str) -> bytes:
    return b"\x02" + text.encode() + b"\x03"


# --- bytes copied from the document (§7) ---------------------------------------------------

# §7.1 Basic-mode telemetry poll
POLL_STATUS = bytes.fromhex("30 0d")
REPLY_INFUSING = bytes.fromhex("02 30 30 49 03")
POLL_RAT = bytes.fromhex("30 52 41 54 0d")
REPLY_RAT = bytes.fromhex("02 30 30 49 35 32 2e 35 30 4d 48 03")
POLL_DIS = bytes.fromhex("30 44 49 53 0d")
REPLY_DIS = bytes.fromhex("02 30 30 49 49 31 37 2e 35 30 57 30 2e 30 30 30 4d 4c 03")
POLL_VOL = bytes.fromhex("30 56 4f 4c 0d")
REPLY_VOL = bytes.fromhex("02 30 30 49 33 35 2e 30 30 4d 4c 03")
# §7.2 alarm (motor stall)
REPLY_STALL = bytes.fromhex("02 30 30 41 3f 53 03")
REPLY_DIS_STOPPED = bytes.fromhex("02 30 30 53 49 32 30 2e 31 33 57 30 2e 30 30 30 4d 4c 03")
# §7.3 errors
CMD_XYZ = bytes.fromhex("30 58 59 5a 0d")
REPLY_UNKNOWN = bytes.fromhex("02 30 30 53 3f 03")
CMD_RAT_9999 = bytes.fromhex("30 52 41 54 39 39 39 39 4d 48 0d")
REPLY_OOR = bytes.fromhex("02 30 30 49 3f 4f 4f 52 03")
# §7.4 Safe mode packets
SAFE_SAF0 = bytes.fromhex("02 08 53 41 46 30 55 43 03")
SAFE_STATUS = bytes.fromhex("02 05 30 36 53 03")
SAFE_STOPPED = bytes.fromhex("02 07 30 30 53 aa a6 03")
SAFE_DIS = bytes.fromhex("02 08 30 44 49 53 30 46 03")
SAFE_DIS_REPLY = bytes.fromhex("02 15 30 30 49 49 31 37 2e 35 30 57 30 2e 30 30 30 4d 4c e5 d5 03")
SAFE_AUTO_STALL = bytes.fromhex("02 09 30 30 41 3f 53 75 a7 03")
SAFE_COM = bytes.fromhex("02 0b 30 30 53 3f 43 4f 4d b5 80 03")
SAFE_SAF10 = bytes.fromhex("02 0a 30 53 41 46 31 30 63 be 03")
SAFE_CRC_ETX = bytes.fromhex("02 14 30 30 53 49 31 2e 34 36 57 30 2e 30 30 30 4d 4c 38 03 03")


def _readings(msgs: list[object]) -> list[Reading]:
    return [m for m in msgs if isinstance(m, Reading)]


def _states(msgs: list[object]) -> list[PumpState]:
    return [m for m in msgs if isinstance(m, PumpState)]


def _last(msgs: list[object], ch: Channel) -> Reading:
    return [r for r in _readings(msgs) if r.channel is ch][-1]


def _host_commands(link: MemoryLink) -> list[object]:
    """Everything the host sent, decoded as the pump decodes it; all of it must parse."""
    dev = NewEraCodec(Role.DEVICE)
    cmds = dev.feed(bytes(link.host_sent))
    assert dev.stats.error_count == 0 and dev.pending == 0
    return cmds


# --- §4 and §7 examples --------------------------------------------------------------------


def test_crc_check_values_section_4() -> None:
    assert CRC_INIT == 0
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"SAF0") == 0x5543
    assert ne_safe_packet("SAF0") == SAFE_SAF0


def test_basic_poll_section_7_1() -> None:
    dev = NewEraCodec(Role.DEVICE)
    assert dev.feed(POLL_STATUS + POLL_RAT + POLL_DIS + POLL_VOL) == [
        NewEraCommand("", "", 0),
        NewEraCommand("RAT", "", 0),
        NewEraCommand("DIS", "", 0),
        NewEraCommand("VOL", "", 0),
    ]
    host = NewEraCodec(Role.HOST)
    assert host.feed(REPLY_INFUSING + REPLY_RAT + REPLY_DIS + REPLY_VOL) == [
        NewEraReply(0, "I"),
        NewEraReply(0, "I", "52.50MH"),
        NewEraReply(0, "I", "I17.50W0.000ML"),  # the doubled I: status, then data (§8.5)
        NewEraReply(0, "I", "35.00ML"),
    ]
    for cmd, raw in ((NewEraCommand("RAT"), POLL_RAT), (NewEraReply(0, "I", "52.50MH"), REPLY_RAT)):
        assert NewEraCodec().encode(cmd) == raw
    assert parse_number("17.50") == (17.5, pytest.approx(0.01))


def test_alarm_and_errors_sections_7_2_7_3() -> None:
    host = NewEraCodec()
    stall, stopped, unknown, oor = host.feed(
        REPLY_STALL + REPLY_DIS_STOPPED + REPLY_UNKNOWN + REPLY_OOR
    )
    assert stall == NewEraReply(0, "A", "", "S")
    assert pump_alarm(stall.alarm or "") == PumpAlarm(
        "occlusion", "A?S", "motor stalled (obstruction, or pusher at the end of its travel)"
    )
    assert stopped == NewEraReply(0, "S", "I20.13W0.000ML")
    assert unknown.error == "?" and unknown.status == "S"
    assert oor.error == "?OOR" and oor.status == "I"
    dev = NewEraCodec(Role.DEVICE)
    assert dev.feed(CMD_XYZ + CMD_RAT_9999) == [
        NewEraCommand("XYZ", "", 0),
        NewEraCommand("RAT", "9999MH", 0),
    ]
    assert pump_alarm("Q") == PumpAlarm(
        "unclassified", "A?Q", "alarm letter not in the protocol document"
    )


def test_pump_normalises_commands_section_3_1() -> None:
    dev = NewEraCodec(Role.DEVICE)
    assert dev.feed(b"0 rat 52.5 mh\r") == [NewEraCommand("RAT", "52.5MH", 0)]
    assert dev.feed(b"*RUN\r") == [NewEraCommand("RUN", "", None, system=True)]
    assert dev.feed(b"DIRINF\r") == [NewEraCommand("DIR", "INF", None)]


def test_safe_packets_section_7_4() -> None:
    dev = NewEraCodec(Role.DEVICE)
    cmds = [
        (SAFE_SAF0, NewEraCommand("SAF", "0", None, safe=True)),
        (SAFE_STATUS, NewEraCommand("", "", 0, safe=True)),
        (SAFE_DIS, NewEraCommand("DIS", "", 0, safe=True)),
        (SAFE_SAF10, NewEraCommand("SAF", "10", 0, safe=True)),
    ]
    for raw, msg in cmds:
        assert dev.feed(raw) == [msg]
        assert dev.encode(msg) == raw
    host = NewEraCodec()
    replies = [
        (SAFE_STOPPED, NewEraReply(0, "S", safe=True)),
        (SAFE_DIS_REPLY, NewEraReply(0, "I", "I17.50W0.000ML", safe=True)),
        (SAFE_AUTO_STALL, NewEraReply(0, "A", "", "S", safe=True)),
        (SAFE_COM, NewEraReply(0, "S", "?COM", safe=True)),
        (SAFE_CRC_ETX, NewEraReply(0, "S", "I1.46W0.000ML", safe=True)),
    ]
    for raw, msg in replies:
        assert host.feed(raw) == [msg]
        assert host.encode(msg) == raw
    assert SAFE_CRC_ETX[-3:] == b"\x38\x03\x03"  # CRC low byte = ETX: read by LEN (§8.7)
    assert host.stats.error_count == dev.stats.error_count == 0


def test_bad_crc_is_counted_and_skipped() -> None:
    host = NewEraCodec()
    bad = bytearray(SAFE_DIS_REPLY)
    bad[5] ^= 0x04
    assert host.feed(bytes(bad) + SAFE_STOPPED) == [NewEraReply(0, "S", safe=True)]
    assert host.stats.errors["crc"] == 1


# --- hypothesis: round trip, pieces, corruption ---------------------------------------------

_NUMBER = st.builds(format_number, st.floats(0, 9999, allow_nan=False))
_PARAMS = st.one_of(
    st.just(""),
    st.tuples(_NUMBER, st.sampled_from(["", "UM", "MM", "UH", "MH", "UL", "ML"])).map("".join),
    st.sampled_from(["INF", "WDR", "REV", "UL", "ML"]),
    st.integers(0, 255).map(str),
)
_COMMAND = st.builds(
    NewEraCommand,
    st.sampled_from(
        ["", "RAT", "VOL", "DIS", "DIR", "DIA", "VER", "SAF", "RUN", "STP", "PUR", "CLD"]
    ),
    _PARAMS,
    st.none() | st.integers(0, 99),
    st.booleans(),
    st.booleans(),
).filter(
    lambda c: (
        not (c.command == "" and c.params)
        and (c.text() or not c.safe)
        and not (c.address is None and not c.command and not c.system and c.safe)
    )
)
_DATA = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=MAX_DATA - 4)


@st.composite
def _reply(draw: st.DrawFn) -> NewEraReply:
    address = draw(st.integers(0, 99))
    safe = draw(st.booleans())
    status = draw(st.sampled_from([*"IWSPTUXA", "Q"]))
    if status != "A":
        return NewEraReply(address, status, draw(_DATA), None, safe)
    alarm = draw(st.sampled_from(list("RSTEOZ")))
    return NewEraReply(address, status, draw(_DATA), alarm, safe)


@HYP
@given(msgs=st.lists(_reply(), min_size=1, max_size=20), data=st.data())
def test_replies_round_trip_and_pieces(msgs: list[NewEraReply], data: st.DataObject) -> None:
    enc = NewEraCodec()
    for m in msgs:
        assert NewEraCodec().feed(enc.encode(m)) == [m]
    stream = b"".join(enc.encode(m) for m in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    dec = NewEraCodec()
    assert feed_in_pieces(dec, stream, cuts) == msgs
    assert dec.stats.error_count == 0


@HYP
@given(msgs=st.lists(_COMMAND, min_size=1, max_size=20), data=st.data())
def test_commands_round_trip_and_pieces(msgs: list[NewEraCommand], data: st.DataObject) -> None:
    enc = NewEraCodec(Role.DEVICE)
    for m in msgs:
        assert NewEraCodec(Role.DEVICE).feed(enc.encode(m)) == [m]
    stream = b"".join(enc.encode(m) for m in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    dec = NewEraCodec(Role.DEVICE)
    assert feed_in_pieces(dec, stream, cuts) == msgs
    assert dec.stats.error_count == 0


def _is_subsequence(needle: list[object], haystack: list[object]) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(out)


@HYP
@given(safe=st.booleans(), data=st.data())
def test_corruption_recovers_every_valid_reply(safe: bool, data: st.DataObject) -> None:
    """Garbage, truncated packets and bit flips between valid replies, decoded in the
    pump's mode as the host does: every valid reply still comes out, in order, and nothing
    raises. Extra replies are allowed (a flipped
    Basic reply is still a well-formed reply: Basic mode has no checksum, §3.1); every
    damage in Safe mode, and garbage and truncation in both modes, are counted."""
    enc = NewEraCodec()
    replies = st.lists(
        _reply().map(lambda r: NewEraReply(r.address, r.status, r.data, r.alarm, safe)),
        min_size=1,
        max_size=4,
    )
    garbage = st.binary(min_size=1, max_size=40).filter(lambda g: g[0] != 0x02)
    cut = st.tuples(_reply(), st.integers(1, 100)).map(
        lambda t: enc.encode(t[0])[: max(1, t[1] % len(enc.encode(t[0])))]
    )
    flip = st.tuples(_reply(), st.integers(0, 10_000)).map(lambda t: _flip(enc.encode(t[0]), t[1]))
    stream = b""
    valid: list[NewEraReply] = []
    counted = False
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["garbage", "cut", "flip"]))
        bad = data.draw({"garbage": garbage, "cut": cut, "flip": flip}[kind])
        good = data.draw(replies)
        counted |= kind != "flip" or safe
        stream += bad + b"".join(enc.encode(r) for r in good)
        valid += good
    # A cut Safe packet's LEN makes the parser wait for bytes that only later traffic
    # brings (live, the host's retry): end with more than one maximal packet of replies.
    tail = [NewEraReply(0, "I", "52.50MH", None, safe)] * 8
    stream += b"".join(enc.encode(r) for r in tail)
    valid += tail
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    dec = NewEraCodec(mode="safe" if safe else "basic")  # as the host builds it
    got = [m for m in feed_in_pieces(dec, stream, cuts) if isinstance(m, NewEraReply)]
    assert _is_subsequence(valid, got)
    if counted:
        assert dec.stats.error_count >= 1


def test_either_framing_resynchronises_once_bytes_follow() -> None:
    """With both framings allowed (a capture of unknown mode), a flipped address digit
    looks like a Safe LEN: the parser waits for LEN bytes, then fails the CRC and resyncs
    one byte after the STX, so the replies it swallowed are still found."""
    dec = NewEraCodec()
    flipped = bytes.fromhex("02 20 30 49 03")  # REPLY_INFUSING with 0x30 -> 0x20 (= LEN 32)
    assert dec.feed(flipped + REPLY_INFUSING) == []  # waiting for 1 + 32 bytes
    assert dec.feed(REPLY_RAT * 3) == [NewEraReply(0, "I")] + [NewEraReply(0, "I", "52.50MH")] * 3
    assert dec.stats.error_count >= 1
    assert NewEraCodec(mode="basic").feed(flipped + REPLY_INFUSING)[-1] == NewEraReply(0, "I")


@settings(max_examples=100, deadline=None)
@given(
    junk=st.binary(max_size=300),
    role=st.sampled_from([Role.HOST, Role.DEVICE]),
    mode=st.sampled_from([None, "basic", "safe"]),
)
def test_any_bytes_never_raise(junk: bytes, role: Role, mode: str | None) -> None:
    c = NewEraCodec(role, mode=mode)  # type: ignore[arg-type]
    c.feed(junk)
    c.feed(junk[::-1])
    assert c.stats.bytes_in == 2 * len(junk) and "internal" not in c.stats.errors


# --- expected-bytes tables -----------------------------------------------------------------

VER_REPLY = _basic_reply("00SNE1000V3.928")  # §5: "VER -> e.g. NE1000V3.928"
POLL_VER = b"0VER\r"


def _run_table(host: NewEraHost, pairs: list[tuple[bytes, bytes]], seconds: float) -> MemoryLink:
    dev = ExpectedExchange(pairs)
    link = MemoryLink(host, dev)
    link.connect()
    link.step(seconds)
    dev.assert_done()
    assert all(is_allowed_host_command(c) for c in _host_commands(link))
    return link


def test_table_connect_and_two_poll_cycles_section_7_1() -> None:
    host = NewEraHost("pump")
    pairs = [
        (POLL_VER, VER_REPLY),
        (POLL_STATUS, REPLY_INFUSING),
        (POLL_RAT, REPLY_RAT),
        (POLL_DIS, REPLY_DIS),
        (POLL_VOL, REPLY_VOL),
        # one second later: status, RAT, DIS (VOL only every few seconds, §6)
        (POLL_STATUS, REPLY_INFUSING),
        (POLL_RAT, REPLY_RAT),
        (POLL_DIS, REPLY_DIS),
    ]
    link = _run_table(host, pairs, 1.5)
    assert host.version == "NE1000V3.928" and host.associated
    msgs = link.messages
    assert _last(msgs, Channel.PUMP_RATE).value == 52.5
    assert _last(msgs, Channel.VOLUME_INFUSED).value == 17.5
    assert _last(msgs, Channel.VTBI).value == 17.5
    assert {r.quality for r in _readings(msgs)} == {Quality.OK}
    assert {r.source for r in _readings(msgs)} == {"pump"}
    st_ = _states(msgs)[-1]
    assert (st_.state, st_.rate_ml_h, st_.volume_infused_ml, st_.vtbi_ml, st_.alarms) == (
        PumpRunState.RUNNING,
        52.5,
        17.5,
        17.5,
        (),
    )
    # first cycle at connect, second one poll period later
    times = sorted({r.t_us for r in _readings(msgs)})
    assert times[1] - times[0] == 1_000_000


def test_table_stall_is_latched_section_7_2() -> None:
    host = NewEraHost("pump")
    pairs = [
        (POLL_VER, VER_REPLY),
        (POLL_STATUS, REPLY_STALL),
        (POLL_RAT, _basic_reply("00S52.50MH")),
        (POLL_DIS, REPLY_DIS_STOPPED),
        (POLL_VOL, _basic_reply("00S35.00ML")),
    ]
    link = _run_table(host, pairs, 0.5)
    states = _states(link.messages)
    assert states and all(s.state is PumpRunState.ALARM for s in states)
    assert states[-1].alarms == (pump_alarm("S"),)
    assert states[-1].alarms[0].code == "occlusion"
    assert states[-1].rate_ml_h == 0.0 and states[-1].volume_infused_ml == 20.13
    assert _last(link.messages, Channel.PUMP_RATE).value == 0.0


def test_table_safe_mode_section_7_4() -> None:
    host = NewEraHost("pump", safe_mode=True)
    pairs = [
        (ne_safe_packet("0VER"), ne_safe_packet("00SNE1000V3.928")),
        (ne_safe_packet("0SAF"), ne_safe_packet("00S10")),
        (SAFE_STATUS, ne_safe_packet("00I")),
        (ne_safe_packet("0RAT"), ne_safe_packet("00I52.50MH")),
        (SAFE_DIS, SAFE_DIS_REPLY),
        (ne_safe_packet("0VOL"), ne_safe_packet("00I35.00ML")),
        # the watchdog is 10 s, so polls stay at 1 s (<= SAF/2, §6)
        (SAFE_STATUS, SAFE_STOPPED),
        (ne_safe_packet("0RAT"), ne_safe_packet("00S52.50MH")),
        (SAFE_DIS, ne_safe_packet("00SI17.50W0.000ML")),
    ]
    link = _run_table(host, pairs, 1.2)
    assert host.watchdog_s == 10
    assert _last(link.messages, Channel.VOLUME_INFUSED).value == 17.5
    assert _last(link.messages, Channel.VTBI).value == 17.5
    assert _states(link.messages)[-1].state is PumpRunState.STOPPED


def test_table_short_watchdog_speeds_polling_up() -> None:
    host = NewEraHost("pump", safe_mode=True)
    cycle = [
        (SAFE_STATUS, SAFE_STOPPED),
        (ne_safe_packet("0RAT"), ne_safe_packet("00S1.000MH")),
        (SAFE_DIS, SAFE_DIS_REPLY),
    ]
    pairs = [
        (ne_safe_packet("0VER"), ne_safe_packet("00SNE1000V3.928")),
        (ne_safe_packet("0SAF"), ne_safe_packet("00S1")),
        *cycle[:3],
        (ne_safe_packet("0VOL"), ne_safe_packet("00S0ML")),
        *cycle,
        *cycle,  # at 0.5 s and 1.0 s: half the 1 s watchdog
    ]
    link = _run_table(host, pairs, 1.2)
    assert _states(link.messages)[-1].vtbi_ml is None  # VOL 0: continuous, no target


def test_table_timeout_retry_and_com_error() -> None:
    host = NewEraHost("pump")
    pairs = [
        (POLL_VER, b""),  # lost: resent after 1 s (§6 one retry)
        (POLL_VER, VER_REPLY),
        (POLL_STATUS, _basic_reply("00S?COM")),  # garbled on the way: one retry
        (POLL_STATUS, REPLY_INFUSING),
        (POLL_RAT, REPLY_RAT),
        (POLL_DIS, REPLY_DIS),
        (POLL_VOL, REPLY_VOL),
    ]
    link = _run_table(host, pairs, 1.5)
    assert host.error_replies == {"?COM": 1}
    assert _last(link.messages, Channel.PUMP_RATE).value == 52.5


def test_table_purge_and_withdraw_mapping() -> None:
    host = NewEraHost("pump")
    pairs = [
        (POLL_VER, VER_REPLY),
        (POLL_STATUS, _basic_reply("00X")),
        (POLL_RAT, _basic_reply("00X52.50MH")),
        (POLL_DIS, _basic_reply("00XI1.000W0.000ML")),
        (POLL_VOL, _basic_reply("00X0ML")),
        (POLL_STATUS, _basic_reply("00W")),
        (POLL_RAT, _basic_reply("00W100.0UH")),
        (POLL_DIS, _basic_reply("00WI1.500W0.200ML")),
    ]
    link = _run_table(host, pairs, 1.5)
    t0 = link.messages[0].t_us
    bolus = [s for s in _states(link.messages) if s.t_us == t0][-1]
    withdrawing = [s for s in _states(link.messages) if s.t_us == t0 + 1_000_000][-1]
    assert bolus.state is PumpRunState.BOLUS and bolus.rate_ml_h is None
    assert withdrawing.state is PumpRunState.RUNNING
    assert withdrawing.quality == Quality.QUESTIONABLE and withdrawing.rate_ml_h == 0.1
    rate = _last(link.messages, Channel.PUMP_RATE)
    assert rate.value == 0.1 and rate.quality == Quality.QUESTIONABLE
    assert len([r for r in _readings(link.messages) if r.channel is Channel.PUMP_RATE]) == 1


# --- host <-> simulated bench pump ----------------------------------------------------------


def _pump_link(
    feed: ProgrammedPump | None = None,
    *,
    start: bool = True,
    safe: bool = False,
    **peer_options: object,
) -> tuple[MemoryLink, ProgrammedPump, NewEraPeer]:
    feed = feed or ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    peer = NewEraPeer(feed, safe_mode=safe, **peer_options)  # type: ignore[arg-type]
    link = MemoryLink(NewEraHost("pump", safe_mode=safe), peer)
    if start:
        feed.start(link.now_us)
    link.connect()
    return link, feed, peer


@pytest.mark.parametrize("safe", [False, True])
def test_ketamine_programme_runs_to_completion(safe: bool) -> None:
    """0.5 mg/kg over 40 min for 70 kg at 1 mg/mL: 52.5 mL/h, 35 mL (brief, §7)."""
    link, _, _ = _pump_link(safe=safe, watchdog_s=10 if safe else 0)
    msgs = link.step(20 * 60)
    assert _last(msgs, Channel.PUMP_RATE).value == 52.5
    assert _last(msgs, Channel.VOLUME_INFUSED).value == pytest.approx(17.5, abs=0.01)
    assert _states(msgs)[-1].state is PumpRunState.RUNNING
    msgs = link.step(20 * 60 + 5)
    infused = [r.value for r in _readings(msgs) if r.channel is Channel.VOLUME_INFUSED]
    assert infused == sorted(infused)  # monotonic within the infusion
    assert infused[-1] == 35.0  # "35.00ML": exact at the document's resolution
    final = _states(msgs)[-1]
    assert final.state is PumpRunState.COMPLETE
    assert (final.rate_ml_h, final.vtbi_ml, final.infusion_id, final.alarms) == (0.0, 0.0, 1, ())
    assert _last(msgs, Channel.VTBI).value == 0.0
    cmds = _host_commands(link)
    assert cmds and all(is_allowed_host_command(c) for c in cmds)
    assert {c.command for c in cmds} <= HOST_QUERIES
    assert all(c.safe is safe for c in cmds)


def test_occlusion_becomes_an_alarm_within_one_poll() -> None:
    link, feed, _ = _pump_link()
    link.step(600)
    t_alarm = link.now_us
    feed.raise_alarm(PumpAlarm("occlusion", "A?S"), t_alarm)
    msgs = link.step(3)
    alarmed = [s for s in _states(msgs) if s.alarms]
    assert alarmed and alarmed[0].t_us - t_alarm <= 1_000_000
    assert alarmed[0].state is PumpRunState.ALARM
    assert alarmed[0].alarms[0].code == "occlusion" and alarmed[0].alarms[0].raw == "A?S"
    # the pump forgot the alarm once reported (§5.2); the host keeps it latched
    assert _states(msgs)[-1].alarms == alarmed[0].alarms
    assert _last(msgs, Channel.PUMP_RATE).value == 0.0
    assert all(is_allowed_host_command(c) for c in _host_commands(link))


def test_unknown_alarm_letter_is_unclassified_and_kept() -> None:
    link, feed, _ = _pump_link()
    link.step(5)
    feed.raise_alarm(PumpAlarm("mystery", "A?Z"), link.now_us)
    (alarm,) = _states(link.step(2))[-1].alarms
    assert (alarm.code, alarm.raw) == ("unclassified", "A?Z")


def test_microlitre_units_are_converted() -> None:
    feed = ProgrammedPump(rate_ml_h=0.5, vtbi_ml=2.0)
    link, _, _ = _pump_link(feed, rate_units="UH", volume_units="UL")
    msgs = link.step(1800.5)
    assert _last(msgs, Channel.PUMP_RATE).value == pytest.approx(0.5)
    assert _last(msgs, Channel.VOLUME_INFUSED).value == pytest.approx(0.25, abs=1e-4)
    assert _last(msgs, Channel.VTBI).value == pytest.approx(1.75, abs=1e-4)


def test_bench_commands_drive_the_pump_and_new_infusions() -> None:
    """A bench script (not the host) programs the simulated pump (§5 control commands);
    the host follows it and counts a restart from stopped as a new infusion (§8.3)."""
    link, _, peer = _pump_link(start=False)
    replies = NewEraCodec()

    def command(text: str) -> NewEraReply:
        peer.data_received(text.encode() + b"\r", link.now_us)
        (reply,) = replies.feed(peer.take_outgoing())
        return reply

    link.step(2)
    assert _states(link.messages)[-1].state is PumpRunState.STOPPED
    assert command("0RAT9999MH").error == "?OOR"  # §7.3
    assert command("0XYZ").error == "?"
    assert command("0RAT60MH") == NewEraReply(0, "S")  # a successful set: status only (§5.3)
    assert command("0VOL2") == NewEraReply(0, "S")
    assert command("0RUN") == NewEraReply(0, "I")
    msgs = link.step(60)
    assert _last(msgs, Channel.PUMP_RATE).value == 60.0
    assert _last(msgs, Channel.VOLUME_INFUSED).value == pytest.approx(1.0, abs=0.02)
    assert command("0STP").status == "P"  # first STP pauses (§8.9)
    assert _states(link.step(2))[-1].state is PumpRunState.PAUSED
    assert command("0STP").status == "S"  # the second stops the program
    assert _states(link.step(2))[-1].state is PumpRunState.STOPPED
    first_id = _states(link.messages)[-1].infusion_id
    assert command("0RUN").status == "I"  # restart: a new run with the VOL target again
    msgs = link.step(180)
    final = _states(msgs)[-1]
    assert final.infusion_id == first_id + 1
    assert final.state is PumpRunState.COMPLETE
    assert final.volume_infused_ml == pytest.approx(2.0, abs=0.01)
    assert command("0DIS").data.startswith("I3.0")  # DIS keeps counting across runs
    # none of those control commands came from the host
    assert all(is_allowed_host_command(c) for c in _host_commands(link))


def test_bench_pump_safe_mode_rules_section_3_2() -> None:
    peer = NewEraPeer(ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0))
    replies = NewEraCodec()
    peer.connection_made(0)
    peer.data_received(SAFE_SAF10, 0)  # §7.4: Safe mode enabled by a Safe packet
    assert replies.feed(peer.take_outgoing()) == [NewEraReply(0, "S", safe=True)]
    assert peer.safe_mode and peer.watchdog_s == 10
    peer.data_received(POLL_STATUS, 1)  # Basic commands are ignored in Safe mode (§8.6)
    assert peer.take_outgoing() == b""
    bad = bytearray(SAFE_STATUS)
    bad[2] ^= 0x01
    peer.data_received(bytes(bad), 2)
    assert peer.take_outgoing() == SAFE_COM  # §5.3, §7.4 bad-packet reply
    peer.data_received(SAFE_STATUS, 3)
    assert peer.take_outgoing() == SAFE_STOPPED
    peer.data_received(SAFE_SAF0, 4)  # §4: back to Basic mode
    assert peer.take_outgoing() == SAFE_STOPPED and not peer.safe_mode
    peer.data_received(POLL_STATUS, 5)
    assert peer.take_outgoing() == _basic_reply("00S")


def test_silent_pump_goes_stale_and_host_reassociates() -> None:
    link, _, peer = _pump_link()
    link.step(3)
    host = link.host
    assert isinstance(host, NewEraHost)
    last = host.last_frame_us
    peer.silent = True
    msgs = link.step(12)
    assert _readings(msgs) == [] and host.last_frame_us == last
    assert link.now_us - last > host.stale_after_s * 1e6
    assert not host.associated
    # never faster than one command per reply timeout while nothing answers
    sent = _host_commands(link)
    peer.silent = False
    msgs = link.step(5)
    assert host.associated and _readings(msgs)
    assert [c.command for c in _host_commands(link)[len(sent) :]][:1] == ["VER"]


def test_disconnect_reconnect_reassociates_and_keeps_the_infusion() -> None:
    link, _, _ = _pump_link()
    link.step(30)
    link.disconnect()
    link.step(10)
    link.connect()
    msgs = link.step(5)
    cmds = [c.command for c in _host_commands(link)]
    assert cmds.count("VER") == 2
    final = _states(msgs)[-1]
    assert final.state is PumpRunState.RUNNING and final.infusion_id == 1
    assert final.volume_infused_ml == pytest.approx(52.5 * 45 / 3600, abs=0.01)


def test_power_up_alarm_and_safe_watchdog() -> None:
    link, _, _ = _pump_link(safe=True, watchdog_s=2, power_up_alarm=True)
    msgs = link.step(3)
    power = [s for s in _states(msgs) if s.alarms]
    assert power and power[0].alarms[0].code == "power_interrupted"
    # polls at SAF/2 keep the watchdog fed: no T alarm while the link is up
    msgs = link.step(30)
    assert all(a.code != "comms_watchdog" for s in _states(msgs) for a in s.alarms)
    link.disconnect()
    link.step(5)  # the pump hears nothing: watchdog alarm T, pump stopped
    link.connect()
    msgs = link.step(2)
    codes = {a.code for s in _states(msgs) for a in s.alarms}
    assert "comms_watchdog" in codes
    assert _states(msgs)[-1].state is PumpRunState.ALARM
    assert all(is_allowed_host_command(c) for c in _host_commands(link))


def test_host_refuses_to_build_a_control_command() -> None:
    host = NewEraHost("pump")
    with pytest.raises(AssertionError, match="non-query"):
        host._transmit("RUN", 0, retried=False)  # the guard itself
    assert not is_allowed_host_command(NewEraCommand("RAT", "52.5"))
    assert not is_allowed_host_command(NewEraCommand("", "", None, system=True))
    assert is_allowed_host_command(NewEraCommand("DIS"))


def test_pump_model_near_end_notice_does_not_stop_the_programme() -> None:
    """The simulator's pump model raises a low-priority "near end" notice 5 min before the
    end; an NE-1000 has no such alarm and must run on to its VOL target."""
    from kapmonitor.drivers.devices.newera import NewEraHost
    from kapmonitor.drivers.sim.peers.newera import NewEraPeer
    from kapmonitor.drivers.sim.pump_model import PumpModel
    from kapmonitor.drivers.testing import MemoryLink
    from kapmonitor.model import PumpRunState, PumpState

    link = MemoryLink(NewEraHost("pump"), NewEraPeer(PumpModel(rate_ml_h=52.5, vtbi_ml=35.0,
                                                               start_us=0)))
    link.peer.feed.start_us = link.now_us
    link.connect()
    link.peer.feed.start(link.now_us)
    msgs = link.step(41 * 60)
    states = [m for m in msgs if isinstance(m, PumpState)]
    assert max(s.volume_infused_ml or 0 for s in states) == pytest.approx(35.0, abs=0.01)
    assert states[-1].state is PumpRunState.COMPLETE
    assert not any(s.alarms for s in states)
