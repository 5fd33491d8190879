"""The pump panel: what the pump is doing and what has been given (DESIGN §6).

Why: the nurse double-checks the running infusion against the programme she confirmed, so
the panel puts the programmed numbers (from the setup) next to the pump's own telemetry:
rate, volume infused, volume to be infused, the delivered dose in mg and mg/kg (the core's
``DeliveredDoseTracker`` via ``session.last_dose``), and the estimated plasma level with its
small trend. The estimate is a model output with about ±50 % uncertainty, so it is always
labelled as such (``pk.MODEL_ESTIMATE_LABEL``) and drawn in violet, never in an alarm colour.
KAP Monitor never controls a pump: there are no pump buttons here.

The rate is the figure read from across the room (is the pump running at what was
programmed?), so it gets the widest cell and the largest digits; every figure is a
:class:`~kapmonitor.ui.theme.FitLabel` that fills its cell, so the panel's numbers grow with
the window (the main window gives the panel a height in proportion to its own). Texts that
may be long (the programme, a pump's alarm list) elide with the whole text as a tooltip
instead of holding the window wide.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from kapmonitor.live import LiveBuffers
from kapmonitor.model import Channel, PumpRunState, PumpState
from kapmonitor.pk import MODEL_ESTIMATE_LABEL

from . import theme
from .plots import Series

__all__ = ["PumpPanel"]

_US = 1_000_000
_STATE_TEXT = {
    PumpRunState.RUNNING: "RUNNING",
    PumpRunState.PAUSED: "PAUSED",
    PumpRunState.STOPPED: "STOPPED",
    PumpRunState.COMPLETE: "COMPLETE",
    PumpRunState.BOLUS: "BOLUS",
    PumpRunState.ALARM: "PUMP ALARM",
    PumpRunState.UNKNOWN: "UNKNOWN",
}


def _num(v: float | None, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "--"
    return format(v, fmt)


class _Cell(QWidget):
    """A small title over a figure that fills the rest of the cell (fitted to
    ``template``, the widest figure expected). ``short`` is the title used when the cell
    is too narrow for ``title`` (a 1024-pixel screen); the whole title is the tooltip."""

    def __init__(self, title: str, colour: str, px: int = 24, template: str = "88.8",
                 short: str = "") -> None:
        super().__init__()
        self._titles = (title, short or title)
        self.setToolTip(title)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.title = theme.ElidedLabel(title)
        self.title.setFont(theme.font(12))
        self.title.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self.value = theme.FitLabel("--", template=template, nominal_px=px, min_px=12,
                                    align=Qt.AlignmentFlag.AlignLeft, fill=0.9)
        self.value.setStyleSheet(f"color: {colour};")
        lay.addWidget(self.title)
        lay.addWidget(self.value, 1)

    def set(self, text: str) -> None:
        if text != self.value.text():
            self.value.setText(text)

    def fit_title(self) -> None:
        fm = self.title.fontMetrics()
        long, short = self._titles
        self.title.setText(long if fm.horizontalAdvance(long) <= self.width() else short)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit_title()


class PumpPanel(QFrame):
    """Rate, infused, VTBI, delivered mg and mg/kg, Cp estimate with its trend, state."""

    def __init__(self, session: object, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        self.session = session
        orange, violet = theme.PUMP_ORANGE, theme.CP_VIOLET
        self.setMinimumHeight(86)
        #: shown beside a stopped pump (the demo: when its simulated pump starts)
        self.stopped_note = ""
        self.state = theme.ElidedLabel("no pump")
        self.state.setFont(theme.font(13, bold=True))
        self.state.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self.state.setMinimumWidth(90)
        self.rate = _Cell("Rate mL/h", orange, 28, short="mL/h")
        self.infused = _Cell("Infused mL", orange, short="Inf. mL")
        self.vtbi = _Cell("VTBI mL", orange, short="VTBI")
        self.mg = _Cell("Given mg", orange, short="mg")
        self.mgkg = _Cell("mg/kg", orange, template="0.888")
        self.cp = _Cell("Cp ng/mL", violet, 28, template="888", short="Cp")
        self.programme = theme.ElidedLabel(self._programme_text())
        self.programme.setFont(theme.font(12))
        self.programme.setStyleSheet(f"color: {theme.TEXT_DIM};")
        # one line, elided on a narrow panel ("Cp: model estimate, not a measured level"
        # stays; the whole text is the tooltip): a wrapped second line would be cut
        self.estimate_label = theme.ElidedLabel("Cp: " + MODEL_ESTIMATE_LABEL)
        self.estimate_label.setFont(theme.font(11))
        self.estimate_label.setStyleSheet(f"color: {violet};")
        self.estimate_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                          QSizePolicy.Policy.Preferred)
        self.spark = pg.PlotWidget(background=theme.PANEL)
        self.spark.setMinimumSize(60, 30)
        item = self.spark.getPlotItem()
        item.hideAxis("bottom")
        item.hideAxis("left")
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        curve = pg.PlotDataItem(pen=pg.mkPen(violet, width=1), connect="finite")
        curve.setDownsampling(auto=True, method="peak")
        curve.setClipToView(True)
        item.addItem(curve)
        self._cp_series = Series(Channel.PLASMA_ESTIMATE, curve)
        self.grid = grid = QGridLayout(self)
        grid.setContentsMargins(10, 4, 10, 4)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(0)
        self._head = head = QHBoxLayout()
        head.setSpacing(8)
        self.title = QLabel("PUMP")
        self.title.setFont(theme.font(13, bold=True))
        self.title.setStyleSheet(f"color: {orange};")
        head.addWidget(self.title)
        head.addWidget(self.state, 1)
        head.addSpacing(12)
        head.addWidget(self.programme, 3)
        grid.addLayout(head, 0, 0, 1, 7)
        # column widths in proportion to what each shows: the rate widest (it is read from
        # across the room), mg/kg and Cp a digit wider than the volumes
        cells = (self.rate, self.infused, self.vtbi, self.mg, self.mgkg, self.cp)
        for i, (cell, stretch) in enumerate(zip(cells, (8, 4, 4, 4, 5, 5), strict=True)):
            cell.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            cell.setMinimumWidth(36)
            grid.addWidget(cell, 1, i)
            grid.setColumnStretch(i, stretch)
        self.spark.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        grid.addWidget(self.spark, 1, 6, 2, 1)
        grid.setColumnStretch(6, 4)
        grid.addWidget(self.estimate_label, 2, 0, 1, 6)
        grid.setRowStretch(1, 1)
        self._small_px = 0
        self._pump: PumpState | None = None
        self._dose: object = None
        self._cp_next_us = 0

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Titles grow a little with the panel (the figures fit themselves); the columns
        get more air on a wide panel, and the Cp sparkline gives its width to the figures
        on a narrow one (a 1024-pixel screen), where a figure matters more than a trend."""
        super().resizeEvent(event)
        w = self.width()
        self.grid.setHorizontalSpacing(max(8, min(24, round(w * 0.02))))
        self.spark.setVisible(w >= 560)
        px = max(11, min(17, round(min(self.height() * 0.11, w * 0.022))))
        if px == self._small_px:
            return
        self._small_px = px
        self.title.setFont(theme.font(px + 1, bold=True))
        self.state.setFont(theme.font(px + 1, bold=True))
        self.programme.setFont(theme.font(px))
        for cell in (self.rate, self.infused, self.vtbi, self.mg, self.mgkg, self.cp):
            cell.title.setFont(theme.font(px))
            cell.fit_title()
        self.estimate_label.setFont(theme.font(px - 1))

    def _programme_text(self) -> str:
        cfg = getattr(self.session, "config", None)
        if cfg is None or not cfg.weight_kg or not cfg.dose_mg_per_kg:
            return "Programme: not entered"
        prep = (f"{cfg.concentration_mg_ml:g} mg/mL" if cfg.concentration_mg_ml
                else f"bag {cfg.bag_ml:g} mL" if cfg.bag_ml else "")
        mins = f" over {cfg.duration_min:g} min" if cfg.duration_min else ""
        total = cfg.dose_mg_per_kg * cfg.weight_kg
        return (f"Programme {cfg.dose_mg_per_kg:g} mg/kg \u00d7 {cfg.weight_kg:g} kg = "
                f"{total:.4g} mg{mins} \u00b7 {prep}")

    def _current_pump(self, live: LiveBuffers) -> PumpState | None:
        pumps = list(live.pumps.values())
        if not pumps:
            return None
        return max(pumps, key=lambda p: p.t_us)

    def refresh(self, live: LiveBuffers, now_us: int, ref_us: int | None,
                *, trend: bool = True) -> bool:
        """Redraw what changed: pump state and dose on a new pump message, the Cp figure
        twice a second (it is projected to now by the core), and with ``trend`` the Cp
        trend on new data (the main window runs that part as its own heavy step)."""
        changed = False
        pump = self._current_pump(live)
        if pump is not self._pump:
            self._pump = pump
            changed = True
            self._show_pump(pump, now_us)
        dose = getattr(self.session, "last_dose", None)
        if dose is not self._dose:
            self._dose = dose
            changed = True
            self.mg.set(_num(getattr(dose, "delivered_mg", None), ".1f"))
            self.mgkg.set(_num(getattr(dose, "delivered_mg_per_kg", None), ".3f"))
        # (a replay cursor may move back in time: then the figure is due at once)
        if now_us >= self._cp_next_us or now_us < self._cp_next_us - _US:
            self._cp_next_us = now_us + _US // 2
            cp = self.session.plasma_now()  # type: ignore[attr-defined]
            self.cp.set(_num(cp, ".0f"))
            changed = True
        if trend:
            changed |= self.refresh_trend(live, now_us, ref_us)
        return changed

    def trend_pending(self, live: LiveBuffers, now_us: int = 0) -> bool:
        return self._cp_series.pending(live)

    def refresh_trend(self, live: LiveBuffers, now_us: int, ref_us: int | None) -> bool:
        if self._cp_series.pull(live):
            self._cp_series.redraw(ref_us if ref_us is not None else now_us)
            return True
        return False

    def set_trend(self, t_us: object, values: object, ref_us: int) -> None:
        """Replay: the whole recorded Cp estimate for the sparkline, instead of a ring."""
        self._cp_series.replace(t_us, values)  # type: ignore[arg-type]
        self._cp_series.redraw(ref_us)

    def _show_pump(self, pump: PumpState | None, now_us: int) -> None:
        if pump is None:
            self.state.setText("no pump")
            self.state.setStyleSheet(f"color: {theme.TEXT_DIM};")
            for c in (self.rate, self.infused, self.vtbi):
                c.set("--")
            return
        text = _STATE_TEXT.get(pump.state, str(pump.state).upper())
        noted = bool(self.stopped_note) and pump.state is PumpRunState.STOPPED
        if noted:
            text += f" \u2014 {self.stopped_note}"
        self._head.setStretchFactor(self.state, 3 if noted else 1)  # the note needs room
        if pump.alarms:
            text = "PUMP ALARM: " + ", ".join(a.text or a.code for a in pump.alarms)
        self.state.setText(text)
        colour = (theme.PUMP_ORANGE if pump.state in (PumpRunState.RUNNING, PumpRunState.BOLUS)
                  else theme.TEXT if pump.state is PumpRunState.COMPLETE else theme.TEXT_DIM)
        self.state.setStyleSheet(f"color: {colour};")
        self.rate.set(_num(pump.rate_ml_h, ".1f"))
        self.infused.set(_num(pump.volume_infused_ml, ".1f"))
        self.vtbi.set(_num(pump.vtbi_ml, ".1f"))
