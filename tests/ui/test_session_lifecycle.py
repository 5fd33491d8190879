"""Issue 13 item 10: closing a session quit the app, so the next patient needed a relaunch.
The bare ``kapmonitor`` GUI now returns to the setup dialog after a session is closed; the
flow runs here in-process through ``kapmonitor.cli.gui.run`` with real dialogs, a real
window, a simulated oximeter on a pty and a real SQLite file; a timer plays the nurse."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from kapmonitor.drivers.sim.feed import ScriptedVitals
from kapmonitor.drivers.sim.peers.masimo import MasimoPeer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.model import Channel
from kapmonitor.ui.device_dialog import save_devices
from kapmonitor.ui.main_window import MainWindow
from kapmonitor.ui.setup_dialog import SetupDialog


def test_closing_a_session_returns_to_the_setup_dialog(qapp: QApplication, tmp_path: Path,
                                                       db_path: Path) -> None:
    from kapmonitor.cli import gui

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path))
    server = PtyServer(MasimoPeer(ScriptedVitals(values={Channel.SPO2: 97.0,
                                                         Channel.PULSE: 70.0})),
                       name="masimo").start()
    save_devices(QSettings("kapmonitor", "kapmonitor"), [f"masimo={server.url},name=monitor"])
    seen: list[str] = []

    def nurse() -> None:
        dlg = QApplication.activeModalWidget()
        if isinstance(dlg, QMessageBox):  # "Print or save the chart record?" at close
            seen.append("report offered")
            dlg.reject()
            return
        if isinstance(dlg, SetupDialog) and dlg.isVisible():
            if "setup" in seen:  # the second time: the next patient does not come
                seen.append("setup-again")
                dlg.reject()
                return
            seen.append("setup")
            for w, text in ((dlg.patient, "KAP-10"), (dlg.weight, "70"), (dlg.weight2, "70"),
                            (dlg.dose, "0.5"), (dlg.duration, "40"), (dlg.conc, "1")):
                w.setText(text)
            dlg.ok.click()
            return
        wins = [w for w in QApplication.topLevelWidgets()
                if isinstance(w, MainWindow) and w.isVisible()]
        if wins and "window" not in seen and wins[0].session.live.latest(Channel.SPO2):
            seen.append("window")
            wins[0].close_session(confirm=False)

    timer = QTimer()
    timer.timeout.connect(nurse)
    timer.start(100)
    try:
        args = argparse.Namespace(db=str(db_path), devices=False)
        assert gui.run(args) == 0
    finally:
        timer.stop()
        server.stop()
    assert seen == ["setup", "window", "report offered", "setup-again"]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT status FROM session").fetchall() == [("closed",)]
