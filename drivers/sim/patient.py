"""A simulated patient receiving IV ketamine: the ``VitalsFeed`` the monitor peers report.

Pure and driven by an explicit clock (every method takes host time ``now_us``; no
threads, no sleeps, no wall clock), deterministic for a seed: the same seed, profile and
events give the same numbers however often and in whatever chunks a peer asks. One lock
makes a model safe to share between the monitor and pump peers' server threads.

Physiology (clinical.md §3.1)
-----------------------------
- Baseline from a ``PatientProfile`` (weight, HR, SBP/DBP, SpO2, RR, EtCO2, temperature,
  perfusion index) with slow drift (smooth noise on a 10-min grid) and short-term noise
  (5-s grid); numbers in ``DRIFT_SD`` / ``NOISE_SD``.
- The ketamine response is driven by the concentration from ``kapmonitor.pk
  .PlasmaEstimator`` fed with the drug the pump ACTUALLY delivered (``cumulative_mg`` of a
  ``PumpModel``, or any ``PumpFeed`` through ``kapmonitor.dosing.DeliveredDoseTracker``),
  so a paused or occluded pump changes the response. The response fraction is a sigmoid
  Emax of the effect-site estimate, normalised to 1 at the peak of the standard regimen
  (0.5 mg/kg over 40 min, clinical.md §1.1); each archetype (``ARCHETYPES``: mild default,
  typical, hypertensive responder) gives ΔSBP, ΔDBP, ΔHR at that peak (clinical.md §3.1
  table). See ``ResponseModel`` for why Clements250 and a Hill exponent of 4.
- SpO2, RR and EtCO2 are mostly preserved: at the peak SpO2 −1 point, EtCO2 +2 mmHg, RR
  unchanged (clinical.md §3.1 "Simulator defaults for RR, SpO2 and EtCO2", UNSURE).
- MAP is derived from the measured SBP and DBP: MAP = DBP + (SBP − DBP) / 3.

NIBP is intermittent (clinical.md §4.1): a measurement at the start, then every
``nibp_interval_min`` (5) from infusion start to ``nibp_late_after_min`` (60), then every
``nibp_late_interval_min`` (15); ``request_nibp(now)`` adds one. ``numerics`` returns the
HELD values of the last measurement; ``nibp_measured_us`` is the host time of that
measurement (None before the first), so a peer reports NIBP only when it changes:
``if model.nibp_measured_us != last_sent: send``. ``nibp_measurement`` gives the whole
record (time, values, failed). A measurement attempted while the cuff is off or during an
NIBP artefact fails: the NIBP numerics become None (invalid) with quality
ARTEFACT|INVALID, and one retry follows 30 s later, as monitors do.

Waves: ``wave(channel, rate_hz, n, now_us)`` returns the NEXT n samples of that channel at
that rate. Each (channel, rate) stream keeps its own sample counter: sample k is at
``start_us + k / rate_hz``; a stream's first call starts at the sample due at ``now_us``
minus n, so the first chunk ends at now. Every sample is a pure function of its time (the
beat and breath schedules are generated on the model's 2-s grid, 3 s ahead), so chunks
join without a discontinuity and any chunking gives the same samples. Channels:
``PLETH`` (dimensionless, within ±1: pulse rate = the beats, amplitude with the perfusion
index), ``ECG`` (lead II-like synthetic PQRST in mV at the beats), ``CO2_WAVE`` (mmHg,
capnogram per breath: flat inspiration, upstroke, plateau rising to EtCO2; flat during
apnoea).

Sensor faults and artefact (scenario-driven): ``sensor_off(sensor, now)`` /
``sensor_on``; ``artefact(sensors, now, duration_s)``. Sensors (``SENSORS``): "ecg",
"spo2", "nibp", "co2", "temp". A sensor off gives None numerics and flat waves, quality
SENSOR_OFF|INVALID; an artefact gives erratic numerics and a disturbed wave, quality
ARTEFACT. ``quality(channel, now)`` reports it. The ``Quality.DEMO`` flag is not set here:
the device layer that knows it talks to a simulator adds it.

Scripted events: ``schedule(t_us, kind, **params)`` with kinds set, release, archetype,
nibp, artefact, sensor_off, sensor_on (see ``schedule``), applied at their exact times.
"""

from __future__ import annotations

import bisect
import math
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from kapmonitor.dosing import DeliveredDoseTracker
from kapmonitor.model import CHANNELS, Channel, Quality
from kapmonitor.pk import Infusion, PKModel, PlasmaEstimator, get_model, predict_curve

__all__ = [
    "ARCHETYPES",
    "DRIFT_SD",
    "NOISE_SD",
    "SENSORS",
    "SETTABLE",
    "WAVE_CHANNELS",
    "Archetype",
    "NibpMeasurement",
    "PatientModel",
    "PatientProfile",
    "ResponseModel",
    "validate_event",
]

_US = 1_000_000
_GRID_US = 2_000_000  # the model's state step (PK, response, beat scheduling): 2 s
_LOOKAHEAD_S = 3.0  # beats and breaths are scheduled this far ahead of the grid


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True, slots=True)
class Archetype:
    """Haemodynamic response at the peak of the standard regimen (clinical.md §3.1)."""

    name: str
    d_sbp: float
    d_dbp: float
    d_hr: float
    source: str
    d_spo2: float = -1.0
    d_etco2: float = 2.0
    d_rr: float = 0.0
    d_pi_rel: float = -0.15


#: clinical.md §3.1 "Archetype" table. Where the table gives a range the middle is used;
#: ΔHR of the hypertensive responder is "—" in the table: +10 is a design choice (UNSURE).
ARCHETYPES: Mapping[str, Archetype] = {
    "mild": Archetype("mild", 8.0, 6.0, 4.0, "[S9] China 741 infusions; default"),
    "typical": Archetype("typical", 16.0, 11.0, 8.0,
                         "[S10] Yale 2,342 infusions; ΔHR +5 to +10 is UNSURE"),
    "hypertensive": Archetype("hypertensive", 55.0, 28.0, 10.0,
                              "[S12] esketamine label, 8-19 % with >= +40/+25 mmHg; "
                              "ΔHR a design choice"),
}
_ARCHETYPE_ALIASES = {"default": "mild", "hypertensive_responder": "hypertensive"}


def _archetype(name: str) -> Archetype:
    key = _ARCHETYPE_ALIASES.get(name, name)
    if key not in ARCHETYPES:
        raise ValueError(f"unknown response archetype {name!r}; known: "
                         f"{', '.join(ARCHETYPES)} (clinical.md §3.1)")
    return ARCHETYPES[key]


