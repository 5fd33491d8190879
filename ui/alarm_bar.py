"""The alarm bar: what is alarming now, and the two things a nurse does about it.

Why it looks like this (clinical.md §5.1, §5.3):

- Each active alarm is a chip with the monitor's asterisks (``***`` high, ``**`` medium,
  ``*`` low) and the engine's own message ("SpO2 LOW 85 % (< 88)"), highest priority first.
  High and medium chips flash their alarm colour (2 Hz and 0.5 Hz, 50 % duty), low ones are
  steady cyan: the bar is the one place besides a tile where alarm colours fill an area.
- An acknowledged alarm stays visible ("ack"), because acknowledging stops the sound for
  that condition, not the visual signal. A latched alarm (ended, high priority, never
  acknowledged) stays until acknowledged, marked "ended".
- "Consider hold" advisories (§4.3) are silent but must not be missed: they get their own
  outlined chip with the words CONSIDER HOLD.
- Acknowledge (Ctrl+K) acts on every alarm shown; Audio pause (Ctrl+P) silences for the
  engine's default 2 min while the visual signals continue, and the bar then shows a
  crossed bell with the countdown "AUDIO PAUSED 1:47" (§5.3).
- The bar has a fixed height whether or not alarms are active, so nothing else on the
  screen jumps when an alarm comes and goes. The main window sets that height in
  proportion to its own.
- A chip's message is read from across the room, so its headline (asterisks, parameter,
  condition and value: "*** SpO2 LOW 85 %") is fitted to the chip, as tall as the chip
  allows and only smaller when it would not fit its width; the details after it ("(< 88):
  escalated to high — ack") follow at half that size in whatever width is left, elided,
  whole in the tooltip. An advisory's text is fitted whole (its reason is its message).
  The fit is done when the chip is resized or its alarm changes, never per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QResizeEvent,
)
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import ActiveAlarm, AlarmCommandError, AlarmKind, AudioMode, AudioState

from . import theme

__all__ = ["AlarmBar", "AlarmChip", "BellIcon", "by_channel", "chip_text", "countdown",
           "split_headline"]

MAX_CHIPS = 3


def countdown(seconds: float) -> str:
    """1:47 for 107 s (rounded up: a pause never shows 0:00 while still running)."""
    s = max(0, math.ceil(seconds))
    return f"{s // 60}:{s % 60:02d}"


def chip_text(a: ActiveAlarm) -> str:
    """'*** SpO2 LOW 85 % (< 88)'; advisories 'CONSIDER HOLD: ...'; state words after."""
    if a.kind is AlarmKind.ADVISORY:
        msg = a.message
        if msg.lower().startswith("consider hold:"):
            msg = msg.split(":", 1)[1].strip()
        text = f"CONSIDER HOLD: {msg}"
    else:
        text = f"{theme.ASTERISKS[a.priority]} {a.message}"
    if not a.present and a.latched:
        text += " \u2014 ended"
    elif a.acknowledged:
        text += " \u2014 ack"
    return text


def split_headline(text: str) -> tuple[str, str]:
    """('*** SpO2 LOW 85 %', '(< 88): escalated to high') from a chip's text: the headline
    ends before the first parenthesis or dash, or after the first colon (CONSIDER HOLD:)."""
    cut, keep = len(text), 0
    for sep, kept in ((" (", 0), (": ", 1), (" \u2014 ", 0)):
        i = text.find(sep)
        if 0 < i < cut:
            cut, keep = i, kept
    return text[:cut + keep].rstrip(), text[cut + keep:].strip()


class AlarmChip(QWidget):
    """One alarm, painted (so a flash is a repaint, not a stylesheet change)."""

    #: the headline's ink fills at most this much of the chip's inner height
    FILL = 0.84
    MIN_PX = 13
    #: the details' size relative to the headline's
    DETAIL = 0.5

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alarm: ActiveAlarm | None = None
        self.text = ""
        self._lit = True
        self._fitted: tuple[str, int, int] | None = None
        #: (text, font, x) of the headline and the details as drawn
        self._runs: list[tuple[str, QFont, float]] = []
        self._baseline = 0.0
        self.setFont(theme.font(17, bold=True, numbers=True))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumWidth(120)

    def set_alarm(self, a: ActiveAlarm | None) -> None:
        self.alarm = a
        self.text = chip_text(a) if a is not None else ""
        self.setToolTip(self._tooltip(a))
        self.setVisible(a is not None)
        self._fit()
        self.update()

    def _text_rect(self) -> QRectF:
        return QRectF(self.rect()).adjusted(10, 4, -10, -4)

    def _fit(self) -> None:
        """The headline as large as the chip allows, the details after it at half size in
        the width that is left (elided, or left out when too little is left)."""
        r = self._text_rect()
        key = (self.text, int(r.width()), int(r.height()))
        if key == self._fitted or not self.text or r.width() < 8 or r.height() < 8:
            return
        self._fitted = key
        # an advisory's headline ("CONSIDER HOLD:") says nothing without its reason
        advisory = self.alarm is not None and self.alarm.kind is AlarmKind.ADVISORY
        head, detail = (self.text, "") if advisory else split_headline(self.text)
        px = theme.fit_px([head], r.width(), r.height() * self.FILL, min_px=self.MIN_PX)
        f = theme.font(px, bold=True, numbers=True)
        self.setFont(f)
        fm = QFontMetricsF(f)
        head_shown = fm.elidedText(head, Qt.TextElideMode.ElideRight, r.width())
        ink = fm.tightBoundingRect(head_shown)
        self._baseline = r.center().y() - (ink.top() + ink.bottom()) / 2
        x = r.left()
        self._runs = [(head_shown, f, x)]
        if detail and head_shown == head:
            df = theme.font(max(self.MIN_PX, round(px * self.DETAIL)), bold=True, numbers=True)
            dfm = QFontMetricsF(df)
            dx = x + fm.horizontalAdvance(head) + dfm.horizontalAdvance(" ") * 1.5
            room = r.right() - dx
            if room >= dfm.horizontalAdvance("Mmmm\u2026"):
                shown = dfm.elidedText(detail, Qt.TextElideMode.ElideRight, room)
                self._runs.append((shown, df, dx))

    @property
    def shown_text(self) -> str:
        """The text as drawn (headline, then details as far as they fit)."""
        return " ".join(t for t, _, _ in self._runs)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    @staticmethod
    def _tooltip(a: ActiveAlarm | None) -> str:
        if a is None:
            return ""
        state = ("present" if a.present else "ended (latched)") + (
            ", acknowledged" if a.acknowledged else "")
        return f"{a.message}\n{a.priority} priority, {a.kind}, {state}\nsource: {a.source or '-'}"

    def set_flash(self, t_s: float) -> None:
        lit = True
        a = self.alarm
        if a is not None and a.kind is not AlarmKind.ADVISORY:
            lit = theme.flash_on(a.priority, t_s)
        if lit != self._lit:
            self._lit = lit
            self.update()

    @property
    def lit(self) -> bool:
        return self._lit

    def paintEvent(self, event: QPaintEvent) -> None:
        a = self.alarm
        if a is None:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        r = QRectF(self.rect()).adjusted(2, 2, -2, -2)
        colour = QColor(theme.ALARM_COLOURS[a.priority])
        advisory = a.kind is AlarmKind.ADVISORY
        filled = self._lit and not advisory
        if filled:
            p.setBrush(colour)
            p.setPen(QPen(colour, 2))
            text_colour = QColor(theme.ALARM_TEXT)
        else:
            p.setBrush(QColor(theme.PANEL))
            p.setPen(QPen(colour, 3 if advisory else 2,
                          Qt.PenStyle.DashLine if advisory else Qt.PenStyle.SolidLine))
            text_colour = colour
        p.drawRoundedRect(r, 6, 6)
        p.setPen(text_colour)
        for text, f, x in self._runs:
            p.setFont(f)
            p.drawText(QPointF(x, self._baseline), text)
        p.end()


class BellIcon(QWidget):
    """A bell, crossed out when audio is paused or off (the IEC 60601-1-8 symbol idea;
    drawn, because the fonts at hand have no crossed-bell glyph)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.crossed = False
        self.colour = theme.TEXT_DIM
        self.setFixedSize(QSize(28, 28))

    def set_state(self, crossed: bool, colour: str) -> None:
        if (crossed, colour) != (self.crossed, self.colour):
            self.crossed, self.colour = crossed, colour
            self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        c = QColor(self.colour)
        p.setPen(QPen(c, 2))
        w, h = self.width(), self.height()
        path = QPainterPath()
        path.moveTo(w * 0.22, h * 0.72)
        path.cubicTo(w * 0.30, h * 0.60, w * 0.26, h * 0.22, w * 0.5, h * 0.18)
        path.cubicTo(w * 0.74, h * 0.22, w * 0.70, h * 0.60, w * 0.78, h * 0.72)
        path.closeSubpath()
        p.drawPath(path)
        p.drawEllipse(QPointF(w * 0.5, h * 0.82), w * 0.07, h * 0.07)
        if self.crossed:
            p.setPen(QPen(c, 2.5))
            p.drawLine(QPointF(w * 0.12, h * 0.12), QPointF(w * 0.88, h * 0.9))
        p.end()


