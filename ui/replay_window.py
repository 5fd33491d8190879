"""The replay window: a recorded session under a time cursor (DESIGN §6, issue 9).

What a clinician reviewing the chart gets, and why it is built this way:

- The live view's own widgets, fed from the record instead of the ring buffers (reader ->
  pacer -> the same consumers as live, CONVENTIONS 9): the stacked trends on one
  session-time axis with the same markers (notes, cues, assessments, phases, alarms, and
  pump changes), the numeric tiles, the pump panel, the alarm bar and the wave strips. The
  tiles, pump panel and alarm bar read :class:`~kapmonitor.ui.replay_data.CursorBuffers`,
  which answers the live buffers' questions as of the cursor, so each shows what the
  bedside showed at that moment: the last value at or before the cursor, grey with its age
  once older than the channel's stale time, the alarms active then.
- A time cursor (a line across every trend), a scrubber over the whole session with the
  entries and alarms ticked on it, and play/pause at 1x/4x/16x/60x. The pacer is a QTimer,
  but the cursor is computed from the wall time elapsed since play started (QElapsedTimer)
  times the speed, from a fixed anchor, as python-can's ``MessageSync`` paces a replay: a
  late or skipped tick never makes the replay slow, and nothing accumulates drift.
- The entries list follows the cursor (the latest entry at or before it is highlighted and
  scrolled to; later entries are dimmed) and a click on an entry puts the cursor on it.
  Corrections are visible: an amended entry shows its current text marked "amended" with
  every earlier version struck through under it.
- It opens fast on long sessions: one indexed query per numeric channel, curves decimated
  for display (min/max per bucket, so a one-sample desaturation is never lost), and waves
  read only for the 10 s around the cursor (at full resolution, cached with a margin).
  The reads run on the GUI thread on purpose: a replay has no live data to keep flowing,
  and bench/bench_replay.py keeps a jump well under 50 ms on a 4-hour session.
- The header says whose record it is, its status (closed, RECOVERED after a crash, or
  STILL OPEN), the infusion start and "Secondary record — not a primary alarm device".
- Keyboard: Space play/pause, Left/Right 5 s (Shift: 1 min), Up/Down or PgUp/PgDn the
  previous/next entry, Home/End the start/end, 1-4 the speeds.
"""

from __future__ import annotations

import bisect
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QElapsedTimer, QEvent, QRect, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetrics,
    QKeyEvent,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QButtonGroup,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QSlider,
    QStyle,
    QStyleOptionSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from sqlalchemy import Engine

from kapmonitor.alarm_limits import AlarmLimits, LimitsError, Priority
from kapmonitor.model import Channel
from kapmonitor.store.reader import SessionReader

from . import theme
from .alarm_bar import AlarmBar, by_channel
from .notes_panel import KIND_COLOURS, KIND_ICON, format_session_time, wrap_text
from .plots import TrendPlots, WaveStrip, short_label
from .pump_panel import PumpPanel
from .replay_data import (
    CursorBuffers,
    RecordedSession,
    ReplayDoseView,
    TimelineItem,
    WaveWindow,
    decimate_minmax,
    format_session_clock,
)
from .tiles import TilesPanel

__all__ = ["SECONDARY_RECORD", "SPEEDS", "ReplayWindow", "run_replay"]

SECONDARY_RECORD = "Secondary record \u2014 not a primary alarm device"
SPEEDS = (1, 4, 16, 60)
PACER_HZ = 30
WAVE_SECONDS = 10.0
#: curves longer than twice this are min/max-decimated for display (a 4-hour 1 Hz trend,
#: 14,400 points, is drawn whole; pyqtgraph's peak downsampling then fits it to the pixels)
TREND_BUCKETS = 8000
SYMBOL_BUCKETS = 600
STEP_S = 5
BIG_STEP_S = 60
_US = 1_000_000
_MIN = 60 * _US
#: A QSlider holds a 32-bit int. One step per second covers 68 years; a record that spans
#: more (an entry stored with a mistyped year) gets coarser steps instead of an overflow.
_SLIDER_MAX = 2**31 - 1

CURSOR_COLOUR = "#4c8dff"
KIND_EXTRA_COLOURS = {"pump": theme.PUMP_ORANGE, "device": theme.TEXT_DIM}
KIND_EXTRA_ICONS = {"alarm": "\u26a0", "pump": "\u25b8", "device": "\u25cb"}
STATUS_TEXT = {"closed": "CLOSED", "recovered": "RECOVERED", "open": "STILL OPEN"}


