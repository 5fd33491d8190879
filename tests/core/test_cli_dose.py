"""``kapmonitor dose`` (DESIGN §5): numbers of clinical.md §1.3, bounds of §1.4, curve of §2.4."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kapmonitor.cli import main
from kapmonitor.pk import MODEL_ESTIMATE_LABEL

STANDARD = ["dose", "--weight", "70", "--mg-per-kg", "0.5", "--minutes", "40"]


def run(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main([*STANDARD, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def curve_rows(out: str) -> dict[float, float]:
    rows: dict[float, float] = {}
    in_table = False
    for line in out.splitlines():
        if line.strip().startswith("t (min)"):
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) != 2:
                break
            rows[float(parts[0])] = float(parts[1])
    return rows


def test_text_output_fixed_concentration(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--concentration", "1")
    assert code == 0 and err == ""
    assert "Pump rate      52.5 mL/h" in out
    assert "Total volume   35 mL" in out
    assert "Total dose     35 mg" in out
    assert "Concentration  1 mg/mL" in out
    assert "Dose rate      0.75 mg/kg/h (52.5 mg/h)" in out
    assert "MODEL ESTIMATE" in out and MODEL_ESTIMATE_LABEL in out
    assert "Peak           240.3 ng/mL at 40 min" in out
    rows = curve_rows(out)
    assert list(rows) == [float(t) for t in range(0, 121, 5)]
    assert rows[5] == 155.3 and rows[40] == 240.3 and rows[45] == 91.4 and rows[120] == 35.8
    assert "WARNING" not in out


def test_text_output_fixed_bag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--bag-ml", "100")
    assert code == 0
    assert "35 mg in a 100 mL bag" in out
    assert "Pump rate      150 mL/h" in out
    assert "Total volume   100 mL" in out
    assert "Concentration  0.35 mg/mL" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--concentration", "1", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["calculation"]["rate_ml_h"] == 52.5
    assert data["calculation"]["volume_ml"] == 35.0
    assert data["calculation"]["dose_mg"] == 35.0
    assert data["calculation"]["concentration_mg_ml"] == 1.0
    assert data["calculation"]["dose_rate_mg_kg_h"] == 0.75
    assert data["programme"]["weight_basis"] == "actual"
    assert data["warnings"] == [] and data["needs_confirmation"] is False
    pe = data["plasma_estimate"]
    assert pe["label"] == MODEL_ESTIMATE_LABEL and pe["model"] == "domino"
    assert (pe["peak_ng_ml"], pe["peak_t_min"]) == (240.3, 40.0)
    assert [r["t_min"] for r in pe["curve"]] == [float(t) for t in range(0, 121, 5)]
    assert pe["curve"][8] == {"t_min": 40.0, "cp_ng_ml": 240.3}


def test_clements_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--concentration", "1", "--json", "--model", "clements")
    assert code == 0
    pe = json.loads(out)["plasma_estimate"]
    assert pe["model"] == "clements250"
    assert pe["peak_ng_ml"] == pytest.approx(177.3, rel=0.02) and pe["peak_t_min"] == 40.0


def test_warnings_exit_zero_and_confirm(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dose", "--weight", "70", "--mg-per-kg", "1.2", "--minutes", "40",
            "--concentration", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "WARNING: dose 1.2 mg/kg is above the usual range 0.1 to 1 mg/kg" in out
    assert "WARNING: total dose 84 mg is above 1 mg/kg × 70 kg = 70 mg" in out
    assert "NOT CONFIRMED: 2 warning(s) need confirmation" in out
    assert "Pump rate      126 mL/h" in out  # a calculator: the numbers are still shown
    assert main([*argv, "--confirm"]) == 0
    assert "Confirmed: 2 warning(s) acknowledged." in capsys.readouterr().out
    assert main([*argv, "--confirm", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["confirmed"] is True and data["needs_confirmation"] is False
    assert {w["code"] for w in data["warnings"]} == {"dose_mg_per_kg.soft_max",
                                                     "total_dose_mg.per_kg"}


@pytest.mark.parametrize(("args", "reason"), [
    (["--weight", "900", "--concentration", "1"],
     "weight 900 kg is above the hard maximum 250 kg (adult bounds, clinical.md §1.4)"),
    (["--weight", "0", "--concentration", "1"], "weight 0 kg is below the hard minimum 30 kg"),
    (["--weight", "-5", "--concentration", "1"], "weight -5 kg is below the hard minimum"),
    (["--weight", "70", "--concentration", "50"], "undiluted vial strength"),
    (["--weight", "70", "--concentration", "100"], "undiluted vial strength"),
    (["--weight", "140", "--mg-per-kg", "1.2", "--concentration", "1"],
     "total dose 168 mg is above the hard maximum 150 mg"),
])
def test_refusals_exit_two_with_one_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                         reason: str) -> None:
    argv = ["dose", "--mg-per-kg", "0.5", "--minutes", "40", *args]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kapmonitor: error: ")
    assert reason in err


@pytest.mark.parametrize(("extra", "reason"), [
    (["--concentration", "1", "--bag-ml", "100"], "not allowed with argument"),
    ([], "one of the arguments --concentration --bag-ml is required"),
    (["--concentration", "1", "--model", "hijazi"], "invalid choice: 'hijazi'"),
    (["--concentration", "one"], "argument --concentration: 'one' is not a number"),
    (["--concentration", "nan"], "argument --concentration: 'nan' is not a finite number"),
    (["--concentration", "1", "--weight", "inf"], "'inf' is not a finite number"),
])
def test_argument_errors(capsys: pytest.CaptureFixture[str], extra: list[str],
                         reason: str) -> None:
    """argparse's refusals are one line too (no usage block), exit 2, no SystemExit."""
    assert main([*STANDARD, *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("kapmonitor dose: error: ") and reason in err


def test_long_infusion_extends_the_curve(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dose", "--weight", "70", "--mg-per-kg", "0.5", "--minutes", "180",
            "--concentration", "1", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    pe = data["plasma_estimate"]
    assert pe["curve"][-1]["t_min"] == 240.0 and pe["peak_t_min"] == 180.0
    assert {w["code"] for w in data["warnings"]} == {"duration_min.soft_max"}


def test_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kapmonitor", *STANDARD, "--concentration", "1", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["calculation"]["rate_ml_h"] == 52.5
    bad = subprocess.run(
        [sys.executable, "-m", "kapmonitor", "dose", "--weight", "900", "--mg-per-kg", "0.5",
         "--minutes", "40", "--concentration", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == ("kapmonitor: error: weight 900 kg is above the hard maximum "
                                  "250 kg (adult bounds, clinical.md §1.4)")