#: Baseline bounds a profile must respect: an adult in a ketamine chair. The weight bounds
#: are the dose calculator's hard limits (clinical.md §1.4); the others are plausibility
#: limits of this simulator, not alarm limits.
_PROFILE_BOUNDS: Mapping[str, tuple[float, float, str]] = {
    "weight_kg": (30.0, 250.0, "kg"),
    "hr": (35.0, 150.0, "/min"),
    "sbp": (70.0, 220.0, "mmHg"),
    "dbp": (35.0, 130.0, "mmHg"),
    "spo2": (80.0, 100.0, "%"),
    "rr": (4.0, 40.0, "/min"),
    "etco2": (15.0, 60.0, "mmHg"),
    "temp_c": (34.0, 40.0, "°C"),
    "pi": (0.1, 20.0, "%"),
    "ec50_ng_ml": (1.0, 5000.0, "ng/mL"),
    "hill": (0.5, 10.0, ""),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientProfile:
    """Who the simulated patient is. Defaults: a 70 kg adult with unremarkable vitals
    (clinical.md §3.1 simulator defaults: RR 12-16, SpO2 97-99, EtCO2 35-40)."""

    weight_kg: float = 70.0
    hr: float = 72.0
    sbp: float = 122.0
    dbp: float = 78.0
    spo2: float = 98.0
    rr: float = 14.0
    etco2: float = 37.0
    temp_c: float = 36.7
    pi: float = 3.0
    archetype: str = "mild"
    pk_model: str = "clements250"
    effect_site: bool = True
    ec50_ng_ml: float = 120.0
    hill: float = 4.0

    def __post_init__(self) -> None:
        for name, (lo, hi, unit) in _PROFILE_BOUNDS.items():
            v = getattr(self, name)
            if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
                raise ValueError(f"patient {name} must be a number, got {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"patient {name} {v:g} {unit} is outside {lo:g} to {hi:g} "
                                 f"{unit} (simulator profile bounds)")
        if self.dbp >= self.sbp - 10:
            raise ValueError(f"patient diastolic {self.dbp:g} mmHg must be at least 10 mmHg "
                             f"below systolic {self.sbp:g} mmHg")
        _archetype(self.archetype)
        get_model(self.pk_model)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatientProfile:
        """From a scenario's [patient] table; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown patient field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True, slots=True)
class NibpMeasurement:
    """One NIBP cycle: values None when it failed (cuff off, motion)."""

    t_us: int
    sys: float | None
    dia: float | None
    mean: float | None
    failed: bool = False
    reason: str = ""
    requested: bool = False


# --------------------------------------------------------------------------- response


class ResponseModel:
    """Response fraction R(c) = E(c) / E(c_ref), E(c) = c^h / (EC50^h + c^h).

    ``c`` is the effect-site (or plasma) estimate of ``model``; ``c_ref`` the peak of the
    standard regimen (0.5 mg/kg over 40 min, weight-independent, clinical.md §2.1), so
    R = 1 at that peak and the archetype deltas are the peak deltas of clinical.md §3.1.

    Why Clements250 and h = 4 (design choices, clinical.md §3.1 does not fix them):
    clinical.md §3.1 wants the rise to peak at 30-40 min, a decay with a half-time of about
    20-30 min after the pump stops, and baseline by 60-90 min. Clements250 peaks at the end
    of infusion and then decays smoothly (§2.4: "Domino ... likely too steep for venous
    sampling"); with EC50 120 ng/mL and h = 4 the response is 0.84 of its peak at 30 min,
    half of it about 21 min after the stop, and 0.16 at 90 min. A response linear in the
    concentration would still be at 40 % of its peak at 90 min.
    """

    def __init__(self, model: PKModel, *, effect_site: bool, ec50_ng_ml: float,
                 hill: float) -> None:
        self.model = model
        self.effect_site = effect_site and model.ke0 is not None
        self.ec50 = float(ec50_ng_ml)
        self.hill = float(hill)
        times = np.arange(0.0, 60.0, 0.05)
        curve = predict_curve(model, 70.0, (Infusion(0.0, 40.0, 35.0),), times,
                              effect_site=self.effect_site)
        ref = curve.ce_ng_ml if self.effect_site and curve.ce_ng_ml is not None else (
            curve.cp_ng_ml)
        self.c_ref_ng_ml = float(np.max(ref))
        self._e_ref = self._emax(self.c_ref_ng_ml)

    def _emax(self, c: float) -> float:
        if c <= 0:
            return 0.0
        x = (c / self.ec50) ** self.hill
        return x / (1.0 + x)

    def fraction(self, c_ng_ml: float) -> float:
        return self._emax(c_ng_ml) / self._e_ref


# --------------------------------------------------------------------------- noise


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


class _Noise:
    """Smooth deterministic noise: independent standard normals on a grid of ``spacing``
    seconds (one column per key), interpolated (cosine for numerics, linear for waves).
    A pure function of time and seed, generated in blocks on demand."""

    _BLOCK = 4096
    _KEEP = 8

    def __init__(self, seed: int, name: str, spacing_s: float, columns: int) -> None:
        self.seed = int(seed) & 0xFFFFFFFF
        self.name = _key(name)
        self.spacing = float(spacing_s)
        self.columns = columns
        self._blocks: dict[int, np.ndarray] = {}
        self._last_t = math.nan
        self._last: list[float] = []

    def _block(self, b: int) -> np.ndarray:
        blk = self._blocks.get(b)
        if blk is None:
            if len(self._blocks) >= self._KEEP:
                self._blocks.pop(next(iter(self._blocks)))  # the oldest
            rng = np.random.default_rng([self.seed, self.name, b & 0xFFFFFFFF, int(b < 0)])
            blk = rng.standard_normal((self._BLOCK, self.columns))
            self._blocks[b] = blk
        return blk

    def at(self, t_s: float) -> list[float]:
        """All columns at ``t_s`` (cosine interpolation: smooth)."""
        if t_s == self._last_t:
            return self._last
        x = t_s / self.spacing
        i = math.floor(x)
        f = x - i
        b, off = divmod(i, self._BLOCK)
        blk = self._block(b)
        nxt = blk[off + 1] if off + 1 < self._BLOCK else self._block(b + 1)[0]
        w = 0.5 - 0.5 * math.cos(math.pi * f)
        self._last_t, self._last = t_s, (blk[off] * (1.0 - w) + nxt * w).tolist()
        return self._last

    def series(self, t_s: np.ndarray, col: int) -> np.ndarray:
        """Column ``col`` at each time of ``t_s`` (linear interpolation)."""
        x = np.asarray(t_s, dtype=np.float64) / self.spacing
        if x.size == 0:
            return x
        i = np.floor(x)
        f = x - i
        i = i.astype(np.int64)
        b0 = int(i.min()) // self._BLOCK
        b1 = (int(i.max()) + 1) // self._BLOCK
        if b0 == b1:
            table = self._block(b0)[:, col]
        else:
            table = np.concatenate([self._block(b)[:, col] for b in range(b0, b1 + 1)])
        o = i - b0 * self._BLOCK
        return table[o] * (1.0 - f) + table[o + 1] * f


class _Grow:
    """A growable float array (amortised appends, numpy views for vector lookups)."""

    def __init__(self, width: int) -> None:
        self._a = np.zeros((256, width))
        self.n = 0

    def append(self, *row: float) -> None:
        if self.n == self._a.shape[0]:
            self._a = np.concatenate([self._a, np.zeros_like(self._a)])
        self._a[self.n] = row
        self.n += 1

    def col(self, j: int) -> np.ndarray:
        return self._a[: self.n, j]

    def row(self, i: int) -> list[float]:
        return self._a[i].tolist()


# --------------------------------------------------------------------------- channels

#: Sensors and the channels each one feeds (a fault on a sensor affects all of them).
SENSORS: Mapping[str, tuple[Channel, ...]] = {
    "ecg": (Channel.ECG, Channel.HR),
    "spo2": (Channel.SPO2, Channel.PULSE, Channel.PERF_INDEX, Channel.PLETH),
    "nibp": (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN),
    "co2": (Channel.ETCO2, Channel.FICO2, Channel.RR, Channel.CO2_WAVE),
    "temp": (Channel.TEMP,),
}
_SENSOR_OF = {ch: s for s, chans in SENSORS.items() for ch in chans}

WAVE_CHANNELS = (Channel.PLETH, Channel.ECG, Channel.CO2_WAVE)
#: The continuously measured numerics: (channel, sensor, decimals shown).
_CONTINUOUS = tuple((ch, _SENSOR_OF[ch], CHANNELS[ch].precision) for ch in (
    Channel.HR, Channel.PULSE, Channel.SPO2, Channel.PERF_INDEX, Channel.RR, Channel.ETCO2,
    Channel.FICO2, Channel.TEMP))

#: Channels a scenario may ``set`` (a target value with a ramp). NIBP mean is derived.
SETTABLE = (Channel.HR, Channel.SPO2, Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.RR,
            Channel.ETCO2, Channel.TEMP, Channel.PERF_INDEX)
_SET_BOUNDS: Mapping[Channel, tuple[float, float]] = {
    Channel.HR: (0.0, 250.0), Channel.SPO2: (50.0, 100.0), Channel.NIBP_SYS: (40.0, 280.0),
    Channel.NIBP_DIA: (20.0, 180.0), Channel.RR: (0.0, 60.0), Channel.ETCO2: (0.0, 100.0),
    Channel.TEMP: (30.0, 43.0), Channel.PERF_INDEX: (0.02, 20.0),
}

# Columns of the noise tables.
_HR, _SBP, _DBP, _SPO2, _RR, _ETCO2, _TEMP, _PI, _PULSE, _HRV = range(10)

#: Slow drift (10-min grid), SD in channel units (PI: relative). Project choices: a seated
#: adult's vitals wander by a few units over tens of minutes.
DRIFT_SD: Mapping[str, float] = {"hr": 2.5, "sbp": 3.0, "dbp": 2.0, "spo2": 0.4, "rr": 0.8,
                                 "etco2": 1.0, "temp": 0.08, "pi": 0.12}
#: Short-term noise (5-s grid) of the continuous numerics, and the NIBP measurement
#: noise (one draw per cycle). Oscillometric repeatability of a few mmHg.
NOISE_SD: Mapping[str, float] = {"hr": 1.0, "pulse": 0.7, "spo2": 0.4, "rr": 0.6,
                                 "etco2": 0.5, "temp": 0.02, "pi": 0.04, "nibp_sys": 3.0,
                                 "nibp_dia": 2.0}
_NIBP_RETRY_US = 30 * _US


def _gauss(t: np.ndarray, c: float | np.ndarray, w: float | np.ndarray) -> np.ndarray:
    return np.exp(-(((t - c) / w) ** 2))


def _pqrs(tau: np.ndarray) -> np.ndarray:
    return (0.12 * _gauss(tau, 0.08, 0.022) - 0.10 * _gauss(tau, 0.185, 0.009)
            + 1.10 * _gauss(tau, 0.200, 0.010) - 0.25 * _gauss(tau, 0.218, 0.010))


def _pulse(x: np.ndarray) -> np.ndarray:
    """A pleth pulse on a time axis scaled by sqrt(RR): fast upstroke to 1 at 0.13, slower
    fall, a dicrotic wave at 0.45."""
    return (_gauss(x, 0.13, np.where(x < 0.13, 0.07, 0.17))
            + 0.25 * _gauss(x, 0.45, 0.11))


# The beat shapes are tabulated at 0.5 ms (of scaled time) and interpolated: several
# times cheaper than evaluating the Gaussians per sample, and within 0.001 of them.
_STEP = 0.0005
_PQRS_X = np.arange(0.0, 0.4, _STEP)
_PQRS_TABLE = _pqrs(_PQRS_X)
_T_X = np.arange(0.0, 0.6, _STEP)
_T_TABLE = 0.30 * _gauss(_T_X, 0.27, 0.05)
_PULSE_X = np.arange(-0.4, 1.6, _STEP)
_PULSE_TABLE = _pulse(_PULSE_X)


def _ecg_beat(tau: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Lead II-like PQRST (mV) at ``tau`` seconds after a beat's onset (R at 0.2 s, about
    1.1 mV). P and QRS have fixed timing; the T wave's delay and width scale with ``s`` =
    sqrt(RR) clipped to 0.55-1.3 (QT shortens at higher rates)."""
    return (np.interp(tau, _PQRS_X, _PQRS_TABLE, left=0.0, right=0.0)
            + np.interp((tau - 0.20) / s, _T_X, _T_TABLE, left=0.0, right=0.0))


def _pleth_beat(tau: np.ndarray, s: np.ndarray) -> np.ndarray:
    """One pulse (peak 1) arriving 0.4 s after the beat's onset (0.2 s after R: pulse
    transit); its timing scales with ``s`` = sqrt(RR)."""
    return np.interp((tau - 0.40) / s, _PULSE_X, _PULSE_TABLE, left=0.0, right=0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _capno_breath(tau: np.ndarray, length: np.ndarray, et: np.ndarray) -> np.ndarray:
    """Capnogram of one breath (mmHg): inspiration (0) first, expiratory upstroke at 38 %
    of the breath, plateau rising from 92 % to 100 % of EtCO2, inspiratory downstroke at
    95 %; zero outside the breath."""
    up = _sigmoid((tau - 0.38 * length) / (0.012 * length + 0.02))
    down = 1.0 - _sigmoid((tau - 0.95 * length) / (0.006 * length + 0.01))
    slope = 0.92 + 0.08 * np.clip((tau - 0.45 * length) / (0.47 * length), 0.0, 1.0)
    return et * up * down * slope


def _last_at_or_before(on: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the last onset <= each time (-1 before the first); ``t`` ascending. The
    search runs on the slice of onsets the times span, not on the whole session."""
    lo = max(0, int(np.searchsorted(on, t[0], side="right")) - 1)
    hi = int(np.searchsorted(on, t[-1], side="right"))
    return lo + np.searchsorted(on[lo:hi], t, side="right") - 1


def _soft_limit(y: np.ndarray, knee: float = 0.8, top: float = 0.98) -> np.ndarray:
    """Identity inside ±knee, then a smooth approach to ±top (a sensor's range)."""
    a = np.abs(y)
    over = a > knee
    if not np.any(over):
        return y
    out = y.copy()
    room = top - knee
    out[over] = np.sign(y[over]) * (knee + room * np.tanh((a[over] - knee) / room))
    return out


# --------------------------------------------------------------------------- model


@dataclass
class _Override:
    t0: float  # seconds from start
    t1: float
    a: float | None  # None = the model's own value
    b: float | None


class PatientModel:
    """A simulated patient (``VitalsFeed``); see the module docstring.

    ``pump``: a ``PumpModel`` (its exact ``cumulative_mg`` is used) or any ``PumpFeed``
    (its states go through ``DeliveredDoseTracker``), or None for no drug. ``start_us``:
    host time the simulation starts; ``t0_us``: infusion start (session time zero,
    anchors the NIBP schedule; default ``start_us``).
    """

    def __init__(
        self,
        profile: PatientProfile | None = None,
        *,
        pump: Any = None,
        seed: int = 0,
        start_us: int,
        t0_us: int | None = None,
        nibp_interval_min: float = 5.0,
        nibp_late_interval_min: float = 15.0,
        nibp_late_after_min: float = 60.0,
    ) -> None:
        self.profile = profile or PatientProfile()
        for name, v in (("NIBP interval", nibp_interval_min),
                        ("late NIBP interval", nibp_late_interval_min)):
            if not (math.isfinite(v) and 1.0 <= v <= 60.0):
                raise ValueError(f"{name} {v!r} min is outside 1 to 60 min "
                                 "(clinical.md §4.1: user-configurable 2 to 60 min)")
        if not (math.isfinite(nibp_late_after_min) and nibp_late_after_min >= 0):
            raise ValueError(f"late NIBP phase start {nibp_late_after_min!r} min must be >= 0")
        self.seed = int(seed)
        self.start_us = int(start_us)
        self.t0_us = self.start_us if t0_us is None else int(t0_us)
        self.pump = pump
        self._lock = threading.RLock()
        p = self.profile
        self._base = [float(x) for x in (p.hr, p.sbp, p.dbp, p.spo2, p.rr, p.etco2, p.temp_c,
                                         p.pi)]
        self._drift_sd = [DRIFT_SD[k] for k in
                          ("hr", "sbp", "dbp", "spo2", "rr", "etco2", "temp", "pi")]
        self._slow = _Noise(seed, "drift", 600.0, 8)
        self._fast = _Noise(seed, "fast", 5.0, 10)
        self._art = _Noise(seed, "artefact-numerics", 1.5, 6)
        self._wave_fine = _Noise(seed, "wave-fine", 0.004, 2)
        self._wave_art = _Noise(seed, "wave-artefact", 0.2, 3)
        self._nibp_cfg = (nibp_interval_min * 60 * _US, nibp_late_interval_min * 60 * _US,
                          nibp_late_after_min * 60 * _US)
        # PK and response
        model = get_model(p.pk_model)
        self.response = ResponseModel(model, effect_site=p.effect_site,
                                      ec50_ng_ml=p.ec50_ng_ml, hill=p.hill)
        self.estimator = PlasmaEstimator(model, p.weight_kg, start_us=self.start_us,
                                         effect_site=self.response.effect_site)
        self._tracker = None if pump is None or hasattr(pump, "cumulative_mg") else (
            DeliveredDoseTracker())
        self._mg_seen = 0.0
        if pump is not None and hasattr(pump, "cumulative_mg"):
            self._mg_seen = float(pump.cumulative_mg(self.start_us))
        elif self._tracker is not None:
            self._tracker.update(pump.pump(self.start_us))
        # grid state, one row per grid step: (Cp, Ce, response fraction)
        self._grid_us = self.start_us
        self._hist = _Grow(3)
        self._hist.append(0.0, 0.0, 0.0)
        self._archetypes: list[Archetype] = [_archetype(p.archetype)]
        self._archetype_t: list[float] = [-math.inf]
        self._overrides: dict[Channel, list[_Override]] = {ch: [] for ch in SETTABLE}
        self._any_override = False
        self._version = 0  # bumped by every applied event (invalidates the value cache)
        self._cache_key: tuple[float, bool, int, int] | None = None
        self._cache: dict[Channel, float] = {}
        self._off: dict[str, list[list[float]]] = {s: [] for s in SENSORS}
        self._any_off = False
        self._artefacts: list[tuple[float, float, frozenset[str], float]] = []
        self._events: list[tuple[int, int, str, dict[str, Any]]] = []
        self._seq = 0
        # beats and breaths: onset (s from start), length (s), ...; Et for breaths
        self._beats = _Grow(4)  # onset, length, pleth amplitude, sqrt(length) clipped
        self._breaths = _Grow(3)
        self._recent_breaths: list[tuple[float, float]] = []  # (onset, length), the last few
        self._next_beat: float | None = None
        self._next_breath: float | None = None
        self._seed_schedules()
        # NIBP
        self.nibp_measured_us: int | None = None
        self._nibp: NibpMeasurement | None = None
        self.nibp_history: list[NibpMeasurement] = []
        self._nibp_next_us = self.start_us
        self._nibp_extra: list[int] = []  # retries after a failed measurement
        self._streams: dict[tuple[Channel, float], int] = {}

    # ------------------------------------------------------------------ VitalsFeed

    def numerics(self, now_us: int) -> dict[Channel, float | None]:
        """Current numerics (rounded as a monitor displays them); None = not available.
        NIBP values are those of the last measurement (see ``nibp_measured_us``)."""
        with self._lock:
            now_us = int(now_us)
            self._advance(now_us)
            t = (now_us - self.start_us) / _US
            v = self._values(t, noisy=True)
            off = {s: self._is_off(s, t) for s in SENSORS} if self._any_off else {}
            art = {s: self._artefact_level(s, t) for s in SENSORS} if self._artefacts else {}
            out: dict[Channel, float | None] = {}
            for ch, sensor, digits in _CONTINUOUS:
                if off.get(sensor):
                    out[ch] = None
                    continue
                val = v[ch]
                a = art.get(sensor, 0.0)
                if a > 0:
                    val = self._erratic(ch, val, t, a)
                out[ch] = float(round(val, digits)) if digits else float(round(val))
            m = self._nibp
            if m is not None:
                out[Channel.NIBP_SYS] = m.sys
                out[Channel.NIBP_DIA] = m.dia
                out[Channel.NIBP_MEAN] = m.mean
            return out

    def wave(self, channel: Channel, rate_hz: float, n: int, now_us: int) -> np.ndarray:
        """The next ``n`` samples of ``channel`` at ``rate_hz`` (float64; PLETH
        dimensionless, ECG mV, CO2_WAVE mmHg)."""
        if channel not in WAVE_CHANNELS:
            raise ValueError(f"{channel!r} is not a simulated wave; waves: "
                             f"{', '.join(c.value for c in WAVE_CHANNELS)}")
        if not (isinstance(rate_hz, int | float) and math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"wave rate must be a positive number of Hz, got {rate_hz!r}")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"sample count must be a whole number >= 0, got {n!r}")
        with self._lock:
            key = (Channel(channel), float(rate_hz))
            k0 = self._streams.get(key)
            if k0 is None:
                k0 = max(0, round((int(now_us) - self.start_us) * rate_hz / _US) - int(n))
            self._streams[key] = k0 + int(n)
            t = np.arange(k0, k0 + int(n), dtype=np.float64) / float(rate_hz)
            if n == 0:
                return t
            last_us = self.start_us + round(float(t[-1]) * _US)
            self._advance(max(int(now_us), last_us - round(_LOOKAHEAD_S * _US) + _GRID_US))
            return self._wave_at(key[0], t)

    def quality(self, channel: Channel, now_us: int) -> Quality:
        """Why ``channel``'s value at ``now_us`` may not be taken at face value."""
        with self._lock:
            self._advance(int(now_us))
            ch = Channel(channel)
            sensor = _SENSOR_OF.get(ch)
            if sensor is None:
                return Quality.OK
            t = (int(now_us) - self.start_us) / _US
            q = Quality.OK
            if self._is_off(sensor, t):
                q |= Quality.SENSOR_OFF | Quality.INVALID
            if self._artefact_level(sensor, t) > 0:
                q |= Quality.ARTEFACT
            if sensor == "nibp" and self._nibp is not None and self._nibp.failed:
                q |= Quality.ARTEFACT | Quality.INVALID
            return q

    # ------------------------------------------------------------------ controls

    def request_nibp(self, now_us: int) -> None:
        """Start an NIBP measurement now (the monitor's NIBP start key)."""
        with self._lock:
            self._advance(int(now_us))
            self._measure_nibp(max(int(now_us), self._grid_us), requested=True)

    @property
    def nibp_measurement(self) -> NibpMeasurement | None:
        """The last NIBP cycle (successful or failed)."""
        return self._nibp

    def set_value(self, channel: Channel | str, value: float, now_us: int,
                  ramp_min: float = 0.0) -> None:
        """Drive ``channel`` to ``value`` over ``ramp_min`` minutes from now, then hold it
        (noise still added) until ``release``."""
        with self._lock:
            self._advance(int(now_us))
            self._apply("set", {"channel": channel, "value": value, "ramp_min": ramp_min},
                        max(int(now_us), self._grid_us))

    def release(self, channel: Channel | str, now_us: int, ramp_min: float = 0.0) -> None:
        """Hand ``channel`` (or "all") back to the model over ``ramp_min`` minutes."""
        with self._lock:
            self._advance(int(now_us))
            self._apply("release", {"channel": channel, "ramp_min": ramp_min},
                        max(int(now_us), self._grid_us))

    def set_archetype(self, name: str, now_us: int) -> None:
        """Switch the response archetype from now (``ARCHETYPES``)."""
        with self._lock:
            self._advance(int(now_us))
            self._apply("archetype", {"name": name}, max(int(now_us), self._grid_us))

    def artefact(self, sensors: Iterable[str], now_us: int, duration_s: float,
                 intensity: float = 1.0) -> None:
        """A motion artefact burst on ``sensors`` for ``duration_s``."""
        with self._lock:
            self._advance(int(now_us))
            self._apply("artefact", {"sensors": list(sensors), "duration_s": duration_s,
                                     "intensity": intensity}, max(int(now_us), self._grid_us))

    def sensor_off(self, sensor: str, now_us: int, duration_s: float | None = None) -> None:
        """Disconnect ``sensor`` (probe off, lead off, cuff off, CO2 line blocked) from now,
        for ``duration_s`` or until ``sensor_on``."""
        with self._lock:
            self._advance(int(now_us))
            self._apply("sensor_off", {"sensor": sensor, "duration_s": duration_s},
                        max(int(now_us), self._grid_us))

    def sensor_on(self, sensor: str, now_us: int) -> None:
        """Reconnect ``sensor`` from now."""
        with self._lock:
            self._advance(int(now_us))
            self._apply("sensor_on", {"sensor": sensor}, max(int(now_us), self._grid_us))

    def schedule(self, t_us: int, kind: str, **params: Any) -> None:
        """Script an event at ``t_us`` (applied exactly then). Kinds and parameters:

        - ``set``: channel (one of SETTABLE), value, ramp_min (default 0)
        - ``release``: channel (or "all"), ramp_min
        - ``archetype``: name (mild, typical, hypertensive)
        - ``nibp``: an NIBP measurement (the NIBP start key)
        - ``artefact``: sensors (list of SENSORS keys), duration_s, intensity (default 1)
        - ``sensor_off``: sensor, duration_s (optional: until ``sensor_on``)
        - ``sensor_on``: sensor
        """
        validate_event(kind, params)
        with self._lock:
            if int(t_us) < self._grid_us:
                raise ValueError(f"cannot script a patient event in the past ({t_us} µs)")
            self._seq += 1
            bisect.insort(self._events, (int(t_us), self._seq, kind, dict(params)))

    # ------------------------------------------------------------------ ground truth

    def truth(self, now_us: int) -> dict[str, Any]:
        """Noise-free physiology at ``now_us`` (for ground-truth logging and tests):
        concentrations, response fraction, archetype, and each vital before measurement
        noise, rounding and sensor effects."""
        with self._lock:
            now_us = int(now_us)
            self._advance(now_us)
            t = (now_us - self.start_us) / _US
            cp, ce, r = self._state(t)
            v = self._values(t, noisy=False)
            arch = self._archetype_at(t)
            sbp, dbp = v[Channel.NIBP_SYS], v[Channel.NIBP_DIA]
            return {
                "t_us": now_us,
                "session_min": (now_us - self.t0_us) / 60e6,
                "cp_ng_ml": cp,
                "ce_ng_ml": ce if self.response.effect_site else None,
                "pk_model": self.response.model.key,
                "response": r,
                "archetype": arch.name,
                "hr": float(v[Channel.HR]),
                "sbp": float(sbp),
                "dbp": float(dbp),
                "map": float(dbp + (sbp - dbp) / 3.0),
                "spo2": float(v[Channel.SPO2]),
                "rr": float(v[Channel.RR]),
                "etco2": float(v[Channel.ETCO2]),
                "temp_c": float(v[Channel.TEMP]),
                "pi": float(v[Channel.PERF_INDEX]),
                "delivered_mg": self.estimator.total_mg,
                "sensors_off": sorted(s for s in SENSORS if self._is_off(s, t)),
                "artefact": sorted(s for s in SENSORS if self._artefact_level(s, t) > 0),
                "overridden": sorted(ch.value for ch, segs in self._overrides.items()
                                     if self._override_at(segs, t) is not None),
                "nibp_measured_us": self.nibp_measured_us,
            }

    # ------------------------------------------------------------------ internals: time

    def _advance(self, now_us: int) -> None:
        """Apply events, NIBP cycles and 2-s grid steps in time order up to ``now_us``."""
        while True:
            t_grid = self._grid_us + _GRID_US
            t_ev = self._events[0][0] if self._events else None
            t_nibp = self._next_nibp()
            cands = [t for t in (t_ev, t_nibp) if t is not None and t <= min(now_us, t_grid)]
            if cands:
                t = min(cands)
                if t == t_ev:
                    _, _, kind, params = self._events.pop(0)
                    self._apply(kind, params, t)
                else:
                    self._do_nibp(t)
                continue
            if t_grid > now_us:
                break
            self._step(t_grid)

    def _step(self, t1_us: int) -> None:
        """One grid step: the drug delivered over the step (exact from the pump), the PK
        estimate, the response, and the beats and breaths due up to 3 s ahead. A 2-s step
        is far finer than anything the response does (minutes) and keeps a 2-h run cheap."""
        mg = 0.0
        pump = self.pump
        if pump is not None:
            if self._tracker is None:
                total = float(pump.cumulative_mg(t1_us))
                mg = max(0.0, total - self._mg_seen)
                self._mg_seen = max(self._mg_seen, total)
            else:
                rep = self._tracker.update(pump.pump(t1_us))
                mg = max(0.0, rep.interval_mg or 0.0)
        est = self.estimator.advance(t1_us, mg)
        c = est.ce_ng_ml if self.response.effect_site and est.ce_ng_ml is not None else (
            est.cp_ng_ml)
        r = self.response.fraction(max(0.0, c))
        self._hist.append(est.cp_ng_ml, est.ce_ng_ml or 0.0, r)
        self._grid_us = t1_us
        self._schedule_beats((t1_us - self.start_us) / _US)

    def _state(self, t_s: float) -> tuple[float, float, float]:
        i = min(max(0, math.floor(t_s * _US / _GRID_US)), self._hist.n - 1)
        cp, ce, r = self._hist.row(i)
        return cp, ce, r

    def _seed_schedules(self) -> None:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, _key("schedules")])
        length = 60.0 / self.profile.hr
        onset = -float(rng.uniform(0.0, length)) - 3 * length
        amp = self._pleth_amp(self.profile.pi)
        for _ in range(4):
            self._beats.append(onset, length, amp, min(1.3, max(0.55, math.sqrt(length))))
            onset += length
        self._next_beat = onset
        blen = 60.0 / self.profile.rr
        bon = -float(rng.uniform(0.0, blen)) - blen
        for _ in range(2):
            self._add_breath(bon, blen, self.profile.etco2)
            bon += blen
        self._next_breath = bon
        self._schedule_beats(0.0)

    def _schedule_beats(self, t_s: float) -> None:
        horizon = t_s + _LOOKAHEAD_S
        v = self._values(t_s, noisy=True)
        hr = v[Channel.HR]
        amp = self._pleth_amp(v[Channel.PERF_INDEX])
        hrv = self._fast.at(t_s)[_HRV]  # smooth noise, 5-s grid: varies beat to beat
        if self._next_beat is None and hr >= 15.0:
            self._next_beat = t_s
        while self._next_beat is not None and self._next_beat <= horizon:
            if hr < 15.0:  # asystole / no beats while the rate is below 15
                self._next_beat = None
                break
            onset = self._next_beat
            # beat-to-beat variability: respiratory sinus arrhythmia (±2 %) and 1.5 % noise
            psi = self._breath_phase(onset)
            length = 60.0 / hr * (1.0 + 0.02 * math.sin(2 * math.pi * psi) + 0.015 * hrv)
            self._beats.append(onset, length, amp, min(1.3, max(0.55, math.sqrt(length))))
            self._next_beat = onset + length
        rr = v[Channel.RR]
        if self._next_breath is None and rr >= 2.0:
            self._next_breath = t_s
        while self._next_breath is not None and self._next_breath <= horizon:
            if rr < 2.0:  # apnoea: no new breath until the rate comes back
                self._next_breath = None
                break
            onset = self._next_breath
            length = 60.0 / rr
            self._add_breath(onset, length, v[Channel.ETCO2])
            self._next_breath = onset + length

    def _add_breath(self, onset: float, length: float, et: float) -> None:
        self._breaths.append(onset, length, et)
        self._recent_breaths.append((onset, length))
        del self._recent_breaths[:-8]

    def _breath_phase(self, t_s: float) -> float:
        """Phase (0-1) of the breath in progress at ``t_s`` (a time near the schedule's
        end: a beat being scheduled)."""
        for onset, length in reversed(self._recent_breaths):
            if onset <= t_s:
                return min(1.0, (t_s - onset) / length)
        return 0.0

    def _pleth_amp(self, pi: float) -> float:
        """Pleth amplitude with the perfusion index (relative to the baseline PI)."""
        return 0.55 * max(0.05, min(2.0, pi / self.profile.pi))

    # ------------------------------------------------------------------ internals: values

    def _archetype_at(self, t_s: float) -> Archetype:
        i = bisect.bisect_right(self._archetype_t, t_s) - 1
        return self._archetypes[max(i, 0)]

    def _values(self, t_s: float, *, noisy: bool) -> dict[Channel, float]:
        """Physiology at ``t_s`` (seconds from start): baseline + drift + response, then
        scenario overrides, then (if ``noisy``) the short-term noise. The last result is
        kept: a grid step and the numerics that follow ask for the same time."""
        key = (t_s, noisy, self._hist.n, self._version)
        if key == self._cache_key:
            return dict(self._cache)
        out = self._compute_values(t_s, noisy)
        self._cache_key, self._cache = key, out
        return dict(out)

    def _compute_values(self, t_s: float, noisy: bool) -> dict[Channel, float]:
        r = self._state(t_s)[2]
        arch = self._archetype_at(t_s)
        d0, d1, d2, d3, d4, d5, d6, d7 = self._slow.at(t_s)
        sd = self._drift_sd
        b = self._base
        # DBP drift shares part of the SBP drift (pressures move together)
        out = {
            Channel.HR: b[_HR] + d0 * sd[_HR] + r * arch.d_hr,
            Channel.NIBP_SYS: b[_SBP] + d1 * sd[_SBP] + r * arch.d_sbp,
            Channel.NIBP_DIA: b[_DBP] + (0.6 * d2 * sd[_DBP] + 0.5 * d1 * sd[_SBP])
            + r * arch.d_dbp,
            Channel.SPO2: b[_SPO2] + d3 * sd[_SPO2] + r * arch.d_spo2,
            Channel.RR: b[_RR] + d4 * sd[_RR] + r * arch.d_rr,
            Channel.ETCO2: b[_ETCO2] + d5 * sd[_ETCO2] + r * arch.d_etco2,
            Channel.TEMP: b[_TEMP] + d6 * sd[_TEMP],
            Channel.PERF_INDEX: b[_PI] * (1.0 + d7 * sd[_PI]) * (1.0 + r * arch.d_pi_rel),
        }
        if self._any_override:
            for ch, segs in self._overrides.items():
                seg = self._override_at(segs, t_s) if segs else None
                if seg is not None:
                    val = out[ch]
                    f = 1.0 if seg.t1 <= seg.t0 else min(1.0, max(
                        0.0, (t_s - seg.t0) / (seg.t1 - seg.t0)))
                    a = val if seg.a is None else seg.a
                    bb = val if seg.b is None else seg.b
                    out[ch] = a + f * (bb - a)
        hr = out[Channel.HR]
        if noisy:
            n = self._fast.at(t_s)
            if hr > 0:
                hr += NOISE_SD["hr"] * n[_HR]
            out[Channel.PULSE] = max(0.0, hr + NOISE_SD["pulse"] * n[_PULSE]) if hr > 0 else 0.0
            out[Channel.SPO2] += NOISE_SD["spo2"] * n[_SPO2]
            if out[Channel.RR] > 0:
                out[Channel.RR] += NOISE_SD["rr"] * n[_RR]
            if out[Channel.ETCO2] > 0:
                out[Channel.ETCO2] += NOISE_SD["etco2"] * n[_ETCO2]
            out[Channel.TEMP] += NOISE_SD["temp"] * n[_TEMP]
            out[Channel.PERF_INDEX] *= 1.0 + NOISE_SD["pi"] * n[_PI]
        else:
            out[Channel.PULSE] = max(0.0, hr)
        out[Channel.HR] = max(0.0, hr)
        out[Channel.RR] = max(0.0, out[Channel.RR])
        out[Channel.ETCO2] = max(0.0, out[Channel.ETCO2])
        out[Channel.SPO2] = min(100.0, out[Channel.SPO2])  # a saturation cannot exceed 100 %
        out[Channel.PERF_INDEX] = max(0.02, out[Channel.PERF_INDEX])
        out[Channel.FICO2] = 0.0
        return out

    @staticmethod
    def _override_at(segs: list[_Override], t_s: float) -> _Override | None:
        i = bisect.bisect_right([s.t0 for s in segs], t_s) - 1
        if i < 0:
            return None
        seg = segs[i]
        if seg.b is None and t_s >= seg.t1:  # released and the ramp is over
            return None
        return seg

    def _erratic(self, ch: Channel, val: float, t_s: float, level: float) -> float:
        """A numeric during motion artefact: readings jump around, SpO2 reads low."""
        n = self._art.at(t_s)
        if ch is Channel.SPO2:
            return min(100.0, val - level * (2.0 + 4.0 * abs(n[0])))
        if ch in (Channel.HR, Channel.PULSE):
            return max(0.0, val + level * 15.0 * n[1])
        if ch is Channel.PERF_INDEX:
            return max(0.02, val * (1.0 + level * 0.5 * n[2]))
        if ch is Channel.ETCO2:
            return max(0.0, val * (1.0 - level * 0.5 * abs(n[3])))
        if ch is Channel.RR:
            return max(0.0, val + level * 6.0 * n[4])
        return val

    def _is_off(self, sensor: str, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in self._off[sensor])

    def _artefact_level(self, sensor: str, t_s: float) -> float:
        level = 0.0
        for a, b, sensors, k in self._artefacts:
            if sensor in sensors and a <= t_s < b:
                level = max(level, k)
        return level

    # ------------------------------------------------------------------ internals: waves

    def _wave_at(self, ch: Channel, t: np.ndarray) -> np.ndarray:
        sensor = _SENSOR_OF[ch]
        t_lo, t_hi = float(t[0]), float(t[-1])
        if ch is Channel.CO2_WAVE:
            y = self._sum_over(self._breaths, t, 2, "co2")
        else:
            # respiratory modulation: ECG baseline wander, pleth baseline
            on = self._breaths.col(0)
            i = np.maximum(_last_at_or_before(on, t), 0)
            psi = np.clip((t - on[i]) / self._breaths.col(1)[i], 0.0, 1.0)
            resp = np.sin(2 * np.pi * psi)
            if ch is Channel.ECG:
                y = (self._sum_over(self._beats, t, 2, "ecg") + 0.03 * resp
                     + 0.012 * self._wave_fine.series(t, 0))
            else:
                y = self._sum_over(self._beats, t, 3, "pleth") - 0.22 + 0.035 * resp
        # artefact bursts (smooth 0.3-s edges) and sensors off, where they overlap
        env = None
        for a, b, sensors, k in self._artefacts:
            if sensor in sensors and a <= t_hi and b >= t_lo:
                e = k * np.clip(np.minimum(t - a, b - t) / 0.3, 0.0, 1.0)
                env = e if env is None else np.maximum(env, e)
        if env is not None:
            if ch is Channel.ECG:
                y = y + env * (0.6 * self._wave_art.series(t, 0)
                               + 0.15 * self._wave_fine.series(t, 0))
            elif ch is Channel.PLETH:
                y = y + env * (0.55 * self._wave_art.series(t, 1)
                               + 0.08 * self._wave_fine.series(t, 1))
            else:  # sampling loss: the CO2 trace collapses
                y = y * (1.0 - env)
        for a, b in self._off[sensor]:
            if a <= t_hi and b > t_lo:
                y = np.where((t >= a) & (t < b), 0.0, y)
        if ch is Channel.PLETH:
            y = _soft_limit(y)
        return y

    @staticmethod
    def _sum_over(sched: _Grow, t: np.ndarray, depth: int, kind: str) -> np.ndarray:
        """Sum of the shapes of the beat/breath in progress and the ``depth - 1`` before
        it (tails overlap into the next one, so the sum is continuous)."""
        idx = _last_at_or_before(sched.col(0), t)
        on = sched.col(0)
        ii = idx[None, :] - np.arange(depth)[:, None]
        ok = ii >= 0
        ii = np.maximum(ii, 0)
        tau = t[None, :] - on[ii]
        if kind == "co2":
            part = _capno_breath(tau, sched.col(1)[ii], sched.col(2)[ii])
        elif kind == "ecg":
            part = _ecg_beat(tau, sched.col(3)[ii])
        else:
            part = _pleth_beat(tau, sched.col(3)[ii]) * sched.col(2)[ii]
        if not ok.all():
            part = np.where(ok, part, 0.0)
        return part.sum(axis=0)

    # ------------------------------------------------------------------ internals: NIBP

    def _next_nibp(self) -> int | None:
        extra = self._nibp_extra[0] if self._nibp_extra else None
        return self._nibp_next_us if extra is None else min(extra, self._nibp_next_us)

    def _cycle_after(self, t_us: int) -> int:
        """The scheduled NIBP cycle after ``t_us``: every interval from infusion start
        (and before it, in the baseline), then every late interval after the late phase
        begins (clinical.md §4.1)."""
        every, late_every, late_after = self._nibp_cfg
        late0 = self.t0_us + late_after
        if t_us < late0:
            k = math.floor((t_us - self.t0_us) / every) + 1
            nxt = self.t0_us + round(k * every)
            if nxt <= late0:
                return nxt
            return round(late0)
        j = math.floor((t_us - late0) / late_every) + 1
        return round(late0 + j * late_every)

    def _do_nibp(self, t_us: int) -> None:
        if self._nibp_extra and self._nibp_extra[0] == t_us:  # a retry after a failure
            self._nibp_extra.pop(0)
            if self._nibp_next_us == t_us:  # a scheduled cycle at the same time: one cuff
                self._nibp_next_us = self._cycle_after(t_us)
            self._measure_nibp(t_us, retry=True)
            return
        self._nibp_next_us = self._cycle_after(t_us)
        self._measure_nibp(t_us)

    def _measure_nibp(self, t_us: int, *, requested: bool = False, retry: bool = False) -> None:
        t_s = (t_us - self.start_us) / _US
        reason = ""
        if self._is_off("nibp", t_s):
            reason = "cuff not connected"
        elif self._artefact_level("nibp", t_s) > 0:
            reason = "motion: measurement failed"
        if reason:
            m = NibpMeasurement(t_us, None, None, None, True, reason, requested)
            if not retry:
                bisect.insort(self._nibp_extra, t_us + _NIBP_RETRY_US)
        else:
            v = self._values(t_s, noisy=False)
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, _key("nibp"),
                                         t_us & 0xFFFFFFFF, (t_us >> 32) & 0xFFFFFFFF])
            e = rng.standard_normal(2)
            sys_ = float(round(v[Channel.NIBP_SYS] + NOISE_SD["nibp_sys"] * e[0]))
            dia = float(round(v[Channel.NIBP_DIA] + NOISE_SD["nibp_dia"] * e[1]))
            dia = min(dia, sys_ - 5.0)
            mean = float(round(dia + (sys_ - dia) / 3.0))
            m = NibpMeasurement(t_us, sys_, dia, mean, False, "", requested)
            self.nibp_measured_us = t_us
        self._nibp = m
        self.nibp_history.append(m)

    # ------------------------------------------------------------------ internals: events

    def _apply(self, kind: str, p: Mapping[str, Any], t_us: int) -> None:
        validate_event(kind, p)
        self._version += 1
        t = (t_us - self.start_us) / _US
        if kind == "set":
            ch = _settable(p["channel"])
            now = self._values(t, noisy=False)[ch]
            ramp = float(p.get("ramp_min", 0.0)) * 60.0
            self._overrides[ch].append(_Override(t, t + ramp, now, float(p["value"])))
            self._any_override = True
        elif kind == "release":
            chans = SETTABLE if p["channel"] == "all" else (_settable(p["channel"]),)
            ramp = float(p.get("ramp_min", 0.0)) * 60.0
            for ch in chans:
                if self._override_at(self._overrides[ch], t) is not None:
                    now = self._values(t, noisy=False)[ch]
                    self._overrides[ch].append(_Override(t, t + ramp, now, None))
        elif kind == "archetype":
            i = bisect.bisect_right(self._archetype_t, t)
            self._archetype_t.insert(i, t)
            self._archetypes.insert(i, _archetype(p["name"]))
        elif kind == "nibp":
            self._measure_nibp(t_us, requested=True)
        elif kind == "artefact":
            self._artefacts.append((t, t + float(p["duration_s"]), frozenset(p["sensors"]),
                                    float(p.get("intensity", 1.0))))
        elif kind == "sensor_off":
            if not any(a <= t < b for a, b in self._off[p["sensor"]]):
                dur = p.get("duration_s")
                self._off[p["sensor"]].append([t, math.inf if dur is None else t + float(dur)])
                self._any_off = True
        elif kind == "sensor_on":
            for span in self._off[p["sensor"]]:
                if span[0] <= t < span[1]:
                    span[1] = t


