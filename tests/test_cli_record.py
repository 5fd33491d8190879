"""``kapmonitor record --headless`` as a separate process against simulated devices on
real pseudo-terminals: it records until --duration or SIGTERM, closes cleanly, and stores
what the devices sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kapmonitor.drivers.sim.feed import ProgrammedPump, ScriptedVitals
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.ge_s5 import GeS5Peer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.model import Channel, now_us
from kapmonitor.store import SessionReader, Store

VITALS = {Channel.HR: 64.0, Channel.SPO2: 98.0, Channel.RR: 12.0, Channel.ETCO2: 36.0,
          Channel.NIBP_SYS: 118.0, Channel.NIBP_DIA: 76.0, Channel.NIBP_MEAN: 90.0}


@pytest.fixture
def devices():
    pump = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
    pump.start(now_us())
    monitor = PtyServer(GeS5Peer(ScriptedVitals(values=dict(VITALS))), name="ge").start()
    pumpsrv = PtyServer(BBraunPeer(pump), name="bbraun").start()
    yield monitor.url, pumpsrv.url
    monitor.stop()
    pumpsrv.stop()


def test_records_for_a_duration_and_closes(devices, db_path: Path, cli) -> None:
    mon, pump = devices
    r = cli("record", "--headless", "--db", str(db_path), "--device", f"ge-s5={mon}",
            "--device", f"bbraun-bcc={pump},name=pump", "--duration", "12", "--patient",
            "KAP-77", "--weight", "70", "--concentration", "1", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "recording session 1" in r.stdout
    assert "closed" in r.stdout
    store = Store.open(str(db_path))
    try:
        reader = SessionReader(store.engine, 1)
        s = reader.session()
        assert s["status"] == "closed"
        assert s["t0_us"] is not None  # the pump was running: infusion start from the pump
        hr = reader.numeric(Channel.HR)
        assert len(hr) >= 2  # GE S/5 sends displayed values every 5 s
        assert set(hr.values.tolist()) == {64.0}
        assert len(reader.wave(Channel.PLETH)) > 0
        pumps = reader.pump_events()
        assert pumps
        assert pumps[-1]["rate_ml_h"] == pytest.approx(52.5)
        devices_ = {d["source"] for d in reader.device_events()}
        assert devices_ == {"monitor", "pump"}
    finally:
        store.close()
    assert cli("verify", "--db", str(db_path)).returncode == 0


def test_sigterm_closes_cleanly_and_keeps_everything(devices, db_path: Path) -> None:
    mon, _ = devices
    with subprocess.Popen([sys.executable, "-m", "kapmonitor", "record", "--headless", "--db",
                           str(db_path), "--device", f"ge-s5={mon}"], stdout=subprocess.PIPE,
                          text=True, env=os.environ.copy()) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("recording session")
        store = Store.open(str(db_path))
        try:
            reader = SessionReader(store.engine, 1)
            waited = threading.Event()
            for _ in range(300):  # bounded poll of the file: recording has begun
                if len(reader.numeric(Channel.HR)) >= 1:
                    break
                waited.wait(0.1)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            assert "closed" in out
            assert reader.session()["status"] == "closed"
            assert len(reader.numeric(Channel.HR)) >= 1
        finally:
            store.close()


@pytest.mark.parametrize(("args", "reason"), [
    ([], "name at least one --device"),
    (["--device", "ge-s5"], "is not PROTOCOL=PORT"),
    (["--device", "philips=/dev/null"], "unknown protocol 'philips'"),
    (["--device", "ge-s5=/dev/null,speed=9"], "unknown option 'speed'"),
    (["--device", "ge-s5=/dev/null", "--weight", "900"],
     "weight 900 kg is above the hard maximum 250 kg (adult bounds, clinical.md §1.4)"),
    (["--device", "ge-s5=/dev/null", "--mg-per-kg", "-1"], "dose -1 mg/kg is below the hard"),
    (["--device", "ge-s5=/dev/null", "--concentration", "0"], "concentration 0 mg/mL is below"),
    (["--device", "ge-s5=/dev/null", "--duration", "inf"], "'inf' is not a finite number"),
    (["--device", "ge-s5=/dev/null"], "/dev/null is not a serial port"),
    (["--device", "ge-s5=/dev/null", "--alarm", "hr.high=lots"], "HR high must look like"),
])
def test_bad_input_one_line(args: list[str], reason: str, db_path: Path, cli) -> None:
    r = cli("record", "--headless", "--db", str(db_path), *args)
    assert r.returncode == 2
    assert reason in r.stderr and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    assert not db_path.exists()  # refused before anything was created


def test_programme_is_checked_like_the_dose_calculator(devices, db_path: Path, cli) -> None:
    """Every value `dose` refuses, `record` refuses with the same words; a value outside
    the usual range is recorded with a warning (there is no one to confirm it here)."""
    mon, _ = devices
    base = ["record", "--headless", "--db", str(db_path), "--device", f"ge-s5={mon}"]
    dose = ["dose", "--weight", "70", "--mg-per-kg", "0.5", "--minutes", "-40",
            "--concentration", "1"]
    refused = cli(*dose)
    assert refused.returncode == 2
    r = cli(*base, "--minutes", "-40")
    assert r.returncode == 2 and r.stderr == refused.stderr
    assert not db_path.exists()

    r = cli(*base, "--weight", "160", "--duration", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "kapmonitor: warning: weight 160 kg is above the usual range" in r.stderr
    store = Store.open(str(db_path))
    try:
        assert SessionReader(store.engine, 1).session()["weight_kg"] == 160.0
    finally:
        store.close()


def test_a_port_another_program_holds_is_refused(db_path: Path, cli) -> None:
    """Two recorders on one port would each get part of its bytes: the second is refused
    before it creates a session."""
    import serial

    server = PtyServer(GeS5Peer(ScriptedVitals(values=dict(VITALS))), name="ge").start()
    try:
        holder = serial.serial_for_url(server.url, exclusive=True)
        try:
            r = cli("record", "--headless", "--db", str(db_path), "--device",
                    f"ge-s5={server.url}", "--duration", "1")
        finally:
            holder.close()
    finally:
        server.stop()
    assert r.returncode == 2
    assert r.stderr == f"kapmonitor: error: port {server.url} is in use by another program\n"
    assert not db_path.exists()
