"""The session setup dialog: who, where, which protocol, and the infusion programme.

Why it behaves this way:

- The app computes and a clinician confirms. Every number shown (pump rate, volume, total
  mg) comes from ``dosing.calculate`` and every limit from ``dosing.check_programme`` with the
  packaged bounds: the dialog holds no number of its own, so the CLI calculator and this
  dialog can never disagree. Only the *words* differ: the core's reasons cite the design
  documents (for whoever reads a CLI refusal or a log); a nurse does not have those, so the
  dialog says the same finding in her words, from the finding's structured fields (value,
  limit, unit and the short reasons of ``dosing_bounds.toml``), e.g. "900 kg is more than
  the 250 kg this app accepts; check the scale".
- The pump rate (and volume, total mg) is shown only for a programme the core confirms:
  no refusal, every warning ticked and the weight typed twice alike. A rate beside a
  refusal, or beside two different weights, is a number someone could copy to the pump.
- Nothing is clamped (CONVENTIONS 19). Fields are plain text boxes, not spin boxes: a spin
  box would silently turn 900 kg into 250 kg.
- A field's message appears once the nurse leaves it (or tries to start), not while she
  types and not on an empty form: red text on a form nobody has touched yet is noise that
  teaches people to ignore red. Editing a field hides its message until it is left again;
  values filled in before the dialog opens count as entered. Start is always clickable:
  clicking it with something missing shows every message and says what is left, rather
  than a greyed-out button that does not say why.
- Enter moves to the next field (keyboard first, DESIGN §6) and never starts a session.
- Room, clinicians and the clinic's recent protocols are remembered per workstation when
  the caller passes its ``QSettings``: the same room and team type them every session.
  Patient data (id, weight) are never remembered.
- A session that a crash left open is offered at the top, to resume or to recover, before
  a new one starts, so the record of the last patient is closed properly (with a gap
  marker) rather than forgotten. Looking for such sessions reads the database, so it runs
  off the GUI thread.
"""

from __future__ import annotations

import itertools
import math
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSettings, Qt
from PySide6.QtGui import QKeyEvent, QShowEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from kapmonitor.dosing import (
    ConfirmationRequired,
    ConfirmedProgramme,
    DoseCheck,
    DoseProgramme,
    DoseRefused,
    DosingBounds,
    Finding,
    Severity,
    WeightBasis,
    check_programme,
    default_bounds,
)
from kapmonitor.session import SessionConfig

from . import theme
from .bridge import Relay

__all__ = [
    "DEFAULT_PROTOCOL",
    "SETTINGS_CLINICIANS",
    "SETTINGS_PROTOCOLS",
    "SETTINGS_ROOM",
    "SetupDialog",
    "nurse_message",
    "parse_number",
]

SETTINGS_ROOM = "setup/room"
SETTINGS_CLINICIANS = "setup/clinicians"
SETTINGS_PROTOCOLS = "setup/protocols"
#: How many of the clinic's protocols the Protocol list offers, most recent first.
RECENT_PROTOCOLS = 8
#: Offered when this workstation has no protocol remembered yet (the usual KAP infusion,
#: clinical.md §1.1); the nurse edits it to what was prescribed.
DEFAULT_PROTOCOL = "0.5 mg/kg IV over 40 min"

#: Where messages are said: under each field (the patient id, the programme fields and the
#: second weight), and under the result for findings about the combination (total dose,
#: pump rate, concentration in the bag).
_SLOTS = ("patient", "weight_kg", "weight2", "dose_mg_per_kg", "duration_min",
          "concentration_mg_ml", "bag_ml", "result")
#: field -> (what a nurse calls it, the unit as said in "enter the ... in ...", what to check)
_SAY: dict[str, tuple[str, str, str]] = {
    "weight_kg": ("weight", "kg", "check the scale"),
    "dose_mg_per_kg": ("dose", "mg/kg", "check the prescription"),
    "duration_min": ("duration", "minutes", "check the prescription"),
    "concentration_mg_ml": ("concentration", "mg/mL", "check the preparation"),
    "bag_ml": ("bag volume", "mL", "check the bag volume"),
    "total_dose_mg": ("total dose", "mg", "check the weight and the dose"),
    "rate_ml_h": ("pump rate", "mL/h", "check the dose, the duration and the preparation"),
}
#: Finding codes whose short reason in the bounds file does not help a nurse ("adult
#: bounds"): what is said instead ("" = nothing, only what to check).
_WHY_OVERRIDE = {"weight_kg.hard_max": "", "weight_kg.hard_min": "this app is for adults"}
_REF = re.compile(r"\s*\([^()]*(?:clinical\.md|DESIGN|§)[^()]*\)|,?\s*(?:clinical\.md|DESIGN)"
                  r"(?:\.md)?\s*§[\d.,\s§-]*|,?\s*\bUNSURE\b")


