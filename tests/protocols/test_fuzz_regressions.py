"""Fuzz regressions and the fuzz corpus's seeds, for every registered protocol (issue 12).

``bench/fuzz_codecs.py`` fuzzes each protocol's codec (both roles, with a round trip of
every message it decodes) and host; any input that made one raise is saved in
``fuzz_cases/`` named after the problem it caught (CONVENTIONS 15) and replayed here.
The seeds of that fuzzer are built by the helpers below (a recorded simulator session and
the byte strings of the protocol's own tests, which are the document's example frames), so
this file also checks that the seeds are what the fuzzer thinks they are: valid traffic
that decodes to messages and drives the host to readings. Together with a few
pathological inputs (nothing, 64 KiB of 0xFF, runs of start bytes, frames cut short) that
keeps the replay from passing vacuously.

A file in ``fuzz_cases/`` is either the raw bytes a device sent, or, when it starts with
``HOST_SCRIPT_MAGIC``, a host script: what a host received and when (``run_host_script``),
because some host states are reached only after a handshake and some time.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from kapmonitor.drivers import registry
from kapmonitor.drivers.codecs.base import Codec, Role
from kapmonitor.drivers.protocol import HostProtocol
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.testing import MemoryLink
from kapmonitor.model import Channel, Reading, WaveChunk

HERE = Path(__file__).resolve().parent
FUZZ_CASES = HERE / "fuzz_cases"
#: First bytes of a host script (as opposed to raw device bytes).
HOST_SCRIPT_MAGIC = b"KAPHOST1\n"
T0_US = 1_700_000_000_000_000

VITALS = {
    Channel.HR: 72.0,
    Channel.PULSE: 71.0,
    Channel.SPO2: 97.0,
    Channel.NIBP_SYS: 124.0,
    Channel.NIBP_DIA: 78.0,
    Channel.NIBP_MEAN: 93.0,
    Channel.RR: 14.0,
    Channel.ETCO2: 37.0,
    Channel.FICO2: 0.0,
    Channel.TEMP: 36.8,
    Channel.PERF_INDEX: 2.5,
}

#: A byte that opens a frame (or, for line protocols, a line's first character), per
#: protocol, for the "runs of start bytes" inputs.
START_BYTES: dict[str, bytes] = {
    "alaris": b"!",
    "bbraun-bcc": b"\x01",
    "fresenius": b"\x02",
    "ge-s5": b"\x7e",
    "intellivue": b"\xc0",
    "masimo": b"0",
    "ne1000": b"\x02",
    "nonin": b"\x01",
}
#: Protocols where a run of start bytes is idle fill, not garbage (GE §8: "an empty frame
#: (7E 7E) is not an error").
START_BYTES_ARE_IDLE = {"ge-s5"}


# --- helpers shared with bench/fuzz_codecs.py -----------------------------------------------


def module_stem(entry: registry.ProtocolEntry) -> str:
    """``nonin`` for ``kapmonitor.drivers.codecs.nonin:NoninCodec``."""
    return entry.codec.partition(":")[0].rsplit(".", 1)[-1]


def protocol_of(path: Path) -> registry.ProtocolEntry:
    """The protocol a fuzz case belongs to: the longest registered name its file name
    starts with (``ge-s5-...``, ``bbraun-bcc-...``)."""
    names = [n for n in registry.available() if path.name.startswith(n + "-")]
    if not names:
        raise ValueError(f"{path.name}: name does not start with a protocol name")
    return registry.get(max(names, key=len))


def _literal_bytes(node: ast.AST) -> bytes | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return node.value
    if (  # bytes.fromhex("...") or a test's hx("...")
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "fromhex")
            or (isinstance(node.func, ast.Name) and node.func.id == "hx")
        )
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        try:
            return bytes.fromhex(node.args[0].value)
        except ValueError:
            return None
    return None


def document_frames(entry: registry.ProtocolEntry) -> list[bytes]:
    """Every byte string written in the protocol's own test module: the document's example
    frames (both directions, bad-checksum cases included). Adjacent literals are joined by
    the parser, so a frame split over lines comes back whole. IntelliVue's are mostly user
    data, so they also come framed."""
    path = HERE / f"test_{module_stem(entry)}.py"
    if not path.exists():
        return []
    found: dict[bytes, None] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        b = _literal_bytes(node)
        if b:
            found[b] = None
    if entry.name == "intellivue":  # the document's examples are mostly unframed user data
        from kapmonitor.drivers.codecs.intellivue_framing import frame

        for b in list(found):
            if b[:1] != b"\xc0":
                found[frame(b)] = None
    return list(found)


def _host_event_records(events: list[tuple[int, bytes | None]], t0_us: int) -> bytes:
    out = bytearray()
    last = t0_us
    for now_us, data in events:
        dt_ms = (now_us - last) // 1000
        last += dt_ms * 1000
        while dt_ms > 255:
            out += bytes((255, 0))
            dt_ms -= 255
        if data is None:
            if dt_ms:
                out += bytes((dt_ms, 0))
            continue
        for i in range(0, len(data), 255):
            piece = data[i : i + 255]
            out += bytes((dt_ms, len(piece))) + piece
            dt_ms = 0
    return bytes(out)


def run_host_script(host: HostProtocol, script: bytes, t0_us: int = T0_US) -> list[Any]:
    """Play a host script: ``connection_made``, then records ``dt n data[n]``: advance the
    clock ``dt`` ms (and, if ``dt`` > 0, call ``tick``), then hand ``data`` to
    ``data_received``. A short last record gives what is there. What the host sends is
    drained and dropped. Returns every message the host produced."""
    if script.startswith(HOST_SCRIPT_MAGIC):
        script = script[len(HOST_SCRIPT_MAGIC) :]
    now = t0_us
    out: list[Any] = []
    host.connection_made(now)
    i, n = 0, len(script)
    while i < n:
        dt = script[i]
        size = script[i + 1] if i + 1 < n else 0
        data = script[i + 2 : i + 2 + size]
        i += 2 + size
        if dt:
            now += dt * 1000
            out.extend(host.tick(now))
        if data:
            out.extend(host.data_received(data, now))
        host.take_outgoing()
    return out


def script_data(script: bytes) -> bytes:
    """The device bytes of a host script, concatenated."""
    if script.startswith(HOST_SCRIPT_MAGIC):
        script = script[len(HOST_SCRIPT_MAGIC) :]
    out = bytearray()
    i = 0
    while i + 1 < len(script):
        size = script[i + 1]
        out += script[i + 2 : i + 2 + size]
        i += 2 + size
    return bytes(out)


def raw_script(data: bytes, chunk: int = 64, dt_ms: int = 10) -> bytes:
    """A host script delivering ``data`` in pieces of ``chunk`` bytes, ``dt_ms`` apart."""
    chunk = max(1, min(chunk, 255))
    return b"".join(
        bytes((dt_ms, len(data[i : i + chunk]))) + data[i : i + chunk]
        for i in range(0, len(data), chunk)
    )


@dataclass(frozen=True)
class Session:
    """A simulated session: what the peer sent, what the host sent, and the host script
    that replays the host's side of it (same clock, same ticks)."""

    peer_sent: bytes
    host_sent: bytes
    host_script: bytes
    host_messages: int


