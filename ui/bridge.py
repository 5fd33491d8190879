"""Thread -> GUI bridges: the only way anything from a worker thread reaches a widget.

Why (DESIGN §2, CONVENTIONS 7): device threads evaluate alarms and the session's writer
thread completes note futures, but Qt widgets may only be touched on the GUI thread. A
QObject created on the GUI thread emits a signal from the worker; the connection is queued,
so the slot runs later on the GUI thread. Only low-rate events go this way (alarm events,
saved notes); samples go through the ring buffers that the frame timer reads.

Closing is race-free: a worker may be emitting while the window closes, so ``close()`` takes
the same lock as ``post()`` and later posts are dropped instead of reaching a deleted object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from kapmonitor.alarms import AlarmEvent

__all__ = ["AlarmBridge", "Relay"]


class Relay(QObject):
    """Carries ``(tag, payload)`` from any thread to ``slot`` on the GUI thread."""

    ready = Signal(object, object)

    def __init__(self, slot: Callable[[Any, Any], object], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._closed = False
        self.ready.connect(slot, Qt.ConnectionType.QueuedConnection)

    def post(self, tag: Any, payload: Any) -> None:
        """Callable from any thread; never blocks on the GUI."""
        with self._lock:
            if not self._closed:
                self.ready.emit(tag, payload)

    def close(self) -> None:
        with self._lock:
            self._closed = True


class AlarmBridge(QObject):
    """Subscribes to the session's alarm events (delivered on the evaluating thread) and
    re-emits them as ``event`` on the GUI thread."""

    event = Signal(object)

    def __init__(self, session: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._closed = False
        self.received = 0
        self._unsubscribe = session.on_alarm(self._deliver)

    def _deliver(self, ev: AlarmEvent) -> None:
        with self._lock:
            if self._closed:
                return
            self.received += 1
            self.event.emit(ev)

    def connect_event(self, slot: Callable[[AlarmEvent], object]) -> None:
        self.event.connect(slot, Qt.ConnectionType.QueuedConnection)

    def close(self) -> None:
        """Unsubscribe; later deliveries are dropped. Idempotent."""
        self._unsubscribe()
        with self._lock:
            self._closed = True
