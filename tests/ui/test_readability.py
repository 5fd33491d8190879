"""Readable from 2 m (issue 13, item 8): the numbers a nurse reads across a dim room are
measured on the rendered window, not taken from font settings.

The window runs on the real data path (tests/ui/sim.py: monitor and pump peers on
pseudo-terminals, 10x time) with the pump running and a high-priority SpO2 alarm, is
rendered offscreen (``QWidget.grab``), and for each number the bounding box of the pixels
in its text colour inside its widget is measured: that is the height of the glyphs on the
screen. Flashing elements are held in their unlit phase for the render, so every text is in
its own colour on a dark background.

At 1024x768 every key widget must be visible, inside the window and clear of the others;
marker labels on the trends must not overprint each other or leave the plot; F11 toggles
full screen.

Rendering the live view for the documentation at several sizes (docs/screenshots/
live_1024x768.png, live_1600x1000.png, live_1920x1080.png, with the synthetic session of
tests/ui/screenshots.py)::

    .venv/bin/python -m tests.ui.test_readability [OUT_DIR]
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QImage
from PySide6.QtWidgets import QApplication, QLabel, QWidget

from kapmonitor.alarm_limits import Priority
from kapmonitor.model import Channel
from kapmonitor.ui import theme
from kapmonitor.ui.main_window import SECONDARY_NOTICE, MainWindow

from .sim import SimRoom

WAIT_MS = 20_000
#: a time at which high (2 Hz) and medium (0.5 Hz) flashes are both in their unlit phase
UNLIT_S = 1.3
#: a pixel is text-coloured when no channel is further than this from the text colour
#: (the strokes' cores are the pure colour; anti-aliased edges blend into the background)
TOLERANCE = 48

#: minimum glyph heights in pixels at 1600x1000
TARGETS = {"hr": 70, "spo2": 70, "bp": 55, "rr": 40, "etco2": 40, "temp": 40,
           "clock": 40, "pump rate": 40, "alarm text": 40}


# -- measuring -----------------------------------------------------------------------------


def widget_rect(widget: QWidget, win: QWidget) -> QRect:
    """``widget``'s rectangle in ``win``'s coordinates."""
    return QRect(widget.mapTo(win, QPoint(0, 0)), widget.size())


def ink_box(img: QImage, rect: QRect, colour: str) -> QRect | None:
    """Bounding box (image coordinates) of the pixels within ``TOLERANCE`` of ``colour``
    inside ``rect``; None when there are none."""
    img = img.convertToFormat(QImage.Format.Format_RGB32)
    rect = rect.intersected(img.rect())
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes())
    arr = arr.reshape(img.height(), img.bytesPerLine() // 4, 4)
    sub = arr[rect.top():rect.bottom() + 1, rect.left():rect.right() + 1, :3].astype(np.int16)
    c = QColor(colour)
    target = np.array([c.blue(), c.green(), c.red()], dtype=np.int16)  # BGRA in memory
    mask = np.abs(sub - target).max(axis=2) <= TOLERANCE
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return QRect(rect.left() + int(cols[0]), rect.top() + int(rows[0]),
                 int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1)


def targets(win: MainWindow) -> dict[str, tuple[QWidget, str, int]]:
    """What is measured: name -> (widget, its text colour, inset that skips a border)."""
    tiles = win.tiles.tiles
    out: dict[str, tuple[QWidget, str, int]] = {
        key: (tiles[key].value, tiles[key].spec.colour, 0)  # type: ignore[attr-defined]
        for key in ("hr", "spo2", "bp", "rr", "etco2", "temp")}
    out["clock"] = (win.header.clock, theme.TEXT, 0)
    out["pump rate"] = (win.pump.rate.value, theme.PUMP_ORANGE, 0)
    chip = win.alarm_bar.chips[0]
    assert chip.alarm is not None
    out["alarm text"] = (chip, theme.ALARM_COLOURS[chip.alarm.priority], 6)
    return out


def render(win: MainWindow, qtbot, size: tuple[int, int]) -> QImage:
    """Resize, let the layouts and font fits run, draw a frame, hold the flashes unlit,
    and grab the window as it would be on the screen."""
    win.resize(*size)
    qtbot.waitUntil(lambda: (win.width(), win.height()) == size, timeout=5000)
    for _ in range(3):  # layouts run on posted events; fonts are fitted on the resizes
        QApplication.processEvents()
    win.frame()
    win.tiles.flash(UNLIT_S)
    win.alarm_bar.flash(UNLIT_S)
    assert not win.alarm_bar.chips[0].lit
    return win.grab().toImage()


def glyph_heights(win: MainWindow, img: QImage) -> dict[str, int]:
    heights = {}
    for name, (w, colour, inset) in targets(win).items():
        box = ink_box(img, widget_rect(w, win).adjusted(inset, inset, -inset, -inset), colour)
        heights[name] = box.height() if box is not None else 0
    return heights


def live_window(room: SimRoom, make_window, qtbot) -> MainWindow:
    """The window with every number on show: the pump running (so the clock counts from
    the infusion start) and SpO2 at 85 % (a high-priority alarm in the bar)."""
    win = make_window(room.session)
    assert room.pump is not None
    room.pump.start(room.clock())
    room.vitals.values[Channel.SPO2] = 85.0
    tiles = win.tiles.tiles

    def ready() -> bool:
        chip = win.alarm_bar.chips[0]
        return (all(t.shown_text not in ("", "--", "--/--") for t in tiles.values())
                and tiles["spo2"].shown_text == "85"
                and win.header.clock.text().startswith("T+")
                and win.pump.rate.value.text() == "52.5"
                and chip.alarm is not None and chip.alarm.key == "spo2.low"
                and chip.alarm.priority is Priority.HIGH)

    qtbot.waitUntil(ready, timeout=WAIT_MS)
    return win


# -- the numbers -----------------------------------------------------------------------------


def test_numbers_read_from_two_metres_at_1600x1000(room: SimRoom, make_window, qtbot) -> None:
    win = live_window(room, make_window, qtbot)
    small = glyph_heights(win, render(win, qtbot, (1280, 800)))
    heights = glyph_heights(win, render(win, qtbot, (1600, 1000)))
    print("glyph heights at 1600x1000:", heights)
    for name, target in TARGETS.items():
        assert heights[name] >= target, (name, heights[name], target)
    # the alarm headline's capitals themselves (not only its asterisks and descenders)
    chip = win.alarm_bar.chips[0]
    assert QFontMetricsF(chip.font()).capHeight() >= 40
    assert chip.shown_text.startswith("*** SpO2 LOW 85 %")
    # HR and SpO2 are the largest numbers, NIBP next, then RR, EtCO2 and Temp
    assert min(heights["hr"], heights["spo2"]) >= heights["bp"]
    assert heights["bp"] > max(heights["rr"], heights["etco2"], heights["temp"])
    # a bigger window means bigger digits, not only bigger tiles
    big = glyph_heights(win, render(win, qtbot, (1920, 1080)))
    print("glyph heights at 1280x800:", small, "at 1920x1080:", big)
    for name in ("hr", "spo2", "bp", "rr", "etco2", "temp", "pump rate"):
        assert small[name] < heights[name] <= big[name], name
    # the fonts are fitted when the window is resized, not per frame: a minute of frames
    # with changing values (the pump and monitor keep streaming) fits nothing again
    labels = [t.value for t in win.tiles.tiles.values()] + [win.header.clock,
                                                            win.pump.rate.value]
    fits = [lab.fits for lab in labels]  # type: ignore[attr-defined]
    clock = win.header.clock.text()
    qtbot.waitUntil(lambda: win.header.clock.text() != clock, timeout=WAIT_MS)
    for _ in range(30):
        win.frame()
    assert [lab.fits for lab in labels] == fits  # type: ignore[attr-defined]


# -- 1024x768 ---------------------------------------------------------------------------------


def _visible(ws: list[QWidget]) -> list[QWidget]:
    return [w for w in ws if w.isVisible()]


def _assert_apart(win: QWidget, widgets: dict[str, QWidget]) -> None:
    rects = {name: widget_rect(w, win) for name, w in widgets.items()}
    for (a, ra), (b, rb) in itertools.combinations(rects.items(), 2):
        assert not ra.intersects(rb), f"{a} {ra} overlaps {b} {rb}"


def _assert_text_fits(label: QLabel) -> None:
    fm = label.fontMetrics()
    for line in label.text().split("\n"):
        assert fm.horizontalAdvance(line) <= label.width() + 1, (line, label.width())


def test_window_fits_1024x768_without_overlap(room: SimRoom, make_window, qtbot) -> None:
    win = live_window(room, make_window, qtbot)
    assert win.minimumSizeHint().width() <= 1024 and win.minimumSizeHint().height() <= 768
    render(win, qtbot, (1024, 768))
    assert (win.width(), win.height()) == (1024, 768)
    h, bar, pump = win.header, win.alarm_bar, win.pump
    tiles = win.tiles.tiles
    regions: dict[str, QWidget] = {"header": h, "alarm bar": bar, "trends": win.trends,
                                   "pump": pump, "notes": win.notes,
                                   **{f"tile {k}": t for k, t in tiles.items()}}
    header_items = dict(zip(("patient", "DEMO", "room", "clock", "phase", "notice", "next",
                             "menu"), _visible([h.patient, h.demo, h.room, h.clock, h.phase,
                                                h.notice, h.next_btn, h.menu_btn]), strict=False))
    bar_items = {f"w{i}": w for i, w in enumerate(_visible([*bar.chips, bar.bell,
                                                            bar.audio_label, bar.ack,
                                                            bar.pause]))}
    cells = [pump.rate, pump.infused, pump.vtbi, pump.mg, pump.mgkg, pump.cp]
    pump_items = {f"w{i}": w for i, w in enumerate(_visible(
        [pump.title, pump.state, pump.programme, *cells, pump.spark, pump.estimate_label]))}
    everything = [*regions.values(), *header_items.values(), *bar_items.values(),
                  *pump_items.values(), *[t.value for t in tiles.values()]]
    for w in everything:
        assert w.isVisible(), w
        assert win.rect().contains(widget_rect(w, win)), (w, widget_rect(w, win))
    _assert_apart(win, regions)
    _assert_apart(win, header_items)
    _assert_apart(win, bar_items)
    _assert_apart(win, pump_items)
    for key, t in tiles.items():  # inside each tile: label, unit, value, limits, status
        parts = {n: getattr(t, n) for n in ("name", "unit", "value", "status", "lim_hi",
                                            "lim_lo", "limits_label", "mean")
                 if getattr(t, n, None) is not None and getattr(t, n).isVisible()}
        assert t.rect().contains(QRect(QPoint(0, 0), t.size()))
        for n, w in parts.items():
            assert t.rect().contains(w.geometry()), (key, n)
        _assert_apart(t, parts)
    # every text is whole: nothing cut at a widget's edge (elided texts say so with "…")
    for lab in (h.phase, h.notice, h.demo, *[t.name for t in tiles.values()],
                *[t.value for t in tiles.values()], h.clock, pump.rate.value, pump.cp.value):
        _assert_text_fits(lab)
    assert h.patient.text() == h.patient.fullText() == "KAP-UI-1"
    # the window says what it is, where one looks first
    assert h.notice.isVisible() and h.notice.text().replace("\n", " ") == SECONDARY_NOTICE
    assert win.alarm_bar.chips[0].shown_text.startswith("*** SpO2 LOW")

    # trend titles inside their plots, clear of each other; no SI prefix on the waves
    trends = win.trends.trends
    for plot, title in zip(trends.plots, trends.titles, strict=True):
        assert plot.getViewBox().sceneBoundingRect().contains(title.sceneBoundingRect())
        assert plot.getAxis("left").labelText == ""
    for strip in win.trends.waves:
        axis = strip.getPlotItem().getAxis("left")
        assert not axis.autoSIPrefix and axis.labelText == ""
        assert "x0.0" not in axis.labelString()
        assert strip.getPlotItem().getViewBox().sceneBoundingRect().contains(
            strip.title.sceneBoundingRect())

    # marker labels: a burst of entries at the present (the right edge), none overprinting
    now = room.session.clock()
    for i, text in enumerate(("Touch & stop-signal agreed", "Music started", "Tearful",
                              "MOAA/S 4", "Breathe slowly", "Safe place", "BP up")):
        win.trends.add_marker(now - i * 4_000_000, text, "#6fc2a8")
    QApplication.processEvents()
    vb = trends.plots[0].getViewBox()
    view = vb.sceneBoundingRect()
    shown = [line.label for _, lines in trends._markers for line in lines[:1]
             if getattr(line, "label", None) is not None and line.label.isVisible()]
    assert len(shown) >= 3
    boxes = [lab.sceneBoundingRect() for lab in shown]
    for box in boxes:
        assert view.contains(box), (box, view)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.intersected(b).isValid() or a.intersected(b).isEmpty(), (a, b)
    newest = max(trends._placed, key=lambda m: m[0])[1].label
    assert newest.isVisible()  # the newest entry always keeps its label
    assert "&" in newest.toPlainText()  # an ampersand is text, not a mnemonic


def test_f11_toggles_full_screen(room: SimRoom, make_window, qtbot) -> None:
    win = make_window(room.session)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    assert not win.isFullScreen()
    qtbot.keyClick(win.notes.note, Qt.Key.Key_F11)
    qtbot.waitUntil(win.isFullScreen, timeout=5000)
    assert win.windowState() & Qt.WindowState.WindowFullScreen
    assert win.fullscreen_action.isChecked()
    qtbot.keyClick(win.notes.note, Qt.Key.Key_F11)
    qtbot.waitUntil(lambda: not win.isFullScreen(), timeout=5000)
    assert not win.fullscreen_action.isChecked()
    # the action is in the Session menu too, where it can be found without the key
    assert win.fullscreen_action in win.header.menu_btn.menu().actions()


def test_an_ampersand_in_a_cue_is_shown_not_eaten(room: SimRoom, make_window) -> None:
    win = make_window(room.session)
    button = win.notes.cue_buttons["SET-CONSENT"]
    assert button.text().startswith("Touch && stop-signal agreed")


# -- documentation screenshots ---------------------------------------------------------------

SIZES = ((1024, 768), (1600, 1000), (1920, 1080))


def render_docs(out: Path) -> None:
    """The live view of tests/ui/screenshots.py (a session 33 min into the infusion with a
    high SpO2 alarm) at each of ``SIZES``, as docs/screenshots/live_WxH.png."""
    import shutil
    import tempfile

    from . import screenshots

    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    theme.apply_theme(app)
    made = screenshots.MainWindow
    for w, h in SIZES:

        class Sized(made):  # type: ignore[misc, valid-type]
            """The screenshot script's window, at this size instead of 1280x800."""

            def resize(self, *_: object, _w: int = w, _h: int = h) -> None:
                super().resize(_w, _h)

        screenshots.MainWindow = Sized  # type: ignore[misc]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                work, shots = Path(tmp) / "work", Path(tmp) / "shots"
                work.mkdir()
                shots.mkdir()
                screenshots.live_view(app, shots, work)
                shutil.copy(shots / "live_alarm.png", out / f"live_{w}x{h}.png")
        finally:
            screenshots.MainWindow = made  # type: ignore[misc]
        print(f"live_{w}x{h}.png")


if __name__ == "__main__":
    render_docs(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/screenshots"))
