"""Every sample row must belong to exactly one audited batch (issue 12): a forged SpO2 of
70 % appended with plain sqlite3 used to pass ``verify`` and show up in exports, because
only the batches' own rowid ranges were checked. Tampering is done with plain sqlite3 on a
file the real recorder wrote, as a person with the file and a shell would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.model import Channel, Reading, WaveChunk
from kapmonitor.store import Recorder, Store, audit

T0 = 1_750_000_000_000_000


def _sql(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        for s in statements:
            conn.execute(s)


def _batches(path: Path, table: str) -> list[tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        payloads = [json.loads(p) for (p,) in conn.execute(
            "SELECT payload FROM audit WHERE action='samples' ORDER BY id")]
    return [(p["first_rowid"], p["last_rowid"]) for p in payloads if p["table"] == table]


@pytest.fixture
def recorded(db_path: Path) -> Path:
    """Two sessions; the first with three committed batches of numerics (50 rows each,
    HR and SpO2) and of waves (two pleth chunks each), the second with one batch."""
    store = Store.open(str(db_path))
    try:
        sid = store.create_session(patient="KAP-0042", room="Room 2")
        rec = Recorder(store, sid, flush_interval_s=30).start()
        for b in range(3):
            t = T0 + b * 25_000_000
            rec([Reading(Channel.HR if i % 2 else Channel.SPO2, 90.0 + i % 9,
                         t + i * 500_000, "monitor") for i in range(50)])
            rec([WaveChunk(Channel.PLETH, t + k * 1_000_000, 125.0,
                           np.linspace(0, 1, 125) + k, "monitor") for k in range(2)])
            rec.flush_now()
        rec.stop()
        other = store.create_session(patient="KAP-0043")
        rec = Recorder(store, other).start()
        rec([Reading(Channel.HR, 70.0, T0, "monitor")])
        rec.stop()
    finally:
        store.close()
    assert _batches(db_path, "numeric") == [(1, 50), (51, 100), (101, 150), (151, 151)]
    assert _batches(db_path, "wave") == [(1, 2), (3, 4), (5, 6)]
    return db_path


def _fails_naming(cli, path: Path, *names: str) -> str:
    r = cli("verify", "--db", str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.splitlines()[0].startswith("kapmonitor verify: FAILED: ")
    for name in names:
        assert name in r.stderr, f"{name!r} not in:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r.stderr


def test_untouched_recording_verifies_and_prints_its_chain_head(recorded: Path, cli) -> None:
    r = cli("verify", "--db", str(recorded))
    assert r.returncode == 0, r.stderr
    assert "151 numeric and 6 wave rows all in audited batches" in r.stdout
    with contextlib.closing(sqlite3.connect(recorded)) as conn:
        n, head = conn.execute(
            "SELECT count(*), (SELECT hash FROM audit ORDER BY id DESC LIMIT 1) FROM audit"
        ).fetchone()
    assert f"chain head: {head} (audit #{n}, {n} records)" in r.stdout


FORGED_SPO2 = ("INSERT INTO numeric (rowid, session_id, channel, t_us, value, quality, source)"
               " VALUES ({rowid}, 1, 'spo2', {t}, 70.0, 0, 'monitor')")


@pytest.mark.parametrize("rowid", [152, 0, 10**9], ids=["appended", "before-first", "far"])
def test_forged_numeric_row_is_named(recorded: Path, cli, rowid: int) -> None:
    _sql(recorded, FORGED_SPO2.format(rowid=rowid, t=T0 + 40_000_000))
    err = _fails_naming(cli, recorded, f"numeric row {rowid}:", "session 1", "spo2",
                        "2025-06-15 15:07:20.000 UTC", "value 70.0",
                        "in no audited batch: added outside the recorder")
    assert len(err.splitlines()) == 1  # nothing else is wrong


def test_run_of_forged_rows_is_one_finding(recorded: Path, cli) -> None:
    _sql(recorded, *(FORGED_SPO2.format(rowid="NULL", t=T0 + 60_000_000 + i * 1_000_000)
                     for i in range(5)))
    err = _fails_naming(cli, recorded, "numeric rows 152..156:", "5 samples",
                        "15:07:40.000 to 2025-06-15 15:07:44.000 UTC")
    assert len(err.splitlines()) == 1


def test_forged_row_hidden_by_a_forged_audit_batch_overlapping_a_genuine_one(
        recorded: Path) -> None:
    """A forger who appends audit records through the app's own code still cannot claim
    rows another batch owns, a range that does not hold its count, or audit a sample as if
    it were a clinical row."""
    store = Store.open(str(recorded))
    try:
        with store.engine.begin() as conn:
            audit.append(conn, "numeric", None, "samples", T0, {
                "table": "numeric", "session_id": 1, "first_rowid": 40, "last_rowid": 60,
                "count": 21, "digest": "0" * 64})
            audit.append(conn, "wave", None, "samples", T0, {
                "table": "wave", "session_id": 1, "first_rowid": 7, "last_rowid": 9,
                "count": 2, "digest": "0" * 64})
            audit.append(conn, "numeric", 152, "insert", T0, {"value": 70.0})
        with store.engine.connect() as conn:
            faults = [str(f) for f in audit.verify(conn)]
    finally:
        store.close()
    assert any(f.startswith("numeric rows 40..60 (audit #") and "overlaps audit #" in f
               and "(rows 1..50)" in f for f in faults), faults
    assert any(f.startswith("wave rows 7..9") and "says 2 rows" in f for f in faults), faults
    assert any("audit record for 'numeric' row 152, a table whose rows are not audited one "
               "by one" in f for f in faults), faults


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("DELETE FROM numeric WHERE rowid=57", ["numeric row 57 (audit #", "session 1",
                                                 "missing from the audited batch of rows "
                                                 "51..100: deleted"]),
        ("DELETE FROM numeric WHERE rowid BETWEEN 51 AND 100",
         ["numeric rows 51..100 (audit #", "50 samples of session 1", "deleted"]),
        ("DELETE FROM numeric WHERE rowid=151", ["numeric row 151", "session 2", "deleted"]),
        ("UPDATE numeric SET value=70 WHERE rowid=57",
         ["numeric rows 51..100 (audit #", "session 1, hr/spo2, 2025-06-15 15:07:05.000 to "
          "2025-06-15 15:07:29.500 UTC", "a sample in these rows was edited"]),
        ("UPDATE numeric SET t_us=t_us+1 WHERE rowid=150", ["numeric rows 101..150", "edited"]),
        ("UPDATE numeric SET session_id=2 WHERE rowid=57",
         ["numeric row 57 (audit #", "(session 2, spo2", "was recorded for session 1: "
          "moved to another session"]),
        ("UPDATE numeric SET rowid=152 WHERE rowid=150",
         ["numeric row 150 (audit #", "deleted", "numeric row 152: sample (session 1, hr",
          "in no audited batch"]),
        ("INSERT INTO wave (session_id, channel, t_us, rate_hz, n, data, quality, source) "
         "VALUES (1, 'pleth', 1750000060000000, 125.0, 125, zeroblob(500), 0, 'monitor')",
         ["wave row 7: sample (session 1, pleth, 2025-06-15 15:07:40.000 UTC)",
          "in no audited batch"]),
        ("DELETE FROM wave WHERE rowid=3", ["wave row 3 (audit #", "deleted"]),
        ("UPDATE wave SET data=zeroblob(500) WHERE rowid=4",
         ["wave rows 3..4 (audit #", "session 1, pleth", "edited"]),
    ],
    ids=["numeric-deleted", "numeric-batch-deleted", "numeric-last-deleted", "numeric-edited",
         "numeric-time-edited", "numeric-moved", "numeric-renumbered", "wave-forged",
         "wave-deleted", "wave-edited"],
)
def test_sample_tampering_is_named(recorded: Path, cli, sql: str, names: list[str]) -> None:
    _sql(recorded, sql)
    _fails_naming(cli, recorded, *names)


def _chain_hash(prev: str, table: str, row_id: int | None, action: str, t_us: int,
                payload: str) -> str:
    """The chain's hash written out from its documented formula, as a forger who has
    the source would: nothing in it is secret."""
    h = hashlib.sha256()
    for part in (prev, table, "" if row_id is None else str(row_id), action, str(t_us),
                 payload):
        h.update(part.encode() + b"\x1f")
    return h.hexdigest()


def _rewrite_whole_chain(path: Path) -> None:
    """Edit a sample, fix its batch digest, and recompute every hash from the genesis."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE numeric SET value=70 WHERE rowid=57")
        rows = conn.execute("SELECT id, table_name, row_id, action, t_us, payload FROM audit "
                            "ORDER BY id").fetchall()
        prev = audit.GENESIS
        for aid, table, row_id, action, t_us, payload in rows:
            if action == "samples" and table == "numeric":
                p = json.loads(payload)
                if p["first_rowid"] <= 57 <= p["last_rowid"]:
                    data = conn.execute("SELECT * FROM numeric WHERE rowid BETWEEN ? AND ? "
                                        "ORDER BY rowid",
                                        (p["first_rowid"], p["last_rowid"])).fetchall()
                    p["digest"] = audit.sample_digest(data)
                    payload = audit.canonical(p)
            digest = _chain_hash(prev, table, row_id, action, t_us, payload)
            conn.execute("UPDATE audit SET payload=?, prev_hash=?, hash=? WHERE id=?",
                         (payload, prev, digest, aid))
            prev = digest


