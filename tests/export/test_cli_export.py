"""``kapmonitor export`` and the dose column of ``kapmonitor sessions``: in-process with
capsys, and once per format as a real subprocess, as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from kapmonitor.cli import main
from kapmonitor.model import Channel
from kapmonitor.store import SessionReader, Store

OUT = {"csv": "export.zip", "fhir": "bundle.json", "edf": "session.edf",
       "vital": "session.vital"}


@pytest.mark.parametrize("fmt", ["csv", "fhir", "edf", "vital"])
def test_each_format_in_process(recorded, tmp_path: Path, capsys, fmt: str) -> None:
    out = tmp_path / OUT[fmt]
    assert main(["export", str(recorded.session_id), "--format", fmt, "--out", str(out),
                 "--db", str(recorded.db)]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith(f"wrote {fmt} export of session {recorded.session_id} to "
                                  f"{out}")
    assert printed.err == ""  # a closed session: no warning
    assert out.is_file() and out.stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["csv", "fhir", "edf", "vital", "pdf"])
def test_each_format_as_a_subprocess(synthetic, tmp_path: Path, cli, fmt: str) -> None:
    """An OPEN session, by uid prefix: written, and the warning printed on stderr."""
    syn = synthetic(status="open")
    db = str(syn.store.engine.url.database)
    uid = SessionReader(syn.store.engine, syn.session_id).session()["uid"]
    out = tmp_path / OUT.get(fmt, "report.pdf")
    r = cli("export", uid[:8], "--format", fmt, "--out", str(out), "--db", db)
    if fmt == "pdf" and importlib.util.find_spec("kapmonitor.ui.report") is None:
        assert r.returncode == 2
        assert r.stderr.strip() == "kapmonitor: error: pdf export needs the GUI package " \
                                   "(kapmonitor.ui.report is not installed)"
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    assert f"wrote {fmt} export of session {syn.session_id}" in r.stdout
    assert "warning: session" in r.stderr and "still OPEN" in r.stderr
    assert "Traceback" not in r.stderr
    assert out.exists()


def test_pdf_without_the_gui_package_is_one_line(recorded, tmp_path: Path, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kapmonitor.ui.report", None)  # as if not installed
    assert main(["export", "1", "--format", "pdf", "--out", str(tmp_path / "r.pdf"), "--db",
                 str(recorded.db)]) == 2
    err = capsys.readouterr().err
    assert err == "kapmonitor: error: pdf export needs the GUI package (kapmonitor.ui.report " \
                  "is not installed)\n"


@pytest.mark.parametrize(("args", "reason"), [
    (["99", "--format", "csv"], "no session '99'"),
    (["1", "--format", "edf", "--interval", "5"], "--interval does not apply to edf export"),
    (["1", "--format", "csv", "--bundle", "transaction"], "--bundle does not apply to csv"),
    (["1", "--format", "fhir", "--interval", "-5"], "numeric interval -5.0 s"),
    (["1", "--format", "edf", "--hold", "99999"], "hold of 99999.0 s"),
])
def test_bad_input_one_line(recorded, tmp_path: Path, capsys, args: list[str],
                            reason: str) -> None:
    out = tmp_path / "x"
    assert main(["export", *args, "--out", str(out), "--db", str(recorded.db)]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1
    assert not out.exists()


def test_existing_output_needs_force(recorded, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    out.write_text("keep me")
    args = ["export", "1", "--format", "fhir", "--out", str(out), "--db", str(recorded.db)]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main([*args, "--force"]) == 0
    assert json.loads(out.read_text())["resourceType"] == "Bundle"


def test_unknown_format_is_refused_by_the_parser(recorded, tmp_path: Path, cli) -> None:
    r = cli("export", "1", "--format", "xls", "--out", str(tmp_path / "x"), "--db",
            str(recorded.db))
    assert r.returncode == 2 and "invalid choice: 'xls'" in r.stderr


def test_sessions_lists_programmed_and_delivered_dose(recorded, capsys) -> None:
    store = Store.open(str(recorded.db))
    try:
        dose = SessionReader(store.engine, recorded.session_id).numeric(
            Channel.DELIVERED_DOSE)
    finally:
        store.close()
    assert main(["sessions", "--db", str(recorded.db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "GIVEN" in out[0] and "ALARMS" in out[0]
    row = out[1].split()
    assert row[row.index("mg/kg") - 1:row.index("mg/kg") + 3] == ["0.5", "mg/kg", "35.0", "mg"]
    assert f"{dose.values[-1]:.1f}" in row
    assert row[-2] == "1"  # one alarm raised (SpO2 low)
    assert main(["sessions", "--json", "--db", str(recorded.db)]) == 0
    [info] = json.loads(capsys.readouterr().out)
    assert info["delivered_mg"] == dose.values[-1]
    assert info["programmed_mg"] == 35.0 and info["alarm_events"] == 1


def test_an_all_digit_uid_prefix_finds_its_session(synthetic, tmp_path: Path, capsys) -> None:
    """About 2 % of uids start with eight decimal digits: such a prefix is not an id."""
    syn = synthetic()
    with syn.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE session SET uid = '42279470-0000-4000-8000-000000000000'")
    db = str(syn.store.engine.url.database)
    assert main(["export", "42279470", "--format", "fhir", "--out", str(tmp_path / "b.json"),
                 "--db", db]) == 0
    assert f"session {syn.session_id}" in capsys.readouterr().out
    assert main(["export", "4227", "--format", "fhir", "--out", str(tmp_path / "c.json"),
                 "--db", db]) == 0
    assert main(["export", str(syn.session_id), "--format", "fhir", "--out",
                 str(tmp_path / "d.json"), "--db", db]) == 0
