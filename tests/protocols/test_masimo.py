"""Masimo "ASCII 1" serial output (shared/protocols/masimo-ascii.md): codec, host and
simulated oximeter, through the real code on an in-memory link with a simulated clock."""

from __future__ import annotations

import calendar
import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapmonitor.drivers.codecs.masimo import RADICAL7_LAYOUT, MasimoCodec, MasimoRecord
from kapmonitor.drivers.devices.masimo import (
    HOST_COMMANDS,
    MODE_HINT,
    MasimoHost,
    exc_quality,
)
from kapmonitor.drivers.sim.feed import ScriptedVitals
from kapmonitor.drivers.sim.peers.masimo import MasimoPeer
from kapmonitor.drivers.testing import ExpectedExchange, MemoryLink, feed_in_pieces
from kapmonitor.model import Channel, Quality, Reading

HYP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- lines copied from the document (§6) ----------------------------------------------------

NORMAL = (
    b"03/14/24 10:15:02 SN=0000123456 SPO2=097% BPM=072 PI=03.45% SPCO=--.-% SPMET=00.8% "
    b"DESAT=00 PIDELTA=+02 PVI=014 ALARM=0000 EXC=000000\r\n"
)
SENSOR_OFF = (
    b"03/14/24 10:15:03 SN=0000123456 SPO2=---% BPM=--- PI=--.--% SPCO=--.-% SPMET=--.-% "
    b"DESAT=-- PIDELTA=+-- PVI=--- ALARM=0010 EXC=000020\r\n"
)
MDPNP = (
    b"12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% SPCO=01.0% SPMET=00.5% "
    b"DESAT=01 PIDELTA=-02 PVI=027 ALARM=0000 EXC=000820\r\n"
)
RADICAL5 = b"09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=20 EXC=800\r\n"


def _readings(msgs: list[object]) -> dict[Channel, Reading]:
    return {m.channel: m for m in msgs if isinstance(m, Reading)}


# --- §6 examples ----------------------------------------------------------------------------


def test_normal_line_decodes_to_documented_values() -> None:
    assert len(NORMAL) == 135  # §6: "135 bytes including CR LF"
    assert NORMAL.endswith(bytes.fromhex("45 58 43 3D 30 30 30 30 30 30 0D 0A"))
    c = MasimoCodec()
    (r,) = c.feed(NORMAL)
    assert r == MasimoRecord(
        date="03/14/24",
        time="10:15:02",
        serial="0000123456",
        spo2=97,
        bpm=72,
        pi=3.45,
        spco=None,
        spmet=0.8,
        desat=0,
        pidelta=2,
        pvi=14,
        alarm=0,
        exc=0,
    )
    assert c.encode(r) == NORMAL


def test_sensor_off_line_decodes_to_documented_values() -> None:
    assert len(SENSOR_OFF) == 135  # §6: "same length"
    c = MasimoCodec()
    (r,) = c.feed(SENSOR_OFF)
    assert (r.spo2, r.bpm, r.pi, r.spco, r.spmet, r.desat, r.pidelta, r.pvi) == (None,) * 8
    assert r.alarm == 0x0010  # alarm active
    assert r.exc == 0x000020  # sensor off
    assert r.has("PVI")
    assert c.encode(r) == SENSOR_OFF


def test_reference_and_radical5_lines() -> None:
    c = MasimoCodec()
    (r,) = c.feed(MDPNP)
    assert (r.spo2, r.bpm, r.pi, r.spco, r.spmet, r.desat, r.pidelta, r.pvi) == (
        98, 240, 20.0, 1.0, 0.5, 1, -2, 27,
    )  # fmt: skip
    assert r.exc == 0x000820
    assert c.encode(r) == MDPNP
    (r5,) = c.feed(RADICAL5)
    assert (r5.spo2, r5.bpm, r5.pi, r5.alarm, r5.exc, r5.serial) == (
        97,
        64,
        11.82,
        0x20,
        0x800,
        None,
    )
    assert r5.layout == ("SPO2", "BPM", "PI", "ALARM", "EXC")
    assert not r5.has("SN")
    assert not r5.has("PVI")
    # re-encoded with today's 4/6 hex digits: same values (§2 short form)
    assert c.feed(c.encode(r5)) == [r5]
    assert c.stats.error_count == 0


