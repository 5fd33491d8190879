"""The device dialog remembers the room's devices as the same PROTOCOL=PORT specs the
command line takes; ``kapmonitor demo`` runs headless to a screenshot (the smoke test of
CONVENTIONS 17 and the README pictures)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from kapmonitor.drivers import registry
from kapmonitor.drivers.connect import parse_spec
from kapmonitor.ui.device_dialog import DeviceDialog, configured_devices


def _protocols() -> list[tuple[str, str, str]]:
    return [(n, registry.get(n).title, registry.get(n).kind) for n in registry.available()]


def test_devices_are_added_checked_and_remembered(qtbot, settings: QSettings) -> None:
    dlg = DeviceDialog(_protocols(), [("/dev/ttyUSB0", "FTDI USB serial")], settings)
    qtbot.addWidget(dlg)
    dlg.protocol.setCurrentIndex(dlg.protocol.findData("intellivue"))
    dlg.port.setCurrentIndex(0)
    dlg.name.setCurrentText("monitor")
    dlg._add()
    dlg.protocol.setCurrentIndex(dlg.protocol.findData("bbraun-bcc"))
    dlg.port.setEditText("socket://10.1.2.3:4001")
    dlg.name.setCurrentText("monitor")
    dlg._add()
    assert "already named 'monitor'" in dlg.error.text()  # refused, with the reason
    dlg.name.setCurrentText("pump")
    dlg._add()
    dlg.port.setEditText("")
    dlg._add()
    assert "Choose or type a port" in dlg.error.text()
    dlg._save()
    specs = configured_devices(settings)
    assert specs == ["intellivue=/dev/ttyUSB0,name=monitor",
                     "bbraun-bcc=socket://10.1.2.3:4001,name=pump"]
    parsed = [parse_spec(s) for s in specs]
    assert [(p.protocol, p.port, p.name) for p in parsed] == [
        ("intellivue", "/dev/ttyUSB0", "monitor"),
        ("bbraun-bcc", "socket://10.1.2.3:4001", "pump")]
    again = DeviceDialog(_protocols(), [], settings)  # remembered
    qtbot.addWidget(again)
    assert again.specs() == specs


def test_devices_grouped_and_named_by_kind_and_tested_on_a_real_port(qtbot,
                                                                     settings: QSettings) -> None:
    """Issue 13 item 10: the dialog mixed monitors and pumps, named a pump "monitor" and
    could not test a port."""
    from kapmonitor.drivers.connect import try_device
    from kapmonitor.drivers.sim.feed import ScriptedVitals
    from kapmonitor.drivers.sim.peers.masimo import MasimoPeer
    from kapmonitor.drivers.sim.server import PtyServer
    from kapmonitor.model import Channel

    server = PtyServer(MasimoPeer(ScriptedVitals(values={Channel.SPO2: 97.0,
                                                         Channel.PULSE: 70.0})),
                       name="masimo").start()
    try:
        dlg = DeviceDialog(_protocols(), [(server.url, "pty")], settings, tester=try_device)
        qtbot.addWidget(dlg)
        dlg.protocol.setCurrentIndex(dlg.protocol.findData("bbraun-bcc"))
        assert dlg.name.currentText() == "pump"  # named by its kind
        assert dlg.name.findText("monitor") < 0
        dlg.port.setEditText("socket://10.1.2.3:4001")
        dlg._add()
        dlg.protocol.setCurrentIndex(dlg.protocol.findData("alaris"))
        assert dlg.name.currentText() == "pump2"
        dlg.protocol.setCurrentIndex(dlg.protocol.findData("masimo"))
        assert dlg.name.currentText() == "monitor"
        dlg.port.setCurrentIndex(0)
        dlg._add()
        assert [dlg.lists["monitor"].item(i).text() for i in range(dlg.lists["monitor"].count())
                ] == [f"masimo={server.url},name=monitor"]
        assert dlg.lists["pump"].count() == 1
        fut = dlg.test(f"masimo={server.url},name=monitor")
        qtbot.waitUntil(lambda: dlg.result.text().count("OK:") == 1, timeout=20_000)
        assert "first data" in dlg.result.text() and fut.done()
        # a port that answers nothing says so in words
        silent = try_device("bbraun-bcc=socket://127.0.0.1:9,name=pump", seconds=1.0)
        assert silent.startswith("no data from socket://127.0.0.1:9") and "\n" not in silent
        dlg.reject()
    finally:
        server.stop()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("scenario", ["standard", "desaturation"])
def test_demo_runs_headless_to_a_screenshot(scenario: str, tmp_path: Path, cli) -> None:
    png = tmp_path / f"{scenario}.png"
    db = tmp_path / "demo.sqlite"
    r = cli("demo", "--db", str(db), "--scenario", scenario, "--speed", "60",
            "--quit-after", "900", "--screenshot", str(png), timeout=180,
            env={"QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert _png_size(png) == (1280, 800)
    listing = cli("sessions", "--json", "--db", str(db))
    import json

    (session,) = json.loads(listing.stdout)
    assert session["demo"] is True
    assert session["status"] == "closed"
    assert cli("verify", "--db", str(db)).returncode == 0
