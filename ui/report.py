"""The PDF session report: the chart record of one infusion, on A4 (issue 9; issue 13
item 12).

``kapmonitor export SESSION --format pdf --out FILE`` lands here (the export command
dispatches to :func:`export_session`; :func:`export_pdf` is the same function); the replay
window's "PDF report..." button, and at the bedside "Print / PDF..."
(:func:`print_or_save_report`, offered when a session is closed by
:func:`offer_report_at_close`).

What is on it, and why:

- Page 1 is what a clinician reviewing the chart looks at first: who (pseudonym, weight),
  what was planned (protocol, programme, concentration, the pump rate it implies), who was
  there (clinicians, room), when (session start, infusion start t0, end), the record's
  status with a framed warning when it is RECOVERED after a crash or still OPEN (and when it
  is DEMO data), the dose given against the dose programmed, and the trends of the whole
  session with every entry and alarm marked.
- The dose as the pump delivered it: each running segment with its start and end, rate,
  mL and mg, and each pause or stop between them with its length and the pump alarm that
  caused it (kapmonitor/export/flowsheet.py), so a hold is never hidden inside one
  "running from ... to ..." span.
- A flowsheet, as on a paper sedation chart: a row every 5 min of session time and one at
  every NIBP measurement, with HR, SpO2, NIBP, RR, EtCO2 and the pump (values measured
  within 60 s of the row's time, else "—"), so the record can be read and audited
  row by row without a ruler on the trends.
- Markers on the trends carry numbers (entries) and A-numbers (alarm raises) instead of
  text, so a long session does not become a smear of overprinted labels; the numbers lead
  to the entries and alarms tables. Sessions longer than 75 minutes also get detail pages,
  one hour of trends each.
- A table of every numeric channel: baseline (the median of the 10 minutes before t0), the
  minimum and maximum with their session times, the last value. Flagged values (invalid,
  probe off, out of range) are gaps, never numbers, exactly as on the screen.
- The entries with their corrections visible: an amended entry prints its current text,
  who amended it and when, and every earlier version struck through (the record is
  append-only; the report shows that). The alarms with session times: raise, escalation,
  acknowledgement (and by whom), audio pause, end, in plain words with the priority as a
  word ("HIGH — SpO2 LOW 85 % (< 88)"): the screen's asterisks read as footnote marks
  on paper.
- Sign-off lines for the nurse and the physician (name, signature, date and time) on the
  last page: a printed chart becomes part of the clinical record only when signed.
- Every page's footer says "secondary record — not a primary alarm device", the patient
  pseudonym, the session's number and uid (the uid identifies it across rooms and the
  central server) and "page n of N".
- Drawn with QPainter on a QPdfWriter, in print colours on white (the dark screen theme
  would waste toner and lose contrast); lines are vectors, text is real text (searchable,
  extractable). The layout runs twice, the first time only to count the pages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QBuffer,
    QCoreApplication,
    QIODevice,
    QMarginsF,
    QPointF,
    QRectF,
    Qt,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QGuiApplication,
    QPageLayout,
    QPageSize,
    QPainter,
    QPainterPath,
    QPdfWriter,
    QPen,
)
from sqlalchemy import Engine

from kapmonitor.dosing import DoseProgramme, calculate
from kapmonitor.export.common import ExportResult, atomic_file, load_meta
from kapmonitor.export.flowsheet import (
    NEAREST_US,
    ChartData,
    DoseSegment,
    alarm_event_word,
    alarm_wording,
    duration_text,
    session_clock,
)
from kapmonitor.model import CHANNELS, Channel
from kapmonitor.pk import MODEL_ESTIMATE_LABEL
from kapmonitor.store.reader import SessionReader

from .replay_data import (
    RecordedSession,
    TimelineItem,
    decimate_minmax,
    stats_for,
)

__all__ = [
    "DISCLAIMER",
    "FLOWSHEET_TITLE",
    "FOOTER_NOTICE",
    "export_pdf",
    "export_session",
    "offer_report_at_close",
    "print_or_save_report",
    "render_report",
]

#: what every page's footer says the record is (and is not)
FOOTER_NOTICE = "secondary record \u2014 not a primary alarm device"
DISCLAIMER = ("Secondary record \u2014 not a primary alarm device; plasma concentration is "
              "a model estimate")
FLOWSHEET_TITLE = "Flowsheet: vital signs every 5 min and at every NIBP"
_US = 1_000_000
_MIN = 60 * _US
DPI = 300
MM = DPI / 25.4
FAMILY = "DejaVu Sans"
DETAIL_AFTER_MIN = 75.0
#: more points than this in a row are drawn as a line, not as dots
_MAX_DOTS = 400
DETAIL_WINDOW_MIN = 60.0

#: print colours: the screen's parameter colours, darkened to read on white
INK = QColor("#111111")
DIM = QColor("#555555")
FAINT = QColor("#9a9a9a")
GRID = QColor("#dddddd")
PRINT = {
    Channel.HR: "#12823a", Channel.PULSE: "#7cc290", Channel.SPO2: "#0a78a8",
    Channel.NIBP_SYS: "#111111", Channel.NIBP_DIA: "#111111", Channel.NIBP_MEAN: "#8a8a8a",
    Channel.RR: "#b07d00", Channel.ETCO2: "#5a5a5a", Channel.TEMP: "#a3279c",
    Channel.PUMP_RATE: "#d0620c", Channel.PLASMA_ESTIMATE: "#6a46c8",
    Channel.DELIVERED_DOSE: "#d0620c",
}
ALARM_PRINT = {"high": "#cc0000", "medium": "#b88a00", "low": "#0088aa"}
KIND_PRINT = {"observation": "#44566e", "cue": "#1f7a5e", "assessment": "#8a6420",
              "phase": "#333333", "gap": "#c25400"}
WARN = QColor("#c25400")
_DASH = "\u2014"
#: the pump's own numbers and the model's: a "baseline" before the infusion means nothing
_NO_BASELINE = frozenset({Channel.PUMP_RATE, Channel.VOLUME_INFUSED, Channel.VTBI,
                          Channel.DELIVERED_DOSE, Channel.PLASMA_ESTIMATE})


@dataclass(frozen=True)
class _Row:
    """One trend row of the report: title, channels, default y range (widened to the
    data: a printed chart never clips an extreme), NIBP drawn as points."""

    title: str
    channels: tuple[Channel, ...]
    y_range: tuple[float, float]
    points: tuple[Channel, ...] = ()
    steps: tuple[Channel, ...] = ()


ROWS = (
    _Row("HR / PR  /min", (Channel.HR, Channel.PULSE), (40, 140)),
    _Row("SpO\u2082  %", (Channel.SPO2,), (85, 100)),
    _Row("NIBP  mmHg", (Channel.NIBP_SYS, Channel.NIBP_MEAN, Channel.NIBP_DIA), (40, 180),
         points=(Channel.NIBP_SYS, Channel.NIBP_MEAN, Channel.NIBP_DIA)),
    _Row("RR /min \u00b7 EtCO\u2082 mmHg", (Channel.RR, Channel.ETCO2), (0, 50)),
    _Row("Temp \u00b0C", (Channel.TEMP,), (35.5, 38.0)),
    _Row("Pump mL/h", (Channel.PUMP_RATE,), (0, 60), steps=(Channel.PUMP_RATE,)),
    _Row("Cp est. ng/mL (model estimate)", (Channel.PLASMA_ESTIMATE,), (0, 200)),
)


def _font(pt: float, *, bold: bool = False, italic: bool = False,
          strike: bool = False) -> QFont:
    f = QFont(FAMILY)
    f.setPointSizeF(pt)
    f.setBold(bold)
    f.setItalic(italic)
    f.setStrikeOut(strike)
    return f


def _session_time(t_us: int, ref_us: int) -> str:
    """'T+12:34' / 'T-03:10' / 'T+1:02:03' since the infusion start: the live header's
    format, so the chart and the screen name a moment the same way."""
    return session_clock(t_us, ref_us)


def _local(t_us: int | None, *, date: bool = True) -> str:
    if t_us is None:
        return "\u2014"
    dt = datetime.fromtimestamp(t_us / _US).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _utc_offset(t_us: int) -> str:
    off = datetime.fromtimestamp(t_us / _US).astimezone().strftime("%z")
    return f"UTC{off[:3]}:{off[3:]}"


def _num(v: float | None, precision: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "\u2014"
    return f"{v:.{precision}f}"


# ----------------------------------------------------------------------------- layout


@dataclass
class _Para:
    """A paragraph of a table cell or a text block."""

    text: str
    font: QFont
    colour: QColor = field(default_factory=lambda: QColor(INK))


class _Page:
    """The flow of blocks down A4 pages: ``need(h)`` starts a new page when ``h`` does not
    fit; every page gets the running head and the footer (disclaimer, page n of N)."""

    def __init__(self, painter: QPainter, width: float, height: float, rec: RecordedSession,
                 total: int | None, next_page: Callable[[], object]) -> None:
        self.p = painter
        self._next_page = next_page
        self.w = width
        self.h = height
        self.rec = rec
        self.total = total
        self.page = 1
        self.footer_h = 12 * MM
        self.y = 0.0
        self._footer()

    @property
    def bottom(self) -> float:
        return self.h - self.footer_h

    def need(self, h: float) -> None:
        if self.y + h > self.bottom and self.y > 20 * MM:
            self.new_page()

    def new_page(self) -> None:
        self._next_page()
        self.page += 1
        self.y = 0.0
        self._running_head()
        self._footer()

    def _running_head(self) -> None:
        meta = self.rec.meta
        f = _font(8)
        self.p.setFont(f)
        self.p.setPen(DIM)
        text = (f"{meta.patient or 'no patient id'} \u00b7 session {meta.id} \u00b7 "
                f"{_status_word(meta.status)}" + (" \u00b7 DEMO" if meta.demo else ""))
        h = QFontMetricsF(f, self.p.device()).height()
        self.p.drawText(QRectF(0, 0, self.w, h), Qt.AlignmentFlag.AlignLeft, text)
        self.p.setPen(QPen(GRID, 0.3 * MM))
        self.p.drawLine(QPointF(0, h + 1 * MM), QPointF(self.w, h + 1 * MM))
        self.y = h + 4 * MM

    def _footer(self) -> None:
        """Who and which record (pseudonym, session number and uid), what it is not (a
        primary alarm device), and page n of N: on every page, so a single page that comes
        loose from the chart still says all of it."""
        f = _font(7.5)
        self.p.setFont(f)
        top = self.h - self.footer_h + 3 * MM
        self.p.setPen(QPen(GRID, 0.3 * MM))
        self.p.drawLine(QPointF(0, top - 1.5 * MM), QPointF(self.w, top - 1.5 * MM))
        self.p.setPen(DIM)
        meta = self.rec.meta
        total = f" of {self.total}" if self.total else ""
        who = (f"{meta.patient or 'no patient id'} \u00b7 session {meta.id} \u00b7 "
               f"uid {meta.uid}")
        line = QFontMetricsF(f, self.p.device()).height()
        self.p.drawText(QRectF(0, top, self.w, line), Qt.AlignmentFlag.AlignLeft,
                        f"KAP Monitor \u2014 {FOOTER_NOTICE}; plasma concentration is a "
                        "model estimate")
        self.p.drawText(QRectF(0, top + line, self.w, line), Qt.AlignmentFlag.AlignLeft, who)
        self.p.setFont(_font(7.5, bold=True))
        self.p.drawText(QRectF(0, top + line, self.w, line), Qt.AlignmentFlag.AlignRight,
                        f"page {self.page}{total}")

    # -- text ----------------------------------------------------------------------------

    def text_height(self, paras: Sequence[_Para], width: float) -> float:
        h = 0.0
        for para in paras:
            fm = QFontMetricsF(para.font, self.p.device())
            r = fm.boundingRect(QRectF(0, 0, width, 1e6),
                                int(Qt.TextFlag.TextWordWrap), para.text)
            h += r.height()
        return h

    def draw_paras(self, paras: Sequence[_Para], x: float, y: float, width: float) -> float:
        for para in paras:
            self.p.setFont(para.font)
            self.p.setPen(para.colour)
            fm = QFontMetricsF(para.font, self.p.device())
            r = fm.boundingRect(QRectF(0, 0, width, 1e6),
                                int(Qt.TextFlag.TextWordWrap), para.text)
            self.p.drawText(QRectF(x, y, width, r.height() + 1),
                            int(Qt.TextFlag.TextWordWrap) | int(Qt.AlignmentFlag.AlignLeft),
                            para.text)
            y += r.height()
        return y

    def heading(self, text: str, pt: float = 11.5, keep: float = 12 * MM) -> None:
        """A section title, kept with ``keep`` of what follows (never alone at the foot
        of a page)."""
        f = _font(pt, bold=True)
        h = QFontMetricsF(f, self.p.device()).height()
        self.need(h + keep)
        self.y += 2.5 * MM
        self.p.setFont(f)
        self.p.setPen(INK)
        self.p.drawText(QRectF(0, self.y, self.w, h), Qt.AlignmentFlag.AlignLeft, text)
        self.y += h + 1.2 * MM

    def paragraph(self, paras: Sequence[_Para], *, indent: float = 0.0) -> None:
        h = self.text_height(paras, self.w - indent)
        self.need(h)
        self.y = self.draw_paras(paras, indent, self.y, self.w - indent) + 1 * MM

    # -- tables ----------------------------------------------------------------------------

    def table(self, columns: Sequence[tuple[str, float]], rows: Sequence[Sequence[Any]],
              *, pt: float = 8.0, zebra: bool = True) -> None:
        """``columns``: (title, width fraction); a cell is a str or a list of _Para."""
        widths = [f * self.w for _, f in columns]
        pad = 1.0 * MM
        head_font = _font(pt, bold=True)
        body_font = _font(pt)

        def cell_paras(cell: Any) -> list[_Para]:
            if isinstance(cell, list):
                return cell
            return [_Para(str(cell), body_font)]

        def header() -> None:
            hh = max(self.text_height([_Para(t, head_font)], w - 2 * pad)
                     for (t, _), w in zip(columns, widths, strict=True)) + 2 * pad
            self.need(hh + 8 * MM)
            self.p.fillRect(QRectF(0, self.y, self.w, hh), QColor("#ececec"))
            x = 0.0
            for (t, _), w in zip(columns, widths, strict=True):
                self.draw_paras([_Para(t, head_font, QColor(INK))], x + pad, self.y + pad,
                                w - 2 * pad)
                x += w
            self.y += hh

        header()
        for i, row in enumerate(rows):
            cells = [cell_paras(c) for c in row]
            rh = max(self.text_height(c, w - 2 * pad) for c, w in
                     zip(cells, widths, strict=True)) + 2 * pad
            if self.y + rh > self.bottom:
                self.new_page()
                header()
            if zebra and i % 2:
                self.p.fillRect(QRectF(0, self.y, self.w, rh), QColor("#f6f6f6"))
            x = 0.0
            for c, w in zip(cells, widths, strict=True):
                self.draw_paras(c, x + pad, self.y + pad, w - 2 * pad)
                x += w
            self.y += rh
        self.p.setPen(QPen(GRID, 0.3 * MM))
        self.p.drawLine(QPointF(0, self.y), QPointF(self.w, self.y))
        self.y += 2 * MM


def _status_word(status: str) -> str:
    return {"closed": "closed", "recovered": "RECOVERED", "open": "STILL OPEN"}.get(
        status, status)


# ----------------------------------------------------------------------------- trends


@dataclass(frozen=True)
class _Mark:
    t_us: int
    label: str
    colour: QColor
    strong: bool = False


def _marks(rec: RecordedSession, numbered: list[TimelineItem]) -> list[_Mark]:
    out = []
    for n, it in enumerate(numbered, 1):
        colour = QColor(KIND_PRINT.get(it.kind, "#444444"))
        if it.kind == "pump":
            colour = QColor(PRINT[Channel.PUMP_RATE])
        out.append(_Mark(it.t_us, str(n), colour, it.kind == "phase"))
    for n, ev in enumerate(_alarm_raises(rec), 1):
        out.append(_Mark(int(ev["t_us"]), f"A{n}", QColor(ALARM_PRINT.get(ev["priority"],
                                                                          "#cc0000")), True))
    return out


def _alarm_raises(rec: RecordedSession) -> list[dict[str, Any]]:
    return [ev for ev in rec.alarm_events if ev["action"] == "raise"
            and ev["kind"] in ("physiological", "technical", "advisory")]


def _draw_trends(page: _Page, rec: RecordedSession, marks: list[_Mark], lo_us: int,
                 hi_us: int, row_h: float, title: str) -> None:
    series = _trend_series(rec)
    rows = [r for r in ROWS if any(c in series for c in r.channels)]
    if not rows:
        page.paragraph([_Para("No numeric data was recorded.", _font(9), DIM)])
        return
    page.heading(title)
    axis_w = 27 * MM
    label_h = 8.0 * MM  # marker numbers above the first row, on three levels
    tick_h = 5.5 * MM
    total = label_h + row_h * len(rows) + tick_h
    page.need(total)
    p = page.p
    x0, x1 = axis_w, page.w - 2 * MM
    top = page.y + label_h
    ref = rec.ref_us
    span = max(hi_us - lo_us, 1)

    def xpos(t: int | np.ndarray) -> Any:
        return x0 + (np.asarray(t, dtype=np.float64) - lo_us) / span * (x1 - x0)

    # time ticks (minutes since t0) and grid
    minutes_span = span / _MIN
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120) if minutes_span / s <= 12)
    first = math.ceil((lo_us - ref) / _MIN / step) * step
    tick_font = _font(7)
    ticks = []
    m = first
    while ref + m * _MIN <= hi_us:
        ticks.append(m)
        m += step
    bottom = top + row_h * len(rows)
    p.setPen(QPen(GRID, 0.25 * MM))
    for m in ticks:
        x = float(xpos(ref + m * _MIN))
        p.drawLine(QPointF(x, top), QPointF(x, bottom))
    p.setFont(tick_font)
    p.setPen(DIM)
    for m in ticks:
        x = float(xpos(ref + m * _MIN))
        p.drawText(QRectF(x - 8 * MM, bottom + 0.5 * MM, 16 * MM, 3.5 * MM),
                   Qt.AlignmentFlag.AlignHCenter, f"{m:g}")
    p.drawText(QRectF(x0, bottom + 2.8 * MM, x1 - x0, 3 * MM), Qt.AlignmentFlag.AlignHCenter,
               "minutes since infusion start" if rec.t0_us is not None
               else "minutes since session start (no infusion start recorded)")

    # marker lines and their numbers, staggered over three levels so neighbours stay legible
    mark_font = _font(6.5, bold=True)
    fm = QFontMetricsF(mark_font, p.device())
    levels: list[float] = [-1e9, -1e9, -1e9]
    visible = sorted((mk for mk in marks if lo_us <= mk.t_us <= hi_us), key=lambda m: m.t_us)
    p.setFont(mark_font)
    for mk in visible:
        x = float(xpos(mk.t_us))
        c = QColor(mk.colour)
        c.setAlpha(200 if mk.strong else 120)
        pen = QPen(c, (0.35 if mk.strong else 0.2) * MM)
        if not mk.strong:
            pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawLine(QPointF(x, top), QPointF(x, bottom))
        w = fm.horizontalAdvance(mk.label) + 0.8 * MM
        lvl = next((i for i, edge in enumerate(levels) if x - w / 2 > edge), None)
        if lvl is None:
            lvl = int(np.argmin(levels))
        levels[lvl] = x + w / 2
        ly = top - (lvl + 1) * (label_h / 3)
        p.setPen(mk.colour)
        p.drawText(QRectF(x - w / 2, ly, w, label_h / 3),
                   Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, mk.label)

    # the rows
    title_font = _font(7, bold=True)
    buckets = max(100, int((x1 - x0) / (0.4 * MM)))  # a min and a max per 0.4 mm
    gap = 1.6 * MM
    for i, row in enumerate(rows):
        ry = top + i * row_h + gap / 2
        rect = QRectF(x0, ry, x1 - x0, row_h - gap)
        ylo, yhi = row.y_range
        data = {}
        for ch in row.channels:
            s = series.get(ch)
            if s is None:
                continue
            a = int(np.searchsorted(s.t_us, lo_us))
            b = int(np.searchsorted(s.t_us, hi_us, side="right"))
            t, v = s.t_us[a:b], s.values[a:b]
            if t.size:
                data[ch] = (t, v)
                finite = v[np.isfinite(v)]
                if finite.size:
                    ylo, yhi = min(ylo, float(finite.min())), max(yhi, float(finite.max()))
        pad = (yhi - ylo) * 0.06 or 1.0
        ylo, yhi = ylo - pad, yhi + pad

        inner = row_h - gap

        def ypos(v: np.ndarray, ylo: float = ylo, yhi: float = yhi, ry: float = ry,
                 inner: float = inner) -> Any:
            return ry + inner - (v - ylo) / (yhi - ylo) * inner

        p.setPen(QPen(QColor("#bbbbbb"), 0.25 * MM))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(rect)
        # y ticks: three round values
        p.setFont(tick_font)
        for yv in _nice_ticks(ylo + pad, yhi - pad, 3):
            yy = float(ypos(np.float64(yv)))
            p.setPen(QPen(GRID, 0.2 * MM))
            p.drawLine(QPointF(x0, yy), QPointF(x1, yy))
            p.setPen(DIM)
            p.drawText(QRectF(x0 - 9 * MM, yy - 1.8 * MM, 8 * MM, 3.6 * MM),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{yv:g}")
        # the row title, left of the plot, with a colour key per channel
        p.setFont(title_font)
        tx = 0.0
        title_rect = QRectF(tx, ry, x0 - 10 * MM, row_h - gap)
        p.setPen(INK)
        p.drawText(title_rect, int(Qt.TextFlag.TextWordWrap) | int(Qt.AlignmentFlag.AlignLeft)
                   | int(Qt.AlignmentFlag.AlignTop), row.title)
        # a colour key inside the plot's top left corner, on white
        key_font = _font(6)
        p.setFont(key_font)
        kfm = QFontMetricsF(key_font, p.device())
        keys = [(ch, CHANNELS[ch].label.replace("NIBP ", "")) for ch in row.channels
                if ch in data]
        if len(keys) > 1:
            kw = sum(3.5 * MM + kfm.horizontalAdvance(lab) for _, lab in keys) + 1 * MM
            kh = kfm.height() + 0.6 * MM
            p.fillRect(QRectF(x0 + 0.3 * MM, ry + 0.3 * MM, kw, kh), QColor(255, 255, 255, 225))
            kx, ky = x0 + 1 * MM, ry + 0.3 * MM + kh / 2
            for ch, label in keys:
                p.setPen(QPen(QColor(PRINT.get(ch, "#333333")), 0.6 * MM))
                p.drawLine(QPointF(kx, ky), QPointF(kx + 2.5 * MM, ky))
                p.setPen(DIM)
                p.drawText(QPointF(kx + 3 * MM, ky + kfm.ascent() / 2.8), label)
                kx += 3.5 * MM + kfm.horizontalAdvance(label)
        # the curves: min/max decimated to the plot's width in device pixels
        p.save()
        p.setClipRect(rect)
        for ch, (t, v) in data.items():
            colour = QColor(PRINT.get(ch, "#333333"))
            # intermittent values (NIBP) as dots; a channel sent every second as a line
            if ch in row.points and np.isfinite(v).sum() <= _MAX_DOTS:
                ok = np.isfinite(v)
                xs, ys = xpos(t[ok]), ypos(v[ok])
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(colour)
                r = 0.55 * MM if ch is not Channel.NIBP_MEAN else 0.4 * MM
                for xx, yy in zip(xs.tolist(), ys.tolist(), strict=True):
                    p.drawEllipse(QPointF(xx, yy), r, r)
                if ch is not Channel.NIBP_MEAN and ok.sum() > 1:
                    c2 = QColor(colour)
                    c2.setAlpha(90)
                    _polyline(p, xs, ys, QPen(c2, 0.2 * MM))
                p.setBrush(Qt.BrushStyle.NoBrush)
                continue
            td, vd = decimate_minmax(t, v, buckets)
            if ch in row.steps and td.size:  # a set rate holds until the next change
                td = np.repeat(td, 2)[1:]
                vd = np.repeat(vd, 2)[:-1]
            _polyline(p, xpos(td), ypos(vd), QPen(colour, 0.3 * MM))
        p.restore()
    page.y = bottom + tick_h + 1 * MM


def _trend_series(rec: RecordedSession) -> dict[Channel, Any]:
    """The numeric channels to draw; the pump rate from the pump's own state reports when
    the pump driver sent no rate readings (each report holds the rate it ran at)."""
    out: dict[Channel, Any] = dict(rec.numerics)
    if Channel.PUMP_RATE not in out and rec.pump_events:
        source = rec.pump_events[0]["source"]
        ev = [e for e in rec.pump_events if e["source"] == source]
        t = np.array([int(e["t_us"]) for e in ev], dtype=np.int64)
        v = np.array([e["rate_ml_h"] if e["state"] in ("running", "bolus")
                      and e["rate_ml_h"] is not None else 0.0 for e in ev], dtype=np.float64)
        out[Channel.PUMP_RATE] = SimpleNamespace(t_us=t, values=v)
    return out


def _polyline(p: QPainter, xs: np.ndarray, ys: np.ndarray, pen: QPen) -> None:
    """Connected runs of finite points; a NaN is a break (a gap in the record)."""
    ok = np.isfinite(ys)
    path = QPainterPath()
    pen_down = False
    for x, y, good in zip(xs.tolist(), ys.tolist(), ok.tolist(), strict=True):
        if not good:
            pen_down = False
            continue
        if pen_down:
            path.lineTo(x, y)
        else:
            path.moveTo(x, y)
            pen_down = True
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawPath(path)


def _nice_ticks(lo: float, hi: float, n: int) -> list[float]:
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-9:
        out.append(round(v, 6))
        v += step
    return out


# ----------------------------------------------------------------------------- sections


def _numbered(rec: RecordedSession) -> list[TimelineItem]:
    """The items that get a number on the trends: annotations (not the session's opening)
    and pump changes."""
    created = rec.meta.created_us
    return [it for it in rec.timeline() if it.kind not in ("alarm", "device")
            and not (it.kind == "phase" and it.text == "Baseline"
                     and abs(it.t_us - created) < _US)]


def _title_block(page: _Page, rec: RecordedSession) -> None:
    meta = rec.meta
    page.y = 0.0
    title = _font(16, bold=True)
    page.paragraph([_Para("KAP Monitor \u2014 infusion session record", title)])
    now = int(datetime.now().timestamp() * _US)
    page.paragraph([_Para(f"{DISCLAIMER}. Clock times are local time "
                          f"({_utc_offset(meta.created_us)}). Generated {_local(now)}.",
                          _font(8), DIM)])
    warnings = meta.status_warnings()
    if meta.status in ("recovered", "open") or meta.demo:
        word = {"recovered": "RECOVERED", "open": "STILL OPEN"}.get(meta.status, "")
        head = " \u00b7 ".join(x for x in (word, "DEMO" if meta.demo else "") if x)
        paras = [_Para(head, _font(11, bold=True), WARN)]
        paras += [_Para("\u2022 " + w, _font(8.5), INK) for w in warnings]
        h = page.text_height(paras, page.w - 6 * MM) + 4 * MM
        page.need(h)
        page.p.setPen(QPen(WARN, 0.6 * MM))
        page.p.setBrush(QColor("#fff4ea"))
        page.p.drawRect(QRectF(0.3 * MM, page.y, page.w - 0.6 * MM, h))
        page.p.setBrush(Qt.BrushStyle.NoBrush)
        page.draw_paras(paras, 3 * MM, page.y + 2 * MM, page.w - 6 * MM)
        page.y += h + 2 * MM
    r = rec.row
    prog = _programme(rec)
    weight = (f"{r['weight_kg']:g} kg ({r.get('weight_basis') or 'actual'} weight)"
              if r.get("weight_kg") else "not entered")
    prep = (f"{r['concentration_mg_ml']:g} mg/mL" if r.get("concentration_mg_ml")
            else f"bag {r['bag_ml']:g} mL" if r.get("bag_ml") else "not entered")
    if prog is not None:
        prep += f" (rate {prog.rate_ml_h:.1f} mL/h, volume {prog.volume_ml:.1f} mL)"
    end_word = {"closed": "Closed", "recovered": "Recording broke off",
                "open": "Last data (still open)"}.get(meta.status, "End")
    devices = "; ".join(f"{d['source']} ({d['protocol'] or '?'}"
                        + (f", SN {d['serial_number']}" if d.get("serial_number") else "")
                        + ")" for d in meta.devices) or "\u2014"
    programme = "not entered"
    if r.get("dose_mg_per_kg"):
        programme = f"{r['dose_mg_per_kg']:g} mg/kg"
        if r.get("duration_min"):
            programme += f" over {r['duration_min']:g} min"
        if prog is not None:
            programme += f" = {prog.dose_mg:.4g} mg {r.get('drug') or 'ketamine'}"
        programme += f" {r.get('route') or 'IV'}"
    fields = [
        ("Patient (pseudonym)", meta.patient or "no patient id"),
        ("Weight", weight),
        ("Protocol", r.get("protocol") or "\u2014"),
        ("Programme", programme),
        ("Concentration", prep),
        ("Clinicians", r.get("clinicians") or "\u2014"),
        ("Room", r.get("room") or "\u2014"),
        ("Session", f"{meta.id} \u00b7 uid {meta.uid[:8]}"),
        ("Session start", _local(meta.created_us)),
        ("Infusion start (t0)", _local(meta.t0_us) if meta.t0_us is not None
         else "not recorded: times count from the session start"),
        (end_word, _local(rec.end_us)),
        ("Status", _status_word(meta.status) + (" \u00b7 DEMO (simulated data)"
                                                 if meta.demo else "")),
        ("Devices", devices),
    ]
    _key_values(page, fields)


def _key_values(page: _Page, fields: list[tuple[str, str]]) -> None:
    """Two columns of label: value pairs."""
    kf, vf = _font(7.5), _font(8.5, bold=True)
    col_w = page.w / 2
    label_w = 30 * MM
    half = math.ceil(len(fields) / 2)
    cols = [fields[:half], fields[half:]]
    heights = []
    for i in range(half):
        h = 0.0
        for col in cols:
            if i < len(col):
                k, v = col[i]
                h = max(h, page.text_height([_Para(v, vf)], col_w - label_w - 3 * MM),
                        page.text_height([_Para(k, kf)], label_w))
        heights.append(h + 0.3 * MM)
    page.need(sum(heights))
    y = page.y
    for i in range(half):
        for c, col in enumerate(cols):
            if i < len(col):
                k, v = col[i]
                x = c * col_w
                page.draw_paras([_Para(k, kf, DIM)], x, y + 0.4 * MM, label_w)
                page.draw_paras([_Para(v, vf)], x + label_w, y, col_w - label_w - 3 * MM)
        y += heights[i]
    page.y = y + 1 * MM


def _programme(rec: RecordedSession) -> Any:
    r = rec.row
    try:
        return calculate(DoseProgramme(
            weight_kg=r.get("weight_kg"), dose_mg_per_kg=r.get("dose_mg_per_kg"),
            duration_min=r.get("duration_min"),
            concentration_mg_ml=r.get("concentration_mg_ml"), bag_ml=r.get("bag_ml")))
    except (ValueError, TypeError):
        return None


def _dose_block(page: _Page, rec: RecordedSession, chart: ChartData) -> None:
    page.heading("Dose: programmed and delivered")
    prog = _programme(rec)
    r = rec.row
    last = rec.numerics.get(Channel.DELIVERED_DOSE)
    delivered = None
    if last is not None:
        ok = np.isfinite(last.values)
        if ok.any():
            delivered = float(last.values[ok][-1])
    weight = r.get("weight_kg")
    vol = next((e["volume_infused_ml"] for e in reversed(rec.pump_events)
                if e["volume_infused_ml"] is not None), None)
    final = rec.pump_events[-1]["state"].upper() if rec.pump_events else "no pump data"
    running, pauses = chart.running, chart.pauses
    if running:
        run_text = (f"{len(running)} running segment{'s' if len(running) != 1 else ''}, "
                    + (f"{len(pauses)} pause{'s' if len(pauses) != 1 else ''} "
                       f"({', '.join(duration_text(p.duration_s) for p in pauses)})"
                       if pauses else "no pause"))
    else:
        run_text = "never ran"
    pct = (f"{100 * delivered / prog.dose_mg:.0f} % of programmed"
           if prog is not None and delivered is not None and prog.dose_mg else "")
    rows = [
        ["Programmed", f"{prog.dose_mg:.1f} mg" if prog else "\u2014",
         f"{prog.dose_mg_per_kg:.3g} mg/kg" if prog else "\u2014",
         f"{prog.volume_ml:.1f} mL" if prog else "\u2014",
         f"{prog.rate_ml_h:.1f} mL/h over {prog.duration_min:g} min" if prog else "\u2014"],
        ["Delivered (pump telemetry)", f"{_num(delivered)} mg" + (f" ({pct})" if pct else ""),
         f"{delivered / weight:.3f} mg/kg" if delivered is not None and weight else "\u2014",
         f"{_num(vol)} mL infused",
         f"{run_text}; last state {final}"],
    ]
    page.table([("", 0.2), ("Dose", 0.22), ("per kg", 0.14), ("Volume", 0.14),
                ("Pump", 0.30)], rows, zebra=False)
    if chart.segments:
        _segments_table(page, rec, chart.segments)


def _segments_table(page: _Page, rec: RecordedSession, segments: list[DoseSegment]) -> None:
    """Each running segment (start, end, rate, mL, mg) and each hold between them with its
    length and cause, from the pump's own state reports: a pause is a row of its own."""
    ref = rec.ref_us
    several = len({s.source for s in segments}) > 1
    bold, body = _font(8, bold=True), _font(8)
    pump_colour = QColor(PRINT[Channel.PUMP_RATE])
    rows = []
    for seg in segments:
        what = seg.state if seg.delivering else seg.describe()  # the rate has its column
        if several:
            what = f"{seg.source}: {what}"
        end = _session_time(seg.end_us, ref)
        if seg.open_end:
            end += " (end of record)"
        if seg.delivering:
            cells = [[_Para(what, body, pump_colour)],
                     f"{seg.rate_ml_h:g} mL/h" if seg.rate_ml_h is not None else "\u2014",
                     f"{seg.volume_ml:.2f} mL" if seg.volume_ml is not None else "\u2014",
                     f"{seg.mg:.1f} mg" if seg.mg is not None else "\u2014",
                     "still running at the end of the record" if seg.open_end else ""]
        else:
            if seg.state == "complete":
                note = "infusion complete"
            elif seg.alarms:
                note = "pump alarm: " + "; ".join(seg.alarms)
            else:
                note = "no pump alarm (held or stopped at the pump)"
            if not seg.resumed and seg.state != "complete":
                note += "; not restarted"
            cells = [[_Para(what, bold, WARN if seg.state != "complete" else INK)],
                     "\u2014", "\u2014", "\u2014", note]
        rows.append([cells[0], _session_time(seg.start_us, ref), end,
                     duration_text(seg.duration_s), *cells[1:]])
    page.table([("Pump segment", 0.2), ("From", 0.09), ("To", 0.15), ("Length", 0.1),
                ("Rate", 0.09), ("Volume", 0.09), ("Dose", 0.08), ("Cause / note", 0.2)],
               rows, pt=7.5)


def _stats_block(page: _Page, rec: RecordedSession) -> None:
    page.heading("Values per channel", keep=35 * MM)
    ref = rec.ref_us
    order = [Channel.HR, Channel.PULSE, Channel.SPO2, Channel.NIBP_SYS, Channel.NIBP_DIA,
             Channel.NIBP_MEAN, Channel.RR, Channel.ETCO2, Channel.FICO2, Channel.TEMP,
             Channel.PERF_INDEX, Channel.PUMP_RATE, Channel.VOLUME_INFUSED, Channel.VTBI,
             Channel.DELIVERED_DOSE, Channel.PLASMA_ESTIMATE]
    rows = []
    for st in stats_for(rec, tuple(c for c in order if c in rec.numerics)):
        info = CHANNELS[st.channel]
        prec = info.precision
        label = info.label + (" (model estimate)" if st.channel is Channel.PLASMA_ESTIMATE
                              else "")
        if st.baseline is None or st.channel in _NO_BASELINE:
            base = _DASH
        else:
            base = f"{_num(st.baseline, prec)}  (n={st.baseline_n})"
        rows.append([label, info.display_unit, base,
                     f"{_num(st.minimum, prec)}  at {_session_time(st.min_t_us or 0, ref)}",
                     f"{_num(st.maximum, prec)}  at {_session_time(st.max_t_us or 0, ref)}",
                     _num(st.last, prec), f"{st.n:,}"])
    if not rows:
        page.paragraph([_Para("No numeric data was recorded.", _font(9), DIM)])
        return
    page.table([("Channel", 0.22), ("Unit", 0.09), ("Baseline (median, 10 min before t0)",
                                                     0.2), ("Minimum", 0.16),
                ("Maximum", 0.16), ("Last", 0.08), ("Values", 0.09)], rows)


def _entries_block(page: _Page, rec: RecordedSession, numbered: list[TimelineItem]) -> None:
    page.heading("Entries (notes, cues, assessments, phases, pump changes)", keep=35 * MM)
    body, small = _font(8), _font(7, italic=True)
    rows = []
    for n, it in enumerate(numbered, 1):
        text: list[_Para] = []
        if it.amended and it.entry is not None:
            text.append(_Para(it.text, _font(8, bold=True)))
            e = it.entry
            text.append(_Para(f"amended by {e.author or _DASH} at "
                              f"{_local(e.created_us)}; earlier versions:", small, DIM))
            for h in it.history:
                text.append(_Para(f"{h.text}  ({h.author or _DASH})", _font(8, strike=True),
                                  DIM))
        else:
            text.append(_Para(it.text, body))
        colour = QColor(KIND_PRINT.get(it.kind, "#444444"))
        if it.kind == "pump":
            colour = QColor(PRINT[Channel.PUMP_RATE])
        kind = it.kind + (" (amended)" if it.amended else "")
        rows.append([[_Para(str(n), _font(8, bold=True), colour)],
                     _session_time(it.t_us, rec.ref_us), _local(it.t_us, date=False),
                     [_Para(kind, body, colour)], text, it.author or "\u2014"])
    if not rows:
        page.paragraph([_Para("No entries.", _font(9), DIM)])
        return
    page.table([("#", 0.05), ("Session", 0.09), ("Clock", 0.09), ("Kind", 0.13),
                ("Entry", 0.50), ("By", 0.14)], rows)


def _flowsheet_block(page: _Page, rec: RecordedSession, chart: ChartData) -> None:
    """The chart's rows: every 5 min of session time and at every NIBP (kapmonitor/export/
    flowsheet.py says which value stands for a row and why)."""
    page.heading(FLOWSHEET_TITLE, keep=40 * MM)
    if not chart.rows:
        page.paragraph([_Para("No vital signs were recorded.", _font(9), DIM)])
        return
    page.paragraph([_Para(
        f"HR, SpO\u2082, RR and EtCO\u2082: the value measured nearest the row's time within "
        f"\u00b1{NEAREST_US // _US} s (\u2014: none). NIBP at its own time; a row in bold is "
        "an NIBP measurement between the 5-min rows. Pump: its rate, or its state.",
        _font(7.5), DIM)])
    body, bold = _font(8), _font(8, bold=True)
    rows = []
    for row in chart.rows:
        f = body if row.scheduled else bold
        v = row.values

        def num(ch: Channel, v: Any = v) -> str:
            return _num(v.get(ch), 0)

        nibp = row.nibp.text() if row.nibp is not None else "\u2014"
        pump_colour = WARN if row.pump.isupper() else INK
        rows.append([[_Para(row.session_time, f)], [_Para(_local(row.t_us, date=False), f)],
                     num(Channel.HR), num(Channel.SPO2), [_Para(nibp, bold if row.nibp
                                                                 else body)],
                     num(Channel.RR), num(Channel.ETCO2), [_Para(row.pump, body, pump_colour)]])
    page.table([("Session", 0.11), ("Clock", 0.1), ("HR /min", 0.09), ("SpO\u2082 %", 0.09),
                ("NIBP sys/dia (mean) mmHg", 0.2), ("RR /min", 0.09),
                ("EtCO\u2082 mmHg", 0.1), ("Pump", 0.22)], rows)


def _alarms_block(page: _Page, rec: RecordedSession) -> None:
    page.heading("Alarms (raise, escalation, acknowledgement, end)", keep=35 * MM)
    raises = {id(ev): n for n, ev in enumerate(_alarm_raises(rec), 1)}
    rows = []
    for ev in rec.alarm_events:
        if ev["action"] == "reminder":
            continue
        colour = QColor(ALARM_PRINT.get(ev["priority"], "#333333"))
        if ev["kind"] == "system":
            colour = QColor(INK)
        n = raises.get(id(ev))
        strong = ev["action"] in ("raise", "escalate")
        text = alarm_wording(ev)
        rows.append([[_Para(f"A{n}" if n else "", _font(8, bold=True), colour)],
                     _session_time(int(ev["t_us"]), rec.ref_us),
                     _local(int(ev["t_us"]), date=False),
                     [_Para(alarm_event_word(ev["action"]), _font(8, bold=strong))],
                     [_Para(text, _font(8, bold=strong), colour if strong else INK)],
                     ev["user"] or "\u2014"])
    if not rows:
        page.paragraph([_Para("No alarms were raised.", _font(9), DIM)])
        return
    page.table([("#", 0.05), ("Session", 0.1), ("Clock", 0.09), ("Event", 0.12),
                ("Alarm", 0.5), ("By", 0.14)], rows)


def _signoff_block(page: _Page, rec: RecordedSession) -> None:
    """Lines to sign, for the nurse and the physician: name, signature, date and time.
    Kept together, after everything else, so they sit on the last page under the whole
    record they sign for."""
    label, small = _font(7.5), _font(7, italic=True)
    roles = ("Nurse", "Physician")
    line_gap = 11 * MM
    fm = QFontMetricsF(label, page.p.device())
    block = (QFontMetricsF(_font(11.5, bold=True), page.p.device()).height() + 4 * MM
             + 2 * fm.height() + len(roles) * (line_gap + fm.height() + 2 * MM))
    page.need(block)
    page.heading("Sign-off", keep=block)
    clin = rec.row.get("clinicians")
    page.paragraph([_Para(
        "Reviewed and signed as a true record of this session"
        + (f" (clinicians recorded: {clin})" if clin else "") + ".", small, DIM)])
    p = page.p
    cols = (("Name (print)", 0.0, 0.3), ("Signature", 0.33, 0.34), ("Date / time", 0.7, 0.3))
    for role in roles:
        page.y += line_gap
        p.setFont(_font(8.5, bold=True))
        p.setPen(INK)
        p.drawText(QRectF(0, page.y - fm.height(), 22 * MM, fm.height()),
                   Qt.AlignmentFlag.AlignLeft, role)
        x0 = 22 * MM
        w = page.w - x0
        p.setPen(QPen(INK, 0.3 * MM))
        for _, start, width in cols:
            p.drawLine(QPointF(x0 + start * w, page.y), QPointF(x0 + (start + width) * w - 2 * MM,
                                                                page.y))
        p.setFont(label)
        p.setPen(DIM)
        for text, start, width in cols:
            p.drawText(QRectF(x0 + start * w, page.y + 0.5 * MM, width * w, fm.height()),
                       Qt.AlignmentFlag.AlignLeft, text)
        page.y += fm.height() + 2 * MM


def _explain_block(page: _Page, rec: RecordedSession) -> None:
    f = _font(7.5)
    lines = [
        "Session times (T+mm:ss) count from the infusion start (t0; T- in the baseline), "
        "as on the bedside screen; clock times are local to the machine that wrote this "
        "report.",
        "On the trends, numbered markers are entries and A-numbers are alarm raises (tables "
        "below); gaps in a curve are periods without a valid measurement (device "
        "disconnected, probe off, value flagged invalid).",
        f"Cp est. is the plasma concentration predicted by a pharmacokinetic model from the "
        f"pump's telemetry: {MODEL_ESTIMATE_LABEL}.",
        "The dose table follows the pump's own state reports: every running segment and "
        "every pause or stop between them, with its length and the pump alarm that caused "
        "it. The flowsheet has a row every 5 min and one at every NIBP measurement.",
        "Nothing in this record is ever deleted: a corrected entry keeps every earlier "
        "version (struck through in the entries table).",
        DISCLAIMER + ".",
    ]
    paras = [_Para("\u2022 " + t, f, DIM) for t in lines]
    # the heading stays with its text: a title alone at the foot of a page explains nothing
    page.heading("How to read this record", 10, keep=page.text_height(paras, page.w) + 2 * MM)
    page.paragraph(paras)


# ----------------------------------------------------------------------------- render


def _render(rec: RecordedSession, chart: ChartData, writer: QPdfWriter,
            total: int | None) -> int:
    painter = QPainter()
    if not painter.begin(writer):
        raise OSError("could not start drawing the PDF")
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    try:
        page = _Page(painter, writer.width(), writer.height(), rec, total, writer.newPage)
        numbered = _numbered(rec)
        marks = _marks(rec, numbered)
        _title_block(page, rec)
        _dose_block(page, rec, chart)
        lo, hi = rec.start_us, max(rec.end_us, rec.start_us + _MIN)
        pad = (hi - lo) // 100
        remaining = page.bottom - page.y
        series = _trend_series(rec)  # the rows drawn share what is left of page 1
        n_rows = max(1, sum(1 for r in ROWS if any(c in series for c in r.channels)))
        row_h = max(14 * MM, min(24 * MM, (remaining - 30 * MM) / n_rows))
        _draw_trends(page, rec, marks, lo - pad, hi + pad, row_h, "Trends, whole session")
        span_min = (hi - lo) / _MIN
        if span_min > DETAIL_AFTER_MIN:
            w = int(DETAIL_WINDOW_MIN * _MIN)
            start = lo
            while start < hi:
                page.new_page()
                a = _session_time(start, rec.ref_us)
                b = _session_time(min(start + w, hi), rec.ref_us)
                _draw_trends(page, rec, marks, start, start + w, 30 * MM,
                             f"Trends, detail: session time {a} to {b}")
                start += w
        _explain_block(page, rec)  # how to read what follows, before the tables
        if page.y > page.h / 2:  # the flowsheet on a page of its own rather than split
            page.new_page()
        _flowsheet_block(page, rec, chart)
        _stats_block(page, rec)
        _entries_block(page, rec, numbered)
        _alarms_block(page, rec)
        _signoff_block(page, rec)
        return page.page
    finally:
        painter.end()


def _writer(target: str | QIODevice, rec: RecordedSession) -> QPdfWriter:
    w = QPdfWriter(target)
    w.setResolution(DPI)
    w.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    w.setPageMargins(QMarginsF(14, 12, 14, 10), QPageLayout.Unit.Millimeter)
    w.setTitle(f"KAP Monitor session {rec.session_id} \u2014 {rec.meta.patient or ''}")
    w.setCreator("KAP Monitor")
    return w


def render_report(rec: RecordedSession, path: str | Path) -> int:
    """Write the report of ``rec`` to ``path``; returns the number of pages. The layout
    runs once into memory to count the pages, then into the file with "page n of N"."""
    _ensure_app()
    chart = ChartData.from_reader(SessionReader(rec.engine, rec.session_id), rec.meta,
                                  end_us=rec.end_us)
    buf = QBuffer()  # its own byte array (a temporary one would be freed under it)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    dry = _writer(buf, rec)
    total = _render(rec, chart, dry, None)
    del dry
    buf.close()
    writer = _writer(str(path), rec)
    pages = _render(rec, chart, writer, total)
    del writer
    return pages


_APP: QGuiApplication | None = None


def _ensure_app() -> None:
    """Text needs a QGuiApplication; a command-line export has none, and may run where
    there is no display: then one is made on the offscreen platform (a PDF needs no
    screen). It is a QApplication, so widgets made later in the same process still work."""
    global _APP
    if QCoreApplication.instance() is None:
        from PySide6.QtWidgets import QApplication

        _APP = QApplication(["kapmonitor", "-platform", "offscreen"])


def export_session(engine: Engine, session_id: int, out_path: str | Path, *,
                   overwrite: bool = False) -> ExportResult:
    """Write the PDF report of session ``session_id`` to ``out_path`` (atomically: a failed
    export leaves nothing behind; an existing file only with ``overwrite``). The result
    lists the file, pages and counts, and the warnings (OPEN, RECOVERED, DEMO) the report
    also prints on its first page."""
    out = Path(out_path)
    rec = RecordedSession.load(engine, session_id)
    with atomic_file(out, overwrite=overwrite) as tmp:
        pages = render_report(rec, tmp)
    numbered = _numbered(rec)
    return ExportResult(
        paths=[out],
        counts={"pages": pages, "entries": len(numbered),
                "alarm events": len(rec.alarm_events), "channels": len(rec.numerics)},
        warnings=rec.meta.status_warnings())


#: the name the issue gives the entry point
export_pdf = export_session



# ----------------------------------------------------------------------------- print / PDF


def report_file_name(engine: Engine, session_id: int) -> str:
    """'kap-session-12-KAP-0147.pdf': the session and the pseudonym, so a file found later
    in a downloads folder says whose chart it is (the pseudonym, never a name)."""
    meta = load_meta(engine, session_id)
    who = "".join(c if c.isalnum() or c in "-_" else "-" for c in (meta.patient or ""))
    return f"kap-session-{session_id}" + (f"-{who}" if who else "") + ".pdf"


def _choose_path(parent: Any, suggested: str) -> str:
    from PySide6.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, "Print / PDF: save the chart record",
                                          suggested, "PDF (*.pdf)")
    return path


