"""Bad input gets a one-line reason and loses nothing (DESIGN §5, issue 12).

A table of bad values × options across every subcommand, run through ``kapmonitor.cli.main``
in this process against real SQLite files: each must exit 2 (1 only where the fault is not
the input), print exactly one non-empty line on standard error and nothing on standard
output, never a traceback, SQL or an exception class name, and, for the commands that
write (``record``, ``note``), leave every table of the database as it was. Real processes
where only a process shows the behaviour: standard output closed early (SIGPIPE), and the
replay window on a record holding times no clock can show.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from kapmonitor.cli import describe_error, main
from kapmonitor.cues import CUES_ENV
from kapmonitor.model import now_us
from kapmonitor.store import Store

from .conftest import run_cli

MIN = 60_000_000
HOUR = 60 * MIN
CLASS_NAME = re.compile(r"\b[A-Z][a-zA-Z]+(Error|Exception)\b")
MASIMO_LINE = (b"03/14/24 10:15:02 SN=0000123456 SPO2=097% BPM=072 PI=03.45% SPCO=--.-% "
               b"SPMET=00.8% DESAT=00 PIDELTA=+02 PVI=014 ALARM=0000 EXC=000000\r\n")


@dataclass(frozen=True)
class Case:
    """One bad command line. ``expect`` is a part of the one line it must print; ``code``
    the exit status (2: bad input)."""

    args: tuple[str, ...]
    expect: str
    code: int = 2

    @property
    def id(self) -> str:
        text = " ".join(self.args)
        return text if len(text) <= 70 else text[:67] + "..."


# -- the table ---------------------------------------------------------------------------------

#: Not numbers a quantity can be: each is refused by every numeric option.
BAD_NUMBERS = ("nan", "inf", "-inf", "1e400", "abc", "")
BAD_WHOLE = ("abc", "1.5", "", "99999999999999999999999999")

DOSE = ("dose", "--weight", "70", "--mg-per-kg", "0.5", "--minutes", "40")
RECORD = ("record", "--headless", "--db", "{db}", "--device", "ge-s5=/dev/kap-no-such-port")
NOTE = ("note", "{running}", "calm", "--db", "{db}")
EXPORT = ("export", "{closed}", "--out", "{tmp}/out", "--db", "{db}")

#: (command line without the option, option) for every option that takes a number
NUMERIC_OPTIONS: list[tuple[tuple[str, ...], str]] = [
    ((*DOSE, "--concentration", "1"), "--weight"),
    ((*DOSE, "--concentration", "1"), "--mg-per-kg"),
    ((*DOSE, "--concentration", "1"), "--minutes"),
    (DOSE, "--concentration"),
    (DOSE, "--bag-ml"),
    (RECORD, "--duration"),
    (RECORD, "--weight"),
    (RECORD, "--mg-per-kg"),
    (RECORD, "--minutes"),
    (RECORD, "--concentration"),
    (RECORD, "--speed"),
    (("note", "{running}", "--code", "nausea-nrs", "--db", "{db}"), "--value"),
    ((*EXPORT, "--format", "fhir"), "--interval"),
    ((*EXPORT, "--format", "edf"), "--hold"),
    (("replay", "{closed}", "--db", "{db}"), "--quit-after"),
    (("demo", "--db", "{db}"), "--speed"),
    (("demo", "--db", "{db}"), "--quit-after"),
    (("simulate",), "--speed"),
]

#: (command line without the option, option) for every option that takes a whole number
WHOLE_OPTIONS: list[tuple[tuple[str, ...], str]] = [
    (RECORD, "--epoch"),
    (("simulate",), "--seed"),
    (("simulate",), "--tcp"),
    (("simulate",), "--epoch"),
    (("demo", "--db", "{db}"), "--seed"),
    (NOTE, "--amends"),
]


def _number_cases() -> list[Case]:
    cases = [Case((*base, f"{opt}={bad}"), f"argument {opt}: ")
             for base, opt in NUMERIC_OPTIONS for bad in BAD_NUMBERS]
    cases += [Case((*base, f"{opt}={bad}"), f"argument {opt}: ")
              for base, opt in WHOLE_OPTIONS for bad in BAD_WHOLE]
    return cases


#: Numbers that parse but that no clock, port, seed, id or dosing bound accepts.
OUT_OF_RANGE = [
    Case((*DOSE, "--concentration", "1", "--weight=-1"), "weight -1 kg is below the hard minimum"),
    Case((*DOSE, "--concentration", "1", "--weight", "1e300"), "is above the hard maximum 250"),
    Case((*DOSE, "--concentration", "0"), "concentration 0 mg/mL is below the hard minimum"),
    Case((*DOSE, "--concentration", "50"), "undiluted vial strength"),
    Case((*DOSE, "--bag-ml=-100"), "bag volume -100 mL is below"),
    Case((*RECORD, "--mg-per-kg=-1"), "dose -1 mg/kg is below the hard minimum 0.05"),
    Case((*RECORD, "--mg-per-kg", "1e300"), "dose 1e+300 mg/kg is above the hard maximum"),
    Case((*RECORD, "--minutes=-40"), "duration -40 min is below the hard minimum 10"),
    Case((*RECORD, "--concentration", "0"), "concentration 0 mg/mL is below"),
    Case((*RECORD, "--concentration", "100"), "undiluted vial strength"),
    Case((*RECORD, "--weight", "900"), "weight 900 kg is above the hard maximum 250 kg"),
    Case((*RECORD, "--weight", "10", "--mg-per-kg", "5"), "weight 10 kg is below"),
    Case((*RECORD, "--duration", "0"), "argument --duration: '0' must be above 0"),
    Case((*RECORD, "--duration=-5"), "argument --duration: '-5' must be above 0"),
    Case((*RECORD, "--duration", "1e12"), "longer than 7 days"),
    Case((*RECORD, "--speed", "0"), "must be above 0"),
    Case((*RECORD, "--speed", "1e6"), "--speed 1e+06 is above 1000"),
    Case((*RECORD, "--epoch=-1"), "outside 0 to"),
    Case((*RECORD, "--alarm", "hr.high=nan"), "HR"),
    Case((*RECORD, "--alarm", "hr.high=lots"), "HR high must look like"),
    Case((*RECORD, "--alarm", "nope"), "nope"),
    Case(("note", "{running}", "--code", "nausea-nrs", "--value", "11", "--db", "{db}"),
         "Nausea NRS: 11 is out of range"),
    Case(("note", "{running}", "--code", "aldrete", "--item", "activity=nan", "--item",
          "respiration=2", "--db", "{db}"), "--item activity: 'nan' is not a number"),
    Case((*NOTE, "--amends", "0"), "outside 1 to"),
    Case((*NOTE, "--amends", "99999"), "--amends 99999: no such entry"),
    Case((*EXPORT, "--format", "fhir", "--interval=-5"), "numeric interval -5.0 s"),
    Case(("replay", "{closed}", "--quit-after", "0", "--db", "{db}"),
         "--quit-after must be positive"),
    Case(("replay", "{closed}", "--quit-after", "1e12", "--db", "{db}"), "longer than 7 days"),
    Case(("demo", "--quit-after", "1e12", "--db", "{db}"), "longer than 7 days"),
    Case(("demo", "--speed", "0.0001", "--quit-after", "86400", "--db", "{db}"),
         "longer than 7 days"),
    Case(("demo", "--speed", "5000", "--db", "{db}"), "--speed 5000 is above 1000"),
    Case(("simulate", "--speed", "0"), "must be above 0"),
    Case(("simulate", "--speed", "5000"), "--speed 5000 is above 1000"),
    Case(("simulate", "--seed=-1"), "outside 0 to 4294967295"),
    Case(("simulate", "--seed", str(2**40)), "outside 0 to 4294967295"),
    Case(("simulate", "--tcp", "0"), "outside 1 to 65534"),
    Case(("simulate", "--tcp", "70000"), "outside 1 to 65534"),
]

#: Device specifications that could never connect: refused before a session starts.
BAD_DEVICES = [
    ("ge-s5", "is not PROTOCOL=PORT"),
    ("ge-s5=", "is not PROTOCOL=PORT"),
    ("ge-s5= ", "names no port"),
    ("philips=/dev/ttyUSB0", "unknown protocol 'philips'"),
    ("ge-s5=/dev/ttyUSB0,parity=Q", "parity='Q' is not valid for /dev/ttyUSB0: one of N, E"),
    ("ge-s5=/dev/ttyUSB0,baudrate=-9600", "a baud rate is a positive whole number"),
    ("ge-s5=/dev/ttyUSB0,baudrate=0", "a baud rate is a positive whole number"),
    ("ge-s5=/dev/ttyUSB0,baudrate=fast", "baudrate='fast' is not valid"),
    ("ge-s5=/dev/ttyUSB0,baudrate=9600.5", "a whole number"),
    ("ge-s5=/dev/ttyUSB0,bytesize=9", "bytesize='9' is not valid for /dev/ttyUSB0: one of 5"),
    ("ge-s5=/dev/ttyUSB0,stopbits=3", "stopbits='3' is not valid for /dev/ttyUSB0: one of 1"),
    ("ge-s5=/dev/ttyUSB0,stopbits=nan", "stopbits='nan' is not valid"),
    ("ge-s5=/dev/ttyUSB0,xonxoff=maybe", "xonxoff='maybe' is not valid"),
    ("ge-s5=/dev/ttyUSB0,speed=9", "unknown option 'speed'"),
    ("ge-s5=/dev/ttyUSB0,parity", "is not key=value"),
    ("ge-s5=/dev/ttyUSB0,name=", "name= is empty"),
    ("ge-s5=/dev/ttyUSB0,name=" + "n" * 65, "longer than 64 characters"),
    ("ge-s5=/dev/ttyUSB0,baudrate=9600,baudrate=19200", "option 'baudrate' is given twice"),
    ("ge-s5=/dev/" + "x" * 300, "longer than 255 characters"),
    ("ge-s5=foo://x", "unknown URL scheme 'foo://'"),
    ("ge-s5=://x", "unknown URL scheme"),
    ("ge-s5=socket://", "socket:// needs a host"),
    ("ge-s5=socket://10.0.0.5", "socket:// needs a TCP port"),
    ("ge-s5=socket://10.0.0.5:", "socket:// needs a TCP port"),
    ("ge-s5=socket://10.0.0.5:0", "the TCP port must be a number from 1 to 65535"),
    ("ge-s5=socket://10.0.0.5:99999", "the TCP port must be a number from 1 to 65535"),
    ("ge-s5=socket://10.0.0.5:port", "the TCP port must be a number from 1 to 65535"),
    ("ge-s5=socket://:4001", "socket:// needs a host"),
    ("ge-s5=rfc2217://10.0.0.5", "rfc2217:// needs a TCP port"),
    ("ge-s5=spy://", "nothing after spy://"),
    ("ge-s5=/dev/kap-no-such-port", "no such port /dev/kap-no-such-port"),
    ("ge-s5=/dev/null", "/dev/null is not a serial port"),
    ("ge-s5={tmp}", "is not a serial port"),
]

RECORD_BASE = ("record", "--headless", "--db", "{db}")
OTHER_CASES = [
    # record: devices, text fields, the database
    *[Case((*RECORD_BASE, "--device", spec), expect) for spec, expect in BAD_DEVICES],
    Case(RECORD_BASE, "name at least one --device"),
    Case((*RECORD_BASE, "--device", "ge-s5=/dev/ttyUSB0", "--device", "ge-s5=/dev/ttyUSB1,"
          "name=monitor"), "two devices are named 'monitor'"),
    Case(("record", "--device", "ge-s5=/dev/ttyUSB0", "--db", "{db}"),
         "the following arguments are required: --headless"),
    Case((*RECORD, "--patient", "P" * 65), "--patient is 65 characters long; at most 64"),
    Case((*RECORD, "--patient", "KAP\n1"), "--patient must be one line"),
    Case((*RECORD, "--room", "R" * 65), "--room is 65 characters long; at most 64"),
    Case((*RECORD, "--clinicians", "C" * 257), "--clinicians is 257 characters long"),
    # (loop:// is not probed, so these reach the database)
    Case(("record", "--headless", "--device", "ge-s5=loop://", "--db", "sqlite://"),
         "an in-memory database would lose the record"),
    Case(("record", "--headless", "--device", "ge-s5=loop://", "--db", "sqlite:///:memory:"),
         "an in-memory database would lose the record"),
    Case(("record", "--headless", "--device", "ge-s5=loop://", "--db", "foo://x"),
         "--db 'foo://x' is not a database URL this app can use"),
    # note: sessions, times, text
    Case(("note", "99", "x", "--db", "{db}"), "no session '99'"),
    Case(("note", "zzzz", "x", "--db", "{db}"), "no session 'zzzz'"),
    Case(("note", "9" * 30, "x", "--db", "{db}"), "no session"),
    Case(("note", "%%%%%%%%", "x", "--db", "{db}"), "no session '%%%%%%%%'"),
    Case(("note", "________", "x", "--db", "{db}"), "no session '________'"),
    Case(("note", "", "x", "--db", "{db}"), "no session ''"),
    Case(("note", "1", "x", "--db", "{missing}"), "no database at"),
    Case((*NOTE, "--at", "2126-01-01T00:00:00"), "is outside session"),
    Case((*NOTE, "--at", "1926-01-01T00:00:00"), "is outside session"),
    Case((*NOTE, "--at", "0001-01-01T00:00:00"), "--at"),
    Case((*NOTE, "--at", "9999-12-31T23:59:59"), "is outside session"),
    Case((*NOTE, "--at", "yesterday"), "--at must be an ISO time"),
    Case((*NOTE, "--at", ""), "--at must be an ISO time"),
    Case((*NOTE, "--at-session-time", "99999999998:59"), "is outside session"),
    Case((*NOTE, "--at-session-time", "9" * 5000 + ":00"), "must look like MM:SS"),
    Case((*NOTE, "--at-session-time", "5 min"), "must look like MM:SS"),
    Case((*NOTE, "--at-session-time", "05:75"), "go up to 59"),
    Case((*NOTE, "--at", "2026-01-01T00:00:00", "--at-session-time", "05:00"),
         "not allowed with argument"),
    Case(("note", "{running}", "x" * 4001, "--db", "{db}"), "TEXT is 4001 characters long"),
    Case((*NOTE, "--author", "A" * 129), "--author is 129 characters long; at most 128"),
    Case((*NOTE, "--kind", "diary"), "invalid choice: 'diary'"),
    Case((*NOTE, "--code", "IMG-NOPE"), "unknown code 'IMG-NOPE'"),
    Case(("note", "{running}", "x", "--code", "closed", "--kind", "phase", "--db", "{db}"),
         "not by a phase note"),
    Case(("note", "{running}", "--db", "{db}"), "an observation needs TEXT or --code"),
    Case((*NOTE, "--cues", "{missing}"), "cue file {missing} does not exist"),
    # read commands never create a database, and say what is wrong with one
    Case(("sessions", "--db", "{missing}"), "no database at"),
    Case(("recover", "--db", "{missing}"), "no database at"),
    Case(("export", "1", "--format", "csv", "--out", "{tmp}/o", "--db", "{missing}"),
         "no database at"),
    Case(("replay", "1", "--db", "{missing}"), "no database at"),
    Case(("sessions", "--db", "{junk}"), "{junk} is not a SQLite database"),
    Case(("export", "1", "--format", "csv", "--out", "{tmp}/o", "--db", "{junk}"),
         "is not a SQLite database"),
    Case(("note", "1", "x", "--db", "{junk}"), "is not a SQLite database"),
    Case(("sessions", "--db", "{newer}"), "a schema this version of KAP Monitor does not know"),
    Case(("sessions", "--db", "{tmp}"), "{tmp} is a folder, not a database file"),
    Case(("record", "--headless", "--device", "ge-s5=loop://", "--db", "{tmp}"),
         "is a folder, not a database file"),
    Case(("record", "--headless", "--device", "ge-s5=loop://", "--db",
          "sqlite:////proc/kap.sqlite"), "the database file cannot be opened"),
    Case(("sessions", "--db", "foo://x"), "--db 'foo://x' is not a database URL this app"),
    Case(("sessions", "--db", "postgresql://u@localhost/kap"), "needs the database driver"),
    Case(("sessions", "--json", "extra"), "unrecognized arguments: extra"),
    # export
    Case(("export", "99", "--format", "csv", "--out", "{tmp}/o", "--db", "{db}"),
         "no session '99'"),
    Case(("export", "9" * 30, "--format", "csv", "--out", "{tmp}/o", "--db", "{db}"),
         "no session"),
    Case((*EXPORT, "--format", "xls"), "invalid choice: 'xls'"),
    Case((*EXPORT, "--format", "csv", "--bundle", "transaction"), "--bundle does not apply"),
    Case((*EXPORT, "--format", "fhir", "--bundle", "batch"), "invalid choice: 'batch'"),
    Case(("export", "{closed}", "--format", "csv", "--out", "{missing}", "--db", "{db}"),
         "does not exist"),
    Case(("export", "{closed}", "--format", "csv", "--db", "{db}"),
         "the following arguments are required: --out"),
    # replay
    Case(("replay", "99", "--db", "{db}"), "no session '99'"),
    Case(("replay", "{closed}", "--at", "99999:00", "--db", "{db}"), "is outside session"),
    Case(("replay", "{closed}", "--at", "soon", "--db", "{db}"), "--at must look like MM:SS"),
    Case(("replay", "{closed}", "--screenshot", "{missing}", "--db", "{db}"),
         "does not exist"),
    Case(("replay", "{closed}", "--screenshot", "{tmp}", "--db", "{db}"), "is a folder"),
    # decode
    Case(("decode", "--protocol", "nope", "-"), "unknown protocol 'nope'"),
    Case(("decode", "--protocol", "masimo", "{missing}"), "cannot read"),
    Case(("decode", "--protocol", "masimo", "{tmp}"), "cannot read"),
    Case(("decode", "{missing}"), "--protocol is required"),
    Case(("decode", "--protocol", "masimo"), "name a capture file"),
    Case(("decode", "--protocol", "masimo", "--from", "both", "-"), "invalid choice: 'both'"),
    # simulate and demo: refused before a port or a window opens
    Case(("simulate", "--monitor", "nope"), "unknown protocol 'nope'"),
    Case(("simulate", "--pump", "intellivue"), "intellivue is a monitor protocol"),
    Case(("simulate", "--monitor", "bbraun-bcc"), "bbraun-bcc is a pump protocol"),
    Case(("simulate", "--scenario", "no-such-scenario"), "no-such-scenario"),
    Case(("simulate", "--scenario", "{junk}"), "junk"),
    Case(("demo", "--scenario", "no-such-scenario", "--db", "{db}"), "no-such-scenario"),
    Case(("demo", "--screenshot", "{missing}", "--db", "{db}"), "does not exist"),
    # the command itself
    Case(("frobnicate",), "invalid choice: 'frobnicate'"),
    Case(("sessions", "--db"), "argument --db: expected one argument"),
    Case(("dose",), "the following arguments are required"),
]

CASES = _number_cases() + OUT_OF_RANGE + OTHER_CASES


def test_the_table_is_big_enough() -> None:
    """At least 145 bad command lines, over every subcommand that takes input."""
    assert len(CASES) >= 145
    commands = {c.args[0] for c in CASES}
    assert {"dose", "record", "note", "sessions", "export", "replay", "recover", "decode",
            "simulate", "demo"} <= commands


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """An open session (infusion started 10 min ago) and a closed one, built once."""
    path = tmp_path_factory.mktemp("inputs") / "kap.sqlite"
    now = now_us()
    store = Store.open(str(path))
    try:
        running = store.create_session(patient="KAP-1", owned=False, t_us=now - 20 * MIN)
        store.set_infusion_start(running, now - 10 * MIN)
        store.add_annotation(running, "observation", "calm", t_us=now - 5 * MIN)
        closed = store.create_session(patient="KAP-2", owned=False, t_us=now - 3 * HOUR)
        store.set_infusion_start(closed, now - 170 * MIN)
        store.close_session(closed, t_us=now - 2 * HOUR)
    finally:
        store.close()
    return path, {"running": running, "closed": closed}


@pytest.fixture
def places(template: tuple[Path, dict[str, int]], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's copy of the database, and the other paths the table names."""
    monkeypatch.delenv(CUES_ENV, raising=False)
    monkeypatch.delenv("KAPMONITOR_DB", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    src, ids = template
    db = tmp_path / "kap.sqlite"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{db}{suffix}")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, only some text\n" * 200)
    newer = tmp_path / "newer.sqlite"
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
        conn.commit()
    work = tmp_path / "work"
    work.mkdir()
    return {"db": str(db), "tmp": str(work), "missing": str(tmp_path / "no" / "such"),
            "junk": str(junk), "newer": str(newer),
            "running": str(ids["running"]), "closed": str(ids["closed"])}


