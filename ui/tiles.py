"""Numeric tiles: the big numbers a nurse reads from across the room (DESIGN §6).

Why they look and behave this way:

- The value is the largest thing on the screen (HR, SpO2 and BP largest of all), in its
  parameter's colour, so it reads at 2 m in a dim room; label, unit and limits are small.
  The value is a :class:`~kapmonitor.ui.theme.FitLabel`: its digits fill the tile, so a
  larger window or full screen makes the numbers larger, not the empty space around them.
  The font is fitted to the tile's widest expected value (``TileSpec.template``: "188" for
  HR), so the digits keep one size while the value changes, and only on a resize.
- A number that is no longer current must not look current. Each tile knows how fresh its
  channel must be: a continuous value older than its limit turns grey and says its age
  ("12 s ago"); no data at all shows "--"; a value the device marks probe-off or invalid
  shows "--" with the reason. NIBP is intermittent, so its age is always shown and it
  greys only when a measurement is overdue.
- A tile whose channel is in alarm flashes at the priority's rate (clinical.md §5.1): high
  red 2 Hz, medium yellow 0.5 Hz (50 % duty), low cyan steady. The tile paints its own
  background and border (no stylesheet change per flash, which would re-polish the widget
  tree 30 times a second); the frame timer tells every tile whether the flash is lit.
- Tiles read the live ring buffers and redraw only when the ring's version moved or once a
  second for the age text, so a 30 Hz timer costs almost nothing when nothing changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QWidget,
)

from kapmonitor.alarm_limits import AlarmLimits, Priority
from kapmonitor.live import LiveBuffers
from kapmonitor.model import CHANNELS, Channel, Quality

from . import theme

__all__ = ["BloodPressureTile", "NumericTile", "Tile", "TileSpec", "TilesPanel", "format_age"]

_US = 1_000_000


def format_age(age_s: float) -> str:
    """'12 s ago', '3 min ago', '2 h ago': short enough for a tile's status line."""
    if age_s < 90:
        return f"{max(0, int(age_s))} s ago"
    if age_s < 90 * 60:
        return f"{int(age_s // 60)} min ago"
    return f"{age_s / 3600:.1f} h ago"


def _fmt(value: float, precision: int) -> str:
    return f"{value:.{precision}f}"


def _limit_text(limits: AlarmLimits | None, channel: Channel) -> tuple[str, str]:
    """(high, low) limit numbers for the small limits column; '' where there is none."""
    if limits is None or channel not in limits.channels:
        return "", ""
    lim = limits.channels[channel]

    def num(th: object) -> str:
        if th is None:
            return ""
        v = th.value  # type: ignore[attr-defined]
        return f"{v:g}"

    return num(lim.high), num(lim.low)


def _reason(quality: Quality | None) -> str:
    if quality is None:
        return "no signal"
    if quality & Quality.SENSOR_OFF:
        return "probe off"
    if quality & Quality.OUT_OF_RANGE:
        return "out of range"
    if quality & Quality.INVALID:
        return "invalid"
    return "no signal"


@dataclass(frozen=True)
class TileSpec:
    """One tile: which channels feed it, how big and how fresh.

    ``channels`` are tried in order: HR from the ECG, then pulse rate from the oximeter
    (``alt_labels`` names the fallback). ``stale_s``: older than this, the value is shown
    grey with its age. ``always_age``: intermittent measurements (NIBP) show their age.
    ``value_px`` is the value's nominal size (what the tile asks of the layout; 70 px and
    up makes a full-width tile); the digits then grow or shrink with the tile, fitted to
    ``template``, the widest value the tile is expected to show."""

    key: str
    label: str
    unit: str
    channels: tuple[Channel, ...]
    value_px: int
    stale_s: float = 10.0
    always_age: bool = False
    alt_labels: tuple[str, ...] = ()
    template: str = "888"

    @property
    def colour(self) -> str:
        return theme.PARAM_COLOURS[self.channels[0]]


