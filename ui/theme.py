"""Colours, fonts and the stylesheet of the bedside window (DESIGN §6; clinical.md §5).

Why these choices:

- The room is dim and the patient is dissociating, so the window is dark and low-glare:
  near-black backgrounds, grey text, no large white areas. Numbers are the brightest thing.
- Parameter colours follow bedside-monitor habit (clinical.md §5.4): HR green, SpO2 and
  pleth cyan, NIBP white (not red: red is the high-priority alarm colour), RR yellow, EtCO2
  white/grey, Temp magenta, pump orange, the Cp estimate violet. A nurse glancing from two
  metres finds a value by its colour before she reads its label.
- Alarm colours are reserved (clinical.md §5.1): red high, yellow medium, cyan low. They are
  used as *backgrounds* only by alarms (tile flashes and alarm-bar chips), never for
  decoration, so a coloured area always means an alarm.
- Flash timing is computed from one clock (:func:`flash_on`), so every flashing element of
  one priority flashes in phase, as on a monitor, and the 30 Hz frame timer is the only
  timer driving it.
- The numbers a nurse reads from two metres (tile values, the session clock, the pump rate)
  are :class:`FitLabel` widgets: their font is fitted to the space the layout gives them, so a
  bigger window or full screen means bigger digits, not bigger empty tiles. The fit runs
  when the label is resized or its text outgrows what it was fitted to, never per frame,
  and a label's size hint does not depend on its font, so a fit never moves the layout.
"""

from __future__ import annotations

import gc
from importlib import resources

from PySide6.QtCore import QEvent, QPointF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPaintEvent,
    QPalette,
    QResizeEvent,
)
from PySide6.QtWidgets import QApplication, QLabel, QSizePolicy, QWidget

from kapmonitor.alarm_limits import Priority
from kapmonitor.model import Channel

__all__ = [
    "ALARM_COLOURS",
    "ALARM_TEXT",
    "ASTERISKS",
    "BG",
    "BORDER",
    "FLASH",
    "PANEL",
    "PARAM_COLOURS",
    "TEXT",
    "TEXT_DIM",
    "TEXT_FAINT",
    "ElidedLabel",
    "FitLabel",
    "apply_theme",
    "fit_px",
    "flash_on",
    "font",
    "stylesheet",
]

# -- surfaces and text --------------------------------------------------------------------
BG = "#07090c"
PANEL = "#0f1318"
PANEL_2 = "#161b22"
BORDER = "#262d36"
TEXT = "#d5dbe2"
TEXT_DIM = "#8b949e"
TEXT_FAINT = "#5a626c"
STALE = "#6b7280"  # a value older than its channel's freshness: grey, whatever its colour

# -- parameter colours (clinical.md §5.4, app defaults) -----------------------------------
HR_GREEN = "#3ee06a"
SPO2_CYAN = "#3fd2ee"
NIBP_WHITE = "#eceff3"
RR_YELLOW = "#f2d544"
CO2_GREY = "#c3c8cf"
TEMP_MAGENTA = "#e46be4"
PUMP_ORANGE = "#ff9d3b"
CP_VIOLET = "#ae8cff"

PARAM_COLOURS: dict[Channel, str] = {
    Channel.HR: HR_GREEN,
    Channel.PULSE: HR_GREEN,
    Channel.ECG: HR_GREEN,
    Channel.SPO2: SPO2_CYAN,
    Channel.PLETH: SPO2_CYAN,
    Channel.PERF_INDEX: SPO2_CYAN,
    Channel.NIBP_SYS: NIBP_WHITE,
    Channel.NIBP_DIA: NIBP_WHITE,
    Channel.NIBP_MEAN: NIBP_WHITE,
    Channel.RR: RR_YELLOW,
    Channel.ETCO2: CO2_GREY,
    Channel.FICO2: CO2_GREY,
    Channel.CO2_WAVE: CO2_GREY,
    Channel.TEMP: TEMP_MAGENTA,
    Channel.PUMP_RATE: PUMP_ORANGE,
    Channel.VOLUME_INFUSED: PUMP_ORANGE,
    Channel.VTBI: PUMP_ORANGE,
    Channel.DELIVERED_DOSE: PUMP_ORANGE,
    Channel.PLASMA_ESTIMATE: CP_VIOLET,
}

# -- alarm colours and flashing (clinical.md §5.1, app defaults) --------------------------
ALARM_COLOURS: dict[Priority, str] = {
    Priority.HIGH: "#ff2a2a",
    Priority.MEDIUM: "#ffd21a",
    Priority.LOW: "#25d4ff",
}
#: Text drawn on an alarm-coloured background: black reads on red, yellow and cyan.
ALARM_TEXT = "#000000"
ASTERISKS: dict[Priority, str] = {Priority.HIGH: "***", Priority.MEDIUM: "**", Priority.LOW: "*"}
#: (frequency Hz, duty on) per priority; low is steady (None).
FLASH: dict[Priority, tuple[float, float] | None] = {
    Priority.HIGH: (2.0, 0.5),
    Priority.MEDIUM: (0.5, 0.5),
    Priority.LOW: None,
}