def test_host_maps_documented_lines() -> None:
    host = MasimoHost()
    host.connection_made(0)
    r = _readings(host.data_received(NORMAL, 7))
    assert {ch: x.value for ch, x in r.items()} == {
        Channel.SPO2: 97.0,
        Channel.PULSE: 72.0,
        Channel.PERF_INDEX: 3.45,
    }
    device_t = calendar.timegm((2024, 3, 14, 10, 15, 2, 0, 0, 0)) * 1_000_000
    for x in r.values():
        assert x.quality == Quality.OK
        assert x.t_us == 7  # receipt time, never the device clock (§2)
        assert x.device_t_us == device_t
        assert x.source == "oximeter"
    assert host.last_frame_us == 7
    assert host.device_serial == "0000123456"
    r = _readings(host.data_received(SENSOR_OFF, 8))
    for ch in (Channel.SPO2, Channel.PULSE, Channel.PERF_INDEX):
        assert math.isnan(r[ch].value)
        assert r[ch].quality == Quality.INVALID | Quality.SENSOR_OFF
    assert host.device_alarms == {"alarm_active"}
    # §6 reference: digits with "sensor off" set (a synthetic example): kept, but invalid
    r = _readings(host.data_received(MDPNP, 9))
    assert r[Channel.PULSE].value == 240.0
    assert r[Channel.SPO2].quality == Quality.INVALID | Quality.SENSOR_OFF
    # Radical-5 has no PVI and no SN but does print PI
    r = _readings(host.data_received(RADICAL5, 10))
    assert r[Channel.PERF_INDEX].value == 11.82
    assert r[Channel.SPO2].quality == Quality.OK  # EXC 0x800 is "Masimo SET", not a fault


def test_exception_bits_to_quality() -> None:
    assert exc_quality(0) == Quality.OK
    assert exc_quality(0x000001) == Quality.SENSOR_OFF | Quality.INVALID  # no sensor
    assert exc_quality(0x000002) == Quality.INVALID  # defective sensor
    assert exc_quality(0x000004) == Quality.QUESTIONABLE  # low perfusion
    assert exc_quality(0x000008) == Quality.INVALID  # pulse search
    assert exc_quality(0x000010) == Quality.ARTEFACT  # interference
    assert exc_quality(0x000040) == Quality.ARTEFACT  # ambient light
    assert exc_quality(0x000400) == Quality.QUESTIONABLE  # low signal IQ
    assert exc_quality(0x000800) == Quality.OK  # Masimo SET
    assert exc_quality(0x001000) == Quality.QUESTIONABLE  # no cable: an uncertain bit
    assert exc_quality(0x200000) == Quality.OK  # SpCO low confidence
    assert exc_quality(0x800000) == Quality.QUESTIONABLE  # reserved bit set
    assert exc_quality(None) == Quality.QUESTIONABLE  # EXC itself missing
    assert exc_quality(0x000014) == Quality.QUESTIONABLE | Quality.ARTEFACT


def test_implausible_values_are_flagged_not_clipped() -> None:
    host = MasimoHost()
    line = NORMAL.replace(b"SPO2=097%", b"SPO2=104%")
    r = _readings(host.data_received(line, 1))
    assert r[Channel.SPO2].value == 104.0
    assert r[Channel.SPO2].quality == Quality.OUT_OF_RANGE


