"""Simulator scenarios: clinician-readable TOML files and the ``Simulation`` they drive.

A scenario file (``resources/scenarios/NAME.toml``, loaded by name through
``importlib.resources``) holds:

- ``[scenario]``: ``name``, ``description``, ``duration_min`` (the whole run, baseline
  included) and ``baseline_min`` (how long before infusion start the run begins);
- ``[patient]``: the ``PatientProfile`` (weight, baseline vitals, response archetype);
- ``[programme]``: the dose programme, either weight-based (``dose_mg_per_kg``,
  ``duration_min``, and ``concentration_mg_ml`` or ``bag_ml``; the weight is the
  patient's, checked against the calculator's bounds, clinical.md §1.4) or direct
  (``rate_ml_h``, ``vtbi_ml``, ``concentration_mg_ml``);
- ``[pump]`` (``near_end_min``, ``end_alarm``) and ``[monitor]`` (NIBP cycle,
  clinical.md §4.1) options;
- ``[playback]`` (optional): waves from a recording instead of the model (``record``,
  relative to the data directory; ``numerics_record``; ``loop``; ``offset_s``);
- ``[[event]]`` entries: ``at_min`` (minutes from infusion start; negative = baseline),
  ``kind``, the kind's parameters and an optional ``note``. Kinds:

  ====================  ===========================================================
  patient               ``set`` (channel, value, ramp_min), ``release`` (channel or
                        "all", ramp_min), ``archetype`` (name), ``nibp``,
                        ``artefact`` (sensors, duration_s, intensity), ``sensor_off``
                        (sensor, duration_s), ``sensor_on`` (sensor)
  pump                  ``pump`` (action = start, pause, resume, stop, bolus,
                        set_rate, set_vtbi, program, and that action's values),
                        ``alarm`` (code, action = "raise" or "clear")
  link faults           ``link_down`` (device = "monitor" or "pump", duration_s),
                        ``garbage`` (device, bytes for one burst, or rate_bytes_s
                        with duration_s), ``bit_errors`` (device, probability,
                        duration_s)
  ====================  ===========================================================

Link faults are not applied by the models: the peer server applies them to the bytes.
``Simulation.events(now_us)`` hands over those due since the previous call and
``Simulation.link_faults`` lists them all.
"""

from __future__ import annotations

import math
import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kapmonitor.dosing import DoseProgramme, check_programme

from .patient import PatientModel, PatientProfile, validate_event
from .pump_model import ALARM_CATALOGUE, PumpModel

__all__ = [
    "DATA_ENV",
    "LINK_DEVICES",
    "LINK_FAULT_KINDS",
    "LinkFault",
    "PlaybackSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioEvent",
    "Simulation",
    "load_scenario",
    "parse_scenario",
    "scenario_names",
]

#: Environment variable naming the directory of recordings (shared/data), which is not
#: part of the repository (shared/data/README.md).
DATA_ENV = "KAPMONITOR_DATA"

PATIENT_KINDS = ("set", "release", "archetype", "nibp", "artefact", "sensor_off", "sensor_on")
PUMP_KINDS = ("pump", "alarm")
LINK_FAULT_KINDS = ("link_down", "garbage", "bit_errors")
LINK_DEVICES = ("monitor", "pump")
_PUMP_ACTIONS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # action: (required values, optional values)
    "start": ((), ()), "resume": ((), ()), "pause": ((), ()), "stop": ((), ()),
    "bolus": (("volume_ml",), ("rate_ml_h",)), "set_rate": (("rate_ml_h",), ()),
    "set_vtbi": (("vtbi_ml",), ()),
    "program": (("rate_ml_h", "vtbi_ml"), ("concentration_mg_ml",)),
}
_US_PER_MIN = 60_000_000


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    at_min: float
    kind: str
    params: Mapping[str, Any]
    note: str = ""


@dataclass(frozen=True, slots=True)
class LinkFault:
    """A fault the peer server applies to a device's link. ``t_us`` host time; the
    other fields as in the scenario (None when the kind has no such value)."""

    t_us: int
    at_min: float
    kind: str
    device: str
    duration_s: float | None = None
    bytes: int | None = None
    rate_bytes_s: float | None = None
    probability: float | None = None
    note: str = ""

    @property
    def end_us(self) -> int:
        """When the fault ends (``t_us`` for a one-off burst)."""
        return self.t_us + round((self.duration_s or 0.0) * 1e6)


