"""Refuse a Qt binding known to crash a long-running window.

PySide6/shiboken6 6.12.0 gives back a reference to ``None`` it never took on every Qt method
that returns nothing (measured here: one per ``QLabel.setText``, ~900 per repaint of a
pyqtgraph plot). On Python 3.12+ ``None`` is immortal (PEP 683) and nothing happens; on 3.11
its count reaches zero within a minute or two of a live window and the interpreter aborts
("Fatal Python error: none_dealloc"). pyproject.toml excludes that release on Python < 3.12;
this check turns a forced install into a clear message at start-up instead of a bedside
display that dies mid-session. ``void_calls_leak()`` probes any binding for the bug, so a
test catches a future release that brings it back.
"""

from __future__ import annotations

import sys

__all__ = ["BAD_ON_PY311", "QtBindingError", "check_binding", "void_calls_leak"]

#: PySide6 releases that leak references to None (fatal on Python < 3.12).
BAD_ON_PY311 = frozenset({"6.12.0"})


class QtBindingError(RuntimeError):
    pass


def void_calls_leak(n: int = 2000) -> bool:
    """True when ``n`` calls of a void Qt method lose references to ``None``."""
    from PySide6.QtCore import QPointF

    p = QPointF()
    before = sys.getrefcount(None)
    for _ in range(n):
        p.setX(1.0)
    return sys.getrefcount(None) < before - n // 2


def check_binding() -> None:
    import PySide6

    if sys.version_info < (3, 12) and PySide6.__version__ in BAD_ON_PY311:
        raise QtBindingError(
            f"PySide6 {PySide6.__version__} crashes a long-running window on Python "
            f"{sys.version_info.major}.{sys.version_info.minor} (it leaks references to "
            "None); install another release: pip install 'PySide6!=6.12.0'")
