"""The questions only Qt can answer for ``kapmonitor doctor``, each asked in its own process.

``kapmonitor.doctor`` (the core) runs this file as ``python -P doctor_checks.py NAME`` and
reads the one JSON object it prints. Why a separate process, and why by file path:

- Qt aborts the whole process when a platform plugin cannot load ("could not connect to
  display", "Could not load the Qt platform plugin xcb"): the doctor must outlive that to
  say which libraries to install. A hung sound server is cut off by the caller's timeout.
- Run by path, this file imports only the standard library and PySide6, not the
  ``kapmonitor.ui`` package, whose import refuses a Qt binding known to crash a long-running
  window (``_qt_check``). The doctor reports that refusal on its own line; the probes still
  tell whether the libraries and the display work.

Probes (their JSON):

- ``offscreen``: a ``QApplication`` with ``QT_QPA_PLATFORM=offscreen`` and no display, a
  label drawn into a pixmap, the font families found, and every Qt module (and pyqtgraph)
  the app imports: ``{"platform", "rendered", "fonts", "import_errors"}``;
- ``platform``: a ``QGuiApplication`` on the platform Qt picks for this environment (the
  one the bedside window would get): ``{"platform"}``;
- ``audio``: QtMultimedia's audio outputs, as ui/sounds.py asks for them before it loads
  the alarm tones: ``{"outputs", "default"}`` or ``{"import_error"}``.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["PROBES", "main", "probe_audio", "probe_offscreen", "probe_platform"]

#: Modules the app imports (ui/, pyqtgraph, the PDF report and its read-back).
MODULES = ("PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtSvg",
           "PySide6.QtPdf", "pyqtgraph")


def probe_offscreen() -> dict[str, Any]:
    """Render a label offscreen; the caller has set ``QT_QPA_PLATFORM=offscreen`` and
    removed ``DISPLAY`` and ``WAYLAND_DISPLAY``."""
    errors: dict[str, str] = {}
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an ImportError, or pyqtgraph refusing the binding
            errors[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if errors.keys() & {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"}:
        return {"platform": None, "rendered": False, "fonts": 0, "import_errors": errors}
    from PySide6.QtGui import QFontDatabase
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication([sys.argv[0]])
    label = QLabel("SpO2 97 %  HR 72")
    label.resize(200, 40)
    pixmap = label.grab()
    return {"platform": QApplication.platformName(), "rendered": not pixmap.isNull(),
            "fonts": len(QFontDatabase.families()), "import_errors": errors,
            "app": type(app).__name__}


def probe_platform() -> dict[str, Any]:
    """Start Qt on the platform it picks here (DISPLAY, WAYLAND_DISPLAY, QT_QPA_PLATFORM):
    if that aborts, the caller reads Qt's reason from standard error."""
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    screen = QGuiApplication.primaryScreen()
    return {"platform": QGuiApplication.platformName(), "app": type(app).__name__,
            "screen": screen.name() if screen is not None else None}


def probe_audio() -> dict[str, Any]:
    """The audio outputs QtMultimedia sees (none without a sound server or card)."""
    try:
        from PySide6.QtCore import QCoreApplication
        from PySide6.QtMultimedia import QMediaDevices
    except ImportError as exc:  # libpulse0 missing: QtMultimedia links it
        return {"import_error": str(exc).splitlines()[0] if str(exc) else "ImportError"}
    app = QCoreApplication.instance() or QCoreApplication([sys.argv[0]])
    outputs = [d.description() for d in QMediaDevices.audioOutputs()]
    default = QMediaDevices.defaultAudioOutput()
    return {"outputs": outputs, "default": None if default.isNull() else default.description(),
            "app": type(app).__name__}


PROBES: dict[str, Callable[[], dict[str, Any]]] = {
    "offscreen": probe_offscreen, "platform": probe_platform, "audio": probe_audio}


def main(argv: list[str] | None = None) -> int:
    """Run the probe named in ``argv`` and print its JSON as the last line of output."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in PROBES:
        print(f"usage: doctor_checks.py {{{','.join(PROBES)}}}", file=sys.stderr)
        return 2
    result = PROBES[args[0]]()
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
