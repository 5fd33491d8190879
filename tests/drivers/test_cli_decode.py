"""``kapmonitor decode`` and ``kapmonitor ports`` as a user runs them (subprocesses).

For every protocol a capture is made the honest way: its host and peer run a session in
memory and the bytes the peer sent are the capture. ``decode`` must print exactly the
messages the codec finds, as JSON, with zero errors; on random bytes it exits 0 and counts
errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kapmonitor.drivers import registry
from kapmonitor.drivers.codecs.base import Role
from kapmonitor.drivers.testing import MemoryLink

from .test_all_protocols import ENTRIES, IDS, _feed


def _capture(entry: registry.ProtocolEntry) -> bytes:
    link = MemoryLink(entry.host_class()(entry.kind), entry.peer_class()(_feed(entry), seed=3))
    link.connect()
    link.step(30.0)
    return bytes(link.peer_sent)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_decode_prints_every_message_as_json(entry: registry.ProtocolEntry, tmp_path: Path,
                                             cli) -> None:
    capture = _capture(entry)
    assert capture, "the peer sent nothing in 30 s"
    path = tmp_path / "capture.bin"
    path.write_bytes(capture)
    codec = entry.codec_class()(Role.HOST)
    expected = codec.feed(capture)
    r = cli("decode", "--protocol", entry.name, str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(expected) > 0
    first = json.loads(lines[0])
    assert first["type"] == type(expected[0]).__name__
    assert f"{len(expected)} messages" in r.stderr
    # at most a reply byte that only makes sense after a request (Nonin's ACK to the format
    # command) is unknown to a decoder without the conversation's context
    assert codec.stats.error_count <= 1
    assert f" {codec.stats.error_count} errors" in r.stderr


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_decode_random_bytes_counts_errors_and_exits_0(entry: registry.ProtocolEntry,
                                                       cli) -> None:
    noise = random.Random(entry.name).randbytes(20_000)
    r = cli("decode", "--protocol", entry.name, "-", input=noise.decode("latin-1"))
    assert r.returncode == 0, r.stderr
    errors = int(r.stderr.split(" errors")[0].rsplit(" ", 1)[1])
    assert errors > 0


def test_decode_list_and_bad_input(cli) -> None:
    r = cli("decode", "--list")
    assert r.stdout.split() == registry.available()
    bad = cli("decode", "--protocol", "philips", "x.bin")
    assert bad.returncode == 2
    assert "unknown protocol 'philips'" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = cli("decode", "--protocol", "masimo", "/nonexistent/capture.bin")
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_ports_lists_through_pyserial(cli) -> None:
    r = cli("ports", "--json")
    assert r.returncode == 0
    from serial.tools import list_ports
    assert [p["port"] for p in json.loads(r.stdout)] == sorted(
        p.device for p in list_ports.comports())


def test_decode_document_examples_masimo(tmp_path: Path, cli) -> None:
    """masimo-ascii.md §6: the normal and sensor-off example lines."""
    from ..protocols.test_masimo import NORMAL, SENSOR_OFF

    path = tmp_path / "masimo.txt"
    path.write_bytes(b"garbage before the first line\r\n" + NORMAL + SENSOR_OFF)
    r = cli("decode", "--protocol", "masimo", str(path))
    assert r.returncode == 0
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 2
    first = json.dumps(lines[0])
    assert '"spo2": 97' in first
    assert '"bpm": 72' in first
    assert "2 messages" in r.stderr


def test_decode_document_examples_intellivue_both_directions(tmp_path: Path, cli) -> None:
    """philips-intellivue-mib.md §1.5: the framed MDS Create Event Result and Association
    Release Request are sent by the client (host), so they decode with --from host."""
    from ..protocols.test_intellivue import MDS_RESULT_WIRE, RELEASE_WIRE

    path = tmp_path / "iv.bin"
    path.write_bytes(MDS_RESULT_WIRE + RELEASE_WIRE)
    r = cli("decode", "--protocol", "intellivue", "--from", "host", str(path))
    assert r.returncode == 0, r.stderr
    types = [json.loads(x)["type"] for x in r.stdout.splitlines()]
    assert len(types) == 2
    assert " 0 errors" in r.stderr
