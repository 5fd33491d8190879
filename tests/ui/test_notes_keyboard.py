"""Therapist speed (issue 13, item 9): assessments and back-timed notes from the keyboard.

Each flow is typed through qtbot into the live window on the real data path (simulated
GE S/5 and pump on pseudo-terminals, a LiveSession writing a SQLite file, tests/ui/sim.py)
and checked where it lands: the stored annotation rows. No mouse, no setters, except
``set_pending_time``, which is the window's hook for a click on a trend.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from kapmonitor.ui.main_window import MainWindow
from kapmonitor.ui.notes_panel import MAX_BACK_MIN, NotesPanel, ScoreField, parse_back_time

from .sim import SimRoom

WAIT_MS = 20_000
_MIN = 60_000_000
_S = 1_000_000
ALT = Qt.KeyboardModifier.AltModifier


def _rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture
def win(room: SimRoom, make_window, qtbot) -> MainWindow:
    """The live window, active, with the keyboard in the note field (as it opens)."""
    w = make_window(room.session)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=5000)
    qtbot.waitUntil(w.notes.note.hasFocus, timeout=5000)
    return w


def _focus() -> QWidget:
    w = QApplication.focusWidget()
    assert w is not None
    return w


def _all_saved(notes: NotesPanel, n: int) -> bool:
    """``n`` entries typed here (not the phase rows the window writes), all saved."""
    typed = [e for e in notes.entries.values() if e.kind != "phase"]
    return len(typed) >= n and all(e.state == "saved" for e in typed)


def _open(qtbot, notes: NotesPanel, digit: Qt.Key, scale_id: str) -> ScoreField:
    """Alt+digit from the note field: the scale's form with the keyboard in its first item."""
    qtbot.keyClick(notes.note, digit, ALT)
    qtbot.waitUntil(lambda: isinstance(QApplication.focusWidget(), ScoreField), timeout=5000)
    assert notes.assess.scale().id == scale_id
    assert notes.tabs.currentWidget() is notes.assess_scroll
    field = _focus()
    assert isinstance(field, ScoreField)
    return field


def test_moaas_level_3_by_keys_alone(win: MainWindow, qtbot, db_path: Path) -> None:
    notes = win.notes
    form = notes.assess
    # the shortcut is on the scale's button, where it is learnt
    assert form.keys["moaa-s"] == "Alt+1" and form.scale_buttons["moaa-s"].text() == "1 MOAA/S"
    field = _open(qtbot, notes, Qt.Key.Key_1, "moaa-s")
    assert form.scale_buttons["moaa-s"].isChecked()
    qtbot.keyClick(field, Qt.Key.Key_7)  # out of range: refused with the range, not clamped
    assert field.text() == "" and "allowed 0 to 5" in form.reason.text()
    qtbot.keyClick(field, Qt.Key.Key_4)
    qtbot.keyClick(field, Qt.Key.Key_3)  # a new digit starts the level again: 3, not 43
    assert field.text() == "3" and form.reason.text() == ""
    lit = [lv for lv in form._levels if lv.chosen]
    assert [lv.value for lv in lit] == [3.0]
    assert lit[0].text.text() == "responds only to a loud or repeated name"
    qtbot.keyClick(field, Qt.Key.Key_Return)

    qtbot.waitUntil(lambda: _all_saved(notes, 1), timeout=WAIT_MS)
    rows = _rows(db_path, "SELECT kind, code, value, text FROM annotation "
                          "WHERE kind='assessment'")
    assert rows == [("assessment", "moaa-s", 3.0,
                     "MOAA/S 3 (responds only to a loud or repeated name)")]
    # opened by its shortcut, the form gives the panel back: cues showing, note focused
    assert notes.tabs.currentIndex() == 0
    qtbot.waitUntil(notes.note.hasFocus, timeout=5000)


def test_rass_negative_level_typed_as_minus_then_digit(win: MainWindow, qtbot,
                                                       db_path: Path) -> None:
    notes = win.notes
    field = _open(qtbot, notes, Qt.Key.Key_2, "rass")
    qtbot.keyClicks(field, "-3")
    assert field.value() == -3.0
    assert [lv.value for lv in notes.assess._levels if lv.chosen] == [-3.0]
    qtbot.keyClick(field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: _all_saved(notes, 1), timeout=WAIT_MS)
    assert _rows(db_path, "SELECT code, value FROM annotation WHERE kind='assessment'") == [
        ("rass", -3.0)]


