"""The PDF session report (issue 9), read back with QtPdf: its text is extracted page by
page (``QPdfDocument.getAllText``) and page 1 is rendered to an image, as a reader would
see it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSize
from PySide6.QtPdf import QPdfDocument

from kapmonitor.store import Store
from kapmonitor.ui.report import DISCLAIMER, export_session

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
    # the disclaimer on every page, with page n of N
    for n, page in enumerate(pages, 1):
        assert DISCLAIMER in _flat(page)
        assert f"page {n} of {len(pages)}" in page
    # the entries with the correction visible, the alarm with its acknowledgement
    assert "Calm, eyes closed" in everything and "Calm, eyes closd" in everything
    assert "amended by RN A" in everything
    assert "Safe place" in everything and "MOAA/S 4" in everything
    assert "*** SpO2 LOW 85 % (< 88)" in everything
    assert "acknowledged by RN A" in everything
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
    assert "Trends, detail: session time -10:00 to +50:00" in everything
    assert "Recording interrupted" in everything  # the gap marker, in the entries
    for n, page in enumerate(pages, 1):
        assert f"page {n} of {len(pages)}" in page and DISCLAIMER in _flat(page)
    # page 1 renders to an image with ink on it
    doc = QPdfDocument()
    doc.load(str(out))
    size = doc.pagePointSize(0)
    img = doc.render(0, QSize(int(size.width()), int(size.height())))
    doc.close()
    assert img.width() > 500 and not img.isNull()
    dark = sum(1 for y in range(0, img.height(), 7) for x in range(0, img.width(), 7)
               if img.pixelColor(x, y).lightness() < 128)
    assert dark > 200


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
