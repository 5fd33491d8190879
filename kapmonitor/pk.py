"""Estimated plasma ketamine concentration from linear mammillary PK models (clinical.md §2).

The app shows an *estimate* of the plasma concentration next to the pump panel. It is a
model output with roughly ±50 % uncertainty (clinical.md §2.4), never a measurement, so
every public result carries ``MODEL_ESTIMATE_LABEL`` and the UI shows it.

Models (clinical.md §2.1), parameters held as data in frozen ``PKModel`` instances:

- ``DOMINO``: 3-compartment, V1 = 0.063 L/kg, the default (three independent public
  implementations, weight-scaled).
- ``CLEMENTS250``: 2-compartment (Clements & Nimmo 1981 as parameterised in opentiva),
  selectable.
- ``HIJAZI``: 2-compartment, critically ill adults; offered for comparison only.

Because every volume scales with weight, a mg/kg dose gives a weight-independent curve
(clinical.md §2.1, last bullet); the tests check it.

Stepping is exact (clinical.md §2.2, §2.5): over an interval with a constant infusion rate
R (mg/min) into the central compartment, the amounts follow

    x(t + dt) = e^{A dt} x(t) + (∫₀^dt e^{A s} ds) b R

which is the matrix exponential of the augmented system [[A, b], [0, 0]]. The rate matrix
of a mammillary model is similar to a symmetric matrix, so its eigenvalues are real; for
these models they are distinct and negative, and the step is computed from one
eigendecomposition made when the estimator is built (a few small products per step, no
stiffness, no step-size error). A scaling-and-squaring Padé ``expm`` written here (numpy
only: scipy is not a dependency) is the fallback when the eigenvectors are ill-conditioned,
and the tests check the two against each other.

Units: time in minutes inside the models (rate constants are min⁻¹), amounts in mg,
volumes in L, so A1/V1 is mg/L = µg/mL; ×1000 gives ng/mL (clinical.md §2.1). The live
estimator takes host time in integer microseconds (the one clock of DESIGN §2).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CLEMENTS250",
    "DEFAULT_MODEL",
    "DOMINO",
    "EFFECT_SITE_LABEL",
    "HIJAZI",
    "MODELS",
    "MODEL_ESTIMATE_LABEL",
    "Bolus",
    "DerivedParameters",
    "Infusion",
    "PKModel",
    "PlasmaEstimate",
    "PlasmaEstimator",
    "PredictedCurve",
    "expm",
    "expm_eigen",
    "get_model",
    "micro_constants",
    "predict_curve",
]

#: Shown with every plasma figure (clinical.md §2.1 "Always label the output as an
#: estimate"; §2.4 "Treat the displayed number as an index with ±50% uncertainty").
MODEL_ESTIMATE_LABEL = "model estimate, not a measured level (uncertainty about ±50 %)"

#: Added when an effect-site concentration is shown: no ke0 has been validated for
#: dissociation (clinical.md §2.1 (a), UNSURE).
EFFECT_SITE_LABEL = "effect-site estimate: EXPERIMENTAL, ke0 not validated for dissociation"

_US_PER_MIN = 60_000_000


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class DerivedParameters:
    """Volumes, clearances and hybrid constants of a model at one weight
    (clinical.md §2.2 conversions). ``None`` where the model has no such compartment."""

    weight_kg: float
    v1_l: float
    v2_l: float | None
    v3_l: float | None
    vss_l: float
    cl_l_min: float
    q2_l_min: float | None
    q3_l_min: float | None
    hybrid_rate_constants_per_min: tuple[float, ...]  # positive, fastest first
    half_lives_min: tuple[float, ...]  # ln 2 / hybrid constant, shortest first

    @property
    def vss_l_per_kg(self) -> float:
        return self.vss_l / self.weight_kg

    @property
    def cl_ml_kg_min(self) -> float:
        return self.cl_l_min * 1000.0 / self.weight_kg


@dataclass(frozen=True, slots=True)
class PKModel:
    """A linear mammillary model with micro rate constants in min⁻¹ and V1 per kg
    (clinical.md §2.1). A 2-compartment model has ``k13 = k31 = 0``.

    The numbers are data, not code: a site that adopts another published set adds a
    ``PKModel``; nothing else changes.
    """

    key: str
    name: str
    v1_l_per_kg: float
    k10: float
    k12: float
    k21: float
    k13: float = 0.0
    k31: float = 0.0
    ke0: float | None = None
    ke0_source: str = ""
    comparison_only: bool = False
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("v1_l_per_kg", "k10", "k12", "k21", "k13", "k31"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.key}: {name} must be a finite number >= 0, got {value!r}")
        if self.v1_l_per_kg <= 0 or self.k10 <= 0:
            raise ValueError(f"{self.key}: V1 and k10 must be positive (drug must be eliminated)")
        for kin, kout, comp in ((self.k12, self.k21, 2), (self.k13, self.k31, 3)):
            if (kin > 0) != (kout > 0):
                raise ValueError(f"{self.key}: compartment {comp} needs both or neither of its "
                                 f"rate constants, got {kin} and {kout}")
        if self.k13 > 0 and self.k12 == 0:
            raise ValueError(f"{self.key}: use k12/k21 for a two-compartment model")
        if self.ke0 is not None and not (math.isfinite(self.ke0) and self.ke0 > 0):
            raise ValueError(f"{self.key}: ke0 must be positive, got {self.ke0!r}")

    @property
    def n_compartments(self) -> int:
        return 1 + (self.k12 > 0) + (self.k13 > 0)

    def v1_l(self, weight_kg: float) -> float:
        _check_weight(weight_kg)
        return self.v1_l_per_kg * weight_kg

    def rate_matrix(self) -> np.ndarray:
        """The n×n matrix A of dA/dt = A·x (amounts) from clinical.md §2.2, min⁻¹."""
        n = self.n_compartments
        a = np.zeros((n, n))
        a[0, 0] = -(self.k10 + self.k12 + self.k13)
        if n >= 2:
            a[0, 1], a[1, 0], a[1, 1] = self.k21, self.k12, -self.k21
        if n == 3:
            a[0, 2], a[2, 0], a[2, 2] = self.k31, self.k13, -self.k31
        return a

    def hybrid_rate_constants(self) -> tuple[float, ...]:
        """α, β, γ (min⁻¹): minus the eigenvalues of the rate matrix, fastest first."""
        lam = np.linalg.eigvals(self.rate_matrix())
        return tuple(sorted((-float(v.real) for v in lam), reverse=True))

    def derived(self, weight_kg: float) -> DerivedParameters:
        """Volumes and clearances at ``weight_kg`` by the conversions of clinical.md §2.2:
        V2 = V1·k12/k21, V3 = V1·k13/k31, CL = k10·V1, Q2 = k12·V1, Q3 = k13·V1."""
        v1 = self.v1_l(weight_kg)
        v2 = v1 * self.k12 / self.k21 if self.k12 > 0 else None
        v3 = v1 * self.k13 / self.k31 if self.k13 > 0 else None
        hybrid = self.hybrid_rate_constants()
        return DerivedParameters(
            weight_kg=float(weight_kg),
            v1_l=v1,
            v2_l=v2,
            v3_l=v3,
            vss_l=v1 + (v2 or 0.0) + (v3 or 0.0),
            cl_l_min=self.k10 * v1,
            q2_l_min=self.k12 * v1 if self.k12 > 0 else None,
            q3_l_min=self.k13 * v1 if self.k13 > 0 else None,
            hybrid_rate_constants_per_min=hybrid,
            half_lives_min=tuple(math.log(2) / k for k in hybrid),
        )


def micro_constants(
    v1_l: float,
    cl_l_min: float,
    v2_l: float | None = None,
    q2_l_min: float | None = None,
    v3_l: float | None = None,
    q3_l_min: float | None = None,
) -> dict[str, float]:
    """Micro rate constants (min⁻¹) from volumes (L) and clearances (L/min), clinical.md §2.2:
    k10 = CL/V1, k12 = Q2/V1, k21 = Q2/V2, k13 = Q3/V1, k31 = Q3/V3.

    Clearances published in L/h must be divided by 60 first (clinical.md §2.2); this
    function takes L/min only, so that division is the caller's visible step.
    """
    for name, val in (("v1_l", v1_l), ("cl_l_min", cl_l_min)):
        if not (math.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be positive, got {val!r}")
    out = {"k10": cl_l_min / v1_l, "k12": 0.0, "k21": 0.0, "k13": 0.0, "k31": 0.0}
    for v, q, kin, kout in ((v2_l, q2_l_min, "k12", "k21"), (v3_l, q3_l_min, "k13", "k31")):
        if (v is None) != (q is None):
            raise ValueError(f"{kin}/{kout}: give both the volume and the clearance, or neither")
        if v is not None and q is not None:
            if not (v > 0 and q > 0):
                raise ValueError(f"{kin}/{kout}: volume and clearance must be positive")
            out[kin], out[kout] = q / v1_l, q / v
    return out


#: Domino et al., 3-compartment, as in STANPUMP, opentiva and fus_anes (clinical.md §2.1 (a)).
#: ke0 0.652 min⁻¹ is opentiva's ("from tpeak 1 min"); the other public value, 0.238 min⁻¹
#: (Navarrete/Cortínez 2025, analgesia), can be passed to the estimator instead. Neither is
#: validated for dissociation, so the effect site is experimental.
DOMINO = PKModel(
    key="domino",
    name="Domino 3-compartment",
    v1_l_per_kg=0.063,
    k10=0.4381,
    k12=0.5921,
    k13=0.5900,
    k21=0.2470,
    k31=0.0146,
    ke0=0.652,
    ke0_source="opentiva, 'from tpeak 1 min' (clinical.md §2.1 (a), UNSURE for dissociation)",
    source="Domino et al. (Anesth Analg 1982;61:87 / Clin Pharmacol Ther 1984;36:645) via "
    "STANPUMP, opentiva, fus_anes; clinical.md §2.1 (a)",
    note="small V1: Cp falls steeply when the pump stops (clinical.md §2.4)",
)

#: Clements & Nimmo 1981 (BJA 53:27), 2-compartment, opentiva's "Clements250"
#: (clinical.md §2.1 (b)). Parameters not checked against the paper's table (UNSURE).
CLEMENTS250 = PKModel(
    key="clements250",
    name="Clements250 2-compartment",
    v1_l_per_kg=1.7522,
    k10=0.0109,
    k12=0.0186,
    k21=0.0137,
    ke0=5.2,
    ke0_source="opentiva, 'from tpeak 1 min' (clinical.md §2.1 (b), UNSURE)",
    source="Clements & Nimmo, Br J Anaesth 1981;53:27 via opentiva; clinical.md §2.1 (b)",
    note="very large V1: the early distribution phase was probably not sampled",
)

#: Hijazi et al. 2003 (BJA 90:155), ICU patients with brain or spinal-cord injury
#: (clinical.md §2.1 (c)): population does not match KAP outpatients, comparison only.
HIJAZI = PKModel(
    key="hijazi",
    name="Hijazi 2-compartment (ICU; comparison only)",
    v1_l_per_kg=1.08,
    k10=0.0333,
    k12=0.0088,
    k21=0.0030,
    comparison_only=True,
    source="Hijazi et al., Br J Anaesth 2003;90:155 via opentiva; clinical.md §2.1 (c)",
    note="critically ill adults; offer only as a comparison",
)

#: Default model of the PK panel (clinical.md §2.1 "Recommendation").
DEFAULT_MODEL = DOMINO

MODELS: dict[str, PKModel] = {m.key: m for m in (DOMINO, CLEMENTS250, HIJAZI)}
_ALIASES = {"clements": "clements250"}


def get_model(name: str) -> PKModel:
    """A model by key ("domino", "clements250" or "clements", "hijazi")."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(f"unknown PK model {name!r}; known: {', '.join(MODELS)}") from None