@dataclass(frozen=True, slots=True)
class PlaybackSpec:
    record: str
    numerics_record: str | None = None
    loop: bool = True
    offset_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration_min: float
    baseline_min: float
    profile: PatientProfile
    programme: DoseProgramme | None = None
    direct: tuple[float, float, float] | None = None  # rate mL/h, VTBI mL, mg/mL
    pump_options: Mapping[str, Any] = field(default_factory=dict)
    monitor_options: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[ScenarioEvent, ...] = ()
    playback: PlaybackSpec | None = None
    source: str = ""


# --------------------------------------------------------------------------- loading


def _scenario_dir() -> Any:
    return resources.files("kapmonitor.resources") / "scenarios"


def scenario_names() -> list[str]:
    """Names of the scenarios shipped in ``kapmonitor.resources/scenarios``."""
    return sorted(p.name[:-5] for p in _scenario_dir().iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str | os.PathLike[str]) -> Scenario:
    """A shipped scenario by name ("standard"), or a TOML file by path."""
    text: str
    if isinstance(name_or_path, os.PathLike) or str(name_or_path).endswith(".toml") or (
            os.sep in str(name_or_path)):
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"scenario file {path}: {exc.strerror or exc}") from exc
        return parse_scenario(text, str(path))
    res = _scenario_dir() / f"{name_or_path}.toml"
    if not res.is_file():
        raise ScenarioError(f"no scenario named {name_or_path!r}; known: "
                            f"{', '.join(scenario_names())}")
    return parse_scenario(res.read_text(encoding="utf-8"), f"scenarios/{name_or_path}.toml")


def _number(where: str, key: str, v: object, *, lo: float | None = None,
            hi: float | None = None, positive: bool = False) -> float:
    if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
        raise ScenarioError(f"{where}: {key} must be a number, got {v!r}")
    f = float(v)
    if positive and f <= 0:
        raise ScenarioError(f"{where}: {key} must be > 0, got {f:g}")
    if lo is not None and f < lo:
        raise ScenarioError(f"{where}: {key} {f:g} is below {lo:g}")
    if hi is not None and f > hi:
        raise ScenarioError(f"{where}: {key} {f:g} is above {hi:g}")
    return f


