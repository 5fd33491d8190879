"""If the window is left with "Leave open", or its process is killed, the session stays
open in the record, and the next start finds it abandoned and recovers it (closed with a
gap marker, never deleted). The window runs in a child process, started through
``run_app`` as the command line does, so "the recording process is gone" is real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kapmonitor.store import SessionReader, Store, find_abandoned, recover

CHILD = Path(__file__).with_name("window_child.py")


def _run(mode: str, db: Path, png: Path) -> list[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(db), str(png), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    lines: list[str] = []
    shown = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("shown"):
                shown.set()
        shown.set()

    reader = threading.Thread(target=read, name="window-child-stdout")
    reader.start()
    try:
        assert shown.wait(90), "the window never showed the simulated values"
        if mode == "kill":
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["leave", "kill"])
def test_window_left_open_or_killed_leaves_a_recoverable_session(mode: str, tmp_path: Path
                                                                 ) -> None:
    db, png = tmp_path / "kap.sqlite", tmp_path / "window.png"
    lines = _run(mode, db, png)
    assert lines[0].startswith("session ")
    sid = int(lines[0].split()[1])
    assert "shown" in lines
    if mode == "leave":
        assert lines[-1].startswith("exit 0")  # abandon() stopped it; the record stays open
    assert png.stat().st_size > 10_000  # the screenshot of a real window
    store = Store.open(str(db))
    try:
        assert [s.status for s in store.sessions()] == ["open"]
        abandoned = find_abandoned(store)
        assert [a.session_id for a in abandoned] == [sid]
        assert "no longer running" in abandoned[0].reason
        done = recover(store, abandoned[0])
        assert done.gap_annotation_id is not None
        reader = SessionReader(store.engine, sid)
        assert reader.session()["status"] == "recovered"
        kinds = [e.kind for e in reader.entries()]
        assert kinds[0] == "phase" and kinds[-1] == "gap"
        assert find_abandoned(store) == []
    finally:
        store.close()


@pytest.mark.slow
def test_setup_dialog_offers_resume_of_a_killed_window(tmp_path: Path, qtbot) -> None:
    """Issue 13 item 2: the offer says which patient, room, phase and when; Resume carries
    the same session on (recorded as a gap marker), Recover stays available."""
    from PySide6.QtWidgets import QLabel, QPushButton

    from kapmonitor.session import LiveSession
    from kapmonitor.ui.setup_dialog import SetupDialog

    db, png = tmp_path / "kap.sqlite", tmp_path / "window.png"
    lines = _run("kill", db, png)
    sid = int(lines[0].split()[1])
    store = Store.open(str(db))
    try:
        dlg = SetupDialog(store)
        qtbot.addWidget(dlg)
        qtbot.waitUntil(lambda: dlg.findChild(QPushButton, f"resume-{sid}") is not None,
                        timeout=20_000)
        texts = [lab.text() for lab in dlg.findChildren(QLabel)]
        offer = next(t for t in texts if t.startswith(f"Session {sid} \u2014"))
        assert "no longer running" in offer and "last data" in offer
        assert dlg.findChild(QPushButton, f"recover-{sid}").isEnabled()
        dlg.findChild(QPushButton, f"resume-{sid}").click()
        assert dlg.result() == SetupDialog.DialogCode.Accepted and dlg.resume_id == sid
        session = LiveSession.resume(store, sid).start()
        session.close()
        assert [s.status for s in store.sessions()] == ["closed"]
        kinds = [(e.kind, e.code) for e in SessionReader(store.engine, sid).entries()]
        assert ("gap", "recording-resumed") in kinds
    finally:
        store.close()
