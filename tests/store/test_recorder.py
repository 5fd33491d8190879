"""The recorder commits in batches at least every 0.5 s, flushes on stop, and keeps every
row through a database error (reporting it, then its recovery)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.model import Channel, Reading, WaveChunk
from kapmonitor.store import Recorder, SessionReader, Store


@pytest.fixture
def store(db_path: Path):
    s = Store.open(str(db_path))
    yield s
    s.close()


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM numeric").fetchone()[0]


def test_rows_become_visible_to_another_process_without_stop(store: Store, db_path: Path) -> None:
    sid = store.create_session()
    rec = Recorder(store, sid).start()
    try:
        rec([Reading(Channel.HR, 70.0, i, "m") for i in range(1000)])
        deadline = time.monotonic() + 5  # generous on a loaded machine; nominal 0.2 s
        while _count(db_path) < 1000 and time.monotonic() < deadline:
            threading.Event().wait(0.02)
        assert _count(db_path) == 1000
        assert rec.stats.batches >= 1
    finally:
        rec.stop()


def test_stop_flushes_everything_queued(store: Store) -> None:
    sid = store.create_session()
    rec = Recorder(store, sid, flush_interval_s=30).start()  # would not flush on its own
    rec([Reading(Channel.SPO2, 97.0, i, "m") for i in range(12_345)])
    rec([WaveChunk(Channel.PLETH, 0, 125.0, np.arange(250, dtype=np.float32), "m")])
    rec.stop()
    reader = SessionReader(store.engine, sid)
    assert len(reader.numeric(Channel.SPO2)) == 12_345
    wave = reader.wave(Channel.PLETH)
    assert wave.values.tolist() == list(range(250))
    assert wave.t_us[1] - wave.t_us[0] == 8000


def test_database_locked_then_released_loses_nothing(store: Store, db_path: Path) -> None:
    """Another process holds the write lock longer than the busy timeout: the recorder
    reports the error, keeps the rows, and writes them all once the lock is gone."""
    sid = store.create_session()
    reports: list[BaseException | None] = []
    got_error = threading.Event()

    def on_error(exc: BaseException | None) -> None:
        reports.append(exc)
        if exc is not None:
            got_error.set()

    blocker = sqlite3.connect(db_path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    import kapmonitor.store.engine as engine_mod
    rec = Recorder(store, sid, on_error=on_error)
    old_timeout = engine_mod.BUSY_TIMEOUT_MS
    try:
        store.engine.dispose()
        engine_mod.BUSY_TIMEOUT_MS = 50  # new connections give up quickly
        rec.start()
        rec([Reading(Channel.HR, float(i), i, "m") for i in range(500)])
        assert got_error.wait(20), "the recorder never reported the locked database"
        rec([Reading(Channel.HR, float(i), i, "m") for i in range(500, 800)])
    finally:
        blocker.rollback()
        blocker.close()
        engine_mod.BUSY_TIMEOUT_MS = old_timeout
    rec.flush_now(timeout=30)
    rec.stop()
    series = SessionReader(store.engine, sid).numeric(Channel.HR)
    assert series.values.tolist() == [float(i) for i in range(800)]
    assert reports[0] is not None and "locked" in str(reports[0])
    assert reports[-1] is None  # recovery reported, so the technical alarm clears
