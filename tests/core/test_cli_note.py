"""``kapmonitor note`` (DESIGN §5): entries from a shell into a real SQLite file, checked
through the reader; cues from the §8.2 library, scores checked against §7/§4.4; append-only
amendments; one-line refusals with exit 2."""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kapmonitor.cli import main
from kapmonitor.cli.note import format_session_time, parse_session_time
from kapmonitor.cues import CUES_ENV
from kapmonitor.store import Entry, SessionReader, Store

from ..conftest import run_cli

T0 = 1_750_000_000_000_000  # infusion start of the "open" session
MIN = 60_000_000


@pytest.fixture(autouse=True)
def no_clinic_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CUES_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Three sessions: open with t0 set, open with no t0 yet (baseline), closed. Built
    (and migrated) once; each test gets its own copy of the file."""
    path = tmp_path_factory.mktemp("note") / "kap.sqlite"
    store = Store.open(str(path))
    try:
        running = store.create_session(patient="KAP-1", owned=False, t_us=T0 - 10 * MIN)
        store.set_infusion_start(running, T0)
        baseline = store.create_session(patient="KAP-2", owned=False)
        closed = store.create_session(patient="KAP-3", owned=False, t_us=T0 - 10 * MIN)
        store.set_infusion_start(closed, T0)
        store.close_session(closed, t_us=T0 + 100 * MIN)
        uid = store.session_row(running).uid
    finally:
        store.close()
    return path, {"running": running, "baseline": baseline, "closed": closed, "uid": uid}


@pytest.fixture
def db(template: tuple[Path, dict[str, object]], db_path: Path) -> dict[str, object]:
    src, ids = template
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{db_path}{suffix}")
    return {"path": str(db_path), **ids}


def note(capsys: pytest.CaptureFixture[str], db: dict[str, object],
         *args: object) -> tuple[int, str, str]:
    code = main(["note", *map(str, args), "--db", str(db["path"])])
    out, err = capsys.readouterr()
    return code, out, err


def entries(db: dict[str, object], session: object) -> list[Entry]:
    store = Store.open(str(db["path"]))
    try:
        return SessionReader(store.engine, int(session)).entries()  # type: ignore[arg-type]
    finally:
        store.close()


def count_rows(db: dict[str, object]) -> int:
    with closing(sqlite3.connect(str(db["path"]))) as conn:
        return int(conn.execute("SELECT count(*) FROM annotation").fetchone()[0])


# -- adding ------------------------------------------------------------------------------------


def test_free_observation_on_an_open_session(capsys, db) -> None:
    code, out, err = note(capsys, db, db["running"], "calm, eyes closed", "--author",
                          "nurse A", "--at-session-time", "05:30")
    assert (code, err) == (0, "")
    [e] = entries(db, db["running"])
    assert out == f'annotation {e.id} added to session {db["running"]} at +05:30: ' \
                  'observation "calm, eyes closed"\n'
    assert (e.kind, e.text, e.code, e.author, e.value) == ("observation", "calm, eyes closed",
                                                           "", "nurse A", None)
    assert e.t_us == T0 + 5 * MIN + 30_000_000


def test_cue_text_is_filled_from_the_library(capsys, db) -> None:
    code, out, _ = note(capsys, db, db["running"], "--kind", "cue", "--code", "IMG-SAFE",
                        "--at-session-time", "20:00")
    assert code == 0
    assert out.endswith('at +20:00: cue IMG-SAFE "Safe place"\n')
    code, out, _ = note(capsys, db, db["running"], "playlist Ambient 2", "--code",
                        "mus-start", "--at-session-time=-03:00")
    assert code == 0
    assert out.endswith('at -03:00 (baseline): cue MUS-START "Music start: playlist '
                        'Ambient 2"\n')
    code, out, _ = note(capsys, db, db["running"], "--code", "OBS-TEARFUL")
    assert code == 0 and 'observation OBS-TEARFUL "Tearful"' in out
    got = [(e.kind, e.code, e.text) for e in entries(db, db["running"])]
    assert got == [("cue", "MUS-START", "Music start: playlist Ambient 2"),
                   ("cue", "IMG-SAFE", "Safe place"),
                   ("observation", "OBS-TEARFUL", "Tearful")]


def test_assessments_are_scored_against_the_scale(capsys, db) -> None:
    code, out, _ = note(capsys, db, db["running"], "--kind", "assessment", "--code",
                        "nausea-nrs", "--value", "3", "--at-session-time", "30:00")
    assert code == 0 and out.endswith('assessment nausea-nrs "Nausea NRS 3/10"\n')
    code, out, _ = note(capsys, db, db["running"], "ready to go home", "--code", "aldrete",
                        "--item", "activity=2", "--item", "respiration=2", "--item",
                        "circulation=1", "--item", "consciousness=2", "--item", "spo2=2",
                        "--at-session-time", "1:35:00")
    assert code == 0 and "at +95:00:" in out
    nrs, aldrete = entries(db, db["running"])
    assert (nrs.kind, nrs.code, nrs.value) == ("assessment", "nausea-nrs", 3.0)
    assert aldrete.value == 9.0
    assert aldrete.text == ("Aldrete 9/10: activity 2, respiration 2, circulation 1, "
                            "consciousness 2, SpO2 2 — meets discharge (>= 9); variant "
                            "modified-1995; ready to go home")
    code, out, _ = note(capsys, db, db["running"], "--code", "moaa-s", "--value", "4")
    assert code == 0 and '"MOAA/S 4 (responds lethargically to name)"' in out
    code, out, _ = note(capsys, db, db["running"], "--code", "cadss", "--value", "14")
    assert code == 0 and '"CADSS 14/92 (total only)"' in out


def test_phase_marker(capsys, db) -> None:
    code, out, _ = note(capsys, db, db["running"], "--code", "emergence")
    assert code == 0 and 'phase emergence "Emergence"' in out


def test_baseline_printed_when_no_infusion_start(capsys, db) -> None:
    code, out, _ = note(capsys, db, db["baseline"], "anxious about needles")
    assert code == 0
    assert f'to session {db["baseline"]} at baseline (no infusion start yet): ' in out


def test_session_by_uid_prefix_and_iso_time(capsys, db) -> None:
    at = datetime.fromtimestamp((T0 + 12 * MIN) / 1e6, UTC).isoformat()
    code, out, _ = note(capsys, db, str(db["uid"])[:8], "yawning", "--at", at)
    assert code == 0 and "at +12:00:" in out
    [e] = entries(db, db["running"])
    assert e.t_us == T0 + 12 * MIN


def test_text_from_stdin_and_json_output(capsys, db, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("long note\nfrom a file\n"))
    code, out, _ = note(capsys, db, db["running"], "-", "--json", "--at-session-time",
                        "02:00")
    assert code == 0
    doc = json.loads(out)
    assert doc["text"] == "long note\nfrom a file"
    assert (doc["session_time"], doc["session_time_s"], doc["kind"]) == ("+02:00", 120.0,
                                                                        "observation")
    assert doc["id"] == entries(db, db["running"])[0].id


def test_closed_session_still_accepts_a_late_entry(capsys, db) -> None:
    before = Store.open(str(db["path"]))
    try:
        closed_us = before.session_row(db["closed"]).closed_us
    finally:
        before.close()
    code, out, _ = note(capsys, db, db["closed"], "patient phoned: slept well",
                        "--at-session-time", "90:00")
    assert code == 0
    assert out.rstrip().endswith("[session closed: written now as a late entry]")
    [e] = entries(db, db["closed"])
    assert e.t_us == T0 + 90 * MIN
    assert e.created_us > closed_us  # created_us records when it was written


def test_amendment_keeps_the_original(capsys, db) -> None:
    _, out, _ = note(capsys, db, db["running"], "--code", "IMG-SAFE", "--at-session-time",
                     "15:00", "--author", "therapist A")
    first = int(re.match(r"annotation (\d+)", out).group(1))
    code, out, _ = note(capsys, db, db["running"], "--amends", first, "--code", "IMG-RIVER",
                        "--author", "therapist A")
    assert code == 0 and out.rstrip().endswith(f"(amends {first})")
    assert "at +15:00:" in out  # an amendment keeps the moment it describes
    _, _, _ = note(capsys, db, db["running"], "--code", "nausea-nrs", "--value", "6")
    nrs = entries(db, db["running"])[-1]
    code, _, _ = note(capsys, db, db["running"], "--amends", nrs.id, "--value", "2")
    assert code == 0

    cue, nrs = entries(db, db["running"])
    assert (cue.code, cue.text, cue.root_id) == ("IMG-RIVER", "Let it pass like a river", first)
    assert [(h.id, h.code, h.text) for h in cue.history] == [(first, "IMG-SAFE", "Safe place")]
    assert cue.t_us == cue.history[0].t_us == T0 + 15 * MIN
    assert (nrs.value, nrs.text, nrs.history[0].value) == (2.0, "Nausea NRS 2/10", 6.0)
    assert count_rows(db) == 4  # nothing was overwritten


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "reason"), [
    (["99", "hello"], "no session '99'"),
    (["zzzz", "hello"], "no session 'zzzz'"),
    (["{running}", "--kind", "cue", "--code", "IMG-NOPE"], "unknown cue 'IMG-NOPE'"),
    (["{running}", "--code", "IMG-NOPE"], "unknown code 'IMG-NOPE'"),
    (["{running}", "--kind", "cue", "--code", "OBS-TEARFUL"],
     "OBS-TEARFUL is an observation tag, not a cue; use --kind observation"),
    (["{running}", "--kind", "observation", "--code", "IMG-SAFE"],
     "IMG-SAFE is a cue, not an observation tag; use --kind cue"),
    (["{running}", "--kind", "cue"], "--kind cue needs --code"),
    (["{running}"], "an observation needs TEXT or --code"),
    (["{running}", "--code", "nausea-nrs", "--value", "11"],
     "Nausea NRS: 11 is out of range (allowed 0 to 10)"),
    (["{running}", "--code", "rass", "--value", "-6"], "RASS: -6 is out of range"),
    (["{running}", "--code", "nausea-nrs"], "Nausea NRS needs a score: --value V"),
    (["{running}", "--code", "aldrete", "--value", "9"], "a total alone is not accepted"),
    (["{running}", "--code", "aldrete", "--item", "activity=2"],
     "missing score(s) for respiration"),
    (["{running}", "--code", "aldrete", "--item", "activity"], "--item must look like"),
    (["{running}", "--code", "gad-7", "--kind", "assessment", "--value", "3"],
     "unknown scale 'gad-7'"),
    (["{running}", "calm", "--value", "3"], "--value, --item and --variant are for --kind "
                                            "assessment"),
    (["{running}", "--code", "closed", "--kind", "phase"], "not by a phase note"),
    (["{baseline}", "x", "--at-session-time", "05:00"], "has no infusion start yet"),
    (["{running}", "x", "--at-session-time", "5 min"], "must look like MM:SS"),
    (["{running}", "x", "--at-session-time", "05:75"], "go up to 59"),
    (["{running}", "x", "--at", "yesterday"], "--at must be an ISO time"),
    (["{running}", "x", "--amends", "12345"], "--amends 12345: no such entry"),
    # 2126 for 2026: refused, not stored where no plot, export or replay can place it
    (["{running}", "x", "--at", "2126-01-01T00:00:00"], "is outside session 1, which began"),
    (["{running}", "x", "--at", "0001-01-01T00:00:00+00:00"], "at most 24 h before or after"),
    (["{running}", "x", "--at-session-time", "99999999998:59"], "is outside session"),
    (["{running}", "x", "--at-session-time=-25:00:00"], "is outside session"),
    (["{closed}", "x", "--at-session-time", "25:41:00"], "which ran from"),
    (["{running}", "x" * 4001], "TEXT is 4001 characters long; at most 4000"),
    (["{running}", "x", "--author", "a" * 129], "--author is 129 characters long; at most 128"),
    (["{running}", "x", "--author", "nurse\nB"], "--author must be one line"),
    (["99999999999999999999999", "x"], "no session '99999999999999999999999'"),
    (["1%", "x"], "no session '1%'"),
])
def test_refusals_exit_2_with_one_line_and_write_nothing(capsys, db, args: list[str],
                                                        reason: str) -> None:
    before = count_rows(db)
    code, out, err = note(capsys, db, *(a.format(**db) for a in args))
    assert code == 2 and out == ""
    assert err.startswith("kapmonitor: error: ") and err.count("\n") == 1
    assert reason in err
    assert count_rows(db) == before


def test_a_late_entry_within_a_day_of_the_session_is_accepted(capsys, db) -> None:
    """The window is the session ±24 h: a note written up the next morning still lands."""
    code, _, err = note(capsys, db, db["closed"], "written up the next morning",
                          "--at-session-time", "24:40:00")  # closed at +100 min, then 23 h
    assert code == 0, err
    [e] = entries(db, db["closed"])
    assert e.t_us == T0 + (24 * 60 + 40) * MIN
    code, _, _ = note(capsys, db, db["running"], "before the start",
                      "--at-session-time=-23:00:00")
    assert code == 0


def test_a_missing_database_is_refused_not_created(capsys, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.sqlite"
    assert main(["note", "1", "hello", "--db", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"kapmonitor: error: no database at {missing}\n"
    assert not missing.parent.exists()


def test_amends_of_an_entry_in_another_session_is_refused(capsys, db) -> None:
    _, out, _ = note(capsys, db, db["baseline"], "other patient")
    other = int(re.match(r"annotation (\d+)", out).group(1))
    code, out, err = note(capsys, db, db["running"], "fixed", "--amends", other)
    assert code == 2 and out == ""
    assert err == (f"kapmonitor: error: --amends {other}: that entry belongs to session "
                   f"{db['baseline']}, not session {db['running']}\n")
    assert entries(db, db["running"]) == []
    code, _, err = note(capsys, db, db["running"], "--kind", "cue", "--code", "IMG-SAFE",
                        "--amends", other)
    assert code == 2 and "belongs to session" in err


def test_amendment_cannot_change_the_kind(capsys, db) -> None:
    _, out, _ = note(capsys, db, db["running"], "calm")
    first = int(re.match(r"annotation (\d+)", out).group(1))
    code, _, err = note(capsys, db, db["running"], "--amends", first, "--kind", "cue",
                        "--code", "IMG-SAFE")
    assert code == 2 and "keeps the kind of the entry it corrects (observation)" in err


def test_clinic_cue_file_is_used(capsys, db, tmp_path: Path) -> None:
    clinic = tmp_path / "clinic.toml"
    clinic.write_text('[[cue]]\nid = "IMG-GARDEN"\ncategory = "imagery"\nlabel = "Garden"\n')
    code, out, _ = note(capsys, db, db["running"], "--code", "IMG-GARDEN", "--cues", clinic)
    assert code == 0 and 'cue IMG-GARDEN "Garden"' in out
    clinic.write_text('[[cue]]\nid = "IMG-SAFE"\nshortcut = "F2"\n')
    code, _, err = note(capsys, db, db["running"], "--code", "IMG-SAFE", "--cues", clinic)
    assert code == 2 and err.count("\n") == 1
    assert "shortcut F2 is given to both IMG-SAFE and RA-SAFE" in err


# -- session time ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "us"), [
    ("05:30", 330_000_000), ("-02:00", -120_000_000), ("95:00", 95 * MIN),
    ("1:05:30", 3_930_000_000), ("+00:01.5", 1_500_000), ("0:00", 0)])
def test_parse_session_time(text: str, us: int) -> None:
    assert parse_session_time(text) == us


def test_format_session_time() -> None:
    assert format_session_time(T0 + 330_900_000, T0) == "+05:30"
    assert format_session_time(T0 - 120_000_000, T0) == "-02:00 (baseline)"
    assert format_session_time(T0 + 95 * MIN, T0) == "+95:00"
    assert format_session_time(T0, None) == "baseline (no infusion start yet)"


# -- a real process ----------------------------------------------------------------------------


def test_note_in_a_real_process(db, tmp_path: Path) -> None:
    env = {CUES_ENV: "", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    r = run_cli("note", str(db["uid"])[:8], "--code", "RA-SAFE", "--at-session-time",
                "25:00", "--author", "therapist A", "--db", str(db["path"]), env=env)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf'annotation \d+ added to session {db["running"]} at \+25:00: cue '
                        r'RA-SAFE "You are safe"\n', r.stdout)
    [e] = entries(db, db["running"])
    assert (e.code, e.author, e.t_us) == ("RA-SAFE", "therapist A", T0 + 25 * MIN)

    r = run_cli("note", str(db["running"]), "--code", "moaa-s", "--value", "7",
                "--db", str(db["path"]), env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "kapmonitor: error: MOAA/S: 7 is out of range (allowed 0 to 5)\n"