def _table(where: str, data: Mapping[str, Any], key: str, allowed: set[str],
           required: bool = False) -> dict[str, Any]:
    t = data.get(key)
    if t is None:
        if required:
            raise ScenarioError(f"{where}: missing [{key}] table")
        return {}
    if not isinstance(t, dict):
        raise ScenarioError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(t) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown} in [{key}]; "
                            f"known: {sorted(allowed)}")
    return dict(t)


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """Parse and check a scenario; every problem raises ScenarioError naming the file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"scenario", "patient", "programme", "pump", "monitor",
                                  "playback", "event"})
    if unknown:
        raise ScenarioError(f"{source}: unknown table(s) {unknown}")
    meta = _table(source, data, "scenario", {"name", "description", "duration_min",
                                             "baseline_min"}, required=True)
    for k in ("name", "description", "duration_min"):
        if k not in meta:
            raise ScenarioError(f"{source}: [scenario] needs {k}")
    name = str(meta["name"])
    where = f"scenario {name} ({source})"
    duration = _number(where, "duration_min", meta["duration_min"], positive=True, hi=24 * 60)
    baseline = _number(where, "baseline_min", meta.get("baseline_min", 0.0), lo=0.0)
    if baseline >= duration:
        raise ScenarioError(f"{where}: baseline_min {baseline:g} must be shorter than the "
                            f"whole run, duration_min {duration:g}")
    try:
        profile = PatientProfile.from_dict(data.get("patient", {}))
    except (ValueError, TypeError) as exc:
        raise ScenarioError(f"{where}: [patient]: {exc}") from exc

    programme, direct = _programme(where, data, profile)
    pump_opts = _table(where, data, "pump", {"near_end_min", "end_alarm"})
    if "near_end_min" in pump_opts:
        _number(where, "near_end_min", pump_opts["near_end_min"], lo=0.0, hi=120.0)
    if not isinstance(pump_opts.get("end_alarm", True), bool):
        raise ScenarioError(f"{where}: end_alarm must be true or false")
    mon = _table(where, data, "monitor", {"nibp_interval_min", "nibp_late_interval_min",
                                          "nibp_late_after_min"})
    for k, v in mon.items():
        late = k == "nibp_late_after_min"  # the intervals: clinical.md §4.1, 2 to 60 min
        _number(where, k, v, lo=0.0 if late else 1.0, hi=24 * 60.0 if late else 60.0)
    pb = _table(where, data, "playback", {"record", "numerics_record", "loop", "offset_s"})
    playback = None
    if pb:
        if "record" not in pb:
            raise ScenarioError(f"{where}: [playback] needs record")
        playback = PlaybackSpec(str(pb["record"]), pb.get("numerics_record"),
                                bool(pb.get("loop", True)),
                                _number(where, "offset_s", pb.get("offset_s", 0.0), lo=0.0))

    raw_events = data.get("event", [])
    if not isinstance(raw_events, list):
        raise ScenarioError(f"{where}: events are written [[event]]")
    events = []
    for i, e in enumerate(raw_events, 1):
        events.append(_event(f"{where}, event {i}", e, -baseline, duration - baseline))
    events.sort(key=lambda ev: ev.at_min)
    return Scenario(name=name, description=str(meta["description"]), duration_min=duration,
                    baseline_min=baseline, profile=profile, programme=programme,
                    direct=direct, pump_options=pump_opts, monitor_options=mon,
                    events=tuple(events), playback=playback, source=source)


def _programme(where: str, data: Mapping[str, Any], profile: PatientProfile
               ) -> tuple[DoseProgramme | None, tuple[float, float, float] | None]:
    prog = _table(where, data, "programme", {"dose_mg_per_kg", "duration_min",
                                             "concentration_mg_ml", "bag_ml", "weight_basis",
                                             "rate_ml_h", "vtbi_ml"})
    if not prog:
        return None, None
    if "rate_ml_h" in prog or "vtbi_ml" in prog:
        for k in ("rate_ml_h", "vtbi_ml"):
            if k not in prog:
                raise ScenarioError(f"{where}: a direct [programme] needs rate_ml_h and vtbi_ml")
        extra = sorted(set(prog) - {"rate_ml_h", "vtbi_ml", "concentration_mg_ml"})
        if extra:
            raise ScenarioError(f"{where}: a direct [programme] (rate and VTBI) cannot also "
                                f"have {extra}")
        return None, (_number(where, "rate_ml_h", prog["rate_ml_h"], positive=True),
                      _number(where, "vtbi_ml", prog["vtbi_ml"], positive=True),
                      _number(where, "concentration_mg_ml",
                              prog.get("concentration_mg_ml", 1.0), positive=True))
    try:
        programme = DoseProgramme(weight_kg=profile.weight_kg, **prog)
    except TypeError as exc:
        raise ScenarioError(f"{where}: [programme]: {exc}") from exc
    check = check_programme(programme)
    if not check.ok:
        raise ScenarioError(f"{where}: [programme] refused by the dose calculator: "
                            f"{check.reason()}")
    return programme, None


def _event(where: str, e: object, lo_min: float, hi_min: float) -> ScenarioEvent:
    if not isinstance(e, dict):
        raise ScenarioError(f"{where}: must be a table")
    e = dict(e)
    if "at_min" not in e or "kind" not in e:
        raise ScenarioError(f"{where}: needs at_min and kind")
    at = _number(where, "at_min", e.pop("at_min"))
    if not lo_min <= at <= hi_min:
        raise ScenarioError(f"{where}: at_min {at:g} is outside the run ({lo_min:g} to "
                            f"{hi_min:g} min from infusion start)")
    kind = str(e.pop("kind"))
    note = str(e.pop("note", ""))
    where = f"{where} ({kind} at {at:g} min)"
    if kind in PATIENT_KINDS:
        try:
            validate_event(kind, e)
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
    elif kind == "pump":
        action = e.get("action")
        if action not in _PUMP_ACTIONS:
            raise ScenarioError(f"{where}: action {action!r} is not one of "
                                f"{', '.join(_PUMP_ACTIONS)}")
        need, opt = _PUMP_ACTIONS[action]
        values = {k: v for k, v in e.items() if k != "action"}
        missing = [k for k in need if k not in values]
        extra = sorted(set(values) - set(need) - set(opt))
        if missing or extra:
            raise ScenarioError(f"{where}: pump {action} needs {list(need)} (optional "
                                f"{list(opt)}); missing {missing}, unknown {extra}")
        for k, v in values.items():
            _number(where, k, v, positive=True)
    elif kind == "alarm":
        extra = sorted(set(e) - {"code", "action"})
        if extra:
            raise ScenarioError(f"{where}: unknown key(s) {extra}")
        if e.get("code") not in ALARM_CATALOGUE:
            raise ScenarioError(f"{where}: alarm code {e.get('code')!r} is not one of "
                                f"{', '.join(ALARM_CATALOGUE)}")
        if e.get("action", "raise") not in ("raise", "clear"):
            raise ScenarioError(f"{where}: alarm action must be \"raise\" or \"clear\"")
    elif kind in LINK_FAULT_KINDS:
        _link_fault(where, kind, e)
    else:
        raise ScenarioError(f"{where}: unknown event kind {kind!r}; kinds: "
                            f"{', '.join((*PATIENT_KINDS, *PUMP_KINDS, *LINK_FAULT_KINDS))}")
    return ScenarioEvent(at, kind, e, note)


def _link_fault(where: str, kind: str, e: Mapping[str, Any]) -> None:
    allowed = {"link_down": {"device", "duration_s"},
               "garbage": {"device", "bytes", "rate_bytes_s", "duration_s"},
               "bit_errors": {"device", "probability", "duration_s"}}[kind]
    extra = sorted(set(e) - allowed)
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {extra}; {kind} takes {sorted(allowed)}")
    if e.get("device") not in LINK_DEVICES:
        raise ScenarioError(f"{where}: device must be one of {', '.join(LINK_DEVICES)}, "
                            f"got {e.get('device')!r}")
    if kind in ("link_down", "bit_errors") and "duration_s" not in e:
        raise ScenarioError(f"{where}: {kind} needs duration_s")
    if "duration_s" in e:
        _number(where, "duration_s", e["duration_s"], positive=True, hi=24 * 3600)
    if kind == "garbage":
        burst = "bytes" in e
        stream = "rate_bytes_s" in e
        if burst == stream:
            raise ScenarioError(f"{where}: garbage needs either bytes (one burst) or "
                                "rate_bytes_s with duration_s")
        if burst:
            b = e["bytes"]
            if not (isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 1_000_000):
                raise ScenarioError(f"{where}: bytes must be a whole number from 1 to "
                                    f"1000000, got {b!r}")
            if "duration_s" in e:
                raise ScenarioError(f"{where}: a garbage burst (bytes) has no duration_s")
        else:
            _number(where, "rate_bytes_s", e["rate_bytes_s"], positive=True, hi=1e6)
            if "duration_s" not in e:
                raise ScenarioError(f"{where}: garbage at rate_bytes_s needs duration_s")
    if kind == "bit_errors":
        _number(where, "probability", e.get("probability"), positive=True, hi=1.0)


# --------------------------------------------------------------------------- simulation


class Simulation:
    """One simulated patient, one pump and a scenario's timeline, on an explicit clock.

    ``vitals`` is the ``VitalsFeed`` for the monitor peer (the ``PatientModel``, or a
    ``PlaybackVitals`` over it for a playback scenario), ``pump`` the ``PumpModel``
    (``PumpFeed``). Patient and pump events are scripted into the models at their exact
    host times when the simulation is built; link faults are handed out by ``events``.
    """

    def __init__(self, scenario: Scenario, *, seed: int = 0, start_us: int,
                 data_dir: str | os.PathLike[str] | None = None) -> None:
        self.scenario = scenario
        self.seed = int(seed)
        self.start_us = int(start_us)
        self.t0_us = self.start_us + round(scenario.baseline_min * _US_PER_MIN)
        self.end_us = self.start_us + round(scenario.duration_min * _US_PER_MIN)
        opts = dict(scenario.pump_options)
        if scenario.programme is not None:
            self.pump = PumpModel.from_programme(scenario.programme, start_us=self.start_us,
                                                 **opts)
        elif scenario.direct is not None:
            rate, vtbi, conc = scenario.direct
            self.pump = PumpModel(rate_ml_h=rate, vtbi_ml=vtbi, concentration_mg_ml=conc,
                                  start_us=self.start_us, **opts)
        else:
            self.pump = PumpModel(start_us=self.start_us, **opts)
        self.patient = PatientModel(scenario.profile, pump=self.pump, seed=self.seed,
                                    start_us=self.start_us, t0_us=self.t0_us,
                                    **dict(scenario.monitor_options))
        faults = []
        for ev in scenario.events:
            t = self.t0_us + round(ev.at_min * _US_PER_MIN)
            p = dict(ev.params)
            if ev.kind in PATIENT_KINDS:
                self.patient.schedule(t, ev.kind, **p)
            elif ev.kind == "pump":
                self.pump.schedule(t, p.pop("action"), **p)
            elif ev.kind == "alarm":
                action = "alarm" if p.get("action", "raise") == "raise" else "clear_alarm"
                self.pump.schedule(t, action, code=p["code"])
            else:
                faults.append(LinkFault(t, ev.at_min, ev.kind, p["device"],
                                        p.get("duration_s"), p.get("bytes"),
                                        p.get("rate_bytes_s"), p.get("probability"), ev.note))
        self.link_faults: tuple[LinkFault, ...] = tuple(sorted(faults, key=lambda f: f.t_us))
        self._next_fault = 0
        self._lock = threading.Lock()
        self.vitals: Any = self.patient
        if scenario.playback is not None:
            from .playback import PlaybackError, PlaybackVitals  # playback only needs wfdb

            try:
                self.vitals = PlaybackVitals.from_spec(
                    scenario.playback, _data_dir(scenario, data_dir), start_us=self.start_us,
                    fallback=self.patient)
            except PlaybackError as exc:
                raise ScenarioError(f"scenario {scenario.name}: {exc}") from exc

    @classmethod
    def from_scenario(cls, name_or_path: str | os.PathLike[str] | Scenario, *, seed: int = 0,
                      start_us: int, data_dir: str | os.PathLike[str] | None = None
                      ) -> Simulation:
        """A simulation of a shipped scenario (by name), a TOML file, or a ``Scenario``.
        ``start_us``: host time the run begins (infusion start is ``baseline_min`` later).
        ``data_dir``: where recordings live (else ``$KAPMONITOR_DATA``), playback only."""
        sc = name_or_path if isinstance(name_or_path, Scenario) else load_scenario(name_or_path)
        return cls(sc, seed=seed, start_us=start_us, data_dir=data_dir)

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / 1e6

    def session_min(self, now_us: int) -> float:
        """Session time in minutes (negative before infusion start, DESIGN §2)."""
        return (int(now_us) - self.t0_us) / _US_PER_MIN

    def events(self, now_us: int) -> list[LinkFault]:
        """Link faults due (start time <= ``now_us``) since the previous call, in order."""
        out = []
        with self._lock:
            while (self._next_fault < len(self.link_faults)
                   and self.link_faults[self._next_fault].t_us <= int(now_us)):
                out.append(self.link_faults[self._next_fault])
                self._next_fault += 1
        return out

    def active_faults(self, now_us: int) -> list[LinkFault]:
        """Link faults in force at ``now_us`` (a one-off garbage burst is in force only at
        its own time)."""
        t = int(now_us)
        return [f for f in self.link_faults if f.t_us <= t and (t < f.end_us or t == f.t_us)]

    def truth(self, now_us: int) -> dict[str, Any]:
        """Ground truth for logging: the patient's noise-free physiology, the pump's exact
        state and the link faults in force."""
        now_us = int(now_us)
        st = self.pump.pump(now_us)
        out = self.patient.truth(now_us)
        out.update({
            "scenario": self.scenario.name,
            "seed": self.seed,
            "session_min": self.session_min(now_us),
            "pump_state": st.state.value,
            "pump_rate_ml_h": st.rate_ml_h,
            "volume_infused_ml": st.volume_infused_ml,
            "vtbi_remaining_ml": st.vtbi_ml,
            "pump_alarms": [a.code for a in st.alarms],
            "infusion_id": st.infusion_id,
            "link_faults": [f"{f.kind}:{f.device}" for f in self.active_faults(now_us)],
            "waves_from": (f"recording {self.scenario.playback.record}"
                           if self.scenario.playback is not None else "model"),
        })
        return out


def _data_dir(scenario: Scenario, data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    raise ScenarioError(f"scenario {scenario.name} plays a recording "
                        f"({scenario.playback.record if scenario.playback else '?'}): give "
                        f"the data directory (data_dir=) or set {DATA_ENV}, e.g. to the "
                        "project's ../shared/data; the recordings are not in the repository")
