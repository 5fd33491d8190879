"""A simulated bedside: one scenario's patient and pump behind real protocol peers.

The rig builds a ``Simulation`` (patient, pump, timeline), puts the chosen monitor and pump
protocols' peers on pseudo-terminals (or loopback TCP listeners, like serial device
servers), applies the scenario's link faults to the right server at their times (cable
pulled, garbage, bit errors), and can log the simulator's ground truth as JSON lines, so a
recording made through the real path can be checked against what was simulated.
``kapmonitor simulate`` and ``kapmonitor demo`` both run on it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kapmonitor.model import Channel

from .. import registry
from .clock import ScaledClock
from .scenario import LinkFault, Simulation
from .server import PeerServer, PtyServer, TcpServer

__all__ = ["SimDevice", "SimulatorRig"]

log = logging.getLogger(__name__)


class CountingVitals:
    """The scenario's vitals feed, counting the wave samples (and numeric results) handed
    to the monitor peer, so a recording can be checked against what went on the wire."""

    def __init__(self, feed: Any) -> None:
        self.feed = feed
        self.sent: dict[str, int] = {}
        self._lock = threading.Lock()

    def numerics(self, now_us: int) -> Any:
        with self._lock:
            self.sent["numerics"] = self.sent.get("numerics", 0) + 1
        return self.feed.numerics(now_us)

    def wave(self, channel: Channel, rate_hz: float, n: int, now_us: int) -> Any:
        samples = self.feed.wave(channel, rate_hz, n, now_us)
        with self._lock:
            self.sent[channel.value] = self.sent.get(channel.value, 0) + len(samples)
        return samples

    def __getattr__(self, name: str) -> Any:  # quality(), request_nibp(), ...
        return getattr(self.feed, name)


@dataclass(frozen=True)
class SimDevice:
    role: str  # "monitor" or "pump"
    protocol: str
    server: PeerServer

    @property
    def url(self) -> str:
        return self.server.url


class SimulatorRig:
    def __init__(self, scenario: str, *, monitor: str | None = "intellivue",
                 pump: str | None = "bbraun-bcc", speed: float = 1.0, seed: int = 0,
                 tcp_port: int | None = None, link_dir: str | Path | None = None,
                 epoch_us: int | None = None, data_dir: str | Path | None = None,
                 truth_path: str | Path | None = None, truth_period_s: float = 1.0) -> None:
        self.clock = ScaledClock(speed, epoch_us)
        self.sim = Simulation.from_scenario(scenario, seed=seed, start_us=self.clock(),
                                            data_dir=data_dir)
        self.vitals = CountingVitals(self.sim.vitals)
        self.devices: list[SimDevice] = []
        port = tcp_port
        for role, protocol in (("monitor", monitor), ("pump", pump)):
            if protocol is None:
                continue
            entry = registry.get(protocol)
            if entry.kind != role:
                raise ValueError(f"{protocol} is a {entry.kind}, not a {role}")
            feed = self.vitals if role == "monitor" else self.sim.pump
            peer = entry.peer_class()(feed, seed=seed)
            server: PeerServer
            if port is not None:
                server = TcpServer(peer, port=port, clock=self.clock, name=protocol, seed=seed)
                port += 1 if port else 0
            else:
                link = Path(link_dir) / role if link_dir is not None else None
                server = PtyServer(peer, link=link, clock=self.clock, name=protocol, seed=seed)
            self.devices.append(SimDevice(role, protocol, server))
        self.truth_path = Path(truth_path) if truth_path is not None else None
        self.truth_period_s = truth_period_s
        self._truth_file: IO[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.faults_applied: list[LinkFault] = []
        self.finished = threading.Event()

    @property
    def speed(self) -> float:
        return self.clock.speed

    def device(self, role: str) -> SimDevice | None:
        return next((d for d in self.devices if d.role == role), None)

    def start(self) -> SimulatorRig:
        for d in self.devices:
            d.server.start()
        if self.truth_path is not None:
            self._truth_file = self.truth_path.open("w", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name="sim-timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for d in self.devices:
            d.server.stop()
        if self._truth_file is not None:
            # the exact tally of what went on the wire, after the servers stopped
            self._truth_file.write(json.dumps({"final": True, "t_us": self.clock(),
                                               "wave_samples_sent": dict(self.vitals.sent)})
                                   + "\n")
            self._truth_file.close()
            self._truth_file = None

    def wait(self, timeout: float | None = None) -> bool:
        """Until the scenario's duration has run (True) or ``timeout`` wall seconds."""
        return self.finished.wait(timeout)

    def __enter__(self) -> SimulatorRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _apply(self, fault: LinkFault) -> None:
        dev = self.device(fault.device)
        if dev is None:
            log.warning("scenario fault for a %s, but none is simulated", fault.device)
            return
        server = dev.server
        if fault.kind == "link_down":
            server.cut(fault.duration_s or 20.0)
        elif fault.kind == "garbage":
            total = fault.bytes or 0
            if fault.rate_bytes_s and fault.duration_s:
                total += int(fault.rate_bytes_s * fault.duration_s)
            server.inject_garbage(total or 64)
        elif fault.kind == "bit_errors":
            server.bit_errors(fault.probability or 1e-3, fault.duration_s or 10.0)
        else:
            log.warning("unknown link fault %r", fault.kind)
            return
        self.faults_applied.append(fault)

    def _run(self) -> None:
        next_truth = self.sim.start_us
        period_us = round(self.truth_period_s * 1e6)
        step_s = min(0.05, 0.5 / self.speed) if self.speed > 1 else 0.05
        while not self._stop.wait(step_s):
            now = self.clock()
            for fault in self.sim.events(now):
                self._apply(fault)
            if self._truth_file is not None:
                while next_truth <= now:
                    row = self.sim.truth(next_truth)
                    row["t_us"] = next_truth
                    row["wave_samples_sent"] = dict(self.vitals.sent)
                    self._truth_file.write(json.dumps(row) + "\n")
                    next_truth += period_us
                self._truth_file.flush()
            if now >= self.sim.end_us:
                self.finished.set()

    def ports(self) -> list[tuple[str, str]]:
        return [(d.protocol, d.url) for d in self.devices]


def serve_forever(rig: SimulatorRig, on_ready: Callable[[SimulatorRig], None],
                  stop: threading.Event) -> None:
    """Start the rig, report it, run until the scenario ends or ``stop`` is set."""
    with rig:
        on_ready(rig)
        while not stop.wait(0.1):
            if rig.finished.is_set():
                break
