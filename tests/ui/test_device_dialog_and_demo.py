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