def parse_number(text: str) -> float | str | None:
    """'70' -> 70.0, '70,5' -> 70.5, '' -> None, anything else stays text so the core's
    check refuses it (the dialog then says "... is not a number")."""
    t = text.strip().replace(",", ".")
    if not t:
        return None
    try:
        v = float(t)
    except ValueError:
        return text.strip()
    return v


def _n(x: float) -> str:
    """Numbers as a nurse writes them: 900, 0.35, 52.5."""
    return f"{x:.6g}"


def _plain(text: str) -> str:
    """Drop document references and markers a nurse cannot act on ("(clinical.md §1.4)",
    "UNSURE"): the safety net for findings the dialog has no wording of its own for."""
    return _REF.sub("", text).strip()


def _sentences(*parts: str) -> str:
    """"a", "b; c" -> "A. B; c." (the bounds file's reasons are written as fragments)."""
    done = [p.strip().rstrip(".") for p in parts if p.strip()]
    return " ".join(p[0].upper() + p[1:] + "." for p in done)


def _bound_why(bounds: DosingBounds, f: Finding, which: str) -> str:
    if f.code in _WHY_OVERRIDE:
        return _WHY_OVERRIDE[f.code]
    b = bounds.fields.get(f.field)
    if b is None:
        return ""
    return _plain({"min": b.why_hard_min, "max": b.why_hard_max, "soft": b.why_soft}[which])


def nurse_message(f: Finding, *, raw_text: str = "", programme: DoseProgramme | None = None,
                  bounds: DosingBounds | None = None) -> str:
    """One finding of ``check_programme`` in a nurse's words: the value, the limit, the
    reason from the bounds file and what to check; no "nan", no document references.

    ``raw_text`` is what was typed in the field (an empty field is "Enter the weight in
    kg", text is "“abc” is not a number"); ``programme`` gives the bag volume and weight
    that the messages about the bag's concentration and the total dose quote."""
    b = bounds or default_bounds()
    kind = f.code.split(".", 1)[1] if "." in f.code else f.code
    name, spoken_unit, check = _SAY.get(f.field, (f.field.replace("_", " "), f.unit, ""))
    unit = f.unit
    in_bag = (f.field == "concentration_mg_ml" and programme is not None
              and programme.bag_ml is not None and programme.concentration_mg_ml is None)
    derived = f.field in ("total_dose_mg", "rate_ml_h") or in_bag
    if in_bag:
        check = "check the dose and the bag volume"
    value = f.value if isinstance(f.value, int | float) and not isinstance(f.value, bool) \
        else None

    if kind == "not_a_number" or (value is not None and not math.isfinite(value)):
        typed = raw_text.strip()
        if not typed:
            return f"Enter the {name} in {spoken_unit}"
        return f"\u201c{typed}\u201d is not a number: enter the {name} in {spoken_unit}"
    if value is None:
        return _plain(f.message)

    if in_bag and programme is not None and isinstance(programme.bag_ml, int | float):
        bag = float(programme.bag_ml)
        subject = (f"That makes {_n(value)} {unit} in the bag ({_n(value * bag)} mg in "
                   f"{_n(bag)} mL),")
    elif derived:
        subject = f"The {name} would be {_n(value)} {unit},"
    else:
        subject = f"{_n(value)} {unit} is"

    if kind == "refused_value":
        bound = b.fields.get(f.field)
        why = next((r.why for r in (bound.refuse if bound else ()) if r.value == value), "")
        return _sentences(f"{subject} {_plain(why) or 'not accepted'}", check)
    if kind in ("hard_min", "hard_max") and f.limit is not None:
        more = "more" if kind == "hard_max" else "less"
        main = f"{subject} {more} than the {_n(f.limit)} {unit} this app accepts"
        why = _bound_why(b, f, "max" if kind == "hard_max" else "min")
        return _sentences(main, why, check) if why else f"{main}; {check}"
    if kind in ("soft_min", "soft_max"):
        bound = b.fields.get(f.field)
        lo = bound.soft_min if bound else None
        hi = bound.soft_max if bound else None
        if lo is not None and hi is not None:
            usual = f"{'above' if kind == 'soft_max' else 'below'} the usual {_n(lo)} to " \
                f"{_n(hi)} {unit}"
        elif kind == "soft_max" and hi is not None:
            usual = f"more than the usual {_n(hi)} {unit}"
        else:
            usual = f"less than the usual {_n(lo or 0.0)} {unit}"
        why = _bound_why(b, f, "soft")
        return _sentences(f"{subject} {usual}", why or check)
    if kind == "per_kg" and f.limit is not None:
        weight = programme.weight_kg if programme is not None else None
        bound = b.fields.get(f.field)
        per_kg = bound.warn_above_mg_per_kg if bound else None
        if isinstance(weight, int | float) and per_kg is not None:
            return (f"{subject} more than {_n(per_kg)} mg/kg \u00d7 {_n(float(weight))} kg = "
                    f"{_n(f.limit)} mg; {check}")
        return f"{subject} more than {_n(f.limit)} mg; {check}"
    return _plain(f.message)