class Tile(QFrame):
    """Base: the painted background/border that carries the alarm signal."""

    def __init__(self, spec: TileSpec, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.setObjectName(f"tile-{spec.key}")
        self.alarm: Priority | None = None
        self._lit = False
        self._small_px = 0
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        #: for tests and diagnostics: the text on show, the reading time it came from, the
        #: host time at which it was first shown
        self.shown_text = ""
        self.shown_value_t_us: int | None = None
        self.shown_at_us: int | None = None

    # -- alarm signal ----------------------------------------------------------------------

    def set_alarm(self, priority: Priority | None) -> None:
        if priority != self.alarm:
            self.alarm = priority
            self._apply_text_colour()
            self.update()

    def set_flash(self, t_s: float) -> None:
        """Called every frame: repaint only when the lit state flips."""
        lit = self.alarm is not None and theme.flash_on(self.alarm, t_s)
        if lit != self._lit:
            self._lit = lit
            self._apply_text_colour()
            self.update()

    @property
    def lit(self) -> bool:
        return self._lit

    # -- size --------------------------------------------------------------------------------

    def small_px(self) -> int:
        """Pixel size of the label, unit, limits and status text for the tile's size: they
        grow a little with the tile (from 12 to 22 px) but stay small beside the value."""
        return max(12, min(22, round(min(self.height() * 0.09, self.width() * 0.055))))

    def _scale_small(self, px: int) -> None:  # overridden
        pass

    def _head(self) -> list[QLabel]:  # overridden: the head row's labels, left to right
        return []

    def fit_head(self) -> None:
        """Show the unit beside the label only when the head row has room for all of it
        (a narrow tile on a small screen): a unit cut in half reads as a different one.
        The trend titles name the units too."""
        labels = self._head()
        if len(labels) < 2:
            return
        unit = labels[1]
        lay = self.layout()
        lm = lay.contentsMargins() if lay is not None else self.contentsMargins()
        need = sum(lab.sizeHint().width() for lab in labels if lab.text()) + 6 * len(labels)
        unit.setVisible(need <= self.width() - lm.left() - lm.right())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        px = self.small_px()
        if px != self._small_px:
            self._small_px = px
            self._scale_small(px)
        self.fit_head()

    def _filled(self) -> bool:
        """Background filled with the alarm colour (high/medium when lit)."""
        return self._lit and self.alarm in (Priority.HIGH, Priority.MEDIUM)

    def _apply_text_colour(self) -> None:  # overridden
        pass

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        r = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        p.fillRect(self.rect(), QColor(theme.BG))
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self.alarm is not None:
            colour = QColor(theme.ALARM_COLOURS[self.alarm])
            if self._filled():
                p.setBrush(colour)
                p.setPen(QPen(colour, 2))
            else:
                p.setBrush(QColor(theme.PANEL))
                p.setPen(QPen(colour, 4 if self.alarm is Priority.LOW or self._lit else 2))
        else:
            p.setBrush(QColor(theme.PANEL))
            p.setPen(QPen(QColor(theme.BORDER), 1))
        p.drawRoundedRect(r.adjusted(1, 1, -1, -1), 6, 6)
        p.end()


def _label(text: str, px: int, colour: str, *, bold: bool = False, numbers: bool = False,
           align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft) -> QLabel:
    lab = QLabel(text)
    lab.setFont(theme.font(px, bold=bold, numbers=numbers))
    lab.setStyleSheet(f"color: {colour}; background: transparent;")
    lab.setAlignment(align | Qt.AlignmentFlag.AlignVCenter)
    return lab


class NumericTile(Tile):
    """One value: label, unit, limits, the value, a status line (age or reason)."""

    def __init__(self, spec: TileSpec, limits: AlarmLimits | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(spec, parent)
        self.limits = limits
        self._channel = spec.channels[0]
        self._versions: dict[Channel, int] = {}
        self._last_age_bucket = -1
        self._stale = False
        self._colour = spec.colour
        small = max(13, spec.value_px // 6)
        self.name = _label(spec.label, small + 3, spec.colour, bold=True)
        self.unit = _label(spec.unit, small, theme.TEXT_DIM)
        self.value = theme.FitLabel("--", template=spec.template, nominal_px=spec.value_px,
                                    min_px=16)
        self.value.setStyleSheet(f"color: {spec.colour}; background: transparent;")
        self.status = _label("no data", small, theme.TEXT_DIM)
        hi, lo = _limit_text(limits, self._channel)
        self.lim_hi = _label(hi, small, theme.TEXT_DIM, align=Qt.AlignmentFlag.AlignRight)
        self.lim_lo = _label(lo, small, theme.TEXT_DIM, align=Qt.AlignmentFlag.AlignRight)
        self.lim_hi.setToolTip("high alarm limit")
        self.lim_lo.setToolTip("low alarm limit")
        if not (hi or lo):
            self.lim_hi.setVisible(False)
            self.lim_lo.setVisible(False)
        grid = QGridLayout(self)
        m = 10 if spec.value_px >= 70 else 6
        grid.setContentsMargins(m, 6, m, 6)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(0)
        head = QHBoxLayout()
        head.setSpacing(6)
        head.addWidget(self.name)
        head.addWidget(self.unit)
        head.addStretch(1)
        grid.addLayout(head, 0, 0, 1, 2)
        grid.addWidget(self.value, 1, 0, 2, 1)
        grid.addWidget(self.lim_hi, 1, 1, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.lim_lo, 2, 1, Qt.AlignmentFlag.AlignBottom)
        grid.addWidget(self.status, 3, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setRowStretch(1, 1)
        grid.setRowStretch(2, 1)

    def _scale_small(self, px: int) -> None:
        self.name.setFont(theme.font(px + 3, bold=True))
        for lab in (self.unit, self.status, self.lim_hi, self.lim_lo):
            lab.setFont(theme.font(px))

    def _head(self) -> list[QLabel]:
        return [self.name, self.unit]

    def _apply_text_colour(self) -> None:
        filled = self._filled()
        value_colour = theme.ALARM_TEXT if filled else (theme.STALE if self._stale
                                                        else self._colour)
        self.value.setStyleSheet(f"color: {value_colour}; background: transparent;")
        other = theme.ALARM_TEXT if filled else theme.TEXT_DIM
        for lab in (self.unit, self.status, self.lim_hi, self.lim_lo):
            lab.setStyleSheet(f"color: {other}; background: transparent;")
        self.name.setStyleSheet(
            f"color: {theme.ALARM_TEXT if filled else self._colour}; background: transparent;")

    def channel(self) -> Channel:
        """The channel currently shown (HR, or pulse rate when there is no ECG)."""
        return self._channel

    def _pick(self, live: LiveBuffers, now_us: int) -> int:
        """Index of the first channel with a fresh, valid value; else the first with data."""
        first_with_data = -1
        for i, ch in enumerate(self.spec.channels):
            last = live.latest(ch)
            if last is None:
                continue
            if first_with_data < 0:
                first_with_data = i
            t, v = last
            if not math.isnan(v) and (now_us - t) <= self.spec.stale_s * _US:
                return i
        return max(first_with_data, 0)

    def refresh(self, live: LiveBuffers, now_us: int) -> bool:
        """Redraw from the live buffers if the data moved or the age text must change.
        Returns True when something was redrawn."""
        idx = self._pick(live, now_us) if len(self.spec.channels) > 1 else 0
        ch = self.spec.channels[idx]
        ring = live.ring(ch)
        version = ring.version if ring is not None else -1
        last = ring.latest() if ring is not None else None
        age_s = (now_us - last[0]) / _US if last is not None else math.inf
        bucket = int(age_s) if math.isfinite(age_s) else -2
        moved = (ch != self._channel or self._versions.get(ch) != version)
        if not moved and bucket == self._last_age_bucket:
            return False
        self._versions[ch] = version
        self._last_age_bucket = bucket
        if ch != self._channel:
            self._channel = ch
            label = self.spec.label if idx == 0 or not self.spec.alt_labels else (
                self.spec.alt_labels[min(idx - 1, len(self.spec.alt_labels) - 1)])
            self.name.setText(label)
            self.fit_head()
            hi, lo = _limit_text(self.limits, ch)
            self.lim_hi.setText(hi)
            self.lim_lo.setText(lo)
        if last is None:
            text, status, stale = "--", "no data", False
        elif math.isnan(last[1]):
            text, status, stale = "--", _reason(live.last_quality.get(ch)), False
        else:
            text = _fmt(last[1], CHANNELS[ch].precision)
            stale = age_s > self.spec.stale_s
            status = format_age(age_s) if (stale or self.spec.always_age) else ""
        self._show(text, status, stale, last[0] if last else None, now_us)
        return True

    def _show(self, text: str, status: str, stale: bool, t_us: int | None,
              now_us: int) -> None:
        if text != self.shown_text or t_us != self.shown_value_t_us:
            self.shown_text = text
            self.shown_value_t_us = t_us
            self.shown_at_us = now_us
            self.value.setText(text)
        if status != self.status.text():
            self.status.setText(status)
        if stale != self._stale:
            self._stale = stale
            self._apply_text_colour()


class BloodPressureTile(Tile):
    """NIBP as a monitor shows it: 'sys/dia' large, '(mean)' beside it, the age below.
    The three values of one measurement arrive as three readings; they are shown together
    once they belong to the same measurement (within 30 s)."""

    SAME_MEASUREMENT_S = 30.0

    def __init__(self, spec: TileSpec, limits: AlarmLimits | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(spec, parent)
        self.limits = limits
        self._versions: tuple[int, ...] = ()
        self._last_age_bucket = -1
        self._stale = False
        colour = spec.colour
        small = max(13, spec.value_px // 6)
        self.name = _label(spec.label, small + 3, colour, bold=True)
        self.unit = _label(spec.unit, small, theme.TEXT_DIM)
        self.value = theme.FitLabel("--/--", template=spec.template,
                                    nominal_px=spec.value_px, min_px=16)
        self.mean = theme.FitLabel("", template="MAP (188)", fill=0.8,
                                   nominal_px=max(24, int(spec.value_px * 0.42)), min_px=12)
        for lab in (self.value, self.mean):
            lab.setStyleSheet(f"color: {colour}; background: transparent;")
        self.mean.setToolTip("mean arterial pressure of the same measurement")
        self.status = _label("no data", small, theme.TEXT_DIM)
        sys_hi, sys_lo = _limit_text(limits, Channel.NIBP_SYS)
        dia_hi, dia_lo = _limit_text(limits, Channel.NIBP_DIA)
        self.limits_label = _label(f"{sys_hi}/{dia_hi}   {sys_lo}/{dia_lo}", small,
                                   theme.TEXT_DIM, align=Qt.AlignmentFlag.AlignRight)
        self.limits_label.setToolTip("alarm limits: high sys/dia, low sys/dia")
        grid = QGridLayout(self)
        grid.setContentsMargins(10, 6, 10, 6)
        grid.setVerticalSpacing(0)
        head = QHBoxLayout()
        head.setSpacing(6)
        head.addWidget(self.name)
        head.addWidget(self.unit)
        head.addStretch(1)
        head.addWidget(self.limits_label)
        grid.addLayout(head, 0, 0, 1, 2)
        grid.addWidget(self.value, 1, 0, 1, 2)
        grid.addWidget(self.status, 2, 0, Qt.AlignmentFlag.AlignBottom)
        grid.addWidget(self.mean, 2, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(1, 3)
        grid.setRowStretch(2, 1)

    def _scale_small(self, px: int) -> None:
        self.name.setFont(theme.font(px + 3, bold=True))
        for lab in (self.unit, self.status, self.limits_label):
            lab.setFont(theme.font(px))

    def _head(self) -> list[QLabel]:
        return [self.name, self.unit, self.limits_label]

    def _apply_text_colour(self) -> None:
        filled = self._filled()
        c = theme.ALARM_TEXT if filled else (theme.STALE if self._stale else self.spec.colour)
        for lab in (self.value, self.mean, self.name):
            lab.setStyleSheet(f"color: {c}; background: transparent;")
        other = theme.ALARM_TEXT if filled else theme.TEXT_DIM
        for lab in (self.unit, self.status, self.limits_label):
            lab.setStyleSheet(f"color: {other}; background: transparent;")

    def refresh(self, live: LiveBuffers, now_us: int) -> bool:
        chans = (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN)
        rings = [live.ring(c) for c in chans]
        versions = tuple(r.version if r is not None else -1 for r in rings)
        lasts = [r.latest() if r is not None else None for r in rings]
        newest = max((x[0] for x in lasts if x is not None), default=None)
        age_s = (now_us - newest) / _US if newest is not None else math.inf
        # NIBP ages in whole minutes past 90 s; refresh the text once a second anyway.
        bucket = int(age_s) if math.isfinite(age_s) else -2
        if versions == self._versions and bucket == self._last_age_bucket:
            return False
        self._versions = versions
        self._last_age_bucket = bucket
        sys_, dia, mean = lasts

        def part(x: tuple[int, float] | None) -> str:
            if x is None or math.isnan(x[1]) or newest is None:
                return "--"
            if (newest - x[0]) / _US > self.SAME_MEASUREMENT_S:
                return "--"  # from an older measurement: never mix two cuffs
            return f"{x[1]:.0f}"

        if newest is None:
            text, mean_text, status, stale = "--/--", "", "no data", False
        else:
            text = f"{part(sys_)}/{part(dia)}"
            m = part(mean)
            mean_text = f"MAP ({m})" if m != "--" else ""
            stale = age_s > self.spec.stale_s
            if text == "--/--":
                status = _reason(live.last_quality.get(Channel.NIBP_SYS))
            else:
                status = format_age(age_s)
        if text != self.shown_text or newest != self.shown_value_t_us:
            self.shown_text = text
            self.shown_value_t_us = newest
            self.shown_at_us = now_us
            self.value.setText(text)
        if mean_text != self.mean.text():
            self.mean.setText(mean_text)
        if status != self.status.text():
            self.status.setText(status)
        if stale != self._stale:
            self._stale = stale
            self._apply_text_colour()
        return True


#: The default tiles of the live view. HR/SpO2/BP largest (readable at 2 m at 1280x800);
#: NIBP greys when a measurement is 20 min overdue (5-min cycle, then 15-min, §4.1).
#: Templates: three digits for HR, SpO2 (100) and each pressure, two for RR and EtCO2
#: (a wider value shrinks the digits to fit, never cuts them), a decimal for Temp.
DEFAULT_SPECS: tuple[TileSpec, ...] = (
    TileSpec("hr", "HR", "bpm", (Channel.HR, Channel.PULSE), 92, stale_s=10.0,
             alt_labels=("PR (SpO\u2082)",), template="188"),
    TileSpec("spo2", "SpO\u2082", "%", (Channel.SPO2,), 92, stale_s=10.0, template="100"),
    TileSpec("bp", "NIBP", "mmHg", (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN),
             72, stale_s=20 * 60.0, always_age=True, template="188/188"),
    TileSpec("rr", "RR", "rpm", (Channel.RR,), 48, stale_s=15.0, template="88"),
    TileSpec("etco2", "EtCO\u2082", "mmHg", (Channel.ETCO2,), 48, stale_s=15.0,
             template="88"),
    TileSpec("temp", "Temp", "\u00b0C", (Channel.TEMP,), 48, stale_s=120.0,
             template="38.8"),
)


class TilesPanel(QWidget):
    """The column of tiles. ``refresh`` and ``set_alarms``/``flash`` are called by the
    main window's frame timer; nothing here owns a timer."""

    def __init__(self, limits: AlarmLimits | None = None,
                 specs: tuple[TileSpec, ...] = DEFAULT_SPECS,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tiles: dict[str, Tile] = {}
        for spec in specs:
            tile: Tile = (BloodPressureTile(spec, limits) if spec.key == "bp"
                          else NumericTile(spec, limits))
            self.tiles[spec.key] = tile
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        row = 0
        small = [t for t in self.tiles.values() if t.spec.value_px < 70]
        for t in self.tiles.values():
            if t not in small:
                grid.addWidget(t, row, 0, 1, max(1, len(small)))
                grid.setRowStretch(row, 3)
                row += 1
        for i, t in enumerate(small):
            # share the row by the stretches below, whatever the labels' natural widths
            t.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            t.setMinimumWidth(60)
            grid.addWidget(t, row, i)
            # a temperature has more digits than a rate: give it more of the row
            grid.setColumnStretch(i, 4 if t.spec.key == "temp" else 3)
        if small:
            grid.setRowStretch(row, 2)

    def refresh(self, live: LiveBuffers, now_us: int) -> int:
        """Refresh every tile; returns how many redrew."""
        return sum(t.refresh(live, now_us) for t in self.tiles.values())  # type: ignore[attr-defined]

    def set_alarms(self, by_channel: dict[Channel, Priority]) -> None:
        """The highest active alarm priority per channel (from the alarm engine)."""
        for t in self.tiles.values():
            prios = [by_channel[c] for c in t.spec.channels if c in by_channel]
            t.set_alarm(max(prios, key=lambda p: p.rank) if prios else None)

    def flash(self, t_s: float) -> None:
        for t in self.tiles.values():
            t.set_flash(t_s)
