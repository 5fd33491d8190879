"""Fixtures for the bedside-window tests: a simulated room on the real data path, the
window on it, settings in a temporary file (never the user's), and clean teardown of
every window, timer and thread (the root conftest fails a test that leaks a thread)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from kapmonitor.cues import CueLibrary
from kapmonitor.ui import theme
from kapmonitor.ui.main_window import MainWindow

from .sim import SimRoom, start_room

#: The offscreen platform plugin cannot propagate size hints and says so as a Qt warning
#: when a top-level window is laid out; it is a property of the plugin, not of our code.
OFFSCREEN_NOISE = "This plugin does not support propagateSizeHints"
#: A machine with the multimedia libraries but no sound server logs why it has no audio
#: output; the window handles that case ("no audio output") and a test checks it.
AUDIO_NOISE = (r"qt\.multimedia", r"(?i)pulse", r"(?i)audio")


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
        win.resize(1280, 800)
        win.show()
        made.append(win)
        return win

    yield make
    for win in made:
        win.quit_now()
        win.shutdown()
        win.deleteLater()
    QApplication.processEvents()