def test_aldrete_item_by_item_digits_log_9(win: MainWindow, qtbot, db_path: Path) -> None:
    notes = win.notes
    form = notes.assess
    _open(qtbot, notes, Qt.Key.Key_3, "aldrete")
    items = [key for key, _ in form.boxes]
    assert items == ["activity", "respiration", "circulation", "consciousness", "spo2"]
    for n, digit in enumerate((Qt.Key.Key_2, Qt.Key.Key_2, Qt.Key.Key_2, Qt.Key.Key_1,
                               Qt.Key.Key_2)):
        assert _focus() is form.boxes[n][1]  # each digit moves on to the next item
        qtbot.keyClick(_focus(), digit)
    assert _focus() is form.note  # after the last item: the note, where Enter logs
    # the typed anchor of each item is lit, in full
    assert "1&nbsp;rousable on calling" in form._anchor_labels["consciousness"].text()
    qtbot.keyClick(form.note, Qt.Key.Key_Return)

    qtbot.waitUntil(lambda: _all_saved(notes, 1), timeout=WAIT_MS)
    rows = _rows(db_path, "SELECT code, value, text FROM annotation WHERE kind='assessment'")
    assert len(rows) == 1
    code, value, text = rows[0]
    assert (code, value) == ("aldrete", 9.0)
    assert "consciousness 1" in text and "meets discharge (>= 9)" in text


def test_enter_in_the_assessment_note_logs_it_with_the_note(win: MainWindow, qtbot,
                                                            db_path: Path) -> None:
    notes = win.notes
    form = notes.assess
    field = _open(qtbot, notes, Qt.Key.Key_1, "moaa-s")
    qtbot.keyClick(field, Qt.Key.Key_4)
    qtbot.keyClick(field, Qt.Key.Key_Tab)
    qtbot.waitUntil(form.note.hasFocus, timeout=5000)
    qtbot.keyClicks(form.note, "eyes closed, calm")
    qtbot.keyClick(form.note, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: _all_saved(notes, 1), timeout=WAIT_MS)
    assert _rows(db_path, "SELECT code, value, text FROM annotation "
                          "WHERE kind='assessment'") == [
        ("moaa-s", 4.0, "MOAA/S 4 (responds lethargically to name); eyes closed, calm")]


def test_escape_cancels_and_enter_refuses_a_missing_item(win: MainWindow, qtbot,
                                                         db_path: Path) -> None:
    notes = win.notes
    form = notes.assess
    _open(qtbot, notes, Qt.Key.Key_3, "aldrete")
    qtbot.keyClick(_focus(), Qt.Key.Key_2)
    qtbot.keyClick(_focus(), Qt.Key.Key_2)
    qtbot.keyClick(_focus(), Qt.Key.Key_Return)  # three items still unscored
    assert "missing score(s) for circulation, consciousness, spo2" in form.reason.text()
    assert _focus() is form.boxes[2][1]  # the keyboard waits at the first missing item
    qtbot.keyClick(_focus(), Qt.Key.Key_Escape)
    qtbot.waitUntil(notes.note.hasFocus, timeout=5000)
    assert notes.tabs.currentIndex() == 0
    assert all(box.text() == "" for _, box in form.boxes)
    # a note after it is saved, and nothing else: the cancelled score never was
    qtbot.keyClicks(notes.note, "after the cancelled score")
    qtbot.keyClick(notes.note, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: _all_saved(notes, 1), timeout=WAIT_MS)
    assert _rows(db_path, "SELECT kind, text FROM annotation WHERE kind IN "
                          "('assessment', 'observation')") == [
        ("observation", "after the cancelled score")]


def test_the_form_shows_every_anchor_whole_and_aldrete_needs_no_scrolling(
        win: MainWindow, qtbot) -> None:
    """The complaint: anchors cut to one line, Aldrete in a 60-px scroll area. At
    1280x800 every MOAA/S level and every Aldrete item is shown whole, unscrolled."""
    notes = win.notes
    form = notes.assess
    scroll = notes.assess_scroll
    for digit, sid in ((Qt.Key.Key_1, "moaa-s"), (Qt.Key.Key_3, "aldrete")):
        _open(qtbot, notes, digit, sid)
        qtbot.waitUntil(lambda: scroll.verticalScrollBar().maximum() == 0, timeout=5000)
        view = scroll.viewport().rect()
        labels = ([lv.text for lv in form._levels] if sid == "moaa-s"
                  else list(form._anchor_labels.values()))
        assert len(labels) == (6 if sid == "moaa-s" else 5)
        for lab in labels:
            assert lab.wordWrap()
            assert lab.height() >= lab.heightForWidth(lab.width())  # no line cut off
            top_left = lab.mapTo(scroll.viewport(), lab.rect().topLeft())
            assert view.contains(top_left) and view.contains(
                top_left + lab.rect().bottomRight()), (sid, lab.text())
        assert view.contains(form.note.mapTo(scroll.viewport(), form.note.rect().center()))
        qtbot.keyClick(_focus(), Qt.Key.Key_Escape)
        qtbot.waitUntil(notes.note.hasFocus, timeout=5000)
    assert notes.timeline.height() >= 60  # the newest entry stays in view meanwhile


