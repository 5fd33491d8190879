"""Dose calculator, input bounds and delivered dose from pump telemetry (clinical.md §1.2-§1.4).

The app computes and displays; a clinician confirms (clinical.md, status notes). So this
module never decides a dose: it turns a ``DoseProgramme`` (the weight-based intent, stored
as data, clinical.md §1.1 "App requirement") into pump numbers by the formulas of
clinical.md §1.3, and checks it against the bounds of clinical.md §1.4, which live in
``resources/dosing_bounds.toml`` with their rationale:

- a value outside a hard limit is REFUSED with a reason naming the field, the value, the
  limit and why, e.g. "weight 900 kg is above the hard maximum 250 kg (adult bounds,
  clinical.md §1.4)". Nothing is clamped (CONVENTIONS 19).
- a value outside the soft range is a WARNING. ``DoseCheck.confirm`` gives a
  ``ConfirmedProgramme`` only when every warning is passed back as acknowledged and the
  weight has been entered a second time (clinical.md §1.4 "Double entry or confirmation
  of weight"); there is no other way to make one.

Two preparation modes (clinical.md §1.2): a fixed concentration (mg/mL; the calculator
gives the volume) or a fixed bag volume (mL; the calculator gives the concentration).

``DeliveredDoseTracker`` integrates what a pump actually delivered from its ``PumpState``
telemetry, compares it with the pump's own volume counter, and feeds the plasma estimate
(``pk.PlasmaEstimator``) with the mg delivered over each interval.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from .model import PumpRunState, PumpState, Quality
from .pk import Infusion

__all__ = [
    "BOUNDS_RESOURCE",
    "DELIVERING_STATES",
    "Bound",
    "ConfirmationRequired",
    "ConfirmedProgramme",
    "DeliveredDose",
    "DeliveredDoseTracker",
    "DiscrepancyTolerance",
    "DoseCalculation",
    "DoseCheck",
    "DoseProgramme",
    "DoseRefused",
    "DosingBounds",
    "Finding",
    "PreparationMode",
    "RefusedValue",
    "Route",
    "Severity",
    "WeightBasis",
    "calculate",
    "check_programme",
    "default_bounds",
    "load_bounds",
]

BOUNDS_RESOURCE = "dosing_bounds.toml"


class WeightBasis(enum.StrEnum):
    """Which weight the dose is based on; always recorded (clinical.md §1.4)."""

    ACTUAL = "actual"
    IDEAL = "ideal"
    ADJUSTED = "adjusted"


class Route(enum.StrEnum):
    """Administration routes the app records (clinical.md §1.5). The infusion calculator
    and the PK estimate cover IV only; the others are recorded, "not modelled"."""

    IV = "iv"
    IM = "im"
    SUBLINGUAL = "sublingual"
    ORAL = "oral"
    NASAL = "nasal"
    SC = "sc"


class PreparationMode(enum.StrEnum):
    """How the infusion is prepared (clinical.md §1.2)."""

    FIXED_CONCENTRATION = "fixed_concentration"  # mg/mL given; volume computed
    FIXED_BAG = "fixed_bag"  # dose diluted into a bag of given mL; mg/mL computed


class Severity(enum.StrEnum):
    REFUSE = "refuse"
    WARN = "warn"


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True, slots=True)
class RefusedValue:
    """A value refused whatever the limits say (50 and 100 mg/mL, clinical.md §1.2, §1.4)."""

    value: float
    why: str


@dataclass(frozen=True, slots=True)
class Bound:
    """Hard and soft limits of one field, with the reasons shown to the nurse."""

    field: str
    label: str
    unit: str
    hard_min: float | None = None
    soft_min: float | None = None
    soft_max: float | None = None
    hard_max: float | None = None
    why_hard_min: str = ""
    why_hard_max: str = ""
    why_soft: str = ""
    rationale: str = ""
    unsure: bool = False
    refuse: tuple[RefusedValue, ...] = ()
    warn_above_mg_per_kg: float | None = None

    def __post_init__(self) -> None:
        order = [v for v in (self.hard_min, self.soft_min, self.soft_max, self.hard_max)
                 if v is not None]
        if any(not math.isfinite(v) for v in order):
            raise ValueError(f"bounds of {self.field} must be finite")
        if order != sorted(order):
            raise ValueError(f"bounds of {self.field} are out of order: need hard_min <= "
                             f"soft_min <= soft_max <= hard_max, got {order}")


_BOUND_KEYS = frozenset(Bound.__dataclass_fields__) - {"field", "refuse"}
_REQUIRED_FIELDS = ("weight_kg", "dose_mg_per_kg", "duration_min", "concentration_mg_ml",
                    "bag_ml", "total_dose_mg", "rate_ml_h")


@dataclass(frozen=True, slots=True)
class DosingBounds:
    """All bounds of the calculator, read from ``resources/dosing_bounds.toml``."""

    fields: Mapping[str, Bound]
    source: str = ""
    status: str = ""

    def __getitem__(self, name: str) -> Bound:
        return self.fields[name]

    def with_pump_max(self, rate_ml_h: float) -> DosingBounds:
        """The same bounds with the hard maximum rate of a known pump (clinical.md §1.4:
        "pump max (e.g. 999 mL/h)", pump-dependent)."""
        if not (math.isfinite(rate_ml_h) and rate_ml_h > 0):
            raise ValueError(f"pump maximum must be a positive mL/h, got {rate_ml_h!r}")
        rate = replace(self.fields["rate_ml_h"], hard_max=float(rate_ml_h))
        return replace(self, fields={**self.fields, "rate_ml_h": rate})


def load_bounds(text: str | None = None) -> DosingBounds:
    """Parse the bounds TOML (the packaged resource when ``text`` is None). Strict: an
    unknown key or a missing field is an error, so a typo cannot disable a limit."""
    if text is None:
        text = resources.files("kapmonitor.resources").joinpath(BOUNDS_RESOURCE).read_text(
            encoding="utf-8")
    data = tomllib.loads(text)
    meta = data.get("meta", {})
    raw_fields = data.get("fields", {})
    out: dict[str, Bound] = {}
    for name, spec in raw_fields.items():
        unknown = set(spec) - _BOUND_KEYS - {"refuse"}
        if unknown:
            raise ValueError(f"dosing bounds: unknown keys {sorted(unknown)} in [fields.{name}]")
        kwargs: dict[str, Any] = {k: spec[k] for k in spec if k != "refuse"}
        for k in ("hard_min", "soft_min", "soft_max", "hard_max", "warn_above_mg_per_kg"):
            if k in kwargs:
                kwargs[k] = float(kwargs[k])
        refuse = tuple(RefusedValue(float(r["value"]), str(r["why"]))
                       for r in spec.get("refuse", ()))
        out[name] = Bound(field=name, refuse=refuse, **kwargs)
    missing = [f for f in _REQUIRED_FIELDS if f not in out]
    if missing:
        raise ValueError(f"dosing bounds: missing fields {missing}")
    return DosingBounds(fields=out, source=str(meta.get("source", "")),
                        status=str(meta.get("status", "")))


@functools.cache
def default_bounds() -> DosingBounds:
    """The packaged bounds (clinical.md §1.4), read once."""
    return load_bounds()


# --------------------------------------------------------------------------- programme


@dataclass(frozen=True, slots=True, kw_only=True)
class DoseProgramme:
    """The weight-based intent of one infusion, stored as data (clinical.md §1.1): nothing
    here defaults to 0.5 mg/kg or 40 min. Keyword-only, so a dose can never land in the
    weight field by position. Exactly one of ``concentration_mg_ml`` (fixed-concentration
    mode) and ``bag_ml`` (fixed-bag mode) is given (clinical.md §1.2).

    Constructing one never raises on a bad value: ``check_programme`` reports it, with the
    reason, so a form can show every problem at once. None means "not given": refused
    as a missing number, except by ``check_programme(..., partial=True)`` (a headless
    record that states only part of the programme, e.g. the weight).
    """

    weight_kg: float | None
    dose_mg_per_kg: float | None
    duration_min: float | None
    concentration_mg_ml: float | None = None
    bag_ml: float | None = None
    weight_basis: WeightBasis | str = WeightBasis.ACTUAL
    route: Route | str = Route.IV
    series_index: int = 1
    series_total: int = 1

    def __post_init__(self) -> None:
        # Accept the stored string forms; an unknown one stays as given and is refused.
        for name, enum_type in (("weight_basis", WeightBasis), ("route", Route)):
            value = getattr(self, name)
            if isinstance(value, str) and not isinstance(value, enum_type):
                with contextlib.suppress(ValueError):
                    object.__setattr__(self, name, enum_type(value.strip().lower()))

    @property
    def mode(self) -> PreparationMode | None:
        """The preparation mode, or None when both or neither of the two are given."""
        if self.concentration_mg_ml is not None and self.bag_ml is None:
            return PreparationMode.FIXED_CONCENTRATION
        if self.bag_ml is not None and self.concentration_mg_ml is None:
            return PreparationMode.FIXED_BAG
        return None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the store and ``--json``); ``from_dict`` reverses it."""
        return {
            "weight_kg": self.weight_kg,
            "weight_basis": str(self.weight_basis),
            "dose_mg_per_kg": self.dose_mg_per_kg,
            "duration_min": self.duration_min,
            "route": str(self.route),
            "series_index": self.series_index,
            "series_total": self.series_total,
            "concentration_mg_ml": self.concentration_mg_ml,
            "bag_ml": self.bag_ml,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DoseProgramme:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown programme fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class DoseCalculation:
    """The pump numbers of a programme (clinical.md §1.3):

        dose_mg        = dose_mg_per_kg × weight_kg
        volume_mL      = dose_mg / conc_mg_per_mL         (fixed-concentration mode)
        conc_mg_per_mL = dose_mg / bag_volume_mL          (fixed-bag mode; volume = bag)
        rate_mL_per_h  = volume_mL / (duration_min / 60)
        dose_rate      = dose_mg_per_kg / (duration_min / 60)   mg/kg/h
    """

    mode: PreparationMode
    weight_kg: float
    dose_mg_per_kg: float
    duration_min: float
    dose_mg: float
    volume_ml: float
    concentration_mg_ml: float
    rate_ml_h: float
    dose_rate_mg_kg_h: float
    dose_rate_mg_h: float

    def schedule(self, start_min: float = 0.0) -> tuple[Infusion]:
        """The programme as a PK schedule: ``dose_mg`` evenly over the duration."""
        return (Infusion(start_min, self.duration_min, self.dose_mg),)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "dose_mg": self.dose_mg,
            "volume_ml": self.volume_ml,
            "concentration_mg_ml": self.concentration_mg_ml,
            "rate_ml_h": self.rate_ml_h,
            "dose_rate_mg_kg_h": self.dose_rate_mg_kg_h,
            "dose_rate_mg_h": self.dose_rate_mg_h,
            "duration_min": self.duration_min,
        }