def table_counts(db: str) -> dict[str, int]:
    """Rows in every table of ``db`` (audit included): what "nothing written" means."""
    with closing(sqlite3.connect(db)) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def assert_one_line_reason(err: str, expect: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n") and lines[0].strip(), repr(err)
    line = lines[0]
    assert expect in line, line
    assert "Traceback" not in line
    assert "SELECT" not in line and "INSERT" not in line and "[SQL" not in line, line
    assert not CLASS_NAME.search(line), line


# -- the fuzz ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(case: Case, places: dict[str, str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(**places) if "{" in a else a for a in case.args]
    before = table_counts(places["db"])
    assert main(argv) == case.code
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_reason(err, case.expect.format(**places))
    assert table_counts(places["db"]) == before  # nothing written, not even an audit row
    assert not Path(places["missing"]).parent.exists()  # and no database made on the way


# -- the words for faults that are not the input -------------------------------------------------


def _locked_error(path: Path) -> OperationalError:
    """A real "database is locked" from SQLAlchemy: its message carries the SQL."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": 1})
        return caught.value
    finally:
        holder.close()
        engine.dispose()


def _full_error(path: Path) -> OperationalError:
    """A real SQLITE_FULL: the database may not grow past its pages."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS big (x TEXT)"))
            pages = conn.execute(text("PRAGMA page_count")).scalar()
            conn.execute(text(f"PRAGMA max_page_count = {pages}"))
            with pytest.raises(OperationalError) as caught:
                conn.execute(text("INSERT INTO big (x) VALUES (:x)"), {"x": "x" * 100_000})
        return caught.value
    finally:
        engine.dispose()