def flash_on(priority: Priority, t_s: float) -> bool:
    """Whether an element flashing at ``priority`` is lit at monotonic time ``t_s``.

    One function of one clock, so every element of a priority flashes in phase and the
    frame timer needs no extra timers. Low priority is steady (always lit)."""
    spec = FLASH[priority]
    if spec is None:
        return True
    hz, duty = spec
    return (t_s * hz) % 1.0 < duty


# -- fonts --------------------------------------------------------------------------------
FAMILY = "DejaVu Sans"
FAMILY_NUMBERS = "DejaVu Sans Condensed"


def font(px: int, *, bold: bool = False, numbers: bool = False) -> QFont:
    """A font by pixel size: pixel sizes keep the 2 m readability target independent of the
    screen's DPI setting (a 72 px digit is 72 px on any monitor at 1280x800)."""
    f = QFont(FAMILY_NUMBERS if numbers else FAMILY)
    f.setPixelSize(px)
    f.setBold(bold)
    if numbers:
        f.setStyleHint(QFont.StyleHint.SansSerif)
    return f


_REF_PX = 100
_ref_metrics: dict[tuple[bool, bool], QFontMetricsF] = {}


def _ref_fm(bold: bool, numbers: bool) -> QFontMetricsF:
    """Metrics of the font at 100 px, cached: glyph sizes scale with the pixel size, so
    one measurement at a reference size sizes every fit without trying sizes in a loop."""
    key = (bold, numbers)
    fm = _ref_metrics.get(key)
    if fm is None:
        fm = _ref_metrics[key] = QFontMetricsF(font(_REF_PX, bold=bold, numbers=numbers))
    return fm


def fit_px(texts: tuple[str, ...] | list[str], width: float, glyph_height: float, *,
           bold: bool = True, numbers: bool = True, min_px: int = 8,
           max_px: int = 600) -> int:
    """The largest pixel size at which every one of ``texts`` is at most ``width`` wide and
    its inked glyphs at most ``glyph_height`` tall, clamped to ``min_px``..``max_px``.

    Glyph (ink) height rather than line height, because digits have no descenders: a label
    sized by line height wastes a fifth of its height on empty space below the digits."""
    fm = _ref_fm(bold, numbers)
    texts = [t for t in texts if t] or ["0"]
    adv = max(fm.horizontalAdvance(t) for t in texts)
    ink = max(fm.tightBoundingRect(t).height() for t in texts)
    px = min(width * _REF_PX / max(adv, 1.0), glyph_height * _REF_PX / max(ink, 1.0))
    px = max(min_px, min(max_px, int(px)))
    # hinting can make a real size a pixel wider than the scaled reference: check once
    while px > min_px and max(QFontMetricsF(font(px, bold=bold, numbers=numbers))
                              .horizontalAdvance(t) for t in texts) > width:
        px -= 1
    return px