def _positive(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def calculate(programme: DoseProgramme) -> DoseCalculation:
    """The formulas of clinical.md §1.3, with no bounds applied (``check_programme`` does
    that). Raises ValueError when a number the formulas need is missing or not positive."""
    mode = programme.mode
    if mode is None:
        raise ValueError("give exactly one of concentration (mg/mL) and bag volume (mL)")
    needed = {"weight_kg": programme.weight_kg, "dose_mg_per_kg": programme.dose_mg_per_kg,
              "duration_min": programme.duration_min}
    needed["concentration_mg_ml" if mode is PreparationMode.FIXED_CONCENTRATION
           else "bag_ml"] = (programme.concentration_mg_ml
                             if mode is PreparationMode.FIXED_CONCENTRATION else programme.bag_ml)
    bad = [k for k, v in needed.items() if not _positive(v)]
    if bad:
        raise ValueError(f"not a positive number: {', '.join(bad)}")
    w = float(programme.weight_kg)
    d = float(programme.dose_mg_per_kg)
    minutes = float(programme.duration_min)
    dose_mg = d * w
    if mode is PreparationMode.FIXED_CONCENTRATION:
        conc = float(programme.concentration_mg_ml)  # type: ignore[arg-type]
        volume = dose_mg / conc
    else:
        volume = float(programme.bag_ml)  # type: ignore[arg-type]
        conc = dose_mg / volume
    # × 60 / minutes rather than / (minutes / 60): 52.5, not 52.50000000000001.
    return DoseCalculation(
        mode=mode,
        weight_kg=w,
        dose_mg_per_kg=d,
        duration_min=minutes,
        dose_mg=dose_mg,
        volume_ml=volume,
        concentration_mg_ml=conc,
        rate_ml_h=volume * 60.0 / minutes,
        dose_rate_mg_kg_h=d * 60.0 / minutes,
        dose_rate_mg_h=dose_mg * 60.0 / minutes,
    )


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class Finding:
    """One refusal or warning. ``code`` is stable (``field.bound``) for tests and logs;
    ``message`` is the one line a nurse reads."""

    code: str
    severity: Severity
    field: str
    value: object
    unit: str
    limit: float | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        value = self.value
        finite = isinstance(value, int | float) and math.isfinite(value)
        if not (finite or isinstance(value, str) or value is None):
            value = str(value)  # NaN, inf and odd types as text: JSON has no NaN
        return {"code": self.code, "severity": str(self.severity), "field": self.field,
                "value": value, "unit": self.unit, "limit": self.limit,
                "message": self.message}


class DoseRefused(ValueError):
    """``confirm`` on a programme with refusals. ``findings`` lists them."""

    def __init__(self, findings: Iterable[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__("; ".join(f.message for f in self.findings))


class ConfirmationRequired(ValueError):
    """``confirm`` without acknowledging every warning, or with a second weight entry that
    does not match the first. ``findings`` lists the unacknowledged warnings."""

    def __init__(self, message: str, findings: Iterable[Finding] = ()) -> None:
        self.findings = tuple(findings)
        super().__init__(message)


_SECTION = "clinical.md §1.4"
_CONFIRM_TOKEN = object()


def _num(x: float) -> str:
    """Numbers as a nurse writes them: 900, 0.35, 52.5, 78.75."""
    return f"{x:.6g}"


def _why(text: str) -> str:
    return f"{text}, {_SECTION}" if text else _SECTION


class _Collector:
    def __init__(self) -> None:
        self.refusals: list[Finding] = []
        self.warnings: list[Finding] = []

    def refuse(self, code: str, field_: str, value: object, unit: str, limit: float | None,
               message: str) -> None:
        self.refusals.append(Finding(code, Severity.REFUSE, field_, value, unit, limit, message))

    def warn(self, code: str, field_: str, value: object, unit: str, limit: float | None,
             message: str) -> None:
        self.warnings.append(Finding(code, Severity.WARN, field_, value, unit, limit, message))

    def number(self, bound: Bound, value: object, label: str | None = None) -> float | None:
        """Check one value against one bound; the float if it is a usable number."""
        label = label or bound.label
        f, u = bound.field, bound.unit
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.refuse(f"{f}.not_a_number", f, value, u, None,
                        f"{label} {value!r} is not a number (enter {u})")
            return None
        v = float(value)
        if not math.isfinite(v):
            self.refuse(f"{f}.not_a_number", f, v, u, None,
                        f"{label} is not a number (got {v}); enter {u}")
            return None
        for rv in bound.refuse:
            if v == rv.value:
                limit = f"hard maximum {_num(bound.hard_max)} {u}, " if bound.hard_max else ""
                self.refuse(f"{f}.refused_value", f, v, u, rv.value,
                            f"{label} {_num(v)} {u} is refused: {rv.why} ({limit}"
                            f"clinical.md §1.2, §1.4)")
                return v
        if bound.hard_min is not None and v < bound.hard_min:
            self.refuse(f"{f}.hard_min", f, v, u, bound.hard_min,
                        f"{label} {_num(v)} {u} is below the hard minimum "
                        f"{_num(bound.hard_min)} {u} ({_why(bound.why_hard_min)})")
        elif bound.hard_max is not None and v > bound.hard_max:
            self.refuse(f"{f}.hard_max", f, v, u, bound.hard_max,
                        f"{label} {_num(v)} {u} is above the hard maximum "
                        f"{_num(bound.hard_max)} {u} ({_why(bound.why_hard_max)})")
        elif bound.soft_min is not None and v < bound.soft_min:
            self.warn(f"{f}.soft_min", f, v, u, bound.soft_min,
                      f"{label} {_num(v)} {u} is below the usual {_usual(bound)} "
                      f"({_why(bound.why_soft)}): confirm to continue")
        elif bound.soft_max is not None and v > bound.soft_max:
            self.warn(f"{f}.soft_max", f, v, u, bound.soft_max,
                      f"{label} {_num(v)} {u} is above the usual {_usual(bound)} "
                      f"({_why(bound.why_soft)}): confirm to continue")
        return v


def _usual(b: Bound) -> str:
    if b.soft_min is not None and b.soft_max is not None:
        return f"range {_num(b.soft_min)} to {_num(b.soft_max)} {b.unit}"
    if b.soft_max is not None:
        return f"maximum {_num(b.soft_max)} {b.unit}"
    return f"minimum {_num(b.soft_min)} {b.unit}"  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DoseCheck:
    """The outcome of ``check_programme``: the numbers (only when nothing is refused),
    every refusal and every warning."""

    programme: DoseProgramme
    calculation: DoseCalculation | None
    refusals: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    bounds_source: str = ""

    @property
    def ok(self) -> bool:
        """No refusal (warnings may still need confirmation)."""
        return not self.refusals

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.warnings)

    def reason(self) -> str:
        """All refusals on one line (for a CLI exit message or a status bar)."""
        return "; ".join(f.message for f in self.refusals)

    def confirm(
        self, *, acknowledged: Iterable[Finding], weight_reentered_kg: float
    ) -> ConfirmedProgramme:
        """The only way to a ``ConfirmedProgramme``: no refusals, every warning of this
        check passed back in ``acknowledged`` (the findings themselves, value included, so
        an acknowledgement of 160 kg does not carry over to 170 kg), and the weight
        entered a second time and equal to the first (clinical.md §1.4)."""
        if self.refusals:
            raise DoseRefused(self.refusals)
        acked = tuple(acknowledged)
        missing = [w for w in self.warnings if w not in acked]
        if missing:
            raise ConfirmationRequired(
                "not confirmed: acknowledge " + "; ".join(w.message for w in missing), missing)
        w = self.programme.weight_kg
        if not (_positive(weight_reentered_kg) and math.isclose(
                float(weight_reentered_kg), float(w), rel_tol=0, abs_tol=1e-9)):
            raise ConfirmationRequired(
                f"weight entered twice does not match: {_num(float(w))} kg, then "
                f"{weight_reentered_kg!r} kg (clinical.md §1.4 double entry)")
        assert self.calculation is not None  # no refusals implies a calculation
        return ConfirmedProgramme(
            programme=self.programme,
            calculation=self.calculation,
            acknowledged=tuple(self.warnings),
            bounds_source=self.bounds_source,
            _token=_CONFIRM_TOKEN,
        )


@dataclass(frozen=True, slots=True)
class ConfirmedProgramme:
    """A programme a clinician has confirmed: made only by ``DoseCheck.confirm``."""

    programme: DoseProgramme
    calculation: DoseCalculation
    acknowledged: tuple[Finding, ...]
    bounds_source: str = ""
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _CONFIRM_TOKEN:
            raise TypeError("a ConfirmedProgramme is made only by DoseCheck.confirm()")
        # Guards against a copy edited with dataclasses.replace: the numbers must still be
        # those of the programme.
        if calculate(self.programme) != self.calculation:
            raise ValueError("calculation does not match the programme")


def check_programme(
    programme: DoseProgramme,
    bounds: DosingBounds | None = None,
    *,
    pump_max_ml_h: float | None = None,
    partial: bool = False,
) -> DoseCheck:
    """Check ``programme`` against the bounds of clinical.md §1.4 and compute its pump
    numbers (clinical.md §1.3). Every problem is reported at once; the calculation is
    withheld when anything is refused, so a refused programme shows no rate to copy.

    The one check of a programme: the setup dialog, ``kapmonitor dose`` and ``kapmonitor
    record`` all call it, so a value one of them refuses the others refuse too, with the
    same words. ``partial=True`` (``record``, where every programme field is optional)
    checks only the fields given; the derived checks (total dose, rate) and the
    calculation need all of weight, dose, duration and a preparation."""
    b = bounds or default_bounds()
    if pump_max_ml_h is not None:
        b = b.with_pump_max(pump_max_ml_h)
    c = _Collector()
    p = programme

    def given(value: object) -> bool:
        return not (partial and value is None)

    if not isinstance(p.route, Route):
        c.refuse("route.unknown", "route", p.route, "", None,
                 f"route {p.route!r} is not one of {', '.join(r.value for r in Route)} "
                 "(clinical.md §1.5)")
    elif p.route is not Route.IV:
        c.refuse("route.not_iv", "route", str(p.route), "", None,
                 f"route {p.route} cannot be calculated here: the infusion calculator is for "
                 "IV infusion only; record other routes as an administration "
                 "(clinical.md §1.5)")
    if not isinstance(p.weight_basis, WeightBasis):
        c.refuse("weight_basis.unknown", "weight_basis", p.weight_basis, "", None,
                 f"weight basis {p.weight_basis!r} is not one of actual, ideal or adjusted "
                 f"({_SECTION})")
    _check_series(c, p.series_index, p.series_total)

    weight = c.number(b["weight_kg"], p.weight_kg) if given(p.weight_kg) else None
    dose = c.number(b["dose_mg_per_kg"], p.dose_mg_per_kg) if given(p.dose_mg_per_kg) else None
    minutes = c.number(b["duration_min"], p.duration_min) if given(p.duration_min) else None
    mode = p.mode
    preparation_given = p.concentration_mg_ml is not None or p.bag_ml is not None
    if mode is None and (preparation_given or not partial):
        both = p.concentration_mg_ml is not None
        c.refuse("preparation.mode", "preparation", None, "", None,
                 "give either the concentration (mg/mL) or the bag volume (mL), "
                 + ("not both" if both else "one of them") + " (clinical.md §1.2)")
    elif mode is PreparationMode.FIXED_CONCENTRATION:
        c.number(b["concentration_mg_ml"], p.concentration_mg_ml)
    elif mode is PreparationMode.FIXED_BAG:
        c.number(b["bag_ml"], p.bag_ml)

    calc: DoseCalculation | None = None
    # The derived checks (total, rate, resulting concentration) run only on inputs that
    # passed their own hard limits: a mistyped 900 kg is one reason, not three.
    if not c.refusals and None not in (weight, dose, minutes) and mode is not None:
        try:
            calc = calculate(p)
        except ValueError:
            calc = None  # a non-positive input, already refused above
    if calc is not None:
        total = b["total_dose_mg"]
        c.number(total, calc.dose_mg)
        per_kg = total.warn_above_mg_per_kg
        if per_kg is not None:
            # A separate warning from the mg/kg soft range: it names the total in mg, which
            # is what is drawn up (clinical.md §1.4 "warn above 1 mg/kg × weight").
            limit = per_kg * calc.weight_kg
            hard = total.hard_max if total.hard_max is not None else math.inf
            if limit < calc.dose_mg <= hard:
                c.warn("total_dose_mg.per_kg", "total_dose_mg", calc.dose_mg, "mg", limit,
                       f"total dose {_num(calc.dose_mg)} mg is above {_num(per_kg)} mg/kg × "
                       f"{_num(calc.weight_kg)} kg = {_num(limit)} mg ({_SECTION}): "
                       "confirm to continue")
        if mode is PreparationMode.FIXED_BAG:
            c.number(b["concentration_mg_ml"], calc.concentration_mg_ml,
                     label=f"resulting concentration ({_num(calc.dose_mg)} mg in "
                     f"{_num(calc.volume_ml)} mL)")
        c.number(b["rate_ml_h"], calc.rate_ml_h)

    return DoseCheck(
        programme=p,
        calculation=calc if not c.refusals else None,
        refusals=tuple(c.refusals),
        warnings=tuple(c.warnings),
        bounds_source=b.source,
    )


def _check_series(c: _Collector, index: object, total: object) -> None:
    """n of N (clinical.md §1.1): whole numbers, 1 <= n <= N."""
    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not whole(total) or total < 1:  # type: ignore[operator]
        c.refuse("series_total.invalid", "series_total", total, "", 1,
                 f"series total {total!r} must be a whole number of infusions, at least 1 "
                 "(clinical.md §1.1)")
        return
    if not whole(index) or not 1 <= index <= total:  # type: ignore[operator]
        c.refuse("series_index.invalid", "series_index", index, "", float(total),  # type: ignore[arg-type]
                 f"infusion number {index!r} must be a whole number from 1 to the series "
                 f"total {total} (clinical.md §1.1)")


# --------------------------------------------------------------------------- delivered dose

#: Pump states in which the reported rate is being delivered. A paused, stopped, alarmed
#: or completed pump delivers nothing by rate × time (a KVO rate after completion is seen
#: in the pump's own volume counter, which is the reference).
DELIVERING_STATES = frozenset({PumpRunState.RUNNING, PumpRunState.BOLUS})


@dataclass(frozen=True, slots=True)
class DiscrepancyTolerance:
    """How far the integrated volume (rate × time) may drift from the pump's own counter
    before the report flags it: max(``abs_ml``, ``rel`` × counter volume), compared over
    what both have seen since the counter was first read.

    Defaults: 0.5 mL absorbs polling (a rate change is only seen at the next poll: at
    5 s polls a 50 mL/h change is 0.07 mL) and the 0.1 mL display resolution of pump
    counters; 5 % is of the order of quoted volumetric-pump accuracy (not in clinical.md:
    a project choice). A flag means "look at the pump", not a dosing decision.
    """

    abs_ml: float = 0.5
    rel: float = 0.05

    def __post_init__(self) -> None:
        if not (math.isfinite(self.abs_ml) and self.abs_ml >= 0
                and math.isfinite(self.rel) and self.rel >= 0):
            raise ValueError("tolerances must be finite and >= 0")

    def limit_ml(self, counter_ml: float) -> float:
        return max(self.abs_ml, self.rel * abs(counter_ml))


@dataclass(frozen=True, slots=True)
class DeliveredDose:
    """What a pump has delivered so far, as ``DeliveredDoseTracker`` sees it.

    ``delivered_ml`` is the best figure: per infusion, the pump's own counter, plus rate ×
    time since its last reading; rate × time alone when a pump never reports its counter.
    ``interval_*`` is the drug of the last update's interval for ``pk.PlasmaEstimator``:
    the counter difference when both ends have a counter reading, else rate × time.
    """

    t_us: int
    infusion_id: int
    running: bool
    delivered_ml: float
    integrated_ml: float
    counter_ml: float | None
    preobserved_ml: float
    basis: str
    concentration_mg_ml: float | None
    concentration_source: str | None
    concentration_mismatch: bool
    delivered_mg: float | None
    delivered_mg_per_kg: float | None
    discrepancy: bool
    discrepancy_ml: float | None
    tolerance_ml: float | None
    interval_start_us: int | None
    interval_ml: float | None
    interval_mg: float | None
    infusions: int
    counter_resets: int
    clock_steps_back: int
    rate_missing: int
    longest_gap_s: float


@dataclass
class _Tally:
    """One infusion (one ``infusion_id``) as seen by the tracker."""

    infusion_id: int
    integrated_ml: float = 0.0
    first_counter_ml: float | None = None
    last_counter_ml: float | None = None
    counter_increase_ml: float = 0.0  # counter growth since its first reading, across resets
    integrated_at_first_ml: float = 0.0
    integrated_at_last_ml: float = 0.0

    @property
    def counter_total_ml(self) -> float | None:
        if self.first_counter_ml is None:
            return None
        return self.first_counter_ml + self.counter_increase_ml

    @property
    def delivered_ml(self) -> float:
        total = self.counter_total_ml
        if total is None:
            return self.integrated_ml
        return total + (self.integrated_ml - self.integrated_at_last_ml)

    @property
    def preobserved_ml(self) -> float:
        """Counter volume already infused before the tracker was watching."""
        if self.first_counter_ml is None:
            return 0.0
        return max(0.0, self.first_counter_ml - self.integrated_at_first_ml)


def _usable(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


class DeliveredDoseTracker:
    """Delivered dose of one pump channel from its ``PumpState`` telemetry (DESIGN §2).

    Two independent figures, compared:

    1. rate × time: between consecutive states, the earlier state's rate is taken as
       running over the interval when that state is RUNNING or BOLUS (``DELIVERING_STATES``);
       pauses and stops add nothing even when a pump keeps reporting its programmed rate.
    2. the pump's own volume counter (``volume_infused_ml``). A new ``infusion_id`` starts
       a new tally (the counter resets); a counter that falls within one infusion is taken
       as a reset too (counted in ``counter_resets``), never as negative volume.

    mg = mL × concentration. The concentration is the confirmed programme's when given,
    else the pump's; when both are known and differ by more than 0.5 % the report says
    so (``concentration_mismatch``). Missing, negative or non-finite fields, and states
    flagged ``Quality.INVALID``, count as not reported. A host clock step back is
    counted and its interval skipped.
    """

    def __init__(
        self,
        *,
        concentration_mg_ml: float | None = None,
        weight_kg: float | None = None,
        tolerance: DiscrepancyTolerance | None = None,
    ) -> None:
        for name, v in (("concentration", concentration_mg_ml), ("weight", weight_kg)):
            if v is not None and not _positive(v):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        self.concentration_mg_ml = concentration_mg_ml
        self.weight_kg = weight_kg
        self.tolerance = tolerance or DiscrepancyTolerance()
        self._tallies: list[_Tally] = []
        self._prev: PumpState | None = None
        self._prev_counter: float | None = None
        self._pump_concentration: float | None = None
        self._counter_resets = 0
        self._clock_back = 0
        self._rate_missing = 0
        self._longest_gap_s = 0.0
        self._last: DeliveredDose | None = None

    @classmethod
    def for_programme(
        cls, confirmed: ConfirmedProgramme, tolerance: DiscrepancyTolerance | None = None
    ) -> DeliveredDoseTracker:
        """A tracker using the confirmed concentration and weight."""
        calc = confirmed.calculation
        return cls(concentration_mg_ml=calc.concentration_mg_ml, weight_kg=calc.weight_kg,
                   tolerance=tolerance)

    @property
    def last(self) -> DeliveredDose | None:
        """The report of the most recent update."""
        return self._last

    def update(self, state: PumpState) -> DeliveredDose:
        """Take one telemetry snapshot (in time order) and report the totals."""
        invalid = bool(state.quality & Quality.INVALID)
        counter = None if invalid else _usable(state.volume_infused_ml)
        conc = None if invalid else _usable(state.concentration_mg_ml)
        if conc is not None and conc > 0:
            self._pump_concentration = conc
        prev = self._prev
        interval_ml: float | None = None
        interval_start: int | None = None

        if prev is None:
            self._tallies.append(_Tally(state.infusion_id))
        else:
            tally = self._tallies[-1]
            dt_us = state.t_us - prev.t_us
            if dt_us < 0:
                self._clock_back += 1
            else:
                self._longest_gap_s = max(self._longest_gap_s, dt_us / 1e6)
                step_ml = 0.0
                if prev.state in DELIVERING_STATES and not (prev.quality & Quality.INVALID):
                    rate = _usable(prev.rate_ml_h)
                    if rate is None:
                        self._rate_missing += 1
                    else:
                        step_ml = rate * dt_us / 3.6e9
                tally.integrated_ml += step_ml
                interval_start = prev.t_us
                same = state.infusion_id == prev.infusion_id
                if (same and counter is not None and self._prev_counter is not None
                        and counter >= self._prev_counter):
                    interval_ml = counter - self._prev_counter
                else:
                    interval_ml = step_ml
            if state.infusion_id != prev.infusion_id:
                self._tallies.append(_Tally(state.infusion_id))

        tally = self._tallies[-1]
        if counter is not None:
            if tally.first_counter_ml is None:
                tally.first_counter_ml = counter
                tally.integrated_at_first_ml = tally.integrated_ml
            else:
                last = tally.last_counter_ml
                assert last is not None
                if counter >= last:
                    tally.counter_increase_ml += counter - last
                else:
                    self._counter_resets += 1
                    tally.counter_increase_ml += counter
            tally.last_counter_ml = counter
            tally.integrated_at_last_ml = tally.integrated_ml
        self._prev = state
        self._prev_counter = counter
        self._last = self._report(state, interval_start, interval_ml)
        return self._last

    def _report(self, state: PumpState, interval_start: int | None,
                interval_ml: float | None) -> DeliveredDose:
        tallies = self._tallies
        delivered = sum(t.delivered_ml for t in tallies)
        integrated = sum(t.integrated_ml for t in tallies)
        with_counter = [t for t in tallies if t.first_counter_ml is not None]
        counter_ml = sum(t.counter_total_ml or 0.0 for t in with_counter) if with_counter else None
        if not with_counter:
            basis = "rate x time"
        elif len(with_counter) == len(tallies) and all(
                t.integrated_ml == t.integrated_at_last_ml for t in tallies):
            basis = "pump counter"
        else:
            basis = "pump counter + rate x time"
        discrepancy_ml: float | None = None
        tol: float | None = None
        discrepancy = False
        if with_counter:
            seen_counter = sum(t.counter_increase_ml for t in with_counter)
            seen_integrated = sum(t.integrated_at_last_ml - t.integrated_at_first_ml
                                  for t in with_counter)
            discrepancy_ml = seen_integrated - seen_counter
            tol = self.tolerance.limit_ml(seen_counter)
            discrepancy = abs(discrepancy_ml) > tol
        conc, source = self.concentration_mg_ml, "programme"
        if conc is None:
            conc, source = self._pump_concentration, "pump"
        mismatch = (self.concentration_mg_ml is not None and self._pump_concentration is not None
                    and not math.isclose(self.concentration_mg_ml, self._pump_concentration,
                                         rel_tol=0.005))
        mg = delivered * conc if conc is not None else None
        return DeliveredDose(
            t_us=state.t_us,
            infusion_id=state.infusion_id,
            running=state.state in DELIVERING_STATES,
            delivered_ml=delivered,
            integrated_ml=integrated,
            counter_ml=counter_ml,
            preobserved_ml=sum(t.preobserved_ml for t in tallies),
            basis=basis,
            concentration_mg_ml=conc,
            concentration_source=source if conc is not None else None,
            concentration_mismatch=mismatch,
            delivered_mg=mg,
            delivered_mg_per_kg=mg / self.weight_kg if mg is not None and self.weight_kg else None,
            discrepancy=discrepancy,
            discrepancy_ml=discrepancy_ml,
            tolerance_ml=tol,
            interval_start_us=interval_start,
            interval_ml=interval_ml,
            interval_mg=(interval_ml * conc if interval_ml is not None and conc is not None
                         else None),
            infusions=len(tallies),
            counter_resets=self._counter_resets,
            clock_steps_back=self._clock_back,
            rate_missing=self._rate_missing,
            longest_gap_s=self._longest_gap_s,
        )