def validate_event(kind: str, p: Mapping[str, Any]) -> None:
    """Check a scripted patient event (see ``PatientModel.schedule``); raises ValueError
    with the reason. Used by the scenario loader so a bad file fails when loaded."""
    need: dict[str, tuple[str, ...]] = {
        "set": ("channel", "value"), "release": ("channel",), "archetype": ("name",),
        "nibp": (), "artefact": ("sensors", "duration_s"), "sensor_off": ("sensor",),
        "sensor_on": ("sensor",)}
    allowed: dict[str, tuple[str, ...]] = {
        "set": ("ramp_min",), "release": ("ramp_min",), "artefact": ("intensity",),
        "sensor_off": ("duration_s",)}
    if kind not in need:
        raise ValueError(f"unknown patient event {kind!r}; known: {', '.join(need)}")
    missing = [k for k in need[kind] if k not in p]
    extra = sorted(set(p) - set(need[kind]) - set(allowed.get(kind, ())))
    if missing or extra:
        raise ValueError(f"patient event {kind!r}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + ([f"unknown {', '.join(extra)}"] if extra else [])))
    if kind == "set":
        ch = _settable(p["channel"])
        lo, hi = _SET_BOUNDS[ch]
        v = p["value"]
        if not (isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi):
            raise ValueError(f"set {ch.value} to {v!r}: must be a number from {lo:g} to "
                             f"{hi:g} {CHANNELS[ch].display_unit}")
    if kind == "release" and p["channel"] != "all":
        _settable(p["channel"])
    if kind in ("set", "release"):
        _nonneg("ramp_min", p.get("ramp_min", 0.0))
    if kind == "archetype":
        _archetype(p["name"])
    if kind == "artefact":
        sensors = p["sensors"]
        if isinstance(sensors, str) or not sensors:
            raise ValueError("artefact sensors must be a non-empty list, e.g. "
                             "[\"spo2\", \"ecg\"]")
        for s in sensors:
            _sensor(s)
        if _nonneg("duration_s", p["duration_s"]) <= 0:
            raise ValueError("artefact duration_s must be > 0")
        k = p.get("intensity", 1.0)
        if not (isinstance(k, int | float) and 0 < k <= 3):
            raise ValueError(f"artefact intensity {k!r} must be > 0 and <= 3")
    if kind in ("sensor_off", "sensor_on"):
        _sensor(p["sensor"])
    if kind == "sensor_off" and p.get("duration_s") is not None and _nonneg(
            "duration_s", p["duration_s"]) <= 0:
        raise ValueError("sensor_off duration_s must be > 0 (or omitted)")


def _settable(name: Channel | str) -> Channel:
    try:
        ch = Channel(name)
    except ValueError:
        ch = None
    if ch not in SETTABLE:
        raise ValueError(f"channel {name!r} cannot be set; settable: "
                         f"{', '.join(c.value for c in SETTABLE)} (NIBP mean is derived)")
    return ch  # type: ignore[return-value]


def _sensor(name: str) -> str:
    if name not in SENSORS:
        raise ValueError(f"unknown sensor {name!r}; sensors: {', '.join(SENSORS)}")
    return name


def _nonneg(name: str, v: object) -> float:
    if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0):
        raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    return float(v)

