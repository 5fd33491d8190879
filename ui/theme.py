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
"""

from __future__ import annotations

from importlib import resources

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

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
    "apply_theme",
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


def stylesheet() -> str:
    """The application stylesheet: ``resources/ui_style.qss`` with the palette filled in."""
    text = resources.files("kapmonitor.resources").joinpath("ui_style.qss").read_text("utf-8")
    subs = {"BG": BG, "PANEL2": PANEL_2, "PANEL": PANEL, "BORDER": BORDER, "TEXT_DIM": TEXT_DIM,
            "TEXT_FAINT": TEXT_FAINT, "TEXT": TEXT, "ACCENT": "#4c8dff"}
    for key in sorted(subs, key=len, reverse=True):
        text = text.replace("@" + key, subs[key])
    return text


def apply_theme(app: QApplication) -> None:
    """Dark palette (for widgets the stylesheet does not reach) plus the stylesheet."""
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
