"""Notes, cues and assessments, and the timeline of entries (DESIGN §6; clinical.md §7, §8).

Why it works this way:

- Keyboard first. The note field has the focus from the start: type, press Enter, and the
  observation is logged at the session time of the Enter key (not of the disk write). Cues
  and observation tags fire on their library shortcuts (F-keys, Alt+letter: they never
  steal typing from the note field) as well as on buttons. Ctrl+L returns to the note field,
  Ctrl+E amends the selected entry.
- Back-timing, because a therapist often writes a moment after it happened. A note that
  starts with ``-5`` and a space is logged 5 minutes before the Enter key (``-1:30`` is
  90 s; the field says the time it will get while typing), the fastest form there is: no
  mouse, no second field. ``set_pending_time`` (a click on a trend) makes the next note or
  assessment land at that time instead; a banner says so until it is used, or cleared with
  Esc or its button. The CLI does the same with ``note --at`` / ``--at-session-time``.
- Assessments are keyboard-first too: Alt+1.. picks a scale (the digit is on its button),
  digits type the level (``-3`` for RASS) or one digit per item (Aldrete ``2 2 2 1 2``,
  each moves on to the next item), Enter logs, also from the assessment's note, Esc
  cancels. Every level's anchor is shown whole, word-wrapped, and the one typed is lit.
  A scale opened by its shortcut gives the panel back to the cues once logged.
- Nothing waits on the disk: every entry goes to ``session.add_entry``, which returns a
  future from the session's writer thread; the entry shows at once (as "saving") and is
  marked saved, or NOT SAVED with the reason, when the future completes (via a queued
  relay, never touching widgets from the writer thread).
- The record is append-only. Amending an entry writes a correction that points at it
  (``session.amend_entry``); the timeline shows the current text marked "amended", and the
  original under it (expand the row, or hover for a tooltip).
- Assessments are scored by ``Scale.score``; a missing or out-of-range item is refused with
  the scale's own reason, shown under the form. Items start unscored ("–"), so an item the
  rater skipped is a missing item, never a silent zero.
- The timeline is newest first, so the latest entry is always in view without scrolling.
  Times are session time, minutes:seconds since the infusion start (negative in baseline).
"""

from __future__ import annotations

import contextlib
import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFocusEvent,
    QFont,
    QFontMetrics,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QResizeEvent,
    QShortcut,
    QValidator,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kapmonitor.cues import Cue, CueLibrary
from kapmonitor.scales import Scale, ScaleError, load_scales

from . import theme
from .bridge import Relay

__all__ = ["BEDSIDE_SCALES", "KIND_COLOURS", "KIND_ICON", "MAX_BACK_MIN", "NotesPanel",
           "ScoreField", "TimelineEntry", "format_session_time", "parse_back_time",
           "scale_order", "wrap_text"]

_US = 1_000_000

KIND_COLOURS = {
    "observation": "#8fa3bf",
    "cue": "#6fc2a8",
    "assessment": "#c6a46b",
    "phase": "#e8e8e8",
    "gap": "#9a9a9a",
    "alarm": "#ffb000",  # an alarm that cleared by itself, until reviewed
    "alarm-reviewed": "#9a9a9a",
}
KIND_ICON = {"observation": "\u25cf", "cue": "\u25c6", "assessment": "\u25a0",
             "phase": "\u2691", "gap": "\u2026", "alarm": "\u26a0",
             "alarm-reviewed": "\u26a0"}
#: scales with more items than this are entered as a total by default (from a paper form)
MAX_ITEM_BOXES = 12
#: The scales rated during a session (clinical.md §7, "When in KAP session"), in the order
#: a nurse reaches for them: sedation, recovery, the patient's own numbers, then
#: dissociation and psychotomimetic effects. They get a button; the others (rated before or
#: after the session, mostly from paper forms) are under "More".
BEDSIDE_SCALES = ("moaa-s", "rass", "aldrete", "anxiety-nrs", "nausea-nrs", "cadss",
                  "bprs-positive")
#: after the bedside scales, the ones most likely at the bedside: PHQ-9 before each session
_NEXT_SCALES = ("phq-9", "madrs", "qids-sr16")
#: Alt+<digit> picks a scale, in ``scale_order``: Alt+1 is the first
SCALE_DIGITS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
#: A back-timed entry may be at most this far before the Enter key: longer than a KAP
#: session with its recovery, so "-500" (a typo) is refused instead of landing hours back.
MAX_BACK_MIN = 240
#: The least the timeline keeps while the assessment form is open: its header and the
#: newest entry. Scoring takes seconds and a shortcut-opened form closes once logged; the
#: whole anchor text matters more in those seconds than older rows.
TIMELINE_MIN_PX = 64
#: the cue tabs' height, as before (the timeline gets the rest)
CUE_TABS_MAX_PX = 230
CHOSEN_BG = "#2c4a78"
_NUMBER_UNIT = re.compile(r"(\d) (?=[a-zA-Z%])")
_DECIMAL = re.compile(r"^[-+]?\d{0,3}(?:\.\d{0,2})?$")
_BACK = re.compile(r"^-(\d{1,3})(?::([0-5]\d))?(?:\s*(?:min|m))?(?=\s|$)\s*", re.IGNORECASE)


def format_session_time(t_us: int, ref_us: int | None) -> str:
    """'12:34' after the infusion start, '-03:10' in baseline; minutes may pass 59."""
    if ref_us is None:
        return "--:--"
    s = (t_us - ref_us) / _US
    sign = "-" if s < 0 else ""
    s = abs(s)
    return f"{sign}{int(s // 60):02d}:{int(s % 60):02d}"


def parse_back_time(text: str) -> tuple[int | None, str]:
    """``"-5 Vomited"`` -> (5 min in µs, ``"Vomited"``); ``"-1:30 x"`` -> 90 s; ``"-5m x"``
    and ``"-5min x"`` too. Without the prefix: (None, text). The prefix needs a space (or
    the end) after it, so "-5mg" or "- calm" are notes, not times."""
    m = _BACK.match(text)
    if m is None:
        return None, text
    seconds = int(m.group(1)) * 60 + int(m.group(2) or 0)
    return seconds * _US, text[m.end():]


def scale_order(scales: Mapping[str, Scale]) -> list[str]:
    """Bedside scales first, then PHQ-9, MADRS, QIDS, then the rest in file order."""
    first = [s for s in (*BEDSIDE_SCALES, *_NEXT_SCALES) if s in scales]
    return first + [s for s in scales if s not in first]


def _fmt_score(v: float, signed: bool) -> str:
    v = float(v) + 0.0
    return f"+{v:g}" if signed and v > 0 else f"{v:g}"


@dataclass
class TimelineEntry:
    """One row of the timeline. ``entry_id`` is the latest version's annotation id (None
    while saving or for rows the app wrote itself); ``history`` the replaced texts;
    ``written_us`` when a back-timed entry was typed (None: at its own time)."""

    key: int
    t_us: int
    kind: str
    text: str
    author: str
    code: str = ""
    value: float | None = None
    entry_id: int | None = None
    state: str = "saving"  # saving | saved | failed
    error: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)  # (text, author)
    item: QTreeWidgetItem | None = None
    amendable: bool = True
    written_us: int | None = None


class _ScoreValidator(QValidator):
    """Lets a :class:`ScoreField` hold only a score or the start of one (also on paste)."""

    def __init__(self, field: ScoreField) -> None:
        super().__init__(field)  # no Python reference back: Qt owns it, with the field

    def validate(self, text: str, pos: int) -> object:  # type: ignore[override]
        field = self.parent()
        state = (field.state(text) if isinstance(field, ScoreField)
                 else QValidator.State.Invalid)
        return (state, text, pos)


