"""PK models and exact stepping against the numbers of clinical.md §2.1, §2.3 and §2.4."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapmonitor import pk
from kapmonitor.pk import (
    CLEMENTS250,
    DOMINO,
    HIJAZI,
    MODEL_ESTIMATE_LABEL,
    Bolus,
    Infusion,
    PKModel,
    PlasmaEstimator,
    expm,
    expm_eigen,
    predict_curve,
)

US_PER_MIN = 60_000_000

# clinical.md §2.4: 70 kg, 0.5 mg/kg (35 mg) over 40 min.
TABLE_T = [5, 10, 20, 30, 40, 45, 50, 60, 80, 120, 180, 240]
DOMINO_ROW = [155.3, 181.8, 209.6, 226.5, 240.3, 91.4, 71.1, 55.1, 45.8, 35.8, 24.9, 17.3]
CLEMENTS_ROW = [33.2, 62.0, 109.5, 146.9, 177.3, 157.4, 140.8, 115.4, 84.7, 58.8, 43.8, 34.6]
HIJAZI_ROW = [52.2, 94.5, 156.7, 197.9, 225.3, 183.3, 149.3, 99.6, 46.0, 13.1, 5.8, 4.6]

STANDARD = (Infusion(0.0, 40.0, 35.0),)


def test_domino_row_of_table_2_4_within_half_ng_ml() -> None:
    curve = predict_curve(DOMINO, 70.0, STANDARD, TABLE_T)
    np.testing.assert_allclose(curve.cp_ng_ml, DOMINO_ROW, atol=0.5, rtol=0)
    # Closer still: the table is the same exact method rounded to 0.1 (clinical.md §2.5).
    np.testing.assert_allclose(curve.cp_ng_ml, DOMINO_ROW, atol=0.06, rtol=0)


def test_clements250_row_within_two_percent() -> None:
    curve = predict_curve(CLEMENTS250, 70.0, STANDARD, TABLE_T)
    np.testing.assert_allclose(curve.cp_ng_ml, CLEMENTS_ROW, rtol=0.02, atol=0)


def test_hijazi_row_within_two_percent() -> None:
    curve = predict_curve(HIJAZI, 70.0, STANDARD, TABLE_T)
    np.testing.assert_allclose(curve.cp_ng_ml, HIJAZI_ROW, rtol=0.02, atol=0)


def test_weight_independence_70_and_100_kg_at_40_min() -> None:
    """clinical.md §2.1: mg/kg dosing gives the same Cp, 240.3 ng/mL at 40 min."""
    c70 = predict_curve(DOMINO, 70.0, [Infusion(0, 40, 0.5 * 70)], [40]).cp_ng_ml[0]
    c100 = predict_curve(DOMINO, 100.0, [Infusion(0, 40, 0.5 * 100)], [40]).cp_ng_ml[0]
    assert c70 == pytest.approx(240.3, abs=0.05)
    assert c100 == pytest.approx(c70, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(weight=st.floats(30, 250), t=st.floats(0.5, 300))
def test_weight_independence_any_weight_and_time(weight: float, t: float) -> None:
    ref = predict_curve(DOMINO, 70.0, [Infusion(0, 40, 35.0)], [t]).cp_ng_ml[0]
    got = predict_curve(DOMINO, weight, [Infusion(0, 40, 0.5 * weight)], [t]).cp_ng_ml[0]
    assert got == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("model", [DOMINO, CLEMENTS250, HIJAZI], ids=lambda m: m.key)
def test_peak_at_end_of_infusion(model: PKModel) -> None:
    """clinical.md §2.3: for a zero-order infusion the peak is at its end."""
    grid = np.round(np.arange(0, 120.0001, 0.1), 6)
    t_peak, _ = predict_curve(model, 70.0, STANDARD, grid).peak()
    assert t_peak == pytest.approx(40.0)


@settings(max_examples=25, deadline=None)
@given(duration=st.integers(10, 240), mg=st.floats(1, 150))
def test_peak_at_end_for_any_duration(duration: int, mg: float) -> None:
    grid = np.arange(0, duration + 30.5, 0.5)
    t_peak, _ = predict_curve(DOMINO, 70.0, [Infusion(0, duration, mg)], grid).peak()
    assert t_peak == pytest.approx(duration)


def test_one_mg_per_kg_doubles_the_peak() -> None:
    """clinical.md §2.4: 1.0 mg/kg over 40 min peaks at 480.7 ng/mL (linear)."""
    c = predict_curve(DOMINO, 70.0, [Infusion(0, 40, 70.0)], [40]).cp_ng_ml[0]
    assert c == pytest.approx(480.7, abs=0.1)


def test_domino_derived_values_at_70_kg() -> None:
    """clinical.md §2.1 (a), derived for 70 kg by the conversions of §2.2."""
    d = DOMINO.derived(70.0)
    assert d.v1_l == pytest.approx(4.41, abs=0.005)
    assert d.v2_l == pytest.approx(10.57, abs=0.005)
    assert d.v3_l == pytest.approx(178.2, abs=0.05)
    assert d.vss_l == pytest.approx(193.2, abs=0.05)
    assert d.vss_l_per_kg == pytest.approx(2.76, abs=0.005)
    assert d.cl_l_min == pytest.approx(1.932, abs=0.0005)
    assert d.cl_ml_kg_min == pytest.approx(27.6, abs=0.05)
    assert d.q2_l_min == pytest.approx(2.611, abs=0.0005)
    assert d.q3_l_min == pytest.approx(2.602, abs=0.0005)
    np.testing.assert_allclose(d.hybrid_rate_constants_per_min, [1.724, 0.1515, 0.00605],
                               rtol=1e-3)
    np.testing.assert_allclose(d.half_lives_min, [0.40, 4.6, 114.6], atol=0.05)


def test_clements_derived_values_at_70_kg() -> None:
    """clinical.md §2.1 (b)."""
    d = CLEMENTS250.derived(70.0)
    assert d.v1_l == pytest.approx(122.7, abs=0.05)
    assert d.v2_l == pytest.approx(166.5, abs=0.05)
    assert d.v3_l is None
    assert d.q3_l_min is None
    assert d.cl_l_min == pytest.approx(1.337, abs=0.0005)
    assert d.cl_ml_kg_min == pytest.approx(19.1, abs=0.05)
    assert d.vss_l_per_kg == pytest.approx(4.13, abs=0.005)
    np.testing.assert_allclose(d.half_lives_min, [17.6, 182.9], atol=0.05)


def test_hijazi_cross_check_against_abstract() -> None:
    """clinical.md §2.1 (c): CL 36.0 mL/min/kg, terminal t½ 296.7 min, CL/λz 15.4 L/kg."""
    d = HIJAZI.derived(70.0)
    assert d.cl_ml_kg_min == pytest.approx(36.0, abs=0.05)
    assert d.half_lives_min[-1] == pytest.approx(296.7, abs=0.05)
    lam_z = d.hybrid_rate_constants_per_min[-1]
    assert d.cl_l_min / lam_z / 70.0 == pytest.approx(15.4, abs=0.05)
    assert HIJAZI.comparison_only and not DOMINO.comparison_only


@pytest.mark.parametrize("model", [DOMINO, CLEMENTS250, HIJAZI], ids=lambda m: m.key)
def test_micro_constants_round_trip(model: PKModel) -> None:
    d = model.derived(70.0)
    k = pk.micro_constants(d.v1_l, d.cl_l_min, d.v2_l, d.q2_l_min, d.v3_l, d.q3_l_min)
    for name in ("k10", "k12", "k21", "k13", "k31"):
        assert k[name] == pytest.approx(getattr(model, name), rel=1e-12, abs=1e-15)


def test_micro_constants_from_litres_per_hour() -> None:
    """clinical.md §2.2: L/h divided by 60 first (Herd 2007 at 70 kg, §2.1 (d))."""
    k = pk.micro_constants(38.7, 90 / 60, 102.0, 215 / 60)
    assert k["k10"] == pytest.approx(1.5 / 38.7)
    assert k["k21"] == pytest.approx(215 / 60 / 102.0)
    with pytest.raises(ValueError, match="both"):
        pk.micro_constants(38.7, 1.5, v2_l=102.0)


def test_steady_state_is_rate_over_clearance() -> None:
    """Independent of the table: a long infusion reaches Cp = R / CL."""
    rate = 0.5  # mg/min
    d = DOMINO.derived(70.0)
    c = predict_curve(DOMINO, 70.0, [Infusion(0, 20000, rate * 20000)], [19000]).cp_ng_ml[0]
    assert c == pytest.approx(rate / d.cl_l_min * 1000, rel=1e-9)


def test_exact_step_agrees_with_fine_euler() -> None:
    """clinical.md §2.2: Euler at small steps converges to the exact solution."""
    a = DOMINO.rate_matrix()
    v1 = DOMINO.v1_l(70.0)
    x = np.zeros(3)
    dt = 0.002
    rate = 35.0 / 40.0
    b = np.array([rate, 0.0, 0.0])
    for _ in range(round(40 / dt)):
        x = x + dt * (a @ x + b)
    euler = x[0] / v1 * 1000
    exact = predict_curve(DOMINO, 70.0, STANDARD, [40]).cp_ng_ml[0]
    assert euler == pytest.approx(exact, rel=2e-3)
    assert euler != pytest.approx(exact, rel=1e-9)  # it really is a different method


# --------------------------------------------------------------------------- expm


def _augmented(model: PKModel, dt: float) -> np.ndarray:
    a = model.rate_matrix()
    n = a.shape[0]
    m = np.zeros((n + 1, n + 1))
    m[:n, :n] = a * dt
    m[0, n] = dt
    return m


@pytest.mark.parametrize("model", [DOMINO, CLEMENTS250, HIJAZI], ids=lambda m: m.key)
@pytest.mark.parametrize("dt", [0.01, 1.0, 40.0, 500.0])
def test_pade_expm_matches_eigen_method(model: PKModel, dt: float) -> None:
    a = model.rate_matrix() * dt
    np.testing.assert_allclose(expm(a), expm_eigen(a), rtol=1e-10, atol=1e-13)
    m = _augmented(model, dt)  # zero eigenvalue from the input state
    np.testing.assert_allclose(expm(m), expm_eigen(m), rtol=1e-10, atol=1e-12)


def test_expm_known_values() -> None:
    np.testing.assert_array_equal(expm(np.zeros((3, 3))), np.eye(3))
    d = np.diag([-50.0, -0.01, 3.0])  # large norm: needs scaling and squaring
    np.testing.assert_allclose(expm(d), np.diag(np.exp([-50.0, -0.01, 3.0])), rtol=1e-12)
    theta = 2.0  # complex eigenvalues: a rotation, beyond the eigen method's reach
    r = expm(np.array([[0.0, -theta], [theta, 0.0]]))
    np.testing.assert_allclose(r, [[math.cos(theta), -math.sin(theta)],
                                   [math.sin(theta), math.cos(theta)]], atol=1e-13)
    with pytest.raises(ValueError, match="real"):
        expm_eigen(np.array([[0.0, -theta], [theta, 0.0]]))
    nil = np.array([[0.0, 1.0], [0.0, 0.0]])  # not diagonalisable: e^N = I + N
    np.testing.assert_allclose(expm(nil), [[1.0, 1.0], [0.0, 1.0]], atol=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=9, max_size=9))
def test_expm_inverse_property(entries: list[float]) -> None:
    a = np.array(entries).reshape(3, 3)
    np.testing.assert_allclose(expm(a) @ expm(-a), np.eye(3), atol=1e-9)


def test_propagator_methods_agree() -> None:
    a, b = pk._system(DOMINO, 70.0, 0.652)
    eig = pk._Propagator(a, b, method="eigen")
    pade = pk._Propagator(a, b, method="pade")
    assert eig.method == "eigen" and pade.method == "pade"
    x = np.array([3.0, 1.0, 5.0, 0.2])
    for dt, r in ((0.01, 0.0), (1 / 60, 0.875), (40.0, 0.875), (300.0, 0.0)):
        np.testing.assert_allclose(eig.step(x, dt, r), pade.step(x, dt, r), rtol=1e-10,
                                   atol=1e-12)


def test_propagator_falls_back_when_eigenvalues_coincide() -> None:
    lam = DOMINO.hybrid_rate_constants()[1]
    a, b = pk._system(DOMINO, 70.0, lam)  # ke0 equal to a hybrid constant
    auto = pk._Propagator(a, b)
    assert auto.method == "pade"
    with pytest.raises(ValueError, match="Padé"):
        pk._Propagator(a, b, method="eigen")
    est = PlasmaEstimator(DOMINO, 70.0, start_us=0, effect_site=True, ke0=lam)
    est.advance(40 * US_PER_MIN, 35.0)
    assert est.estimate().cp_ng_ml == pytest.approx(240.33, abs=0.01)


# --------------------------------------------------------------------------- live estimator


def test_estimator_fed_each_second_reproduces_domino_row() -> None:
    est = PlasmaEstimator(DOMINO, 70.0, start_us=1_000)
    for s in range(1, 2401):
        est.advance(1_000 + s * 1_000_000, 35.0 / 2400)
    assert est.total_mg == pytest.approx(35.0)
    for t, expected in zip(TABLE_T, DOMINO_ROW, strict=True):
        e = est.estimate(1_000 + t * US_PER_MIN)
        assert e.cp_ng_ml == pytest.approx(expected, abs=0.5)
        assert e.projected == (t > 40)
        assert e.label == MODEL_ESTIMATE_LABEL


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 2399), max_size=40, unique=True))
def test_estimator_exact_for_any_partition_of_the_infusion(cuts: list[int]) -> None:
    """Exact stepping: how telemetry splits a constant infusion does not change Cp."""
    est = PlasmaEstimator(DOMINO, 70.0, start_us=0)
    prev = 0
    for s in [*sorted(cuts), 2400]:
        est.advance(s * 1_000_000, 35.0 * (s - prev) / 2400)
        prev = s
    assert est.estimate().cp_ng_ml == pytest.approx(240.3308, abs=1e-3)


def test_estimator_pause_and_rate_change_match_predicted_schedule() -> None:
    est = PlasmaEstimator(CLEMENTS250, 80.0, start_us=0)
    est.advance(10 * US_PER_MIN, 10.0)  # 1 mg/min
    est.advance(15 * US_PER_MIN, 0.0)  # paused
    est.advance(35 * US_PER_MIN, 10.0)  # 0.5 mg/min
    plan = [Infusion(0, 10, 10.0), Infusion(15, 20, 10.0)]
    times = [5, 10, 12, 15, 25, 35, 60]
    expected = predict_curve(CLEMENTS250, 80.0, plan, times).cp_ng_ml
    got = [est.estimate(t * US_PER_MIN).cp_ng_ml for t in times]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_estimator_bolus_matches_predicted_bolus() -> None:
    est = PlasmaEstimator(DOMINO, 70.0, start_us=0)
    est.advance(5 * US_PER_MIN, 0.0)
    at_bolus = est.bolus(10.0)
    expected = predict_curve(DOMINO, 70.0, [Bolus(5, 10.0)], [5, 6, 30]).cp_ng_ml
    assert at_bolus.cp_ng_ml == pytest.approx(expected[0])
    assert at_bolus.cp_ng_ml == pytest.approx(10.0 / 4.41 * 1000)
    assert est.estimate(5 * US_PER_MIN).cp_ng_ml == pytest.approx(expected[0])
    assert est.estimate(6 * US_PER_MIN).cp_ng_ml == pytest.approx(expected[1])
    # A zero-length interval with drug is a bolus too.
    est2 = PlasmaEstimator(DOMINO, 70.0, start_us=0)
    est2.advance(5 * US_PER_MIN, 0.0)
    est2.advance(5 * US_PER_MIN, 10.0)
    assert est2.estimate(30 * US_PER_MIN).cp_ng_ml == pytest.approx(expected[2])


def test_estimator_projection_with_assumed_rate() -> None:
    est = PlasmaEstimator(DOMINO, 70.0, start_us=0)
    est.advance(20 * US_PER_MIN, 17.5)
    proj = est.estimate(40 * US_PER_MIN, rate_mg_min=0.875)
    assert proj.projected and proj.assumed_rate_mg_min == 0.875
    assert proj.cp_ng_ml == pytest.approx(240.33, abs=0.01)
    assert est.t_us == 20 * US_PER_MIN  # a query changes nothing
    assert est.estimate(-5).cp_ng_ml == 0.0  # before the start: nothing given


def test_estimator_refuses_bad_input() -> None:
    est = PlasmaEstimator(DOMINO, 70.0, start_us=100)
    with pytest.raises(ValueError, match="backwards"):
        est.advance(50, 1.0)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="delivered mg"):
            est.advance(200, bad)
    with pytest.raises(ValueError, match="bolus"):
        est.bolus(-1.0)
    with pytest.raises(ValueError, match="weight"):
        PlasmaEstimator(DOMINO, 0.0, start_us=0)
    with pytest.raises(ValueError, match="weight"):
        PlasmaEstimator(DOMINO, math.nan, start_us=0)


def test_effect_site_is_experimental_and_lags_plasma() -> None:
    est = PlasmaEstimator(DOMINO, 70.0, start_us=0, effect_site=True)
    assert est.ke0 == pytest.approx(0.652)
    est.advance(40 * US_PER_MIN, 35.0)
    e = est.estimate(40 * US_PER_MIN)
    assert e.ce_ng_ml is not None and 0 < e.ce_ng_ml < e.cp_ng_ml
    assert e.effect_site_label == pk.EFFECT_SITE_LABEL
    assert "EXPERIMENTAL" in pk.EFFECT_SITE_LABEL
    later = est.estimate(45 * US_PER_MIN)
    assert later.ce_ng_ml is not None and later.ce_ng_ml > later.cp_ng_ml  # Ce lags Cp
    # Plasma is unchanged by adding an effect site.
    assert e.cp_ng_ml == pytest.approx(240.33, abs=0.01)
    # The other public ke0 (clinical.md §2.1 (a)) can be chosen.
    slow = PlasmaEstimator(DOMINO, 70.0, start_us=0, effect_site=True, ke0=0.238)
    slow.advance(40 * US_PER_MIN, 35.0)
    assert slow.estimate().ce_ng_ml < e.ce_ng_ml  # type: ignore[operator]
    # No effect site: no Ce, no experimental label.
    plain = PlasmaEstimator(DOMINO, 70.0, start_us=0).estimate()
    assert plain.ce_ng_ml is None and plain.effect_site_label is None


def test_effect_site_reaches_plasma_at_steady_state() -> None:
    curve = predict_curve(DOMINO, 70.0, [Infusion(0, 5000, 2500)], [4900], effect_site=True)
    assert curve.ce_ng_ml is not None
    assert curve.ce_ng_ml[0] == pytest.approx(curve.cp_ng_ml[0], rel=1e-6)
    assert curve.effect_site_label == pk.EFFECT_SITE_LABEL


def test_effect_site_options_are_strict() -> None:
    with pytest.raises(ValueError, match="no ke0"):
        PlasmaEstimator(HIJAZI, 70.0, start_us=0, effect_site=True)
    with pytest.raises(ValueError, match="effect_site"):
        PlasmaEstimator(DOMINO, 70.0, start_us=0, ke0=0.5)
    with pytest.raises(ValueError, match="ke0"):
        predict_curve(DOMINO, 70.0, STANDARD, [1], effect_site=True, ke0=-1.0)


# --------------------------------------------------------------------------- predict_curve


def test_predict_curve_is_linear_in_the_schedule() -> None:
    halves = [Infusion(0, 20, 17.5), Infusion(20, 20, 17.5)]
    overlap = [Infusion(0, 40, 17.5), Infusion(0, 40, 17.5)]
    times = [3, 20, 40, 90]
    ref = predict_curve(DOMINO, 70.0, STANDARD, times).cp_ng_ml
    np.testing.assert_allclose(predict_curve(DOMINO, 70.0, halves, times).cp_ng_ml, ref,
                               rtol=1e-12)
    np.testing.assert_allclose(predict_curve(DOMINO, 70.0, overlap, times).cp_ng_ml, ref,
                               rtol=1e-12)


def test_predict_curve_keeps_order_labels_and_read_only_arrays() -> None:
    times = np.array([60.0, 5.0, 40.0, 0.0])
    curve = predict_curve(DOMINO, 70.0, STANDARD, times)
    assert curve.cp_ng_ml[3] == 0.0
    assert curve.cp_ng_ml[2] == pytest.approx(240.33, abs=0.01)
    assert curve.cp_ng_ml[1] == pytest.approx(155.3, abs=0.05)
    assert list(curve.times_min) == [60.0, 5.0, 40.0, 0.0]
    assert curve.label == MODEL_ESTIMATE_LABEL and "estimate" in curve.label
    assert curve.model_key == "domino"
    assert times.flags.writeable  # the caller's array is not touched
    with pytest.raises(ValueError, match="read-only"):
        curve.cp_ng_ml[0] = 1.0


def test_predict_curve_refuses_bad_input() -> None:
    with pytest.raises(TypeError):
        predict_curve(DOMINO, 70.0, [(0, 40, 35)], [1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite"):
        predict_curve(DOMINO, 70.0, STANDARD, [math.nan])
    with pytest.raises(ValueError, match="weight"):
        predict_curve(DOMINO, -70.0, STANDARD, [1])
    with pytest.raises(ValueError, match="duration"):
        Infusion(0, 0, 35)
    with pytest.raises(ValueError, match="mg"):
        Infusion(0, 40, -1)
    with pytest.raises(ValueError, match="bolus"):
        Bolus(math.nan, 1)


def test_models_are_data_and_validated() -> None:
    assert pk.get_model("Clements") is CLEMENTS250
    assert pk.get_model("domino") is DOMINO is pk.DEFAULT_MODEL
    assert DOMINO.n_compartments == 3 and CLEMENTS250.n_compartments == 2
    with pytest.raises(ValueError, match="unknown PK model"):
        pk.get_model("propofol")
    with pytest.raises(ValueError, match="k31"):
        PKModel(key="x", name="x", v1_l_per_kg=1, k10=0.1, k12=0.1, k21=0.1, k31=-0.1)
    with pytest.raises(ValueError, match="both or neither"):
        PKModel(key="x", name="x", v1_l_per_kg=1, k10=0.1, k12=0.1, k21=0.0)
    with pytest.raises(ValueError, match="eliminated"):
        PKModel(key="x", name="x", v1_l_per_kg=1, k10=0.0, k12=0.1, k21=0.1)