def _local(t_us: int, *, date: bool = True) -> str:
    """Wall-clock time of the machine showing the record (the clinic's), with the date.
    A time no calendar holds (a stored typo far outside years 1-9999) shows as such
    rather than stopping the window."""
    try:
        dt = datetime.fromtimestamp(t_us / _US).astimezone()
    except (ValueError, OverflowError, OSError):
        return "(time out of range)"
    return dt.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _kind_colour(item: TimelineItem) -> str:
    if item.kind == "alarm" and item.priority in Priority._value2member_map_:
        return theme.ALARM_COLOURS[Priority(item.priority)]
    return KIND_COLOURS.get(item.kind) or KIND_EXTRA_COLOURS.get(item.kind, theme.TEXT)


def _limits(rec: RecordedSession) -> AlarmLimits | None:
    """The alarm limits the session ran with (stored with it), for the tiles' limit text."""
    try:
        doc = json.loads(rec.row.get("alarm_limits") or "{}")
        return AlarmLimits.from_mapping(doc) if doc else None
    except (ValueError, LimitsError):
        return None


# ----------------------------------------------------------------------------- header


class _ReplayHeader(QFrame):
    def __init__(self, rec: RecordedSession) -> None:
        super().__init__()
        self.setObjectName("panel")
        self.setFixedHeight(60)
        meta = rec.meta
        cfg = rec.config()
        self.patient = QLabel(meta.patient or "no patient id")
        self.patient.setFont(theme.font(22, bold=True))
        room = f"Room {cfg.room}" if cfg.room else ""
        self.room = QLabel(" \u00b7 ".join(x for x in (room, cfg.clinicians or "") if x))
        self.room.setObjectName("dim")
        self.room.setFont(theme.font(14))
        self.room.setMaximumWidth(260)  # a long clinician list is cut, never widens
        self.room.setToolTip(self.room.text())
        self.clock = QLabel("")
        self.clock.setFont(theme.font(30, bold=True, numbers=True))
        self.clock.setMinimumWidth(170)
        self.clock.setToolTip("Cursor time: session time since the infusion start")
        self.wall = QLabel("")
        self.wall.setFont(theme.font(12))
        self.wall.setObjectName("dim")
        self.phase = QLabel("")
        self.phase.setFont(theme.font(18, bold=True))
        status = meta.status
        self.status = QLabel(STATUS_TEXT.get(status, status.upper()))
        self.status.setFont(theme.font(15, bold=True))
        if status in ("recovered", "open"):  # a record with a hole or no end: framed
            self.status.setStyleSheet(f"color: {theme.PUMP_ORANGE}; border: 2px solid "
                                      f"{theme.PUMP_ORANGE}; border-radius: 4px;"
                                      " padding: 2px 8px;")
        else:
            self.status.setStyleSheet(f"color: {theme.TEXT_DIM}; padding: 2px 4px;")
        tips = meta.status_warnings()
        self.status.setToolTip("\n".join(tips) if tips else "Session closed normally")
        self.demo = QLabel("DEMO")
        self.demo.setToolTip("Simulated patient and devices: not a real patient's record")
        self.demo.setFont(theme.font(15, bold=True))
        self.demo.setStyleSheet("background: #6a2c91; color: #ffffff; border-radius: 4px;"
                                " padding: 3px 8px;")
        self.demo.setVisible(meta.demo)
        self.notice = QLabel(SECONDARY_RECORD)
        self.notice.setFont(theme.font(12))
        self.notice.setStyleSheet(f"color: {theme.TEXT_DIM};")
        t0 = (f"Infusion start {_local(rec.t0_us)}" if rec.t0_us is not None
              else "No infusion start recorded: times from the session start")
        self.t0 = QLabel(f"{t0} \u00b7 session {rec.session_id}")
        self.t0.setFont(theme.font(12))
        self.t0.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self.export_btn = QPushButton("PDF report\u2026")
        self.export_btn.setObjectName("compact")
        self.export_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 4, 10, 4)
        lay.setSpacing(14)
        who = QVBoxLayout()
        who.setSpacing(0)
        who.addWidget(self.patient)
        who.addWidget(self.room)
        lay.addLayout(who)
        clock = QVBoxLayout()
        clock.setSpacing(0)
        clock.addWidget(self.clock)
        clock.addWidget(self.wall)
        lay.addLayout(clock)
        lay.addWidget(self.phase)
        lay.addWidget(self.status)
        lay.addWidget(self.demo)
        lay.addStretch(1)
        right = QVBoxLayout()
        right.setSpacing(0)
        right.addWidget(self.notice, 0, Qt.AlignmentFlag.AlignRight)
        right.addWidget(self.t0, 0, Qt.AlignmentFlag.AlignRight)
        lay.addLayout(right)
        lay.addWidget(self.export_btn)


# ----------------------------------------------------------------------------- scrubber