class ScoreField(QLineEdit):
    """One score typed as digits: a level, an item or a total.

    Why a line edit and not a spin box: a score is typed, not stepped. Keys that cannot
    lead to a score in the item's range are refused with the range (``refused``); a digit
    that does not extend the value starts it again, so "3" then "4" on MOAA/S is 4, not a
    refused 34; "-" starts a negative level (RASS "-3"). When no further digit could make
    another valid value ("2" of 0-2, "10" of 0-10) the field says it is ``completed``, and
    a multi-item form moves on to the next item. Empty means not scored: a skipped item is
    refused as missing by ``Scale.score``, never recorded as a silent zero."""

    completed = Signal()
    #: Enter, whatever the text: the form scores (QLineEdit.returnPressed is not emitted
    #: for an empty or unfinished field, which must be refused with a reason instead)
    entered = Signal()
    #: Backspace in an empty field: back to the previous item
    back = Signal()
    #: a key refused here, with the reason
    refused = Signal(str)

    def __init__(self, lo: float, hi: float, integer: bool, *, signed: bool, where: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lo, self.hi, self.integer, self.signed, self.where = lo, hi, integer, signed, where
        self._valid: frozenset[str] = frozenset()
        if integer:
            vals = range(math.ceil(lo), math.floor(hi) + 1)
            self._valid = frozenset([str(v) for v in vals]
                                    + [f"+{v}" for v in vals if signed and v > 0])
        self.setValidator(_ScoreValidator(self))
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setPlaceholderText("\u2013")
        self.setFont(theme.font(20, bold=True, numbers=True))
        fm = QFontMetrics(self.font())
        widest = max(self._valid, key=fm.horizontalAdvance) if self._valid else "100.0"
        self.setFixedWidth(max(40, fm.horizontalAdvance(widest) + 24))
        self.setMinimumHeight(fm.height() + 12)
        self.setToolTip(f"{where}: {self.range_text()}")

    def range_text(self) -> str:
        lo = f"{self.lo:g}"
        hi = f"+{self.hi:g}" if self.signed and self.hi > 0 else f"{self.hi:g}"
        return f"{lo} to {hi}"

    # -- what the text may be ------------------------------------------------------------

    def state(self, text: str) -> QValidator.State:
        if text == "":
            return QValidator.State.Intermediate
        if self.integer:
            if text in self._valid:
                return QValidator.State.Acceptable
            if any(v.startswith(text) for v in self._valid):
                return QValidator.State.Intermediate
            return QValidator.State.Invalid
        if not _DECIMAL.match(text):
            return QValidator.State.Invalid
        if text in ("-", "+", ".", "-.", "+."):
            return (QValidator.State.Intermediate if not text.startswith("-") or self.lo < 0
                    else QValidator.State.Invalid)
        v = float(text)
        if v < 0 and self.lo >= 0:
            return QValidator.State.Invalid
        if self.lo <= v <= self.hi:
            return QValidator.State.Acceptable
        return (QValidator.State.Invalid if abs(v) > max(abs(self.lo), abs(self.hi))
                else QValidator.State.Intermediate)

    def is_complete(self) -> bool:
        """A whole score that no further digit could turn into another one."""
        t = self.text()
        return (self.integer and t in self._valid
                and not any(v != t and v.startswith(t) for v in self._valid))

    def value(self) -> float | None:
        """The score, or None while empty or unfinished."""
        t = self.text()
        if self.state(t) is not QValidator.State.Acceptable:
            return None
        return float(t)

    def setValue(self, value: float | None) -> None:
        """Set (or with None clear) the score; refused outside the item's range."""
        if value is None:
            self.clear()
            return
        text = f"{float(value):g}"
        if self.state(text) is not QValidator.State.Acceptable:
            raise ScaleError(f"{self.where}: {text} is out of range "
                             f"(allowed {self.range_text()})")
        self.setText(text)

    # -- keys ----------------------------------------------------------------------------

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.selectAll()  # the next digit replaces the value

    def keyPressEvent(self, event: QKeyEvent) -> None:
        mods = event.modifiers() & (Qt.KeyboardModifier.ControlModifier
                                    | Qt.KeyboardModifier.AltModifier
                                    | Qt.KeyboardModifier.MetaModifier)
        key, ch = event.key(), event.text()
        if mods:
            super().keyPressEvent(event)
            return
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.entered.emit()
            return
        if key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            self._step(1 if key == Qt.Key.Key_Up else -1)
            return
        if key == Qt.Key.Key_Backspace and not self.text():
            self.back.emit()
            return
        if len(ch) != 1 or ch not in "0123456789+-.":
            super().keyPressEvent(event)  # editing keys, Tab, Escape (letters: refused)
            return
        if ch == "." and self.integer:
            self.refused.emit(f"{self.where}: whole numbers only ({self.range_text()})")
            return
        if ch in "+-":
            if self.state(ch) is QValidator.State.Invalid:
                self.refused.emit(f"{self.where}: no {'negative' if ch == '-' else 'signed'} "
                                  f"scores here (allowed {self.range_text()})")
                return
            self.setText(ch)
            return
        text, pos = self.text(), self.cursorPosition()
        if self.hasSelectedText():
            pos = self.selectionStart()
            text = text[:pos] + text[pos + len(self.selectedText()):]
        for cand, cursor in ((text[:pos] + ch + text[pos:], pos + 1), (ch, 1)):
            if self.state(cand) is not QValidator.State.Invalid:
                self.setText(cand)
                self.setCursorPosition(cursor)
                break
        else:
            self.refused.emit(f"{self.where}: {text[:pos] + ch + text[pos:]} is out of "
                              f"range (allowed {self.range_text()})")
            return
        if self.is_complete():
            self.completed.emit()

    def _step(self, d: int) -> None:
        v = self.value()
        nv = (self.lo if d > 0 else self.hi) if v is None else v + d
        if self.lo <= nv <= self.hi:
            self.setText(f"{nv:g}")
            self.selectAll()


class _Level(QFrame):
    """One level of a single-item scale, its whole anchor text wrapped; a click chooses it."""

    clicked = Signal(float)

    def __init__(self, value: float, text: str, signed: bool, widest: str,
                 long_list: bool = False) -> None:
        super().__init__()
        self.value = value
        self.num = QLabel(_fmt_score(value, signed))
        self.num.setFont(theme.font(18, bold=True, numbers=True))
        # one width for every row (the widest level, "10" or "+4"), so the words align
        self.num.setFixedWidth(QFontMetrics(self.num.font()).horizontalAdvance(widest) + 6)
        self.num.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        # "10 s", "20 mmHg": a number stays with its unit when the line wraps
        self.text = QLabel(_NUMBER_UNIT.sub("\\1\u00a0", text))
        self.text.setWordWrap(True)
        self.text.setFont(theme.font(14 if long_list else 15))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 4, 0 if long_list else 1)
        lay.setSpacing(8)
        lay.addWidget(self.num, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(self.text, 1)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.set_chosen(False)

    def set_chosen(self, chosen: bool) -> None:
        self.chosen = chosen
        bg, fg = (CHOSEN_BG, "#ffffff") if chosen else ("transparent", theme.TEXT)
        self.setStyleSheet(f"QFrame {{ background: {bg}; border-radius: 4px; }} "
                           f"QLabel {{ color: {fg}; background: transparent; }}")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.clicked.emit(self.value)
        event.accept()


class _Line(QLabel):
    """A wrapped message line that takes no room while it has nothing to say."""

    def __init__(self, name: str) -> None:
        super().__init__("")
        if name:
            self.setObjectName(name)
        self.setWordWrap(True)
        self.setFont(theme.font(14))
        self.setVisible(False)

    def setText(self, text: str) -> None:  # type: ignore[override]
        super().setText(text)
        self.setVisible(bool(text))


class _AssessForm(QWidget):
    """Keyboard-first assessment: a scale by Alt+digit (or its button), the level or item
    scores as digits, Enter logs, Esc cancels.

    Why it looks like this: the old form took about five clicks per score and cut the
    anchors to one line. Here every level of a single-item scale is a row with its whole
    anchor wrapped (the rater reads the words, not a number); a multi-item scale (Aldrete)
    shows each item's anchors, the chosen one lit, and one digit per item moves on to the
    next item, so "2 2 2 1 2 Enter" is an Aldrete of 9. The form is as tall as its content;
    the panel gives it that room while it is open."""

    #: (Assessment, note text, t_us or None for now)
    submitted = Signal(object, str, object)
    #: Esc, or a score logged: the panel gives the keyboard back to the note field
    finished = Signal(bool)
    #: the content's height changed (another scale): the panel resizes the tab
    changed = Signal()
    #: a widget that took the focus (the panel's scroll area brings it into view)
    visible = Signal(object)

    def __init__(self, scales: Mapping[str, Scale], *, taken: Iterable[str] = (),
                 when: Callable[[str], tuple[int | None, str]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scales = scales
        self._when = when or (lambda note: (None, note))
        self.order = scale_order(scales)
        self.keys: dict[str, str] = {}  # scale id -> "Alt+1"
        taken = set(taken)  # a cue library may have claimed an Alt+digit: it keeps it
        free = [k for k in SCALE_DIGITS if f"Alt+{k}" not in taken]
        for sid, k in zip(self.order, free, strict=False):
            self.keys[sid] = f"Alt+{k}"
        self._current = self.order[0]
        self.setStyleSheet(
            f"QPushButton#scale {{ padding: 3px 4px; }} QPushButton#scale:checked {{ "
            f"background: {CHOSEN_BG}; color: #ffffff; border-color: #4c8dff; }}")

        # -- scale chooser: buttons for the bedside scales, the others under "More" ---------
        self.scale_buttons: dict[str, QPushButton] = {}
        chooser = QGridLayout()
        chooser.setSpacing(3)
        for c in range(4):
            chooser.setColumnStretch(c, 1)
        bedside = [sid for sid in self.order if sid in BEDSIDE_SCALES]
        for n, sid in enumerate(bedside):
            b = QPushButton(self._button_text(sid))
            b.setObjectName("scale")
            b.setCheckable(True)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setFont(theme.font(12))
            b.setMinimumWidth(0)
            b.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
            b.setToolTip(self._tooltip(sid))
            b.clicked.connect(lambda _=False, i=sid: (self.choose(i), self.focus_first()))
            self.scale_buttons[sid] = b
            chooser.addWidget(b, *divmod(n, 4))
        self.more_box = QComboBox()
        self.more_box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.more_box.setFont(theme.font(12))
        self.more_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.more_box.setMinimumContentsLength(4)
        self.more_box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.more_box.addItem("More \u2026", None)
        for sid in self.order:
            if sid not in self.scale_buttons:
                self.more_box.addItem(self._button_text(sid), sid)
                self.more_box.setItemData(self.more_box.count() - 1, self._tooltip(sid),
                                          Qt.ItemDataRole.ToolTipRole)
        self.more_box.activated.connect(self._more_chosen)
        self.more_box.setVisible(self.more_box.count() > 1)
        chooser.addWidget(self.more_box, *divmod(len(bedside), 4))

        self.title = QLabel("")
        self.title.setFont(theme.font(14))
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.total_only = QPushButton("Total only")
        self.total_only.setCheckable(True)
        self.total_only.setObjectName("compact")
        self.total_only.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.total_only.setToolTip("Record the total from a licensed paper form scored "
                                   "elsewhere (scales that allow it)")
        self.total_only.toggled.connect(lambda _: self._rebuild())
        self.info = QLabel("")  # the NRS prompt, read to the patient
        self.info.setWordWrap(True)
        self.info.setFont(theme.font(14))
        self.hint = _Line("dim")
        self.hint.setFont(theme.font(13))
        self._items_slot = QVBoxLayout()
        self._items_slot.setContentsMargins(0, 0, 0, 0)
        self._items: QWidget | None = None
        self.note = QLineEdit()
        self.note.setFont(theme.font(15))
        self.note.setPlaceholderText("note (optional), Enter logs")
        self.note.setToolTip("A note logged with the score. Enter logs the assessment, Esc "
                             "cancels. Start with -5 to log it as scored 5 minutes ago.")
        self.note.returnPressed.connect(self.submit)
        self.score_btn = QPushButton("Log \u23ce")
        self.score_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.score_btn.setToolTip("Score and log (Enter); Esc cancels")
        self.score_btn.clicked.connect(self.submit)
        self.reason = _Line("reason")
        self.result = _Line("")

        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.total_only, 0, Qt.AlignmentFlag.AlignTop)
        row = QHBoxLayout()
        row.addWidget(self.note, 1)
        row.addWidget(self.score_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(chooser)
        lay.addLayout(head)
        lay.addWidget(self.info)
        lay.addLayout(self._items_slot)
        lay.addWidget(self.hint)
        lay.addLayout(row)
        lay.addWidget(self.reason)
        lay.addWidget(self.result)
        lay.addStretch(1)
        esc = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        esc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        esc.activated.connect(self.cancel)
        self.boxes: list[tuple[str, ScoreField]] = []
        self._levels: list[_Level] = []
        self._anchor_labels: dict[str, QLabel] = {}
        self._rebuild()

    # -- the chooser -----------------------------------------------------------------------

    def _button_text(self, sid: str) -> str:
        key = self.keys.get(sid, "")
        short = self.scales[sid].short.removesuffix(" NRS")
        return f"{key[-1]} {short}" if key else short

    def _tooltip(self, sid: str) -> str:
        s = self.scales[sid]
        key = self.keys.get(sid)
        return (f"{key + ': ' if key else ''}{s.name}\n{s.measures}; rated by {s.rater}\n"
                f"When: {s.when}")

    def _more_chosen(self, index: int) -> None:
        sid = self.more_box.itemData(index)
        if sid is not None:
            self.choose(sid)
            self.focus_first()

    def scale(self) -> Scale:
        return self.scales[self._current]

    def choose(self, scale_id: str) -> None:
        """Show ``scale_id``'s form (entries of the previous scale are dropped)."""
        if scale_id not in self.scales:
            raise KeyError(scale_id)
        if scale_id != self._current:
            self._current = scale_id
            self.result.setText("")
            self._rebuild()
        self._sync_chooser()

    select = choose  # the old name, kept for callers

    def _sync_chooser(self) -> None:
        for sid, b in self.scale_buttons.items():
            b.setChecked(sid == self._current)
        i = self.more_box.findData(self._current)
        self.more_box.setCurrentIndex(max(0, i))

    # -- the items -------------------------------------------------------------------------

    def _rebuild(self) -> None:
        if self._items is not None:
            self._items_slot.removeWidget(self._items)
            self._items.hide()  # gone now, not only when the event loop deletes it
            self._items.deleteLater()
        self.boxes, self._levels, self._anchor_labels = [], [], {}
        s = self.scale()
        self._sync_chooser()
        self.total_only.setVisible(s.total_only)
        self.total_only.blockSignals(True)
        if not s.total_only:
            self.total_only.setChecked(False)
        elif len(s.items) > MAX_ITEM_BOXES and not self.total_only.isChecked():
            self.total_only.setChecked(True)
        self.total_only.blockSignals(False)
        bits = [s.measures]
        if len(s.items) > 1:  # a level scale keeps its title to a line (its levels need the
            # room) and shows its range by the field
            bits += [f"rated by {s.rater}", f"total {_fmt_score(s.total_min, s.signed)} to "
                     f"{_fmt_score(s.total_max, s.signed)}"]
        restricted = s.licence_unsure or s.licence in ("permission-needed", "licence-needed")
        if restricted and not any(it.anchors for it in s.items):  # anchors are the words
            bits.append("item wording not shipped (licence)")
        self.title.setToolTip(f"{s.name}\n{s.version}\nWhen: {s.when}\n{s.licence_note}")
        self.title.setText(f"<b style='font-size:16px'>{html.escape(s.short)}</b>&nbsp; "
                           f"<span style='color:{theme.TEXT_DIM}'>"
                           f"{html.escape(' · '.join(bits))}</span>")
        self.info.setText(s.prompt)
        self.info.setVisible(bool(s.prompt))
        self.reason.setText("")
        box = QWidget()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        if self.total_only.isChecked():
            lab = QLabel(f"Total ({_fmt_score(s.total_min, s.signed)} to "
                         f"{_fmt_score(s.total_max, s.signed)})")
            f = self._field(s.total_min, s.total_max, s.integer and s.total_rule != "mean",
                            "__total__", f"{s.short} total")
            grid.addWidget(f, 0, 0)
            grid.addWidget(lab, 0, 1)
            grid.setColumnStretch(1, 1)
            self.hint.setText("Type the total \u00b7 Enter logs \u00b7 Esc cancels")
        elif len(s.items) == 1:
            self._build_levels(s, grid)
        elif any(it.anchors for it in s.items):
            self._build_anchored_items(s, grid)
        else:
            self._build_plain_items(s, grid)
        self._items = box
        self._items_slot.addWidget(box)
        box.show()  # now, not at the next event loop: the panel measures it at once
        prev: QWidget | None = None
        for _, b in self.boxes:
            if prev is not None:
                QWidget.setTabOrder(prev, b)
            prev = b
        if prev is not None:
            QWidget.setTabOrder(prev, self.note)
        self._refresh_choice()
        self.changed.emit()

    def _field(self, lo: float, hi: float, integer: bool, key: str, where: str) -> ScoreField:
        s = self.scale()
        f = ScoreField(lo, hi, integer, signed=s.signed, where=where)
        f.entered.connect(self.submit)
        f.textChanged.connect(lambda _t: (self.reason.setText(""), self._refresh_choice()))
        f.refused.connect(self.reason.setText)
        n = len(self.boxes)
        f.back.connect(lambda n=n: self._focus_box(n - 1))
        if len(s.items) > 1 and not self.total_only.isChecked():
            f.completed.connect(lambda n=n: self._focus_box(n + 1))
        self.boxes.append((key, f))
        return f

    def _build_levels(self, s: Scale, grid: QGridLayout) -> None:
        it = s.items[0]
        f = self._field(it.min, it.max, s.integer, it.key, s.short)
        neg = " (\u22123: minus, 3)" if s.signed else ""
        lab = QLabel(f"Level {it.range_text(s.signed)}{neg}\nEnter logs \u00b7 Esc cancels")
        lab.setObjectName("dim")
        lab.setWordWrap(True)
        lab.setFont(theme.font(13))
        grid.addWidget(f, 0, 0)
        grid.addWidget(lab, 0, 1)
        grid.setColumnStretch(1, 1)
        rows = QVBoxLayout()
        rows.setSpacing(0)
        widest = max((_fmt_score(v, s.signed) for v in it.anchors), key=len, default="8")
        for v in sorted(it.anchors, reverse=True):
            lv = _Level(v, it.anchors[v], s.signed, widest, long_list=len(it.anchors) > 6)
            lv.clicked.connect(lambda v, f=f: (f.setValue(v), f.setFocus()))
            rows.addWidget(lv)
            self._levels.append(lv)
        grid.addLayout(rows, 1, 0, 1, 2)
        self.hint.setText("")  # said beside the field

    def _build_anchored_items(self, s: Scale, grid: QGridLayout) -> None:
        for r, it in enumerate(s.items):
            f = self._field(it.min, it.max, s.integer, it.key, f"{s.short} {it.label}")
            lab = QLabel()
            lab.setWordWrap(True)
            lab.setFont(theme.font(13))
            lab.setTextFormat(Qt.TextFormat.RichText)
            self._anchor_labels[it.key] = lab
            grid.addWidget(f, r, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(lab, r, 1)
        grid.setColumnStretch(1, 1)
        self.hint.setText("A digit per item \u00b7 Enter logs \u00b7 Esc cancels")

    def _build_plain_items(self, s: Scale, grid: QGridLayout) -> None:
        numbered = all(it.key.isdigit() for it in s.items)
        cols = 5 if numbered else 1
        for n, it in enumerate(s.items):
            r, c = divmod(n, cols)
            f = self._field(it.min, it.max, s.integer, it.key, f"{s.short} {it.label}")
            if numbered:
                lab = QLabel(it.key)
                lab.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                cell = QHBoxLayout()
                cell.setSpacing(2)
                cell.addWidget(lab)
                cell.addWidget(f)
                grid.addLayout(cell, r, c)
            else:
                lab = QLabel(f"{it.label} ({it.range_text(s.signed)})")
                lab.setWordWrap(True)
                grid.addWidget(f, r, 0)
                grid.addWidget(lab, r, 1)
                grid.setColumnStretch(1, 1)
            lab.setToolTip(f"{it.label}: {it.range_text(s.signed)}"
                           + (f"\n{it.text}" if it.text else ""))
        auto = all(f.integer and f.hi < 10 and f.lo >= 0 for _, f in self.boxes)
        self.hint.setText(("A digit per item, in order \u00b7 " if auto else
                           "Tab: next item \u00b7 ") + "Enter logs \u00b7 Esc cancels")

    def _refresh_choice(self) -> None:
        """Light the chosen level or anchors: the rater sees the words of what was typed."""
        s = self.scale()
        if self._levels and self.boxes:
            v = self.boxes[0][1].value()
            for lv in self._levels:
                lv.set_chosen(v is not None and lv.value == v)
        for key, box in self.boxes:
            lab = self._anchor_labels.get(key)
            if lab is None:
                continue
            it = s.item(key)
            v = box.value()
            parts = []
            for a in sorted(it.anchors, reverse=True):
                style = (f"color:#ffffff; background:{CHOSEN_BG}"
                         if v is not None and a == v else f"color:{theme.TEXT_DIM}")
                words = _NUMBER_UNIT.sub("\\1\u00a0", it.anchors[a])
                parts.append(f"<span style='{style}'>{_fmt_score(a, s.signed)}&nbsp;"
                             f"{html.escape(words)}</span>")
            name = it.label[:1].upper() + it.label[1:]
            lab.setText(f"<b style='color:{theme.TEXT}'>{html.escape(name)}</b>&nbsp; "
                        + " \u00b7 ".join(parts))

    def _focus_box(self, n: int) -> None:
        if n < 0:
            return
        target: QWidget = self.boxes[n][1] if n < len(self.boxes) else self.note
        target.setFocus(Qt.FocusReason.OtherFocusReason)
        self.visible.emit(target)

    def focus_first(self) -> None:
        """The first item not scored yet (or the first one)."""
        for n, (_, b) in enumerate(self.boxes):
            if b.value() is None:
                self._focus_box(n)
                return
        self._focus_box(0)

    # -- scoring ---------------------------------------------------------------------------

    def values(self) -> dict[str, float]:
        return {key: v for key, box in self.boxes if (v := box.value()) is not None}

    def _unfinished(self) -> tuple[int, str] | None:
        for n, (_, b) in enumerate(self.boxes):
            if b.text() and b.value() is None:
                return n, (f"{b.where}: {b.text()} is not a score "
                           f"(allowed {b.range_text()})")
        return None

    def submit(self) -> None:
        """Score what was typed and log it; a refusal says why and keeps the entries."""
        s = self.scale()
        bad = self._unfinished()
        if bad is not None:
            self.reason.setText(bad[1])
            self._focus_box(bad[0])
            return
        vals = self.values()
        try:
            if self.total_only.isChecked():
                if "__total__" not in vals:
                    raise ScaleError(f"{s.short}: enter the total "
                                     f"({s.total_min:g} to {s.total_max:g})")
                a = s.score_total(vals["__total__"])
            else:
                a = s.score(vals)
            t_us, note = self._when(self.note.text())
        except (ScaleError, ValueError) as exc:
            self.reason.setText(str(exc))
            self.result.setText("")
            missing = [n for n, (_, b) in enumerate(self.boxes) if b.value() is None]
            if missing:
                self._focus_box(missing[0])
            return
        self.reason.setText("")
        self.result.setText(a.summary())
        self._clear()
        self.submitted.emit(a, note, t_us)
        self.finished.emit(True)

    def _clear(self) -> None:
        self.note.clear()
        for _, box in self.boxes:
            box.clear()

    def cancel(self) -> None:
        """Esc: drop what was typed, give the keyboard back to the note field."""
        self._clear()
        self.reason.setText("")
        self.finished.emit(False)

    def needed_height(self, width: int) -> int:
        """The height the form needs at ``width`` (word-wrapped anchors included)."""
        self.ensurePolished()  # new items measure in their style's fonts and margins
        for sub in self.findChildren(QLayout):  # no height cached for the old items
            sub.invalidate()
        lay = self.layout()
        lay.invalidate()
        lay.activate()
        if lay.hasHeightForWidth():
            return lay.totalHeightForWidth(width)
        return lay.totalSizeHint().height()


class _Tabs(QTabWidget):
    """A tab widget whose height hint is what the showing page needs (``want``), not the
    tallest page's: the layout then gives the assessment form its room first."""

    want: int | None = None

    def sizeHint(self) -> QSize:
        s = super().sizeHint()
        if self.want is not None:
            s.setHeight(self.want)
        return s


class _Timeline(QTreeWidget):
    """The timeline; while the assessment form is open it asks for no more than
    ``TIMELINE_MIN_PX`` (it still takes whatever room is left)."""

    compact = False

    def sizeHint(self) -> QSize:
        s = super().sizeHint()
        if self.compact:
            s.setHeight(TIMELINE_MIN_PX)
        return s


class NotesPanel(QWidget):
    """Note field, cue and tag buttons, assessment form, timeline."""

    #: (t_us, kind, short label) for a plot marker, when an entry is logged
    entryLogged = Signal(object, str, str)
    #: status text for the window's status bar
    message = Signal(str)
    #: the time the next note or assessment will get (t_us), or None when back to "now";
    #: the window may draw it as a cursor on the trends
    pendingTimeChanged = Signal(object)

    def __init__(self, session: Any, cue_library: CueLibrary | None = None,
                 scales: Mapping[str, Scale] | None = None, *,
                 authors: Sequence[str] = (), shortcut_parent: QWidget | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.cues = cue_library
        self.scales = scales if scales is not None else load_scales()
        self.entries: dict[int, TimelineEntry] = {}
        #: alarm rows that cleared by themselves and nobody has reviewed yet
        self.unreviewed: list[TimelineEntry] = []
        self._next_key = 1
        self._ref_us: int | None = None
        self._amending: TimelineEntry | None = None
        self._pending_us: int | None = None
        self._return_tab: int | None = None
        self._relay = Relay(self._saved, self)
        self.shortcuts: dict[str, QShortcut] = {}

        # -- author and note field ------------------------------------------------------
        self.author_box = QComboBox()
        self.author_box.setEditable(True)
        self.author_box.setToolTip("Who is writing: recorded as the author of each entry")
        for a in authors:
            self.author_box.addItem(a)
        self.author_box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.note = QLineEdit()
        self.note.setObjectName("note")
        self.note.setPlaceholderText("Note, Enter \u00b7 -5 note = 5 min ago")
        self.note.setToolTip(
            "Type a note and press Enter: it is logged now.\n"
            "Start it with -5 and a space to log it 5 minutes ago (-1:30 = 90 s ago).\n"
            "Ctrl+L comes back here; Esc cancels an amendment or a time from the trend.")
        self.note.setFont(theme.font(17))
        self.note.setMinimumHeight(38)
        self.note.returnPressed.connect(self._enter)
        self.note.textChanged.connect(lambda _t: self._update_when())
        # the time the next note gets, when it is not now: typed (-5) or from the trend
        self.when_bar = QFrame()
        self.when_bar.setStyleSheet("QFrame { background: #2a2313; border-left: 3px solid "
                                    "#f0c56a; border-radius: 3px; }")
        self.when_label = QLabel("")
        self.when_label.setObjectName("warning")
        self.when_label.setWordWrap(True)
        self.when_label.setFont(theme.font(14, bold=True))
        self.when_clear = QPushButton("\u00d7 now")
        self.when_clear.setObjectName("compact")
        self.when_clear.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.when_clear.setToolTip("Log the next note or score now, not at the time from "
                                   "the trend (or Esc in the note field)")
        self.when_clear.clicked.connect(self.clear_pending_time)
        wl = QHBoxLayout(self.when_bar)
        wl.setContentsMargins(6, 3, 3, 3)
        wl.addWidget(self.when_label, 1)
        wl.addWidget(self.when_clear, 0, Qt.AlignmentFlag.AlignVCenter)
        self.when_bar.setVisible(False)
        self.amend_banner = QLabel("")
        self.amend_banner.setObjectName("warning")
        self.amend_banner.setWordWrap(True)
        self.amend_banner.setVisible(False)
        head = QHBoxLayout()
        by = QLabel("By")
        by.setObjectName("dim")
        head.addWidget(by)
        head.addWidget(self.author_box, 1)

        # -- cues, tags, assess --------------------------------------------------------
        self.tabs = _Tabs()
        self.tabs.setDocumentMode(True)
        self.tabs.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.cue_buttons: dict[str, QPushButton] = {}
        self.category_box = QComboBox()
        self.category_box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self._cue_pages: dict[str, QWidget] = {}
        cue_tab = QWidget()
        cue_lay = QVBoxLayout(cue_tab)
        cue_lay.setContentsMargins(4, 4, 4, 4)
        cue_lay.setSpacing(4)
        cue_lay.addWidget(self.category_box)
        self._cue_stack = QWidget()
        self._cue_stack_lay = QVBoxLayout(self._cue_stack)
        self._cue_stack_lay.setContentsMargins(0, 0, 0, 0)
        cue_lay.addWidget(self._cue_stack, 1)
        tag_tab = QWidget()
        self._tag_grid = QGridLayout(tag_tab)
        self._tag_grid.setContentsMargins(4, 4, 4, 4)
        self._tag_grid.setSpacing(4)
        taken = set(cue_library.by_shortcut()) if cue_library is not None else set()
        self.assess = _AssessForm(self.scales, taken=taken, when=self._resolve_time)
        self.assess.submitted.connect(self._log_assessment)
        self.assess.finished.connect(self._assess_finished)
        self.assess.changed.connect(self._fit_tabs)
        # the form as tall as its content; a scroll area only for a window too short for it
        self.assess_scroll = QScrollArea()
        self.assess_scroll.setWidgetResizable(True)
        self.assess_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.assess_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.assess_scroll.setWidget(self.assess)
        self.assess.visible.connect(lambda w: self.assess_scroll.ensureWidgetVisible(w, 0, 8))
        self.tabs.addTab(cue_tab, "Cues")
        self.tabs.addTab(tag_tab, "Tags")
        self.tabs.addTab(self.assess_scroll, "Assess  Alt+1\u2026")
        self.tabs.currentChanged.connect(self._tab_changed)
        self._build_cues(shortcut_parent or self)

        # -- timeline ---------------------------------------------------------------------
        self.timeline = _Timeline()
        self.timeline.setColumnCount(2)
        self.timeline.setHeaderLabels(["Time", "Entry \u00b7 by"])
        self.timeline.setRootIsDecorated(True)
        self.timeline.setItemsExpandable(True)
        self.timeline.setIndentation(12)
        self.timeline.setUniformRowHeights(False)
        self.timeline.setWordWrap(True)
        self.timeline.setAlternatingRowColors(True)
        self.timeline.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.timeline.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.timeline.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.timeline.setColumnWidth(0, 94)
        self.timeline.header().setStretchLastSection(True)
        self.timeline.itemDoubleClicked.connect(lambda *_: self.begin_amend())
        self._wrapped_at = 0
        self.timeline.viewport().installEventFilter(self)
        self.amend_btn = QPushButton("Amend  Ctrl+E")
        self.amend_btn.setObjectName("compact")
        self.amend_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.amend_btn.clicked.connect(self.begin_amend)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addLayout(head)
        lay.addWidget(self.note)
        lay.addWidget(self.when_bar)
        lay.addWidget(self.amend_banner)
        self.tabs.setMaximumHeight(CUE_TABS_MAX_PX)
        lay.addWidget(self.tabs, 0)
        tl_head = QHBoxLayout()
        tl_label = QLabel("Timeline (newest first)")
        tl_label.setObjectName("dim")
        tl_head.addWidget(tl_label)
        tl_head.addStretch(1)
        tl_head.addWidget(self.amend_btn)
        self._tl_head = tl_label
        lay.addLayout(tl_head)
        lay.addWidget(self.timeline, 1)

        target = shortcut_parent or self
        for seq, slot in (("Ctrl+L", self.focus_note), ("Ctrl+E", self.begin_amend)):
            sc = QShortcut(QKeySequence(seq), target)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            self.shortcuts[seq] = sc
        for sid, seq in self.assess.keys.items():
            sc = QShortcut(QKeySequence(seq), target)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(lambda s=sid: self.open_scale(s))
            self.shortcuts[seq] = sc
        esc = QShortcut(QKeySequence("Escape"), self.note)
        esc.setContext(Qt.ShortcutContext.WidgetShortcut)
        esc.activated.connect(self._escape)
        self.setFocusProxy(self.note)

    # -- building ----------------------------------------------------------------------------

    def _build_cues(self, shortcut_parent: QWidget) -> None:
        lib = self.cues
        if lib is None:
            self.category_box.addItem("no cue library loaded")
            self.category_box.setEnabled(False)
            return
        tags = 0
        for cat in lib.categories():
            if cat.kind == "observation":
                for cue in cat.cues:
                    b = self._cue_button(cue)
                    r, c = divmod(tags, 2)
                    self._tag_grid.addWidget(b, r, c)
                    tags += 1
                continue
            page = QWidget()
            grid = QGridLayout(page)
            grid.setContentsMargins(0, 0, 0, 0)
            grid.setSpacing(4)
            for n, cue in enumerate(cat.cues):
                grid.addWidget(self._cue_button(cue), n, 0)
            grid.setRowStretch(len(cat.cues), 1)
            page.setVisible(False)
            self._cue_stack_lay.addWidget(page)
            self._cue_pages[cat.id] = page
            self.category_box.addItem(cat.name, cat.id)
        self._tag_grid.setRowStretch((tags + 1) // 2, 1)
        self.category_box.currentIndexChanged.connect(self._show_category)
        self._show_category()
        for seq, cue in lib.by_shortcut().items():
            sc = QShortcut(QKeySequence(seq), shortcut_parent)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(lambda c=cue: self.log_cue(c))
            self.shortcuts[seq] = sc

    def _cue_button(self, cue: Cue) -> QPushButton:
        # "&" is a mnemonic marker in a button's text: "&&" shows one
        text = cue.label.replace("&", "&&") + (f"  {cue.shortcut}" if cue.shortcut else "")
        b = QPushButton(text)
        b.setObjectName("compact")
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the note field keeps the focus
        tip = cue.text or cue.label
        if cue.spoken_by:
            tip += f"\n(spoken by the {cue.spoken_by})"
        if cue.shortcut:
            tip += f"\nShortcut: {cue.shortcut}"
        b.setToolTip(tip)
        b.setStyleSheet(f"text-align: left; border-left: 3px solid {KIND_COLOURS[cue.kind]};")
        b.clicked.connect(lambda _=False, c=cue: self.log_cue(c))
        self.cue_buttons[cue.id] = b
        return b

    def _show_category(self) -> None:
        current = self.category_box.currentData()
        for cid, page in self._cue_pages.items():
            page.setVisible(cid == current)

    def show_category_for_phase(self, cue_phase: str) -> None:
        """Bring up the first cue category of a §8.1 phase (called on phase changes)."""
        if self.cues is None:
            return
        for cat in self.cues.categories():
            if cat.phase == cue_phase and cat.id in self._cue_pages:
                self.category_box.setCurrentIndex(self.category_box.findData(cat.id))
                return

    # -- logging -----------------------------------------------------------------------------

    def author(self) -> str:
        return self.author_box.currentText().strip()

    def focus_note(self) -> None:
        self.note.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _enter(self) -> None:
        text = self.note.text().strip()
        if self._amending is not None:
            self._finish_amend(text)
            return
        if not text:
            return
        try:
            t_us, text = self._resolve_time(text)
        except ValueError as exc:  # the text stays in the field, to correct the time
            self.message.emit(str(exc))
            self._update_when(str(exc))
            return
        if not text.strip():
            self.message.emit("Type the note after the time (-5 Vomited, then Enter)")
            return
        self.note.clear()
        self.log("observation", text.strip(), t_us=t_us,
                 written_us=None if t_us is None else self.session.clock())
        if t_us is not None:
            self.clear_pending_time()

    def log(self, kind: str, text: str, *, code: str = "", value: float | None = None,
            marker: str | None = None, t_us: int | None = None,
            written_us: int | None = None) -> TimelineEntry:
        """Log an entry now (or at ``t_us``): shown at once, saved by the session's writer.
        ``written_us``: when a back-timed entry was typed, shown with its row."""
        t = t_us if t_us is not None else self.session.clock()
        author = self.author()
        entry = self._add_row(t, kind, text, author, code=code, value=value)
        entry.written_us = written_us
        if written_us is not None:
            self._render(entry)
        try:
            fut: Future[int] = self.session.add_entry(kind, text, t_us=t, author=author,
                                                      code=code, value=value)
        except Exception as exc:  # the writer is shut down: say so, keep the row
            self._mark(entry, "failed", str(exc))
        else:
            fut.add_done_callback(lambda f, k=entry.key: self._relay.post(("add", k), f))
        self.entryLogged.emit(t, kind, marker or _short(text))
        return entry

    def log_cue(self, cue: Cue) -> TimelineEntry:
        fields = cue.annotation_fields()
        return self.log(fields["kind"], fields["text"], code=fields["code"], marker=cue.label)

    def _log_assessment(self, assessment: Any, note: str, t_us: int | None = None) -> None:
        f = assessment.annotation_fields(note)
        self.log(f["kind"], f["text"], code=f["code"], value=f["value"],
                 marker=f"{assessment.scale.short} {assessment.total:g}", t_us=t_us,
                 written_us=None if t_us is None else self.session.clock())
        self.message.emit(f"Logged {f['text']}")
        if t_us is not None:
            self.clear_pending_time()

    def add_system_entry(self, t_us: int, kind: str, text: str, author: str = "") -> TimelineEntry:
        """A row for an entry the session wrote itself (phase changes, alarms that cleared
        by themselves): shown, not saved again, not amendable here."""
        e = self._add_row(t_us, kind, text, author)
        e.amendable = False
        self._mark(e, "saved")
        return e

    def add_unreviewed_alarm(self, t_us: int, text: str) -> TimelineEntry:
        """An alarm that ended before anyone acknowledged it (issue 13 item 6): it stays in
        the timeline, highlighted, until ``mark_reviewed``."""
        e = self.add_system_entry(t_us, "alarm", f"{text} \u2014 cleared by itself, "
                                  "NOT REVIEWED (Acknowledge reviews it)")
        self.unreviewed.append(e)
        return e

    def mark_reviewed(self, by: str) -> list[TimelineEntry]:
        """The unreviewed alarm rows become reviewed ones (their highlight goes)."""
        done, self.unreviewed = self.unreviewed, []
        for e in done:
            e.text = e.text.replace("NOT REVIEWED (Acknowledge reviews it)",
                                    f"reviewed by {by or 'the nurse'}")
            e.kind = "alarm-reviewed"
            self._render(e)
        return done

    def _add_row(self, t_us: int, kind: str, text: str, author: str, *, code: str = "",
                 value: float | None = None) -> TimelineEntry:
        key = self._next_key
        self._next_key += 1
        e = TimelineEntry(key, t_us, kind, text, author, code, value)
        item = QTreeWidgetItem()
        item.setData(0, Qt.ItemDataRole.UserRole, key)
        e.item = item
        self.entries[key] = e
        # newest first: insert before the first row that is older
        idx = 0
        for i in range(self.timeline.topLevelItemCount()):
            other = self.entries[self.timeline.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole)]
            if other.t_us <= t_us:
                break
            idx = i + 1
        self.timeline.insertTopLevelItem(idx, item)
        self._render(e)
        self.timeline.scrollToItem(item)
        return e

    def _render(self, e: TimelineEntry) -> None:
        item = e.item
        assert item is not None
        colour = KIND_COLOURS.get(e.kind, theme.TEXT)
        item.setText(0, f"{KIND_ICON.get(e.kind, '')} {format_session_time(e.t_us, self._ref_us)}")
        item.setForeground(0, QBrush(QColor(colour)))
        text = e.text
        if e.history:
            text = "\u270e " + text + "  (amended)"
        if e.written_us is not None:
            text += f"  \u21b6\u00a0written\u00a0at\u00a0{self._when_text(e.written_us)}"
        if e.state == "saving":
            text += "  \u2026saving"
        elif e.state == "failed":
            text = f"NOT SAVED: {e.error}  \u2014  {e.text}"
        f = QFont(self.timeline.font())
        f.setItalic(bool(e.history))
        item.setFont(1, f)
        item.setText(1, self._wrap(text + (f"  \u00b7 {e.author}" if e.author else ""), f))
        item.setForeground(1, QBrush(QColor("#ff8a7a" if e.state == "failed" else theme.TEXT)))
        tip = f"{e.kind} at {format_session_time(e.t_us, self._ref_us)}"
        if e.written_us is not None:
            tip += f" (back-timed: written at {self._when_text(e.written_us)})"
        if e.history:
            tip += "\n" + "\n".join(f"original: {t}  ({a or '-'})" if i == 0
                                    else f"then: {t}  ({a or '-'})"
                                    for i, (t, a) in enumerate(e.history))
            tip += f"\nnow: {e.text}  ({e.author or '-'})"
        item.setToolTip(1, tip)
        item.setToolTip(0, tip)
        # the replaced versions as child rows, oldest first
        while item.childCount() < len(e.history):
            n = item.childCount()
            old_text, old_author = e.history[n]
            child = QTreeWidgetItem([("original" if n == 0 else "was"), self._wrap(
                old_text + (f"  \u00b7 {old_author}" if old_author else ""),
                self.timeline.font())])
            child.setForeground(0, QBrush(QColor(theme.TEXT_FAINT)))
            child.setForeground(1, QBrush(QColor(theme.TEXT_DIM)))
            item.addChild(child)

    def _text_width(self) -> int:
        tl = self.timeline
        return max(80, tl.viewport().width() - tl.columnWidth(0) - tl.indentation() - 14)

    def _wrap(self, text: str, font: QFont) -> str:
        """Line breaks at word boundaries for the entry column: a note is read whole in the
        timeline, not cut at the column edge (re-wrapped when the column width changes)."""
        return wrap_text(text, font, self._text_width())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.timeline.viewport() and event.type() == QEvent.Type.Resize:
            width = self._text_width()
            if width != self._wrapped_at:
                self._wrapped_at = width
                for e in self.entries.values():
                    if e.item is not None:
                        self._render(e)
        return False

    def _mark(self, e: TimelineEntry, state: str, error: str = "") -> None:
        e.state, e.error = state, error
        self._render(e)
        if state == "failed":
            self.message.emit(f"Entry not saved: {error}")

    def _saved(self, tag: Any, fut: Future[int]) -> None:
        """On the GUI thread, when the writer finished an add or an amend."""
        action, key = tag
        e = self.entries.get(key)
        if e is None:
            return
        exc = fut.exception()
        if exc is not None:
            if action == "amend" and e.history:  # roll the text back: nothing was written
                old_text, old_author = e.history.pop()
                if e.item is not None and e.item.childCount() > len(e.history):
                    e.item.takeChild(e.item.childCount() - 1)
                self.message.emit(f"Amendment not saved: {exc}")
                e.text, e.author = old_text, old_author
                self._render(e)
                return
            self._mark(e, "failed", str(exc))
            return
        e.entry_id = fut.result()
        self._mark(e, "saved")

    # -- amending ----------------------------------------------------------------------------

    def selected(self) -> TimelineEntry | None:
        item = self.timeline.currentItem()
        if item is None:
            return None
        while item.parent() is not None:
            item = item.parent()
        return self.entries.get(item.data(0, Qt.ItemDataRole.UserRole))

    def select_entry(self, e: TimelineEntry) -> None:
        if e.item is not None:
            self.timeline.setCurrentItem(e.item)

    def begin_amend(self) -> None:
        """Put the selected entry's text into the note field; Enter saves the correction,
        Esc cancels."""
        e = self.selected()
        if e is None:
            self.message.emit("Select an entry in the timeline to amend it")
            return
        if not e.amendable:
            self.message.emit("Phase markers are corrected from the record, not here")
            return
        if e.entry_id is None:
            self.message.emit("That entry is still being saved; amend it in a moment")
            return
        self._amending = e
        self.when_bar.setVisible(False)
        self.note.setText(e.text)
        self.note.selectAll()
        self.amend_banner.setText(
            f"Amending the entry at {format_session_time(e.t_us, self._ref_us)}: "
            "Enter saves a correction (the original is kept), Esc cancels")
        self.amend_banner.setVisible(True)
        self.focus_note()

    def cancel_amend(self) -> None:
        if self._amending is not None:
            self._amending = None
            self.note.clear()
            self.amend_banner.setVisible(False)
            self._update_when()

    def _escape(self) -> None:
        """Esc in the note field: cancel an amendment, else drop a time from the trend."""
        if self._amending is not None:
            self.cancel_amend()
        elif self._pending_us is not None:
            self.clear_pending_time()

    def _finish_amend(self, text: str) -> None:
        e = self._amending
        self._amending = None
        self.amend_banner.setVisible(False)
        self.note.clear()
        self._update_when()
        if e is None or not text or text == e.text or e.entry_id is None:
            return
        author = self.author()
        try:
            fut = self.session.amend_entry(e.entry_id, text=text, author=author)
        except Exception as exc:
            self.message.emit(f"Amendment not saved: {exc}")
            return
        e.history.append((e.text, e.author))
        e.text, e.author = text, author or e.author
        e.state = "saving"
        self._render(e)
        fut.add_done_callback(lambda f, k=e.key: self._relay.post(("amend", k), f))

    # -- back-timing -------------------------------------------------------------------------

    def set_pending_time(self, t_us: int | None) -> None:
        """The next note or assessment is logged at ``t_us`` (a clicked trend time), not
        at its Enter key; the note field says so until it is used or cleared (Esc, the
        banner's button, or None here). A time in the future, or more than
        ``MAX_BACK_MIN`` back, is refused with the reason in the status bar."""
        if t_us is None:
            self.clear_pending_time()
            return
        try:
            self._check_time(int(t_us), "that time")
        except ValueError as exc:
            self.message.emit(str(exc))
            return
        self._pending_us = int(t_us)
        self._update_when()
        self.pendingTimeChanged.emit(self._pending_us)
        self.message.emit(f"The next note or assessment is logged at "
                          f"{self._when_text(self._pending_us)}; Esc in the note field "
                          "logs it now")
        self.focus_note()

    def pending_time(self) -> int | None:
        return self._pending_us

    def clear_pending_time(self) -> None:
        if self._pending_us is None:
            return
        self._pending_us = None
        self._update_when()
        self.pendingTimeChanged.emit(None)

    def _check_time(self, t_us: int, what: str) -> None:
        now = self.session.clock()
        if t_us > now:
            raise ValueError(f"{what} ({self._when_text(t_us)}) is later than now: only "
                             "past times can be given to a note")
        if now - t_us > MAX_BACK_MIN * 60 * _US:
            raise ValueError(f"{what} is {(now - t_us) / 60e6:.0f} min back: a note may be "
                             f"back-timed by at most {MAX_BACK_MIN} min")

    def _resolve_time(self, text: str) -> tuple[int | None, str]:
        """The time an entry typed now gets, and its text without a time prefix: the
        prefix's ("-5 ..."), else the time from the trend, else None (now). Raises
        ValueError for a time that cannot be."""
        offset, rest = parse_back_time(text.strip())
        if offset is not None:
            t = self.session.clock() - offset
            self._check_time(t, f"-{text.strip().split()[0].lstrip('-')}")
            return t, rest
        if self._pending_us is not None:
            self._check_time(self._pending_us, "the time from the trend")
            return self._pending_us, text
        return None, text

    def _when_text(self, t_us: int) -> str:
        """Session time when there is one, else the time of day."""
        if self._ref_us is not None:
            return format_session_time(t_us, self._ref_us)
        return datetime.fromtimestamp(t_us / _US).strftime("%H:%M:%S")

    def _update_when(self, refused: str = "") -> None:
        """The banner under the note field: when the next note will be logged if not now
        (typed prefix first, then the trend time), or why that time is refused."""
        offset = None
        if self._amending is None:
            offset, _ = parse_back_time(self.note.text().strip())
        if refused:
            text = refused
        elif offset is not None:
            m, sec = divmod(offset // _US, 60)
            ago = f"{m} min" + (f" {sec} s" if sec else "")
            text = (f"\u21b6 This note: {self._when_text(self.session.clock() - offset)}, "
                    f"{ago} ago")
        elif self._pending_us is not None and self._amending is None:
            text = (f"\u21b6 Next note or score at {self._when_text(self._pending_us)} "
                    "(from the trend)")
        else:
            self.when_bar.setVisible(False)
            return
        self.when_label.setText(text)
        self.when_clear.setVisible(self._pending_us is not None)
        self.when_bar.setVisible(True)

    # -- assessments -------------------------------------------------------------------------

    def open_scale(self, scale_id: str) -> None:
        """Alt+digit: the scale's form, the keyboard in its first item. Logging or Esc
        returns to the tab that was showing."""
        if self.tabs.currentWidget() is not self.assess_scroll:
            self._return_tab = self.tabs.currentIndex()
            self.tabs.setCurrentWidget(self.assess_scroll)
        self.assess.choose(scale_id)
        self._fit_tabs()
        self.assess.focus_first()

    def _assess_finished(self, _logged: bool) -> None:
        back, self._return_tab = self._return_tab, None
        if back is not None:
            self.tabs.setCurrentIndex(back)
        self.focus_note()

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is not self.assess_scroll:
            self._return_tab = None
        self._fit_tabs()

    def _fit_tabs(self) -> None:
        """The assessment tab as tall as its form (anchors wrapped) while the timeline
        keeps ``TIMELINE_MIN_PX``; the cue tabs as before.

        Why by size hints and a maximum, not a fixed height: a fixed height would raise
        the panel's minimum, and with it the window's, past a small screen. The tab asks
        for what its form needs, the timeline for little, and the timeline takes the rest;
        what a short window cannot give, the scroll area scrolls (the focused item is kept
        in view)."""
        assessing = self.tabs.currentWidget() is self.assess_scroll
        self.timeline.compact = assessing
        self.timeline.setMinimumHeight(TIMELINE_MIN_PX if assessing else 0)
        if not assessing:
            self.tabs.want = None
            self.tabs.setMaximumHeight(CUE_TABS_MAX_PX)
        else:
            # measured as if the scroll bar showed: then the form fits whether or not the
            # scroll area, laid out in steps, has already decided to show it
            inner = max(120, self.assess_scroll.width() - 2 * self.assess_scroll.frameWidth()
                        - self.assess_scroll.verticalScrollBar().sizeHint().width())
            # the tab bar and frame around the scroll area, measured once laid out
            overhead = self.tabs.height() - self.assess_scroll.viewport().height()
            if not self.assess_scroll.isVisible() or overhead <= 0:
                overhead = self.tabs.tabBar().sizeHint().height() + 8
            need = max(160, self.assess.needed_height(inner) + overhead)
            self.tabs.want = need
            self.tabs.setMaximumHeight(need)
        self.tabs.updateGeometry()
        self.timeline.updateGeometry()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():  # the anchors wrap anew
            self._fit_tabs()

    # -- time reference ----------------------------------------------------------------------

    def set_reference(self, ref_us: int | None) -> None:
        """Session times are relative to this (the infusion start, once known)."""
        if ref_us == self._ref_us:
            return
        self._ref_us = ref_us
        for e in self.entries.values():
            if e.item is not None:
                self._render(e)

    def close_relay(self) -> None:
        self._relay.close()
        for sc in self.shortcuts.values():
            with contextlib.suppress(RuntimeError):
                sc.setEnabled(False)


def wrap_text(text: str, font: QFont, width: int) -> str:
    """``text`` with line breaks at word boundaries so no line is wider than ``width``
    pixels in ``font`` (a tree view cuts long rows; the timelines wrap them instead)."""
    fm = QFontMetrics(font)
    lines: list[str] = []
    cur = ""
    for word in text.split(" "):
        cand = word if not cur else f"{cur} {word}"
        if not cur or fm.horizontalAdvance(cand) <= width:
            cur = cand
        else:
            lines.append(cur)
            cur = word
    lines.append(cur)
    return "\n".join(lines)


def _short(text: str, n: int = 14) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"