def test_line_checks() -> None:
    c = MasimoCodec()
    assert c.feed(b"\r\n\n  \r\n") == []  # empty lines are no error (§8)
    assert c.stats.error_count == 0
    c.feed(b"Masimo Rad-8 trend 10:15:02 097 072\r\n")  # ASCII 2-ish text: refused
    c.feed(NORMAL.replace(b"EXC=000000", b"EXC=0000G0"))  # not hex
    c.feed(NORMAL.replace(b"SPO2=097%", b"SPO2=0+7%"))  # not a number
    c.feed(NORMAL[:100] + b"\r\n")  # cut before ALARM/EXC: a required tag is missing
    c.feed(NORMAL.replace(b"10:15:02", b"10:15:02X"))  # malformed head
    c.feed(NORMAL.replace(b"BPM=072", b"BPM=072 BPM=073"))  # a tag twice
    assert c.stats.frames == 0
    assert c.stats.errors["partial"] == 1  # the first line after a reset
    assert c.stats.errors["format"] == 5
    c.feed(b"x" * 600)  # no LF for too long (§8 line buffer cap)
    assert c.stats.errors["overflow"] == 1
    assert c.feed(b"more noise\r\n" + NORMAL) == [c.feed(NORMAL)[0]]
    assert c.stats.frames == 2
    # lowercase hex and tabs between fields are accepted (§5, §2)
    (r,) = c.feed(NORMAL.replace(b"EXC=000000", b"EXC=00ab2f").replace(b" PVI", b"\tPVI"))
    assert r.exc == 0x00AB2F


def test_partial_start_then_resync_on_the_next_head() -> None:
    """§8: the first bytes are usually a partial line; a line whose LF was lost still
    yields the next line (the decoder takes the last head on a line)."""
    c = MasimoCodec()
    got = c.feed(NORMAL[60:] + NORMAL + NORMAL[:70] + SENSOR_OFF)
    assert [r.time for r in got] == ["10:15:02", "10:15:03"]
    assert c.stats.errors["partial"] == 1
    assert c.stats.errors["garbage"] == 1


# --- hypothesis ----------------------------------------------------------------------------

_TAGS_OPTIONAL = ("SN", "PI", "SPCO", "SPMET", "DESAT", "PIDELTA", "PVI")
_ATTR = {"SN": "serial", "PI": "pi", "SPCO": "spco", "SPMET": "spmet", "DESAT": "desat",
         "PIDELTA": "pidelta", "PVI": "pvi"}  # fmt: skip


def _maybe(s: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.none(), s)


@st.composite
def records(draw: st.DrawFn) -> MasimoRecord:
    d2 = st.integers(0, 99).map(lambda n: f"{n:02d}")
    date = f"{draw(d2)}/{draw(d2)}/{draw(d2)}"
    time = f"{draw(d2)}:{draw(d2)}:{draw(d2)}"
    present = [t for t in _TAGS_OPTIONAL if draw(st.booleans())]
    gen = {
        "serial": st.text("0123456789ABCXYZ", min_size=1, max_size=12),
        "pi": st.integers(0, 9999).map(lambda k: k / 100),
        "spco": st.integers(0, 999).map(lambda k: k / 10),
        "spmet": st.integers(0, 999).map(lambda k: k / 10),
        "desat": st.integers(0, 99),
        "pidelta": st.integers(-99, 99),
        "pvi": st.integers(0, 999),
    }
    values = {_ATTR[t]: draw(_maybe(gen[_ATTR[t]])) for t in present}
    extra_tags = draw(st.lists(st.sampled_from(["SPHB", "SPOC", "RRA", "X2"]), unique=True))
    texts = {t: draw(st.text("0123456789.-+%", min_size=1, max_size=6)) for t in extra_tags}
    order = draw(st.permutations(["SPO2", "BPM", *present, *extra_tags]))
    layout = (*order, "ALARM", "EXC")
    extra = tuple((t, texts[t]) for t in layout if t in texts)  # in line order
    return MasimoRecord(
        date=date,
        time=time,
        spo2=draw(_maybe(st.integers(0, 999))),
        bpm=draw(_maybe(st.integers(0, 999))),
        alarm=draw(_maybe(st.integers(0, 0xFFFF))),
        exc=draw(_maybe(st.integers(0, 0xFFFFFF))),
        extra=extra,
        layout=layout,
        **values,
    )