class AlarmBar(QFrame):
    """Active alarms, audio state, Acknowledge and Audio pause."""

    #: the user asked to acknowledge / pause; the main window calls the session
    acknowledgeRequested = Signal()
    audioPauseRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        self.setFixedHeight(58)
        self.alarms: list[ActiveAlarm] = []
        self.chips = [AlarmChip() for _ in range(MAX_CHIPS)]
        self.none_label = QLabel("No active alarms")
        self.none_label.setFont(theme.font(16))
        self.none_label.setStyleSheet(f"color: {theme.TEXT_FAINT};")
        self.more = QLabel("")
        self.more.setFont(theme.font(15, bold=True))
        self.more.setStyleSheet(f"color: {theme.TEXT};")
        self.bell = BellIcon()
        self.audio_label = QLabel("")
        self.audio_label.setFont(theme.font(14, bold=True))
        self.audio_label.setWordWrap(True)
        self.audio_label.setMinimumWidth(96)
        self.audio_label.setMaximumWidth(150)
        self.ack = QPushButton("Acknowledge\nCtrl+K")
        self.ack.setToolTip("Acknowledge every alarm shown: its sound stops, the visual "
                            "signal stays while the condition lasts (Ctrl+K)")
        self.pause = QPushButton("Audio pause 2:00\nCtrl+P")
        self.pause.setToolTip("Silence alarm sounds for 2 minutes; visual signals continue. "
                              "A new higher-priority alarm breaks through (Ctrl+P)")
        for b in (self.ack, self.pause):
            b.setFont(theme.font(14, bold=True))
            b.setMinimumHeight(46)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keep the note field's focus
        self.ack.clicked.connect(self.acknowledgeRequested.emit)
        self.pause.clicked.connect(self.audioPauseRequested.emit)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(6, 3, 6, 3)
        lay.setSpacing(6)
        lay.addWidget(self.none_label, 1)
        for i, c in enumerate(self.chips):
            lay.addWidget(c, 3 if i == 0 else 2)  # the most urgent alarm gets the most room
            c.setVisible(False)
        lay.addWidget(self.more)
        lay.addWidget(self.bell)
        lay.addWidget(self.audio_label)
        lay.addWidget(self.ack)
        lay.addWidget(self.pause)
        self._audio: AudioState | None = None
        self._audio_text = ""
        self._small_px = 0
        self.set_alarms([])

    def resizeEvent(self, event: QResizeEvent) -> None:
        """The words beside the chips (no alarms, audio state, the two buttons) grow a
        little with the bar; the chips fit their own text."""
        super().resizeEvent(event)
        px = max(14, min(20, round(self.height() * 0.24)))
        if px == self._small_px:
            return
        self._small_px = px
        self.none_label.setFont(theme.font(px + 2))
        self.more.setFont(theme.font(px + 1, bold=True))
        self.audio_label.setFont(theme.font(px, bold=True))
        for b in (self.ack, self.pause):
            b.setFont(theme.font(px, bold=True))
        self.audio_label.setMinimumWidth(round(px * 6.5))  # "no audio output" on 2 lines
        self.audio_label.setMaximumWidth(round(px * 10))
        side = max(28, min(40, round(self.height() * 0.45)))
        self.bell.setFixedSize(QSize(side, side))

    # -- state -------------------------------------------------------------------------------

    def set_alarms(self, alarms: Sequence[ActiveAlarm]) -> None:
        """Highest priority first (the engine's order); the first three get chips."""
        self.alarms = list(alarms)
        shown = self.alarms[:MAX_CHIPS]
        for chip, a in zip(self.chips, [*shown, *[None] * (MAX_CHIPS - len(shown))],
                           strict=True):
            chip.set_alarm(a)
        extra = self.alarms[MAX_CHIPS:]
        self.more.setText(f"+{len(extra)} more" if extra else "")
        self.more.setToolTip("\n".join(chip_text(a) for a in extra))
        self.none_label.setVisible(not self.alarms)
        self.ack.setEnabled(any(
            (a.present and not a.acknowledged and a.kind is not AlarmKind.ADVISORY)
            or (a.latched and not a.present) for a in self.alarms))

    def set_audio(self, state: AudioState | None, *, output: str = "",
                  muted: bool = False) -> None:
        """Audio status: paused with countdown, sounding, silent; ``output`` explains a
        missing sound device, ``muted`` a room muted in the settings."""
        self._audio = state
        if state is not None and state.mode is AudioMode.PAUSED:
            remaining = state.paused_remaining_s or 0.0
            text = f"AUDIO PAUSED {countdown(remaining)}"
            colour, crossed = theme.TEXT, True
        elif muted:
            text, colour, crossed = "AUDIO OFF (room)", theme.TEXT, True
        elif output:
            text, colour, crossed = output, theme.TEXT_DIM, True
        elif state is not None and state.mode is AudioMode.SOUNDING:
            text, colour, crossed = "sounding", theme.TEXT_DIM, False
        else:
            text, colour, crossed = "", theme.TEXT_FAINT, False
        if text != self._audio_text:
            self._audio_text = text
            self.audio_label.setText(text)
            self.audio_label.setStyleSheet(f"color: {colour};")
        self.bell.set_state(crossed, colour)

    @property
    def audio_text(self) -> str:
        return self._audio_text

    def flash(self, t_s: float) -> None:
        for c in self.chips:
            c.set_flash(t_s)

    @staticmethod
    def describe_error(exc: Exception) -> str:
        return str(exc) if isinstance(exc, AlarmCommandError) else f"{type(exc).__name__}: {exc}"


def by_channel(alarms: Sequence[ActiveAlarm]) -> dict[Any, Priority]:
    """Highest priority per channel among alarms that are not advisories (for tiles)."""
    out: dict[Any, Priority] = {}
    for a in alarms:
        if a.channel is None or a.kind is AlarmKind.ADVISORY:
            continue
        cur = out.get(a.channel)
        if cur is None or a.priority.rank > cur.rank:
            out[a.channel] = a.priority
    return out