def _readonly_error(path: Path) -> OperationalError:
    sqlite3.connect(path).close()
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        return caught.value
    finally:
        engine.dispose()


def test_database_faults_are_plain_words_without_sql(tmp_path: Path) -> None:
    locked = _locked_error(tmp_path / "locked.sqlite")
    assert "INSERT" in str(locked)  # what SQLAlchemy would have shown
    line, code = describe_error(locked, db="kap.sqlite")
    assert (line, code) == ("kapmonitor: error: the database is busy (another program is "
                            "writing to it); try again", 1)

    line, code = describe_error(_full_error(tmp_path / "full.sqlite"))
    assert code == 1 and "the disk is full" in line and "free some space" in line

    line, code = describe_error(_readonly_error(tmp_path / "ro.sqlite"))
    assert code == 1 and "the database is read-only" in line
    for line, _ in (describe_error(_full_error(tmp_path / "full2.sqlite")),
                    describe_error(_readonly_error(tmp_path / "ro2.sqlite"))):
        assert_one_line_reason(line + "\n", "kapmonitor: error: ")


def test_anything_else_is_an_internal_error_in_one_line() -> None:
    with pytest.raises(OverflowError) as caught:
        __import__("datetime").datetime.fromtimestamp(1e20)
    line, code = describe_error(caught.value)
    assert code == 1
    assert line.startswith("kapmonitor: internal error: ")
    assert line.endswith("(run with --debug for details)")
    assert_one_line_reason(line + "\n", "out of range")
    try:
        raise KeyError("x\ny")
    except KeyError as exc:
        line, _ = describe_error(exc)
    assert_one_line_reason(line + "\n", "internal error")


