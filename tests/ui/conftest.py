"""Fixtures for the bedside-window tests: a simulated room on the real data path, the
window on it, settings in a temporary file (never the user's), and clean teardown of
every window, timer and thread (the root conftest fails a test that leaks a thread)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QSettings
from PySide6.QtWidgets import QApplication

from kapmonitor.cues import CueLibrary
from kapmonitor.store import Store
from kapmonitor.ui import theme
from kapmonitor.ui.main_window import MainWindow
from kapmonitor.ui.replay_window import ReplayWindow

from .recorded import Recorded, record_session
from .sim import SimRoom, start_room

#: The offscreen platform plugin cannot propagate size hints and says so as a Qt warning
#: when a top-level window is laid out; it is a property of the plugin, not of our code.
OFFSCREEN_NOISE = "This plugin does not support propagateSizeHints"
#: A machine with the multimedia libraries but no sound server logs why it has no audio
#: output; the window handles that case ("no audio output") and a test checks it.
#: Qt's FFmpeg media backend also names the optional libraries it probes (PipeWire, VA-API).
AUDIO_NOISE = (r"qt\.multimedia", r"(?i)pulse", r"(?i)audio", r"(?i)pipewire",
               r"Couldn't (load|resolve) va")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.qt_log_ignore(OFFSCREEN_NOISE, *AUDIO_NOISE))


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def room(db_path: Path) -> Iterator[SimRoom]:
    r = start_room(db_path)
    try:
        yield r
    finally:
        r.stop()
        r.store.close()


@pytest.fixture
def make_window(qapp: QApplication, settings: QSettings) -> Iterator[Callable[..., MainWindow]]:
    theme.apply_theme(qapp)
    made: list[MainWindow] = []

    def make(session, **kwargs) -> MainWindow:
        kwargs.setdefault("demo", True)
        kwargs.setdefault("cue_library", CueLibrary.defaults())
        kwargs.setdefault("settings", settings)
        kwargs.setdefault("enable_audio", False)
        win = MainWindow(session, **kwargs)
        win.offer_report = lambda: None  # a modal question at close would wait offscreen
        win.resize(1280, 800)
        win.show()
        made.append(win)
        return win

    yield make
    for win in made:
        win.quit_now()
        win.shutdown()
        win.deleteLater()
    # delete the windows now, as run_app does: left to the garbage collector they are freed
    # at random moments later, possibly while another test walks every widget
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QApplication.processEvents()


# -- recorded sessions for the replay window and the report ---------------------------------


@pytest.fixture(scope="session")
def replay_master(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """A session recorded through the real path once per run (about 6 s of wall time)."""
    return record_session(tmp_path_factory.mktemp("replay") / "kap.sqlite")


@pytest.fixture
def replay_recorded(replay_master: Recorded, tmp_path: Path) -> Recorded:
    """A private copy of the recorded database (a test may write to it)."""
    db = tmp_path / "replay.sqlite"
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(replay_master.db) + suffix)
        if src.exists():
            shutil.copy(src, Path(str(db) + suffix))
    return dataclasses.replace(replay_master, db=db)


@pytest.fixture
def replay_store(replay_recorded: Recorded) -> Iterator[Store]:
    store = Store.open(str(replay_recorded.db))
    yield store
    store.close()


@pytest.fixture
def written_store(tmp_path: Path) -> Iterator[Store]:
    """An empty database for sessions written with the Recorder (tests/ui/recorded.py)."""
    store = Store.open(str(tmp_path / "written.sqlite"))
    yield store
    store.close()


@pytest.fixture
def make_replay(qapp: QApplication) -> Iterator[Callable[..., ReplayWindow]]:
    theme.apply_theme(qapp)
    made: list[ReplayWindow] = []

    def make(engine, session_id: int, **kwargs) -> ReplayWindow:
        win = ReplayWindow(engine, session_id, **kwargs)
        win.resize(1280, 800)
        win.show()
        made.append(win)
        return win

    yield make
    for win in made:
        win.shutdown()
        win.close()
        win.deleteLater()
    QApplication.processEvents()
