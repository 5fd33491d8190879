"""Notes, cues and assessments, and the timeline of entries (DESIGN §6; clinical.md §7, §8).

Why it works this way:

- Keyboard first. The note field has the focus from the start: type, press Enter, and the
  observation is logged at the session time of the Enter key (not of the disk write). Cues
  and observation tags fire on their library shortcuts (F-keys, Alt+letter: they never
  steal typing from the note field) as well as on buttons. Ctrl+L returns to the note field,
  Ctrl+E amends the selected entry.
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
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
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

__all__ = ["KIND_COLOURS", "KIND_ICON", "NotesPanel", "TimelineEntry", "format_session_time",
           "wrap_text"]

_US = 1_000_000

KIND_COLOURS = {
    "observation": "#8fa3bf",
    "cue": "#6fc2a8",
    "assessment": "#c6a46b",
    "phase": "#e8e8e8",
    "gap": "#9a9a9a",
}
KIND_ICON = {"observation": "\u25cf", "cue": "\u25c6", "assessment": "\u25a0",
             "phase": "\u2691", "gap": "\u2026"}
#: scales with more items than this are entered as a total by default (from a paper form)
MAX_ITEM_BOXES = 12


def format_session_time(t_us: int, ref_us: int | None) -> str:
    """'12:34' after the infusion start, '-03:10' in baseline; minutes may pass 59."""
    if ref_us is None:
        return "--:--"
    s = (t_us - ref_us) / _US
    sign = "-" if s < 0 else ""
    s = abs(s)
    return f"{sign}{int(s // 60):02d}:{int(s % 60):02d}"


@dataclass
class TimelineEntry:
    """One row of the timeline. ``entry_id`` is the latest version's annotation id (None
    while saving or for rows the app wrote itself); ``history`` the replaced texts."""

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


class _AssessForm(QWidget):
    """Scale chooser, one spin box per item (or the total), Score & log."""

    submitted = Signal(object, str)  # Assessment, note

    def __init__(self, scales: Mapping[str, Scale], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scales = scales
        self.scale_box = QComboBox()
        for sid, s in scales.items():
            self.scale_box.addItem(f"{s.short} \u2014 {s.measures}", sid)
        self.scale_box.currentIndexChanged.connect(self._rebuild)
        self.total_only = QPushButton("Total only")
        self.total_only.setCheckable(True)
        self.total_only.setObjectName("compact")
        self.total_only.setToolTip("Record the total from a licensed paper form scored "
                                   "elsewhere (scales that allow it)")
        self.total_only.toggled.connect(lambda _: self._rebuild())
        self.info = QLabel("")
        self.info.setObjectName("dim")
        self.info.setWordWrap(True)
        self.info.setFont(theme.font(12))
        self.items_host = QWidget()
        self.items_grid = QGridLayout(self.items_host)
        self.items_grid.setContentsMargins(0, 0, 0, 0)
        self.items_grid.setHorizontalSpacing(6)
        self.items_grid.setVerticalSpacing(2)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.items_host)
        self.note = QLineEdit()
        self.note.setPlaceholderText("optional note with the score")
        self.score_btn = QPushButton("Score && log")
        self.score_btn.clicked.connect(self.submit)
        self.reason = QLabel("")
        self.reason.setObjectName("reason")
        self.reason.setWordWrap(True)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setFont(theme.font(13))
        top = QHBoxLayout()
        top.addWidget(self.scale_box, 1)
        top.addWidget(self.total_only)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(top)
        lay.addWidget(self.info)
        lay.addWidget(scroll, 1)
        row = QHBoxLayout()
        row.addWidget(self.note, 1)
        row.addWidget(self.score_btn)
        lay.addLayout(row)
        lay.addWidget(self.reason)
        lay.addWidget(self.result)
        self.boxes: list[tuple[str, QAbstractSpinBox]] = []
        self._rebuild()

    def scale(self) -> Scale:
        return self.scales[self.scale_box.currentData()]

    def select(self, scale_id: str) -> None:
        i = self.scale_box.findData(scale_id)
        if i >= 0:
            self.scale_box.setCurrentIndex(i)

    def _spin(self, lo: float, hi: float, integer: bool) -> QAbstractSpinBox:
        """A box whose lowest value means 'not scored' ('–'), so a skipped item is refused
        as missing by Scale.score instead of being recorded as its minimum."""
        box: QAbstractSpinBox
        if integer:
            sb = QSpinBox()
            sb.setRange(int(lo) - 1, int(hi))
            sb.setValue(int(lo) - 1)
            box = sb
        else:
            db = QDoubleSpinBox()
            db.setDecimals(1)
            db.setRange(lo - 1, hi)
            db.setValue(lo - 1)
            box = db
        box.setSpecialValueText("\u2013")
        box.setAlignment(Qt.AlignmentFlag.AlignRight)
        box.setMinimumWidth(64)
        return box

    def _rebuild(self) -> None:
        while self.items_grid.count():
            w = self.items_grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.boxes = []
        s = self.scale()
        self.total_only.setEnabled(s.total_only)
        if s.total_only and len(s.items) > MAX_ITEM_BOXES and not self.total_only.isChecked():
            self.total_only.blockSignals(True)
            self.total_only.setChecked(True)
            self.total_only.blockSignals(False)
        if not s.total_only and self.total_only.isChecked():
            self.total_only.blockSignals(True)
            self.total_only.setChecked(False)
            self.total_only.blockSignals(False)
        bits = [f"rated by {s.rater}", f"total {s.total_min:g} to {s.total_max:g}"]
        if s.licence_unsure or s.licence in ("permission-needed", "licence-needed"):
            bits.append("item wording not shipped (licence)")
        self.info.setText(" \u00b7 ".join(bits) + (f"\n{s.prompt}" if s.prompt else ""))
        if self.total_only.isChecked():
            lab = QLabel(f"Total ({s.total_min:g} to {s.total_max:g})")
            box = self._spin(s.total_min, s.total_max, s.integer and s.total_rule != "mean")
            self.items_grid.addWidget(lab, 0, 0)
            self.items_grid.addWidget(box, 0, 1)
            self.boxes.append(("__total__", box))
            return
        cols = 1 if any(not it.key.isdigit() for it in s.items) else 2
        for n, it in enumerate(s.items):
            r, c = divmod(n, cols)
            label = it.label if not it.key.isdigit() else f"{it.key}"
            lab = QLabel(label)
            lab.setToolTip(f"{it.label}: {it.range_text(s.signed)}"
                           + (f"\n{it.text}" if it.text else ""))
            box = self._spin(it.min, it.max, s.integer)
            box.setToolTip(lab.toolTip())
            if it.anchors and len(s.items) == 1:
                lab.setText("Level")
                self.info.setText(self.info.text() + "\n" + "; ".join(
                    f"{v:+g}: {a}" if s.signed else f"{v:g}: {a}"
                    for v, a in it.anchors.items()))
            self.items_grid.addWidget(lab, r, 2 * c)
            self.items_grid.addWidget(box, r, 2 * c + 1)
            self.boxes.append((it.key, box))

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, box in self.boxes:
            v = box.value()  # type: ignore[attr-defined]
            if v != box.minimum():  # type: ignore[attr-defined]
                out[key] = float(v)
        return out

    def submit(self) -> None:
        s = self.scale()
        vals = self.values()
        try:
            if self.total_only.isChecked():
                if "__total__" not in vals:
                    raise ScaleError(f"{s.short}: enter the total "
                                     f"({s.total_min:g} to {s.total_max:g})")
                a = s.score_total(vals["__total__"])
            else:
                a = s.score(vals)
        except ScaleError as exc:
            self.reason.setText(str(exc))
            self.result.setText("")
            return
        self.reason.setText("")
        self.result.setText(a.summary())
        self.submitted.emit(a, self.note.text())
        self.note.clear()
        for _, box in self.boxes:
            box.setValue(box.minimum())  # type: ignore[attr-defined]


class NotesPanel(QWidget):
    """Note field, cue and tag buttons, assessment form, timeline."""

    #: (t_us, kind, short label) for a plot marker, when an entry is logged
    entryLogged = Signal(object, str, str)
    #: status text for the window's status bar
    message = Signal(str)

    def __init__(self, session: Any, cue_library: CueLibrary | None = None,
                 scales: Mapping[str, Scale] | None = None, *,
                 authors: Sequence[str] = (), shortcut_parent: QWidget | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.cues = cue_library
        self.scales = scales if scales is not None else load_scales()
        self.entries: dict[int, TimelineEntry] = {}
        self._next_key = 1
        self._ref_us: int | None = None
        self._amending: TimelineEntry | None = None
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
        self.note.setPlaceholderText("Type a note, Enter to log  (Ctrl+L)")
        self.note.setFont(theme.font(17))
        self.note.setMinimumHeight(38)
        self.note.returnPressed.connect(self._enter)
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
        self.tabs = QTabWidget()
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
        self.assess = _AssessForm(self.scales)
        self.assess.submitted.connect(self._log_assessment)
        self.tabs.addTab(cue_tab, "Cues")
        self.tabs.addTab(tag_tab, "Tags")
        self.tabs.addTab(self.assess, "Assess")
        self._build_cues(shortcut_parent or self)

        # -- timeline ---------------------------------------------------------------------
        self.timeline = QTreeWidget()
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
        lay.addWidget(self.amend_banner)
        self.tabs.setMaximumHeight(230)
        lay.addWidget(self.tabs, 0)
        tl_head = QHBoxLayout()
        tl_label = QLabel("Timeline (newest first)")
        tl_label.setObjectName("dim")
        tl_head.addWidget(tl_label)
        tl_head.addStretch(1)
        tl_head.addWidget(self.amend_btn)
        lay.addLayout(tl_head)
        lay.addWidget(self.timeline, 1)

        target = shortcut_parent or self
        for seq, slot in (("Ctrl+L", self.focus_note), ("Ctrl+E", self.begin_amend)):
            sc = QShortcut(QKeySequence(seq), target)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            self.shortcuts[seq] = sc
        esc = QShortcut(QKeySequence("Escape"), self.note)
        esc.setContext(Qt.ShortcutContext.WidgetShortcut)
        esc.activated.connect(self.cancel_amend)
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
        text = cue.label + (f"  {cue.shortcut}" if cue.shortcut else "")
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
        self.note.clear()
        self.log("observation", text)

    def log(self, kind: str, text: str, *, code: str = "", value: float | None = None,
            marker: str | None = None, t_us: int | None = None) -> TimelineEntry:
        """Log an entry now (or at ``t_us``): shown at once, saved by the session's writer."""
        t = t_us if t_us is not None else self.session.clock()
        author = self.author()
        entry = self._add_row(t, kind, text, author, code=code, value=value)
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

    def _log_assessment(self, assessment: Any, note: str) -> None:
        f = assessment.annotation_fields(note)
        self.log(f["kind"], f["text"], code=f["code"], value=f["value"],
                 marker=f"{assessment.scale.short} {assessment.total:g}")

    def add_system_entry(self, t_us: int, kind: str, text: str, author: str = "") -> None:
        """A row for an entry the session wrote itself (phase changes): shown, not saved
        again, not amendable here."""
        e = self._add_row(t_us, kind, text, author)
        e.amendable = False
        self._mark(e, "saved")

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

    def _finish_amend(self, text: str) -> None:
        e = self._amending
        self._amending = None
        self.amend_banner.setVisible(False)
        self.note.clear()
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