@HYP
@given(st.lists(records(), min_size=1, max_size=8), st.lists(st.integers(0, 2000)))
def test_roundtrip_and_pieces(recs: list[MasimoRecord], cuts: list[int]) -> None:
    enc = MasimoCodec()
    for r in recs:
        assert MasimoCodec().feed(enc.encode(r)) == [r]
    stream = b"".join(enc.encode(r) for r in recs)
    c = MasimoCodec()
    assert feed_in_pieces(c, stream, cuts) == recs
    assert c.stats.frames == len(recs)
    assert c.stats.error_count == 0
    assert c.stats.bytes_in == len(stream)


_WS = b" \t\r\n\x0b\x0c"


@HYP
@given(st.data())
def test_valid_lines_survive_garbage_and_truncation(data: st.DataObject) -> None:
    recs = data.draw(st.lists(records(), min_size=1, max_size=6))
    enc = MasimoCodec()
    stream = bytearray()
    bad = 0
    for r in recs:
        if data.draw(st.booleans()):
            if data.draw(st.booleans()):
                chunk = data.draw(st.binary(min_size=1, max_size=60))
            else:  # a line cut short (no line end): it runs into the next line
                line = enc.encode(data.draw(records()))
                chunk = line[: data.draw(st.integers(1, len(line) - 3))]
            stream += chunk
            bad += bool(chunk.strip(_WS))
        stream += enc.encode(r)
    c = MasimoCodec()
    cuts = data.draw(st.lists(st.integers(0, len(stream))))
    assert feed_in_pieces(c, bytes(stream), cuts) == recs
    assert c.stats.error_count >= bad


@HYP
@given(st.data())
def test_bit_flips_never_raise_and_spare_the_other_lines(data: st.DataObject) -> None:
    """ASCII 1 has no checksum (§8): a flipped digit can decode to another number, so a
    damaged line may come out changed or not at all; every undamaged line must still come
    out, in order, and nothing raises."""
    recs = data.draw(st.lists(records(), min_size=2, max_size=6))
    enc = MasimoCodec()
    lines = [bytearray(enc.encode(r)) for r in recs]
    hit = data.draw(st.sets(st.integers(0, len(lines) - 1), max_size=len(lines) - 1))
    for i in hit:
        pos = data.draw(st.integers(0, len(lines[i]) - 1))
        lines[i][pos] ^= 1 << data.draw(st.integers(0, 7))
    c = MasimoCodec()
    out = c.feed(b"".join(lines))
    it = iter(out)
    for i, r in enumerate(recs):
        if i not in hit:
            assert any(o == r for o in it), f"line {i} lost"


# --- host: expected exchange, link with the simulated oximeter ------------------------------


def test_expected_exchange_host_only_listens() -> None:
    """§1: one-directional. The script's lines are all unsolicited; the host sends nothing."""
    script = ExpectedExchange([(b"", NORMAL), (b"", SENSOR_OFF)])
    host = MasimoHost()
    link = MemoryLink(host, script)
    link.connect()
    link.step(5.0)
    script.assert_done()
    assert bytes(link.host_sent) == b""
    assert not HOST_COMMANDS
    r = _readings(link.messages)
    assert r[Channel.SPO2].quality == Quality.INVALID | Quality.SENSOR_OFF
    with pytest.raises(RuntimeError, match="one-way"):
        host.send(b"x")


VITALS: dict[Channel, float | None] = {
    Channel.SPO2: 96.6,
    Channel.PULSE: 71.2,
    Channel.PERF_INDEX: 3.456,
}


