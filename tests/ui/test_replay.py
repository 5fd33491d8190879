"""The replay window on recorded sessions (issue 9).

The main session is recorded through the real path once per run (tests/ui/recorded.py: GE
S/5 and B. Braun peers on pseudo-terminals, a LiveSession writing SQLite at 20x): a note,
a cue, an amendment of the note, an SpO2 alarm raised, acknowledged and ended. Each test
states what a clinician reviewing the chart sees or does, and checks it against the record
as ``SessionReader`` returns it."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QApplication, QWidget
from sqlalchemy import event

from kapmonitor.alarm_limits import Priority
from kapmonitor.model import CHANNELS, Channel
from kapmonitor.store import SessionReader, Store
from kapmonitor.ui import theme
from kapmonitor.ui.replay_data import NOT_A_MEASUREMENT, NUMERIC_CHANNELS, RecordedSession
from kapmonitor.ui.replay_window import SECONDARY_RECORD, ReplayWindow

from .recorded import Recorded, write_session

_US = 1_000_000
TILE_CHANNELS = {"spo2": Channel.SPO2, "rr": Channel.RR, "etco2": Channel.ETCO2,
                 "temp": Channel.TEMP}


def _expected(reader: SessionReader, channel: Channel, t_us: int) -> str:
    """What a tile must show at ``t_us``: the last recorded value at or before it, in the
    channel's precision; '--' when that value was flagged as not a measurement."""
    s = reader.numeric(channel, t_to=t_us)
    assert len(s), f"no {channel} recorded before the cursor"
    if int(s.quality[-1]) & int(NOT_A_MEASUREMENT):
        return "--"
    return f"{s.values[-1]:.{CHANNELS[channel].precision}f}"


def _check_tiles(win: ReplayWindow, reader: SessionReader, t_us: int) -> None:
    tiles = win.tiles.tiles
    for key, ch in TILE_CHANNELS.items():
        assert tiles[key].shown_text == _expected(reader, ch, t_us), key
    hr = tiles["hr"]
    assert hr.shown_text == _expected(reader, hr.channel(), t_us)
    sys_, dia = (_expected(reader, c, t_us) for c in (Channel.NIBP_SYS, Channel.NIBP_DIA))
    assert tiles["bp"].shown_text == f"{sys_}/{dia}"


def _entry_index(win: ReplayWindow, kind: str) -> int:
    return next(i for i, it in enumerate(win.timeline_items) if it.kind == kind)


def test_cursor_at_an_entry_shows_the_values_recorded_then(
        replay_recorded: Recorded, replay_store: Store, make_replay) -> None:
    rec = replay_recorded
    win = make_replay(replay_store.engine, rec.session_id)
    reader = SessionReader(replay_store.engine, rec.session_id)
    # opens at the infusion start, header saying whose record it is and what it is
    assert win.cursor_us == rec.t0_us
    assert win.header.clock.text() == "T+00:00"
    assert win.header.patient.text() == "KAP-UI-1"
    assert win.header.status.text() == "CLOSED"
    assert win.header.notice.text() == SECONDARY_RECORD
    assert win.header.demo.isVisible()  # a simulated patient is labelled so
    note = win.timeline_items[_entry_index(win, "observation")]
    for t in (note.t_us, rec.alarm_raise_us, rec.t0_us + 30 * _US, win.end_us):
        win.set_cursor(t)
        _check_tiles(win, reader, t)
    # at the raise the SpO2 alarm is on: bar and tile, as the bedside showed it
    win.set_cursor(rec.alarm_raise_us)
    chip = win.alarm_bar.chips[0]
    assert chip.alarm is not None and chip.alarm.key == "spo2.low"
    assert chip.text.startswith("*** SpO2 LOW")
    assert win.tiles.tiles["spo2"].alarm is Priority.HIGH
    assert win.header.clock.text() == f"T+00:{(rec.alarm_raise_us - rec.t0_us) // _US:02d}"
    # acknowledged five seconds later, ended when SpO2 recovered: gone at the end
    win.set_cursor(rec.alarm_raise_us + 6 * _US)
    assert win.alarm_bar.chips[0].text.endswith("ack")
    win.set_cursor(win.end_us)
    assert win.alarm_bar.alarms == []
    assert win.tiles.tiles["spo2"].alarm is None
    # the phase at the cursor
    win.set_cursor(rec.t0_us - 10 * _US)
    assert win.header.phase.text() == "Baseline"
    assert win.header.clock.text() == "T-00:10"


