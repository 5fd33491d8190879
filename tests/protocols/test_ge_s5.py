"""GE Datex-Ohmeda S/5 computer interface (shared/protocols/ge-datex-s5.md): codec, host and
simulated monitor, through the real code on an in-memory link with a simulated clock."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapmonitor.drivers.codecs.base import Role
from kapmonitor.drivers.codecs.ge_s5 import (
    BASIC_GROUPS,
    CLASS_DATA_LEN,
    DATA_INVALID,
    DATA_NOT_CALIBRATED,
    DATA_OVER_RANGE,
    WAVE_CO2,
    WAVE_PLETH,
    WF_REQ_CONT_STOP,
    BasicPhdb,
    GeS5Codec,
    Group,
    OtherRecord,
    PhdbRecord,
    PhdbRequest,
    PhdbSubrecord,
    WaveRecord,
    WaveRequest,
    WaveSubrecord,
    frame,
)
from kapmonitor.drivers.devices.ge_s5 import GeS5Host, is_allowed
from kapmonitor.drivers.sim.feed import ScriptedVitals
from kapmonitor.drivers.sim.peers.ge_s5 import GeS5Peer
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import Channel, Quality, Reading, WaveChunk

HYP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- bytes copied from the document --------------------------------------------------------

# §4.1 verified request: displayed values every 5 s, basic class only (checksum 0x36)
REQ_DISPLAYED_5S = bytes.fromhex(
    "7E 31 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 FF 00 00 00 00 00 00"
    " 00 00 00 00 00 00 00 00 00 00 00 00 01 05 00 00 00 00 00 00 00 36 7E"
)
# §4.1 stop request (tx_interval 0, checksum 0x31)
REQ_DISPLAYED_STOP = bytes.fromhex(
    "7E 31 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 FF 00 00 00 00 00 00"
    " 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 31 7E"
)
# §4.2 verified request: start PLETH (checksum 0x4F)
REQ_WAVE_PLETH = bytes.fromhex(
    "7E 48 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 FF 00 00 00 00 00 00"
    " 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 08 FF 00 00 00 00 00 00 00 00 00 00 00"
    " 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 4F 7E"
)
# §7.1 normal displayed-values record (frame 321 bytes, checksum 0xA5)
REC_7_1 = bytes.fromhex(
    """