def _open_in_viewer(path: Path) -> bool:
    """The system's PDF viewer prints it: the print dialog, the printer's options and
    duplex are the viewer's, which every clinic computer has and already knows."""
    from PySide6.QtCore import QUrl
    from PySide6.QtGui import QDesktopServices

    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def _warn(parent: Any, text: str) -> None:
    from PySide6.QtWidgets import QMessageBox

    QMessageBox.warning(parent, "Chart record not written", text)


def print_or_save_report(parent: Any, engine: Engine, session_id: int, *,
                         directory: str | Path | None = None,
                         choose_path: Callable[[Any, str], str] | None = None,
                         open_file: Callable[[Path], object] | None = None,
                         warn: Callable[[Any, str], object] | None = None) -> Path | None:
    """"Print / PDF...": ask where to save the chart record, write it, and open it in the
    system's PDF viewer to print. Returns the file, or None when the user cancelled or the
    export failed (then ``warn`` says why; nothing half-written is left). The save dialog
    has already asked before replacing a file, so an existing one is overwritten.
    ``choose_path``, ``open_file`` and ``warn`` are for tests (no dialogs offscreen)."""
    suggested = report_file_name(engine, session_id)
    if directory is not None:
        suggested = str(Path(directory) / suggested)
    path = (choose_path or _choose_path)(parent, suggested)
    if not path:
        return None
    out = Path(path)
    if out.suffix.lower() != ".pdf":
        out = out.with_name(out.name + ".pdf")
    try:
        export_session(engine, session_id, out, overwrite=True)
    except Exception as exc:  # a full disk or a folder gone must not end the app
        (warn or _warn)(parent, f"The chart record could not be written to {out}: {exc}")
        return None
    (open_file or _open_in_viewer)(out)
    return out


def _ask_at_close(parent: Any) -> bool:
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setWindowTitle("Session closed")
    box.setText("The session is closed. Print or save its chart record (PDF) now?")
    box.setInformativeText("It can also be made later from the replay, or with "
                           "kapmonitor export SESSION --format pdf.")
    yes = box.addButton("Print / PDF\u2026", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(yes)
    box.exec()
    return box.clickedButton() is yes


def offer_report_at_close(parent: Any, engine: Engine, session_id: int, *,
                          ask: Callable[[Any], bool] | None = None,
                          **options: Any) -> Path | None:
    """When a session closes, offer "Print / PDF..." (the chart record is made while the
    clinician is still at the bedside to sign it, not left for a replay later). ``ask``
    replaces the question in tests; ``options`` go to :func:`print_or_save_report`."""
    if not (ask or _ask_at_close)(parent):
        return None
    return print_or_save_report(parent, engine, session_id, **options)
