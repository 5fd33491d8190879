"""Render the documentation screenshots offscreen (docs/screenshots/*.png):

- ``live_alarm.png``: the live view at 1280x800, 33 min into an infusion, with the pressor
  response on the trends, notes and cues as markers, and a high-priority SpO2 alarm;
- ``notes_panel.png``: the notes panel with cues, an assessment and an amended note;
- ``setup_dialog.png`` / ``setup_refused.png``: the setup dialog with a warning to tick, and
  with a refused weight.

    .venv/bin/python -m tests.ui.screenshots [OUT_DIR]

The history is synthetic (tests/ui/synthetic.py) and goes through the session's bus; the
last seconds come from a simulated GE S/5 and B. Braun pump on pseudo-terminals.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from kapmonitor.cues import CueLibrary
from kapmonitor.drivers.devices.bbraun import BBraunHost
from kapmonitor.drivers.devices.ge_s5 import GeS5Host
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.ge_s5 import GeS5Peer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel, now_us
from kapmonitor.scales import load_scales
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import Store
from kapmonitor.ui import theme
from kapmonitor.ui.main_window import MainWindow
from kapmonitor.ui.setup_dialog import SetupDialog

from .synthetic import NIBP, RealisticVitals, publish_history, scenario

_MIN = 60_000_000


class _StartedAt:
    """Host time, except the first reading (the session's opening) is ``start_us``."""

    def __init__(self, start_us: int) -> None:
        self.first: int | None = start_us

    def __call__(self) -> int:
        if self.first is not None:
            t, self.first = self.first, None
            return t
        return now_us()


def _pump_events(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)


def live_view(app: QApplication, out: Path, work: Path) -> None:
    store = Store.open(str(work / "shots.sqlite"))
    cfg = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                        weight_kg=70.0, dose_mg_per_kg=0.5, duration_min=40,
                        concentration_mg_ml=1.0, demo=True)
    infusion_min, baseline_min = 33.0, 9.0
    start_us = now_us() - int((infusion_min + baseline_min) * _MIN)
    # the session was opened at the start of the synthetic baseline, not now
    session = LiveSession(store, cfg, clock=_StartedAt(start_us)).start()
    lib = CueLibrary.defaults()
    settings = QSettings(str(work / "ui.ini"), QSettings.Format.IniFormat)
    win = MainWindow(session, demo=True, cue_library=lib, settings=settings,
                     enable_audio=False)
    win.resize(1280, 800)
    win.show()
    servers: list[PtyServer] = []
    try:
        now = session.clock()
        t0 = publish_history(session.bus.publish, now, baseline_min=baseline_min,
                             infusion_min=infusion_min,
                             rate_ml_h=52.5, vtbi_ml=35.0, desat_from_min=infusion_min - 0.9)
        _pump_events(app, 0.5)
        notes = win.notes
        for minutes, cue_id in ((-6, "SET-ROOM"), (-3, "INT-STATE"), (0.2, "MUS-START"),
                                (2.5, "BR-SLOW"), (11, "IMG-SAFE"), (24, "RA-SAFE"),
                                (27, "OBS-TEARFUL")):
            cue = lib[cue_id]
            f = cue.annotation_fields()
            notes.log(f["kind"], f["text"], code=f["code"], marker=cue.label,
                      t_us=t0 + int(minutes * _MIN))
        moaas = load_scales()["moaa-s"].score([4])
        f = moaas.annotation_fields()
        notes.log(f["kind"], f["text"], code=f["code"], value=f["value"], marker="MOAA/S 4",
                  t_us=t0 + 15 * _MIN)
        first = notes.log("observation", "Says the room feels far away; calm",
                          t_us=t0 + int(19.5 * _MIN))
        notes.log("observation", "BP up, asymptomatic; recheck in 5 min",
                  t_us=t0 + int(25.2 * _MIN))
        deadline = time.monotonic() + 10
        while first.entry_id is None and time.monotonic() < deadline:
            _pump_events(app, 0.05)
        if first.entry_id is not None:
            notes.select_entry(first)
            notes.begin_amend()
            notes.note.setText("Says the room feels far away; calm, smiling")
            notes._enter()

        vitals = RealisticVitals({k: v for k, v in scenario(infusion_min).items()
                                  if k not in NIBP and k is not Channel.PULSE})
        vitals.values[Channel.SPO2] = 85.0
        monitor = PtyServer(GeS5Peer(vitals), name="monitor").start()
        servers.append(monitor)
        pump_prog = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
        pump_prog.start(t0)
        pump = PtyServer(BBraunPeer(pump_prog), name="pump").start()
        servers.append(pump)
        session.attach("monitor", DeviceRunner(monitor.url, GeS5Host("monitor"),
                                               session.bus.publish), protocol="ge-s5")
        session.attach("pump", DeviceRunner(pump.url, BBraunHost("pump"),
                                            session.bus.publish), protocol="bbraun-bcc")
        _pump_events(app, 11.0)  # a full 10-s sweep of live waves
        notes.timeline.clearSelection()
        win.grab_png(out / "live_alarm.png")
        if first.item is not None:
            first.item.setExpanded(True)  # the amended note with its original under it
        notes.category_box.setCurrentIndex(notes.category_box.findData("reassurance"))
        _pump_events(app, 0.2)
        notes.grab().save(str(out / "notes_panel.png"))
        print("frames:", win.frame_stats())
    finally:
        win.quit_now()
        win.shutdown()
        session.close(author="screenshots")
        for s in servers:
            s.stop()
        win.deleteLater()
        app.processEvents()
        store.close()


def setup_dialogs(app: QApplication, out: Path) -> None:
    defaults = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                             dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0)
    for name, kg in (("setup_dialog.png", "160"), ("setup_refused.png", "900")):
        d = SetupDialog(None, demo=True, defaults=defaults)
        d.weight.setText(kg)
        d.weight2.setText(kg)
        d.show()
        _pump_events(app, 0.2)
        d.adjustSize()
        _pump_events(app, 0.2)
        d.grab().save(str(out / name))
        d.reject()
        d.deleteLater()
    app.processEvents()


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    theme.apply_theme(app)
    with tempfile.TemporaryDirectory() as tmp:
        live_view(app, out, Path(tmp))
        setup_dialogs(app, out)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
