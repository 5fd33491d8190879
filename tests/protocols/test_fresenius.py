"""Fresenius Base Primea: codec, host and simulated base against
shared/protocols/fresenius-base-primea.md (section numbers in the comments)."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapmonitor.drivers.codecs.fresenius import (
    Ack,
    Command,
    Dc4,
    Enq,
    FreseniusCodec,
    FreseniusMessage,
    Item,
    Nak,
    Reply,
    checksum,
    hex_value,
)
from kapmonitor.drivers.devices.fresenius import (
    ALLOWED_COMMANDS,
    SERIAL,
    FreseniusHost,
    host_may_send,
    module_source,
)
from kapmonitor.drivers.registry import FRESENIUS
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.peers.fresenius import FreseniusPeer
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import (
    Channel,
    DeviceState,
    DeviceStatus,
    PumpAlarm,
    PumpRunState,
    PumpState,
    Reading,
)

STX, ETX = b"\x02", b"\x03"


def frame(text: bytes) -> bytes:
    """The document's own frame builder (§3.1 ``fres_frame``), independent of the codec."""
    return STX + text + b"%02X" % (0xFF - (sum(text) & 0xFF)) + ETX


def decode_all(data: bytes) -> tuple[list[FreseniusMessage], FreseniusCodec]:
    codec = FreseniusCodec()
    return codec.feed(data), codec


# -- document examples -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cc"),
    [
        # §3.1 check values (PR;1F40 -> 47 is Fresenius's own worked example)
        (b"PR;1F40", b"47"),
        (b"DC", b"78"),
        (b"0DC", b"48"),
        (b"1LE;d", b"9E"),
        # §11 verification script
        (b"1C;d20D;r445C", b"B9"),
        (b"1E", b"89"),
        (b"1I;01", b"E9"),
        (b"2I;1E", b"D3"),
        (b"1C;a4;d0;r88B8", b"55"),
    ],
)
def test_checksum_check_values(text: bytes, cc: bytes) -> None:
    assert checksum(text) == cc


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # §3.1 table
        (bytes.fromhex("02 44 43 37 38 03"), Command(None, "DC")),
        (bytes.fromhex("02 30 44 43 34 38 03"), Command(0, "DC")),
        (bytes.fromhex("02 31 4C 45 3B 64 39 45 03"), Command(1, "LE", "d")),
        (b"\x02PR;1F4047\x03", Command(None, "PR", "1F40")),
        # §9 example 1
        (bytes.fromhex("02 30 43 38 43 03"), Reply(0, "C")),
        (bytes.fromhex("02 30 4C 45 3B 62 41 31 03"), Command(0, "LE", "b")),
        (bytes.fromhex("02 30 43 3B 62 31 42 45 03"), Reply(0, "C", "b1")),
        (bytes.fromhex("02 31 44 43 34 37 03"), Command(1, "DC")),
        (bytes.fromhex("02 31 43 38 42 03"), Reply(1, "C")),
        # §9 example 2
        (bytes.fromhex("02 31 4C 45 3B 64 72 32 43 03"), Command(1, "LE", "dr")),
        (
            bytes.fromhex("02 31 43 3B 64 32 30 44 3B 72 34 34 35 43 42 39 03"),
            Reply(1, "C", "d20D;r445C"),
        ),
        # §9 example 3
        (bytes.fromhex("05"), Enq()),
        (bytes.fromhex("14"), Dc4()),
        (bytes.fromhex("06"), Ack()),
        (bytes.fromhex("02 31 44 45 3B 72 39 38 03"), Command(1, "DE", "r")),
        (bytes.fromhex("02 31 45 3B 72 38 38 42 38 46 32 03"), Reply(1, "E", "r88B8")),
        (bytes.fromhex("02 31 45 38 39 03"), Reply(1, "E")),
        # §9 example 4
        (bytes.fromhex("02 31 4C 45 3B 61 64 72 43 42 03"), Command(1, "LE", "adr")),
        (b"\x021C;a0;d20D;r445CED\x03", Reply(1, "C", "a0;d20D;r445C")),
        (
            bytes.fromhex("02 31 43 3B 61 34 3B 64 30 3B 72 38 38 42 38 35 35 03"),
            Reply(1, "C", "a4;d0;r88B8"),
        ),
        # §9 example 5
        (bytes.fromhex("02 31 58 59 31 44 03"), Command(1, "XY")),
        (bytes.fromhex("02 31 49 3B 30 31 45 39 03"), Reply(1, "I", "01")),
        (bytes.fromhex("02 32 4C 45 3B 64 39 44 03"), Command(2, "LE", "d")),
        (bytes.fromhex("02 32 49 3B 31 45 44 33 03"), Reply(2, "I", "1E")),
        (bytes.fromhex("15 32"), Nak("2")),
    ],
)
def test_document_frames_decode_and_reencode(wire: bytes, expected: FreseniusMessage) -> None:
    msgs, codec = decode_all(wire)
    assert msgs == [expected]
    assert codec.stats.error_count == 0
    assert codec.encode(expected) == wire


