"""Every registered protocol, through the real path (CONVENTIONS 13, 14): its host
protocol in a ``DeviceRunner`` against its peer served on a real pseudo-terminal and on
``socket://`` loopback. Values handed to the peer must come out as readings or pump states;
closing the peer raises DISCONNECTED; bringing it back under the same name re-runs the
handshake and data resumes, with everything received before kept."""

from __future__ import annotations

import inspect
import queue
import threading
from pathlib import Path

import pytest

from kapmonitor.drivers import registry
from kapmonitor.drivers.codecs.base import Codec
from kapmonitor.drivers.protocol import HostProtocol, PeerProtocol
from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.server import PtyServer, TcpServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import (
    Channel,
    DeviceState,
    DeviceStatus,
    PumpState,
    Reading,
    WaveChunk,
    now_us,
)

from ..conftest import SHARED

ENTRIES = [registry.get(n) for n in registry.available()]
IDS = [e.name for e in ENTRIES]

VITALS = {Channel.HR: 72.0, Channel.PULSE: 71.0, Channel.SPO2: 97.0, Channel.NIBP_SYS: 124.0,
          Channel.NIBP_DIA: 78.0, Channel.NIBP_MEAN: 93.0, Channel.RR: 14.0,
          Channel.ETCO2: 37.0, Channel.FICO2: 0.0, Channel.TEMP: 36.8, Channel.PERF_INDEX: 2.5}


def _feed(entry: registry.ProtocolEntry):
    if entry.kind == "monitor":
        return ScriptedVitals(values=dict(VITALS))
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    pump.start(now_us())
    return pump


def _data(msgs: list) -> list:
    return [m for m in msgs if isinstance(m, Reading | WaveChunk | PumpState)]


def _states(msgs: list) -> list[DeviceState]:
    return [m.state for m in msgs if isinstance(m, DeviceStatus)]


def _collect(q: queue.Queue, until, timeout: float) -> list:
    got: list = []
    while True:
        try:
            got.extend(q.get(timeout=timeout))
        except queue.Empty:
            pytest.fail(f"timed out after {timeout} s; states {_states(got)}, "
                        f"{len(_data(got))} data messages")
        if until(got):
            return got


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_conformance(entry: registry.ProtocolEntry) -> None:
    codec, host, peer = entry.codec_class(), entry.host_class(), entry.peer_class()
    assert issubclass(codec, Codec)
    assert issubclass(host, HostProtocol)
    assert issubclass(peer, PeerProtocol)
    assert host.protocol == entry.name
    assert (SHARED / "protocols" / entry.document).exists()
    assert codec.document.endswith(entry.document)
    for cls in (codec, host, peer):
        assert inspect.getdoc(inspect.getmodule(cls)), f"{cls.__module__} has no docstring"
        assert inspect.getdoc(cls), f"{cls.__qualname__} has no docstring"
    assert host.stale_after_s > 0
    assert host.serial_settings.baudrate > 0


@pytest.mark.parametrize("kind", ["pty", "tcp"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_device_against_peer_disconnect_and_return(entry: registry.ProtocolEntry, kind: str,
                                                   tmp_path: Path) -> None:
    def serve(port: int = 0):
        peer = entry.peer_class()(_feed(entry), seed=1)
        if kind == "pty":
            return PtyServer(peer, link=tmp_path / "device", name=entry.name).start()
        return TcpServer(peer, port=port, name=entry.name).start()

    server = serve()
    q: queue.Queue = queue.Queue()
    host = entry.host_class()(entry.kind)
    runner = DeviceRunner(server.url, host, q.put, backoff_s=(0.05, 0.2)).start()
    budget = max(20.0, 4 * host.stale_after_s)
    try:
        before = _collect(q, lambda m: len(_data(m)) >= 3, budget)
        assert DeviceState.STREAMING in _states(before)
        data = _data(before)
        if entry.kind == "monitor":
            readings = {r.channel: r.value for r in data if isinstance(r, Reading)}
            assert readings, f"no numerics from {entry.name}: {data[:3]}"
            for ch, value in readings.items():
                if ch in VITALS:
                    assert value == pytest.approx(VITALS[ch], abs=0.51), ch
        else:
            states = [m for m in data if isinstance(m, PumpState)]
            assert any(s.rate_ml_h == pytest.approx(52.5, abs=0.1) for s in states), states[:2]

        # issue 7: everything a peer sends decodes with zero errors when no fault is scripted
        assert host.codec.stats.error_count == 0, host.codec.stats.as_dict()
        port = getattr(server, "port", 0)
        server.stop()
        _collect(q, lambda m: DeviceState.DISCONNECTED in _states(m), budget)
        server = serve(port)
        after = _collect(q, lambda m: DeviceState.STREAMING in _states(m)
                         and len(_data(m)) >= 2, budget)
        assert _data(after)
    finally:
        runner.stop()
        server.stop()


GOODBYE = [e for e in ENTRIES if e.name in ("intellivue", "ge-s5")]


@pytest.mark.parametrize("entry", GOODBYE, ids=[e.name for e in GOODBYE])
def test_deliberate_stop_says_goodbye(entry: registry.ProtocolEntry) -> None:
    """IntelliVue releases its association (§3.6), GE S/5 cancels its requests (§8), so
    the monitor does not keep streaming into a closed port."""
    peer = entry.peer_class()(_feed(entry), seed=1)
    server = PtyServer(peer, name=entry.name).start()
    q: queue.Queue = queue.Queue()
    host = entry.host_class()("monitor")
    runner = DeviceRunner(server.url, host, q.put).start()
    try:
        _collect(q, lambda m: len(_data(m)) >= 2 and host.associated, 30)
        before = server.bytes_in
        runner.stop()
        # the goodbye reached the device (read by the peer a moment after the port closed)
        arrived = threading.Event()
        for _ in range(200):
            if server.bytes_in > before:
                break
            arrived.wait(0.01)
        assert server.bytes_in > before
        if entry.name == "intellivue":
            assert host.closed
    finally:
        runner.stop()
        server.stop()
