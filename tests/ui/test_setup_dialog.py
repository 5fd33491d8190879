"""The setup dialog: the core's bounds said in a nurse's words, messages only once a field is
left (or on an attempt to start), the rate only for a confirmed programme, double entry,
warnings to tick, room/clinicians/protocol remembered per workstation, nothing clipped, and
the recovery offer for a session a crash left open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QWidget

from kapmonitor.dosing import DoseProgramme, check_programme
from kapmonitor.session import SessionConfig
from kapmonitor.store import Store
from kapmonitor.ui import theme
from kapmonitor.ui.setup_dialog import (
    DEFAULT_PROTOCOL,
    SETTINGS_PROTOCOLS,
    SetupDialog,
    nurse_message,
    parse_number,
)

DEFAULTS = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                         dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0)
#: Words a nurse cannot act on: a NaN leaking out of a parser, references to documents
#: she does not have, an engineering marker.
FORBIDDEN = ("nan", "\u00a7", "clinical.md", "unsure")


@pytest.fixture
def open_dialog(qtbot, qapp) -> Iterator:
    """Open (and on teardown close) setup dialogs, active so that focus moves as typed."""
    theme.apply_theme(qapp)
    made: list[SetupDialog] = []

    def make(**kwargs) -> SetupDialog:
        d = SetupDialog(kwargs.pop("store", None), **kwargs)
        qtbot.addWidget(d)
        d.show()
        d.activateWindow()
        qtbot.waitUntil(d.isActiveWindow)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.isVisible():
            d.reject()


@pytest.fixture
def dialog(open_dialog) -> SetupDialog:
    return open_dialog(defaults=DEFAULTS)


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "workstation.ini"), QSettings.Format.IniFormat)


def _type(qtbot, field: QWidget, text: str) -> None:
    """Click into a field, replace its text by typing, and stay in it."""
    field.setFocus(Qt.FocusReason.MouseFocusReason)
    qtbot.waitUntil(field.hasFocus)
    edit = field.lineEdit() if isinstance(field, QComboBox) else field
    assert isinstance(edit, QLineEdit)
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Backspace)
    qtbot.keyClicks(edit, text)


def _enter(qtbot, field: QWidget, text: str) -> None:
    """Type into a field and leave it with Tab, as a nurse does."""
    _type(qtbot, field, text)
    qtbot.keyClick(field, Qt.Key.Key_Tab)
    qtbot.waitUntil(lambda: not field.hasFocus())


def _weigh(qtbot, d: SetupDialog, kg: str, again: str | None = None) -> None:
    _enter(qtbot, d.weight, kg)
    _enter(qtbot, d.weight2, kg if again is None else again)


def _shown(d: SetupDialog) -> list[str]:
    """Every text the nurse can see: labels, tick boxes, buttons."""
    out = [w.text() for w in d.findChildren(QLabel) if w.isVisible() and w.text()]
    return out + [w.text() for w in d.findChildren(QCheckBox) if w.isVisible()]


def _red(d: SetupDialog) -> list[str]:
    return [w.text() for w in d.findChildren(QLabel)
            if w.isVisible() and w.objectName() == "reason" and w.text()]


def _assert_plain(d: SetupDialog) -> None:
    for shown in _shown(d):
        text = re.sub("\u201c[^\u201d]*\u201d", "", shown)  # what was typed, quoted back
        for word in FORBIDDEN:
            assert word not in text.lower(), f"{word!r} shown to the nurse: {text!r}"


def _assert_nothing_clipped(d: SetupDialog) -> None:
    """Every visible label gets the height its wrapped text needs (or, unwrapped, its
    width) and lies inside the window."""
    d.layout().activate()
    for lab in d.findChildren(QLabel):
        if not lab.isVisible() or not lab.text():
            continue
        if lab.wordWrap():
            assert lab.height() >= lab.heightForWidth(lab.width()), lab.text()
        else:
            assert lab.width() >= lab.minimumSizeHint().width(), lab.text()
        bottom_right = lab.mapTo(d, lab.rect().bottomRight())
        assert d.rect().contains(bottom_right), f"outside the window: {lab.text()!r}"


# -- when messages and the rate appear -------------------------------------------------------


def test_the_empty_form_shows_no_red_text_and_no_rate(open_dialog) -> None:
    d = open_dialog()
    assert _red(d) == []
    assert not d.rate.isVisible()
    assert not any("mL/h" in t for t in _shown(d))
    _assert_plain(d)


def test_a_message_appears_once_the_field_is_left_and_hides_while_edited(dialog,
                                                                         qtbot) -> None:
    reason = dialog.reasons["weight_kg"]
    _type(qtbot, dialog.weight, "900")
    assert not reason.isVisible()  # still typing
    qtbot.keyClick(dialog.weight, Qt.Key.Key_Tab)
    qtbot.waitUntil(reason.isVisible)
    assert reason.text() == "900 kg is more than the 250 kg this app accepts; check the scale"
    _type(qtbot, dialog.weight, "90")  # correcting it: the message waits until it is left
    assert not reason.isVisible()


def test_leaving_an_empty_field_asks_for_it(open_dialog, qtbot) -> None:
    d = open_dialog()
    d.weight.setFocus()
    qtbot.waitUntil(d.weight.hasFocus)
    qtbot.keyClick(d.weight, Qt.Key.Key_Tab)
    qtbot.waitUntil(d.reasons["weight_kg"].isVisible)
    assert d.reasons["weight_kg"].text() == "Enter the weight in kg"
    # the dialog opened with the cursor in Patient id, so that was left too; the fields
    # not visited yet say nothing
    assert _red(d) == ["Enter the patient's pseudonymous id (no names)",
                       "Enter the weight in kg"]


def test_a_mismatched_second_weight_is_said_when_left_and_shows_no_rate(dialog,
                                                                        qtbot) -> None:
    """The reported case: 70 then 900 showed "52.5 mL/h" beside the refusal."""
    _enter(qtbot, dialog.weight, "70")
    _type(qtbot, dialog.weight2, "900")
    assert not dialog.reasons["weight2"].isVisible()
    assert not dialog.rate.isVisible()
    qtbot.keyClick(dialog.weight2, Qt.Key.Key_Tab)
    qtbot.waitUntil(dialog.reasons["weight2"].isVisible)
    assert dialog.reasons["weight2"].text() == (
        "900 kg does not match the weight above (70 kg); check both against the scale")
    assert not dialog.rate.isVisible()
    assert not any("52.5" in t or "mL/h" in t for t in _shown(dialog))
    assert dialog.confirmed is None
    _assert_plain(dialog)


def test_a_good_programme_shows_the_rate_and_gives_a_config(dialog, qtbot) -> None:
    _type(qtbot, dialog.protocol, "0.5 mg/kg IV over 40 min, series 1 of 6")
    _weigh(qtbot, dialog, "70")
    assert dialog.rate.isVisible() and dialog.rate.text() == "52.5 mL/h"
    assert "35 mg total in 35 mL" in dialog.rate_detail.text()
    assert _red(dialog) == []
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    assert dialog.result() == SetupDialog.DialogCode.Accepted
    cfg = dialog.config()
    assert (cfg.patient, cfg.weight_kg, cfg.dose_mg_per_kg, cfg.duration_min,
            cfg.concentration_mg_ml) == ("KAP-0147", 70.0, 0.5, 40.0, 1.0)
    assert cfg.protocol == "0.5 mg/kg IV over 40 min, series 1 of 6"
    assert dialog.confirmed is not None and dialog.confirmed.calculation.rate_ml_h == 52.5


def test_start_with_something_missing_shows_every_message_and_does_not_start(
        open_dialog, qtbot) -> None:
    d = open_dialog()
    qtbot.mouseClick(d.ok, Qt.MouseButton.LeftButton)
    assert d.isVisible() and d.result() == 0
    assert set(_red(d)) >= {"Enter the patient's pseudonymous id (no names)",
                            "Enter the weight in kg",
                            "Type the weight a second time, from the scale",
                            "Enter the dose in mg/kg", "Enter the duration in minutes",
                            "Enter the concentration in mg/mL"}
    assert d.summary.text() == "Not started: correct what is marked in red."
    qtbot.waitUntil(d.patient.hasFocus)  # the cursor goes to the first thing to correct
    _assert_plain(d)
    _assert_nothing_clipped(d)


def test_enter_moves_to_the_next_field_and_never_starts(dialog, qtbot) -> None:
    _enter(qtbot, dialog.weight, "70")
    _type(qtbot, dialog.weight2, "70")
    qtbot.keyClick(dialog.weight2, Qt.Key.Key_Return)
    qtbot.waitUntil(dialog.basis.hasFocus)
    assert dialog.can_start and dialog.isVisible() and dialog.result() == 0


def test_a_value_filled_in_before_opening_is_checked_at_once(open_dialog) -> None:
    d = open_dialog(defaults=SessionConfig(patient="KAP-0147", weight_kg=900,
                                           dose_mg_per_kg=0.5, duration_min=40,
                                           concentration_mg_ml=1.0))
    assert "900 kg is more than the 250 kg" in d.reasons["weight_kg"].text()
    assert d.reasons["weight_kg"].isVisible()
    assert not d.reasons["weight2"].isVisible()  # still empty: not asked for yet


def test_soft_limit_needs_its_warning_ticked_before_the_rate_shows(dialog, qtbot) -> None:
    _weigh(qtbot, dialog, "160")
    assert len(dialog._warn_boxes) == 1
    finding, box = dialog._warn_boxes[0]
    assert finding.code == "weight_kg.soft_max"
    assert any(t.startswith("160 kg is above the usual 45 to 150 kg") for t in _shown(dialog))
    assert not dialog.rate.isVisible() and not dialog.can_start
    box.setChecked(True)
    assert dialog.rate.isVisible() and dialog.rate.text() == "120 mL/h"
    assert dialog.can_start
    # a different weight is a different finding: the tick does not carry over
    _weigh(qtbot, dialog, "170")
    assert not dialog.rate.isVisible() and not dialog.can_start
    _assert_plain(dialog)


def test_bag_mode_and_bad_text(dialog, qtbot) -> None:
    _weigh(qtbot, dialog, "70")
    dialog.by_bag.setChecked(True)
    _enter(qtbot, dialog.bag, "100")
    assert dialog.rate.text() == "150 mL/h"  # clinical.md §1.3 fixed-bag example
    _enter(qtbot, dialog.dose, "half")
    assert dialog.reasons["dose_mg_per_kg"].text() == (
        "\u201chalf\u201d is not a number: enter the dose in mg/kg")
    assert not dialog.rate.isVisible() and not dialog.can_start


# -- words ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "text"), [
    ("weight", "900"), ("weight", "20"), ("weight", "nan"), ("weight", "inf"),
    ("weight", "-70"), ("weight", "abc"), ("dose", "2"), ("dose", "0.01"), ("dose", "1.2"),
    ("duration", "5"), ("duration", "300"), ("duration", "20"), ("conc", "50"),
    ("conc", "100"), ("conc", "0.05"), ("conc", "20"), ("conc", "3"),
])
def test_no_message_shows_nan_or_cites_a_document(dialog, qtbot, field: str,
                                                  text: str) -> None:
    _weigh(qtbot, dialog, "70")
    _enter(qtbot, getattr(dialog, field), text)
    if field == "weight":
        _enter(qtbot, dialog.weight2, text)
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    assert dialog.isVisible(), "an out-of-range programme must not start"
    assert _red(dialog) or dialog._warn_boxes
    _assert_plain(dialog)
    _assert_nothing_clipped(dialog)


@pytest.mark.parametrize("programme", [
    dict(weight_kg=160, dose_mg_per_kg=1.4, duration_min=40, concentration_mg_ml=1.0),
    dict(weight_kg=70, dose_mg_per_kg=1.2, duration_min=40, concentration_mg_ml=1.0),
    dict(weight_kg=70, dose_mg_per_kg=0.5, duration_min=40, bag_ml=1000),
    dict(weight_kg=70, dose_mg_per_kg=0.05, duration_min=240, bag_ml=100),
    dict(weight_kg=250, dose_mg_per_kg=1.0, duration_min=10, concentration_mg_ml=0.1),
    dict(weight_kg=float("nan"), dose_mg_per_kg="x", duration_min=None,
         concentration_mg_ml=None),
    dict(weight_kg=70, dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0,
         weight_basis="lean"),
])
def test_every_finding_of_the_core_is_said_plainly(programme: dict) -> None:
    """The core's own words cite clinical.md; the dialog's never do, for refusals and
    warnings alike, including the combined ones (total dose, pump rate, bag)."""
    p = DoseProgramme(**programme)
    check = check_programme(p)
    findings = (*check.refusals, *check.warnings)
    assert findings
    for f in findings:
        text = nurse_message(f, raw_text="x", programme=p)
        assert text and not any(w in text.lower() for w in FORBIDDEN), (f.code, text)


def test_the_combination_is_said_under_the_result(dialog, qtbot) -> None:
    _weigh(qtbot, dialog, "160")
    _enter(qtbot, dialog.dose, "1.4")
    assert dialog.reasons["result"].text() == (
        "The total dose would be 224 mg, more than the 150 mg this app accepts. Local policy "
        "limit. Check the weight and the dose.")
    assert not dialog.rate.isVisible()


# -- remembered per workstation ------------------------------------------------------------


def _start(qtbot, d: SetupDialog) -> None:
    _enter(qtbot, d.patient, "KAP-0147")
    _weigh(qtbot, d, "70")
    for field, text in ((d.dose, "0.5"), (d.duration, "40"), (d.conc, "1")):
        _enter(qtbot, field, text)
    qtbot.mouseClick(d.ok, Qt.MouseButton.LeftButton)
    assert d.result() == SetupDialog.DialogCode.Accepted


def test_room_clinicians_and_protocol_are_remembered(open_dialog, qtbot,
                                                     settings: QSettings) -> None:
    first = open_dialog(settings=settings)
    assert first.protocol.currentText() == DEFAULT_PROTOCOL  # the suggestion, nothing yet
    _enter(qtbot, first.room, "Room 3")
    _enter(qtbot, first.clinicians, "RN Lee, Dr Osei")
    _enter(qtbot, first.protocol, "0.75 mg/kg IV over 40 min")
    _start(qtbot, first)
    assert first.config().protocol == "0.75 mg/kg IV over 40 min"
    assert first.config().room == "Room 3"

    second = open_dialog(settings=QSettings(settings.fileName(), QSettings.Format.IniFormat))
    assert second.room.text() == "Room 3"
    assert second.clinicians.text() == "RN Lee, Dr Osei"
    assert second.protocol.currentText() == "0.75 mg/kg IV over 40 min"
    offered = [second.protocol.itemText(i) for i in range(second.protocol.count())]
    assert offered == ["0.75 mg/kg IV over 40 min", DEFAULT_PROTOCOL]
    assert second.patient.text() == "" and second.weight.text() == ""  # never remembered


def test_a_cancelled_dialog_remembers_nothing(open_dialog, qtbot,
                                              settings: QSettings) -> None:
    d = open_dialog(settings=settings)
    _enter(qtbot, d.room, "Room 9")
    d.reject()
    settings.sync()
    assert settings.allKeys() == []


def test_recent_protocols_keep_the_latest_first_without_repeats(open_dialog, qtbot,
                                                                settings: QSettings) -> None:
    for protocol in ("A", "B", "A"):
        d = open_dialog(settings=settings)
        _enter(qtbot, d.protocol, protocol)
        _start(qtbot, d)
    settings.sync()
    assert settings.value(SETTINGS_PROTOCOLS) == ["A", "B"]


def test_without_settings_nothing_is_remembered(open_dialog, qtbot) -> None:
    d = open_dialog()
    _enter(qtbot, d.room, "Room 3")
    _start(qtbot, d)
    assert open_dialog().room.text() == ""


# -- helpers and recovery ------------------------------------------------------------------


def test_parse_number() -> None:
    assert parse_number("70,5") == 70.5
    assert parse_number(" ") is None
    assert parse_number("abc") == "abc"


def test_recovery_is_offered_for_a_session_left_open(qtbot, qapp, db_path: Path,
                                                     monkeypatch) -> None:
    from kapmonitor.store import recovery

    store = Store.open(str(db_path))
    try:
        sid = store.create_session(patient="KAP-OLD", room="1")
        # its recording process is gone (as after a crash): another pid that is not running
        with store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE session SET owner_pid = ? WHERE id = ?",
                                 (2**22 + 12345, sid))
        monkeypatch.setattr(recovery, "_pid_running", lambda pid: False)
        d = SetupDialog(store, defaults=DEFAULTS)
        qtbot.addWidget(d)
        d.show()
        qtbot.waitUntil(d.recovery.isVisible, timeout=10_000)
        btn = d.findChild(type(d.ok), f"recover-{sid}")
        assert btn is not None
        qtbot.mouseClick(btn, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(d.recovered), timeout=10_000)
        assert d.recovered[0].session_id == sid
        d.reject()
        status = [s.status for s in store.sessions() if s.id == sid]
        assert status == ["recovered"]
    finally:
        store.close()