def _finite(text: str) -> float | None:
    """The typed number, or None when the text is empty, not a number, NaN or infinite."""
    v = parse_number(text)
    return v if isinstance(v, float) and math.isfinite(v) else None


def _reason_label(object_name: str = "reason") -> QLabel:
    lab = QLabel("")
    lab.setObjectName(object_name)
    lab.setWordWrap(True)
    lab.setFont(theme.font(14))
    lab.setTextFormat(Qt.TextFormat.PlainText)
    lab.setVisible(False)
    return lab


def _setting_text(settings: QSettings | None, key: str) -> str:
    if settings is None:
        return ""
    value = settings.value(key, "")
    return value.strip() if isinstance(value, str) else ""


def _setting_list(settings: QSettings | None, key: str) -> list[str]:
    """A list from QSettings; an INI file gives one remembered item back as a plain str."""
    if settings is None:
        return []
    value = settings.value(key, [])
    if isinstance(value, str):
        value = [value] if value else []
    return [str(v).strip() for v in value or [] if str(v).strip()]


class SetupDialog(QDialog):
    """Collects a :class:`SessionConfig` and a :class:`ConfirmedProgramme`.

    ``store`` (optional) is searched for abandoned sessions to resume or recover.
    ``settings`` (optional) remembers room, clinicians and protocols for this workstation;
    None remembers nothing (tests pass a temporary INI file). After ``accept``,
    :meth:`config` and :attr:`confirmed` hold the result, or :attr:`resume_id` the session
    to carry on."""

    def __init__(self, store: Any = None, *, demo: bool = False,
                 defaults: SessionConfig | None = None, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New session" + (" \u2014 DEMO" if demo else ""))
        self.setModal(True)
        self.store = store
        self.demo = demo
        self.settings = settings
        self.bounds: DosingBounds = default_bounds()
        self.check: DoseCheck | None = None
        self.confirmed: ConfirmedProgramme | None = None
        self.recovered: list[Any] = []
        #: set when the nurse chose to resume a session left open instead of a new one
        self.resume_id: int | None = None
        self._acks: dict[Finding, bool] = {}
        self._warn_boxes: list[tuple[Finding, QCheckBox]] = []
        #: message slots the nurse has left (or that were filled in before the dialog opened)
        self._revealed: set[str] = set()
        self._attempted = False
        self._opened = False
        self._fitted_h: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._relay = Relay(self._on_relay, self)
        d = defaults or SessionConfig()

        # -- recovery offer ----------------------------------------------------------------
        self.recovery = QFrame()
        self.recovery.setObjectName("panel")
        self.recovery_lay = QVBoxLayout(self.recovery)
        self.recovery_lay.setContentsMargins(10, 6, 10, 6)
        self.recovery.setVisible(False)

        # -- fields ------------------------------------------------------------------------
        self.patient = QLineEdit(d.patient or "")
        self.patient.setPlaceholderText("pseudonymous id, e.g. KAP-0147 (no names)")
        self.room = QLineEdit(d.room or _setting_text(settings, SETTINGS_ROOM))
        self.clinicians = QLineEdit(d.clinicians or _setting_text(settings,
                                                                  SETTINGS_CLINICIANS))
        self.clinicians.setPlaceholderText("e.g. RN Lee, Dr Osei (comma separated)")
        self.protocol = QComboBox()
        self.protocol.setEditable(True)
        self.protocol.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        recent = _setting_list(settings, SETTINGS_PROTOCOLS)
        self.protocol.addItems([*recent, *([] if DEFAULT_PROTOCOL in recent
                                           else [DEFAULT_PROTOCOL])])
        self.protocol.setEditText(d.protocol or (recent[0] if recent else DEFAULT_PROTOCOL))
        self.protocol.lineEdit().setPlaceholderText(f"e.g. {DEFAULT_PROTOCOL}")
        self.protocol.setToolTip("The clinic's protocol for this infusion, as it should "
                                 "appear on the report; recent ones are in the list.")
        self.weight = QLineEdit("" if d.weight_kg is None else f"{d.weight_kg:g}")
        self.weight2 = QLineEdit("")
        self.weight2.setPlaceholderText("type the weight again, from the scale")
        self.basis = QComboBox()
        for b in WeightBasis:
            self.basis.addItem(b.value, b.value)
        self.basis.setCurrentIndex(max(0, self.basis.findData(d.weight_basis)))
        self.dose = QLineEdit("" if d.dose_mg_per_kg is None else f"{d.dose_mg_per_kg:g}")
        self.duration = QLineEdit("" if d.duration_min is None else f"{d.duration_min:g}")
        self.by_conc = QRadioButton("Fixed concentration")
        self.by_bag = QRadioButton("Dose into a bag of")
        group = QButtonGroup(self)
        group.addButton(self.by_conc)
        group.addButton(self.by_bag)
        self.conc = QLineEdit("" if d.concentration_mg_ml is None
                              else f"{d.concentration_mg_ml:g}")
        self.bag = QLineEdit("" if d.bag_ml is None else f"{d.bag_ml:g}")
        (self.by_bag if d.bag_ml is not None and d.concentration_mg_ml is None
         else self.by_conc).setChecked(True)
        self.reasons = {s: _reason_label() for s in _SLOTS}
        #: the line edit whose messages go in each slot
        self._edits: dict[str, QLineEdit] = {
            "patient": self.patient, "weight_kg": self.weight, "weight2": self.weight2,
            "dose_mg_per_kg": self.dose, "duration_min": self.duration,
            "concentration_mg_ml": self.conc, "bag_ml": self.bag}

        form = QGridLayout()
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(3)
        row = 0

        def add(label: str, widget: QWidget, unit: str = "", slot: str | None = None) -> None:
            nonlocal row
            form.addWidget(QLabel(label), row, 0)
            form.addWidget(widget, row, 1)
            if unit:
                u = QLabel(unit)
                u.setObjectName("dim")
                form.addWidget(u, row, 2)
            row += 1
            if slot is not None:
                form.addWidget(self.reasons[slot], row, 1, 1, 2)
                row += 1

        add("Patient id", self.patient, "", "patient")
        add("Room", self.room)
        add("Clinicians", self.clinicians)
        add("Protocol", self.protocol)
        add("Weight", self.weight, "kg", "weight_kg")
        add("Weight again", self.weight2, "kg", "weight2")
        add("Weight basis", self.basis)
        add("Dose", self.dose, "mg/kg", "dose_mg_per_kg")
        add("Duration", self.duration, "min", "duration_min")
        add("Preparation", self.by_conc)
        add("   concentration", self.conc, "mg/mL", "concentration_mg_ml")
        add("", self.by_bag)
        add("   bag volume", self.bag, "mL", "bag_ml")
        form.setColumnStretch(1, 1)

        # -- result ------------------------------------------------------------------------
        self.rate = QLabel("")
        self.rate.setFont(theme.font(22, bold=True))
        self.rate.setStyleSheet(f"color: {theme.PUMP_ORANGE};")
        self.rate.setVisible(False)
        self.rate_detail = QLabel("")
        self.rate_detail.setObjectName("dim")
        self.rate_detail.setWordWrap(True)
        self.warn_host = QWidget()
        self.warn_lay = QVBoxLayout(self.warn_host)
        self.warn_lay.setContentsMargins(0, 0, 0, 0)
        self.warn_lay.setSpacing(2)
        self.summary = _reason_label()
        self.bounds_note = QLabel("The limits checked here are proposed engineering limits "
                                  "set for this app, not published clinical limits.")
        self.bounds_note.setObjectName("faint")
        self.bounds_note.setWordWrap(True)
        self.bounds_note.setFont(theme.font(11))

        self.ok = QPushButton("Start session")
        self.ok.clicked.connect(self._attempt_start)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
        for button in (self.ok, cancel):
            button.setAutoDefault(False)  # Enter moves between fields: see keyPressEvent
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(cancel)
        buttons.addWidget(self.ok)

        lay = QVBoxLayout(self)
        lay.setSpacing(8)
        if demo:
            badge = QLabel("DEMO \u2014 simulated patient and devices")
            badge.setStyleSheet("background: #6a2c91; color: white; padding: 4px 8px;"
                                " border-radius: 4px; font-weight: bold;")
            lay.addWidget(badge)
        lay.addWidget(self.recovery)
        lay.addLayout(form)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet(f"color: {theme.BORDER};")
        lay.addWidget(line)
        lay.addWidget(self.rate)
        lay.addWidget(self.rate_detail)
        lay.addWidget(self.reasons["result"])
        lay.addWidget(self.warn_host)
        lay.addWidget(self.summary)
        lay.addWidget(self.bounds_note)
        lay.addStretch(1)
        lay.addLayout(buttons)
        # wide enough that the longest refusal wraps onto two lines, not five
        self.setMinimumWidth(680)
        # the preparation not chosen must not look like a field to fill in
        self.setStyleSheet(f"QLineEdit:disabled {{ background: {theme.BG}; "
                           f"color: {theme.TEXT_FAINT}; border-color: {theme.PANEL_2}; }}")

        order: list[QWidget] = [self.patient, self.room, self.clinicians, self.protocol,
                                self.weight, self.weight2, self.basis, self.dose,
                                self.duration, self.by_conc, self.conc, self.by_bag, self.bag,
                                self.ok, cancel]
        for a, b in itertools.pairwise(order):
            QWidget.setTabOrder(a, b)
        for slot, edit in self._edits.items():
            edit.textChanged.connect(lambda _t="", s=slot: self._edited(s))
            edit.editingFinished.connect(lambda s=slot: self._left(s))
            edit.installEventFilter(self)
        self.basis.currentIndexChanged.connect(self.revalidate)
        self.by_conc.toggled.connect(self.revalidate)
        self.revalidate()
        if store is not None:
            self._look_for_abandoned()

    # -- when messages show ----------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Leaving a field shows its message even when nothing was typed in it (Qt's
        ``editingFinished`` fires on focus out only after a change)."""
        if event.type() == QEvent.Type.FocusOut:
            slot = next((s for s, e in self._edits.items() if e is watched), None)
            if slot is not None and event.reason() != Qt.FocusReason.PopupFocusReason:
                self._left(slot)
        return super().eventFilter(watched, event)

    def _left(self, slot: str) -> None:
        if slot not in self._revealed:
            self._revealed.add(slot)
            self.revalidate()

    def _edited(self, slot: str) -> None:
        self._revealed.discard(slot)
        self.revalidate()

    def showEvent(self, event: QShowEvent) -> None:
        """Values filled in before the dialog opens (defaults, a caller's setText) count
        as entered, so a default that is out of bounds says so at once."""
        super().showEvent(event)
        if not self._opened:
            self._opened = True
            self._fitted_h = self.height()
            self._revealed |= {s for s, e in self._edits.items() if e.text().strip()}
            self.revalidate()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Enter moves to the next field and never starts a session by accident; on a
        focused button it presses it."""
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            focus = self.focusWidget()
            if isinstance(focus, QPushButton) and focus.isEnabled():
                focus.click()
            else:
                self.focusNextChild()
            return
        super().keyPressEvent(event)

    def reveal_all(self) -> None:
        """Show every field's message, as an attempt to start does."""
        self._revealed |= set(_SLOTS)
        self.revalidate()

    # -- validation ------------------------------------------------------------------------

    def programme(self) -> DoseProgramme:
        """The programme as typed; an empty field is NaN and text stays text, so the core
        refuses both (the dialog words them "Enter ..." and "... is not a number")."""
        vals = {f: parse_number(w.text()) for f, w in (
            ("weight_kg", self.weight), ("dose_mg_per_kg", self.dose),
            ("duration_min", self.duration), ("concentration_mg_ml", self.conc),
            ("bag_ml", self.bag))}
        conc_mode = self.by_conc.isChecked()

        def val(f: str) -> Any:
            v = vals[f]
            return math.nan if v is None else v

        return DoseProgramme(
            weight_kg=val("weight_kg"), dose_mg_per_kg=val("dose_mg_per_kg"),
            duration_min=val("duration_min"),
            concentration_mg_ml=val("concentration_mg_ml") if conc_mode else None,
            bag_ml=None if conc_mode else val("bag_ml"),
            weight_basis=self.basis.currentData())

    def _slot(self, f: Finding) -> str:
        """Under which field a finding is said: a typed value's under its field; the
        combination's (total dose, pump rate, the bag's concentration) under the result."""
        if f.field == "concentration_mg_ml":
            return f.field if self.by_conc.isChecked() else "result"
        return f.field if f.field in self._edits else "result"

    def _active(self) -> tuple[str, ...]:
        prep = "concentration_mg_ml" if self.by_conc.isChecked() else "bag_ml"
        return ("weight_kg", "dose_mg_per_kg", "duration_min", prep)

    def _showing(self, slot: str) -> bool:
        if slot == "result":  # about the combination: once every value in it is entered
            return all(s in self._revealed for s in self._active())
        return slot in self._revealed

    @property
    def can_start(self) -> bool:
        """A confirmed programme and a patient id: what Start needs."""
        return self.confirmed is not None and bool(self.patient.text().strip())

    def revalidate(self) -> None:
        """Recompute everything from the fields: pure and fast, on every keystroke."""
        conc_mode = self.by_conc.isChecked()
        self.conc.setEnabled(conc_mode)
        self.bag.setEnabled(not conc_mode)
        programme = self.programme()
        check = check_programme(programme, self.bounds)
        self.check = check
        said: dict[str, list[str]] = {s: [] for s in _SLOTS}
        warnings: list[tuple[Finding, str]] = []
        for f in (*check.refusals, *check.warnings):
            slot = self._slot(f)
            if not self._showing(slot):
                continue
            edit = self._edits.get(slot)
            text = nurse_message(f, raw_text=edit.text() if edit is not None else "",
                                 programme=programme, bounds=self.bounds)
            if f.severity is Severity.WARN:
                warnings.append((f, text))
            else:
                said[slot].append(text)
        if self._showing("patient") and not self.patient.text().strip():
            said["patient"].append("Enter the patient's pseudonymous id (no names)")
        w1, w2 = _finite(self.weight.text()), _finite(self.weight2.text())
        if self._showing("weight2"):
            typed = self.weight2.text().strip()
            if not typed:
                said["weight2"].append("Type the weight a second time, from the scale")
            elif w2 is None:
                said["weight2"].append(f"\u201c{typed}\u201d is not a number: type the "
                                       "weight again in kg")
            elif w1 is not None and w1 != w2 and self._showing("weight_kg"):
                said["weight2"].append(f"{_n(w2)} kg does not match the weight above "
                                       f"({_n(w1)} kg); check both against the scale")
        for slot, lab in self.reasons.items():
            text = "\n".join(said[slot])
            lab.setText(text)
            lab.setVisible(bool(text))
        self._rebuild_warnings(warnings)

        self.confirmed = None
        pending = False
        if not check.refusals:
            acked = [f for f, box in self._warn_boxes if box.isChecked()]
            try:
                self.confirmed = check.confirm(
                    acknowledged=acked,
                    weight_reentered_kg=math.nan if w2 is None else w2)
            except ConfirmationRequired as exc:
                pending = bool(exc.findings)
            except DoseRefused:
                pass
        self._show_result(pending and bool(self._warn_boxes))
        self._show_summary(any(said.values()), pending)
        self._fit_height()

    def _show_result(self, ticks_pending: bool) -> None:
        """The rate only for a confirmed programme; otherwise what is still needed."""
        calc = self.confirmed.calculation if self.confirmed is not None else None
        if calc is not None:
            self.rate.setText(f"{_n(round(calc.rate_ml_h, 4))} mL/h")
            self.rate_detail.setText(
                f"{_n(round(calc.dose_mg, 4))} mg total in {_n(round(calc.volume_ml, 4))} mL "
                f"at {_n(round(calc.concentration_mg_ml, 4))} mg/mL over "
                f"{_n(calc.duration_min)} min ({_n(round(calc.dose_rate_mg_kg_h, 3))} "
                "mg/kg/h). Set the pump yourself: KAP Monitor never controls it.")
        elif ticks_pending:
            self.rate_detail.setText("Tick each warning below once you have checked it; "
                                     "the pump rate appears then.")
        else:
            self.rate_detail.setText("The pump rate appears here once every value is "
                                     "entered and accepted and the weight is typed twice "
                                     "alike.")
        self.rate.setVisible(calc is not None)

    def _show_summary(self, red: bool, ticks_pending: bool) -> None:
        """After an attempt to start: what is left to do, in one line."""
        msg = ""
        if self._attempted and not self.can_start:
            parts = []
            if red:
                parts.append("correct what is marked in red")
            if ticks_pending:
                parts.append("tick each warning once you have checked it")
            msg = "Not started: " + (" and ".join(parts) or "check the entries above") + "."
        self.summary.setText(msg)
        self.summary.setVisible(bool(msg))

    def _rebuild_warnings(self, warnings: list[tuple[Finding, str]]) -> None:
        """One tick box per warning shown; a tick belongs to its finding (value included),
        so ticking 160 kg does not carry over to 170 kg."""
        if [f for f, _ in self._warn_boxes] == [f for f, _ in warnings]:
            return
        for f, box in self._warn_boxes:
            self._acks[f] = box.isChecked()
        while self.warn_lay.count():
            item = self.warn_lay.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.hide()  # now: deleteLater only runs when the event loop gets to it
                w.deleteLater()
        self._warn_boxes = []
        for f, text in warnings:
            row = QWidget()
            rl = QHBoxLayout(row)
            rl.setContentsMargins(0, 0, 0, 0)
            box = QCheckBox("I have checked:")
            box.setChecked(self._acks.get(f, False))
            box.setStyleSheet("color: #f0c56a;")
            box.toggled.connect(lambda _=False: self.revalidate())
            msg = QLabel(text)
            msg.setObjectName("warning")
            msg.setWordWrap(True)
            msg.setTextFormat(Qt.TextFormat.PlainText)
            msg.mousePressEvent = lambda _e, b=box: b.toggle()  # type: ignore[method-assign]
            rl.addWidget(box, 0, Qt.AlignmentFlag.AlignTop)
            rl.addWidget(msg, 1)
            self.warn_lay.addWidget(row)
            row.show()  # now, not when the event loop gets to the layout's deferred show
            self._warn_boxes.append((f, box))

    def _fit_height(self) -> None:
        """Grow (or shrink back) the window as messages come and go, so no wrapped line is
        cut off: a window's layout does not resize it for word-wrapped labels by itself. A
        height the nurse set by hand is only ever grown."""
        if not self.isVisible():
            return
        self.layout().activate()
        need = max(self.heightForWidth(self.width()), self.minimumSizeHint().height())
        h = self.height()
        if need > h or h == self._fitted_h:
            if need != h:
                self.resize(self.width(), need)
            self._fitted_h = need

    # -- result ----------------------------------------------------------------------------

    def config(self) -> SessionConfig:
        """The session configuration (call after the dialog was accepted)."""
        if self.confirmed is None:
            raise ValueError("the programme has not been confirmed")
        p = self.confirmed.programme
        calc = self.confirmed.calculation  # the confirmed numbers, as floats
        return SessionConfig(
            patient=self.patient.text().strip(), room=self.room.text().strip(),
            clinicians=self.clinicians.text().strip(),
            protocol=self.protocol.currentText().strip(), weight_kg=calc.weight_kg,
            weight_basis=str(p.weight_basis), dose_mg_per_kg=calc.dose_mg_per_kg,
            duration_min=calc.duration_min,
            # in bag mode the resulting concentration is what the pump delivers: the session
            # needs it for the delivered dose and the plasma estimate
            concentration_mg_ml=float(calc.concentration_mg_ml),
            bag_ml=None if p.bag_ml is None else float(p.bag_ml),
            route="IV", demo=self.demo)

    def _attempt_start(self) -> None:
        """Start when everything is accepted; otherwise show every message, say what is
        left and put the cursor on the first field to correct."""
        self._attempted = True
        self.reveal_all()
        if self.can_start:
            self._remember()
            self.accept()
            return
        for slot, edit in self._edits.items():
            if self.reasons[slot].isVisible():
                edit.setFocus(Qt.FocusReason.OtherFocusReason)
                break

    def _remember(self) -> None:
        """Room, clinicians and the protocol (first in the recent list) for next time."""
        s = self.settings
        if s is None:
            return
        s.setValue(SETTINGS_ROOM, self.room.text().strip())
        s.setValue(SETTINGS_CLINICIANS, self.clinicians.text().strip())
        protocol = self.protocol.currentText().strip()
        if protocol:
            recent = [protocol, *(p for p in _setting_list(s, SETTINGS_PROTOCOLS)
                                  if p != protocol)]
            s.setValue(SETTINGS_PROTOCOLS, recent[:RECENT_PROTOCOLS])
        s.sync()

    def done(self, r: int) -> None:
        self._shutdown()
        super().done(r)

    def _shutdown(self) -> None:
        self._relay.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- recovery --------------------------------------------------------------------------

    def _submit(self, tag: str, fn: Any, *args: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="setup-db")
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda f: self._relay.post(tag, f))

    def _look_for_abandoned(self) -> None:
        self._submit("abandoned", _abandoned_offers, self.store)

    def _on_relay(self, tag: Any, fut: Future[Any]) -> None:
        exc = fut.exception()
        if tag == "abandoned":
            if exc is not None:
                self._recovery_message(f"Could not look for sessions left open: {exc}")
                return
            self._show_abandoned(fut.result())
        elif isinstance(tag, tuple) and tag[0] == "recovered":
            _, row, button = tag
            if exc is not None:
                row.setText(row.text() + f"\nRecovery failed: {exc}")
                button.setEnabled(True)
                return
            a = fut.result()
            self.recovered.append(a)
            row.setText(f"Session {a.session_id} recovered: closed with a gap marker "
                        "where its record stops.")
            button.setVisible(False)

    def _recovery_message(self, text: str) -> None:
        lab = QLabel(text)
        lab.setWordWrap(True)
        self.recovery_lay.addWidget(lab)
        self.recovery.setVisible(True)

    def _show_abandoned(self, offers: list[tuple[Any, Any]]) -> None:
        """Each session left open, described so the nurse knows which patient it is
        (issue 13 item 2), with Resume (carry on the same session) and Recover (close it
        with a gap marker)."""
        if not offers:
            return
        head = QLabel(f"{len(offers)} session(s) were left open by a recording that stopped. "
                      "Resume one to carry it on (same session, same t0, the dose continued "
                      "from the pump), or recover it to close its record:")
        head.setWordWrap(True)
        head.setStyleSheet("color: #f0c56a;")
        self.recovery_lay.addWidget(head)
        from kapmonitor.store import recover

        for a, st in offers:
            row = QHBoxLayout()
            lab = QLabel(_describe_offer(a, st))
            lab.setWordWrap(True)
            resume = QPushButton("Resume")
            resume.setObjectName(f"resume-{a.session_id}")
            resume.setEnabled(st is not None)
            resume.setAutoDefault(False)
            resume.clicked.connect(lambda _=False, sid=a.session_id: self._resume(sid))
            btn = QPushButton("Recover")
            btn.setObjectName(f"recover-{a.session_id}")
            btn.setAutoDefault(False)
            btn.clicked.connect(lambda _=False, a=a, lab=lab, btn=btn, r=resume: (
                btn.setEnabled(False), r.setEnabled(False),
                self._submit(("recovered", lab, btn), recover, self.store, a)))
            row.addWidget(lab, 1)
            row.addWidget(resume)
            row.addWidget(btn)
            self.recovery_lay.addLayout(row)
        self.recovery.setVisible(True)

    def _resume(self, session_id: int) -> None:
        self.resume_id = session_id
        self.accept()


