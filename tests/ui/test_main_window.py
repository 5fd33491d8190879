"""The bedside window on the real data path: GE S/5 and B. Braun peers on pseudo-terminals,
the transport, a LiveSession recording to a SQLite file, at 10x time (tests/ui/sim.py).

Each test states what a nurse or therapist would see or do, and checks it where it lands:
on the screen, and in the record."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from kapmonitor.alarm_limits import Priority
from kapmonitor.model import Channel
from kapmonitor.session import Phase
from kapmonitor.ui.main_window import SECONDARY_NOTICE, format_clock
from kapmonitor.ui.notes_panel import format_session_time

from .sim import SimRoom

WAIT_MS = 20_000


def _rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def test_tiles_show_the_simulated_values_within_a_second(room: SimRoom, make_window,
                                                         qtbot) -> None:
    win = make_window(room.session)
    tiles = win.tiles.tiles
    qtbot.waitUntil(lambda: tiles["hr"].shown_text == "72"
                    and tiles["spo2"].shown_text == "97"
                    and tiles["bp"].shown_text == "128/78"
                    and tiles["rr"].shown_text == "14"
                    and tiles["etco2"].shown_text == "36"
                    and tiles["temp"].shown_text == "36.7", timeout=WAIT_MS)
    # a change on the wire reaches the tile within 1 s of session time
    room.vitals.values[Channel.SPO2] = 95.0
    spo2 = tiles["spo2"]
    qtbot.waitUntil(lambda: spo2.shown_text == "95", timeout=WAIT_MS)
    assert spo2.shown_at_us is not None and spo2.shown_value_t_us is not None
    lag_s = (spo2.shown_at_us - spo2.shown_value_t_us) / 1e6
    assert 0 <= lag_s <= 1.0
    # the header says what this window is, and that it is a simulation
    assert win.header.notice.text().replace("\n", " ") == SECONDARY_NOTICE
    assert win.header.demo.isVisible()
    assert win.header.patient.text() == "KAP-UI-1"
    # the big numbers are big: readable from 2 m at 1280x800
    for key in ("hr", "spo2", "bp", "rr", "etco2", "temp"):
        assert tiles[key].value.font().pixelSize() >= 48
    big = min(tiles[k].value.font().pixelSize() for k in ("hr", "spo2", "bp"))
    assert big > max(tiles[k].value.font().pixelSize() for k in ("rr", "etco2", "temp"))
    assert win.width() == 1280 and win.height() == 800


def test_pump_start_moves_the_clock_phase_and_pump_panel(room: SimRoom, make_window,
                                                         qtbot) -> None:
    win = make_window(room.session)
    assert win.header.clock.text().startswith("Baseline")
    assert win.header.next_btn.text() == "Start infusion"
    assert room.pump is not None
    room.pump.start(room.clock())
    qtbot.waitUntil(lambda: win.header.clock.text().startswith("T+"), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.header.phase.text() == "Infusion", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.pump.rate.value.text() == "52.5", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.pump.cp.value.text() not in ("--", "0"), timeout=WAIT_MS)
    assert win.header.next_btn.text() == "End infusion"
    assert "model estimate" in win.pump.estimate_label.text()
    # the infusion start is a marker on the trends, and the axis counts from it
    assert win.trends.trends.marker_count >= 1
    label = win.trends.trends.plots[-1].getAxis("bottom").labelText
    assert "since infusion start" in label


def test_typing_a_note_and_enter_writes_it_at_the_session_time(room: SimRoom, make_window,
                                                               qtbot, db_path: Path) -> None:
    win = make_window(room.session)
    room.session.mark_infusion_start(author="RN A")
    qtbot.waitUntil(lambda: win.header.clock.text().startswith("T+"), timeout=WAIT_MS)
    note = win.notes.note
    assert note.hasFocus() or win.notes.focusProxy() is note
    qtbot.keyClicks(note, "Patient calm, eyes closed")
    before = room.clock()
    qtbot.keyClick(note, Qt.Key.Key_Return)
    after = room.clock()
    assert note.text() == ""
    entry = next(e for e in win.notes.entries.values() if e.kind == "observation")
    qtbot.waitUntil(lambda: entry.state == "saved", timeout=WAIT_MS)
    rows = _rows(db_path, "SELECT id, kind, text, t_us, author FROM annotation "
                 "WHERE kind='observation'")
    assert len(rows) == 1
    rid, kind, text, t_us, author = rows[0]
    assert (kind, text, author) == ("observation", "Patient calm, eyes closed", "RN A")
    assert before <= t_us <= after
    assert rid == entry.entry_id
    t0 = room.session.t0_us
    shown = entry.item.text(0)
    assert format_session_time(t_us, t0) in shown
    # a marker on the trends for the note
    assert win.trends.trends.marker_count >= 2


def test_spo2_drop_raises_a_high_alarm_and_acknowledge_is_recorded(room: SimRoom, make_window,
                                                                   qtbot, db_path: Path) -> None:
    win = make_window(room.session)
    tiles = win.tiles.tiles
    qtbot.waitUntil(lambda: tiles["spo2"].shown_text == "97", timeout=WAIT_MS)
    room.vitals.values[Channel.SPO2] = 85.0

    def high_spo2_shown() -> bool:
        chip = win.alarm_bar.chips[0]
        return (chip.alarm is not None and chip.alarm.key == "spo2.low"
                and chip.alarm.priority is Priority.HIGH and chip.isVisible())

    qtbot.waitUntil(high_spo2_shown, timeout=WAIT_MS)
    chip = win.alarm_bar.chips[0]
    assert chip.text.startswith("*** SpO2 LOW")
    assert tiles["spo2"].alarm is Priority.HIGH
    # the flash really flashes at 2 Hz: lit in the first half of each 0.5 s period
    tiles["spo2"].set_flash(10.1)
    assert tiles["spo2"].lit
    tiles["spo2"].set_flash(10.3)
    assert not tiles["spo2"].lit
    assert win.alarm_bar.ack.isEnabled()
    qtbot.mouseClick(win.alarm_bar.ack, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.alarm_bar.chips[0].alarm is not None
                    and win.alarm_bar.chips[0].alarm.acknowledged, timeout=WAIT_MS)
    assert win.alarm_bar.chips[0].text.endswith("ack")
    # audio pause shows the countdown with the crossed bell
    win.audio_pause()
    qtbot.waitUntil(lambda: win.alarm_bar.audio_text.startswith("AUDIO PAUSED 1:"),
                    timeout=WAIT_MS)
    assert win.alarm_bar.bell.crossed
    room.session.close(author="RN A")
    rows = _rows(db_path, "SELECT action, priority, user FROM alarm_event "
                 "WHERE condition='spo2.low' ORDER BY id")
    actions = [r[0] for r in rows]
    assert "raise" in actions
    assert "acknowledge" in actions
    ack = next(r for r in rows if r[0] == "acknowledge")
    assert ack[2] == "RN A"
    assert any(r[1] == "high" for r in rows)


def test_amending_an_entry_keeps_the_original(room: SimRoom, make_window, qtbot,
                                              db_path: Path) -> None:
    win = make_window(room.session)
    notes = win.notes
    e = notes.log("observation", "Tearfull")
    qtbot.waitUntil(lambda: e.entry_id is not None, timeout=WAIT_MS)
    first_id = e.entry_id
    notes.select_entry(e)
    qtbot.keyClick(win, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    if notes.amend_banner.isHidden():  # offscreen: the window may not be the active one
        notes.begin_amend()
    assert notes.note.text() == "Tearfull"
    notes.note.clear()
    qtbot.keyClicks(notes.note, "Tearful")
    qtbot.keyClick(notes.note, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: e.state == "saved" and e.entry_id != first_id, timeout=WAIT_MS)
    assert "(amended)" in e.item.text(1)
    assert e.item.childCount() == 1 and e.item.child(0).text(1).startswith("Tearfull  ")
    assert "original: Tearfull" in e.item.toolTip(1)
    rows = _rows(db_path, "SELECT id, text, amends_id FROM annotation "
                 "WHERE kind='observation' ORDER BY id")
    assert rows == [(first_id, "Tearfull", None), (e.entry_id, "Tearful", first_id)]


def test_cue_buttons_and_shortcuts_log_cues(room: SimRoom, make_window, qtbot,
                                            db_path: Path) -> None:
    win = make_window(room.session)
    notes = win.notes
    qtbot.mouseClick(notes.cue_buttons["IMG-SAFE"], Qt.MouseButton.LeftButton)
    # the library's shortcuts are registered on the window
    assert {"F2", "Alt+T"} <= set(notes.shortcuts)
    notes.shortcuts["F2"].activated.emit()
    notes.shortcuts["Alt+T"].activated.emit()
    qtbot.waitUntil(lambda: len(notes.entries) >= 4
                    and all(x.state == "saved" for x in notes.entries.values()),
                    timeout=WAIT_MS)
    rows = _rows(db_path, "SELECT kind, code, text FROM annotation "
                 "WHERE kind IN ('cue', 'observation') ORDER BY id")
    assert rows == [("cue", "IMG-SAFE", "Safe place"), ("cue", "RA-SAFE", "You are safe"),
                    ("observation", "OBS-TEARFUL", "Tearful")]
    # the newest entry is at the top of the timeline
    top = notes.timeline.topLevelItem(0)
    assert "Tearful" in top.text(1)


def test_assessment_refuses_missing_items_then_logs_the_score(room: SimRoom, make_window,
                                                              qtbot, db_path: Path) -> None:
    win = make_window(room.session)
    form = win.notes.assess
    form.select("aldrete")
    form.boxes[0][1].setValue(2)
    form.submit()
    assert "missing score" in form.reason.text()
    for _, box in form.boxes:
        box.setValue(2)
    form.submit()
    assert form.reason.text() == ""
    qtbot.waitUntil(lambda: any(e.kind == "assessment" and e.state == "saved"
                                for e in win.notes.entries.values()), timeout=WAIT_MS)
    rows = _rows(db_path, "SELECT code, value, text FROM annotation WHERE kind='assessment'")
    assert rows[0][0] == "aldrete" and rows[0][1] == 10.0
    assert "meets discharge" in rows[0][2]


def test_phase_flow_to_close_session(room: SimRoom, make_window, qtbot,
                                     db_path: Path) -> None:
    win = make_window(room.session)
    win.confirm_close_session = lambda: True
    asked: list[tuple[Phase, list[str]]] = []

    def confirm(phase, checks):
        asked.append((phase, [c.message for c in checks]))
        return True, "escort present, alert and oriented (test)"
    win.confirm_phase = confirm
    for expected in (Phase.INFUSION, Phase.EMERGENCE, Phase.RECOVERY, Phase.DISCHARGE_READY):
        qtbot.waitUntil(win.header.next_btn.isEnabled, timeout=WAIT_MS)  # armed after 1 s
        qtbot.mouseClick(win.header.next_btn, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda p=expected: room.session.phase is p, timeout=WAIT_MS)
        qtbot.waitUntil(lambda p=expected: win.header.phase.text().lower()
                        == p.value.replace("-", " "), timeout=WAIT_MS)
    assert win.header.next_btn.text().startswith("Close session")
    # discharge readiness without an Aldrete score was asked about, with a reason
    assert asked[-1][0] is Phase.DISCHARGE_READY
    assert any("discharge assessment" in m for m in asked[-1][1])
    qtbot.waitUntil(win.header.next_btn.isEnabled, timeout=WAIT_MS)
    with qtbot.waitSignal(win.sessionClosed, timeout=WAIT_MS):
        qtbot.mouseClick(win.header.next_btn, Qt.MouseButton.LeftButton)
    assert room.session.closed
    assert not win.isVisible()
    phases = [r[0] for r in _rows(db_path, "SELECT code FROM annotation WHERE kind='phase' "
                                  "ORDER BY t_us, id")]
    assert phases == ["baseline", "infusion", "emergence", "recovery", "discharge-ready",
                      "closed"]
    assert _rows(db_path, "SELECT status FROM session")[0][0] == "closed"


def test_closing_the_window_mid_session_asks_and_can_leave_it_open(room: SimRoom, make_window,
                                                                   qtbot,
                                                                   db_path: Path) -> None:
    win = make_window(room.session)
    asked: list[str] = []
    win.ask_close = lambda: asked.append("cancel") or "cancel"
    win.close()
    assert asked == ["cancel"] and win.isVisible() and win.timer.isActive()
    win.ask_close = lambda: asked.append("leave") or "leave-open"
    win.close()
    assert asked[-1] == "leave" and not win.isVisible() and not win.timer.isActive()
    assert win.left_open and not room.session.closed
    room.session.abandon()  # what run_app does when the window was left open
    assert _rows(db_path, "SELECT status FROM session")[0][0] == "open"
    closed = _rows(db_path, "SELECT count(*) FROM annotation WHERE code='closed'")[0][0]
    assert closed == 0


def test_follow_stops_when_the_user_pans_and_resumes_on_follow(room: SimRoom, make_window,
                                                               qtbot) -> None:
    win = make_window(room.session)
    panel = win.trends
    trends = panel.trends
    assert trends.following and not panel.buttons["follow"].isVisibleTo(panel)
    vb = trends.plots[0].getViewBox()
    vb.sigRangeChangedManually.emit([True, False])
    assert not trends.following
    assert panel.buttons["follow"].isVisibleTo(panel)
    (x0, x1), _ = vb.viewRange()
    qtbot.wait(200)
    assert vb.viewRange()[0] == [x0, x1]  # nothing moves under the user's hand
    qtbot.mouseClick(panel.buttons["15"], Qt.MouseButton.LeftButton)
    assert trends.following and trends.window_min == 15.0
    assert not panel.buttons["follow"].isVisibleTo(panel)


def test_format_clock() -> None:
    assert format_clock(None, 190.2) == "Baseline 03:10"
    assert format_clock(754.9, 1000) == "T+12:34"
    assert format_clock(3723, 4000) == "T+1:02:03"
    assert format_session_time(-190_000_000, 0) == "-03:10"
    assert format_session_time(7_503_000_000, 0) == "125:03"


@pytest.mark.parametrize("priority", list(Priority))
def test_flash_rates_follow_the_standard(priority: Priority) -> None:
    from kapmonitor.ui.theme import flash_on

    samples = [flash_on(priority, i / 1000) for i in range(4000)]  # 4 s at 1 ms
    duty = sum(samples) / len(samples)
    edges = sum(1 for a, b in itertools.pairwise(samples) if a and not b)
    if priority is Priority.LOW:
        assert duty == 1.0
    else:
        assert 0.2 <= duty <= 0.6
        hz = edges / 4.0
        assert hz == pytest.approx({Priority.HIGH: 2.0, Priority.MEDIUM: 0.5}[priority],
                                   abs=0.26)


def test_manual_start_asks_then_the_pump_start_is_offered_as_t0(room: SimRoom, make_window,
                                                                 qtbot, db_path: Path) -> None:
    """Issue 13 item 1 through the window: a manual start while the pump is stopped is asked
    about; when the pump starts, moving t0 to it is offered, and accepting stores it."""
    win = make_window(room.session)
    asked_phase: list[list[str]] = []
    win.confirm_phase = lambda p, checks: (asked_phase.append([c.message for c in checks])
                                           or (True, ""))
    offered: list[int] = []
    win.ask_t0_move = lambda t: (offered.append(t) or ("move", ""))
    qtbot.waitUntil(lambda: room.session.pump_running() is False, timeout=WAIT_MS)
    qtbot.mouseClick(win.header.next_btn, Qt.MouseButton.LeftButton)  # Start infusion
    qtbot.waitUntil(lambda: room.session.phase is Phase.INFUSION, timeout=WAIT_MS)
    assert "not delivering" in asked_phase[0][0]
    manual = room.session.t0_us
    room.pump.start(room.clock())
    qtbot.waitUntil(lambda: bool(offered) and room.session.t0_us == offered[0], timeout=WAIT_MS)
    assert offered[0] > manual
    room.session.recorder.flush_now(30)
    assert _rows(db_path, "SELECT t0_us FROM session") == [(offered[0],)]
    infusion = _rows(db_path, "SELECT t_us, amends_id FROM annotation WHERE code='infusion' "
                     "ORDER BY id")
    assert infusion[0] == (manual, None) and infusion[1][0] == offered[0]


def test_alarm_sounds_off_asks_why_shows_and_is_recorded(room: SimRoom, make_window, qtbot,
                                                         db_path: Path) -> None:
    """Issue 13 item 4: AUDIO OFF asks a reason and a time, shows on the alarm bar, is
    recorded, and comes back on; no audio output is a recorded technical alarm."""
    from kapmonitor.alarms import AudioMode

    win = make_window(room.session)  # enable_audio=False: this window has no output
    assert any(a.key == "tech.audio" for a in room.session.alarms.active())
    win.ask_audio_off = lambda: (True, "patient asleep, nurse at the chair", 15.0)
    win.mute_action.trigger()
    assert win.mute_action.isChecked()
    assert room.session.alarms.audio_state().mode is AudioMode.OFF
    qtbot.waitUntil(lambda: "AUDIO OFF" in win.alarm_bar.audio_text, timeout=WAIT_MS)
    win.mute_action.trigger()
    assert not win.mute_action.isChecked()
    assert room.session.alarms.audio_state().mode is not AudioMode.OFF
    room.session.recorder.flush_now(30)
    rows = _rows(db_path, "SELECT action, message FROM alarm_event WHERE condition IN "
                 "('system.audio', 'tech.audio') ORDER BY id")
    assert rows[0][0] == "raise" and "NO AUDIO OUTPUT" in rows[0][1]
    assert [a for a, _ in rows[1:]] == ["audio-off", "audio-on"]
    assert "patient asleep" in rows[1][1] and "15 min" in rows[1][1]


def test_the_demo_says_when_its_pump_starts(room: SimRoom, make_window, qtbot) -> None:
    """Issue 13 item 11: the demo showed PUMP STOPPED for 10 real minutes with nothing saying
    the simulated pump starts by itself."""
    from kapmonitor.cli.demo import pump_start_note

    class Rig:  # the two times the note is made of, as the simulator's rig holds them
        class sim:
            start_us, t0_us = 0, 600_000_000

    note = pump_start_note(Rig, 1.0)
    assert note.startswith("starts ") and note.endswith("(in 10 min)")
    win = make_window(room.session, demo=True, demo_note=note)
    qtbot.waitUntil(lambda: win.pump.state.text() == f"STOPPED \u2014 {note}", timeout=WAIT_MS)
    room.pump.start(room.clock())
    qtbot.waitUntil(lambda: "starts" not in win.pump.state.text(), timeout=WAIT_MS)


def test_the_demo_menu_restarts_with_another_scenario(room: SimRoom, make_window, qtbot,
                                                      db_path: Path) -> None:
    """Issue 13 item 11: scenario and speed from the demo's window: the running demo
    session is closed (recorded as any demo session) and the choice handed back."""
    from PySide6.QtWidgets import QMenu

    win = make_window(room.session, demo=True,
                      demo_options=(["standard", "desaturation"], "standard", 1.0))
    menus = [m for m in win.findChildren(QMenu) if m.title().startswith("Demo")]
    (act,) = [a for a in menus[0].actions() if a.text().strip() == "desaturation"]
    act.trigger()
    qtbot.waitUntil(lambda: room.session.closed, timeout=WAIT_MS)
    assert win.demo_restart == ("desaturation", 1.0)
    qtbot.waitUntil(lambda: _rows(db_path, "SELECT status FROM session") == [("closed",)],
                    timeout=WAIT_MS)


def test_a_click_on_a_trend_times_the_next_note_there(room: SimRoom, make_window, qtbot,
                                                      db_path: Path) -> None:
    """Issue 13 item 9: a note at a clicked trend time, stored at that time."""
    from PySide6.QtCore import QPointF

    win = make_window(room.session)
    trends = win.trends.trends
    plot = trends.plots[0]
    plot.getViewBox().sigRangeChangedManually.emit([True, False])  # stop following: the
    assert not trends.following  # axis must not move between reading it and the click
    (x0, x1), (y0, y1) = plot.getViewBox().viewRange()
    elapsed = (room.clock() - win._ref_us()) / 60e6  # a time in the past, inside the view
    x = max(x0, elapsed / 2)
    assert x < min(x1, elapsed)
    scene = plot.getViewBox().mapViewToScene(QPointF(x, (y0 + y1) / 2))
    qtbot.mouseClick(trends.viewport(), Qt.MouseButton.LeftButton,
                     pos=trends.mapFromScene(scene))
    expected = win._ref_us() + round(x * 60e6)
    qtbot.keyClicks(win.notes.note, "Looked restless here")
    qtbot.keyClick(win.notes.note, Qt.Key.Key_Return)
    room.session.recorder.flush_now(30)
    qtbot.waitUntil(lambda: _rows(db_path, "SELECT t_us FROM annotation WHERE "
                                  "text='Looked restless here'") != [], timeout=WAIT_MS)
    ((t_us,),) = _rows(db_path, "SELECT t_us FROM annotation WHERE text='Looked restless here'")
    per_pixel = (x1 - x0) * 60e6 / plot.getViewBox().width()
    assert abs(t_us - expected) <= 2 * per_pixel  # the click's time, to a pixel or two


def test_an_alarm_that_cleared_by_itself_stays_in_the_timeline_until_reviewed(
        room: SimRoom, make_window, qtbot, db_path: Path) -> None:
    """Issue 13 item 6: a medium alarm that ended before anyone looked left no trace on the
    screen. It stays in the timeline, highlighted, until Acknowledge reviews it (recorded)."""
    win = make_window(room.session)
    qtbot.waitUntil(lambda: win.tiles.tiles["spo2"].shown_text == "97", timeout=WAIT_MS)
    room.vitals.values[Channel.SPO2] = 90.0  # medium: below 92, not below 88
    qtbot.waitUntil(lambda: any(a.key == "spo2.low" for a in room.session.alarms.active()),
                    timeout=WAIT_MS)
    room.vitals.values[Channel.SPO2] = 97.0
    qtbot.waitUntil(lambda: bool(win.notes.unreviewed), timeout=WAIT_MS)
    (row,) = win.notes.unreviewed
    assert row.text.startswith("SpO2 LOW 90") and "NOT REVIEWED" in row.text
    assert row.item is not None and "NOT REVIEWED" in " ".join(row.item.text(1).split())
    win.acknowledge()  # the Acknowledge button and Ctrl+K
    qtbot.waitUntil(lambda: not win.notes.unreviewed, timeout=WAIT_MS)
    assert "reviewed by" in row.text
    room.session.recorder.flush_now(30)
    qtbot.waitUntil(lambda: _rows(db_path, "SELECT text FROM annotation WHERE "
                                  "code='alarms-reviewed'") != [], timeout=WAIT_MS)
    ((text,),) = _rows(db_path, "SELECT text FROM annotation WHERE code='alarms-reviewed'")
    assert "SpO2 LOW 90" in text