def _check_weight(weight_kg: float) -> None:
    # The dosing bounds (clinical.md §1.4) are the dosing module's business; here only
    # physical sense is required, so the model can also serve the simulator.
    if not (isinstance(weight_kg, int | float) and math.isfinite(weight_kg) and weight_kg > 0):
        raise ValueError(f"weight must be a positive number of kg, got {weight_kg!r}")


# --------------------------------------------------------------------------- expm


def expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring with a diagonal (6, 6) Padé approximant
    (Golub & Van Loan, Matrix Computations, Algorithm 11.3.1).

    With ‖A/2^s‖∞ ≤ 1/2 the truncation error of the (6, 6) approximant is below 4e-16
    relative, so for the small, well-scaled matrices here the result is at double
    precision. Written here because scipy is not a dependency.
    """
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expm needs a square matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("expm needs finite entries")
    n = a.shape[0]
    norm = float(np.max(np.sum(np.abs(a), axis=1))) if n else 0.0
    s = max(0, math.frexp(norm)[1] + 1) if norm > 0 else 0
    x_mat = a / (2.0**s)
    q = 6
    c = 1.0
    ident = np.eye(n)
    num = ident.copy()
    den = ident.copy()
    power = ident.copy()
    for k in range(1, q + 1):
        c = c * (q - k + 1) / (k * (2 * q - k + 1))
        power = x_mat @ power
        num = num + c * power
        den = den + ((-1) ** k) * c * power
    result = np.linalg.solve(den, num)
    for _ in range(s):
        result = result @ result
    return result


def expm_eigen(a: np.ndarray) -> np.ndarray:
    """e^A from the eigendecomposition A = V·Λ·V⁻¹, valid when A is diagonalisable with
    real eigenvalues (as the rate matrix of a mammillary model is). Used to cross-check
    ``expm`` and to explain the fast stepping of ``PlasmaEstimator``."""
    a = np.asarray(a, dtype=float)
    lam, vec = np.linalg.eig(a)
    if np.max(np.abs(lam.imag), initial=0.0) > 1e-12 * max(1.0, float(np.max(np.abs(lam)))):
        raise ValueError("expm_eigen needs real eigenvalues")
    lam, vec = lam.real, vec.real
    return (vec * np.exp(lam)) @ np.linalg.inv(vec)


class _Propagator:
    """Exact step of dx/dt = A·x + b·r over dt with constant r (clinical.md §2.2, §2.5).

    Eigen method: with A = V·Λ·V⁻¹, e^{A·dt} = V·diag(e^{λ·dt})·V⁻¹ and
    ∫₀^dt e^{A·s} ds·b = V·diag((e^{λ·dt} − 1)/λ)·V⁻¹·b; only the exponentials change from
    step to step. Padé method: ``expm`` of the augmented matrix [[A, b], [0, 0]]·dt, the
    fallback when the eigenvalues are not real, distinct and non-zero (for example an
    effect-site ke0 that coincides with a hybrid constant).
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, method: str = "auto") -> None:
        self.a = np.array(a, dtype=float)
        self.b = np.array(b, dtype=float)
        self.n = self.a.shape[0]
        if method not in ("auto", "eigen", "pade"):
            raise ValueError(f"unknown method {method!r}")
        self.method = "pade"
        if method in ("auto", "eigen"):
            lam, vec = np.linalg.eig(self.a)
            scale = max(1.0, float(np.max(np.abs(lam))))
            real = np.max(np.abs(lam.imag)) <= 1e-12 * scale
            lam_r = np.sort(lam.real)
            distinct = bool(np.all(np.diff(lam_r) > 1e-6 * scale)) if self.n > 1 else True
            nonzero = bool(np.all(np.abs(lam.real) > 1e-12))
            ok = real and distinct and nonzero and np.linalg.cond(vec.real) < 1e8
            if ok:
                self.method = "eigen"
                self._lam = lam.real.copy()
                self._vec = vec.real.copy()
                self._vinv = np.linalg.inv(self._vec)
                self._vinv_b = self._vinv @ self.b
            elif method == "eigen":
                raise ValueError("rate matrix is not diagonalisable with real distinct "
                                 "non-zero eigenvalues; use the Padé method")
        self._cache_dt: float | None = None
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def matrices(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """(Φ, Γ) with x(t+dt) = Φ·x(t) + Γ·r."""
        if self._cache_dt == dt and self._cache is not None:
            return self._cache
        if self.method == "eigen":
            e = np.exp(self._lam * dt)
            phi = (self._vec * e) @ self._vinv
            gamma = self._vec @ (((e - 1.0) / self._lam) * self._vinv_b)
        else:
            m = np.zeros((self.n + 1, self.n + 1))
            m[: self.n, : self.n] = self.a * dt
            m[: self.n, self.n] = self.b * dt
            big = expm(m)
            phi, gamma = big[: self.n, : self.n], big[: self.n, self.n]
        self._cache_dt, self._cache = dt, (phi, gamma)
        return phi, gamma

    def step(self, x: np.ndarray, dt: float, rate: float) -> np.ndarray:
        if dt == 0.0:
            return x.copy()
        if self.method == "eigen" and self._cache_dt != dt:
            # Cheaper than forming Φ when dt changes at every telemetry update.
            e = np.exp(self._lam * dt)
            y = e * (self._vinv @ x)
            if rate:
                y = y + rate * ((e - 1.0) / self._lam) * self._vinv_b
            return self._vec @ y
        phi, gamma = self.matrices(dt)
        return phi @ x + gamma * rate


def _system(model: PKModel, weight_kg: float, ke0: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Rate matrix and input vector in amounts (mg); with an effect site, one more state
    Ce (mg/L) with dCe/dt = ke0·(A1/V1 − Ce) (clinical.md §2.2)."""
    a = model.rate_matrix()
    n = a.shape[0]
    if ke0 is not None:
        big = np.zeros((n + 1, n + 1))
        big[:n, :n] = a
        big[n, 0] = ke0 / model.v1_l(weight_kg)
        big[n, n] = -ke0
        a = big
    b = np.zeros(a.shape[0])
    b[0] = 1.0
    return a, b


def _resolve_ke0(model: PKModel, effect_site: bool, ke0: float | None) -> float | None:
    if not effect_site:
        if ke0 is not None:
            raise ValueError("ke0 given without effect_site=True")
        return None
    value = model.ke0 if ke0 is None else ke0
    if value is None:
        raise ValueError(f"model {model.key} has no ke0; pass one explicitly (experimental)")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"ke0 must be positive, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- live estimate


@dataclass(frozen=True, slots=True)
class PlasmaEstimate:
    """One estimated concentration at host time ``t_us``. ``projected`` is true when the
    time lies after the last telemetry the estimator received (the figure then assumes
    ``assumed_rate_mg_min`` continued)."""

    t_us: int
    cp_ng_ml: float
    model_key: str
    ce_ng_ml: float | None = None
    projected: bool = False
    assumed_rate_mg_min: float = 0.0
    label: str = MODEL_ESTIMATE_LABEL
    effect_site_label: str | None = None


class PlasmaEstimator:
    """Live plasma estimate driven by what the pump actually delivered (clinical.md §2.2).

    Feed it ``advance(t_us, delivered_mg)`` with the mg delivered over each interval since
    the previous call (from ``dosing.DeliveredDoseTracker``: rate changes, pauses and
    boluses are all just different mg per interval) and ``bolus(mg)`` for an instantaneous
    dose. The drug of one interval is taken as spread evenly over it, and the step is exact
    for that, so the result does not depend on how often telemetry arrives beyond how well
    the intervals resolve the real rate.

    ``estimate(t_us)`` answers for any time: before the start (zero: a ketamine-naive
    patient is assumed), in the past (from the kept history) or after the last update
    (projected with an assumed continuing rate, zero by default; the result says so).
    The history is one small vector per update (a 4 h session at 1 Hz is about 1 MB).
    """

    def __init__(
        self,
        model: PKModel = DEFAULT_MODEL,
        weight_kg: float = 70.0,
        *,
        start_us: int,
        effect_site: bool = False,
        ke0: float | None = None,
    ) -> None:
        _check_weight(weight_kg)
        self.model = model
        self.weight_kg = float(weight_kg)
        self.ke0 = _resolve_ke0(model, effect_site, ke0)
        a, b = _system(model, self.weight_kg, self.ke0)
        self._prop = _Propagator(a, b)
        self._v1 = model.v1_l(self.weight_kg)
        self._n = model.n_compartments
        self.start_us = int(start_us)
        self._t: list[int] = [self.start_us]
        self._x: list[np.ndarray] = [np.zeros(a.shape[0])]
        self._rate: list[float] = []  # rate over [_t[i], _t[i+1]) in mg/min
        self.total_mg = 0.0

    @property
    def effect_site(self) -> bool:
        return self.ke0 is not None

    @property
    def t_us(self) -> int:
        """Host time of the last update."""
        return self._t[-1]

    @property
    def amounts_mg(self) -> np.ndarray:
        """Amounts in the compartments now (mg), central first; a copy."""
        return self._x[-1][: self._n].copy()

    def advance(self, t_us: int, delivered_mg: float) -> PlasmaEstimate:
        """Move to ``t_us`` with ``delivered_mg`` spread evenly since the last update. A
        zero-length interval with drug is a bolus. Time never goes backwards: a host clock
        step back is the caller's to handle (the tracker counts it and skips the interval)."""
        t_us = int(t_us)
        if not (math.isfinite(delivered_mg) and delivered_mg >= 0):
            raise ValueError(f"delivered mg must be a finite number >= 0, got {delivered_mg!r}")
        dt_us = t_us - self._t[-1]
        if dt_us < 0:
            raise ValueError(f"time went backwards by {-dt_us} µs; the estimate only moves "
                             "forward")
        if dt_us == 0:
            return self.bolus(delivered_mg) if delivered_mg > 0 else self.estimate(t_us)
        dt_min = dt_us / _US_PER_MIN
        rate = delivered_mg / dt_min
        x = self._prop.step(self._x[-1], dt_min, rate)
        self._rate.append(rate)
        self._t.append(t_us)
        self._x.append(x)
        self.total_mg += delivered_mg
        return self._make(t_us, x, projected=False, rate=0.0)

    def bolus(self, mg: float) -> PlasmaEstimate:
        """An instantaneous dose into the central compartment at the current time."""
        if not (math.isfinite(mg) and mg >= 0):
            raise ValueError(f"bolus mg must be a finite number >= 0, got {mg!r}")
        x = self._x[-1].copy()
        x[0] += mg
        # A zero-length segment keeps the history right-continuous: estimate(t) at the
        # bolus time shows the dose given.
        self._rate.append(0.0)
        self._t.append(self._t[-1])
        self._x.append(x)
        self.total_mg += mg
        return self._make(self._t[-1], x, projected=False, rate=0.0)

    def estimate(self, t_us: int | None = None, *, rate_mg_min: float = 0.0) -> PlasmaEstimate:
        """Cp at any host time. After the last update the figure is projected assuming
        ``rate_mg_min`` continues (pass the pump's current rate × concentration for a live
        display between telemetry updates); earlier times come from the history."""
        if not (math.isfinite(rate_mg_min) and rate_mg_min >= 0):
            raise ValueError(f"rate must be a finite number >= 0 mg/min, got {rate_mg_min!r}")
        t = self._t[-1] if t_us is None else int(t_us)
        if t < self.start_us:
            return self._make(t, self._x[0], projected=False, rate=0.0)
        if t >= self._t[-1]:
            dt = (t - self._t[-1]) / _US_PER_MIN
            x = self._prop.step(self._x[-1], dt, rate_mg_min)
            return self._make(t, x, projected=t > self._t[-1], rate=rate_mg_min)
        i = bisect.bisect_right(self._t, t) - 1
        dt = (t - self._t[i]) / _US_PER_MIN
        x = self._prop.step(self._x[i], dt, self._rate[i])
        return self._make(t, x, projected=False, rate=0.0)

    def _make(self, t_us: int, x: np.ndarray, *, projected: bool, rate: float) -> PlasmaEstimate:
        ce = float(x[self._n]) * 1000.0 if self.ke0 is not None else None
        return PlasmaEstimate(
            t_us=t_us,
            cp_ng_ml=float(x[0]) / self._v1 * 1000.0,
            model_key=self.model.key,
            ce_ng_ml=ce,
            projected=projected,
            assumed_rate_mg_min=rate if projected else 0.0,
            effect_site_label=EFFECT_SITE_LABEL if self.ke0 is not None else None,
        )


# --------------------------------------------------------------------------- planned curve


@dataclass(frozen=True, slots=True)
class Infusion:
    """A zero-order infusion of ``total_mg`` spread evenly over
    ``start_min <= t < start_min + duration_min`` (clinical.md §2.5)."""

    start_min: float
    duration_min: float
    total_mg: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_min) and math.isfinite(self.duration_min)
                and self.duration_min > 0):
            raise ValueError(f"infusion needs a finite start and a positive duration, got "
                             f"start {self.start_min!r} min, duration {self.duration_min!r} min")
        if not (math.isfinite(self.total_mg) and self.total_mg >= 0):
            raise ValueError(f"infusion mg must be finite and >= 0, got {self.total_mg!r}")

    @property
    def end_min(self) -> float:
        return self.start_min + self.duration_min

    @property
    def rate_mg_min(self) -> float:
        return self.total_mg / self.duration_min