def test_document_values_scale() -> None:
    # §9 example 2: d 0x20D = 525 -> 52.5 mL/h; r 0x445C = 17500 -> 17.500 mL
    msgs, _ = decode_all(bytes.fromhex("06 02 31 43 3B 64 32 30 44 3B 72 34 34 35 43 42 39 03"))
    ack, reply = msgs
    assert ack == Ack() and isinstance(reply, Reply)
    assert reply.items == (Item("d", "20D"), Item("r", "445C"))
    assert hex_value("20D") / 10 == 52.5
    assert hex_value("445C") / 1000 == 17.5
    assert hex_value("88b8") == 35000  # §5.3: any case accepted
    assert hex_value("x1") is None


def test_bad_checksum_example_is_counted_not_decoded() -> None:
    # §9 example 5: 1LE;d with CC "9F" instead of "9E"
    msgs, codec = decode_all(bytes.fromhex("02 31 4C 45 3B 64 39 46 03"))
    assert msgs == []
    assert codec.stats.errors["checksum"] == 1
    # lower-case checksum hex is refused as well (§3.1: compared byte for byte)
    msgs, codec = decode_all(b"\x020c;b1be\x03")
    assert msgs == [] and codec.stats.errors["checksum"] == 1


def test_enq_inside_a_frame_is_handled_and_the_frame_survives() -> None:
    # §2/§12 pitfall 3: ENQ may arrive between any two bytes
    wire = frame(b"1C;d20D;r445C")
    msgs, codec = decode_all(wire[:5] + b"\x05" + wire[5:])
    assert msgs == [Enq(), Reply(1, "C", "d20D;r445C")]
    assert codec.stats.error_count == 0


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    codec = FreseniusCodec()
    with pytest.raises(ValueError, match="two upper-case"):
        codec.encode(Command(1, "le"))
    with pytest.raises(ValueError, match="digit"):
        codec.encode(Command(10, "LE"))
    with pytest.raises(ValueError, match="printable"):
        codec.encode(Reply(1, "C", "a\x03"))
    with pytest.raises(ValueError, match="80"):
        codec.encode(Reply(1, "C", "x" * 80))
    with pytest.raises(ValueError, match="NAK"):
        codec.encode(Nak("22"))
    assert max(codec.encode(Reply(1, "C", "~" * 70))) < 0x80  # §1: 7-bit line


# -- hypothesis: round trip, pieces, garbage ----------------------------------------------

_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
_modules = st.none() | st.integers(0, 9)
messages = st.one_of(
    st.just(Ack()),
    st.just(Enq()),
    st.just(Dc4()),
    st.builds(Nak, st.characters(min_codepoint=0x20, max_codepoint=0x7E)),
    st.builds(
        Command,
        _modules,
        st.text(string.ascii_uppercase, min_size=2, max_size=2),
        st.none() | _printable,
    ),
    st.builds(Reply, _modules, st.sampled_from(string.ascii_uppercase), st.none() | _printable),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=20), st.lists(st.integers(0, 2000)))
def test_round_trip_and_pieces(msgs: list[FreseniusMessage], cuts: list[int]) -> None:
    codec = FreseniusCodec()
    wire = b"".join(codec.encode(m) for m in msgs)
    assert codec.feed(wire) == msgs
    pieces = FreseniusCodec()
    assert feed_in_pieces(pieces, wire, cuts) == msgs
    assert pieces.stats.error_count == 0 and pieces.stats.frames == len(msgs)
    assert pieces.stats.bytes_in == len(wire)


