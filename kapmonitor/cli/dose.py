"""``kapmonitor dose``: the dose calculator on the command line (DESIGN §5).

Pump rate, volume, total mg, concentration and dose rate by clinical.md §1.3, checked
against the bounds of clinical.md §1.4, then the predicted plasma curve of clinical.md
§2 labelled a model estimate. A calculator: warnings are printed and the exit status is
still 0; a refusal exits 2 with its one-line reason and prints no numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from .common import CliError, finite_float

if TYPE_CHECKING:
    from kapmonitor.dosing import DoseCalculation, DoseCheck
    from kapmonitor.pk import PKModel

NAME = "dose"
_MODEL_CHOICES = {"domino": "domino", "clements": "clements250"}
CURVE_STEP_MIN = 5.0
CURVE_END_MIN = 120.0
PEAK_GRID_MIN = 0.1


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        NAME,
        parents=[common],
        help="dose calculator: pump rate, volume, predicted plasma curve",
        description="Compute pump rate (mL/h), volume, total mg, concentration and dose rate "
        "for a weight-based ketamine infusion, and the predicted plasma concentration (a "
        "model estimate). Computes and displays only: a clinician confirms. Bounds: "
        "clinical.md §1.4 (resources/dosing_bounds.toml).",
    )
    p.add_argument("--weight", type=finite_float, required=True, metavar="KG",
                   help="patient weight in kg (the dosing weight; see --weight-basis)")
    p.add_argument("--weight-basis", choices=["actual", "ideal", "adjusted"], default="actual",
                   help="which weight --weight is (recorded; default: actual)")
    p.add_argument("--mg-per-kg", type=finite_float, required=True, metavar="D",
                   help="dose in mg/kg, e.g. 0.5")
    p.add_argument("--minutes", type=finite_float, required=True, metavar="M",
                   help="infusion duration in minutes, e.g. 40")
    prep = p.add_mutually_exclusive_group(required=True)
    prep.add_argument("--concentration", type=finite_float, metavar="MG_PER_ML",
                      help="fixed concentration in mg/mL (the volume is computed)")
    prep.add_argument("--bag-ml", type=finite_float, metavar="ML",
                      help="fixed bag volume in mL the dose is diluted into (the "
                      "concentration is computed)")
    p.add_argument("--model", choices=sorted(_MODEL_CHOICES), default="domino",
                   help="PK model of the plasma estimate (default: domino)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--confirm", action="store_true",
                   help="acknowledge the warnings shown (the programme is reported as "
                   "confirmed; the weight on the command line counts as its second entry)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kapmonitor import dosing, pk

    programme = dosing.DoseProgramme(
        weight_kg=args.weight,
        weight_basis=args.weight_basis,
        dose_mg_per_kg=args.mg_per_kg,
        duration_min=args.minutes,
        concentration_mg_ml=args.concentration,
        bag_ml=args.bag_ml,
    )
    check = dosing.check_programme(programme)
    if not check.ok or check.calculation is None:
        raise CliError(check.reason())
    calc = check.calculation
    confirmed = False
    if args.confirm:
        check.confirm(acknowledged=check.warnings, weight_reentered_kg=args.weight)
        confirmed = True
    model = pk.get_model(_MODEL_CHOICES[args.model])
    curve = _curve(model, calc)
    if args.json:
        print(json.dumps(_as_json(check, calc, curve, confirmed), indent=2, ensure_ascii=False))
    else:
        print(_as_text(check, calc, curve, confirmed))
    return 0


def _curve(model: PKModel, calc: DoseCalculation) -> dict[str, Any]:
    """Values every 5 min to 120 min (or to 60 min after a longer infusion ends), and the
    peak over a 0.1 min grid that includes the end of the infusion (clinical.md §2.3: for
    a zero-order infusion the peak is at its end)."""
    import numpy as np

    from kapmonitor import pk

    end = max(CURVE_END_MIN, math.ceil((calc.duration_min + 60.0) / CURVE_STEP_MIN)
              * CURVE_STEP_MIN)
    times = np.arange(0.0, end + CURVE_STEP_MIN / 2, CURVE_STEP_MIN)
    grid = np.union1d(np.round(np.arange(0.0, end + PEAK_GRID_MIN / 2, PEAK_GRID_MIN), 6),
                      [calc.duration_min])
    schedule = calc.schedule()
    shown = pk.predict_curve(model, calc.weight_kg, schedule, times)
    dense = pk.predict_curve(model, calc.weight_kg, schedule, grid)
    peak_t, peak = dense.peak()
    return {
        "label": pk.MODEL_ESTIMATE_LABEL,
        "model": model.key,
        "model_name": model.name,
        "comparison_only": model.comparison_only,
        "weight_kg": calc.weight_kg,
        "peak_ng_ml": round(peak, 1),
        "peak_t_min": round(peak_t, 1),
        "curve": [{"t_min": float(t), "cp_ng_ml": round(float(c), 1)}
                  for t, c in zip(shown.times_min, shown.cp_ng_ml, strict=True)],
    }


def _f(x: float, nd: int) -> str:
    """Fixed decimals without trailing zeros: 52.5, 78.75, 150, 0.35."""
    s = f"{x:.{nd}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def _as_json(check: DoseCheck, calc: DoseCalculation, curve: dict[str, Any],
             confirmed: bool) -> dict[str, Any]:
    return {
        "note": "computes and displays only; a clinician confirms",
        "programme": check.programme.as_dict(),
        "calculation": calc.as_dict(),
        "warnings": [w.as_dict() for w in check.warnings],
        "confirmed": confirmed,
        "needs_confirmation": bool(check.warnings) and not confirmed,
        "bounds_source": check.bounds_source,
        "plasma_estimate": curve,
    }


def _as_text(check: DoseCheck, calc: DoseCalculation, curve: dict[str, Any],
             confirmed: bool) -> str:
    p = check.programme
    prep = (f"fixed concentration {_f(calc.concentration_mg_ml, 3)} mg/mL"
            if p.bag_ml is None else f"{_f(calc.dose_mg, 2)} mg in a {_f(p.bag_ml, 1)} mL bag")
    lines = [
        "KAP Monitor dose calculator: computes and displays only; a clinician confirms.",
        f"Programme      {_f(calc.dose_mg_per_kg, 3)} mg/kg over {_f(calc.duration_min, 1)} "
        f"min, IV, weight {_f(calc.weight_kg, 1)} kg ({p.weight_basis})",
        f"Preparation    {prep}",
        f"Pump rate      {_f(calc.rate_ml_h, 2)} mL/h",
        f"Total volume   {_f(calc.volume_ml, 2)} mL",
        f"Total dose     {_f(calc.dose_mg, 2)} mg",
        f"Concentration  {_f(calc.concentration_mg_ml, 3)} mg/mL",
        f"Dose rate      {_f(calc.dose_rate_mg_kg_h, 3)} mg/kg/h "
        f"({_f(calc.dose_rate_mg_h, 2)} mg/h)",
        "",
        f"Predicted plasma concentration ({curve['model_name']}, "
        f"{_f(curve['weight_kg'], 1)} kg)",
        f"MODEL ESTIMATE: {curve['label']}",
        f"Peak           {curve['peak_ng_ml']:.1f} ng/mL at {_f(curve['peak_t_min'], 1)} min",
        "  t (min)  Cp (ng/mL)",
    ]
    lines += [f"  {_f(row['t_min'], 1):>7}  {row['cp_ng_ml']:>10.1f}" for row in curve["curve"]]
    if check.warnings:
        lines.append("")
        lines += [f"WARNING: {w.message}" for w in check.warnings]
        if confirmed:
            lines.append(f"Confirmed: {len(check.warnings)} warning(s) acknowledged.")
        else:
            lines.append(f"NOT CONFIRMED: {len(check.warnings)} warning(s) need confirmation "
                         "(--confirm acknowledges them).")
    elif confirmed:
        lines += ["", "Confirmed: no warnings."]
    return "\n".join(lines)
