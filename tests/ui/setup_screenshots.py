"""Render the setup dialog's documentation screenshots offscreen:

- ``setup_dialog.png``: a programme every value of which is accepted (the pump rate shown),
  with room, clinicians and protocol as this workstation remembered them;
- ``setup_refused.png``: a weight of 900 kg after an attempt to start: the reason under the
  field in a nurse's words, no rate;
- ``setup_empty.png`` (only with ``--empty``): the form as it opens, with no red text.

    .venv/bin/python -m tests.ui.setup_screenshots [--empty] [OUT_DIR]

Values are filled in before the dialog opens, which the dialog treats as entered (as it
does defaults), so the messages show without simulated typing.
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

from kapmonitor.session import SessionConfig
from kapmonitor.ui import theme
from kapmonitor.ui.setup_dialog import (
    SETTINGS_CLINICIANS,
    SETTINGS_PROTOCOLS,
    SETTINGS_ROOM,
    SetupDialog,
)

PROGRAMME = SessionConfig(patient="KAP-0147", dose_mg_per_kg=0.5, duration_min=40,
                          concentration_mg_ml=1.0)


def _settle(app: QApplication, seconds: float = 0.2) -> None:
    """Let layouts and deferred shows run (offscreen, nothing else drives the loop)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()


def _render(app: QApplication, settings: QSettings, weights: tuple[str, str] | None,
            path: Path, *, attempt: bool = False) -> None:
    d = SetupDialog(None, demo=True, settings=settings,
                    defaults=PROGRAMME if weights else None)
    if weights:
        d.weight.setText(weights[0])
        d.weight2.setText(weights[1])
    d.show()
    _settle(app)
    if attempt:
        d.ok.click()
        _settle(app)
    d.grab().save(str(path))
    d.reject()
    d.deleteLater()
    app.processEvents()


def render(app: QApplication, out: Path, *, empty: bool = False) -> list[Path]:
    """Write the screenshots into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "workstation.ini"), QSettings.Format.IniFormat)
        settings.setValue(SETTINGS_ROOM, "2")
        settings.setValue(SETTINGS_CLINICIANS, "RN Lee, Dr Osei")
        settings.setValue(SETTINGS_PROTOCOLS, ["0.5 mg/kg IV over 40 min, series of 6"])
        paths = [out / "setup_dialog.png", out / "setup_refused.png"]
        _render(app, settings, ("70", "70"), paths[0])
        _render(app, settings, ("900", "900"), paths[1], attempt=True)
        if empty:
            paths.append(out / "setup_empty.png")
            _render(app, settings, None, paths[2])
    return paths


def main(argv: list[str]) -> int:
    empty = "--empty" in argv
    args = [a for a in argv if a != "--empty"]
    out = Path(args[0]) if args else Path("docs/screenshots")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    theme.apply_theme(app)
    for path in render(app, out, empty=empty):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
