"""The session setup dialog: who, where, and the infusion programme (clinical.md §1.2-§1.4).

Why it behaves this way:

- The app computes and a clinician confirms. Every number shown (pump rate, volume, total
  mg) comes from ``dosing.calculate`` and every limit from ``dosing.check_programme`` with the
  packaged bounds: the dialog holds no number of its own, so the CLI calculator and this
  dialog can never disagree.
- Nothing is clamped (CONVENTIONS 19). Fields are plain text boxes, not spin boxes: a spin
  box would silently turn 900 kg into 250 kg. A refused value shows the core's reason under
  its field ("weight 900 kg is above the hard maximum 250 kg (adult bounds, ...)") and the
  Start button stays disabled.
- A value outside the usual range is a warning that must be ticked, one tick per finding
  (ticking 160 kg does not carry over to 170 kg), and the weight is typed twice (§1.4 double
  entry). ``DoseCheck.confirm`` is the only way to a confirmed programme, so the Start button
  is enabled exactly when the core accepts the confirmation.
- A session that a crash left open is offered for recovery at the top, before a new one
  starts, so the record of the last patient is closed properly (with a gap marker) rather
  than forgotten. Looking for such sessions reads the database, so it runs off the GUI
  thread.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import Qt
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
    Finding,
    WeightBasis,
    check_programme,
)
from kapmonitor.session import SessionConfig

from . import theme
from .bridge import Relay

__all__ = ["SetupDialog", "parse_number"]

_FIELDS = ("weight_kg", "dose_mg_per_kg", "duration_min", "concentration_mg_ml", "bag_ml")
_ASK = {"weight_kg": "enter the weight (kg)", "dose_mg_per_kg": "enter the dose (mg/kg)",
        "duration_min": "enter the duration (min)",
        "concentration_mg_ml": "enter the concentration (mg/mL)",
        "bag_ml": "enter the bag volume (mL)"}


def parse_number(text: str) -> float | str | None:
    """'70' -> 70.0, '70,5' -> 70.5, '' -> None, anything else stays text so the core's
    check refuses it with its own reason ("is not a number")."""
    t = text.strip().replace(",", ".")
    if not t:
        return None
    try:
        v = float(t)
    except ValueError:
        return text.strip()
    return v


def _reason_label() -> QLabel:
    lab = QLabel("")
    lab.setObjectName("reason")
    lab.setWordWrap(True)
    lab.setFont(theme.font(13))
    lab.setVisible(False)
    return lab


class SetupDialog(QDialog):
    """Collects a :class:`SessionConfig` and a :class:`ConfirmedProgramme`.

    ``store`` (optional) is searched for abandoned sessions to recover. After ``accept``,
    :meth:`config` and :attr:`confirmed` hold the result."""

    def __init__(self, store: Any = None, *, demo: bool = False,
                 defaults: SessionConfig | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New session" + (" \u2014 DEMO" if demo else ""))
        self.setModal(True)
        self.store = store
        self.demo = demo
        self.check: DoseCheck | None = None
        self.confirmed: ConfirmedProgramme | None = None
        self.recovered: list[Any] = []
        #: set when the nurse chose to resume a session left open instead of a new one
        self.resume_id: int | None = None
        self._acks: dict[Finding, bool] = {}
        self._warn_boxes: list[tuple[Finding, QCheckBox]] = []
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
        self.room = QLineEdit(d.room)
        self.clinicians = QLineEdit(d.clinicians)
        self.clinicians.setPlaceholderText("e.g. RN Lee, Dr Osei (comma separated)")
        self.weight = QLineEdit("" if d.weight_kg is None else f"{d.weight_kg:g}")
        self.weight2 = QLineEdit("")
        self.weight2.setPlaceholderText("type the weight again")
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
        self.reasons = {f: _reason_label() for f in (*_FIELDS, "weight2", "patient")}

        form = QGridLayout()
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(3)
        row = 0

        def add(label: str, widget: QWidget, unit: str = "", reason: str | None = None,
                extra: QWidget | None = None) -> None:
            nonlocal row
            lab = QLabel(label)
            form.addWidget(lab, row, 0)
            form.addWidget(widget, row, 1)
            if unit:
                u = QLabel(unit)
                u.setObjectName("dim")
                form.addWidget(u, row, 2)
            if extra is not None:
                form.addWidget(extra, row, 3)
            row += 1
            if reason is not None:
                form.addWidget(self.reasons[reason], row, 1, 1, 3)
                row += 1

        add("Patient id", self.patient, "", "patient")
        add("Room", self.room)
        add("Clinicians", self.clinicians)
        add("Weight", self.weight, "kg", "weight_kg", self.basis)
        add("Weight again", self.weight2, "kg", "weight2")
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
        self.rate_detail = QLabel("")
        self.rate_detail.setObjectName("dim")
        self.rate_detail.setWordWrap(True)
        self.warn_host = QWidget()
        self.warn_lay = QVBoxLayout(self.warn_host)
        self.warn_lay.setContentsMargins(0, 0, 0, 0)
        self.warn_lay.setSpacing(2)
        self.summary = QLabel("")
        self.summary.setObjectName("reason")
        self.summary.setWordWrap(True)
        self.bounds_note = QLabel("")
        self.bounds_note.setObjectName("faint")
        self.bounds_note.setWordWrap(True)
        self.bounds_note.setFont(theme.font(11))

        self.ok = QPushButton("Start session")
        self.ok.setDefault(True)
        self.ok.setEnabled(False)
        self.ok.clicked.connect(self._accept)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
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
        lay.addWidget(self.warn_host)
        lay.addWidget(self.summary)
        lay.addWidget(self.bounds_note)
        lay.addLayout(buttons)
        self.setMinimumWidth(620)

        for w in (self.patient, self.weight, self.weight2, self.dose, self.duration, self.conc,
                  self.bag):
            w.textChanged.connect(self.revalidate)
        self.basis.currentIndexChanged.connect(self.revalidate)
        self.by_conc.toggled.connect(self.revalidate)
        self.revalidate()
        if store is not None:
            self._look_for_abandoned()

    # -- validation ------------------------------------------------------------------------

    def programme(self) -> DoseProgramme:
        """The programme as typed; unparsable text is passed on for the core to refuse."""
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

    def _empty(self, field: str) -> bool:
        w = {"weight_kg": self.weight, "dose_mg_per_kg": self.dose,
             "duration_min": self.duration, "concentration_mg_ml": self.conc,
             "bag_ml": self.bag}[field]
        return not w.text().strip()

    def revalidate(self) -> None:
        """Recompute everything from the fields: pure and fast, on every keystroke."""
        self.conc.setEnabled(self.by_conc.isChecked())
        self.bag.setEnabled(self.by_bag.isChecked())
        check = check_programme(self.programme())
        self.check = check
        self.bounds_note.setText(f"Bounds: {check.bounds_source or 'packaged'} \u2014 "
                                 "proposed engineering limits, not published limits")
        per_field: dict[str, list[str]] = {f: [] for f in self.reasons}
        for f in check.refusals:
            key = f.field if f.field in per_field else None
            if key is not None and self._empty(key):
                per_field[key] = [_ASK[key]]
                continue
            if key is None:
                key = "concentration_mg_ml" if self.by_conc.isChecked() else "bag_ml"
                if f.field in ("total_dose_mg", "rate_ml_h"):
                    key = "dose_mg_per_kg"
            per_field[key].append(f.message)
        active = "concentration_mg_ml" if self.by_conc.isChecked() else "bag_ml"
        inactive = "bag_ml" if active == "concentration_mg_ml" else "concentration_mg_ml"
        per_field[inactive] = []
        if not self.patient.text().strip():
            per_field["patient"].append("enter a pseudonymous patient id (no names)")
        w1, w2 = parse_number(self.weight.text()), parse_number(self.weight2.text())
        if w2 is None:
            per_field["weight2"].append("type the weight a second time (double entry, "
                                        "clinical.md \u00a71.4)")
        elif not isinstance(w2, float) or not isinstance(w1, float) or w1 != w2:
            per_field["weight2"].append(f"does not match the first entry ({self.weight.text()}"
                                        " kg)")
        for f, lab in self.reasons.items():
            text = "\n".join(per_field.get(f, []))
            lab.setText(text)
            lab.setVisible(bool(text))
        calc = check.calculation
        if calc is not None:
            self.rate.setText(f"{calc.rate_ml_h:.4g} mL/h")
            self.rate_detail.setText(
                f"{calc.dose_mg:.4g} mg total in {calc.volume_ml:.4g} mL at "
                f"{calc.concentration_mg_ml:.4g} mg/mL over {calc.duration_min:g} min "
                f"({calc.dose_rate_mg_kg_h:.3g} mg/kg/h). Set the pump yourself: KAP Monitor "
                "never controls it.")
        else:
            self.rate.setText("\u2014 mL/h")
            self.rate_detail.setText("The pump rate is shown once every value is accepted.")
        self._rebuild_warnings(check.warnings)
        self._update_ok()

    def _rebuild_warnings(self, warnings: tuple[Finding, ...]) -> None:
        if tuple(f for f, _ in self._warn_boxes) == warnings:
            return
        for f, box in self._warn_boxes:
            self._acks[f] = box.isChecked()
        while self.warn_lay.count():
            w = self.warn_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self._warn_boxes = []
        for f in warnings:
            row = QWidget()
            rl = QHBoxLayout(row)
            rl.setContentsMargins(0, 0, 0, 0)
            box = QCheckBox("I have checked:")
            box.setChecked(self._acks.get(f, False))
            box.setStyleSheet("color: #f0c56a;")
            box.toggled.connect(lambda _=False: self._update_ok())
            msg = QLabel(f.message)
            msg.setWordWrap(True)
            msg.setStyleSheet("color: #f0c56a;")
            msg.mousePressEvent = lambda _e, b=box: b.toggle()  # type: ignore[method-assign]
            rl.addWidget(box, 0, Qt.AlignmentFlag.AlignTop)
            rl.addWidget(msg, 1)
            self.warn_lay.addWidget(row)
            self._warn_boxes.append((f, box))

    def _update_ok(self) -> None:
        check = self.check
        self.confirmed = None
        msg = ""
        if check is None:
            ok = False
        elif check.refusals:
            ok = False
            msg = "Refused: " + check.reason()
        else:
            acked = [f for f, box in self._warn_boxes if box.isChecked()]
            w2 = parse_number(self.weight2.text())
            try:
                self.confirmed = check.confirm(
                    acknowledged=acked,
                    weight_reentered_kg=w2 if isinstance(w2, float) else math.nan)
            except ConfirmationRequired as exc:
                ok = False
                msg = ("Tick each warning above to confirm you have checked it."
                       if exc.findings else str(exc))
            except DoseRefused as exc:
                ok = False
                msg = str(exc)
            else:
                ok = True
        if not self.patient.text().strip():
            ok = False
            msg = msg or "Enter a pseudonymous patient id."
        self.summary.setText(msg)
        self.summary.setVisible(bool(msg))
        self.ok.setEnabled(ok)

    # -- result ----------------------------------------------------------------------------

    def config(self) -> SessionConfig:
        """The session configuration (call after the dialog was accepted)."""
        if self.confirmed is None:
            raise ValueError("the programme has not been confirmed")
        p = self.confirmed.programme
        calc = self.confirmed.calculation
        return SessionConfig(
            patient=self.patient.text().strip(), room=self.room.text().strip(),
            clinicians=self.clinicians.text().strip(), weight_kg=float(p.weight_kg),
            weight_basis=str(p.weight_basis), dose_mg_per_kg=float(p.dose_mg_per_kg),
            duration_min=float(p.duration_min),
            # in bag mode the resulting concentration is what the pump delivers: the session
            # needs it for the delivered dose and the plasma estimate
            concentration_mg_ml=float(calc.concentration_mg_ml),
            bag_ml=None if p.bag_ml is None else float(p.bag_ml),
            route="IV", demo=self.demo)

    def _accept(self) -> None:
        self._update_ok()
        if self.ok.isEnabled():
            self.accept()

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
            resume.clicked.connect(lambda _=False, sid=a.session_id: self._resume(sid))
            btn = QPushButton("Recover")
            btn.setObjectName(f"recover-{a.session_id}")
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