def record_session(entry: registry.ProtocolEntry, seconds: float = 3.0) -> Session:
    """Run the protocol's host against its simulated peer in memory for ``seconds``."""
    feed: Any
    if entry.kind == "monitor":
        feed = ScriptedVitals(values=dict(VITALS))
    else:
        feed = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    host = entry.host_class()(entry.kind)
    events: list[tuple[int, bytes | None]] = []
    tick, data_received = host.tick, host.data_received

    def rec_tick(now_us: int) -> list[Any]:
        events.append((now_us, None))
        return tick(now_us)

    def rec_data(data: bytes, now_us: int) -> list[Any]:
        events.append((now_us, bytes(data)))
        return data_received(data, now_us)

    host.tick, host.data_received = rec_tick, rec_data
    link = MemoryLink(host, entry.peer_class()(feed, seed=1), now_us=T0_US)
    link.connect()
    if entry.kind == "pump":
        feed.start(link.now_us)
    link.step(seconds)
    return Session(
        bytes(link.peer_sent),
        bytes(link.host_sent),
        _host_event_records(events, T0_US),
        len(link.messages),
    )


def decode(
    entry: registry.ProtocolEntry, role: Role, data: bytes, chunk: int = 0
) -> tuple[list[Any], Codec]:
    """Feed ``data`` to a fresh codec in pieces of ``chunk`` bytes (0: at once)."""
    codec = entry.codec_class()(role)
    size = chunk or len(data) or 1
    out: list[Any] = []
    for i in range(0, len(data), size):
        out.extend(codec.feed(data[i : i + size]))
    return out, codec


