"""The PDF session report (issue 9; the chart record, issue 13 item 12), read back with
QtPdf: its text is extracted page by page (``QPdfDocument.getAllText``) and pages are
rendered to images, as a reader would see them. The chart record's own numbers (flowsheet
rows, dose segments) are checked in tests/export/test_flowsheet.py; here, that they are on
the paper: the flowsheet, the pause in the dose table, plain alarm words, the sign-off lines
and the footer on every page."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QImage
from PySide6.QtPdf import QPdfDocument

from kapmonitor.export.common import load_meta
from kapmonitor.store import Store
from kapmonitor.ui.report import (
    DISCLAIMER,
    FLOWSHEET_TITLE,
    FOOTER_NOTICE,
    export_session,
    offer_report_at_close,
    print_or_save_report,
)

from ..export.scenario_recording import ScenarioRecording, record_scenario
from .recorded import Recorded, write_session


def _pages(path: Path) -> list[str]:
    doc = QPdfDocument()
    assert doc.load(str(path)) == QPdfDocument.Error.None_
    try:
        return [doc.getAllText(i).text() for i in range(doc.pageCount())]
    finally:
        doc.close()


def _flat(text: str) -> str:
    """Text as extracted, with line breaks and hyphenation-free wrapping undone."""
    return " ".join(text.split())


def _render(path: Path, page: int) -> QImage:
    doc = QPdfDocument()
    assert doc.load(str(path)) == QPdfDocument.Error.None_
    try:
        size = doc.pagePointSize(page)
        return doc.render(page, QSize(int(size.width()), int(size.height())))
    finally:
        doc.close()


def _ink(img: QImage) -> int:
    return sum(1 for y in range(0, img.height(), 7) for x in range(0, img.width(), 7)
               if img.pixelColor(x, y).lightness() < 128)


def _footer_on_every_page(pages: list[str], engine, session_id: int) -> None:
    meta = load_meta(engine, session_id)
    for n, page in enumerate(pages, 1):
        flat = _flat(page)
        assert FOOTER_NOTICE in flat, n
        assert f"page {n} of {len(pages)}" in flat
        assert f"uid {meta.uid}" in flat and (meta.patient or "no patient id") in flat


def test_report_of_a_recorded_session(replay_recorded: Recorded, replay_store: Store,
                                      tmp_path: Path, qapp) -> None:
    out = tmp_path / "report.pdf"
    result = export_session(replay_store.engine, replay_recorded.session_id, out)
    assert result.paths == [out] and out.stat().st_size > 5000
    pages = _pages(out)
    assert result.counts["pages"] == len(pages) >= 1
    first = _flat(pages[0])
    # the header: who, what, who was there, when, status
    for words in ("infusion session record", "KAP-UI-1", "70 kg", "0.5 mg/kg over 40 min",
                  "35 mg", "1 mg/mL", "52.5 mL/h", "RN A, Dr B", "Room 3",
                  "Infusion start (t0)", "Closed", "DEMO"):
        assert words in first, words
    assert "Dose: programmed and delivered" in first
    assert "Trends, whole session" in first
    everything = _flat(" ".join(pages))
    # the footer on every page: pseudonym, uid, page n of N, what the record is not
    _footer_on_every_page(pages, replay_store.engine, replay_recorded.session_id)
    assert DISCLAIMER in first
    # the entries with the correction visible, the alarm with its acknowledgement
    assert "Calm, eyes closed" in everything and "Calm, eyes closd" in everything
    assert "amended by RN A" in everything
    assert "Safe place" in everything and "MOAA/S 4" in everything
    # alarms in plain words, the priority as a word (no screen asterisks on paper)
    assert "HIGH \u2014 SpO2 LOW 85 % (< 88)" in everything and "*" not in everything
    assert "acknowledged by RN A" in everything
    assert FLOWSHEET_TITLE in everything and "Signature" in _flat(pages[-1])
    # per channel: baseline, min and max
    assert "Baseline (median, 10 min before t0)" in everything
    assert result.warnings == [w for w in result.warnings if "DEMO" in w]
    # an existing file is not replaced unless asked
    from kapmonitor.export import ExportError

    with pytest.raises(ExportError, match="already exists"):
        export_session(replay_store.engine, replay_recorded.session_id, out)
    export_session(replay_store.engine, replay_recorded.session_id, out, overwrite=True)


def test_a_long_recovered_session_takes_pages_and_warns_on_the_first(
        written_store: Store, tmp_path: Path, qapp) -> None:
    w = write_session(written_store, minutes=150, status="recovered", notes_every_min=4)
    out = tmp_path / "long.pdf"
    result = export_session(written_store.engine, w.session_id, out)
    pages = _pages(out)
    assert len(pages) > 2
    first = _flat(pages[0])
    assert "RECOVERED" in first and "data after that point is missing" in first
    assert any("RECOVERED" in x for x in result.warnings)
    # detail pages of one hour each after the whole-session overview
    everything = _flat(" ".join(pages))
    assert "Trends, detail: session time T-10:00 to T+50:00" in everything
    assert "Recording interrupted" in everything  # the gap marker, in the entries
    _footer_on_every_page(pages, written_store.engine, w.session_id)
    # a running pump to the end of a record that broke off: one segment, no pause
    assert "still running at the end of the record" in everything
    # page 1 renders to an image with ink on it
    img = _render(out, 0)
    assert img.width() > 500 and not img.isNull()
    assert _ink(img) > 200


def test_export_command_writes_the_pdf(replay_recorded: Recorded, tmp_path: Path,
                                       cli) -> None:
    out = tmp_path / "cli.pdf"
    args = ("export", str(replay_recorded.session_id), "--format", "pdf", "--out", str(out),
            "--db", str(replay_recorded.db))
    r = cli(*args, env={"QT_QPA_PLATFORM": ""})  # no platform chosen: offscreen by itself
    assert r.returncode == 0, r.stderr
    assert f"wrote pdf export of session {replay_recorded.session_id} to {out}" in r.stdout
    assert "DEMO" in r.stderr  # the warning, on standard error
    assert out.read_bytes()[:5] == b"%PDF-"
    again = cli(*args)
    assert again.returncode == 2 and "already exists" in again.stderr


# -- the chart record of a held infusion (issue 13 item 12) ---------------------------------


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> ScenarioRecording:
    """The desaturation scenario: the infusion held 5.5 min at T+27:30, an NIBP started by
    hand at T+28:10, SpO2 and apnoea alarms acknowledged by RN A."""
    return record_scenario(tmp_path_factory.mktemp("held") / "kap.sqlite", "desaturation",
                           extra_nibp_min=(28 + 10 / 60,),
                           acknowledge=("spo2.low", "rr.apnoea"))


def _section(text: str, start: str, end: str) -> str:
    a = text.index(start)
    return text[a:text.index(end, a)]


def test_chart_record_has_the_pause_the_flowsheet_and_lines_to_sign(
        held: ScenarioRecording, tmp_path: Path, qapp) -> None:
    store = Store.open(str(held.db))
    try:
        out = tmp_path / "held.pdf"
        result = export_session(store.engine, held.session_id, out)
        pages = _pages(out)
        assert result.counts["pages"] == len(pages)
        first = _flat(pages[0])
        everything = _flat(" ".join(pages))
        # the dose table: two running segments and the 5.5-min pause between them
        dose = _section(first, "Pump segment", "Trends, whole session")
        assert "2 running segments, 1 pause (5 min 30 s)" in first
        assert ("running T+00:00 T+27:30 27 min 30 s 52.5 mL/h 24.06 mL 24.1 mg" in dose)
        assert "PAUSED T+27:30 T+33:00 5 min 30 s" in dose
        assert "no pump alarm" in dose
        assert "running T+33:00 T+45:30 12 min 30 s 52.5 mL/h 10.94 mL 10.9 mg" in dose
        assert "COMPLETE (VTBI reached) T+45:30" in dose
        # the flowsheet: its header, a row every 5 min and the NIBP taken by hand
        flow_page = next(i for i, p in enumerate(pages) if FLOWSHEET_TITLE in _flat(p))
        flow = _section(_flat(pages[flow_page]), FLOWSHEET_TITLE, "Values per channel")
        assert ("Session Clock HR /min SpO\u2082 % NIBP sys/dia (mean) mmHg RR /min "
                "EtCO\u2082 mmHg Pump") in flow
        for m in range(-10, 60, 5):
            assert f"T{'+' if m >= 0 else '-'}{abs(m):02d}:00 " in flow, m
        assert "T+1:00:00" in flow and "T+28:10" in flow
        assert flow.count("PAUSED") == 2  # T+28:10 and T+30:00
        # alarms in plain words, no asterisk in any alarm row
        alarms = _section(everything, "Alarms (raise, escalation", "Sign-off")
        assert "*" not in alarms
        assert "raised HIGH \u2014 APNOEA: no breath for 20 s (RR 0)" in alarms
        assert "acknowledged by RN A" in alarms
        # sign-off lines on the last page, under everything else
        last = _flat(pages[-1])
        for words in ("Sign-off", "Nurse", "Physician", "Name (print)", "Signature",
                      "Date / time"):
            assert words in last, words
        _footer_on_every_page(pages, store.engine, held.session_id)
        # page 1 and the flowsheet page render with ink on them
        for page in {0, flow_page}:
            assert _ink(_render(out, page)) > 200
    finally:
        store.close()


def test_print_or_save_writes_the_pdf_and_opens_it(held: ScenarioRecording, tmp_path: Path,
                                                   qapp) -> None:
    """"Print / PDF...": the file the user chose (".pdf" added), then the system viewer;
    cancelled: nothing; a failed export: a warning, nothing left behind."""
    store = Store.open(str(held.db))
    try:
        suggested: list[str] = []
        opened: list[Path] = []

        def choose(parent, name: str) -> str:
            suggested.append(name)
            return str(tmp_path / "chart")

        path = print_or_save_report(None, store.engine, held.session_id, directory=tmp_path,
                                    choose_path=choose, open_file=opened.append)
        assert path == tmp_path / "chart.pdf" and opened == [path]
        assert path.read_bytes()[:5] == b"%PDF-"
        assert suggested == [str(tmp_path / f"kap-session-{held.session_id}-KAP-CHART-1.pdf")]
        # chosen again: replaced (the save dialog asked already)
        assert print_or_save_report(None, store.engine, held.session_id,
                                    choose_path=choose, open_file=opened.append) == path
        assert print_or_save_report(None, store.engine, held.session_id,
                                    choose_path=lambda p, n: "",
                                    open_file=opened.append) is None
        warned: list[str] = []
        gone = tmp_path / "no such folder" / "x.pdf"
        assert print_or_save_report(None, store.engine, held.session_id,
                                    choose_path=lambda p, n: str(gone),
                                    open_file=opened.append, warn=lambda p, t: warned.append(t)
                                    ) is None
        assert len(warned) == 1 and "does not exist" in warned[0] and len(opened) == 2
        # at close: asked first; "Later" writes nothing
        assert offer_report_at_close(None, store.engine, held.session_id,
                                     ask=lambda p: False, choose_path=choose) is None
        assert len(suggested) == 2
        assert offer_report_at_close(None, store.engine, held.session_id,
                                     ask=lambda p: True, choose_path=choose,
                                     open_file=opened.append) == path
    finally:
        store.close()