def test_clicking_an_entry_moves_the_cursor_to_it(replay_recorded: Recorded,
                                                  replay_store: Store, make_replay,
                                                  qtbot) -> None:
    rec = replay_recorded
    win = make_replay(replay_store.engine, rec.session_id)
    reader = SessionReader(replay_store.engine, rec.session_id)
    n = _entry_index(win, "cue")
    cue = win.timeline_items[n]
    assert cue.text == "Safe place" and cue.author == "Dr B"
    row = win.entries.rows[n]
    win.entries.scrollToItem(row)
    pos = win.entries.visualItemRect(row).center()
    with qtbot.waitSignal(win.cursorMoved, timeout=2000):
        qtbot.mouseClick(win.entries.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert win.cursor_us == cue.t_us
    assert win.entries.currentItem() is row
    _check_tiles(win, reader, cue.t_us)
    # entries after the cursor are dimmed, the ones before keep their colours
    later = win.entries.rows[-1]
    assert later.foreground(1).color().name() == theme.TEXT_FAINT
    # the cursor line on the trends is there too
    x = win.trends.cursor_x()
    assert x == pytest.approx((cue.t_us - win.ref_us) / 60e6)
    # a click on a trend puts the cursor there
    plot = win.trends.plots[1]
    target = rec.t0_us + 60 * _US
    scene = plot.getViewBox().mapViewToScene(QPointF((target - win.ref_us) / 60e6, 95.0))
    with qtbot.waitSignal(win.cursorMoved, timeout=2000):
        qtbot.mouseClick(win.trends.viewport(), Qt.MouseButton.LeftButton,
                         pos=win.trends.mapFromScene(scene))
    assert abs(win.cursor_us - target) < 1 * _US


def test_amendments_are_visible_in_the_entries(replay_recorded: Recorded,
                                               replay_store: Store, make_replay) -> None:
    win = make_replay(replay_store.engine, replay_recorded.session_id)
    n = _entry_index(win, "observation")
    item, row = win.timeline_items[n], win.entries.rows[n]
    assert item.text == "Calm, eyes closed" and item.amended
    assert "(amended)" in row.text(1) and row.isExpanded()
    original = row.child(0)
    assert original.text(0) == "original"
    assert original.text(1).startswith("Calm, eyes closd")
    assert original.font(1).strikeOut()
    assert "original: Calm, eyes closd" in row.toolTip(1)
    # its marker on the trends says it was corrected
    kinds = [it.kind for it in win.timeline_items]
    assert {"phase", "observation", "cue", "assessment", "alarm", "pump"} <= set(kinds)


def test_play_at_16x_advances_16_seconds_per_second(replay_recorded: Recorded,
                                                    replay_store: Store, make_replay,
                                                    qtbot) -> None:
    """Measured over 1.6 s of wall time; +-20 % because a loaded machine delays timer
    ticks (the cursor itself is computed from elapsed wall time, so it does not drift)."""
    win = make_replay(replay_store.engine, replay_recorded.session_id)
    # the keys always reach the window: nothing inside it takes the focus, not a plot
    assert all(w.focusPolicy() == Qt.FocusPolicy.NoFocus
               for w in win.centralWidget().findChildren(QWidget))
    win.set_cursor(win.start_us)
    qtbot.keyClick(win, Qt.Key.Key_3)  # 16x
    assert win.speed == 16 and win.speed_buttons[16].isChecked()
    qtbot.keyClick(win, Qt.Key.Key_Space)
    c0, w0 = win.start_us, time.monotonic()
    assert win.playing and win.pacer.isActive()
    qtbot.waitUntil(lambda: time.monotonic() - w0 >= 1.6, timeout=10_000)
    c1, w1 = win.cursor_us, time.monotonic()
    rate = (c1 - c0) / _US / (w1 - w0)
    assert 16 * 0.8 <= rate <= 16 * 1.2, f"{rate:.1f} session s per wall s"
    qtbot.keyClick(win, Qt.Key.Key_Space)
    assert not win.playing and not win.pacer.isActive()
    here = win.cursor_us
    qtbot.keyClick(win, Qt.Key.Key_Right)
    assert win.cursor_us == here + 5 * _US
    qtbot.keyClick(win, Qt.Key.Key_Left, Qt.KeyboardModifier.ShiftModifier)
    assert win.cursor_us == max(win.start_us, here + 5 * _US - 60 * _US)
    qtbot.keyClick(win, Qt.Key.Key_End)
    assert win.cursor_us == win.end_us
    qtbot.keyClick(win, Qt.Key.Key_Home)
    assert win.cursor_us == win.start_us
    qtbot.keyClick(win, Qt.Key.Key_Down)  # the next entry
    assert win.cursor_us == next(it.t_us for it in win.timeline_items
                                 if it.t_us > win.start_us)
    # playing at 60x up to the end stops there by itself
    win.set_cursor(win.end_us - 3 * _US)
    win.set_speed(60)
    with qtbot.waitSignal(win.playingChanged, timeout=10_000,
                          check_params_cb=lambda playing: not playing):
        win.play()
    assert win.cursor_us == win.end_us
    # the scrubber follows, and moving it moves the cursor
    assert win.scrubber.value() == (win.end_us - win.start_us) // _US
    win.scrubber.setValue(10)
    assert win.cursor_us == win.start_us + 10 * _US
    # zooming keeps the window at its design size (no label widens it)
    for minutes in (15.0, 60.0, None):
        win.set_view(minutes)
        QApplication.processEvents()
        assert (win.width(), win.height()) == (1280, 800)


def test_wave_strips_show_ten_seconds_around_the_cursor(replay_recorded: Recorded,
                                                        replay_store: Store,
                                                        make_replay) -> None:
    win = make_replay(replay_store.engine, replay_recorded.session_id)
    assert [w.channel for w in win.waves] == [Channel.PLETH, Channel.CO2_WAVE]
    t = replay_recorded.t0_us + 30 * _US
    win.set_cursor(t)
    reader = SessionReader(replay_store.engine, replay_recorded.session_id)
    for strip in win.waves:
        x, _ = strip.curve.getData()
        full = reader.wave(strip.channel, t - 5 * _US, t + 5 * _US)
        assert len(x) == len(full) > 0  # every sample of the window: full resolution
        assert 0 <= x[0] < 0.5 and 9.5 < x[-1] <= 10.0
        assert strip.cursor.value() == pytest.approx(5.0)
    # a small step stays inside the cached window: no new read
    reads = [w.reads for w in win._wave_windows]
    win.step(1)
    assert [w.reads for w in win._wave_windows] == reads


def test_opening_reads_each_numeric_channel_once(replay_recorded: Recorded,
                                                 replay_store: Store) -> None:
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(replay_store.engine, "before_cursor_execute", count)
    try:
        RecordedSession.load(replay_store.engine, replay_recorded.session_id)
    finally:
        event.remove(replay_store.engine, "before_cursor_execute", count)
    numeric = [s for s in statements if "FROM numeric" in s and "max(" not in s]
    assert len(numeric) == len(NUMERIC_CHANNELS)  # one indexed query per channel
    waves = [s for s in statements if "FROM wave" in s and "max(" not in s]
    assert all("LIMIT" in s for s in waves)  # only "is there a pleth?", never the samples


def test_a_recovered_session_says_so(written_store: Store, make_replay) -> None:
    w = write_session(written_store, minutes=20, status="recovered")
    win = make_replay(written_store.engine, w.session_id)
    assert win.header.status.text() == "RECOVERED"
    assert "RECOVERED" in win.header.status.toolTip()
    assert win.timeline_items[-1].kind == "gap"  # where the record breaks off
    assert "Recording interrupted" in win.timeline_items[-1].text


def test_an_open_session_says_so(written_store: Store, make_replay) -> None:
    w = write_session(written_store, minutes=5, status="open", pleth=False)
    win = make_replay(written_store.engine, w.session_id)
    assert win.header.status.text() == "STILL OPEN"
    assert "still OPEN" in win.header.status.toolTip()
    assert win.waves == []  # no wave recorded, no strip


def test_a_value_older_than_its_stale_time_is_grey_with_its_age(written_store: Store,
                                                                make_replay) -> None:
    w = write_session(written_store, minutes=20, monitor_gap_min=(10.0, 12.0), pleth=False)
    win = make_replay(written_store.engine, w.session_id)
    spo2 = win.tiles.tiles["spo2"]
    win.set_cursor(w.t0_us + 9 * 60 * _US)
    assert spo2.status.text() == "" and theme.STALE not in spo2.value.styleSheet()
    win.set_cursor(w.t0_us + 11 * 60 * _US)  # the monitor sent nothing for a minute
    assert spo2.shown_text != "--"
    assert spo2.status.text() == "61 s ago"
    assert theme.STALE in spo2.value.styleSheet()


def test_a_session_without_data_opens_and_reports(written_store: Store, make_replay,
                                                  tmp_path: Path) -> None:
    """A session opened and closed before any device sent anything: no crash, no
    invented numbers."""
    sid = written_store.create_session(patient="KAP-EMPTY", room="1", owned=False)
    written_store.close_session(sid)
    win = make_replay(written_store.engine, sid)
    assert win.tiles.tiles["hr"].shown_text in ("", "--")
    assert win.header.clock.text().startswith("T")
    win.play()
    win.step(5)
    win.pause()
    from kapmonitor.ui.report import export_session

    result = export_session(written_store.engine, sid, tmp_path / "empty.pdf")
    assert result.counts["pages"] >= 1 and result.counts["channels"] == 0
    assert any("no infusion start" in w for w in result.warnings)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_replay_command_runs_headless_to_a_screenshot(replay_recorded: Recorded,
                                                      replay_store: Store, tmp_path: Path,
                                                      cli) -> None:
    png = tmp_path / "replay.png"
    uid = SessionReader(replay_store.engine, replay_recorded.session_id).session()["uid"]
    r = cli("replay", uid[:8], "--db", str(replay_recorded.db), "--at", "00:55",
            "--screenshot", str(png), "--quit-after", "1",
            env={"QT_QPA_PLATFORM": "offscreen"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _png_size(png) == (1280, 800)


@pytest.mark.parametrize(("args", "reason"), [
    (["99"], "no session '99'"),
    (["1", "--at", "99:00"], "--at 99:00 is outside session 1"),
    (["1", "--at", "soon"], "--at must look like MM:SS"),
    (["1", "--quit-after", "0"], "--quit-after must be positive"),
])
def test_replay_bad_input_is_one_line(replay_recorded: Recorded, cli, args: list[str],
                                      reason: str) -> None:
    r = cli("replay", *args, "--db", str(replay_recorded.db),
            env={"QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 2
    assert reason in r.stderr and r.stderr.count("\n") == 1