def pathological_inputs(entry: registry.ProtocolEntry) -> dict[str, bytes]:
    """Inputs that should give nothing, or only what the valid part holds."""
    start = START_BYTES.get(entry.name, b"\x00")
    return {
        "empty": b"",
        "ff-64k": b"\xff" * 65536,
        "start-bytes-4k": start * 4096,
        "nul-4k": b"\x00" * 4096,
    }


# --- the regressions -------------------------------------------------------------------------

PROTOCOLS = registry.available()
CASES = sorted(FUZZ_CASES.glob("*.bin")) if FUZZ_CASES.is_dir() else []


def case_kind(path: Path) -> str:
    """``roundtrip``: bytes whose messages did not survive ``decode(encode(m)) == m``;
    ``message``: a host script of valid frames with odd content (the fuzzer's message
    target) that made a host raise, nothing for a codec to count; ``crash``: garbage that
    made a codec or host raise."""
    if "-roundtrip-" in path.name:
        return "roundtrip"
    if "-message-" in path.name:
        return "message"
    return "crash"


@pytest.fixture(scope="module")
def sessions() -> dict[str, Session]:
    return {name: record_session(registry.get(name)) for name in PROTOCOLS}


def _feed_everywhere(entry: registry.ProtocolEntry, data: bytes) -> list[Codec]:
    """``data`` through both roles' codecs (at once, byte by byte, in 7-byte pieces) and
    through the host (at once and in pieces, 10 ms apart). Returns the host-role codecs."""
    host_codecs = []
    chunks = (0, 1, 7) if len(data) <= 8192 else (0, 4096)
    for role in (Role.HOST, Role.DEVICE):
        for chunk in chunks:
            _, codec = decode(entry, role, data, chunk)
            assert codec.stats.errors["internal"] == 0, (role, chunk, codec.stats.as_dict())
            if role is Role.HOST:
                host_codecs.append(codec)
    for chunk in (255, 1) if len(data) <= 8192 else (255,):
        run_host_script(entry.host_class()(entry.kind), raw_script(data, chunk))
    return host_codecs


def test_there_are_seeds_and_cases_for_every_protocol() -> None:
    assert set(PROTOCOLS) >= set(START_BYTES), "a built-in protocol left the registry?"
    for name in PROTOCOLS:
        assert document_frames(registry.get(name)), f"{name}: no document frames found"
    for path in CASES:
        protocol_of(path)  # every case names its protocol


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_fuzz_case(path: Path) -> None:
    """A saved fuzz failure: no codec or host raises on it any more, and

    - crash: the codec counts the garbage;
    - message: the frames still decode (else the test would pass vacuously);
    - roundtrip: every message decoded from it encodes to bytes that decode to the same
      message, or ``encode`` refuses it (``ValueError``), never changed on the way.
    """
    entry = protocol_of(path)
    kind = case_kind(path)
    raw = path.read_bytes()
    if raw.startswith(HOST_SCRIPT_MAGIC):
        run_host_script(entry.host_class()(entry.kind), raw)
        data = script_data(raw)
    else:
        assert kind != "message", "a message case is a host script"
        data = raw
    codecs = _feed_everywhere(entry, data)
    if kind == "crash":
        for codec in codecs:
            assert codec.stats.error_count > 0, (path.name, codec.stats.as_dict())
        return
    decoded = 0
    for role in (Role.HOST, Role.DEVICE) if kind == "roundtrip" else (Role.HOST,):
        msgs, codec = decode(entry, role, data)
        decoded += len(msgs)
        for m in msgs if kind == "roundtrip" else ():
            try:
                wire = codec.encode(m)
            except ValueError:
                continue
            assert decode(entry, role, wire)[0] == [m], (m, wire)
    assert decoded, "the case no longer decodes: the regression test would pass vacuously"


def _round_trip_messages() -> dict[str, tuple[str, Any]]:
    """Messages whose encoding the fuzzer's message target found wrong (the bytes of such
    a case do not hold the message, so it is kept here rather than in fuzz_cases/)."""
    from kapmonitor.drivers.codecs.masimo import MasimoRecord

    line = MasimoRecord(
        date="11/14/23", time="22:13:21", spo2=97, bpm=71, pi=2.53, serial="0000123456"
    )
    return {
        "masimo-pi-3-decimals": ("masimo", replace(line, pi=2.529)),  # "02.53": rounded
        "masimo-pi-minus-zero": ("masimo", replace(line, pi=-0.0)),  # "-0.00": refused
        "masimo-pi-nan": ("masimo", replace(line, pi=math.nan)),  # "  nan": refused
        "masimo-spco-inf": ("masimo", replace(line, spco=math.inf)),
        "masimo-serial-dash": ("masimo", replace(line, serial="-")),  # "SN=-": missing
    }


