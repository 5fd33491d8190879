"""The batched writer: bus messages and clinical writes -> the database, off every device
thread and the GUI thread.

The recorder is a critical bus subscriber whose callback only enqueues; one writer thread
owns the database work and commits a batch every ``flush_interval_s`` (0.2 s, so a killed
process loses at most that much, well inside DESIGN §3's 0.5 s) or sooner when
``max_batch`` rows are waiting. Samples go in with Core bulk inserts and one audit row per
table per batch; events (pump, device, alarm) each get their own audit row. Clinical
writes that must not wait on a device thread or the GUI (t0, phase entries, notes,
devices, closing the session) come in through ``submit`` as small operations run on the
same thread, in order, retried with the batch until they land (issue 12: a database lock
must never stall a pump's reader). ``stop()`` flushes, then joins (CONVENTIONS 8, after
python-can's SqliteWriter).

A fault (disk full, locked, read-only, file gone) loses nothing at first: rows stay in
memory, ``on_error`` hears of it once per change (the session turns it into a technical
alarm) and the writer retries with backoff, logging one line per fault episode rather than a
traceback per retry. Memory is bounded: beyond ``max_pending_wave_samples`` (about 66 min of
a full room's 1,000 wave samples/s) the oldest wave chunks go first, beyond
``max_pending_numerics`` (hours of numerics) the oldest numerics; events and clinical writes
are never dropped. Everything dropped is counted per channel and written to ``data_loss``
as soon as the database takes writes again, so the record says what it lacks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, text

from kapmonitor.alarms import AlarmEvent
from kapmonitor.model import DeviceStatus, Message, PumpState, Reading, WaveChunk, now_us

from . import audit
from .errors import StoreError, describe_db_error
from .schema import (
    AlarmEventRow,
    DataLossRow,
    DeviceEventRow,
    PumpEventRow,
    numeric_table,
    wave_table,
)
from .store import Store, insert_audited

__all__ = ["Loss", "Recorder", "RecorderStats", "Unwritten"]

log = logging.getLogger(__name__)

_STOP = object()

#: Pending-row bounds while the database refuses writes (issue 12 asks for at least 10 min
#: of a full room). Measured in bench/bench_faults.py: 10 min of a full room (614,400 wave
#: samples in 32-sample chunks + 12,000 numerics) hold 12.6-16 MiB, so these bounds (67 min of
#: waves, 3.5 h of numerics at that rate) stay under about 100 MiB.
MAX_PENDING_WAVE_SAMPLES = 4_000_000
MAX_PENDING_NUMERICS = 250_000


@dataclass(slots=True)
class RecorderStats:
    numerics: int = 0
    wave_chunks: int = 0
    wave_samples: int = 0
    events: int = 0
    ops: int = 0
    batches: int = 0
    errors: int = 0
    fault_episodes: int = 0
    max_backlog: int = 0
    max_pending_rows: int = 0
    dropped_numerics: int = 0
    dropped_wave_samples: int = 0
    last_commit_us: int | None = None
    last_flush_s: float = 0.0


@dataclass(slots=True)
class Loss:
    """Rows dropped from one channel while the database was unavailable."""

    kind: str
    channel: str
    reason: str = ""
    rows: int = 0
    samples: int = 0
    first_t_us: int = 0
    last_t_us: int = 0

    def add(self, rows: int, samples: int, first: int, last: int) -> None:
        self.first_t_us = first if not self.rows else min(self.first_t_us, first)
        self.last_t_us = last if not self.rows else max(self.last_t_us, last)
        self.rows += rows
        self.samples += samples


@dataclass(frozen=True, slots=True)
class Unwritten:
    """What ``stop()`` could not write (the database still refused at the deadline), plus
    what was dropped earlier and never recorded as lost."""

    numerics: int = 0
    wave_samples: int = 0
    events: int = 0
    ops: list[str] = field(default_factory=list)
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.numerics or self.wave_samples or self.events or self.ops)

    def __str__(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.numerics, "numerics"),
                                               (self.wave_samples, "wave samples"),
                                               (self.events, "events")) if n]
        parts += self.ops
        why = f" ({self.reason})" if self.reason else ""
        return "not written" + why + ": " + ", ".join(parts) if parts else "everything written"


@dataclass(slots=True)
class _Op:
    fn: Callable[[Connection], Any]
    what: str
    future: Future[Any]


def _float_or_none(v: float | None) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


class Recorder:
    def __init__(self, store: Store, session_id: int, *, flush_interval_s: float = 0.2,
                 max_batch: int = 50_000, max_retry_s: float = 1.0,
                 max_pending_wave_samples: int = MAX_PENDING_WAVE_SAMPLES,
                 max_pending_numerics: int = MAX_PENDING_NUMERICS,
                 on_error: Callable[[BaseException | None], None] | None = None) -> None:
        self.store = store
        self.session_id = session_id
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        #: retries back off to this: a cleared fault is noticed within it
        self.max_retry_s = max_retry_s
        self.max_pending_wave_samples = max_pending_wave_samples
        self.max_pending_numerics = max_pending_numerics
        self.on_error = on_error
        self.stats = RecorderStats()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._numerics: list[dict[str, Any]] = []
        self._waves: list[dict[str, Any]] = []
        self._wave_pending = 0
        self._events: list[tuple[Table, dict[str, Any], int]] = []
        self._ops: list[_Op] = []
        self._losses: dict[tuple[str, str], Loss] = {}
        self._failing = False
        self._fault_since: float | None = None
        self._flush_started: float | None = None
        self._stop_deadline: float | None = None
        self.fault: str | None = None
        self.unwritten = Unwritten()
        db = store.engine.url.database if store.engine.url.get_backend_name() == "sqlite" \
            else None
        self._db_path = db if db and db != ":memory:" else None
        self._db_id = self._file_id()

    # -- producer side (any thread) ----------------------------------------------------------

    def __call__(self, messages: Sequence[Message]) -> None:
        """Bus callback: enqueue only."""
        self._q.put(messages)

    def record_alarm(self, event: Any) -> None:
        """Alarm-engine subscriber: every alarm event is recorded."""
        self._q.put((event,))

    def submit(self, fn: Callable[[Connection], Any], what: str = "") -> Future[Any]:
        """Run ``fn(conn)`` in its own transaction on the writer thread, after everything
        queued before it, retrying through faults until it lands. The future holds its
        result; a ``StoreError`` (a refusal, not a fault) is set on the future and the
        write is not retried."""
        fut: Future[Any] = Future()
        if self._thread is None and self._stop_deadline is not None:
            fut.set_exception(StoreError("the session's recorder has stopped"))
            return fut
        self._q.put(_Op(fn, what or getattr(fn, "__name__", "write"), fut))
        return fut

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    @property
    def pending_rows(self) -> int:
        """Rows held in memory, not yet committed (read from any thread: approximate)."""
        return len(self._numerics) + len(self._waves) + len(self._events) + len(self._ops)

    def stalled_s(self) -> float:
        """How long the writer has been unable to commit: a failing episode, or one commit
        still waiting (a lock held by another program waits the busy timeout before it
        fails). 0 when writing normally. Read by the session's ticker, so a fault becomes
        an alarm within seconds even while the writer itself is blocked."""
        now = time.monotonic()
        since = [t for t in (self._fault_since, self._flush_started) if t is not None]
        return now - min(since) if since else 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Recorder:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"recorder-{self.session_id}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> Unwritten:
        """Write everything queued so far, retrying through a fault for up to ``timeout``
        seconds, then end the thread. Returns what could not be written (falsy when
        everything landed); ``self.unwritten`` keeps it too."""
        if self._thread is None:
            return self.unwritten
        self._stop_deadline = time.monotonic() + max(0.5, timeout - 1.0)
        self._q.put(_STOP)
        self._thread.join(timeout + 15.0)  # one commit may still wait out a busy timeout
        if self._thread.is_alive():
            raise TimeoutError(f"recorder did not finish within {timeout} s "
                               f"({self.backlog} batches still queued)")
        self._thread = None
        return self.unwritten

    def flush_now(self, timeout: float = 10.0) -> None:
        """Block until everything enqueued before this call is committed (tests, close)."""
        done = threading.Event()
        self._q.put(done)
        if not done.wait(timeout):
            raise TimeoutError("recorder flush timed out")

    # -- writer thread ---------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._numerics) + len(self._waves) + len(self._events) + len(self._ops)

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
                self._finish(waiters)
                return
            force = False
            if isinstance(item, threading.Event):
                waiters.append(item)
                force = True
            elif item is not None:
                self._take(item)
                self.stats.max_backlog = max(self.stats.max_backlog, self._q.qsize())
            if force or self._pending() >= self.max_batch or time.monotonic() >= deadline:
                if (not self._pending() and not self._losses) or self._flush():
                    interval = self.flush_interval_s
                    for w in waiters:
                        w.set()
                    waiters.clear()
                else:
                    interval = min(self.max_retry_s, interval * 2)
                deadline = time.monotonic() + interval

    def _finish(self, waiters: list[threading.Event]) -> None:
        """On stop: drain the queue, retry until everything lands or the deadline passes,
        then report (and log once) what stayed unwritten."""
        self._drain(waiters)
        pause = self.flush_interval_s
        while True:
            if (not self._pending() and not self._losses) or self._flush():
                break
            deadline = self._stop_deadline or 0.0
            if time.monotonic() + pause > deadline:
                self.unwritten = Unwritten(
                    numerics=len(self._numerics) + sum(
                        x.rows for x in self._losses.values() if x.kind == "numeric"),
                    wave_samples=self._wave_pending + sum(
                        x.samples for x in self._losses.values() if x.kind == "wave"),
                    events=len(self._events), ops=[op.what for op in self._ops],
                    reason=self.fault or "")
                log.error("recorder stopped: %s", self.unwritten)
                for op in self._ops:
                    op.future.set_exception(StoreError(
                        f"not written: {self.fault or 'the database refused it'}"))
                break
            time.sleep(pause)  # the writer's own retry pause, bounded by the stop deadline
            pause = min(self.max_retry_s, pause * 2)
        for w in waiters:
            w.set()

    def _drain(self, waiters: list[threading.Event]) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, threading.Event):
                waiters.append(item)
            elif item is not _STOP:
                self._take(item)

    def _take(self, item: Any) -> None:
        if isinstance(item, _Op):
            self._ops.append(item)
        else:
            self._absorb(item)
        pending = len(self._numerics) + self._wave_pending
        self.stats.max_pending_rows = max(self.stats.max_pending_rows, pending)
        if (self._wave_pending > self.max_pending_wave_samples
                or len(self._numerics) > self.max_pending_numerics):
            self._shed()

    def _shed(self) -> None:
        """Over the memory bound (only reachable while the database refuses writes): drop
        the oldest waves first, then the oldest numerics, a tenth of the bound at a time so
        shedding stays rare; count every dropped row per channel."""
        if self._wave_pending > self.max_pending_wave_samples:
            target = self.max_pending_wave_samples * 9 // 10
            k, freed = 0, 0
            while k < len(self._waves) and self._wave_pending - freed > target:
                freed += self._waves[k]["n"]
                k += 1
            for r in self._waves[:k]:
                self._lose("wave", r["channel"], 1, r["n"], r["t_us"], r["t_us"])
            del self._waves[:k]
            self._wave_pending -= freed
            self.stats.dropped_wave_samples += freed
        if len(self._numerics) > self.max_pending_numerics:
            k = len(self._numerics) - self.max_pending_numerics * 9 // 10
            for r in self._numerics[:k]:
                self._lose("numeric", r["channel"], 1, 1, r["t_us"], r["t_us"])
            del self._numerics[:k]
            self.stats.dropped_numerics += k
        log.warning("recorder: memory bound reached while %s; %d wave samples and %d "
                    "numerics dropped so far", self.fault or "the database is unavailable",
                    self.stats.dropped_wave_samples, self.stats.dropped_numerics)

    def _lose(self, kind: str, channel: str, rows: int, samples: int, first: int,
              last: int) -> None:
        loss = self._losses.get((kind, channel))
        if loss is None:
            why = (f"the database refused writes ({self.fault})" if self.fault
                   else "the writer fell behind")
            loss = self._losses[(kind, channel)] = Loss(
                kind, channel, f"dropped to stay within memory while {why}")
        loss.add(rows, samples, first, last)

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
                self._wave_pending += len(m)
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

    def _run_ops(self) -> None:
        """Clinical writes, each in its own transaction, in the order they came. A refusal
        answers its caller and is not retried; a fault propagates (retried later)."""
        while self._ops:
            op = self._ops[0]
            try:
                with self.store.engine.begin() as conn:
                    result = op.fn(conn)
            except StoreError as exc:
                self._ops.pop(0)
                op.future.set_exception(exc)
                continue
            self._ops.pop(0)
            self.stats.ops += 1
            op.future.set_result(result)

    def _write_losses(self, conn: Connection, t_us: int) -> None:
        for loss in self._losses.values():
            insert_audited(conn, DataLossRow.__table__, {  # type: ignore[arg-type]
                "session_id": self.session_id, "t_us": t_us, "kind": loss.kind,
                "channel": loss.channel, "rows": loss.rows, "samples": loss.samples,
                "first_t_us": loss.first_t_us, "last_t_us": loss.last_t_us,
                "reason": loss.reason}, t_us)

    # -- the database file itself -----------------------------------------------------------

    def _file_id(self) -> tuple[int, int] | None:
        if self._db_path is None:
            return None
        try:
            st = os.stat(self._db_path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        """A SQLite file removed while open still takes writes (into an unlinked inode that
        vanishes with the process), so removal must be looked for: it is a fault like any
        other. Removed: the open connection still sees everything, so the file is put back
        from it (checkpoint, SQLite's online backup to a temporary name, close, rename),
        and recording continues in it. Replaced by another file: nothing is written to
        either until the original is back; rows wait in memory under the bound."""
        if self._db_path is None or self._db_id is None:
            return
        now_id = self._file_id()
        if now_id == self._db_id:
            return
        if now_id is not None:
            raise StoreError(f"the database file {self._db_path} was replaced by another "
                             "file; recording waits for the original")
        self._restore_removed_file()

    def _restore_removed_file(self) -> None:
        path = self._db_path
        assert path is not None
        engine = self.store.engine
        if engine.pool.checkedin() == 0:  # type: ignore[attr-defined]
            raise StoreError(f"the database file {path} was removed and no open copy is "
                             "left to restore it from")
        tmp = f"{path}.restoring"
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dest = sqlite3.connect(tmp)
            try:
                raw.backup(dest)
            finally:
                dest.close()
        engine.dispose()  # the old connections go, and with them the old WAL
        os.replace(tmp, path)
        self._db_id = self._file_id()
        # an episode of its own, so the alarm is raised, recorded and cleared by this flush
        self._failed(StoreError(f"the database file {path} was removed while recording; it "
                                "was restored from the open copy"))

    def _flush(self) -> bool:
        t0 = time.perf_counter()
        t_us = now_us()
        self._flush_started = time.monotonic()
        try:
            self._check_file()
            self._run_ops()
            with self.store.engine.begin() as conn:
                self._insert_samples(conn, numeric_table, self._numerics, t_us)
                self._insert_samples(conn, wave_table, self._waves, t_us)
                for table, values, ev_t in self._events:
                    insert_audited(conn, table, values, ev_t)
                if self._losses:
                    self._write_losses(conn, t_us)
                self.store.heartbeat(conn, self.session_id, t_us)
        except Exception as exc:
            self._flush_started = None
            self._failed(exc)
            return False
        self._flush_started = None
        s = self.stats
        s.numerics += len(self._numerics)
        s.wave_chunks += len(self._waves)
        s.wave_samples += self._wave_pending
        s.events += len(self._events)
        s.batches += 1
        s.last_commit_us = t_us
        s.last_flush_s = time.perf_counter() - t0
        self._numerics, self._waves, self._events = [], [], []
        self._wave_pending = 0
        self._losses.clear()
        if self._failing:
            took = time.monotonic() - (self._fault_since or time.monotonic())
            dropped = s.dropped_wave_samples or s.dropped_numerics
            log.warning("recorder: writing again after %.1f s (%s); %s", took, self.fault,
                        f"{s.dropped_wave_samples} wave samples and {s.dropped_numerics} "
                        "numerics had to be dropped (recorded in data_loss)" if dropped
                        else "nothing kept in memory was lost")
            self._failing = False
            self._fault_since = None
            self.fault = None
            if self.on_error is not None:
                self.on_error(None)  # recovered: clears the technical alarm
        return True

    def _failed(self, exc: BaseException) -> None:
        """One log line per fault episode (and per change of reason), not a traceback per
        retry; the session hears of every failure and raises or updates its alarm."""
        self.stats.errors += 1
        reason = describe_db_error(exc)
        if not self._failing:
            self._failing = True
            self._fault_since = time.monotonic()
            self.stats.fault_episodes += 1
            log.error("recorder: cannot write to the database: %s; %d rows kept in memory, "
                      "retrying", reason, self._pending())
            log.debug("recorder: first failure of this episode", exc_info=exc)
        elif reason != self.fault:
            log.error("recorder: still cannot write to the database, now: %s", reason)
        self.fault = reason
        if self.on_error is not None:
            self.on_error(exc)


def wave_samples(data: bytes) -> np.ndarray:
    """Unpack a stored wave chunk."""
    return np.frombuffer(data, dtype="<f4")