class Scrubber(QSlider):
    """The whole session as a slider (one step per second), with the entries and alarm
    raises ticked under the groove in their colours, so a reviewer sees where things
    happened before moving there."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.ticks: list[tuple[int, str, bool]] = []  # (value, colour, tall)
        self.setMinimumHeight(30)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setPageStep(60)

    def set_ticks(self, ticks: list[tuple[int, str, bool]]) -> None:
        self.ticks = ticks
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self.ticks or self.maximum() <= self.minimum():
            return
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove: QRect = self.style().subControlRect(QStyle.ComplexControl.CC_Slider, opt,
                                                    QStyle.SubControl.SC_SliderGroove, self)
        handle = self.style().subControlRect(QStyle.ComplexControl.CC_Slider, opt,
                                             QStyle.SubControl.SC_SliderHandle, self)
        x0 = groove.left() + handle.width() / 2
        w = groove.width() - handle.width()
        span = self.maximum() - self.minimum()
        p = QPainter(self)
        bottom = self.height() - 1
        for value, colour, tall in self.ticks:
            if not self.minimum() <= value <= self.maximum():
                continue  # outside the record: no pixel, and no int overflow drawing one
            x = x0 + (value - self.minimum()) / span * w
            p.setPen(QPen(QColor(colour), 2 if tall else 1))
            p.drawLine(int(x), bottom - (10 if tall else 6), int(x), bottom)
        p.end()


# ----------------------------------------------------------------------------- entries


class ReplayTimeline(QTreeWidget):
    """Every entry, alarm event, pump change and device break in time order (oldest first,
    as a record is read), following the cursor. Amended entries show their current text
    marked "amended", the earlier versions struck through beneath."""

    #: the user clicked an entry: its time
    entryClicked = Signal(object)

    def __init__(self, items: list[TimelineItem], ref_us: int,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.items = items
        self.times = [i.t_us for i in items]
        self.ref_us = ref_us
        self.current = -1
        self.setColumnCount(2)
        self.setHeaderLabels(["Time", "Entry \u00b7 by"])
        self.setRootIsDecorated(True)
        self.setIndentation(12)
        self.setUniformRowHeights(False)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the window's keys drive the cursor
        self.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.setColumnWidth(0, 86)
        self.header().setStretchLastSection(True)
        self.rows: list[QTreeWidgetItem] = []
        self._wrapped_at = 0
        for n in range(len(items)):
            row = QTreeWidgetItem()
            row.setData(0, Qt.ItemDataRole.UserRole, n)
            self.rows.append(row)
        self.addTopLevelItems(self.rows)
        self._render_all()
        for n, it in enumerate(items):
            if it.amended:
                self.rows[n].setExpanded(True)
        self.itemClicked.connect(self._clicked)

    def _text_width(self) -> int:
        return max(80, self.viewport().width() - self.columnWidth(0) - self.indentation() - 14)

    def _render_all(self) -> None:
        width = self._text_width()
        self._wrapped_at = width
        base = QFont(self.font())
        for n, it in enumerate(self.items):
            row = self.rows[n]
            icon = KIND_ICON.get(it.kind) or KIND_EXTRA_ICONS.get(it.kind, "")
            row.setText(0, f"{icon} {format_session_time(it.t_us, self.ref_us)}")
            text = it.text
            if it.amended:
                text = f"\u270e {text}  (amended)"
            if it.author:
                text += f"  \u00b7 {it.author}"
            f = QFont(base)
            f.setItalic(it.amended)
            f.setBold(it.kind == "alarm" and it.action in ("raise", "escalate"))
            row.setFont(1, f)
            row.setText(1, wrap_text(text, f, width))
            tip = f"{it.kind} at {format_session_time(it.t_us, self.ref_us)}"
            if it.amended:
                tip += "\n" + "\n".join(
                    f"{'original' if i == 0 else 'then'}: {h.text}  ({h.author or '-'})"
                    for i, h in enumerate(it.history))
                tip += f"\nnow: {it.text}  ({it.author or '-'})"
            row.setToolTip(0, tip)
            row.setToolTip(1, tip)
            if it.amended and row.childCount() == 0:
                struck = QFont(base)
                struck.setStrikeOut(True)
                for i, h in enumerate(it.history):
                    child = QTreeWidgetItem(["original" if i == 0 else "was", ""])
                    child.setFont(1, struck)
                    child.setText(1, wrap_text(
                        h.text + (f"  \u00b7 {h.author}" if h.author else ""), struck, width))
                    child.setForeground(0, QBrush(QColor(theme.TEXT_FAINT)))
                    child.setForeground(1, QBrush(QColor(theme.TEXT_DIM)))
                    row.addChild(child)
            elif it.amended:
                for i, h in enumerate(it.history):
                    child = row.child(i)
                    child.setText(1, wrap_text(
                        h.text + (f"  \u00b7 {h.author}" if h.author else ""),
                        child.font(1), width))
            self._colour(n)

    def _colour(self, n: int) -> None:
        """Past entries in their colours, entries after the cursor dimmed."""
        it, row = self.items[n], self.rows[n]
        future = n > self.current
        row.setForeground(0, QBrush(QColor(theme.TEXT_FAINT if future else _kind_colour(it))))
        if it.kind == "alarm" and not future:
            colour = _kind_colour(it)
        else:
            colour = theme.TEXT_FAINT if future else (
                theme.TEXT_DIM if it.kind in ("device", "pump") else theme.TEXT)
        row.setForeground(1, QBrush(QColor(colour)))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self._text_width() != self._wrapped_at:
            self._render_all()

    def index_at(self, t_us: int) -> int:
        """The last item at or before ``t_us`` (-1: none yet)."""
        return bisect.bisect_right(self.times, t_us) - 1

    def follow(self, t_us: int, *, exact: int | None = None) -> None:
        """Highlight the latest item at or before ``t_us`` (or ``exact``, a clicked item at
        that time) and scroll it into view; dim the items after it."""
        idx = exact if exact is not None else self.index_at(t_us)
        if idx == self.current:
            return
        lo, hi = sorted((self.current, idx))
        self.current = idx
        for n in range(max(lo, 0), min(hi + 1, len(self.rows))):
            self._colour(n)
        self.blockSignals(True)
        try:
            if idx >= 0:
                self.setCurrentItem(self.rows[idx])
                self.scrollToItem(self.rows[idx], QAbstractItemView.ScrollHint.PositionAtCenter)
            else:
                self.clearSelection()
                self.scrollToTop()
        finally:
            self.blockSignals(False)

    def _clicked(self, row: QTreeWidgetItem, _col: int) -> None:
        while row.parent() is not None:
            row = row.parent()
        n = row.data(0, Qt.ItemDataRole.UserRole)
        if n is None:
            return
        self.entryClicked.emit(int(n))

    def click_item(self, n: int) -> None:
        """As a mouse click on item ``n`` (for keyboard navigation and tests)."""
        self.entryClicked.emit(n)


# ----------------------------------------------------------------------------- window


class ReplayWindow(QMainWindow):
    """A recorded session under a time cursor: ``ReplayWindow(engine, session_id)``."""

    #: the cursor moved (session host time, microseconds)
    cursorMoved = Signal(object)
    #: play state changed
    playingChanged = Signal(bool)

    def __init__(self, engine: Engine, session_id: int, *, at_us: int | None = None,
                 recorded: RecordedSession | None = None, parent: QWidget | None = None
                 ) -> None:
        super().__init__(parent)
        self.rec = rec = recorded if recorded is not None else RecordedSession.load(
            engine, session_id)
        self.reader = SessionReader(engine, session_id)
        self.buffers = CursorBuffers(rec)
        self.start_us, self.end_us = rec.start_us, max(rec.end_us, rec.start_us)
        self.ref_us = rec.ref_us
        self.cursor_us = self.start_us
        self.speed = SPEEDS[0]
        self.playing = False
        self._alarm_index = -1
        self._phase_text: str | None = None
        self._exact_entry = False
        self._view_minutes: float | None = None
        self._labels: list[tuple[int, Any, int, bool]] = []
        self._shut = False
        name = rec.meta.patient or "no patient id"
        self.setWindowTitle(f"KAP Monitor replay \u2014 {name} \u2014 session {session_id}"
                            + (" \u2014 DEMO" if rec.meta.demo else ""))
        limits = _limits(rec)

        # -- widgets (the live view's) -----------------------------------------------------
        self.header = _ReplayHeader(rec)
        self.header.export_btn.clicked.connect(self._ask_export)
        self.alarm_bar = AlarmBar()
        for w in (self.alarm_bar.ack, self.alarm_bar.pause, self.alarm_bar.bell,
                  self.alarm_bar.audio_label):
            w.setVisible(False)  # nothing to acknowledge in a record
        self.alarm_bar.none_label.setText("No alarms active at the cursor")
        self.tiles = TilesPanel(limits)
        self.tiles.setFixedWidth(350)
        self.trends = TrendPlots(limits=limits)
        self.trends.following = False
        self.waves = [WaveStrip(ch, WAVE_SECONDS) for ch in rec.wave_channels]
        self._wave_windows = [WaveWindow(self.reader, ch) for ch in rec.wave_channels]
        self.pump = PumpPanel(ReplayDoseView(rec, self.buffers))
        self.timeline_items = rec.timeline()
        self.entries = ReplayTimeline(self.timeline_items, self.ref_us)
        self.entries.setFixedWidth(320)
        self.entries.entryClicked.connect(self._entry_clicked)

        # -- transport ---------------------------------------------------------------------
        self.play_btn = QPushButton("\u25b6 Play")
        self.play_btn.setToolTip("Play / pause (Space)")
        self.play_btn.setFont(theme.font(15, bold=True))
        self.play_btn.setMinimumWidth(110)
        self.play_btn.clicked.connect(self.toggle_play)
        self.speed_buttons: dict[int, QPushButton] = {}
        self._speed_group = QButtonGroup(self)
        for i, s in enumerate(SPEEDS):
            b = QPushButton(f"{s}\u00d7")
            b.setCheckable(True)
            b.setObjectName("compact")
            b.setToolTip(f"Play at {s} times real time (key {i + 1})")
            b.clicked.connect(lambda _=False, s=s: self.set_speed(s))
            self._speed_group.addButton(b)
            self.speed_buttons[s] = b
        self.speed_buttons[self.speed].setChecked(True)
        self.scrubber = Scrubber()
        span_s = max(0, (self.end_us - self.start_us) // _US)
        self._scrub_s = max(1, -(-span_s // _SLIDER_MAX))  # seconds per slider step
        self.scrubber.setRange(0, span_s // self._scrub_s)
        self.scrubber.valueChanged.connect(self._scrubbed)
        self.position = QLabel("")
        self.position.setFont(theme.font(14, numbers=True))
        self.position.setObjectName("dim")
        self.view_buttons: dict[str, QPushButton] = {}
        for key, text, tip, minutes in (
                ("all", "All", "the whole session", None),
                ("60", "60 min", "60 minutes around the cursor", 60.0),
                ("15", "15 min", "15 minutes around the cursor", 15.0)):
            b = QPushButton(text)
            b.setObjectName("compact")
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, m=minutes: self.set_view(m))
            self.view_buttons[key] = b
        for b in (self.play_btn, *self.speed_buttons.values(), *self.view_buttons.values()):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)

        # -- layout -------------------------------------------------------------------------
        centre = QVBoxLayout()
        centre.setSpacing(2)
        view_bar = QHBoxLayout()
        view_bar.setContentsMargins(4, 0, 4, 0)
        self.view_label = QLabel("Trends: whole session")
        self.view_label.setObjectName("dim")
        self.view_label.setToolTip("Drag a trend to pan, the wheel zooms; click to move the "
                                   "cursor there")
        # a label never widens the window (1280 px is the design width)
        self.view_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                      QSizePolicy.Policy.Preferred)
        view_bar.addWidget(self.view_label, 1)
        for b in self.view_buttons.values():
            view_bar.addWidget(b)
        centre.addLayout(view_bar)
        centre.addWidget(self.trends, 5)
        for w in self.waves:
            w.setMinimumHeight(50)
            centre.addWidget(w, 1)
        centre.addSpacing(4)
        centre.addWidget(self.pump)
        body = QHBoxLayout()
        body.setSpacing(8)
        body.addWidget(self.tiles)
        body.addLayout(centre, 1)
        right = QVBoxLayout()
        right.setSpacing(2)
        head = QLabel("Entries, alarms and pump (oldest first)")
        head.setObjectName("dim")
        right.addWidget(head)
        right.addWidget(self.entries, 1)
        body.addLayout(right)
        transport = QFrame()
        transport.setObjectName("panel")
        tl = QHBoxLayout(transport)
        tl.setContentsMargins(8, 4, 8, 4)
        tl.setSpacing(6)
        tl.addWidget(self.play_btn)
        for b in self.speed_buttons.values():
            tl.addWidget(b)
        tl.addSpacing(8)
        tl.addWidget(self.scrubber, 1)
        tl.addSpacing(8)
        tl.addWidget(self.position)
        root = QWidget()
        lay = QVBoxLayout(root)
        lay.setContentsMargins(6, 6, 6, 4)
        lay.setSpacing(6)
        lay.addWidget(self.header)
        lay.addWidget(self.alarm_bar)
        lay.addLayout(body, 1)
        lay.addWidget(transport)
        self.setCentralWidget(root)
        self.status = QLabel("Space play/pause \u00b7 \u2190 \u2192 5 s (Shift: 1 min) \u00b7 "
                             "\u2191 \u2193 previous/next entry \u00b7 Home/End \u00b7 1-4 speed"
                             " \u00b7 click a trend or an entry to move there")
        self.status.setObjectName("dim")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.status, 1)
        self.statusBar().setSizeGripEnabled(False)
        # The window takes every key (Space, arrows, Home/End): no child may take the focus,
        # not even a plot clicked with the mouse (pyqtgraph views take it by default).
        for child in root.findChildren(QWidget):
            child.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        # -- data ---------------------------------------------------------------------------
        self._load_curves()
        self._add_markers()
        self.trends.scene().sigMouseClicked.connect(self._trend_clicked)
        self.pacer = QTimer(self)
        self.pacer.setTimerType(Qt.TimerType.PreciseTimer)
        self.pacer.setInterval(max(1, round(1000 / PACER_HZ)))
        self.pacer.timeout.connect(self._tick)
        self._elapsed = QElapsedTimer()
        self._anchor_us = self.cursor_us
        self.set_view(None)
        self.set_cursor(at_us if at_us is not None else self._default_cursor())

    # -- loading -----------------------------------------------------------------------------

    def _default_cursor(self) -> int:
        """Open at the infusion start when there is one (what a reviewer looks for first)."""
        t0 = self.rec.t0_us
        return t0 if t0 is not None and self.start_us <= t0 <= self.end_us else self.start_us

    def _load_curves(self) -> None:
        rec = self.rec
        self.trends.set_reference(self.ref_us, infusion_started=rec.t0_us is not None)
        for ch, s in rec.numerics.items():
            # NIBP is drawn with a symbol per point, which costs per point: a monitor that
            # sends it every second (some do) is decimated further
            buckets = SYMBOL_BUCKETS if ch in (Channel.NIBP_SYS, Channel.NIBP_DIA) \
                else TREND_BUCKETS
            t, v = decimate_minmax(s.t_us, s.values, buckets)
            self.trends.set_series(ch, t, v)
        cp = rec.numerics.get(Channel.PLASMA_ESTIMATE)
        if cp is not None:
            t, v = decimate_minmax(cp.t_us, cp.values, 1000)
            self.pump.set_trend(t, v, self.ref_us)

    def _add_markers(self) -> None:
        """The live view's markers (entries, phases, alarms) plus pump changes (a line, no
        label: the list says what changed), and the same moments as ticks on the scrubber.
        Labels are placed in time order on the lowest of the four heights where they do not
        overprint the previous one in the whole-session view."""
        marks: list[list[Any]] = []  # [t, label, colour, tall tick]
        last_alarm: dict[str, list[Any]] = {}
        for ev in self.rec.alarm_events:
            if ev["action"] not in ("raise", "escalate") or ev["kind"] not in (
                    "physiological", "technical"):
                continue
            prio = Priority(ev["priority"])
            words = (ev["message"] or ev["condition"]).split()
            label = f"{theme.ASTERISKS[prio]} {' '.join(words[:2])}"
            colour = theme.ALARM_COLOURS[prio]
            t = int(ev["t_us"])
            prev = last_alarm.get(ev["condition"])
            if ev["action"] == "escalate" and prev is not None and t - prev[0] <= 120 * _US:
                prev[1], prev[2] = label, colour  # the same event on the timeline, as live
                continue
            mark = [t, label, colour, True]
            last_alarm[ev["condition"]] = mark
            marks.append(mark)
        created = self.rec.meta.created_us
        for it in self.timeline_items:
            if it.kind in ("alarm", "device"):
                continue
            if it.kind == "phase" and it.text == "Baseline" and abs(it.t_us - created) < _US:
                continue  # the session's opening is the axis start, not an event
            label = "" if it.kind == "pump" else ("✎ " if it.amended else "") + it.text
            marks.append([it.t_us, label, _kind_colour(it), it.kind == "phase"])
        marks.sort(key=lambda m: m[0])
        fm = QFontMetrics(theme.font(10))
        self._labels = []
        for t, label, colour, tall in marks:
            lines = self.trends.add_marker(t, label, colour, slot=0)
            if label:
                width = fm.horizontalAdvance(short_label(label)) + 8
                self._labels.append((t, lines[0], width, tall))
        self.scrubber.set_ticks([(self._slider_value(t), colour, tall)
                                 for t, _, colour, tall in marks])
        vb = self.trends.plots[0].getViewBox()
        vb.sigXRangeChanged.connect(self._place_labels)
        vb.sigResized.connect(self._place_labels)

    def _place_labels(self, *_: object) -> None:
        """Marker labels where they fit at the current zoom: as many heights as the top
        plot has room for, alarms and phases first, then entries in time order, each on the
        highest free height; a label with no room is hidden (its line stays, the entries
        list has the text). Zooming in brings the hidden ones back."""
        vb = self.trends.plots[0].getViewBox()
        (x0, x1), _ = vb.viewRange()
        w, h = float(vb.width()), float(vb.height())
        if w < 10 or h < 10 or x1 <= x0:
            return
        px_per_min = w / (x1 - x0)
        row_px = 15.0
        n = max(1, min(4, int(h * 0.55 / row_px)))
        positions = [1.0 - (row_px * (k + 0.6)) / h for k in range(n)]
        taken: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        order = sorted(self._labels, key=lambda m: (not m[3], m[0]))
        for t, line, width, _tall in order:
            label = getattr(line, "label", None)
            if label is None:
                continue
            x = ((t - self.ref_us) / _MIN - x0) * px_per_min
            if x < 0 or x > w:
                label.setVisible(False)
                continue
            span = (x - 2, x + width)
            level = next((k for k in range(n) if all(
                span[1] <= a or span[0] >= b for a, b in taken[k])), None)
            if level is None:
                label.setVisible(False)
                continue
            taken[level].append(span)
            label.setPosition(positions[level])
            label.setVisible(True)

    # -- the cursor --------------------------------------------------------------------------

    def _slider_value(self, t_us: int) -> int:
        """The slider position of ``t_us``, within the slider's range whatever is stored
        (an entry before the record's start or after its end sits at that end)."""
        value = (t_us - self.start_us) // _US // self._scrub_s
        return int(min(max(value, 0), self.scrubber.maximum()))

    def set_cursor(self, t_us: int) -> None:
        """Move the cursor (clamped to the record) and show everything as it was then."""
        t = int(min(max(t_us, self.start_us), self.end_us))
        self.cursor_us = t
        self.buffers.move(t)
        self.tiles.refresh(self.buffers, t)  # type: ignore[arg-type]
        idx = self.rec.alarms.index_at(t)
        if idx != self._alarm_index:
            self._alarm_index = idx
            active = self.rec.alarms.active_at(t)
            self.alarm_bar.set_alarms(active)
            self.tiles.set_alarms(by_channel(active))
            # steady, not flashing: a record shows that an alarm was on, it is not one
            self.tiles.flash(0.0)
            self.alarm_bar.flash(0.0)
        self.pump.refresh(self.buffers, t, self.ref_us, trend=False)  # type: ignore[arg-type]
        self.trends.set_cursor(t, CURSOR_COLOUR)
        self._keep_in_view(t)
        half = int(WAVE_SECONDS * _US / 2)
        for strip, win in zip(self.waves, self._wave_windows, strict=True):
            tt, vv = win.get(t - half, t + half)
            strip.show_window(tt, vv, t - half, t)
        self.header.clock.setText(format_session_clock(t, self.ref_us))
        self.header.wall.setText(_local(t))
        phase = self.rec.phase_at(t) or ""
        if phase != self._phase_text:
            self._phase_text = phase
            self.header.phase.setText(phase)
        self.scrubber.blockSignals(True)
        self.scrubber.setValue(self._slider_value(t))
        self.scrubber.blockSignals(False)
        self.position.setText(f"{format_session_clock(t, self.ref_us)} / "
                              f"{format_session_clock(self.end_us, self.ref_us)}")
        if not self._exact_entry:
            self.entries.follow(t)
        self.cursorMoved.emit(t)

    def seek(self, t_us: int) -> None:
        """A move asked by the user: while playing, playback goes on from there."""
        self.set_cursor(t_us)
        if self.playing:
            self._anchor()

    def step(self, seconds: float) -> None:
        self.seek(self.cursor_us + int(seconds * _US))

    def step_entry(self, direction: int) -> None:
        """Move to the previous (-1) or next (+1) entry."""
        items = self.timeline_items
        if not items:
            return
        if direction > 0:
            i = bisect.bisect_right(self.entries.times, self.cursor_us)
        else:
            i = bisect.bisect_left(self.entries.times, self.cursor_us) - 1
        if 0 <= i < len(items):
            self._entry_clicked(i)

    def _entry_clicked(self, n: int) -> None:
        self._exact_entry = True
        try:
            self.seek(self.timeline_items[n].t_us)
        finally:
            self._exact_entry = False
        self.entries.follow(self.cursor_us, exact=n)

    def _scrubbed(self, value: int) -> None:
        self.seek(self.start_us + value * self._scrub_s * _US)

    def _trend_clicked(self, ev: Any) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            return
        pos = ev.scenePos()
        for plot in self.trends.plots:
            if plot.sceneBoundingRect().contains(pos):
                x = plot.getViewBox().mapSceneToView(pos).x()
                self.seek(self.ref_us + int(x * _MIN))
                return

    # -- the view ----------------------------------------------------------------------------

    def set_view(self, minutes: float | None) -> None:
        """The whole session (None) or ``minutes`` around the cursor."""
        self._view_minutes = minutes
        if minutes is None:
            span = max(self.end_us - self.start_us, _MIN)
            pad = span // 50
            self.trends.set_view_us(self.start_us - pad, self.start_us + span + pad)
            self.view_label.setText("Trends: whole session")
        else:
            half = int(minutes * _MIN / 2)
            self.trends.set_view_us(self.cursor_us - half, self.cursor_us + half)
            self.view_label.setText(f"Trends: {minutes:g} min around the cursor")

    def _keep_in_view(self, t: int) -> None:
        """Page the trends when the cursor leaves them (playback on a zoomed view)."""
        lo, hi = self.trends.view_us()
        if lo <= t <= hi:
            return
        span = hi - lo
        if t > hi:
            self.trends.set_view_us(t - span // 10, t - span // 10 + span)
        else:
            self.trends.set_view_us(t - span // 2, t + span // 2)

    # -- playback (the pacer) ----------------------------------------------------------------

    def _anchor(self) -> None:
        self._anchor_us = self.cursor_us
        self._elapsed.restart()

    def play(self) -> None:
        if self.playing:
            return
        if self.cursor_us >= self.end_us:
            self.set_cursor(self.start_us)
        self.playing = True
        self._anchor()
        self.pacer.start()
        self.play_btn.setText("\u275a\u275a Pause")
        self.playingChanged.emit(True)

    def pause(self) -> None:
        if not self.playing:
            return
        self.playing = False
        self.pacer.stop()
        self.play_btn.setText("\u25b6 Play")
        self.playingChanged.emit(False)

    def toggle_play(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def set_speed(self, speed: int) -> None:
        if speed not in SPEEDS:
            raise ValueError(f"speed must be one of {SPEEDS}, got {speed}")
        if self.playing:
            self._anchor()
        self.speed = speed
        self.speed_buttons[speed].setChecked(True)

    def _tick(self) -> None:
        """Cursor = where play (re)started + speed x wall time since then: no drift, and a
        late tick only makes the next jump longer."""
        t = self._anchor_us + int(self.speed * self._elapsed.nsecsElapsed() / 1000)
        if t >= self.end_us:
            self.set_cursor(self.end_us)
            self.pause()
            return
        self.set_cursor(t)

    # -- keyboard ----------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, mods = event.key(), event.modifiers()
        big = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        k = Qt.Key
        if key == k.Key_Space:
            self.toggle_play()
        elif key == k.Key_Left:
            self.step(-(BIG_STEP_S if big else STEP_S))
        elif key == k.Key_Right:
            self.step(BIG_STEP_S if big else STEP_S)
        elif key in (k.Key_Up, k.Key_PageUp):
            self.step_entry(-1)
        elif key in (k.Key_Down, k.Key_PageDown):
            self.step_entry(1)
        elif key == k.Key_Home:
            self.seek(self.start_us)
        elif key == k.Key_End:
            self.seek(self.end_us)
        elif k.Key_1 <= key <= k.Key_4:
            self.set_speed(SPEEDS[key - k.Key_1])
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    # -- report, screenshots, closing --------------------------------------------------------

    def _ask_export(self) -> None:
        name = f"kap-session-{self.rec.session_id}.pdf"
        path, _ = QFileDialog.getSaveFileName(self, "Save the PDF report", name, "PDF (*.pdf)")
        if path:
            self.export_pdf(path)

    def export_pdf(self, path: str | Path) -> Any:
        from .report import export_session

        try:
            result = export_session(self.rec.engine, self.rec.session_id, Path(path),
                                    overwrite=True)
        except Exception as exc:
            self.status.setText(f"PDF report not written: {exc}")
            return None
        self.status.setText(f"PDF report written to {path}")
        return result

    def grab_png(self, path: str | Path) -> bool:
        QApplication.processEvents()
        return self.grab().save(str(path), "PNG")

    def shutdown(self) -> None:
        if self._shut:
            return
        self._shut = True
        self.pause()
        self.pacer.stop()

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)


def run_replay(engine: Engine, session_id: int, *, at_us: int | None = None,
               screenshot: str | Path | None = None, quit_after: float | None = None,
               argv: Sequence[str] | None = None, size: tuple[int, int] = (1280, 800)) -> int:
    """Show the replay window and run the Qt event loop (``kapmonitor replay``).
    ``quit_after`` wall seconds closes it by itself, saving ``screenshot`` first; a screenshot
    without ``quit_after`` is taken as soon as the window is drawn."""
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    assert isinstance(app, QApplication)
    theme.apply_theme(app)
    win = ReplayWindow(engine, session_id, at_us=at_us)
    win.resize(*size)
    win.show()
    win.setFocus()
    if screenshot is not None and quit_after is None:
        quit_after = 0.5

    def auto_quit() -> None:
        if screenshot is not None:
            win.grab_png(screenshot)
        win.close()

    if quit_after is not None:
        QTimer.singleShot(int(quit_after * 1000), auto_quit)
    app.setQuitOnLastWindowClosed(True)
    code = app.exec()
    win.shutdown()
    win.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return int(code)