@dataclass(frozen=True, slots=True)
class Bolus:
    """An instantaneous dose at ``t_min`` (counted at and after that time)."""

    t_min: float
    mg: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t_min) and math.isfinite(self.mg) and self.mg >= 0):
            raise ValueError(f"bolus needs a finite time and mg >= 0, got {self!r}")


@dataclass(frozen=True, slots=True, eq=False)
class PredictedCurve:
    """Cp (and optionally Ce) of a planned programme at the requested times, in the order
    given. Read-only arrays; the label travels with the numbers."""

    model_key: str
    model_name: str
    weight_kg: float
    times_min: np.ndarray
    cp_ng_ml: np.ndarray
    ce_ng_ml: np.ndarray | None = None
    label: str = MODEL_ESTIMATE_LABEL
    effect_site_label: str | None = None
    schedule: tuple[Infusion | Bolus, ...] = field(default=())

    def peak(self) -> tuple[float, float]:
        """(time in min, Cp in ng/mL) of the highest Cp among the sampled times."""
        if self.cp_ng_ml.size == 0:
            raise ValueError("empty curve has no peak")
        i = int(np.argmax(self.cp_ng_ml))
        return float(self.times_min[i]), float(self.cp_ng_ml[i])


def predict_curve(
    model: PKModel,
    weight_kg: float,
    schedule: Iterable[Infusion | Bolus],
    times: Sequence[float] | np.ndarray,
    *,
    effect_site: bool = False,
    ke0: float | None = None,
) -> PredictedCurve:
    """Cp in ng/mL of a planned ``schedule`` at ``times`` (minutes; t = 0 is the start of
    the programme). Pure: the same inputs always give the same curve.

    The state starts at zero at the earliest event or requested time, then steps exactly
    from breakpoint to breakpoint (infusion starts and ends, boluses, requested times), so
    no step size is involved (clinical.md §2.2, §2.5). Overlapping infusions add up.
    """
    _check_weight(weight_kg)
    items = tuple(schedule)
    for item in items:
        if not isinstance(item, Infusion | Bolus):
            raise TypeError(f"schedule items must be Infusion or Bolus, got {item!r}")
    t_req = np.array(times, dtype=float).reshape(-1)  # a copy: it is made read-only below
    if not np.all(np.isfinite(t_req)):
        raise ValueError("requested times must be finite")
    k = _resolve_ke0(model, effect_site, ke0)
    a, b = _system(model, float(weight_kg), k)
    prop = _Propagator(a, b)
    v1 = model.v1_l(float(weight_kg))
    n = model.n_compartments
    infusions = [i for i in items if isinstance(i, Infusion)]
    boluses: dict[float, float] = {}
    for i in items:
        if isinstance(i, Bolus):
            boluses[i.t_min] = boluses.get(i.t_min, 0.0) + i.mg
    points = set(t_req.tolist()) | set(boluses)
    for inf in infusions:
        points.update((inf.start_min, inf.end_min))
    breaks = sorted(points)
    x = np.zeros(a.shape[0])
    state_at: dict[float, np.ndarray] = {}
    t = breaks[0] if breaks else 0.0
    for tb in breaks:
        if tb > t:
            rate = sum(i.rate_mg_min for i in infusions if i.start_min <= t < i.end_min)
            x = prop.step(x, tb - t, rate)
            t = tb
        if tb in boluses:
            x = x.copy()
            x[0] += boluses[tb]
        state_at[tb] = x
    cp = np.array([state_at[float(tq)][0] / v1 * 1000.0 for tq in t_req])
    ce = np.array([state_at[float(tq)][n] * 1000.0 for tq in t_req]) if k is not None else None
    for arr in (t_req, cp, ce):
        if arr is not None:
            arr.setflags(write=False)
    return PredictedCurve(
        model_key=model.key,
        model_name=model.name,
        weight_kg=float(weight_kg),
        times_min=t_req,
        cp_ng_ml=cp,
        ce_ng_ml=ce,
        effect_site_label=EFFECT_SITE_LABEL if k is not None else None,
        schedule=items,
    )