def _is_subsequence(needles: list[object], haystack: list[object]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


corruptions = st.one_of(
    st.tuples(st.just("none"), st.just(b"")),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=30)),
    st.tuples(st.just("truncate"), st.integers(1, 100)),
    st.tuples(st.just("flip"), st.integers(0, 10_000)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(corruptions, messages, messages), min_size=1, max_size=12))
def test_garbage_truncation_and_bit_flips(
    parts: list[tuple[tuple[str, object], FreseniusMessage, FreseniusMessage]],
) -> None:
    """Each part: a corruption (garbage, a truncated or bit-flipped frame) then a valid
    message. Every valid message is still recovered in order; corruptions are counted."""
    enc = FreseniusCodec()
    wire = bytearray()
    valid: list[FreseniusMessage] = []
    damaged = 0
    for (kind, arg), victim, good in parts:
        victim_bytes = enc.encode(victim)
        if len(victim_bytes) < 3:  # a bare control byte: corrupt a poll reply instead
            victim_bytes = enc.encode(Reply(1, "C", "d20D;r445C"))
        if kind == "garbage":
            wire += arg  # type: ignore[operator]
        elif kind == "truncate":
            wire += victim_bytes[: max(1, min(int(arg), len(victim_bytes) - 1))]  # type: ignore[call-overload]
            damaged += 1
        elif kind == "flip":
            bit = int(arg) % (len(victim_bytes) * 8)  # type: ignore[call-overload]
            flipped = bytearray(victim_bytes)
            flipped[bit // 8] ^= 1 << (bit % 8)
            wire += flipped
            damaged += 1
        wire += enc.encode(good)
        valid.append(good)
    sentinel = Reply(9, "C", "end")
    wire += enc.encode(sentinel)
    valid.append(sentinel)
    codec = FreseniusCodec()
    out = codec.feed(bytes(wire))
    assert _is_subsequence(valid, out)
    assert codec.stats.frames == len(out)
    if damaged:
        assert codec.stats.error_count >= 1


# -- host against expected-bytes tables (§9) -------------------------------------------------


def test_host_session_matches_document_exchanges() -> None:
    """§9 examples 1-4 byte for byte: connect, 1 s wait, bitmap, module connect, poll, ENQ
    answered with DC4, spontaneous E frame ACKed and echoed, later poll shows a=4."""
    pairs = [
        (bytes.fromhex("02 30 44 43 34 38 03"), b"\x06" + bytes.fromhex("02 30 43 38 43 03")),
        (b"\x06", b""),  # host ACKs 0C, then waits 1 s
        (
            bytes.fromhex("02 30 4C 45 3B 62 41 31 03"),
            bytes.fromhex("06 02 30 43 3B 62 31 42 45 03"),
        ),
        (b"\x06", b""),
        (bytes.fromhex("02 31 44 43 34 37 03"), bytes.fromhex("06 02 31 43 38 42 03")),
        (b"\x06", b""),
        (bytes.fromhex("02 31 4C 45 3B 61 64 72 43 42 03"), b"\x06\x021C;a0;d20D;r445CED\x03"),
        (b"\x06", b"\x05"),  # §9 example 3: ENQ
        (b"\x14", bytes.fromhex("02 31 45 3B 72 38 38 42 38 46 32 03")),  # DC4; spontaneous E
        (b"\x06" + bytes.fromhex("02 31 45 38 39 03"), b"\x06"),  # ACK, then echo "1E"
        (
            bytes.fromhex("02 31 4C 45 3B 61 64 72 43 42 03"),
            bytes.fromhex("06 02 31 43 3B 61 34 3B 64 30 3B 72 38 38 42 38 35 35 03"),
        ),
        (b"\x06", b""),
    ]
    script = ExpectedExchange(pairs)
    host = FreseniusHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    link.step(0.9)
    assert script.index == 2, "the host must wait 1 s after the base connect (§6 step 2)"
    assert not host.associated
    msgs = link.step(0.6)  # t = 1.5 s: bitmap, module connect, first poll, ENQ, E frame
    assert host.associated
    assert script.index == 10
    readings = [(m.channel, m.value) for m in msgs if isinstance(m, Reading)]
    assert readings == [
        (Channel.PUMP_RATE, 52.5),
        (Channel.VOLUME_INFUSED, 17.5),
        (Channel.VOLUME_INFUSED, 35.0),  # from the spontaneous E frame
    ]
    assert {m.source for m in msgs if isinstance(m, Reading)} == {"pump/1"}
    msgs = link.step(0.6)  # t = 2.1 s: second poll
    script.assert_done()
    (state,) = [m for m in msgs if isinstance(m, PumpState)]
    # §9 example 4: "rate 0, 35.000 mL infused, pump alarm (unclassified), raw a=4"
    assert state.rate_ml_h == 0.0
    assert state.volume_infused_ml == 35.0
    assert state.alarms == (PumpAlarm("unclassified", "4", state.alarms[0].text),)
    assert "a=4" in state.alarms[0].text
    assert state.state is PumpRunState.ALARM
    assert state.vtbi_ml is None  # not available on this protocol (§5.3)


def _connected_script(bitmap: bytes, module: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (frame(b"0DC"), b"\x06" + frame(b"0C")),
        (b"\x06", b""),
        (frame(b"0LE;b"), b"\x06" + frame(b"0C;b" + bitmap)),
        (b"\x06", b""),
        (frame(module + b"DC"), b"\x06" + frame(module + b"C")),
        (b"\x06", b""),
    ]


def test_host_reconnects_a_module_after_error_1E() -> None:
    """§9 example 5 / §12 pitfall 8: "2I;1E" -> the host sends 2DC and retries."""
    pairs = [
        *_connected_script(b"2", b"2"),
        (frame(b"2LE;adr"), bytes.fromhex("06 02 32 49 3B 31 45 44 33 03")),
        (b"\x06" + frame(b"2DC"), b"\x06" + frame(b"2C")),
        (b"\x06" + frame(b"2LE;adr"), b"\x06" + frame(b"2C;a0;d20D;r445C")),
        (b"\x06", b""),
    ]
    script = ExpectedExchange(pairs)
    host = FreseniusHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    msgs = link.step(1.5)
    script.assert_done()
    assert host.error_replies == {"1E": 1}
    assert [m.source for m in msgs if isinstance(m, Reading)] == ["pump/2", "pump/2"]


def test_host_naks_a_bad_checksum_and_takes_the_resent_reply() -> None:
    """§6 step 7: NAK + '2' for a bad checksum; the pump's resend is then accepted."""
    good = frame(b"1C;a0;d20D;r445C")
    bad = good[:-3] + b"00" + ETX
    pairs = [
        *_connected_script(b"1", b"1"),
        (frame(b"1LE;adr"), b"\x06" + bad),
        (b"\x152", good),
        (b"\x06", b""),
    ]
    script = ExpectedExchange(pairs)
    host = FreseniusHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    msgs = link.step(1.5)
    script.assert_done()
    assert [m.value for m in msgs if isinstance(m, Reading)] == [52.5, 17.5]


def test_host_reopens_the_base_session_after_error_0D() -> None:
    """§7.2 0D: communication session with the base not open -> send 0DC again."""
    pairs = [
        *_connected_script(b"1", b"1"),
        (frame(b"1LE;adr"), b"\x06" + frame(b"1I;0D")),
        (b"\x06" + frame(b"0DC"), b"\x06" + frame(b"0C")),
        (b"\x06", b""),
    ]
    script = ExpectedExchange(pairs)
    link = MemoryLink(FreseniusHost("pump"), script)
    link.connect()
    link.step(1.5)
    script.assert_done()


def test_host_resends_once_after_a_reply_timeout_then_restarts() -> None:
    """§6 timing: 1 s reply timeout, one resend; then the base connect is retried later."""
    pairs = [
        (frame(b"0DC"), b""),  # no reply
        (frame(b"0DC"), b""),  # resend after 1 s, no reply
        (frame(b"0DC"), b"\x06" + frame(b"0C")),  # reconnect after the back-off
        (b"\x06", b""),
    ]
    script = ExpectedExchange(pairs)
    host = FreseniusHost("pump")
    link = MemoryLink(host, script)
    link.connect()
    link.step(0.95)
    assert script.index == 1
    link.step(0.1)
    assert script.index == 2
    link.step(6.0)
    script.assert_done()
    assert host.link_events["failed_base"] == 1


# -- host <-> simulated base over MemoryLink --------------------------------------------------


def _link(pump: ProgrammedPump | dict[int, ProgrammedPump]) -> tuple[MemoryLink, FreseniusPeer]:
    peer = FreseniusPeer(pump)
    link = MemoryLink(FreseniusHost("pump"), peer)
    return link, peer


def _assert_host_sent_only_allowed(link: MemoryLink) -> None:
    codec = FreseniusCodec()
    sent = codec.feed(bytes(link.host_sent))
    assert codec.stats.error_count == 0
    assert sent and all(host_may_send(m) for m in sent), [m for m in sent if not host_may_send(m)]
    assert {m.command for m in sent if isinstance(m, Command)} <= ALLOWED_COMMANDS
    assert not {"PR", "PO", "PB", "MO"} & ALLOWED_COMMANDS


def test_ketamine_infusion_to_completion() -> None:
    """0.5 mg/kg over 40 min for 70 kg at 1 mg/mL: 52.5 mL/h, 35 mL."""
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, _ = _link(pump)
    pump.start(link.now_us)
    link.connect()
    msgs = link.step(41 * 60)
    readings = [m for m in msgs if isinstance(m, Reading) and m.source == "pump/1"]
    rates = [r.value for r in readings if r.channel is Channel.PUMP_RATE]
    volumes = [r.value for r in readings if r.channel is Channel.VOLUME_INFUSED]
    assert rates[0] == 52.5 and rates[-1] == 0.0
    assert volumes == sorted(volumes), "volume infused must be monotonic within an infusion"
    assert volumes[-1] == pytest.approx(35.0, abs=0.001)  # §5.3 resolution
    # about one poll per second, each with rate and volume
    assert 40 * 60 < len(volumes) <= 41 * 60 + 1
    states = [m for m in msgs if isinstance(m, PumpState)]
    assert any(s.state is PumpRunState.RUNNING and s.rate_ml_h == 52.5 for s in states)
    assert all(s.infusion_id == 1 for s in states)
    gaps = [b.t_us - a.t_us for a, b in itertools.pairwise(states)]
    assert max(gaps) <= 61_000_000, "a PumpState at least every 60 s"
    # End of infusion has no documented encoding on this protocol: the host shows what
    # §9 example 4 prescribes (rate 0, 35 mL, unclassified alarm with the raw a value),
    # never an invented COMPLETE.
    end = states[-1]
    assert end.state is PumpRunState.ALARM
    assert end.rate_ml_h == 0.0 and end.volume_infused_ml == pytest.approx(35.0, abs=0.001)
    assert [(a.code, a.raw) for a in end.alarms] == [("unclassified", "4")]
    _assert_host_sent_only_allowed(link)


def test_occlusion_shows_within_one_poll_period() -> None:
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, _ = _link(pump)
    pump.start(link.now_us)
    link.connect()
    link.step(10)
    pump.raise_alarm(PumpAlarm("occlusion", "sim"), link.now_us)
    msgs = link.step(1.0)  # one poll period
    (state,) = [m for m in msgs if isinstance(m, PumpState)]
    assert state.alarms and state.alarms[0].code == "unclassified"  # §5.3: a undocumented
    assert state.alarms[0].raw == "2"  # the simulator's occlusion bit, kept raw
    assert state.state is PumpRunState.ALARM
    _assert_host_sent_only_allowed(link)


def test_silent_base_goes_stale_and_recovers() -> None:
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    link, peer = _link(pump)
    host = link.host
    pump.start(link.now_us)
    link.connect()
    link.step(5)
    peer.silent = True
    link.step(1.0)  # the outstanding reply may still arrive within this second
    last = host.last_frame_us
    msgs = link.step(20)
    assert host.last_frame_us == last
    assert not [m for m in msgs if isinstance(m, Reading)]
    assert link.now_us - last > host.stale_after_s * 1e6
    peer.silent = False
    msgs = link.step(15)
    assert [m for m in msgs if isinstance(m, Reading)], "data must resume"
    assert host.associated
    _assert_host_sent_only_allowed(link)


def test_disconnect_and_reconnect_reassociates() -> None:
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
    assert link.host_sent[sent_before:].startswith(frame(b"0DC"))
    msgs = link.step(3)
    vols = [m.value for m in msgs if isinstance(m, Reading) and m.channel is Channel.VOLUME_INFUSED]
    assert vols and vols[0] > 0.1  # the same infusion continues
    assert all(s.infusion_id == 1 for s in msgs if isinstance(s, PumpState))


def test_volume_reset_starts_a_new_infusion() -> None:
    first = ProgrammedPump(rate_ml_h=100.0, vtbi_ml=50)
    link, peer = _link(first)
    first.start(link.now_us)
    link.connect()
    link.step(30)
    second = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    second.start(link.now_us)
    peer.feeds[1] = second  # syringe changed: infused volume starts again from 0
    msgs = link.step(3)
    states = [m for m in msgs if isinstance(m, PumpState)]
    assert states and states[-1].infusion_id == 2


def test_modules_of_a_base_are_separate_pumps() -> None:
    a = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    b = ProgrammedPump(rate_ml_h=10.0, vtbi_ml=5)
    link, peer = _link({1: a, 3: b})
    a.start(link.now_us)
    b.start(link.now_us)
    link.connect()
    msgs = link.step(4)
    rates = {
        (m.source, m.value)
        for m in msgs
        if isinstance(m, Reading) and m.channel is Channel.PUMP_RATE
    }
    assert rates == {(module_source("pump", 1), 52.5), (module_source("pump", 3), 10.0)}
    del peer.feeds[3]  # module 3 pulled out of the base
    msgs = link.step(6)
    gone = [m for m in msgs if isinstance(m, DeviceStatus) and m.state is DeviceState.DISCONNECTED]
    assert [m.source for m in gone] == ["pump/3"]
    later = link.step(3)
    assert {m.source for m in later if isinstance(m, Reading)} == {"pump/1"}


def test_simulated_base_refuses_control_unless_pc_mode() -> None:
    """§5.2: control commands are refused with 02 unless MO;2 succeeded (simulator)."""
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35)
    peer = FreseniusPeer(pump)
    codec = FreseniusCodec()
    now = 0
    peer.connection_made(now)

    def ask(cmd: Command) -> list[FreseniusMessage]:
        peer.data_received(codec.encode(cmd), now)
        return codec.feed(peer.take_outgoing())

    assert ask(Command(0, "DC")) == [Ack(), Reply(0, "C")]
    assert ask(Command(1, "LE", "d")) == [Ack(), Reply(1, "I", "1E")]
    assert ask(Command(1, "DC")) == [Ack(), Reply(1, "C")]
    assert ask(Command(1, "PR", "1F40")) == [Ack(), Reply(1, "I", "02")]
    assert ask(Command(1, "LP")) == [Ack(), Reply(1, "I", "01")]  # §5.1 not on Base Primea
    assert ask(Command(1, "MO", "2")) == [Ack(), Reply(1, "C")]
    assert ask(Command(1, "PR", "1F40")) == [Ack(), Reply(1, "C")]
    assert pump.rate_ml_h == 800.0  # §5.2: PR;1F40 = 800.0 mL/h
    assert ask(Command(1, "LE", "Dr")) == [Ack(), Reply(1, "I", "0B")]
    peer.data_received(bytes.fromhex("02 31 4C 45 3B 64 39 46 03"), now)  # §9 example 5
    assert codec.feed(peer.take_outgoing()) == [Nak("2")]


def test_registry_and_serial_settings() -> None:
    assert FRESENIUS.codec_class() is FreseniusCodec
    assert FRESENIUS.host_class() is FreseniusHost
    assert FRESENIUS.peer_class() is FreseniusPeer
    assert (SERIAL.baudrate, SERIAL.bytesize, SERIAL.parity, SERIAL.stopbits) == (19200, 7, "E", 1)
    assert FreseniusHost.serial_settings == FreseniusPeer.serial_settings == SERIAL
    assert FreseniusCodec.document == FRESENIUS.document