@pytest.mark.parametrize(("text", "seconds", "rest"), [
    ("-5 Vomited once", 300, "Vomited once"),
    ("-5m Vomited", 300, "Vomited"),
    ("-12 min asked for water", 720, "asked for water"),
    ("-1:30 coughed", 90, "coughed"),
    ("-5", 300, ""),
    ("-5mg given", None, "-5mg given"),
    ("- calm", None, "- calm"),
    ("BP -5 from baseline", None, "BP -5 from baseline"),
])
def test_parse_back_time(text: str, seconds: int | None, rest: str) -> None:
    offset, got = parse_back_time(text)
    assert (None if offset is None else offset / _S, got) == (seconds, rest)


def test_a_note_typed_minus_5_is_stored_5_minutes_back(win: MainWindow, room: SimRoom,
                                                       qtbot, db_path: Path) -> None:
    notes = win.notes
    qtbot.keyClicks(notes.note, "-5 Vomited once")
    assert notes.when_bar.isVisible() and "5 min ago" in notes.when_label.text()
    before = room.session.clock()
    qtbot.keyClick(notes.note, Qt.Key.Key_Return)
    after = room.session.clock()
    qtbot.waitUntil(lambda: _all_saved(notes, 1), timeout=WAIT_MS)
    (text, t_us, created_us), = _rows(db_path, "SELECT text, t_us, created_us FROM "
                                               "annotation WHERE kind='observation'")
    assert text == "Vomited once"
    assert before - 5 * _MIN - 2 * _S <= t_us <= after - 5 * _MIN + 2 * _S
    assert created_us > t_us  # the record also keeps when it was written
    assert not notes.when_bar.isVisible()
    entry = next(e for e in notes.entries.values() if e.kind == "observation")
    assert entry.item is not None and entry.t_us == t_us
    assert "written\u00a0at" in entry.item.text(1)  # the row says it was written later


def test_a_time_too_far_back_is_refused_and_the_note_kept(win: MainWindow, qtbot,
                                                          db_path: Path) -> None:
    notes = win.notes
    typed = f"-{MAX_BACK_MIN + 60} wrong by an hour"
    qtbot.keyClicks(notes.note, typed)
    with qtbot.waitSignal(notes.message, timeout=5000) as said:
        qtbot.keyClick(notes.note, Qt.Key.Key_Return)
    assert f"at most {MAX_BACK_MIN} min" in said.args[0]
    assert notes.note.text() == typed  # kept, to correct the time
    assert [e for e in notes.entries.values() if e.kind != "phase"] == []


def test_set_pending_time_stores_that_exact_time(win: MainWindow, room: SimRoom, qtbot,
                                                 db_path: Path) -> None:
    """What a click on a trend does: the next note and the next assessment land at the
    clicked time, to the microsecond; the banner says so; Esc drops it."""
    notes = win.notes
    clicked = room.session.clock() - 7 * _MIN - 123_457
    with qtbot.waitSignal(notes.pendingTimeChanged, timeout=5000) as changed:
        notes.set_pending_time(clicked)
    assert changed.args == [clicked] and notes.pending_time() == clicked
    assert notes.when_bar.isVisible() and "from the trend" in notes.when_label.text()
    qtbot.keyClicks(notes.note, "Headache at the BP peak")
    qtbot.keyClick(notes.note, Qt.Key.Key_Return)
    assert notes.pending_time() is None and not notes.when_bar.isVisible()  # used once

    second = room.session.clock() - 3 * _MIN
    notes.set_pending_time(second)
    field = _open(qtbot, notes, Qt.Key.Key_1, "moaa-s")
    qtbot.keyClick(field, Qt.Key.Key_2)
    qtbot.keyClick(field, Qt.Key.Key_Return)

    notes.set_pending_time(room.session.clock() - _MIN)
    qtbot.waitUntil(notes.note.hasFocus, timeout=5000)
    qtbot.keyClick(notes.note, Qt.Key.Key_Escape)  # Esc: back to "now"
    assert notes.pending_time() is None and not notes.when_bar.isVisible()
    before = room.session.clock()
    qtbot.keyClicks(notes.note, "Now again")
    qtbot.keyClick(notes.note, Qt.Key.Key_Return)
    after = room.session.clock()

    qtbot.waitUntil(lambda: _all_saved(notes, 3), timeout=WAIT_MS)
    rows = dict(_rows(db_path, "SELECT text, t_us FROM annotation WHERE kind IN "
                               "('observation', 'assessment')"))
    assert rows["Headache at the BP peak"] == clicked
    assert rows["MOAA/S 2 (responds only to a light touch or shake)"] == second
    assert before <= rows["Now again"] <= after


def test_a_pending_time_in_the_future_is_refused(win: MainWindow, room: SimRoom,
                                                 qtbot) -> None:
    notes = win.notes
    with qtbot.waitSignal(notes.message, timeout=5000) as said:
        notes.set_pending_time(room.session.clock() + 10 * _MIN)
    assert "later than now" in said.args[0]
    assert notes.pending_time() is None and not notes.when_bar.isVisible()
