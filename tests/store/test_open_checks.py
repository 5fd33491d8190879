"""Opening a database refuses what would silently mislead (issue 12): a missing file for a
command that only reads (it used to become an empty database answering "no sessions" or
"ok", folders and all), a damaged file (it used to be read anyway, failing later with an
unrelated error or none), an in-memory database (the record would vanish). ``verify``
reports a damaged file's integrity findings instead of refusing it."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from kapmonitor.model import Channel, Reading
from kapmonitor.store import (
    DatabaseDamaged,
    DatabaseMissing,
    DatabaseUnusable,
    Recorder,
    SessionReader,
    Store,
)
from kapmonitor.store.engine import integrity_findings, open_engine

PAGE = 4096


def _record(path: Path, rows: int = 2_000) -> Path:
    """A genuine recording, checkpointed so every page is in the main file."""
    store = Store.open(str(path))
    try:
        sid = store.create_session(patient="KAP-0042")
        rec = Recorder(store, sid).start()
        rec([Reading(Channel.HR, 60.0 + i % 30, 1_750_000_000_000_000 + i * 1_000_000,
                     "monitor") for i in range(rows)])
        rec.stop()
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _flip_mid_file(path: Path) -> None:
    """Flip the first 64 bytes of three pages in the middle of the file (b-tree page
    headers), as a failing disk or a bad copy would."""
    data = bytearray(path.read_bytes())
    pages = len(data) // PAGE
    assert pages >= 8, "the recording is too small to damage mid-file"
    for page in range(pages // 2, pages // 2 + 3):
        for i in range(page * PAGE, page * PAGE + 64):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    # too damaged to list is damaged all the same
    with contextlib.closing(sqlite3.connect(path)) as conn, contextlib.suppress(
            sqlite3.DatabaseError):
        assert conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]


@pytest.fixture
def damaged(db_path: Path) -> Path:
    _flip_mid_file(_record(db_path))
    return db_path


# -- missing ------------------------------------------------------------------------------


def test_missing_path_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "nonexistent" / "dir" / "x.sqlite"
    with pytest.raises(DatabaseMissing) as exc:
        Store.open(str(path), create=False)
    assert str(exc.value) == f"no database at {path}"
    assert not (tmp_path / "nonexistent").exists()


def test_missing_sqlite_url_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.sqlite"
    with pytest.raises(DatabaseMissing, match="no database at"):
        open_engine(f"sqlite:///{path}", create=False)
    assert not (tmp_path / "sub").exists()


def test_create_keeps_making_the_folders(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "x.sqlite"
    Store.open(str(path)).close()
    assert path.is_file()


def test_empty_file_is_no_database_for_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(DatabaseMissing, match="the file is empty"):
        Store.open(str(path), create=False)


def test_a_folder_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnusable, match="is a folder, not a database file"):
        Store.open(str(tmp_path), create=False)


def test_verify_on_a_missing_database_exits_2_and_creates_nothing(tmp_path: Path,
                                                                 cli) -> None:
    path = tmp_path / "nonexistent" / "dir" / "x.sqlite"
    r = cli("--db", str(path), "verify")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"no database at {path}" in r.stderr
    assert "Traceback" not in r.stderr and "DatabaseMissing" not in r.stderr
    assert not (tmp_path / "nonexistent").exists()


# -- in memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:kap?mode=memory&cache=shared&uri=true"])
def test_in_memory_database_is_refused(url: str) -> None:
    with pytest.raises(DatabaseUnusable) as exc:
        Store.open(url)
    assert str(exc.value) == ("an in-memory database would lose the record when the program "
                              "ends; give a file path")


def test_in_memory_database_works_when_allowed() -> None:
    """Tests may ask for one; every thread (the recorder's writer too) sees the same one."""
    store = Store(open_engine("sqlite://", allow_memory=True))
    try:
        sid = store.create_session()
        rec = Recorder(store, sid).start()
        rec([Reading(Channel.HR, 70.0, i, "m") for i in range(10)])
        rec.stop()
        assert len(SessionReader(store.engine, sid).numeric(Channel.HR)) == 10
    finally:
        store.close()
    with pytest.raises(DatabaseMissing):
        open_engine("sqlite://", allow_memory=True, create=False)


# -- damaged ------------------------------------------------------------------------------


@pytest.mark.parametrize("create", [True, False])
def test_damaged_file_is_refused_in_one_line_and_left_as_it_was(damaged: Path,
                                                                create: bool) -> None:
    before = damaged.read_bytes()
    with pytest.raises(DatabaseDamaged) as exc:
        Store.open(str(damaged), create=create)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"the database {damaged} is damaged (")
    assert message.endswith(f"); run `kapmonitor verify --db {damaged}` for details")
    assert damaged.read_bytes() == before  # no migration wrote into the broken file


def test_damaged_file_opens_with_check_off(damaged: Path) -> None:
    """``verify`` needs to read what it can of a damaged file."""
    open_engine(str(damaged), check=False, create=False, migrate_schema=False).dispose()


def test_verify_prints_integrity_findings_for_a_damaged_file(damaged: Path, cli) -> None:
    r = cli("verify", "--db", str(damaged))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("kapmonitor verify: FAILED: integrity_check: ")
    assert len(lines) >= 2
    assert all(ln.startswith("  also: ") for ln in lines[1:])
    assert integrity_findings(damaged)[0] in r.stderr
    for word in ("Traceback", "DatabaseError", "AssertionError", "sqlite3."):
        assert word not in r.stderr


def test_sessions_refuses_a_damaged_file(damaged: Path, cli) -> None:
    r = cli("sessions", "--db", str(damaged))
    assert r.returncode != 0
    assert "is damaged" in r.stderr and f"kapmonitor verify --db {damaged}" in r.stderr
    assert "Traceback" not in r.stderr


def test_healthy_file_has_no_findings(db_path: Path) -> None:
    assert integrity_findings(_record(db_path, rows=10)) == []
    assert integrity_findings(db_path, full=True) == []


def test_file_that_is_not_a_database(tmp_path: Path, cli) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("session notes, not a database\n" * 200)
    with pytest.raises(DatabaseDamaged) as exc:
        Store.open(str(path), create=False)
    assert "\n" not in str(exc.value)
    assert f"{path} is not a SQLite database (file is not a database)" in str(exc.value)
    r = cli("verify", "--db", str(path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"kapmonitor verify: FAILED: {path} is not a SQLite database")
    assert "Traceback" not in r.stderr