def _head(stdout: str) -> str:
    m = re.search(r"chain head: ([0-9a-f]{64})", stdout)
    assert m, stdout
    return m.group(1)


def test_an_anchor_written_down_catches_a_rewrite_of_the_whole_chain(recorded: Path,
                                                                     cli) -> None:
    """What the chain cannot do alone, and what an anchor outside the file adds."""
    anchor = _head(cli("verify", "--db", str(recorded)).stdout)
    store = Store.open(str(recorded))  # the record grows after the anchor was written
    store.add_annotation(1, "observation", "resting", author="RN")
    store.close()
    later = cli("verify", "--db", str(recorded), "--expect-hash", anchor[:16])
    assert later.returncode == 0, later.stderr
    assert re.search(rf"anchor {anchor[:16]} found at audit #\d+ of \d+", later.stdout)

    _rewrite_whole_chain(recorded)
    rewritten = cli("verify", "--db", str(recorded))
    assert rewritten.returncode == 0, rewritten.stderr  # the limit: a full rewrite verifies
    assert _head(rewritten.stdout) != _head(later.stdout)
    _fails = cli("verify", "--db", str(recorded), "--expect-hash", anchor)
    assert _fails.returncode == 1
    assert f"the anchored hash {anchor} is not in the audit chain" in _fails.stderr


@pytest.mark.parametrize("bad", ["abc", "z" * 20, "0" * 65])
def test_expect_hash_must_look_like_a_hash(recorded: Path, cli, bad: str) -> None:
    r = cli("verify", "--db", str(recorded), "--expect-hash", bad)
    assert r.returncode == 2
    assert "--expect-hash wants 16 to 64 hex digits" in r.stderr
    assert "Traceback" not in r.stderr