7E 3E 01 00 00 00 00 26 CE F2 65 00 00 00 00 00 00 00 00 01 00 00 FF 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 26 CE F2 65 03 00 00 00 00 00 48 00 01 80 01 80 01 80 01 80 00 00 00
00 00 00 01 80 01 80 01 80 01 80 00 00 00 00 00 00 01 80 01 80 01 80 01 80 00 00 00 00 00 00 01
80 01 80 01 80 01 80 00 00 00 00 00 00 01 80 01 80 01 80 01 80 03 00 00 00 00 00 E0 2E 40 1F 54
24 01 80 03 00 00 00 01 00 60 0E 00 00 00 00 00 00 01 80 00 00 00 00 00 00 01 80 00 00 00 00 00
00 01 80 03 00 00 00 00 00 E4 25 48 00 01 80 01 80 03 00 00 00 00 00 F4 01 00 00 0E 00 B0 1D 00
00 00 00 00 00 01 80 01 80 00 00 00 00 00 00 01 80 01 80 00 00 00 00 00 00 01 80 01 80 01 80 00
00 00 00 00 00 01 80 01 80 01 80 01 80 01 80 01 80 01 80 01 80 00 00 00 00 00 00 01 80 01 80 01
80 01 80 00 00 00 00 00 00 01 80 01 80 01 80 48 00 01 80 01 80 00 00 00 00 00 00 01 80 00 00 00
00 00 00 01 80 01 80 01 80 01 80 00 00 00 00 00 00 01 80 01 80 01 80 01 80 00 00 00 00 01 00 A5
7E
"""
)


def _rec_7_2() -> bytes:
    """§7.2, built from §7.1 by the byte changes the document lists (frame offsets)."""
    b = bytearray(REC_7_1)
    b[7] = b[41] = 0x2B  # the two time stamps, 26 -> 2B
    b[163] = 0x01  # SpO2 group status 03 -> 01 (exists, not active)
    b[169:173] = bytes.fromhex("01 80 01 80")  # SpO2 and PR -> -32767
    b[319] = 0x5E  # checksum A5 -> 5E
    return bytes(b)


REC_7_2 = _rec_7_2()
T_7_1 = 1710411302  # 2024-03-14 10:15:02 UTC


def _stop_waves(ids: tuple[int, ...]) -> bytes:
    """§4.2 table: WF_REQ_CONT_STOP (no verified bytes in the document; built by the codec,
    whose START encoding matches the verified REQ_WAVE_PLETH byte for byte)."""
    return GeS5Codec().encode(WaveRequest(WF_REQ_CONT_STOP, ids))


def _readings(msgs: list[object]) -> dict[Channel, Reading]:
    return {m.channel: m for m in msgs if isinstance(m, Reading)}


# --- §2 framing ----------------------------------------------------------------------------


def test_framing_check_value_from_section_2() -> None:
    # §2 "Check value": record 01 7E 02 7D 03 -> checksum 0x01 -> this frame
    expected = bytes.fromhex("7E 01 7D 5E 02 7D 5D 03 01 7E")
    assert frame(bytes.fromhex("01 7E 02 7D 03")) == expected
    c = GeS5Codec()
    assert c.feed(expected) == []
    # it unescapes and passes the checksum; only its 5-byte length (< 40) is refused
    assert dict(c.stats.errors) == {"short": 1}


def test_requests_from_section_4_decode_and_encode_byte_for_byte() -> None:
    c = GeS5Codec(Role.DEVICE)
    assert c.feed(REQ_DISPLAYED_5S) == [PhdbRequest(record_type=1, interval_s=5, class_bf=0)]
    assert c.feed(REQ_DISPLAYED_STOP) == [PhdbRequest(record_type=1, interval_s=0, class_bf=0)]
    assert c.feed(REQ_WAVE_PLETH) == [WaveRequest(req_type=0, waves=(WAVE_PLETH,))]
    assert c.encode(PhdbRequest(1, 5, 0)) == REQ_DISPLAYED_5S
    assert c.encode(PhdbRequest(1, 0, 0)) == REQ_DISPLAYED_STOP
    assert c.encode(WaveRequest(0, (WAVE_PLETH,))) == REQ_WAVE_PLETH
    assert c.stats.frames == 3
    assert c.stats.error_count == 0


def test_record_7_1_decodes_to_documented_values() -> None:
    c = GeS5Codec()
    (rec,) = c.feed(REC_7_1)
    assert isinstance(rec, PhdbRecord)
    assert rec.time == T_7_1
    (sub,) = rec.subrecords
    assert sub.sr_type == 1
    assert sub.time == T_7_1
    assert sub.cl_drilvl_subt == 0x0001
    assert sub.phdb_class == 0
    b = sub.basic
    assert b is not None
    assert b.ecg.status == 3
    assert b.value("ecg", "hr") == 72
    assert (b.value("nibp", "sys"), b.value("nibp", "dia"), b.value("nibp", "mean")) == (
        12000,
        8000,
        9300,
    )
    assert b.t1 == Group(3, 1, (3680,))
    assert (b.value("spo2", "spo2"), b.value("spo2", "pr")) == (9700, 72)
    assert b.co2 == Group(3, 0, (500, 0, 14, 7600))
    assert b.p1.status == 0
    assert b.value("p1", "sys") == DATA_INVALID
    assert c.encode(rec) == REC_7_1  # byte for byte


def test_host_maps_record_7_1_and_7_2() -> None:
    host = GeS5Host(waves=())
    host.connection_made(0)
    r = _readings(host.data_received(REC_7_1, 5_000_000))
    assert host.last_frame_us == 5_000_000
    assert {ch: r[ch].value for ch in r} == {
        Channel.HR: 72.0,
        Channel.NIBP_SYS: 120.0,
        Channel.NIBP_DIA: 80.0,
        Channel.NIBP_MEAN: 93.0,
        Channel.TEMP: 36.8,
        Channel.SPO2: 97.0,
        Channel.PULSE: 72.0,
        Channel.ETCO2: 38.0,  # et 500 x amb 7600 x 1e-5 (§5.2)
        Channel.FICO2: 0.0,
        Channel.RR: 14.0,  # from CO2, the CO2 group being active
    }
    assert all(x.quality == Quality.OK for x in r.values())
    assert all(x.device_t_us == T_7_1 * 1_000_000 for x in r.values())
    assert all(x.source == "monitor" and x.t_us == 5_000_000 for x in r.values())
    # §7.2: SpO2 group exists but not active, SpO2 and PR -32767: lost, flagged, not invented
    r2 = _readings(host.data_received(REC_7_2, 10_000_000))
    for ch in (Channel.SPO2, Channel.PULSE):
        assert math.isnan(r2[ch].value)
        assert r2[ch].quality == Quality.INVALID
    assert r2[Channel.HR].value == 72.0
    assert r2[Channel.HR].device_t_us == (T_7_1 + 5) * 1_000_000
    assert r2[Channel.ETCO2].value == 38.0


# --- mapping details -----------------------------------------------------------------------


def _basic(**groups: Group | tuple[int, ...]) -> BasicPhdb:
    fields: dict[str, object] = {}
    for name, has_header, names in BASIC_GROUPS:
        inv = (DATA_INVALID,) * len(names)
        fields[name] = Group(0, 0, inv) if has_header else inv
    fields.update(groups)
    return BasicPhdb(**fields)  # type: ignore[arg-type]


def _record(b: BasicPhdb, t: int = T_7_1) -> bytes:
    sub = PhdbSubrecord(1, t, b, cl_drilvl_subt=0x0001)
    return GeS5Codec().encode(PhdbRecord(t, (sub,)))


def test_special_codes_absent_groups_and_implausible_values() -> None:
    b = _basic(
        ecg=Group(3, 0, (400, 0, 0, 0, 12)),  # HR 400 > plausible 350
        nibp=Group(3, 0, (DATA_OVER_RANGE, DATA_NOT_CALIBRATED, DATA_INVALID, 0)),
        t2=Group(3, 0, (3700,)),  # T1 absent: the first existing T group is used
    )
    host = GeS5Host(waves=())
    host.connection_made(0)
    r = _readings(host.data_received(_record(b), 1))
    assert r[Channel.HR].value == 400.0
    assert r[Channel.HR].quality == Quality.OUT_OF_RANGE
    assert r[Channel.NIBP_SYS].quality == Quality.INVALID | Quality.OUT_OF_RANGE
    assert r[Channel.NIBP_DIA].quality == Quality.INVALID | Quality.CALIBRATING
    assert r[Channel.NIBP_MEAN].quality == Quality.INVALID
    assert all(math.isnan(r[c].value) for c in (Channel.NIBP_SYS, Channel.NIBP_DIA))
    assert r[Channel.TEMP].value == 37.0
    assert r[Channel.RR].value == 12.0  # no CO2 group: ECG impedance respiration
    # groups that do not exist (SpO2, CO2, P1..) give no reading at all
    assert set(r) == {
        Channel.HR,
        Channel.NIBP_SYS,
        Channel.NIBP_DIA,
        Channel.NIBP_MEAN,
        Channel.TEMP,
        Channel.RR,
    }


def test_co2_before_ambient_pressure_is_flagged() -> None:
    """EtCO2 and the CO2 wave need the ambient pressure; until the monitor has sent one, they
    are converted at 760 mmHg and flagged QUESTIONABLE (module docstring choice)."""
    host = GeS5Host()
    host.connection_made(0)
    wave = GeS5Codec().encode(WaveRecord(T_7_1, (WaveSubrecord(WAVE_CO2, (500, -32767)),)))
    (chunk,) = host.data_received(wave, 1_000_000)
    assert isinstance(chunk, WaveChunk)
    assert chunk.channel is Channel.CO2_WAVE
    assert chunk.samples[0] == pytest.approx(38.0)
    assert math.isnan(chunk.samples[1])
    assert chunk.quality == Quality.QUESTIONABLE
    b = _basic(co2=Group(3, 0, (500, 0, 14, DATA_INVALID)))
    r = _readings(host.data_received(_record(b), 2_000_000))
    assert r[Channel.ETCO2].value == pytest.approx(38.0)
    assert r[Channel.ETCO2].quality == Quality.QUESTIONABLE
    b = _basic(co2=Group(3, 0, (500, 0, 14, 6300)))  # at altitude: 630 mmHg
    r = _readings(host.data_received(_record(b), 3_000_000))
    assert r[Channel.ETCO2].value == pytest.approx(31.5)
    assert r[Channel.ETCO2].quality == Quality.OK


def test_host_refuses_settings_the_monitor_does_not_allow() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        GeS5Host(interval_s=2)  # §4.1: never below 5 s
    with pytest.raises(ValueError, match="samples/s"):
        GeS5Host(waves=(Channel.ECG, Channel.PLETH, Channel.CO2_WAVE, Channel.ECG))
    with pytest.raises(ValueError, match="no S/5 waveform"):
        GeS5Host(waves=(Channel.SPO2,))


# --- hypothesis: round trip, pieces, garbage ------------------------------------------------

u8 = st.integers(0, 255)
i16 = st.integers(-32768, 32767)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def basic_phdb(draw: st.DrawFn) -> BasicPhdb:
    fields: dict[str, object] = {}
    for name, has_header, names in BASIC_GROUPS:
        values = tuple(draw(st.lists(i16, min_size=len(names), max_size=len(names))))
        fields[name] = Group(draw(u32), draw(u16), values) if has_header else values
    return BasicPhdb(**fields, reserved=draw(i16))  # type: ignore[arg-type]


@st.composite
def phdb_subrecord(draw: st.DrawFn) -> PhdbSubrecord:
    sr_type, t, marker, res = draw(st.integers(1, 4)), draw(u32), draw(u8), draw(u8)
    low = draw(st.integers(0, 0xFF)) | (draw(st.integers(0, 0xF)) << 12)
    cls = draw(st.integers(0, 3))
    cl = low | (cls << 8)
    if cls == 0:
        return PhdbSubrecord(sr_type, t, draw(basic_phdb()), None, marker, res, cl)
    raw = draw(st.binary(min_size=CLASS_DATA_LEN, max_size=CLASS_DATA_LEN))
    return PhdbSubrecord(sr_type, t, None, raw, marker, res, cl)


header = {"record_no": u8, "dri_level": u8, "plug_id": u16}
messages = st.one_of(
    st.builds(PhdbRequest, st.integers(0, 255), i16, u32, u8),
    st.builds(
        WaveRequest, st.integers(0, 1), st.lists(st.integers(0, 254), max_size=8).map(tuple), u8
    ),
    st.builds(PhdbRecord, u32, st.lists(phdb_subrecord(), max_size=5).map(tuple), **header),
    st.builds(
        WaveRecord,
        u32,
        st.lists(
            st.builds(
                WaveSubrecord, st.integers(1, 254), st.lists(i16, max_size=60).map(tuple), u16, u16
            ),
            max_size=4,
        ).map(tuple),
        **header,
    ),
    st.builds(
        OtherRecord,
        st.integers(2, 32767),
        st.lists(st.tuples(i16, st.integers(0, 254)), max_size=8).map(tuple),
        st.binary(max_size=100),
        u32,
        **header,
    ),
)


@HYP
@given(st.lists(messages, min_size=1, max_size=6), st.lists(st.integers(0, 5000)))
def test_roundtrip_and_pieces(msgs: list[object], cuts: list[int]) -> None:
    enc = GeS5Codec()
    for m in msgs:
        assert GeS5Codec().feed(enc.encode(m)) == [m]
    stream = b"".join(enc.encode(m) for m in msgs)
    c = GeS5Codec()
    assert feed_in_pieces(c, stream, cuts) == msgs
    assert c.stats.frames == len(msgs)
    assert c.stats.error_count == 0
    assert c.stats.bytes_in == len(stream)


@st.composite
def damaged(draw: st.DrawFn, encoded: bytes) -> bytes:
    kind = draw(st.sampled_from(["garbage", "truncated", "bitflip"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=80).filter(lambda g: set(g) != {0x7E}))
    if kind == "truncated":  # a frame cut short: start flag and at least one byte
        return encoded[: draw(st.integers(2, len(encoded) - 2))]
    pos = draw(st.integers(1, len(encoded) - 2))  # flip one bit inside the frame
    b = bytearray(encoded)
    b[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(b)


@HYP
@given(st.data())
def test_valid_frames_survive_garbage_truncation_and_bit_flips(data: st.DataObject) -> None:
    valid = data.draw(st.lists(messages, min_size=1, max_size=5))
    enc = GeS5Codec()
    stream = bytearray()
    bad = 0
    for m in valid:
        if data.draw(st.booleans()):
            victim = enc.encode(data.draw(messages))
            stream += data.draw(damaged(victim))
            bad += 1
        stream += enc.encode(m)
    if data.draw(st.booleans()):
        stream += data.draw(st.binary(max_size=30))  # a partial tail: not a frame yet
    c = GeS5Codec()
    cuts = data.draw(st.lists(st.integers(0, len(stream))))
    assert feed_in_pieces(c, bytes(stream), cuts) == valid
    assert c.stats.frames == len(valid)
    assert c.stats.error_count >= bad


# --- expected-bytes tables (CONVENTIONS 12) -------------------------------------------------


def test_connection_sequence_and_stop_against_document_bytes() -> None:
    pleth_record = GeS5Codec().encode(
        WaveRecord(T_7_1, (WaveSubrecord(WAVE_PLETH, tuple(range(0, 2000, 100))),))
    )
    script = ExpectedExchange(
        [
            (REQ_DISPLAYED_5S, REC_7_1),  # §4.1 request -> §7.1 record
            (REQ_WAVE_PLETH, pleth_record),  # §4.2 request -> a PLETH record (§6)
            (b"", REC_7_2),  # 5 s later, unasked (§7.2)
            (REQ_DISPLAYED_STOP, b""),  # §4.1 stop (§8: stop on shutdown)
            (_stop_waves((WAVE_PLETH,)), b""),
        ]
    )
    host = GeS5Host(waves=(Channel.PLETH,))
    link = MemoryLink(host, script)
    link.connect()
    assert host.associated
    got = link.messages
    r = _readings(got)
    assert r[Channel.SPO2].quality == Quality.INVALID  # 7.2 arrived last
    waves = [m for m in got if isinstance(m, WaveChunk)]
    assert len(waves) == 1
    assert waves[0].rate_hz == 100.0
    np.testing.assert_allclose(waves[0].samples, np.arange(0, 20, 1.0), rtol=1e-6)
    link.step(1.0)
    host.stop_requests()
    link.step(0.1)
    script.assert_done()


def test_requests_are_renewed_only_when_data_stops() -> None:
    host = GeS5Host(waves=())
    script = ExpectedExchange([(REQ_DISPLAYED_5S, REC_7_1), (REQ_DISPLAYED_5S, REC_7_2)])
    link = MemoryLink(host, script)
    link.connect()
    link.step(14.9)  # no record for 3 intervals yet: nothing sent
    assert len(link.host_sent) == len(REQ_DISPLAYED_5S)
    link.step(0.2)  # 15 s without a record: the request is renewed
    script.assert_done()
    assert _readings(link.messages)[Channel.SPO2].quality == Quality.INVALID


# --- host <-> simulated monitor -------------------------------------------------------------

VITALS: dict[Channel, float | None] = {
    Channel.HR: 72,
    Channel.PULSE: 71,
    Channel.SPO2: 97.5,
    Channel.NIBP_SYS: 121.37,
    Channel.NIBP_DIA: 80,
    Channel.NIBP_MEAN: 93.7,
    Channel.ETCO2: 38.4,
    Channel.FICO2: 0.5,
    Channel.RR: 14,
    Channel.TEMP: 36.84,
}
#: Protocol resolution per channel (§5.2): 1 /min, 0.01 %, 0.01 mmHg, 0.01 degC, and
#: 0.01 % of 760 mmHg = 0.076 mmHg for the gases.
RESOLUTION = {Channel.ETCO2: 0.076, Channel.FICO2: 0.076}


def _link(feed: ScriptedVitals, **host_kw: object) -> MemoryLink:
    link = MemoryLink(GeS5Host(**host_kw), GeS5Peer(feed), chunk=37)  # type: ignore[arg-type]
    link.connect()
    return link


def test_host_and_peer_numerics() -> None:
    feed = ScriptedVitals(dict(VITALS))
    link = _link(feed)
    link.step(30.0)
    msgs = link.messages
    readings = [m for m in msgs if isinstance(m, Reading)]
    by_ch: dict[Channel, list[Reading]] = {}
    for r in readings:
        by_ch.setdefault(r.channel, []).append(r)
    assert set(by_ch) == set(VITALS)
    for ch, v in VITALS.items():
        assert v is not None
        res = RESOLUTION.get(ch, 0.01)
        for r in by_ch[ch]:
            assert abs(r.value - v) <= res / 2 + 1e-9, (ch, r.value, v)
            assert r.quality == Quality.OK
            assert r.source == "monitor"
    # one displayed-values record at the request, then every 5 s (§4.1 tx_interval)
    assert len(by_ch[Channel.HR]) == 7
    times = [r.t_us for r in by_ch[Channel.HR]]
    assert {b - a for a, b in itertools.pairwise(times)} == {5_000_000}
    assert link.host.last_frame_us is not None
    # every byte the host sent is a request it may send (§4)
    peer_codec = GeS5Codec(Role.DEVICE)
    sent = peer_codec.feed(bytes(link.host_sent))
    assert sent
    assert all(is_allowed(m) for m in sent)
    assert peer_codec.stats.error_count == 0


def test_sensor_off_and_lost_values_are_flagged_not_invented() -> None:
    feed = ScriptedVitals(dict(VITALS))
    link = _link(feed, waves=())
    link.step(1.0)
    feed.values[Channel.SPO2] = None
    feed.values[Channel.PULSE] = None
    msgs = link.step(5.0)
    r = _readings(msgs)
    assert math.isnan(r[Channel.SPO2].value)
    assert r[Channel.SPO2].quality == Quality.INVALID
    assert r[Channel.HR].value == 72.0


def test_wave_samples_exact_over_60_s() -> None:
    feed = ScriptedVitals(dict(VITALS), amplitude=50.0, step=0.01)
    link = _link(feed, waves=(Channel.PLETH, Channel.CO2_WAVE, Channel.ECG))
    link.step(60.0)
    msgs = link.messages
    chunks = [m for m in msgs if isinstance(m, WaveChunk)]
    assert {c.channel for c in chunks} == {Channel.PLETH, Channel.CO2_WAVE, Channel.ECG}
    for ch, rate in ((Channel.PLETH, 100), (Channel.CO2_WAVE, 25), (Channel.ECG, 300)):
        mine = [c for c in chunks if c.channel is ch]
        n = sum(len(c) for c in mine)
        assert n == feed.sent[ch]  # nothing lost, nothing repeated
        assert 60 * rate - rate * 0.2 <= n <= 60 * rate  # records every 0.2 s
        assert all(c.rate_hz == rate and c.quality == Quality.OK for c in mine)
        # sample times follow the nominal rate without gaps or overlaps (§6)
        for a, b in itertools.pairwise(mine):
            assert abs(b.t_us - a.end_us) <= 1
        got = np.concatenate([c.samples for c in mine]).astype(np.float64)
        k = np.arange(n)
        want = np.round(50.0 * np.sin(2 * np.pi * k / 50) / 0.01) * 0.01
        tol = 0.038 + 1e-4 if ch is Channel.CO2_WAVE else 0.005 + 1e-4
        np.testing.assert_allclose(got, want, atol=tol)


def test_silent_monitor_goes_stale_and_host_keeps_asking() -> None:
    feed = ScriptedVitals(dict(VITALS))
    link = _link(feed)
    link.step(10.0)
    peer = link.peer
    assert isinstance(peer, GeS5Peer)
    peer.silent = True
    last = link.host.last_frame_us
    assert last is not None
    sent = len(link.host_sent)
    assert link.step(20.0) == []
    assert link.host.last_frame_us == last  # no valid frame while silent
    assert link.now_us - last > GeS5Host.stale_after_s * 1e6
    # meanwhile the host renewed its requests (waves after 5 s, displayed values after 15 s)
    renewed = GeS5Codec(Role.DEVICE).feed(bytes(link.host_sent[sent:]))
    assert {type(m) for m in renewed} == {PhdbRequest, WaveRequest}
    assert all(is_allowed(m) for m in renewed)
    peer.silent = False
    msgs = link.step(6.0)
    assert any(isinstance(m, Reading) for m in msgs)
    assert any(isinstance(m, WaveChunk) for m in msgs)


def test_monitor_that_forgot_the_requests_is_asked_again() -> None:
    """A monitor restarted behind an open link sends nothing until asked again (§1)."""
    feed = ScriptedVitals(dict(VITALS))
    link = _link(feed)
    link.step(7.0)
    peer = link.peer
    assert isinstance(peer, GeS5Peer)
    peer.connection_made(link.now_us)  # the monitor's session starts afresh
    asked = len(peer.requests)
    msgs = link.step(6.0)  # waves renewed after 5 s without a waveform record
    assert any(isinstance(m, WaveChunk) for m in msgs)
    assert not any(isinstance(m, Reading) for m in msgs)
    msgs = link.step(10.0)  # displayed values renewed after 3 intervals (15 s)
    assert _readings(msgs)[Channel.HR].value == 72.0
    assert [type(m) for m in peer.requests[asked:]] == [WaveRequest, PhdbRequest]


def test_disconnect_and_reconnect_reassociates() -> None:
    feed = ScriptedVitals(dict(VITALS))
    link = _link(feed)
    link.step(6.0)
    assert link.host.associated
    link.disconnect()
    assert not link.host.associated
    assert link.step(10.0) == []
    sent_before = len(link.host_sent)
    link.connect()  # the requests go out again at once
    assert len(link.host_sent) > sent_before
    assert link.host.associated
    start = len(link.messages)
    link.step(6.0)
    msgs = link.messages[start:]
    assert _readings(msgs)[Channel.HR].value == 72.0
    assert any(isinstance(m, WaveChunk) and m.channel is Channel.PLETH for m in msgs)
