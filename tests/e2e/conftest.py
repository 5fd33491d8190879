"""Two real processes, as in a clinic: ``kapmonitor simulate`` serving devices on ptys and
``kapmonitor record --headless`` recording them, sharing one simulated clock (same
``--speed`` and ``--epoch``) so the record lines up with the simulator's truth log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class SimRun:
    ports: dict[str, str]
    truth: Path
    epoch: int
    speed: float
    proc: subprocess.Popen

    def truth_rows(self) -> list[dict]:
        return [json.loads(x) for x in self.truth.read_text().splitlines()]


def start_simulator(tmp_path: Path, scenario: str, speed: float, *, monitor: str = "intellivue",
                    pump: str = "bbraun-bcc", extra: tuple[str, ...] = ()) -> SimRun:
    epoch = time.time_ns() // 1000
    truth = tmp_path / f"{scenario}-truth.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kapmonitor", "simulate", "--scenario", scenario,
         "--speed", str(speed), "--epoch", str(epoch), "--seed", "7", "--monitor", monitor,
         "--pump", pump, "--truth", str(truth), "--link-dir", str(tmp_path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    ports = {}
    for _ in range(2 if pump != "none" and monitor != "none" else 1):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"simulate printed nothing: {proc.stderr.read()}")
        protocol, port = line.split()
        ports[protocol] = port
    # the record connects to the stable links, which survive a simulated cable pull
    links = {monitor: str(tmp_path / "monitor"), pump: str(tmp_path / "pump")}
    return SimRun({p: links[p] for p in ports}, truth, epoch, speed, proc)


def stop(run: SimRun) -> None:
    run.proc.terminate()
    try:
        run.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.communicate()


def record(db: Path, run: SimRun, sim_seconds: float, *extra: str,
           timeout: float = 400) -> subprocess.CompletedProcess[str]:
    devices = []
    for protocol, port in run.ports.items():
        devices += ["--device", f"{protocol}={port}"]
    return subprocess.run(
        [sys.executable, "-m", "kapmonitor", "record", "--headless", "--db", str(db), *devices,
         "--speed", str(run.speed), "--epoch", str(run.epoch), "--duration", str(sim_seconds),
         "--patient", "SIM-1", "--weight", "70", "--mg-per-kg", "0.5", "--minutes", "40",
         "--concentration", "1", *extra],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), check=False)


@pytest.fixture
def simulator(tmp_path: Path):
    runs: list[SimRun] = []

    def start(scenario: str, speed: float, **kw) -> SimRun:
        run = start_simulator(tmp_path, scenario, speed, **kw)
        runs.append(run)
        return run

    yield start
    for run in runs:
        stop(run)
