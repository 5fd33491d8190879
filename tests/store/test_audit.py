"""Editing clinical rows behind the app's back must not go unnoticed: ``kapmonitor
verify`` fails and names the row. Tampering is done with plain sqlite3, as a person with
the file and a shell would."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.model import (
    Channel,
    DeviceState,
    DeviceStatus,
    PumpRunState,
    PumpState,
    Reading,
    WaveChunk,
)
from kapmonitor.store import Recorder, Store


@pytest.fixture
def recorded(db_path: Path) -> Path:
    """A small but complete session: samples, waves, events, notes, an amendment."""
    store = Store.open(str(db_path))
    sid = store.create_session(patient="KAP-0042", room="Room 2", weight_kg=70.0,
                               dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0)
    rec = Recorder(store, sid).start()
    t = 1_750_000_000_000_000
    rec([Reading(Channel.HR, 60.0 + i, t + i * 1_000_000, "monitor") for i in range(50)])
    rec([WaveChunk(Channel.PLETH, t, 125.0, np.linspace(0, 1, 125), "monitor")])
    rec([PumpState(t, PumpRunState.RUNNING, 52.5, 0.0, 35.0, source="pump")])
    rec([DeviceStatus("monitor", DeviceState.STREAMING, t)])
    rec.stop()
    note = store.add_annotation(sid, "observation", "eyes closed, calm", t_us=t, author="RN")
    store.amend_annotation(note, text="eyes closed, calm, smiling", author="RN")
    store.close()
    return db_path


def test_untouched_database_verifies(recorded: Path, cli) -> None:
    r = cli("verify", "--db", str(recorded))
    assert r.returncode == 0, r.stderr
    assert "audit chain" in r.stdout


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("UPDATE annotation SET text='nothing happened' WHERE id=1", "annotation row 1"),
        ("UPDATE session SET weight_kg=90 WHERE id=1", "session row 1"),
        ("UPDATE patient SET pseudonym='someone' WHERE id=1", "patient row 1"),
        ("UPDATE pump_event SET rate_ml_h=99 WHERE id=1", "pump_event row 1"),
        ("UPDATE device_event SET state='streaming', detail='x' WHERE id=1",
         "device_event row 1"),
        ("DELETE FROM annotation WHERE id=2", "annotation row 2"),
        ("UPDATE numeric SET value=180 WHERE rowid=7", "numeric rows 1..50"),
        ("UPDATE wave SET data=zeroblob(500) WHERE rowid=1", "wave row 1"),
        ("UPDATE audit SET payload='{}' WHERE id=3", "audit row 3"),
        ("INSERT INTO annotation (session_id, kind, t_us, author, text, code, created_us) "
         "VALUES (1, 'observation', 1, 'x', 'backdated', '', 1)", "annotation row 3"),
    ],
    ids=["annotation-text", "session-weight", "patient", "pump-rate", "device-state",
         "deleted-amendment", "numeric-sample", "wave-chunk", "audit-row", "inserted-row"],
)
def test_tampering_is_found_and_named(recorded: Path, cli, sql: str, names: str) -> None:
    with sqlite3.connect(recorded) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(sql)
    r = cli("verify", "--db", str(recorded))
    assert r.returncode == 1
    first_line = r.stderr.splitlines()[0]
    assert "FAILED" in first_line
    assert names in r.stderr


def test_unknown_argument_is_one_line_not_a_traceback(recorded: Path, cli) -> None:
    r = cli("verify", "--db", str(recorded), "--frobnicate")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unrecognized arguments: --frobnicate" in r.stderr
