"""The bedside window: header, tiles, trends, pump panel, alarm bar, notes (DESIGN §6).

How it runs, and why:

- One QTimer at 30 Hz is the only clock of the display. Each frame reads the live ring
  buffers and redraws only what moved (a ring's ``version``), flashes alarm elements from
  one monotonic clock, and updates the session clock text when its second changes. No
  frame waits on a port or the disk: samples come from ring buffers, writes go to the
  session's writer thread or this window's action thread.
- Alarm events arrive on device threads; an :class:`AlarmBridge` made on the GUI thread
  turns them into queued signals, and the next frame re-reads the engine's active list. The
  engine runs in the core, so a frozen window never stops alarms or recording.
- The flow of a session is explicit: Start infusion (normally the pump does it), End
  infusion -> Emergence, Recovery, Discharge ready, Close session (asks first). Phase changes
  are recorded by the core as phase entries and drawn as markers.
- Closing the window while the session is open asks: close the session, leave it open
  (recording stops, the record stays open and the next start offers to recover it), or
  cancel. If the process is killed instead, the store's crash recovery handles it.
- The header always says "Secondary display — not a primary alarm device", and a DEMO
  badge when the patient is simulated, so a screenshot can never be mistaken for a record
  of a real patient.
- Readable from 2 m at any size from 1024x768 to full HD: the header, alarm bar and pump
  panel take heights in proportion to the window's, the tiles, trends and notes columns
  widths in proportion (within bounds), and the numbers (tiles, session clock, pump figures,
  alarm messages) fit their fonts to the space they get, when it changes. F11 toggles full
  screen (the key is kept free of cue shortcuts for it).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QResizeEvent, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import AlarmAction, AlarmEvent, AlarmKind, AudioMode
from kapmonitor.cues import CueLibrary, CueLibraryError
from kapmonitor.model import DeviceState
from kapmonitor.phases import PhaseCheck
from kapmonitor.session import PHASE_LABELS, Phase, PhaseNeedsConfirmation

from . import theme
from .alarm_bar import AlarmBar, by_channel
from .bridge import AlarmBridge, Relay
from .notes_panel import KIND_COLOURS, NotesPanel
from .plots import TrendPanel
from .pump_panel import PumpPanel
from .sounds import AlarmSounder
from .tiles import TilesPanel

__all__ = ["FRAME_HZ", "SECONDARY_NOTICE", "MainWindow", "format_clock", "grab_png", "run_app"]

log = logging.getLogger(__name__)

FRAME_HZ = 30
SECONDARY_NOTICE = "Secondary display \u2014 not a primary alarm device"
_US = 1_000_000
_ESCALATE_SAME_MARK_US = 120 * _US

#: The next step of the flow from each phase: (button text, target phase or "close")
_NEXT: dict[Phase, tuple[str, Phase | str]] = {
    Phase.BASELINE: ("Start infusion", Phase.INFUSION),
    Phase.INFUSION: ("End infusion", Phase.EMERGENCE),
    Phase.EMERGENCE: ("Recovery", Phase.RECOVERY),
    Phase.RECOVERY: ("Discharge ready", Phase.DISCHARGE_READY),
    Phase.DISCHARGE_READY: ("Close session\u2026", "close"),
}
#: Cue-library phase (clinical.md §8.1) for a session phase; the infusion has two: onset
#: for its first 10 minutes, then peak / immersion
_CUE_PHASE = {Phase.BASELINE: "preparation", Phase.INFUSION: "onset",
              Phase.EMERGENCE: "emergence", Phase.RECOVERY: "integration",
              Phase.DISCHARGE_READY: "integration"}
_PEAK_AFTER_S = 10 * 60
_DEVICE_WORDS = {DeviceState.STREAMING: "ok", DeviceState.CONNECTING: "connecting",
                 DeviceState.STALE: "STALE", DeviceState.DISCONNECTED: "DISCONNECTED",
                 DeviceState.STOPPED: "stopped"}


def format_clock(session_s: float | None, since_start_s: float) -> str:
    """'T+12:34' since the infusion start ('T+1:02:03' past an hour); before it
    'Baseline 03:10' since the session start."""
    if session_s is None:
        s = max(0, int(since_start_s))
        return f"Baseline {s // 60:02d}:{s % 60:02d}"
    sign = "+" if session_s >= 0 else "-"
    s = int(abs(session_s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"T{sign}{h}:{m:02d}:{sec:02d}" if h else f"T{sign}{m:02d}:{sec:02d}"


def grab_png(widget: QWidget, path: str | Path) -> bool:
    """Render ``widget`` as it is on screen (works offscreen) into a PNG file."""
    return widget.grab().save(str(path), "PNG")


class _Header(QFrame):
    """Who, the session clock, the phase and what to do next, and what this window is.

    The clock is the figure read from across the room (how far into the infusion are
    we?): it takes the header's free width and fits its digits to the header's height.
    The patient id carries the DEMO badge beside it; long names and clinician lists elide
    (whole text in the tooltip) rather than hold the window wide."""

    def __init__(self, session: Any, demo: bool) -> None:
        super().__init__()
        self.setObjectName("panel")
        self.setFixedHeight(56)
        cfg = session.config
        self.patient = theme.ElidedLabel(cfg.patient or "no patient id")
        self.patient.setFont(theme.font(22, bold=True))
        self.patient.setMinimumWidth(80)
        room = f"Room {cfg.room}" if cfg.room else ""
        who = cfg.clinicians or ""
        self.room = theme.ElidedLabel(" \u00b7 ".join(x for x in (room, who) if x))
        self.room.setObjectName("dim")
        self.room.setFont(theme.font(14))
        self.clock = theme.FitLabel("", template="T+00:00", nominal_px=34, min_px=14,
                                    align=Qt.AlignmentFlag.AlignLeft, fill=0.8)
        self.clock.setToolTip("Session time since the infusion start (before it: time in "
                              "the baseline)")
        self.phase = QLabel("")
        self.phase.setFont(theme.font(18, bold=True))
        self.demo = QLabel("DEMO")
        self.demo.setToolTip("Simulated patient and devices: not a real patient's record")
        self.demo.setFont(theme.font(15, bold=True))
        self.demo.setStyleSheet("background: #6a2c91; color: #ffffff; border-radius: 4px;"
                                " padding: 1px 6px;")
        self.demo.setVisible(demo)
        self.notice = QLabel(SECONDARY_NOTICE.replace(" \u2014 ", " \u2014\n"))
        self.notice.setFont(theme.font(13))
        self.notice.setStyleSheet(f"color: {theme.TEXT};")
        self.notice.setToolTip("KAP Monitor records and shows; the bedside monitor and the "
                               "pump raise the primary alarms")
        self.next_btn = QPushButton("")
        self.next_btn.setFont(theme.font(15, bold=True))
        self.next_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.menu_btn = QToolButton()
        self.menu_btn.setText("Session \u25be")
        self.menu_btn.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.lay = lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 2, 10, 2)
        lay.setSpacing(12)
        who_box = QVBoxLayout()
        who_box.setSpacing(0)
        top = QHBoxLayout()
        top.setSpacing(8)
        top.addWidget(self.patient, 1)
        top.addWidget(self.demo)
        who_box.addLayout(top)
        who_box.addWidget(self.room)
        self.who = QWidget()
        self.who.setLayout(who_box)
        who_box.setContentsMargins(0, 0, 0, 0)
        self.who.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.who.setMaximumWidth(300)
        lay.addWidget(self.who)
        lay.addWidget(self.clock, 1)
        lay.addWidget(self.phase)
        lay.addWidget(self.notice)
        lay.addWidget(self.next_btn)
        lay.addWidget(self.menu_btn)

    def set_height(self, h: int) -> None:
        """Header height ``h``; the words around the clock grow a little with it (the
        clock fits itself)."""
        self.setFixedHeight(h)
        self.patient.setFont(theme.font(max(16, min(26, round(h * 0.32))), bold=True))
        self.room.setFont(theme.font(max(12, min(16, round(h * 0.2)))))
        self.phase.setFont(theme.font(max(15, min(24, round(h * 0.28))), bold=True))
        self.demo.setFont(theme.font(max(12, min(18, round(h * 0.22))), bold=True))
        self.notice.setFont(theme.font(max(12, min(16, round(h * 0.2)))))
        self.next_btn.setFont(theme.font(max(14, min(20, round(h * 0.24))), bold=True))
        self.menu_btn.setFont(theme.font(max(14, min(18, round(h * 0.22)))))
        self.who.setMaximumWidth(max(200, min(440, h * 6)))


class MainWindow(QMainWindow):
    """The live view of one :class:`~kapmonitor.session.LiveSession`."""

    #: the session was closed from this window (the window closes itself after)
    sessionClosed = Signal()
    #: emitted once per frame with the frame's duration in seconds (bench, diagnostics)
    framed = Signal(float)

    def __init__(self, session: Any, *, demo: bool = False,
                 cue_library: CueLibrary | None = None, settings: QSettings | None = None,
                 sounder: AlarmSounder | None = None, enable_audio: bool = True,
                 frame_hz: int = FRAME_HZ, parent: QWidget | None = None,
                 open_devices: Callable[[QWidget], object] | None = None,
                 demo_note: str = "",
                 demo_options: tuple[Sequence[str], str, float] | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.demo = demo
        self.settings = settings if settings is not None else QSettings("kapmonitor",
                                                                         "kapmonitor")
        self.left_open = False
        self._shut = False
        self._force_close = False
        self._closing_session = False
        self.frame_times: collections.deque[float] = collections.deque(maxlen=4096)
        title = f"KAP Monitor \u2014 {session.config.patient or 'no patient id'}"
        self.setWindowTitle(title + (" \u2014 DEMO" if demo else ""))
        #: replaced in tests; returns "close-session", "leave-open" or "cancel"
        self.ask_close: Callable[[], str] = self._ask_close
        #: replaced in tests; True to close the session
        self.confirm_close_session: Callable[[], bool] = self._confirm_close_session
        #: replaced in tests; (go ahead?, reason) for a phase change the room contradicts
        self.confirm_phase: Callable[[Phase, list[PhaseCheck]], tuple[bool, str]] = \
            self._confirm_phase
        #: replaced in tests; (turn off?, reason, minutes or None for the whole session)
        self.ask_audio_off: Callable[[], tuple[bool, str, float | None]] = self._ask_audio_off
        #: replaced in tests; "move" (t0 to the pump's start), "keep" with a reason, or ""
        self.ask_t0_move: Callable[[int], tuple[str, str]] = self._ask_t0_move
        #: replaced in tests; the chart PDF offered when a session closes
        self.offer_report: Callable[[], object] = self._offer_report
        self._pending_phase: Phase | None = None
        self._unacked: dict[str, str] = {}  # alarm key -> its message, while not acked
        self._actions = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ui-actions")
        self._relay = Relay(self._on_relay, self)

        limits = session.alarms.alarm_limits
        self.header = _Header(session, demo)
        #: the demo says what will happen (issue 13 item 11: "PUMP STOPPED" for 10 real
        #: minutes, nothing saying the simulated pump starts by itself)
        self.demo_note = demo_note
        #: (scenarios, current scenario, current speed): the Demo menu restarts the demo
        self.demo_options = demo_options
        #: the (scenario, speed) chosen in the Demo menu, read by ``kapmonitor demo``
        self.demo_restart: tuple[str, float] | None = None
        if demo and demo_note:
            self.header.demo.setToolTip(f"Simulated patient and devices: {demo_note}")
        self.alarm_bar = AlarmBar()
        pause_s = limits.timing.audio_pause_s
        self.alarm_bar.pause.setText(f"Audio pause {int(pause_s // 60)}:{int(pause_s % 60):02d}"
                                     "\nCtrl+P")
        self.tiles = TilesPanel(limits)
        self.trends = TrendPanel(limits)
        self.pump = PumpPanel(session)
        self.pump.stopped_note = demo_note if demo else ""
        authors = [a.strip() for a in (session.config.clinicians or "").split(",") if a.strip()]
        self.notes = NotesPanel(session, cue_library, authors=authors, shortcut_parent=self)
        if cue_library is None:
            self.notes.message.emit("No cue library loaded: cue buttons are off")
        self.sounder = sounder if sounder is not None else AlarmSounder(
            self.settings, session.config.room, enable_output=enable_audio, parent=self)

        centre = QVBoxLayout()
        centre.setSpacing(6)
        centre.addWidget(self.trends, 1)
        centre.addWidget(self.pump)
        body = QHBoxLayout()
        body.setSpacing(8)
        # The three columns share the width in proportion (tiles 30 %, trends 50 %, notes
        # 20 %) within bounds: their natural widths are ignored, so no column's text can
        # hold the window wider than a 1024-pixel screen, and a wider screen widens the
        # tiles, whose digits then grow.
        for w, lo, hi in ((self.tiles, 290, 640), (self.trends, 300, 16_777_215),
                          (self.pump, 300, 16_777_215), (self.notes, 310, 420)):
            w.setSizePolicy(QSizePolicy.Policy.Ignored, w.sizePolicy().verticalPolicy())
            w.setMinimumWidth(lo)
            w.setMaximumWidth(hi)
        body.addWidget(self.tiles, 30)
        body.addLayout(centre, 50)
        body.addWidget(self.notes, 20)
        root = QWidget()
        lay = QVBoxLayout(root)
        lay.setContentsMargins(6, 6, 6, 2)
        lay.setSpacing(6)
        lay.addWidget(self.header)
        lay.addWidget(self.alarm_bar)
        lay.addLayout(body, 1)
        self.setCentralWidget(root)
        self.status = QLabel("")
        self.status.setObjectName("dim")
        self.statusBar().addWidget(self.status, 1)
        self.devices_label = QLabel("")
        self.devices_label.setObjectName("dim")
        self.statusBar().addPermanentWidget(self.devices_label)
        self.statusBar().setSizeGripEnabled(False)

        # -- actions and shortcuts ---------------------------------------------------------
        self._build_menu()
        self._build_view_actions()
        self.header.next_btn.clicked.connect(self._next_step)
        self.alarm_bar.acknowledgeRequested.connect(self.acknowledge)
        self.alarm_bar.audioPauseRequested.connect(self.audio_pause)
        self.notes.message.connect(self.show_message)
        self.notes.entryLogged.connect(self._entry_marker)
        # a click on a trend times the next note there (issue 13 item 9)
        self.trends.trends.scene().sigMouseClicked.connect(self._trend_clicked)
        self._shortcuts: list[QShortcut] = []
        for seq, slot in (("Ctrl+K", self.acknowledge), ("Ctrl+P", self.audio_pause),
                          ("Ctrl+End", lambda: self.trends.trends.follow(keep_window=True))):
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            self._shortcuts.append(sc)

        # -- state and the frame timer -----------------------------------------------------
        self._phase: Phase | None = None
        self._ref: tuple[int, bool] | None = None
        self._alarms_dirty = True
        self._alarm_marks: dict[str, tuple[int, list[Any]]] = {}
        self._audio_second = -1
        self._audio_mode: AudioMode | None = None
        self._clock_text = ""
        self._status_next = 0.0
        self._heavy: list[tuple[Callable[[Any, int], bool], Callable[[Any, int], object]]] = [
            (self.trends.trends.pending, self.trends.trends.refresh),
            *[(w.pending, w.refresh) for w in self.trends.waves],
            (self.pump.trend_pending,
             lambda live, now: self.pump.refresh_trend(live, now, self._ref_us())),
        ]
        self._heavy_next = 0
        self._cue_phase: str | None = None
        self.bridge = AlarmBridge(session, self)
        self.bridge.connect_event(self._alarm_event)
        #: the device dialog, handed in by the command line (the UI does not import drivers)
        self.open_devices = open_devices
        if self.sounder.output_error:  # issue 13 item 4: a technical alarm, not grey text
            # low priority: the bedside monitor, the primary alarm device, still sounds
            session.alarms.raise_technical(
                "tech.audio", Priority.LOW, "NO AUDIO OUTPUT \u2014 alarm sounds cannot "
                "play on this computer: watch the screen (kapmonitor doctor says why)",
                session.clock())
        # a pump that starts after a manual t0: offered as the true t0, on this thread
        session.on_t0_proposal(lambda t: self._relay.post("t0-proposal", t))
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(max(1, round(1000 / frame_hz)))
        self.timer.timeout.connect(self.frame)
        self._sync_phase()
        self.frame()
        self.timer.start()
        self.notes.focus_note()

    # -- building --------------------------------------------------------------------------

    def _build_menu(self) -> None:
        menu = QMenu(self)
        self.phase_actions: dict[Phase | str, QAction] = {}
        for text, target in (("Mark infusion start (by hand)", Phase.INFUSION),
                             ("End infusion \u2192 emergence", Phase.EMERGENCE),
                             ("Recovery", Phase.RECOVERY),
                             ("Discharge ready", Phase.DISCHARGE_READY)):
            act = menu.addAction(text)
            act.triggered.connect(lambda _=False, p=target: self.advance(p))
            self.phase_actions[target] = act
        self.undo_phase_action = menu.addAction("Undo the last phase change")
        self.undo_phase_action.triggered.connect(self.undo_phase)
        menu.addSeparator()
        close = menu.addAction("Close session\u2026")
        close.triggered.connect(lambda: self.close_session())
        self.phase_actions["close"] = close
        menu.addAction("Print / PDF\u2026").triggered.connect(self.print_report)
        if self.demo_options is not None:
            self._build_demo_menu(menu)
        menu.addAction("Devices\u2026").triggered.connect(self._devices)
        menu.addSeparator()
        self.mute_action = menu.addAction("Alarm sounds off for this session\u2026")
        self.mute_action.setCheckable(True)
        self.mute_action.setChecked(False)  # never carried over from a previous session
        self.mute_action.triggered.connect(self._set_muted)
        self.header.menu_btn.setMenu(menu)

    def _build_view_actions(self) -> None:
        """F11 toggles full screen (in the Session menu too, so it can be found)."""
        act = QAction("Full screen", self)
        act.setShortcut(QKeySequence(Qt.Key.Key_F11))
        act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.setCheckable(True)
        act.triggered.connect(self.toggle_full_screen)
        self.addAction(act)
        menu = self.header.menu_btn.menu()
        if menu is not None:
            menu.addSeparator()
            menu.addAction(act)
        self.fullscreen_action = act
        self._maximized_before_full = False

    # -- size --------------------------------------------------------------------------------

    def toggle_full_screen(self) -> None:
        """Full screen and back (to maximised if it was maximised before)."""
        if self.isFullScreen():
            if self._maximized_before_full:
                self.showMaximized()
            else:
                self.showNormal()
        else:
            self._maximized_before_full = self.isMaximized()
            self.showFullScreen()
        self.fullscreen_action.setChecked(self.isFullScreen())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.WindowStateChange:
            self.fullscreen_action.setChecked(self.isFullScreen())

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Bands in proportion to the window's height: header 7 %, alarm bar 8.5 %, pump
        panel 12 % (each within bounds); the rest goes to the tiles and trends. Done here
        (on a resize), so the frame timer never lays anything out."""
        super().resizeEvent(event)
        self._fit_bands(event.size().height())

    def _fit_bands(self, h: int) -> None:
        bands = (max(52, min(92, round(h * 0.07))), max(56, min(100, round(h * 0.085))),
                 max(90, min(170, round(h * 0.12))))
        if bands == getattr(self, "_bands", None):
            return
        self._bands = bands
        self.header.set_height(bands[0])
        self.alarm_bar.setFixedHeight(bands[1])
        self.pump.setFixedHeight(bands[2])

    # -- the frame -------------------------------------------------------------------------

    def frame(self) -> None:
        """One display frame: everything the 30 Hz timer does. Never blocks."""
        started = time.perf_counter()
        s = self.session
        now = s.clock()
        mono = time.monotonic()
        live = s.live
        self._sync_phase()
        ref = s.t0_us if s.t0_us is not None else s.started_us
        ref_key = (ref, s.t0_us is not None)
        if ref_key != self._ref:
            self._ref = ref_key
            self.trends.set_reference(ref, infusion_started=s.t0_us is not None)
            self.notes.set_reference(s.t0_us if s.t0_us is not None else s.started_us)
        self.tiles.refresh(live, now)
        self.pump.refresh(live, now, ref, trend=False)
        # The plots are the expensive part (a re-render each): at most one of them is
        # redrawn per frame, round robin, so a second in which every plot has new data
        # costs several cheap frames instead of one long one. Nothing waits longer than a
        # few frames (~100 ms).
        n = len(self._heavy)
        for k in range(n):
            i = (self._heavy_next + k) % n
            pending, run = self._heavy[i]
            if pending(live, now):
                run(live, now)
                self._heavy_next = (i + 1) % n
                break
        if self._alarms_dirty:
            self._alarms_dirty = False
            active = s.alarms.active()
            self.alarm_bar.set_alarms(active)
            self.tiles.set_alarms(by_channel(active))
            self._update_audio(now, force=True)
        elif self._audio_mode is AudioMode.PAUSED:
            self._update_audio(now)
        self.tiles.flash(mono)
        self.alarm_bar.flash(mono)
        text = format_clock(s.session_time_s(now), (now - s.started_us) / _US)
        if text != self._clock_text:
            self._clock_text = text
            self.header.clock.setText(text)
        if mono >= self._status_next:
            self._status_next = mono + 1.0
            self._update_devices()
            self._follow_cue_phase(now)
        dt = time.perf_counter() - started
        self.frame_times.append(dt)
        self.framed.emit(dt)

    def _follow_cue_phase(self, now: int) -> None:
        """Bring up the cues of the current §8.1 phase when it changes (the therapist's own
        choice of category stands until then)."""
        s = self.session
        cue_phase = _CUE_PHASE.get(s.phase)
        st = s.session_time_s(now)
        if s.phase is Phase.INFUSION and st is not None and st >= _PEAK_AFTER_S:
            cue_phase = "peak"
        if cue_phase is not None and cue_phase != self._cue_phase:
            self._cue_phase = cue_phase
            self.notes.show_category_for_phase(cue_phase)

    def _ref_us(self) -> int:
        s = self.session
        return s.t0_us if s.t0_us is not None else s.started_us

    def _update_audio(self, now: int, *, force: bool = False) -> None:
        state = self.session.alarms.audio_state(now)
        second = int(state.paused_remaining_s or 0)
        if not force and second == self._audio_second and state.mode is self._audio_mode:
            return
        self._audio_second = second
        self._audio_mode = state.mode
        self.sounder.update_state(state)
        off = state.mode is AudioMode.OFF
        if self.mute_action.isChecked() != off:  # an expiry ends it by itself
            self.mute_action.setChecked(off)
        self.alarm_bar.set_audio(state, output=self.sounder.output_error, muted=off)

    def _update_devices(self) -> None:
        devs = self.session.live.devices
        parts = [f"{name}: {_DEVICE_WORDS.get(st.state, str(st.state))}"
                 for name, st in sorted(devs.items())]
        text = " \u00b7 ".join(parts) if parts else "no devices"
        if text != self.devices_label.text():
            self.devices_label.setText(text)

    def _sync_phase(self) -> None:
        s = self.session
        phase = s.phase
        if phase is self._phase:
            return
        first = self._phase is None
        self._phase = phase
        if phase is Phase.INFUSION and s.t0_us is not None:
            t = s.t0_us
        elif phase is Phase.BASELINE:
            t = s.started_us
        else:
            t = s.clock()
        self.header.phase.setText(PHASE_LABELS[phase])

        self.notes.add_system_entry(t, "phase", PHASE_LABELS[phase], "")
        if not (first and phase is Phase.BASELINE):
            self.trends.add_marker(t, PHASE_LABELS[phase], KIND_COLOURS["phase"])
        nxt = _NEXT.get(phase)
        self.header.next_btn.setVisible(nxt is not None and not self._closing_session)
        if nxt is not None:
            self.header.next_btn.setText(nxt[0])
        if not first:
            self._arm_next()
        order = list(Phase)
        for target, act in self.phase_actions.items():
            if isinstance(target, Phase):
                act.setEnabled(order.index(target) > order.index(phase))

    # -- alarms ----------------------------------------------------------------------------

    def _alarm_event(self, ev: AlarmEvent) -> None:
        """On the GUI thread (queued from the bridge)."""
        self._alarms_dirty = True
        if ev.kind in (AlarmKind.PHYSIOLOGICAL, AlarmKind.TECHNICAL):
            self._track_review(ev)
        if ev.action not in (AlarmAction.RAISE, AlarmAction.ESCALATE) or ev.kind not in (
                AlarmKind.PHYSIOLOGICAL, AlarmKind.TECHNICAL):
            return
        words = ev.message.split()
        label = f"{theme.ASTERISKS[ev.priority]} {' '.join(words[:2]) if words else ev.key}"
        colour = theme.ALARM_COLOURS[ev.priority]
        prev = self._alarm_marks.get(ev.key)
        if ev.action is AlarmAction.ESCALATE and prev is not None and (
                ev.t_us - prev[0]) <= _ESCALATE_SAME_MARK_US:
            # an escalation shortly after the raise is the same event on the timeline
            self.trends.trends.update_marker(prev[1], label, colour)
            return
        self._alarm_marks[ev.key] = (ev.t_us, self.trends.add_marker(ev.t_us, label, colour))

    def _track_review(self, ev: AlarmEvent) -> None:
        """Issue 13 item 6: an alarm that ended before anyone acknowledged it (and did not
        latch: a latched one stays on the alarm bar) goes into the timeline, highlighted,
        until a nurse reviews it with Acknowledge."""
        if ev.action in (AlarmAction.RAISE, AlarmAction.ESCALATE, AlarmAction.REMINDER):
            self._unacked[ev.key] = ev.message
        elif ev.action in (AlarmAction.ACKNOWLEDGE, AlarmAction.RESET):
            self._unacked.pop(ev.key, None)
        elif ev.action is AlarmAction.CLEAR:
            raised = self._unacked.pop(ev.key, None)
            if raised is not None and not ev.latched and ev.priority is not Priority.LOW:
                self.notes.add_unreviewed_alarm(ev.t_us, raised)

    def acknowledge(self) -> None:
        """Acknowledge the alarms on the bar, and review those that cleared by themselves
        (the review is recorded as an observation naming them)."""
        user = self.notes.author()
        try:
            events = self.session.acknowledge(user=user)
        except Exception as exc:
            self.show_message(f"Acknowledge failed: {exc}")
            return
        self._alarms_dirty = True
        reviewed = self.notes.mark_reviewed(user)
        if reviewed:
            names = "; ".join(e.text.split(" \u2014 ")[0] for e in reviewed)
            self.session.add_entry("observation", f"Reviewed alarms that cleared by "
                                   f"themselves: {names}", author=user,
                                   code="alarms-reviewed")
        if events or reviewed:
            self.show_message(f"Acknowledged {len(events)} alarm(s)"
                              + (f", reviewed {len(reviewed)}" if reviewed else ""))

    def audio_pause(self) -> None:
        try:
            self.session.audio_pause(user=self.notes.author())
        except Exception as exc:
            self.show_message(f"Audio pause refused: {exc}")
            return
        self._alarms_dirty = True

    def _build_demo_menu(self, menu: QMenu) -> None:
        """Scenario and speed from the window (issue 13 item 11): the demo restarts with a
        new simulated session; the current one is closed as any demo session is."""
        assert self.demo_options is not None
        scenarios, current, speed = self.demo_options
        sub = menu.addMenu("Demo: scenario and speed")
        for name in scenarios:
            act = sub.addAction(("\u2713 " if name == current else "   ") + name)
            act.triggered.connect(lambda _=False, n=name: self.restart_demo(n, speed))
        sub.addSeparator()
        for x in (1.0, 10.0, 60.0):
            act = sub.addAction(("\u2713 " if x == speed else "   ") + f"speed {x:g}\u00d7")
            act.triggered.connect(lambda _=False, v=x: self.restart_demo(current, v))

    def restart_demo(self, scenario: str, speed: float) -> None:
        self.demo_restart = (scenario, speed)
        self.show_message(f"Restarting the demo: {scenario} at {speed:g}\u00d7")
        self.close_session(confirm=False)

    def _set_muted(self, muted: bool) -> None:
        """AUDIO OFF asks why and for how long, is recorded as an event, and ends with the
        session or the set time (issue 13 item 4); on again at once, recorded too."""
        user = self.notes.author()
        if muted:
            ok, reason, minutes = self.ask_audio_off()
            if not ok:
                self.mute_action.setChecked(False)
                return
            try:
                self.session.audio_off(reason, minutes=minutes, user=user)
            except Exception as exc:
                self.mute_action.setChecked(False)
                self.show_message(f"Alarm sounds not turned off: {exc}")
                return
            self.show_message("ALARM SOUNDS OFF: every alarm is still shown on screen")
        else:
            self.session.audio_on(user=user)
            self.show_message("Alarm sounds on")
        self._alarms_dirty = True
        self._update_audio(self.session.clock(), force=True)

    def _ask_audio_off(self) -> tuple[bool, str, float | None]:
        from PySide6.QtWidgets import QInputDialog

        choices = ["15 min", "30 min", "60 min", "until this session ends"]
        how, ok = QInputDialog.getItem(
            self, "Alarm sounds off",
            "Every alarm stays on screen, none sounds. For how long?", choices, 1, False)
        if not ok:
            return False, "", None
        reason, ok = QInputDialog.getText(self, "Alarm sounds off", "Why? (recorded)")
        if not ok or not reason.strip():
            return False, "", None
        minutes = None if how.startswith("until") else float(how.split()[0])
        return True, reason.strip(), minutes

    def _t0_proposal(self, pump_us: int) -> None:
        """The pump started delivering after a manual infusion start: move t0 to it (the
        default) or keep the manual time with a reason."""
        choice, reason = self.ask_t0_move(pump_us)
        user = self.notes.author()
        try:
            if choice == "move":
                fut = self.session.accept_pump_t0(author=user)
                fut.add_done_callback(lambda f: self._relay.post("undo", f))
                self.show_message("t0 moved to the pump's first delivery")
            elif choice == "keep":
                self.session.keep_manual_t0(reason, author=user)
                self.show_message("Manual infusion start kept")
        except ValueError as exc:
            self.show_message(f"t0 not changed: {exc}")

    def _ask_t0_move(self, pump_us: int) -> tuple[str, str]:
        s = self.session
        shift = (pump_us - (s.t0_us or pump_us)) / 60e6
        box = QMessageBox(self)
        box.setWindowTitle("Infusion start")
        box.setText(f"The pump started delivering {shift:+.1f} min after the infusion start "
                    "marked by hand.")
        box.setInformativeText("Move the session's t0 to the pump's start? Every T+ time, "
                               "the report and the exports follow t0. The manual entry is "
                               "kept as an amendment.")
        move = box.addButton("Move t0 to the pump", QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton("Keep the manual time\u2026", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(move)
        box.exec()
        if box.clickedButton() is move:
            return "move", ""
        if box.clickedButton() is keep:
            from PySide6.QtWidgets import QInputDialog

            reason, ok = QInputDialog.getText(self, "Keep the manual time", "Why? (recorded)")
            if ok and reason.strip():
                return "keep", reason.strip()
        return "", ""

    def _devices(self) -> None:
        if self.open_devices is None:
            self.show_message("Devices are set up from the start screen (kapmonitor --devices)")
            return
        self.open_devices(self)
        self.show_message("Device changes apply from the next session")

    def print_report(self) -> None:
        from .report import print_or_save_report

        print_or_save_report(self, self.session.store.engine, self.session.session_id)

    def _offer_report(self) -> None:
        from .report import offer_report_at_close

        offer_report_at_close(self, self.session.store.engine, self.session.session_id)

    # -- entries and markers ---------------------------------------------------------------

    def _trend_clicked(self, ev: Any) -> None:
        """A plain click on a trend: the next note or assessment is logged at that time
        (the notes panel says so; Esc or its button clears it). Drags pan, not click."""
        if ev.button() != Qt.MouseButton.LeftButton or ev.double():
            return
        pos = ev.scenePos()
        for plot in self.trends.trends.plots:
            if plot.sceneBoundingRect().contains(pos):
                x = plot.getViewBox().mapSceneToView(pos).x()
                self.notes.set_pending_time(self._ref_us() + round(x * 60 * _US))
                return

    def _entry_marker(self, t_us: int, kind: str, label: str) -> None:
        self.trends.add_marker(t_us, label, KIND_COLOURS.get(kind, theme.TEXT))

    def show_message(self, text: str) -> None:
        self.status.setText(text)

    # -- the flow of the session -----------------------------------------------------------

    def _next_step(self) -> None:
        nxt = _NEXT.get(self.session.phase)
        if nxt is None:
            return
        if nxt[1] == "close":
            self.close_session()
        else:
            self.advance(nxt[1])  # type: ignore[arg-type]

    def advance(self, phase: Phase, *, confirmed: bool = False,
                reason: str = "") -> Future[None]:
        """Move the session to ``phase`` on the action thread (it writes to the disk). A
        change the room contradicts comes back as ``PhaseNeedsConfirmation`` and is asked
        about on this thread (``_on_relay``)."""
        author = self.notes.author()
        if phase is Phase.INFUSION and not confirmed and self.session.pump_running() is False:
            # issue 13 item 1: a manual start while the pump is stopped is asked about
            ok, _ = self.confirm_phase(phase, [PhaseCheck(
                "the pump reports that it is not delivering; when it starts, its start will "
                "be offered as the infusion start")])
            done: Future[None] = Future()
            done.set_result(None)
            if not ok:
                return done
            confirmed = True
        self._pending_phase = phase
        fut = self._actions.submit(self.session.set_phase, phase, author=author,
                                   confirmed=confirmed, reason=reason)
        fut.add_done_callback(lambda f: self._relay.post("phase", f))
        return fut

    def undo_phase(self) -> None:
        """Take back the last phase change (issue 13 item 3): an amendment, never a delete."""
        try:
            fut = self.session.undo_phase(author=self.notes.author())
        except ValueError as exc:
            self.show_message(f"Nothing undone: {exc}")
            return
        fut.add_done_callback(lambda f: self._relay.post("undo", f))
        self.show_message("Last phase change undone")

    def _arm_next(self) -> None:
        """The next-phase button moves under the cursor after a change: it is not armed for
        a second, so a double click cannot skip a phase."""
        btn = self.header.next_btn
        btn.setEnabled(False)
        # the button is the timer's context: a window closed meanwhile cancels it
        QTimer.singleShot(1000, btn, lambda: btn.setEnabled(
            not self._closing_session and not self.session.closed))

    def _confirm_phase(self, phase: Phase, checks: list[PhaseCheck]) -> tuple[bool, str]:
        box = QMessageBox(self)
        box.setWindowTitle(PHASE_LABELS[phase])
        box.setIcon(QMessageBox.Icon.Warning)
        box.setText(f"Move to \u201c{PHASE_LABELS[phase]}\u201d although:")
        box.setInformativeText("\n".join(f"\u2022 {c.message[0].upper()}{c.message[1:]}."
                                         for c in checks))
        go = box.addButton(f"Yes, {PHASE_LABELS[phase].lower()}",
                           QMessageBox.ButtonRole.AcceptRole)
        box.addButton("No", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        if box.clickedButton() is not go:
            return False, ""
        if not any(c.needs_reason for c in checks):
            return True, ""
        from PySide6.QtWidgets import QInputDialog

        reason, ok = QInputDialog.getText(self, PHASE_LABELS[phase],
                                          "Why is the patient ready without the assessment?")
        return (ok and bool(reason.strip())), reason.strip()

    def close_session(self, *, confirm: bool = True) -> Future[None] | None:
        """Close the session (asks first): devices stop, everything is written, the record
        is closed. The window closes when that is done."""
        if self.session.closed or self._closing_session:
            return None
        if confirm and not self.confirm_close_session():
            return None
        self._closing_session = True
        self.header.next_btn.setEnabled(False)
        self.show_message("Closing the session\u2026")
        fut = self._actions.submit(self.session.close, author=self.notes.author())
        fut.add_done_callback(lambda f: self._relay.post("closed", f))
        return fut

    def _on_relay(self, tag: str, fut: Any) -> None:
        if tag == "t0-proposal":
            self._t0_proposal(int(fut))
            return
        exc = fut.exception()
        if tag == "phase":
            phase, self._pending_phase = self._pending_phase, None
            if isinstance(exc, PhaseNeedsConfirmation) and phase is not None:
                ok, reason = self.confirm_phase(phase, exc.checks)
                if ok:
                    self.advance(phase, confirmed=True, reason=reason)
                else:
                    self.show_message(f"Still {PHASE_LABELS[self.session.phase].lower()}")
            elif exc is not None:
                self.show_message(f"Phase not changed: {exc}")
            return
        if tag == "undo":
            if exc is not None:
                self.show_message(f"Not recorded: {exc}")
            return
        if tag == "closed":
            self._closing_session = False
            if exc is not None:
                self.header.next_btn.setEnabled(True)
                self.show_message(f"Session not closed: {exc}")
                return
            unwritten = fut.result()
            if unwritten:  # the database refused to the end: say what is missing, once
                text = (f"The session could not be closed: {unwritten}. The record stays "
                        "open and is offered for recovery at the next start.")
                self.show_message(text)
                log.error("%s", text)
                if self.isVisible() and not self._force_close:
                    QMessageBox.warning(self, "Record incomplete", text)
            else:
                self.show_message("Session closed")
                if self.isVisible() and not self._force_close and self.demo_restart is None:
                    self.offer_report()
            self.sessionClosed.emit()
            self._force_close = True
            self.close()

    def _confirm_close_session(self) -> bool:
        box = QMessageBox(self)
        box.setWindowTitle("Close session")
        box.setText("Close this session? Recording stops and the record is closed.")
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        return box.exec() == QMessageBox.StandardButton.Yes

    def _ask_close(self) -> str:
        box = QMessageBox(self)
        box.setWindowTitle("Session still open")
        box.setText("The session is still open.")
        box.setInformativeText(
            "Close the session to end the record now, or leave it open: recording stops "
            "with this window and the next start offers to recover the session.")
        close_btn = box.addButton("Close session", QMessageBox.ButtonRole.AcceptRole)
        leave_btn = box.addButton("Leave open", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Keep monitoring", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        clicked = box.clickedButton()
        if clicked is close_btn:
            return "close-session"
        if clicked is leave_btn:
            return "leave-open"
        return "cancel"

    # -- closing the window ----------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._force_close or self.session.closed:
            self.shutdown()
            event.accept()
            return
        choice = self.ask_close()
        if choice == "cancel":
            event.ignore()
            return
        if choice == "close-session":
            event.ignore()
            self.close_session(confirm=False)
            return
        self.left_open = True
        self.shutdown()
        event.accept()

    def quit_now(self) -> None:
        """Close without asking (auto-quit of the demo and smoke tests)."""
        self._force_close = True
        self.close()

    def shutdown(self) -> None:
        """Stop the timer, the bridge, the sounds and the action thread. Idempotent; the
        session itself is left as it is (closed, or open for recovery)."""
        if self._shut:
            return
        self._shut = True
        self.timer.stop()
        self.bridge.close()
        self._relay.close()
        self.notes.close_relay()
        self.sounder.shutdown()
        for sc in self._shortcuts:
            sc.setEnabled(False)
        self._actions.shutdown(wait=True)

    # -- screenshots -----------------------------------------------------------------------

    def grab_png(self, path: str | Path) -> bool:
        """Draw a fresh frame and save the window as a PNG (works offscreen)."""
        if not self._shut:
            self.frame()
        QApplication.processEvents()
        return grab_png(self, path)

    def frame_stats(self) -> dict[str, float]:
        """Median and p99 frame time in ms over the kept frames."""
        xs = sorted(self.frame_times)
        if not xs:
            return {"frames": 0, "median_ms": 0.0, "p99_ms": 0.0}
        return {"frames": len(xs), "median_ms": xs[len(xs) // 2] * 1e3,
                "p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3}


def run_app(session: Any, *, demo: bool = False, cue_library: CueLibrary | None = None,
            screenshot: str | Path | None = None, quit_after: float | None = None,
            close_on_quit: bool | None = None, settings: QSettings | None = None,
            argv: Sequence[str] | None = None, size: tuple[int, int] = (1280, 800),
            open_devices: Callable[[QWidget], object] | None = None,
            demo_note: str = "", demo_options: tuple[Sequence[str], str, float] | None = None,
            on_restart: Callable[[tuple[str, float]], object] | None = None) -> int:
    """Show the bedside window for a started ``session`` and run the Qt event loop.

    ``quit_after`` seconds (wall time) closes the window by itself, saving ``screenshot``
    first (the ``kapmonitor demo --screenshot PNG --quit-after SEC`` smoke test); a screenshot
    without ``quit_after`` is taken after 5 s. On an automatic quit the session is closed when
    ``close_on_quit`` (default: for a demo) and otherwise left open. When the event loop ends
    with the session still open (the user chose "Leave open", or the auto-quit left it), its
    threads are stopped with ``session.abandon()``: the record stays open and the next start
    offers to recover it. Returns the exit code."""
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    assert isinstance(app, QApplication)
    theme.apply_theme(app)
    if cue_library is None:
        try:
            cue_library = CueLibrary.load()
        except CueLibraryError as exc:  # a bad clinic file: run without cues, say why
            log.error("%s", exc)
            cue_library = None
    win = MainWindow(session, demo=demo, cue_library=cue_library, settings=settings,
                     open_devices=open_devices, demo_note=demo_note,
                     demo_options=demo_options)
    win.resize(*size)
    win.show()
    close_on_quit = demo if close_on_quit is None else close_on_quit
    if screenshot is not None and quit_after is None:
        quit_after = 5.0

    def auto_quit() -> None:
        if screenshot is not None:
            win.grab_png(screenshot)
        if close_on_quit and not session.closed:
            win.shutdown()
            session.close(author="kapmonitor")
        win.quit_now()

    if quit_after is not None:
        QTimer.singleShot(int(quit_after * 1000), auto_quit)
    app.setQuitOnLastWindowClosed(True)
    code = app.exec()
    win.shutdown()
    if on_restart is not None and win.demo_restart is not None:
        on_restart(win.demo_restart)
    if not session.closed:
        with contextlib.suppress(Exception):
            session.abandon()
    # delete the window now, while Qt and Python are both alive (a window left for the
    # interpreter's final garbage collection can crash it on the way out)
    win.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return int(code)
