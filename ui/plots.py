"""Trend plots on one session-time axis, and sweeping wave strips (DESIGN §6).

Why it is built this way:

- One time axis for the whole session, in minutes since the infusion start (negative in the
  baseline), shared by every trend (``setXLink``), so a BP rise lines up with the cue given
  just before it. Before the pump starts the axis counts from the session start and says so.
- The plots follow the present until the user pans or zooms (``sigRangeChangedManually``);
  from then on nothing moves under her hand. "Follow" resumes. Follow never fights the user
  because the only code that sets the range is the follow step, and it stops on the first
  manual change.
- pyqtgraph's performance checklist (CONVENTIONS 11): width-1 pens, no per-point brushes on
  continuous curves, ``setClipToView``, peak downsampling, NaN for gaps drawn as breaks
  (``connect="finite"``), bounded arrays. Each curve keeps a mirror of its ring and appends
  only what is new since the last frame; a curve whose ring version did not move is not
  touched at all, so the 30 Hz timer re-renders a trend about once per new reading.
- Markers (notes, cues, phases, alarms) are vertical lines on every plot with a short label
  on the top one. The labels are placed whenever the view moves or is resized (never per
  frame): newest first, each on the highest row of the top plot where it does not overprint
  another, as many rows as the plot's height holds, on the left of its line near the right
  edge (the newest marker is always there) so it is never cut; a label with no room left is
  hidden (its line stays, and the timeline lists every entry).
- Each plot's title and units are written inside its top-left corner, in the colours of its
  curves, instead of as a rotated axis title: a rotated title longer than a short plot (a
  1024x768 screen) is cut or runs into its neighbour's. Axes never print an SI prefix: a
  pleth strip has no unit, and "(x0.001)" on it would only mislead.
- Waves sweep like a monitor: a fixed 10-s window, new samples overwrite the old ones left
  to right with a short blank ahead of the write point, so the axis never scrolls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QGraphicsTextItem,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kapmonitor.alarm_limits import AlarmLimits
from kapmonitor.live import LiveBuffers
from kapmonitor.model import CHANNELS, Channel

from . import theme

__all__ = ["MARKER_COLOURS", "Series", "TrendPanel", "TrendPlots", "TrendRow", "WaveStrip",
           "short_label"]

_US = 1_000_000
_MIN_US = 60 * _US

pg.setConfigOptions(antialias=False, background=theme.BG, foreground=theme.TEXT_DIM,
                    useOpenGL=False)

#: Marker line colours by kind: none of them is an alarm colour except alarms' own.
MARKER_COLOURS = {
    "observation": "#8fa3bf",
    "cue": "#6fc2a8",
    "assessment": "#c6a46b",
    "phase": "#e8e8e8",
    "gap": "#9a9a9a",
}


def _tick_font() -> QFont:
    return theme.font(12)


#: pixel size of the marker labels on the top plot
MARKER_FONT_PX = 11


def corner_title(plot: pg.PlotItem, parts: list[tuple[str, str]]) -> QGraphicsTextItem:
    """Write ``parts`` ((text, colour) pairs) inside the plot's top-left corner, on the
    background colour, so a curve passing under it does not make it unreadable.

    The item is a child of the ViewBox itself, not of its data group, so it stays in the
    corner in pixel coordinates whatever the view range; it takes no mouse buttons, so a
    drag on it pans the plot as anywhere else. One QGraphicsObject (the background is the
    text's own), so Qt tells Python when the plot deletes it."""
    vb = plot.getViewBox()
    html = " \u00b7 ".join(
        f'<span style="color:{colour}">{text.replace("&", "&amp;").replace("<", "&lt;")}'
        "</span>" for text, colour in parts)
    item = QGraphicsTextItem()
    item.setHtml(f'<table cellspacing="0" cellpadding="1" bgcolor="{theme.BG}"><tr><td>'
                 f"{html}</td></tr></table>")
    item.setFont(theme.font(12, bold=True))
    item.document().setDocumentMargin(0)
    item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
    item.setParentItem(vb)
    item.setPos(3, 0)
    item.setZValue(30)
    return item


class Series:
    """One curve fed from one ring: a bounded mirror of (t_us, value) that only appends
    what is new. ``capacity`` bounds memory (CONVENTIONS 11, pyqtgraph PR #3164)."""

    def __init__(self, channel: Channel, curve: pg.PlotDataItem, capacity: int = 64_000) -> None:
        self.channel = channel
        self.curve = curve
        self.capacity = capacity
        self._t = np.empty(1024, dtype=np.int64)
        self._v = np.empty(1024, dtype=np.float64)
        self.n = 0
        self.version = -1
        self.ref_us: int | None = None

    def pending(self, live: LiveBuffers) -> bool:
        """The ring has samples this curve has not drawn."""
        ring = live.ring(self.channel)
        return ring is not None and ring.version != self.version

    def pull(self, live: LiveBuffers) -> bool:
        """Append the ring's new samples; True when there were any."""
        ring = live.ring(self.channel)
        if ring is None or ring.version == self.version:
            return False
        since = int(self._t[self.n - 1]) + 1 if self.n else None
        snap = ring.snapshot(since)
        self.version = snap.version
        k = len(snap)
        if k == 0:
            return False
        self._append(snap.t_us, snap.values)
        return True

    def _append(self, t: np.ndarray, v: np.ndarray) -> None:
        k = int(t.shape[0])
        if k >= self.capacity:
            t, v, k = t[-self.capacity:], v[-self.capacity:], self.capacity
            self.n = 0
        need = self.n + k
        if need > self.capacity:  # drop the oldest quarter (amortised, bounded)
            drop = max(need - self.capacity, self.capacity // 4)
            keep = self.n - drop
            self._t[:keep] = self._t[drop:self.n]
            self._v[:keep] = self._v[drop:self.n]
            self.n = keep
            need = self.n + k
        if need > self._t.shape[0]:
            size = min(self.capacity, max(need, 2 * self._t.shape[0]))
            t2 = np.empty(size, dtype=np.int64)
            v2 = np.empty(size, dtype=np.float64)
            t2[: self.n] = self._t[: self.n]
            v2[: self.n] = self._v[: self.n]
            self._t, self._v = t2, v2
        self._t[self.n:need] = t
        self._v[self.n:need] = v
        self.n = need

    def replace(self, t_us: np.ndarray, values: np.ndarray) -> None:
        """Take whole arrays instead of a ring (replay: a recorded channel, decimated by
        the caller); the newest ``capacity`` samples are kept."""
        self.n = 0
        self._append(np.asarray(t_us, dtype=np.int64), np.asarray(values, dtype=np.float64))

    def redraw(self, ref_us: int) -> None:
        if self.n == 0:
            self.curve.setData([], [])
            return
        x = (self._t[: self.n] - ref_us) / _MIN_US
        self.curve.setData(x, self._v[: self.n])
        self.ref_us = ref_us

    @property
    def first_t_us(self) -> int | None:
        return int(self._t[0]) if self.n else None

    @property
    def last_t_us(self) -> int | None:
        return int(self._t[self.n - 1]) if self.n else None


@dataclass
class TrendRow:
    """One stacked plot: its title, channels (with line styles) and a fixed y range
    (monitors use fixed scales: a number's height means the same all session).
    ``legend``: the title as drawn in the plot's corner, (text with units, channel whose
    colour it takes) per part; by default the title in the first channel's colour."""

    title: str
    channels: tuple[Channel, ...]
    y_range: tuple[float, float]
    styles: dict[Channel, dict] = field(default_factory=dict)
    limit_channels: tuple[Channel, ...] = ()
    legend: tuple[tuple[str, Channel], ...] = ()

    def legend_parts(self) -> list[tuple[str, str]]:
        parts = self.legend or ((self.title, self.channels[0]),)
        return [(text, theme.PARAM_COLOURS[ch]) for text, ch in parts]


DEFAULT_ROWS: tuple[TrendRow, ...] = (
    TrendRow("HR / PR", (Channel.HR, Channel.PULSE), (30, 170),
             {Channel.PULSE: {"alpha": 110}}, (Channel.HR,),
             legend=(("HR / PR  /min", Channel.HR),)),
    TrendRow("SpO\u2082 %", (Channel.SPO2,), (80, 101), limit_channels=(Channel.SPO2,)),
    TrendRow("NIBP mmHg", (Channel.NIBP_SYS, Channel.NIBP_MEAN, Channel.NIBP_DIA), (30, 220),
             {Channel.NIBP_MEAN: {"alpha": 110},
              Channel.NIBP_SYS: {"symbol": "t1"}, Channel.NIBP_DIA: {"symbol": "t"}},
             (Channel.NIBP_SYS, Channel.NIBP_DIA), legend=(("NIBP mmHg  \u25b2 sys  "
                                                            "\u25bc dia", Channel.NIBP_SYS),)),
    TrendRow("RR \u00b7 EtCO\u2082", (Channel.RR, Channel.ETCO2), (0, 60),
             legend=(("RR /min", Channel.RR), ("EtCO\u2082 mmHg", Channel.ETCO2))),
)


class TrendPlots(pg.GraphicsLayoutWidget):
    """The stacked trends. ``refresh(live, now_us, ref_us)`` is called every frame."""

    #: True when following the present; False after the user panned or zoomed.
    followChanged = Signal(bool)

    def __init__(self, rows: tuple[TrendRow, ...] = DEFAULT_ROWS,
                 limits: AlarmLimits | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(theme.BG)
        self.ci.layout.setSpacing(2)
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.plots: list[pg.PlotItem] = []
        self.series: list[Series] = []
        self._series_plot: list[int] = []
        self.following = True
        self.window_min: float | None = None  # None: the whole session
        self._ref_us: int | None = None
        self._x_now = 0.0
        self._x_first: float | None = None
        self._last_follow_range: tuple[float, float, object] | None = None
        self._follow_due_us: int | None = None
        self._last_redraw_us = 0
        self._markers: list[tuple[int, list[pg.InfiniteLine]]] = []
        self._marker_slot = 0
        #: markers whose label this class places (added without a slot): (t_us, line, width)
        self._placed: list[tuple[int, pg.InfiniteLine, float]] = []
        self._cursor_lines: list[pg.InfiniteLine] | None = None
        self.redraws = 0
        #: label placements done (a test checks they follow view changes, not frames)
        self.placements = 0
        self.titles: list[QGraphicsTextItem] = []
        for i, row in enumerate(rows):
            plot = self.addPlot(row=i, col=0)
            self._style_plot(plot, row, last=(i == len(rows) - 1))
            self.titles.append(corner_title(plot, row.legend_parts()))
            if self.plots:
                plot.setXLink(self.plots[0])
            self.plots.append(plot)
            for ch in row.channels:
                style = row.styles.get(ch, {})
                colour = QColor(theme.PARAM_COLOURS[ch])
                # Secondary curves are dimmer, never dashed: Qt strokes a dash pattern
                # segment by segment, which costs tens of ms on a 4-hour trend.
                line_colour = QColor(colour)
                line_colour.setAlpha(style.get("alpha", 255))
                pen = pg.mkPen(line_colour, width=1)
                kwargs = {}
                if "symbol" in style:  # NIBP: a handful of discrete points per hour
                    kwargs = {"symbol": style["symbol"], "symbolSize": 7,
                              "symbolPen": None, "symbolBrush": colour}
                curve = pg.PlotDataItem(pen=pen, connect="finite", name=CHANNELS[ch].label,
                                        **kwargs)
                curve.setClipToView(True)
                curve.setDownsampling(auto=True, method="peak")
                plot.addItem(curve)
                self.series.append(Series(ch, curve))
                self._series_plot.append(i)
            if limits is not None:
                for ch in row.limit_channels:
                    lim = limits.channels.get(ch)
                    if lim is None:
                        continue
                    for th in (lim.low, lim.high):
                        if th is None:
                            continue
                        c = QColor(theme.PARAM_COLOURS[ch])
                        c.setAlpha(70)  # solid and faint: a dash pattern costs ms per paint
                        plot.addItem(pg.InfiniteLine(pos=th.value, angle=0,
                                                     pen=pg.mkPen(c, width=1)))
            plot.getViewBox().sigRangeChangedManually.connect(self._user_moved)
        top = self.plots[0].getViewBox()
        top.sigXRangeChanged.connect(self.place_labels)
        top.sigResized.connect(self.place_labels)

    def _style_plot(self, plot: pg.PlotItem, row: TrendRow, *, last: bool) -> None:
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setMouseEnabled(x=True, y=False)
        plot.setYRange(*row.y_range, padding=0)
        plot.enableAutoRange(x=False, y=False)
        left = plot.getAxis("left")
        left.setWidth(36)
        left.enableAutoSIPrefix(False)
        left.setTickFont(_tick_font())
        left.setTextPen(pg.mkPen(theme.TEXT_DIM))
        left.setPen(pg.mkPen(theme.BORDER))
        bottom = plot.getAxis("bottom")
        bottom.enableAutoSIPrefix(False)
        bottom.setPen(pg.mkPen(theme.BORDER))
        bottom.setTextPen(pg.mkPen(theme.TEXT_DIM))
        bottom.setTickFont(_tick_font())
        if not last:
            plot.hideAxis("bottom")
        else:
            bottom.setLabel("min since infusion start", color=theme.TEXT_DIM,
                            **{"font-size": "11px"})

    # -- follow ------------------------------------------------------------------------------

    def _user_moved(self, *_: object) -> None:
        if self.following:
            self.following = False
            self.followChanged.emit(False)

    def follow(self, window_min: float | None = None, *, keep_window: bool = False) -> None:
        """Resume following the present, showing the whole session (None) or the last
        ``window_min`` minutes."""
        if not keep_window:
            self.window_min = window_min
        was = self.following
        self.following = True
        self._last_follow_range = None
        self._apply_follow()
        if not was:
            self.followChanged.emit(True)

    def _apply_follow(self) -> None:
        """Keep the present in view, moving the range in steps: the right edge is put a
        margin (5 % of the span) ahead of now and moves only when now reaches it, so the
        trends (axes, grid, every curve) re-render a few times a minute, not every frame."""
        if not self.following:
            return
        right = self._x_now
        first = self._x_first if self._x_first is not None else right - 1.0
        whole = self.window_min is None
        span = max(right - first, 5.0) if whole else float(self.window_min)  # type: ignore[arg-type]
        pad = max(span * 0.05, 0.5)
        prev = self._last_follow_range
        key = (self.window_min, first if whole else None)
        if prev is not None and prev[2] == key and right <= prev[1] - 0.02 * pad:
            return
        hi = right + pad
        lo = (first - 0.01 * span) if whole else hi - span - pad
        self._last_follow_range = (lo, hi, key)
        ref = self._ref_us if self._ref_us is not None else 0
        self._follow_due_us = ref + int((hi - 0.02 * pad) * _MIN_US)
        self.plots[0].getViewBox().setXRange(lo, hi, padding=0)

    def pending(self, live: LiveBuffers, now_us: int) -> bool:
        """New samples for a curve, or the present has reached the follow margin: the
        main window uses this to spread the heavy redraws over frames."""
        if self.following and (self._follow_due_us is None or now_us >= self._follow_due_us):
            return True
        if now_us - self._last_redraw_us < self.min_redraw_interval_us():
            return False
        return any(s.pending(live) for s in self.series)

    def min_redraw_interval_us(self) -> int:
        """How long a new sample may wait before the trends are re-rendered: the time one
        pixel covers (a 4-hour view moves one pixel every ~25 s, so redrawing it every
        second changes nothing on the screen), at least 1 s and at most 20 s."""
        (x0, x1), _ = self.plots[0].getViewBox().viewRange()
        width_px = max(50.0, float(self.plots[0].getViewBox().width()))
        per_px_us = (x1 - x0) * _MIN_US / width_px
        return int(min(max(per_px_us, 1 * _US), 20 * _US))

    # -- data --------------------------------------------------------------------------------

    def set_reference(self, ref_us: int, *, infusion_started: bool) -> None:
        """The time that is x = 0: the infusion start once known, else the session start
        (then the axis says so). Redraws every curve and marker when it changes."""
        if ref_us == self._ref_us:
            return
        old = self._ref_us
        self._ref_us = ref_us
        label = ("min since infusion start" if infusion_started
                 else "min since session start (baseline; infusion not started)")
        self.plots[-1].getAxis("bottom").setLabel(label, color=theme.TEXT_DIM,
                                                  **{"font-size": "11px"})
        for s in self.series:
            s.redraw(ref_us)
        for t_us, lines in self._markers:
            for line in lines:
                line.setValue((t_us - ref_us) / _MIN_US)
        if old is not None and not self.following:
            shift = (old - ref_us) / _MIN_US
            vb = self.plots[0].getViewBox()
            (x0, x1), _ = vb.viewRange()
            vb.setXRange(x0 + shift, x1 + shift, padding=0)
        self._last_follow_range = None
        self.place_labels()

    def refresh(self, live: LiveBuffers, now_us: int) -> int:
        """Pull new samples into the curves that have them; move the follow window.
        Returns how many curves were redrawn."""
        ref = self._ref_us if self._ref_us is not None else now_us
        n = 0
        for s in self.series:
            if s.pull(live):
                s.redraw(ref)
                n += 1
                first = s.first_t_us
                if first is not None:
                    x = (first - ref) / _MIN_US
                    self._x_first = x if self._x_first is None else min(self._x_first, x)
        self._x_now = (now_us - ref) / _MIN_US
        self._apply_follow()
        self.redraws += n
        if n:
            self._last_redraw_us = now_us
        return n

    # -- recorded data (replay) -------------------------------------------------------------

    def set_series(self, channel: Channel, t_us: np.ndarray, values: np.ndarray) -> None:
        """Give a channel's curve whole arrays (a recorded session) instead of a ring; the
        live ``refresh`` is not used then. x is relative to the reference time."""
        for s in self.series:
            if s.channel is channel:
                s.replace(t_us, values)
                s.redraw(self._ref_us if self._ref_us is not None else 0)
                first = s.first_t_us
                if first is not None and self._ref_us is not None:
                    x = (first - self._ref_us) / _MIN_US
                    self._x_first = x if self._x_first is None else min(self._x_first, x)

    def set_cursor(self, t_us: int | None, colour: str = "#4c8dff") -> None:
        """A vertical time cursor across every plot (replay); None hides it. Moving it
        repaints the plots but touches no curve."""
        lines = self._cursor_lines
        if lines is None:
            lines = []
            for plot in self.plots:
                line = pg.InfiniteLine(pos=0, angle=90, movable=False,
                                       pen=pg.mkPen(colour, width=2))
                line.setZValue(50)
                plot.addItem(line, ignoreBounds=True)
                lines.append(line)
            self._cursor_lines = lines
        ref = self._ref_us if self._ref_us is not None else 0
        for line in lines:
            line.setVisible(t_us is not None)
            if t_us is not None:
                line.setValue((t_us - ref) / _MIN_US)

    def cursor_x(self) -> float | None:
        lines = self._cursor_lines
        return float(lines[0].value()) if lines and lines[0].isVisible() else None

    def set_view_us(self, lo_us: int, hi_us: int) -> None:
        """Show session times ``lo_us``..``hi_us`` (replay; stops following)."""
        ref = self._ref_us if self._ref_us is not None else 0
        self.following = False
        self.plots[0].getViewBox().setXRange((lo_us - ref) / _MIN_US, (hi_us - ref) / _MIN_US,
                                             padding=0)

    def view_us(self) -> tuple[int, int]:
        """The session times at the left and right edges of the trends."""
        ref = self._ref_us if self._ref_us is not None else 0
        (x0, x1), _ = self.plots[0].getViewBox().viewRange()
        return ref + int(x0 * _MIN_US), ref + int(x1 * _MIN_US)

    # -- markers -----------------------------------------------------------------------------

    #: label heights on the top plot (fractions of its height), top first, for markers
    #: added with an explicit ``slot`` (the replay window places its own labels)
    MARKER_SLOTS = (0.97, 0.83, 0.69, 0.55)

    def add_marker(self, t_us: int, label: str, colour: str, *,
                   slot: int | None = None) -> list[pg.InfiniteLine]:
        """A vertical line at ``t_us`` on every plot, with a short label on the top one.
        Without ``slot`` the label is placed by :meth:`place_labels` (and re-placed when the
        view moves); with one, it sits at that of ``MARKER_SLOTS`` and its owner places it.
        An empty label draws the line only."""
        ref = self._ref_us if self._ref_us is not None else t_us
        x = (t_us - ref) / _MIN_US
        # the label is a format string to pyqtgraph ("{value}"): braces in a note are text
        short = _short_label(label).replace("{", "{{").replace("}", "}}")
        lines = []
        auto = slot is None
        if slot is None:
            slot = self._marker_slot
            self._marker_slot += 1
        position = self.MARKER_SLOTS[slot % len(self.MARKER_SLOTS)]
        for i, plot in enumerate(self.plots):
            c = QColor(colour)
            c.setAlpha(115)
            kwargs: dict = {}
            if i == 0 and short:
                kwargs = {"label": short, "labelOpts": {
                    "position": position, "color": colour, "anchors": [(0, 0.5), (0, 0.5)],
                    "fill": pg.mkBrush(theme.BG)}}
            line = pg.InfiniteLine(pos=x, angle=90, movable=False, pen=pg.mkPen(c, width=1),
                                   **kwargs)
            if i == 0 and getattr(line, "label", None) is not None:
                line.label.setFont(theme.font(MARKER_FONT_PX))
                line.label.textItem.document().setDocumentMargin(1)
                line.label.updateTextPos()
            plot.addItem(line, ignoreBounds=True)
            lines.append(line)
        self._markers.append((t_us, lines))
        if auto and getattr(lines[0], "label", None) is not None:
            self._placed.append((t_us, lines[0], self._label_width(lines[0])))
            self.place_labels()
        return lines

    @staticmethod
    def _label_width(line: pg.InfiniteLine) -> float:
        return float(line.label.boundingRect().width())

    def place_labels(self, *_: object) -> None:
        """Place the labels of the markers added without a slot: newest first, each on the
        highest free row of the top plot (as many rows as its height holds), on the right
        of its line, or on the left when it would run past the right edge; hidden when no
        row has room (the line stays). Runs when the view moves or is resized or a marker
        is added, never per frame: a few dozen labels cost well under a millisecond."""
        if not self._placed:
            return
        vb = self.plots[0].getViewBox()
        (x0, x1), _ = vb.viewRange()
        w, h = float(vb.width()), float(vb.height())
        if w < 20 or h < 10 or x1 <= x0:
            return
        self.placements += 1
        row_px = max(float(line.label.boundingRect().height()) for _, line, _ in self._placed)
        row_px += 1
        # the top row is left to the plot's title in the corner; the bottom third to data
        n = max(1, min(6, int((h * 0.8 - row_px) / row_px)))
        taken: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        px_per_min = w / (x1 - x0)
        for _t_us, line, width in sorted(self._placed, key=lambda m: -m[0]):
            label = line.label
            x = (float(line.value()) - x0) * px_per_min
            if x < 0 or x > w:
                if label.isVisible():
                    label.setVisible(False)
                continue
            left = x + width > w - 2  # would run past the right edge: the other side
            span = (x - width - 2, x + 2) if left else (x - 2, x + width + 2)
            level = next((k for k in range(n) if all(
                span[1] <= a or span[0] >= b for a, b in taken[k])), None)
            if level is None:
                if label.isVisible():
                    label.setVisible(False)
                continue
            taken[level].append(span)
            anchor = (1, 0.5) if left else (0, 0.5)
            label.anchors = [anchor, anchor]
            if not label.isVisible():
                label.setVisible(True)
            label.setPosition(1.0 - (row_px * (level + 1.5)) / h)

    def update_marker(self, lines: list[pg.InfiniteLine], label: str, colour: str) -> None:
        """Relabel and recolour a marker (an alarm that escalated)."""
        for i, line in enumerate(lines):
            c = QColor(colour)
            c.setAlpha(115)
            line.setPen(pg.mkPen(c, width=1))
            if i == 0 and getattr(line, "label", None) is not None:
                line.label.setFormat(_short_label(label).replace("{", "{{").replace("}", "}}"))
                line.label.setColor(colour)
        for k, (t_us, line, _w) in enumerate(self._placed):
            if line is lines[0]:
                self._placed[k] = (t_us, line, self._label_width(line))
                self.place_labels()
                break

    @property
    def marker_count(self) -> int:
        return len(self._markers)


def short_label(label: str, n: int = 12) -> str:
    """A marker's label as drawn: one line, at most ``n`` characters."""
    label = " ".join(label.split())
    return label if len(label) <= n else label[: n - 1] + "\u2026"


_short_label = short_label


class WaveStrip(pg.PlotWidget):
    """A sweeping ``seconds``-long strip of one wave (pleth, ECG, CO2). Redraws only when
    its ring moved. The y range follows the signal slowly (pleth has no units)."""

    def __init__(self, channel: Channel, seconds: float = 10.0, *,
                 y_range: tuple[float, float] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=theme.BG)
        self.channel = channel
        self.seconds = seconds
        self.period_us = int(seconds * _US)
        self._version = -1
        self._fixed_y = y_range
        self._y: tuple[float, float] | None = None
        self.redraws = 0
        plot = self.getPlotItem()
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setMouseEnabled(x=False, y=False)
        plot.hideAxis("bottom")
        left = plot.getAxis("left")
        left.setWidth(36)
        left.setStyle(showValues=False)
        left.enableAutoSIPrefix(False)  # a unitless pleth would read "(x0.001)"
        left.setPen(pg.mkPen(theme.BORDER))
        self.title = corner_title(plot, [(CHANNELS[channel].label,
                                          theme.PARAM_COLOURS[channel])])
        plot.setXRange(0, seconds, padding=0)
        plot.enableAutoRange(x=False, y=False)
        if y_range is not None:
            plot.setYRange(*y_range, padding=0.05)
        self.curve = pg.PlotDataItem(pen=pg.mkPen(theme.PARAM_COLOURS[channel], width=1),
                                     connect="finite", skipFiniteCheck=False)
        self.curve.setClipToView(False)
        self.curve.setDownsampling(auto=True, method="peak")
        plot.addItem(self.curve)
        self.cursor = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen(theme.TEXT_FAINT, width=1))
        plot.addItem(self.cursor)

    def sweep(self, t_us: np.ndarray, v: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        """x positions in the sweep window and values with the blanks inserted: the gap
        ahead of the write point and a NaN where the sweep wraps."""
        if t_us.shape[0] == 0:
            return np.empty(0), np.empty(0)
        x = (t_us % self.period_us) / _US
        vv = v.astype(np.float64, copy=True)
        # blank just ahead of the newest sample: the previous sweep is erased there
        gap = self.seconds * 0.04
        old = t_us < (int(t_us[-1]) - self.period_us + int(gap * _US))
        vv[old] = np.nan
        wrap = np.flatnonzero(np.diff(x) < 0)
        if wrap.size:
            vv[wrap] = np.nan  # break the line where x jumps back to 0
        return x, vv

    def pending(self, live: LiveBuffers, now_us: int = 0) -> bool:
        ring = live.ring(self.channel)
        return ring is not None and ring.version != self._version

    def refresh(self, live: LiveBuffers, now_us: int) -> bool:
        ring = live.ring(self.channel)
        if ring is None or ring.version == self._version:
            return False
        self._version = ring.version
        last = ring.latest()
        if last is None:
            return False
        snap = ring.snapshot(last[0] - self.period_us)
        x, v = self.sweep(snap.t_us, snap.values, now_us)
        self.curve.setData(x, v)
        if x.size:
            self.cursor.setValue(float(x[-1]))
        if self._fixed_y is None and v.size:
            self._autoscale(v)
        self.redraws += 1
        return True

    def show_window(self, t_us: np.ndarray, v: np.ndarray, t_from_us: int,
                    cursor_us: int | None = None) -> None:
        """Replay: draw the samples of ``[t_from_us, t_from_us + seconds]`` as a still
        strip (no sweep), at full resolution, with the cursor line at ``cursor_us``."""
        x = (t_us - t_from_us) / _US
        vv = v.astype(np.float64, copy=True)
        if x.size > 1:  # a hole in the recording is a break, not a straight line
            rate = self._rate_from(t_us)
            if rate:
                vv[np.flatnonzero(np.diff(t_us) > 3 * _US / rate)] = np.nan
        self.curve.setData(x, vv)
        self.cursor.setValue((cursor_us - t_from_us) / _US if cursor_us is not None else -1)
        if self._fixed_y is None and vv.size:
            self._autoscale(vv)
        self.redraws += 1

    @staticmethod
    def _rate_from(t_us: np.ndarray) -> float | None:
        d = np.diff(t_us[: min(int(t_us.shape[0]), 64)])
        d = d[d > 0]
        return float(_US / np.median(d)) if d.size else None

    def _autoscale(self, v: np.ndarray) -> None:
        finite = v[np.isfinite(v)]
        if finite.size < 4:
            return
        lo, hi = float(finite.min()), float(finite.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return
        if hi - lo < 1e-6:
            lo, hi = lo - 1, hi + 1
        cur = self._y
        # Rescale only when the signal leaves the range or shrinks to under half of it:
        # a strip that rescales every frame jitters and re-renders its axis.
        if cur is None or lo < cur[0] or hi > cur[1] or (hi - lo) < 0.5 * (cur[1] - cur[0]):
            m = (hi - lo) * 0.1
            self._y = (lo - m, hi + m)
            self.getPlotItem().setYRange(*self._y, padding=0)


class TrendPanel(QWidget):
    """The trends with their view controls (All / 60 min / 15 min / Follow), and the wave
    strips under them."""

    def __init__(self, limits: AlarmLimits | None = None,
                 waves: tuple[Channel, ...] = (Channel.PLETH, Channel.CO2_WAVE),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.trends = TrendPlots(limits=limits)
        self.waves = [WaveStrip(ch) for ch in waves]
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.setSpacing(4)
        self.view_label = theme.ElidedLabel("Trends: whole session, following")
        self.view_label.setObjectName("dim")
        bar.addWidget(self.view_label)
        bar.addStretch(1)
        self.buttons: dict[str, QPushButton] = {}
        for key, text, tip, cb in (
            ("all", "All", "whole session, following the present", lambda: self._view(None)),
            ("60", "60 min", "last 60 minutes, following", lambda: self._view(60.0)),
            ("15", "15 min", "last 15 minutes, following", lambda: self._view(15.0)),
            ("follow", "Follow \u25b6", "resume following the present (Ctrl+End)",
             lambda: self.trends.follow(keep_window=True)),
        ):
            b = QPushButton(text)
            b.setObjectName("compact")
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(cb)
            bar.addWidget(b)
            self.buttons[key] = b
        self.buttons["follow"].setVisible(False)
        self.trends.followChanged.connect(self._follow_changed)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(bar)
        lay.addWidget(self.trends, 5)
        for w in self.waves:
            w.setMinimumHeight(56)
            lay.addWidget(w, 1)

    def _view(self, window: float | None) -> None:
        self.trends.follow(window)
        self._follow_changed(True)

    def _follow_changed(self, following: bool) -> None:
        self.buttons["follow"].setVisible(not following)
        span = ("whole session" if self.trends.window_min is None
                else f"last {self.trends.window_min:g} min")
        self.view_label.setText(f"Trends: {span}, following" if following
                                else "Trends: paused on your view \u2014 Follow to resume")

    def refresh(self, live: LiveBuffers, now_us: int) -> int:
        n = self.trends.refresh(live, now_us)
        for w in self.waves:
            n += w.refresh(live, now_us)
        return n

    def add_marker(self, t_us: int, label: str, colour: str) -> list[pg.InfiniteLine]:
        return self.trends.add_marker(t_us, label, colour)

    def set_reference(self, ref_us: int, *, infusion_started: bool) -> None:
        self.trends.set_reference(ref_us, infusion_started=infusion_started)

