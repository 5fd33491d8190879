"""The batched writer: bus messages -> SQLite, off every device thread and the GUI thread.

The recorder is a critical bus subscriber whose callback only enqueues; one writer thread
owns the database connection and commits a batch every ``flush_interval_s`` (0.2 s, so a
killed process loses at most that much, well inside DESIGN §3's 0.5 s) or sooner when
``max_batch`` rows are waiting. Samples go in with Core bulk inserts and one audit row per
table per batch; events (pump, device, alarm) each get their own audit row. ``stop()``
flushes what is queued, then joins (CONVENTIONS 8, after python-can's SqliteWriter).

A failed commit loses nothing: the batch stays pending, the error goes to ``on_error`` (the
session turns it into a technical alarm) and the writer retries with backoff. The queue is
unbounded on purpose: the record must not drop data to protect memory; ``backlog`` and
``max_backlog`` make a slow disk visible long before memory matters.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, text

from kapmonitor.alarms import AlarmEvent
from kapmonitor.model import DeviceStatus, Message, PumpState, Reading, WaveChunk, now_us

from . import audit
from .schema import AlarmEventRow, DeviceEventRow, PumpEventRow, numeric_table, wave_table
from .store import Store, insert_audited

__all__ = ["Recorder", "RecorderStats"]

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(slots=True)
class RecorderStats:
    numerics: int = 0
    wave_chunks: int = 0
    wave_samples: int = 0
    events: int = 0
    batches: int = 0
    errors: int = 0
    max_backlog: int = 0
    last_commit_us: int | None = None
    last_flush_s: float = 0.0


def _float_or_none(v: float | None) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


class Recorder:
    def __init__(self, store: Store, session_id: int, *, flush_interval_s: float = 0.2,
                 max_batch: int = 50_000,
                 on_error: Callable[[BaseException | None], None] | None = None) -> None:
        self.store = store
        self.session_id = session_id
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.on_error = on_error
        self.stats = RecorderStats()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._numerics: list[dict[str, Any]] = []
        self._waves: list[dict[str, Any]] = []
        self._events: list[tuple[Table, dict[str, Any], int]] = []
        self._failing = False

    # -- producer side (any thread) ----------------------------------------------------------

    def __call__(self, messages: Sequence[Message]) -> None:
        """Bus callback: enqueue only."""
        self._q.put(messages)

    def record_alarm(self, event: Any) -> None:
        """Alarm-engine subscriber: every alarm event is recorded."""
        self._q.put((event,))

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Recorder:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"recorder-{self.session_id}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Write everything queued so far, then end the thread."""
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"recorder did not finish within {timeout} s "
                               f"({self.backlog} batches still queued)")
        self._thread = None

    def flush_now(self, timeout: float = 10.0) -> None:
        """Block until everything enqueued before this call is committed (tests, close)."""
        done = threading.Event()
        self._q.put(done)
        if not done.wait(timeout):
            raise TimeoutError("recorder flush timed out")

    # -- writer thread ---------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._numerics) + len(self._waves) + len(self._events)

    def _run(self) -> None:
        interval = self.flush_interval_s
        deadline = time.monotonic() + interval
        waiters: list[threading.Event] = []
        while True:
            try:
                item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._drain(waiters)
                for _ in range(3):
                    if not self._pending() or self._flush():
                        break
                else:
                    log.error("recorder stopped with %d rows unwritten", self._pending())
                for w in waiters:
                    w.set()
                return
            force = False
            if isinstance(item, threading.Event):
                waiters.append(item)
                force = True
            elif item is not None:
                self._absorb(item)
                self.stats.max_backlog = max(self.stats.max_backlog, self._q.qsize())
            if force or self._pending() >= self.max_batch or time.monotonic() >= deadline:
                if not self._pending() or self._flush():
                    interval = self.flush_interval_s
                    for w in waiters:
                        w.set()
                    waiters.clear()
                else:
                    interval = min(5.0, interval * 2)
                deadline = time.monotonic() + interval

    def _drain(self, waiters: list[threading.Event]) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, threading.Event):
                waiters.append(item)
            elif item is not _STOP:
                self._absorb(item)

    def _absorb(self, messages: Sequence[Any]) -> None:
        sid = self.session_id
        for m in messages:
            if isinstance(m, Reading):
                self._numerics.append({
                    "session_id": sid, "channel": m.channel.value, "t_us": m.t_us,
                    "value": _float_or_none(m.value), "quality": int(m.quality),
                    "source": m.source, "device_t_us": m.device_t_us})
            elif isinstance(m, WaveChunk):
                self._waves.append({
                    "session_id": sid, "channel": m.channel.value, "t_us": m.t_us,
                    "rate_hz": float(m.rate_hz), "n": len(m),
                    "data": m.samples.astype("<f4").tobytes(), "quality": int(m.quality),
                    "source": m.source, "device_t_us": m.device_t_us})
            elif isinstance(m, PumpState):
                self._events.append((PumpEventRow.__table__, {  # type: ignore[arg-type]
                    "session_id": sid, "source": m.source, "t_us": m.t_us,
                    "state": m.state.value, "rate_ml_h": m.rate_ml_h,
                    "volume_infused_ml": m.volume_infused_ml, "vtbi_ml": m.vtbi_ml,
                    "bolus_ml": m.bolus_ml, "drug": m.drug,
                    "concentration_mg_ml": m.concentration_mg_ml,
                    "alarms": json.dumps([{"code": a.code, "raw": a.raw, "text": a.text}
                                          for a in m.alarms]),
                    "infusion_id": m.infusion_id}, m.t_us))
            elif isinstance(m, DeviceStatus):
                self._events.append((DeviceEventRow.__table__, {  # type: ignore[arg-type]
                    "session_id": sid, "source": m.source, "t_us": m.t_us,
                    "state": m.state.value, "detail": m.detail}, m.t_us))
            elif isinstance(m, AlarmEvent):
                self._events.append((AlarmEventRow.__table__, {  # type: ignore[arg-type]
                    "session_id": sid, "t_us": m.t_us, "condition": m.key,
                    "channel": None if m.channel is None else m.channel.value,
                    "kind": m.kind.value, "priority": m.priority.value,
                    "action": m.action.value, "value": _float_or_none(m.value),
                    "limit": _float_or_none(m.limit), "message": m.message,
                    "user": m.user}, m.t_us))
            else:
                raise TypeError(f"the recorder cannot store {type(m).__name__}")

    def _insert_samples(self, conn: Connection, table: Table, rows: list[dict[str, Any]],
                        t_us: int) -> None:
        if not rows:
            return
        conn.execute(table.insert(), rows)
        last = conn.execute(text(f"SELECT max(rowid) FROM {table.name}")).scalar_one()
        first = last - len(rows) + 1
        cols = [c.name for c in table.columns]
        digest = audit.sample_digest([tuple(r[c] for c in cols) for r in rows],
                                     blobs=table is wave_table)
        audit.append(conn, table.name, None, "samples", t_us, {
            "table": table.name, "session_id": self.session_id, "first_rowid": first,
            "last_rowid": last, "count": len(rows), "digest": digest})

    def _flush(self) -> bool:
        t0 = time.perf_counter()
        t_us = now_us()
        try:
            with self.store.engine.begin() as conn:
                self._insert_samples(conn, numeric_table, self._numerics, t_us)
                self._insert_samples(conn, wave_table, self._waves, t_us)
                for table, values, ev_t in self._events:
                    insert_audited(conn, table, values, ev_t)
                self.store.heartbeat(conn, self.session_id, t_us)
        except Exception as exc:
            self.stats.errors += 1
            self._failing = True
            log.exception("recorder: commit failed, %d rows kept for retry", self._pending())
            if self.on_error is not None:
                self.on_error(exc)
            return False
        s = self.stats
        s.numerics += len(self._numerics)
        s.wave_chunks += len(self._waves)
        s.wave_samples += sum(r["n"] for r in self._waves)
        s.events += len(self._events)
        s.batches += 1
        s.last_commit_us = t_us
        s.last_flush_s = time.perf_counter() - t0
        self._numerics, self._waves, self._events = [], [], []
        if self._failing:
            self._failing = False
            if self.on_error is not None:
                self.on_error(None)  # recovered: clears the technical alarm
        return True


def wave_samples(data: bytes) -> np.ndarray:
    """Unpack a stored wave chunk."""
    return np.frombuffer(data, dtype="<f4")