ROUND_TRIP_MESSAGES = _round_trip_messages()


@pytest.mark.parametrize(
    ("name", "message"), list(ROUND_TRIP_MESSAGES.values()), ids=list(ROUND_TRIP_MESSAGES)
)
def test_message_round_trips_or_is_refused(name: str, message: Any) -> None:
    """``decode(encode(m)) == m``, or ``encode`` refuses ``m`` with ``ValueError``."""
    entry = registry.get(name)
    for role in (Role.HOST, Role.DEVICE):
        try:
            wire = entry.codec_class()(role).encode(message)
        except ValueError:
            continue
        assert decode(entry, role, wire)[0] == [message], (role, wire)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_seeds_decode(name: str, sessions: dict[str, Session]) -> None:
    """The fuzzer's seeds are valid traffic: both directions of a simulated session decode
    without errors, its host script drives a fresh host to readings, and the document's
    frames decode to messages without raising."""
    entry = registry.get(name)
    s = sessions[name]
    msgs, codec = decode(entry, Role.HOST, s.peer_sent, 64)
    assert msgs, name
    # Nonin's ACK to the format command is a byte only the conversation can place.
    assert codec.stats.error_count <= (1 if name == "nonin" else 0), codec.stats.as_dict()
    if s.host_sent:  # Masimo's host sends nothing
        msgs, codec = decode(entry, Role.DEVICE, s.host_sent, 64)
        assert msgs, name
        assert codec.stats.error_count == 0, codec.stats.as_dict()
    out = run_host_script(entry.host_class()(entry.kind), s.host_script)
    assert any(isinstance(m, Reading | WaveChunk) for m in out), name
    assert len(out) == s.host_messages  # the script replays the session exactly

    decoded = 0
    for frame in document_frames(entry):
        for role in (Role.HOST, Role.DEVICE):
            m, codec = decode(entry, role, frame)
            assert codec.stats.errors["internal"] == 0
            decoded += len(m)
        run_host_script(entry.host_class()(entry.kind), raw_script(frame))
    assert decoded, name


@pytest.mark.parametrize("name", PROTOCOLS)
def test_pathological_inputs(name: str, sessions: dict[str, Session]) -> None:
    """Nothing gives nothing; garbage gives no message and is counted; after it the
    parser resynchronises on the valid traffic that follows."""
    entry = registry.get(name)
    valid = sessions[name].peer_sent
    expected, _ = decode(entry, Role.HOST, valid)
    for label, junk in pathological_inputs(entry).items():
        _feed_everywhere(entry, junk)
        msgs, codec = decode(entry, Role.HOST, junk)
        if label == "empty":
            assert msgs == [], label
            assert codec.stats.error_count == 0, label
            continue
        assert msgs == [], label
        if not (label.startswith("start-bytes") and name in START_BYTES_ARE_IDLE):
            assert codec.stats.error_count > 0, (label, codec.stats.as_dict())
        after, _ = decode(entry, Role.HOST, junk + valid, 4096)
        # The first frame may be swallowed by an unfinished one the junk opened.
        assert len(after) >= len(expected) - 1, (label, len(after), len(expected))


@pytest.mark.parametrize("name", PROTOCOLS)
def test_truncated_frames(name: str, sessions: dict[str, Session]) -> None:
    """The first frames of a session, cut at every length, then the whole session: no
    raise, the cut frame is counted, and the rest decodes."""
    entry = registry.get(name)
    valid = sessions[name].peer_sent
    expected, _ = decode(entry, Role.HOST, valid)
    codec = entry.codec_class()(Role.HOST)
    frames = [codec.encode(m) for m in expected[:3]]
    for frame in frames:
        assert decode(entry, Role.HOST, frame)[0], "an encoded frame decodes"
        for cut in range(1, len(frame)):
            msgs, codec = decode(entry, Role.HOST, frame[:cut] + valid, 4096)
            assert codec.stats.errors["internal"] == 0
            assert len(msgs) >= len(expected) - 1, (cut, len(msgs), len(expected))
            assert len(msgs) <= len(expected) + 1
            completed = len(msgs) == len(expected) + 1  # GE: the next frame's flag ends it
            idle = name in START_BYTES_ARE_IDLE and frame[:cut] == START_BYTES[name] * cut
            if not (completed or idle):
                assert codec.stats.error_count > 0, (cut, codec.stats.as_dict())
