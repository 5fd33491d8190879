"""The bedside window in its own process, started the way the command line starts it
(``run_app`` on a started session), for the recovery tests: it prints the session id, waits
until the tiles show the simulated SpO2, saves a screenshot, then either leaves the window
by "Leave open" (``leave``) or waits to be killed (``kill``).

    python tests/ui/window_child.py DB PNG leave|kill
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from kapmonitor.ui.main_window import MainWindow, run_app
from tests.ui.sim import start_room


def main(db: str, png: str, mode: str) -> int:
    app = QApplication([sys.argv[0]])
    room = start_room(Path(db))
    print(f"session {room.session.session_id}", flush=True)
    settings = QSettings(str(Path(db).with_suffix(".ini")), QSettings.Format.IniFormat)

    def poll() -> None:
        wins = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow)]
        if wins and wins[0].tiles.tiles["spo2"].shown_text == "97":
            win = wins[0]
            win.grab_png(png)
            print("shown", flush=True)
            if mode == "leave":
                win.ask_close = lambda: "leave-open"
                win.close()
            return
        QTimer.singleShot(50, poll)

    QTimer.singleShot(50, poll)
    code = run_app(room.session, demo=True, settings=settings)
    print(f"exit {code} closed={room.session.closed}", flush=True)
    for server in room.servers:
        server.stop()
    room.store.close()
    return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