class FitLabel(QLabel):
    """A one-line label whose font fills the label: as large as the ``template`` (the
    widest text it is expected to show, e.g. "188" for a heart rate) and the current text
    allow in the label's width, with the inked glyphs filling ``fill`` of its height.

    Why a template: the digits keep one size while the value changes (72 -> 104 does not
    shrink the number); only a text wider than the template shrinks the font, so nothing
    is ever cut. Why painted here: the text is centred on its ink, not on the font's line
    box, which puts the digits in the middle of the tile and lets them use its height.
    The colour comes from the label's palette, so ``setStyleSheet("color: ...")`` works as
    on any QLabel. ``nominal_px`` is the size the label asks the layout for (its size hint);
    the fitted size follows whatever size the layout gives."""

    def __init__(self, text: str = "", *, template: str = "", nominal_px: int = 24,
                 bold: bool = True, numbers: bool = True,
                 align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignRight, fill: float = 0.86,
                 min_px: int = 10, max_px: int = 400, parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self._template = template or text or "0"
        self._bold, self._numbers = bold, numbers
        self._fill, self._min_px, self._max_px = fill, min_px, max_px
        self._align = align
        self._nominal = nominal_px
        self._fitted_for: tuple[int, int, float] | None = None
        self._ink_mid = 0.0  # the ink box's centre relative to the baseline, at this size
        #: how many times the font was fitted (a test checks it is not once per frame)
        self.fits = 0
        self.setFont(font(nominal_px, bold=bold, numbers=numbers))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAlignment(align | Qt.AlignmentFlag.AlignVCenter)

    # -- what the layout sees: independent of the fitted font -----------------------------

    def _hint(self, px: int) -> QSize:
        fm = _ref_fm(self._bold, self._numbers)
        k = px / _REF_PX
        w = fm.horizontalAdvance(self._template) * k
        h = fm.tightBoundingRect(self._template).height() * k / self._fill
        return QSize(int(w) + 4, int(h) + 2)

    def sizeHint(self) -> QSize:
        return self._hint(self._nominal)

    def minimumSizeHint(self) -> QSize:
        return self._hint(self._min_px)

    # -- fitting ---------------------------------------------------------------------------

    def template(self) -> str:
        return self._template

    def setTemplate(self, template: str) -> None:
        self._template = template or "0"
        self.updateGeometry()
        self.refit()

    def _need(self, text: str) -> float:
        fm = _ref_fm(self._bold, self._numbers)
        return max(fm.horizontalAdvance(self._template), fm.horizontalAdvance(text))

    def setText(self, text: str) -> None:  # type: ignore[override]
        """Set the text; refit only when it is wider than what the font was fitted to
        (or narrower again), which a changing number within its template never is."""
        if text == self.text():
            return
        super().setText(text)
        fitted = self._fitted_for
        if fitted is None or self._need(text) != fitted[2]:
            self.refit()

    def refit(self) -> None:
        w, h = self.width() - 2, self.height()
        if w < 4 or h < 4:
            return
        need = self._need(self.text())
        if self._fitted_for == (w, h, need):
            return
        self._fitted_for = (w, h, need)
        texts = [self._template, self.text()]
        px = fit_px(texts, w, h * self._fill, bold=self._bold, numbers=self._numbers,
                    min_px=self._min_px, max_px=self._max_px)
        fm = _ref_fm(self._bold, self._numbers)
        ink = fm.tightBoundingRect(self._template)
        self._ink_mid = (ink.top() + ink.bottom()) / 2 * px / _REF_PX
        self.fits += 1
        if px != self.font().pixelSize():
            self.setFont(font(px, bold=self._bold, numbers=self._numbers))
        self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.refit()

    def paintEvent(self, event: QPaintEvent) -> None:
        text = self.text()
        if not text:
            return
        p = QPainter(self)
        p.setFont(self.font())
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        adv = p.fontMetrics().horizontalAdvance(text)
        if self._align & Qt.AlignmentFlag.AlignRight:
            x = self.width() - 1 - adv
        elif self._align & Qt.AlignmentFlag.AlignHCenter:
            x = (self.width() - adv) / 2
        else:
            x = 1
        p.drawText(QPointF(x, self.height() / 2 - self._ink_mid), text)
        p.end()


class ElidedLabel(QLabel):
    """A one-line label that may be narrower than its text: it shows what fits with an
    ellipsis and the whole text as its tooltip, instead of being cut mid-letter or holding
    the window wider than a small screen (a label's natural minimum is its whole text)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # type: ignore[override]
        if text == self._full:
            return
        self._full = text
        self.setToolTip(text)
        self._elide()

    def fullText(self) -> str:
        return self._full

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight,
                                              max(0, self.width()))
        super().setText(shown)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def sizeHint(self) -> QSize:
        """The whole text: a layout with room to spare shows all of it."""
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 2,
                     self.fontMetrics().height())

    def minimumSizeHint(self) -> QSize:
        """About six characters: below that an elided text says nothing."""
        fm = self.fontMetrics()
        return QSize(min(fm.horizontalAdvance(self._full) + 2,
                         fm.horizontalAdvance("Mmmmm\u2026")), fm.height())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self._elide()


def stylesheet() -> str:
    """The application stylesheet: ``resources/ui_style.qss`` with the palette filled in."""
    text = resources.files("kapmonitor.resources").joinpath("ui_style.qss").read_text("utf-8")
    subs = {"BG": BG, "PANEL2": PANEL_2, "PANEL": PANEL, "BORDER": BORDER, "TEXT_DIM": TEXT_DIM,
            "TEXT_FAINT": TEXT_FAINT, "TEXT": TEXT, "ACCENT": "#4c8dff"}
    for key in sorted(subs, key=len, reverse=True):
        text = text.replace("@" + key, subs[key])
    return text


def apply_theme(app: QApplication) -> None:
    """Dark palette (for widgets the stylesheet does not reach) plus the stylesheet.

    Style, palette, font and stylesheet are applied with Python's garbage collector held
    off: each walks every widget of the application and calls into the Python overrides
    of the fitted labels, and a collection started there could delete an abandoned
    window that Python still owns in the middle of Qt's walk (a crash). Whatever garbage
    there is goes first, at this safe point."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _apply_theme(app)
    finally:
        if was_enabled:
            gc.enable()


def _apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    pal = QPalette()
    for role, colour in (
        (QPalette.ColorRole.Window, BG), (QPalette.ColorRole.Base, PANEL),
        (QPalette.ColorRole.AlternateBase, PANEL_2), (QPalette.ColorRole.Button, PANEL_2),
        (QPalette.ColorRole.WindowText, TEXT), (QPalette.ColorRole.Text, TEXT),
        (QPalette.ColorRole.ButtonText, TEXT), (QPalette.ColorRole.ToolTipBase, PANEL_2),
        (QPalette.ColorRole.ToolTipText, TEXT), (QPalette.ColorRole.Highlight, "#2c4a78"),
        (QPalette.ColorRole.HighlightedText, "#ffffff"),
        (QPalette.ColorRole.PlaceholderText, TEXT_FAINT),
    ):
        pal.setColor(role, QColor(colour))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(TEXT_FAINT))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText,
                 QColor(TEXT_FAINT))
    app.setPalette(pal)
    app.setFont(font(15))
    app.setStyleSheet(stylesheet())