def test_host_and_peer_one_hz_values_and_never_a_byte_from_the_host() -> None:
    feed = ScriptedVitals(dict(VITALS))
    peer = MasimoPeer(feed, start_mid_line=True)
    link = MemoryLink(MasimoHost(), peer, chunk=17)
    link.connect()
    msgs = link.step(60.0)
    readings = [m for m in msgs if isinstance(m, Reading)]
    by_ch: dict[Channel, list[Reading]] = {}
    for r in readings:
        by_ch.setdefault(r.channel, []).append(r)
    assert peer.lines_sent == 60  # one line a second (§1)
    # protocol resolution: integers for SpO2 and pulse, 0.01 for PI (§3)
    expected = {Channel.SPO2: 97.0, Channel.PULSE: 71.0, Channel.PERF_INDEX: 3.46}
    for ch, v in expected.items():
        assert len(by_ch[ch]) == 60
        assert all(r.value == v and r.quality == Quality.OK for r in by_ch[ch])
    times = [r.t_us for r in by_ch[Channel.SPO2]]
    assert {b - a for a, b in itertools.pairwise(times)} == {1_000_000}
    assert link.host.codec.stats.errors["partial"] == 1  # the half line at start-up (§8)
    assert link.host.hint is None
    # the host never wrote a byte, and the device never received one
    link.disconnect()
    link.connect()
    link.step(5.0)
    assert bytes(link.host_sent) == b""
    assert bytes(peer.received) == b""


def test_sensor_off_through_the_link() -> None:
    feed = ScriptedVitals(dict(VITALS))
    link = MemoryLink(MasimoHost(), MasimoPeer(feed))
    link.connect()
    link.step(2.0)
    feed.values[Channel.SPO2] = None
    feed.values[Channel.PULSE] = None
    feed.values[Channel.PERF_INDEX] = None
    r = _readings(link.step(1.0))
    for ch in (Channel.SPO2, Channel.PULSE, Channel.PERF_INDEX):
        assert math.isnan(r[ch].value)
        assert r[ch].quality == Quality.INVALID | Quality.SENSOR_OFF
    assert link.host.device_alarms == {"alarm_active"}


def test_silent_oximeter_goes_stale_and_resumes() -> None:
    feed = ScriptedVitals(dict(VITALS))
    peer = MasimoPeer(feed)
    link = MemoryLink(MasimoHost(), peer)
    link.connect()
    link.step(3.0)
    last = link.host.last_frame_us
    assert last is not None
    peer.silent = True
    assert link.step(5.0) == []
    assert link.host.last_frame_us == last
    assert link.now_us - last > MasimoHost.stale_after_s * 1e6
    peer.silent = False
    assert _readings(link.step(1.0))[Channel.SPO2].value == 97.0


def test_reconnect_resumes() -> None:
    feed = ScriptedVitals(dict(VITALS))
    link = MemoryLink(MasimoHost(), MasimoPeer(feed, start_mid_line=True))
    link.connect()
    link.step(3.0)
    link.disconnect()
    assert link.step(3.0) == []
    link.connect()
    msgs = link.step(3.0)
    assert len([m for m in msgs if isinstance(m, Reading) and m.channel is Channel.SPO2]) == 3
    assert bytes(link.host_sent) == b""


def test_wrong_output_mode_gives_a_hint() -> None:
    """§1: a Rad-8 defaults to ASCII 2; lines that never parse point the user to ASCII 1."""
    host = MasimoHost()
    host.connection_made(0)
    for i in range(3):
        assert host.data_received(b"SPO2 97  PR 72  PI 3.4  TREND\r\n", i) == []
    assert host.hint == MODE_HINT
    host.data_received(NORMAL, 4)
    assert host.hint is None


def test_record_fields_must_fit_the_line() -> None:
    c = MasimoCodec()
    with pytest.raises(ValueError, match="does not fit"):
        c.encode(MasimoRecord("03/14/24", "10:15:02", spo2=1000))
    with pytest.raises(ValueError, match="not in the layout"):
        c.encode(
            MasimoRecord("03/14/24", "10:15:02", pvi=3, layout=("SPO2", "BPM", "ALARM", "EXC"))
        )
    assert c.encode(MasimoRecord("03/14/24", "10:15:02", layout=RADICAL7_LAYOUT)).startswith(
        b"03/14/24 10:15:02 SN=---------- SPO2=---%"
    )