def test_os_errors_name_the_file() -> None:
    with pytest.raises(FileNotFoundError) as caught:
        Path("/no/such/folder/file.csv").read_text()
    line, code = describe_error(caught.value)
    assert (line, code) == ("kapmonitor: error: No such file or directory: "
                            "/no/such/folder/file.csv", 2)


# -- real processes ----------------------------------------------------------------------------


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """``kapmonitor decode ... | head``: the reader goes away; no BrokenPipeError, exit 141.
    The capture arrives on standard input only after the pipe is closed, so the first
    write is certain to find it closed."""
    with subprocess.Popen([sys.executable, "-m", "kapmonitor", "decode", "--protocol",
                           "masimo", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=os.environ.copy()) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.close()
        try:
            proc.stdin.write(MASIMO_LINE * 2000)
            proc.stdin.close()
        except BrokenPipeError:  # it may already have finished reading
            pass
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert err.decode().startswith("masimo: ") or err == b""
    assert b"Error" not in err and b"Traceback" not in err


def test_head_of_a_long_listing(tmp_path: Path) -> None:
    """``kapmonitor sessions --json | head -c 100``: more output than a pipe holds, the
    reader stops after 100 bytes; the command ends with 141 and nothing on stderr."""
    db = tmp_path / "many.sqlite"
    store = Store.open(str(db))
    try:
        t = now_us()
        for i in range(250):
            store.create_session(patient=f"KAP-{i}", owned=False, t_us=t + i)
    finally:
        store.close()
    with subprocess.Popen([sys.executable, "-m", "kapmonitor", "sessions", "--json", "--db",
                           str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=os.environ.copy()) as proc:
        assert proc.stdout is not None
        head = proc.stdout.read(100)
        proc.stdout.close()
        _, err = proc.communicate(timeout=60)
    assert head.startswith(b"[")
    assert proc.returncode == 141 and err == b""


def test_dose_json_into_a_closed_pipe() -> None:
    """The reported case: ``dose ... --json | head`` with the reader gone."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes anything
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kapmonitor", "dose", "--weight", "70", "--mg-per-kg",
             "0.5", "--minutes", "40", "--concentration", "1", "--json"],
            stdout=w, stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(w)
    assert proc.returncode == 128 + signal.SIGPIPE == 141 and proc.stderr == b""


def test_bad_input_in_a_real_process(places: dict[str, str]) -> None:
    """The same one line from a real process: no log lines, no usage block."""
    r = run_cli("record", "--headless", "--db", places["db"], "--device",
                "ge-s5=/dev/ttyUSB0,parity=Q")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("kapmonitor: error: parity='Q' is not valid for /dev/ttyUSB0: one "
                        "of N, E, O, M, S\n")
    r = run_cli("sessions", "--db", places["missing"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no database at" in r.stderr
    assert not Path(places["missing"]).parent.exists()
    r = run_cli("dose", "--weight", "inf", "--mg-per-kg", "0.5", "--minutes", "40",
                "--concentration", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "argument --weight: 'inf' is not a finite number" in r.stderr


def test_replay_shows_a_record_with_times_no_clock_holds(places: dict[str, str],
                                                         tmp_path: Path) -> None:
    """Entries stored before the ±24 h rule (a year 2126 for 2026, a session closed
    centuries later) must not overflow the replay window's slider or clock."""
    store = Store.open(places["db"])
    try:
        sid = int(places["closed"])
        far = 9_000_000_000_000_000_000  # year ~287,000
        store.add_annotation(sid, "observation", "typo year", t_us=far)
        store.add_annotation(sid, "observation", "before time", t_us=-far)
        other = store.create_session(patient="KAP-3", owned=False, t_us=now_us())
        store.set_infusion_start(other, now_us())
        store.close_session(other, t_us=far)
    finally:
        store.close()
    for session in (places["closed"], str(other)):
        png = tmp_path / f"replay-{session}.png"
        r = run_cli("replay", session, "--db", places["db"], "--screenshot", str(png),
                    env={"QT_QPA_PLATFORM": "offscreen"}, timeout=120)
        assert r.returncode == 0, r.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