def _abandoned_offers(store: Any) -> list[tuple[Any, Any]]:
    """Sessions left open, each with what the store knows of it (None when it cannot be
    read back for a resume: it can still be recovered). Runs on the dialog's worker."""
    from kapmonitor.resume import load_resume_state
    from kapmonitor.store import StoreError, find_abandoned

    out: list[tuple[Any, Any]] = []
    for a in find_abandoned(store):
        try:
            st = load_resume_state(store, a.session_id)
        except StoreError:
            st = None
        out.append((a, st))
    return out


def _describe_offer(a: Any, st: Any) -> str:
    """"Session 12 — KAP-0147, room 2, started 14:02, Infusion, last data 14:31 (18 min
    ago): recording process 4711 is no longer running"."""
    import time

    from kapmonitor.session import PHASE_LABELS, Phase

    def hm(t_us: int | None) -> str:
        return "?" if t_us is None else time.strftime("%d %b %H:%M", time.localtime(t_us / 1e6))

    if st is None:
        return f"Session {a.session_id}: {a.reason}"
    ago = (time.time() - st.last_data_us / 1e6) / 60
    phase = PHASE_LABELS.get(Phase(st.phase), st.phase) if st.phase in {p.value for p in Phase} \
        else st.phase
    who = st.patient or "no patient id"
    room = f", room {st.room}" if st.room else ""
    return (f"Session {a.session_id} \u2014 {who}{room}, {phase}, started "
            f"{hm(st.created_us)}, last data {hm(st.last_data_us)} "
            f"({ago:.0f} min ago): {a.reason}")
