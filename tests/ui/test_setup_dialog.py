"""The setup dialog: the core's bounds and reasons, double entry, warnings to tick, and the
recovery offer for a session a crash left open."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from kapmonitor.session import SessionConfig
from kapmonitor.store import Store
from kapmonitor.ui import theme
from kapmonitor.ui.setup_dialog import SetupDialog, parse_number

DEFAULTS = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                         dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0)


@pytest.fixture
def dialog(qtbot, qapp):
    theme.apply_theme(qapp)
    d = SetupDialog(None, defaults=DEFAULTS)
    qtbot.addWidget(d)
    d.show()
    yield d
    d.reject()


def _weigh(d: SetupDialog, qtbot, kg: str, again: str | None = None) -> None:
    d.weight.clear()
    qtbot.keyClicks(d.weight, kg)
    d.weight2.clear()
    qtbot.keyClicks(d.weight2, kg if again is None else again)


def test_weight_900_is_refused_with_the_reason_and_start_disabled(dialog, qtbot) -> None:
    _weigh(dialog, qtbot, "900")
    reason = dialog.reasons["weight_kg"]
    assert reason.isVisible()
    assert "weight 900 kg is above the hard maximum 250 kg" in reason.text()
    assert not dialog.ok.isEnabled()
    assert dialog.rate.text() == "\u2014 mL/h"  # no rate to copy from a refused programme
    qtbot.keyClick(dialog.weight2, Qt.Key.Key_Return)  # Enter does not get past it
    assert dialog.isVisible() and dialog.result() == 0


def test_a_good_programme_shows_the_rate_and_gives_a_config(dialog, qtbot) -> None:
    _weigh(dialog, qtbot, "70")
    assert dialog.rate.text() == "52.5 mL/h"
    assert "35 mg total in 35 mL" in dialog.rate_detail.text()
    assert dialog.ok.isEnabled()
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    cfg = dialog.config()
    assert (cfg.patient, cfg.weight_kg, cfg.dose_mg_per_kg, cfg.duration_min,
            cfg.concentration_mg_ml) == ("KAP-0147", 70.0, 0.5, 40.0, 1.0)
    assert dialog.confirmed is not None and dialog.confirmed.calculation.rate_ml_h == 52.5


def test_weight_must_be_entered_twice_alike(dialog, qtbot) -> None:
    _weigh(dialog, qtbot, "70", again="72")
    assert "does not match" in dialog.reasons["weight2"].text()
    assert not dialog.ok.isEnabled()


def test_soft_limit_needs_its_warning_ticked(dialog, qtbot) -> None:
    _weigh(dialog, qtbot, "160")
    assert not dialog.ok.isEnabled()
    assert len(dialog._warn_boxes) == 1
    finding, box = dialog._warn_boxes[0]
    assert "above the usual range" in finding.message
    box.setChecked(True)
    assert dialog.ok.isEnabled()
    # a different weight is a different finding: the tick does not carry over
    _weigh(dialog, qtbot, "170")
    assert not dialog.ok.isEnabled()


def test_bag_mode_and_bad_text(dialog, qtbot) -> None:
    _weigh(dialog, qtbot, "70")
    dialog.by_bag.setChecked(True)
    qtbot.keyClicks(dialog.bag, "100")
    assert dialog.rate.text() == "150 mL/h"  # clinical.md §1.3 fixed-bag example
    dialog.dose.setText("half")
    assert "not a number" in dialog.reasons["dose_mg_per_kg"].text()
    assert not dialog.ok.isEnabled()


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
