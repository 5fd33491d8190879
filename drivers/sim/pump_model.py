"""A simulated syringe/volumetric pump: the ``PumpFeed`` the pump peers report.

Pure and driven by an explicit clock: every method takes the host time ``now_us``; nothing
here reads a clock, sleeps or starts a thread. The volume is integrated exactly (it is
piecewise linear in time: constant flow between state changes), so a driver's reading
can be checked against it to the protocol's resolution, and the simulated patient's
plasma estimate is fed with what was ACTUALLY delivered (``cumulative_mg``): a pause, an
occlusion or a bolus changes the drug the patient gets (issue "Simulator").

States (``kapmonitor.model.PumpRunState``)::

    STOPPED   programmed but not started, or stopped by ``stop``      flow 0
    RUNNING   delivering at the programmed rate                       flow = rate
    BOLUS     delivering a bolus at the bolus rate, then back         flow = bolus rate
    PAUSED    held by the user (``pause``) or after an alarm cleared  flow 0
    ALARM     stopped by a stopping alarm (occlusion, air in line)    flow 0
    COMPLETE  the volume limit (VTBI) reached; KVO rate 0             flow 0

Alarms (``PumpAlarm.code``): ``occlusion`` and ``air_in_line`` stop delivery until cleared
(then the pump is PAUSED: a nurse restarts it, as on a real pump). ``near_end`` is raised
automatically ``near_end_min`` (default 5) minutes before the end at the programmed rate,
low priority and non-stopping; ``end`` is raised when the infusion completes, low
priority (clinical.md §3.3: "infusion complete" is an information/low signal). Clearing an
automatic alarm acknowledges it for the rest of that infusion.

Volume terms: ``volume_infused_ml`` counts from 0 for each infusion (each ``program``
increments ``infusion_id``, as a real pump resets its counter). The *volume limit* is the
counter value at which the pump completes. ``PumpState.vtbi_ml`` is what is left
(limit - infused). For duck-typing by the peers (``ProgrammedPump`` compatibility) the
attributes ``rate_ml_h`` and ``vtbi_ml`` are the programmed rate and the volume LIMIT,
settable; ``set_vtbi(v, now)`` instead means "v mL more from now", as on a pump panel.

Time: a command stamped earlier than the latest time the pump has already answered for
(peers run in different threads, so two clocks may race by microseconds) takes effect at
that latest time: the past the pump has reported is never rewritten. Scripted events
(``schedule``) are applied at their exact times.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kapmonitor.dosing import DoseCalculation, DoseProgramme, calculate
from kapmonitor.model import PumpAlarm, PumpRunState, PumpState

__all__ = [
    "ALARM_CATALOGUE",
    "DEFAULT_BOLUS_RATE_ML_H",
    "MAX_RATE_ML_H",
    "AlarmSpec",
    "PumpCommandError",
    "PumpModel",
    "Refusal",
]

_US_PER_H = 3.6e9

#: Highest rate the model accepts: the plausible range of the pump-rate channel
#: (kapmonitor.model.CHANNELS[PUMP_RATE]); real pumps stop at 999 to 1500 mL/h.
MAX_RATE_ML_H = 2000.0

#: Bolus rate when none is given. A project choice (not in clinical.md): a typical
#: syringe-pump bolus rate, fast enough that a 2 mL bolus takes 24 s.
DEFAULT_BOLUS_RATE_ML_H = 300.0


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    """How the model treats one alarm code: what the pump shows, whether it stops
    delivery."""

    raw: str
    text: str
    high_priority: bool
    stops: bool


#: The alarm codes ``inject_alarm`` accepts (PumpAlarm.code names, kapmonitor.model).
ALARM_CATALOGUE: dict[str, AlarmSpec] = {
    "occlusion": AlarmSpec("OCCLUSION", "occlusion: line blocked", True, True),
    "air_in_line": AlarmSpec("AIR_IN_LINE", "air in line", True, True),
    "door_open": AlarmSpec("DOOR_OPEN", "door open", True, True),
    "near_end": AlarmSpec("NEAR_END", "near end of infusion", False, False),
    "end": AlarmSpec("END", "infusion complete", False, False),
    "low_battery": AlarmSpec("LOW_BATTERY", "battery low", False, False),
}

_AUTO = ("near_end", "end")
_DELIVERING = frozenset({PumpRunState.RUNNING, PumpRunState.BOLUS})


class PumpCommandError(ValueError):
    """A command with a value the pump cannot take (negative rate, unknown alarm code,
    a new programme while infusing). Raised, never clamped."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command the pump declined in its current state (as a real pump refuses to start
    with an occlusion alarm showing). Kept in ``PumpModel.refusals``."""

    t_us: int
    command: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Seg:
    """One stretch of constant flow, from ``t_us`` until the next segment."""

    t_us: int
    state: PumpRunState
    flow_ml_h: float
    volume_ml: float  # infusion counter at t_us
    mg: float  # cumulative drug delivered (all infusions) at t_us
    limit_ml: float
    rate_ml_h: float  # programmed rate
    concentration_mg_ml: float | None
    drug: str | None
    infusion_id: int
    alarms: tuple[PumpAlarm, ...]
    acked: frozenset[str]
    bolus_ml: float | None
    bolus_end_ml: float  # counter value at which the bolus ends (inf when none)
    return_state: PumpRunState  # after the bolus ends / the stopping alarms are cleared
    stopping: tuple[str, ...]  # codes of the stopping alarms showing

    def volume_at(self, t_us: int) -> float:
        return self.volume_ml + self.flow_ml_h * max(0, t_us - self.t_us) / _US_PER_H

    def mg_at(self, t_us: int) -> float:
        return self.mg + (self.volume_at(t_us) - self.volume_ml) * (self.concentration_mg_ml or 0.0)


def _finite_positive(name: str, value: object, *, allow_zero: bool = False,
                     allow_inf: bool = False, maximum: float | None = None) -> float:
    ok_type = isinstance(value, int | float) and not isinstance(value, bool)
    v = float(value) if ok_type else math.nan  # type: ignore[arg-type]
    if not ok_type or math.isnan(v) or (math.isinf(v) and not allow_inf) or v < 0 or (
            v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise PumpCommandError(f"{name} must be a number {need}, got {value!r}")
    if maximum is not None and v > maximum:
        raise PumpCommandError(f"{name} {v:g} is above the pump's maximum {maximum:g}")
    return v


class PumpModel:
    """A pump running one programme at a time (see the module docstring).

    Build it programmed (``rate_ml_h`` and ``vtbi_ml``), with ``from_programme`` (a
    ``DoseProgramme`` or ``DoseCalculation``: weight, mg/kg, minutes, concentration or
    bag), or empty and ``program`` it later. It starts STOPPED; ``start`` begins delivery.
    Thread-safe (one lock): the pump peer commands it while the patient model reads it.
    """

    def __init__(
        self,
        *,
        rate_ml_h: float | None = None,
        vtbi_ml: float | None = None,
        concentration_mg_ml: float | None = 1.0,
        drug: str | None = "ketamine",
        near_end_min: float = 5.0,
        end_alarm: bool = True,
        source: str = "sim-pump",
        start_us: int = 0,
    ) -> None:
        if concentration_mg_ml is not None:
            concentration_mg_ml = _finite_positive("concentration (mg/mL)", concentration_mg_ml)
        self.near_end_min = _finite_positive("near-end warning (min)", near_end_min,
                                             allow_zero=True)
        self.end_alarm = bool(end_alarm)
        self.source = source
        self.refusals: list[Refusal] = []
        self._lock = threading.RLock()
        self._history: list[_Seg] = []
        self._history_t: list[int] = []
        self._events: list[tuple[int, int, str, dict[str, Any]]] = []
        self._seq = 0
        self._t_last = int(start_us)
        self._cur = _Seg(
            t_us=int(start_us), state=PumpRunState.STOPPED, flow_ml_h=0.0, volume_ml=0.0,
            mg=0.0, limit_ml=0.0, rate_ml_h=0.0, concentration_mg_ml=concentration_mg_ml,
            drug=drug, infusion_id=0, alarms=(), acked=frozenset(), bolus_ml=None,
            bolus_end_ml=math.inf, return_state=PumpRunState.RUNNING, stopping=())
        if (rate_ml_h is None) != (vtbi_ml is None):
            raise PumpCommandError("give both the rate (mL/h) and the VTBI (mL), or neither")
        if rate_ml_h is not None and vtbi_ml is not None:
            self._program(int(start_us), rate_ml_h, vtbi_ml, concentration_mg_ml, drug)

    @classmethod
    def from_programme(cls, programme: DoseProgramme | DoseCalculation, *,
                       drug: str | None = "ketamine", **kwargs: Any) -> PumpModel:
        """A pump programmed by the dose calculator (clinical.md §1.3): rate and volume of
        ``calculate(programme)``, at its concentration."""
        calc = calculate(programme) if isinstance(programme, DoseProgramme) else programme
        return cls(rate_ml_h=calc.rate_ml_h, vtbi_ml=calc.volume_ml,
                   concentration_mg_ml=calc.concentration_mg_ml, drug=drug, **kwargs)

    # ------------------------------------------------------------------ reading

    def pump(self, now_us: int) -> PumpState:
        """What the pump is doing at ``now_us`` (PumpFeed)."""
        with self._lock:
            now_us = int(now_us)
            self._settle(now_us)
            seg = self._segment_at(now_us)
            v = seg.volume_at(now_us)
            limit = seg.limit_ml
            return PumpState(
                t_us=now_us,
                state=seg.state,
                rate_ml_h=seg.flow_ml_h,
                volume_infused_ml=v,
                vtbi_ml=max(0.0, limit - v) if math.isfinite(limit) else None,
                bolus_ml=seg.bolus_ml if seg.state is PumpRunState.BOLUS else None,
                drug=seg.drug,
                concentration_mg_ml=seg.concentration_mg_ml,
                alarms=self._alarms_of(seg, v),
                infusion_id=seg.infusion_id,
                source=self.source,
            )

    def volume_ml(self, now_us: int) -> float:
        """The infusion counter at ``now_us`` (mL, exact)."""
        with self._lock:
            self._settle(int(now_us))
            return self._segment_at(int(now_us)).volume_at(int(now_us))

    def cumulative_mg(self, now_us: int) -> float:
        """All drug delivered up to ``now_us`` over every infusion (mg, exact): what the
        simulated patient receives. Needs a known concentration; a programme without one
        counts nothing (and nothing reaches the patient model)."""
        with self._lock:
            self._settle(int(now_us))
            return self._segment_at(int(now_us)).mg_at(int(now_us))

    @property
    def infusion_id(self) -> int:
        return self._cur.infusion_id

    @property
    def state(self) -> PumpRunState:
        """The state as of the latest time the pump has answered for."""
        return self._cur.state

    @property
    def concentration_mg_ml(self) -> float | None:
        return self._cur.concentration_mg_ml

    # ProgrammedPump-compatible attributes (the peers duck-type them)

    @property
    def rate_ml_h(self) -> float:
        """Programmed rate (mL/h). Setting it is ``set_rate`` at the latest time seen
        (0 allowed here, as a bench pump accepts it)."""
        return self._cur.rate_ml_h

    @rate_ml_h.setter
    def rate_ml_h(self, value: float) -> None:
        with self._lock:
            self._set_rate(self._t_last, value, allow_zero=True)

    @property
    def vtbi_ml(self) -> float:
        """Volume LIMIT of this infusion (counter value at completion; ``inf`` = none), as
        ``ProgrammedPump.vtbi_ml``. Setting it applies at the latest time seen."""
        return self._cur.limit_ml

    @vtbi_ml.setter
    def vtbi_ml(self, value: float) -> None:
        with self._lock:
            self._set_limit(self._t_last, value)

    # ------------------------------------------------------------------ commands

    def program(self, rate_ml_h: float, vtbi_ml: float, now_us: int, *,
                concentration_mg_ml: float | None = None, drug: str | None = None) -> None:
        """A new infusion: ``infusion_id`` + 1, counter 0, alarms cleared, STOPPED until
        ``start``. Refused (PumpCommandError) while the pump is delivering."""
        with self._lock:
            self._cmd_program(self._time(now_us), rate_ml_h, vtbi_ml, concentration_mg_ml,
                              drug)

    def program_dose(self, programme: DoseProgramme | DoseCalculation, now_us: int) -> None:
        """``program`` with the numbers of the dose calculator (clinical.md §1.3)."""
        calc = calculate(programme) if isinstance(programme, DoseProgramme) else programme
        self.program(calc.rate_ml_h, calc.volume_ml, now_us,
                     concentration_mg_ml=calc.concentration_mg_ml)

    def start(self, now_us: int) -> bool:
        """Start (or resume) delivery at the programmed rate. Returns False, and records a
        ``Refusal``, when the pump cannot: no programme, a stopping alarm showing, or the
        volume limit already reached."""
        with self._lock:
            return self._start(self._time(now_us), "start")

    def resume(self, now_us: int) -> bool:
        """Same as ``start``: a paused pump restarts at its programmed rate."""
        with self._lock:
            return self._start(self._time(now_us), "resume")

    def run(self, now_us: int) -> bool:
        """Bench control command (NE-1000 ``RUN``): same as ``start``."""
        with self._lock:
            return self._start(self._time(now_us), "run")

    def pause(self, now_us: int) -> None:
        """Hold delivery (RUNNING or BOLUS -> PAUSED); in any other state nothing changes."""
        with self._lock:
            self._pause(self._time(now_us))

    def stop(self, now_us: int) -> None:
        """Bench control command (NE-1000 ``STP``): stop the programme (-> STOPPED, flow
        0, counter kept; ``start`` resumes it). An alarm or a completed infusion stays."""
        with self._lock:
            self._stop(self._time(now_us))

    def set_rate(self, rate_ml_h: float, now_us: int) -> None:
        """Change the programmed rate (0 < rate <= MAX_RATE_ML_H); a running pump changes
        its flow at once."""
        with self._lock:
            self._set_rate(self._time(now_us), rate_ml_h, allow_zero=False)

    def set_vtbi(self, vtbi_ml: float, now_us: int) -> None:
        """Volume to be infused FROM NOW (mL), as entered on a pump panel: the volume
        limit becomes the counter now plus ``vtbi_ml``."""
        with self._lock:
            self._set_vtbi(self._time(now_us), vtbi_ml)

    def set_volume_limit(self, limit_ml: float, now_us: int) -> None:
        """Counter value (mL) at which this infusion completes (``inf``: no limit)."""
        with self._lock:
            self._set_limit(self._time(now_us), limit_ml)

    def bolus(self, volume_ml: float, now_us: int, *, rate_ml_h: float | None = None) -> bool:
        """Deliver ``volume_ml`` at ``rate_ml_h`` (default ``DEFAULT_BOLUS_RATE_ML_H``),
        then go back to what the pump was doing (RUNNING, or PAUSED if it was not
        delivering). The bolus counts in the counter and toward the volume limit. Refused
        (False, recorded) with a stopping alarm showing or the limit reached."""
        with self._lock:
            return self._bolus(self._time(now_us), volume_ml, rate_ml_h)

    def inject_alarm(self, code: str, now_us: int, *, text: str | None = None) -> None:
        """Raise alarm ``code`` (one of ``ALARM_CATALOGUE``). A stopping alarm (occlusion,
        air in line, door open) stops delivery: state ALARM until cleared."""
        alarm, stops = _catalogue_alarm(code, text)
        with self._lock:
            self._raise(self._time(now_us), alarm, stops)

    def raise_alarm(self, alarm: PumpAlarm, now_us: int) -> None:
        """Raise a ready-made ``PumpAlarm`` (``ProgrammedPump`` compatible). It stops
        delivery when its code is a stopping one, or, for a code not in the catalogue,
        when it is high priority."""
        spec = ALARM_CATALOGUE.get(alarm.code)
        with self._lock:
            self._raise(self._time(now_us), alarm, spec.stops if spec else alarm.high_priority)

    def clear_alarm(self, now_us: int, code: str | None = None) -> None:
        """Clear alarm ``code`` (all when None). Automatic ones (near_end, end) are
        acknowledged for the rest of the infusion. When no stopping alarm is left, a pump
        stopped by one is PAUSED (delivery resumes only with ``start``)."""
        with self._lock:
            self._clear(self._time(now_us), code)

    def clear_alarms(self) -> None:
        """Clear every alarm at the latest time seen (``ProgrammedPump`` compatible)."""
        with self._lock:
            self._clear(self._time(self._t_last), None)

    def schedule(self, t_us: int, action: str, **params: Any) -> None:
        """Script ``action`` at ``t_us``: applied exactly then, however the pump is polled.
        Actions: start, resume, run, pause, stop, program (rate_ml_h, vtbi_ml,
        concentration_mg_ml), set_rate (rate_ml_h), set_vtbi (vtbi_ml), bolus (volume_ml,
        rate_ml_h), alarm (code), clear_alarm (code, optional). A scripted action the pump
        declines is recorded in ``refusals``."""
        if action not in _ACTIONS:
            raise PumpCommandError(f"unknown pump action {action!r}; known: "
                                   f"{', '.join(sorted(_ACTIONS))}")
        if action == "alarm":
            _catalogue_alarm(params.get("code", ""), None)  # refuse unknown codes now
        with self._lock:
            if int(t_us) < self._t_last:
                raise PumpCommandError("cannot script a pump action in the past "
                                       f"({t_us} < {self._t_last} µs)")
            self._seq += 1
            bisect.insort(self._events, (int(t_us), self._seq, action, dict(params)))

    # ------------------------------------------------------------------ internals

    def _time(self, now_us: int) -> int:
        """The time a command takes effect: never before what the pump already reported."""
        t = max(int(now_us), self._t_last)
        self._settle(t)
        return t

    def _cmd_program(self, t: int, rate: float, vtbi: float, conc: float | None,
                     drug: str | None) -> None:
        if self._cur.state in _DELIVERING:
            raise PumpCommandError("the pump is infusing: pause or stop it before "
                                   "entering a new programme")
        c = self._cur.concentration_mg_ml if conc is None else _finite_positive(
            "concentration (mg/mL)", conc)
        self._program(t, rate, vtbi, c, self._cur.drug if drug is None else drug)

    def _program(self, t: int, rate: float, vtbi: float, conc: float | None,
                 drug: str | None) -> None:
        r = _finite_positive("rate (mL/h)", rate, maximum=MAX_RATE_ML_H)
        v = _finite_positive("VTBI (mL)", vtbi, allow_inf=True)
        self._change(t, state=PumpRunState.STOPPED, flow_ml_h=0.0, volume_ml=0.0,
                     limit_ml=v, rate_ml_h=r, concentration_mg_ml=conc, drug=drug,
                     infusion_id=self._cur.infusion_id + 1, alarms=(), acked=frozenset(),
                     bolus_ml=None, bolus_end_ml=math.inf,
                     return_state=PumpRunState.RUNNING, stopping=())

    def _cannot_deliver(self, seg: _Seg) -> str:
        if seg.infusion_id == 0:
            return "no programme entered"
        if seg.stopping:
            return f"alarm showing ({', '.join(seg.stopping)}): clear it first"
        if seg.volume_ml >= seg.limit_ml:
            return "volume to be infused already reached: enter a new VTBI"
        return ""

    def _start(self, t: int, name: str) -> bool:
        cur = self._cur
        if cur.state in _DELIVERING:
            return True
        why = self._cannot_deliver(cur)
        if why:
            self.refusals.append(Refusal(t, name, why))
            return False
        self._change(t, state=PumpRunState.RUNNING, flow_ml_h=cur.rate_ml_h)
        return True

    def _pause(self, t: int) -> None:
        if self._cur.state in _DELIVERING:
            self._change(t, state=PumpRunState.PAUSED, flow_ml_h=0.0, bolus_ml=None,
                         bolus_end_ml=math.inf)

    def _stop(self, t: int) -> None:
        if self._cur.state not in (PumpRunState.ALARM, PumpRunState.COMPLETE):
            self._change(t, state=PumpRunState.STOPPED, flow_ml_h=0.0, bolus_ml=None,
                         bolus_end_ml=math.inf)

    def _set_rate(self, t: int, rate: float, *, allow_zero: bool) -> None:
        r = _finite_positive("rate (mL/h)", rate, allow_zero=allow_zero, maximum=MAX_RATE_ML_H)
        cur = self._cur
        flow = r if cur.state is PumpRunState.RUNNING else cur.flow_ml_h
        self._change(t, rate_ml_h=r, flow_ml_h=flow)

    def _set_vtbi(self, t: int, vtbi: float) -> None:
        v = _finite_positive("VTBI (mL)", vtbi, allow_inf=True)
        self._set_limit(t, self._cur.volume_at(t) + v)

    def _set_limit(self, t: int, limit: float) -> None:
        v = _finite_positive("volume limit (mL)", limit, allow_zero=True, allow_inf=True)
        self._change(t, limit_ml=v)
        cur = self._cur
        if cur.state in _DELIVERING and cur.volume_ml >= v:
            self._change(t, state=PumpRunState.COMPLETE, flow_ml_h=0.0, bolus_ml=None,
                         bolus_end_ml=math.inf)

    def _bolus(self, t: int, volume: float, rate: float | None) -> bool:
        vol = _finite_positive("bolus volume (mL)", volume)
        r = _finite_positive("bolus rate (mL/h)", DEFAULT_BOLUS_RATE_ML_H if rate is None
                             else rate, maximum=MAX_RATE_ML_H)
        cur = self._cur
        why = self._cannot_deliver(cur)
        if why:
            self.refusals.append(Refusal(t, "bolus", why))
            return False
        back = PumpRunState.RUNNING if cur.state in _DELIVERING else PumpRunState.PAUSED
        self._change(t, state=PumpRunState.BOLUS, flow_ml_h=r, bolus_ml=vol,
                     bolus_end_ml=cur.volume_at(t) + vol, return_state=back)
        return True

    def _raise(self, t: int, alarm: PumpAlarm, stops: bool) -> None:
        cur = self._cur
        alarms = (*(a for a in cur.alarms if a.code != alarm.code), alarm)
        acked = cur.acked - {alarm.code}
        if not stops:
            self._change(t, alarms=alarms, acked=acked)
            return
        stopping = (*(c for c in cur.stopping if c != alarm.code), alarm.code)
        if cur.state is PumpRunState.ALARM:
            self._change(t, alarms=alarms, acked=acked, stopping=stopping)
            return
        # What the pump goes back to once the alarm is cleared: delivery -> PAUSED.
        back = PumpRunState.PAUSED if cur.state in _DELIVERING else cur.state
        self._change(t, state=PumpRunState.ALARM, flow_ml_h=0.0, alarms=alarms, acked=acked,
                     bolus_ml=None, bolus_end_ml=math.inf, return_state=back,
                     stopping=stopping)

    def _clear(self, t: int, code: str | None) -> None:
        cur = self._cur
        keep = tuple(a for a in cur.alarms if code is not None and a.code != code)
        # Only automatic alarms showing now are acknowledged; one not yet raised still comes.
        showing = {a.code for a in self._alarms_of(cur, cur.volume_at(t))} & set(_AUTO)
        auto = showing if code is None else showing & {code}
        stopping = tuple(c for c in cur.stopping if code is not None and c != code)
        if cur.state is PumpRunState.ALARM and not stopping:
            self._change(t, state=cur.return_state, alarms=keep, acked=cur.acked | auto,
                         return_state=PumpRunState.RUNNING, stopping=())
        else:
            self._change(t, alarms=keep, acked=cur.acked | auto, stopping=stopping)

    def _change(self, t: int, **fields: Any) -> None:
        """Close the current segment at ``t`` and open a new one with ``fields`` changed."""
        cur = self._cur
        if t < cur.t_us:  # pragma: no cover - _time and _settle never go back
            raise AssertionError("pump segments out of order")
        v = cur.volume_at(t)
        if cur.flow_ml_h > 0:
            v = min(v, max(cur.volume_ml, min(cur.limit_ml, cur.bolus_end_ml)))
        base = replace(cur, t_us=t, volume_ml=v,
                       mg=cur.mg + (v - cur.volume_ml) * (cur.concentration_mg_ml or 0.0))
        if t > cur.t_us:
            self._history.append(cur)
            self._history_t.append(cur.t_us)
        self._cur = replace(base, **fields)
        self._t_last = max(self._t_last, t)

    def _next_auto(self) -> int | None:
        cur = self._cur
        if cur.flow_ml_h <= 0:
            return None
        end = min(cur.limit_ml, cur.bolus_end_ml)
        if not math.isfinite(end):
            return None
        dt = (end - cur.volume_ml) / cur.flow_ml_h * _US_PER_H
        return cur.t_us + max(0, math.ceil(dt))

    def _settle(self, now_us: int) -> None:
        """Apply automatic transitions (completion, bolus end) and scripted events up to
        ``now_us``, in time order, each at its own time."""
        while True:
            t_auto = self._next_auto()
            t_ev = self._events[0][0] if self._events else None
            due = [t for t in (t_auto, t_ev) if t is not None and t <= now_us]
            if not due:
                break
            t = min(due)
            if t == t_auto:
                cur = self._cur
                if cur.limit_ml <= cur.bolus_end_ml:  # the volume limit: complete, KVO 0
                    self._change(t, state=PumpRunState.COMPLETE, flow_ml_h=0.0,
                                 bolus_ml=None, bolus_end_ml=math.inf)
                else:  # the bolus is done: back to what the pump was doing
                    back = cur.return_state
                    self._change(t, state=back, flow_ml_h=cur.rate_ml_h
                                 if back is PumpRunState.RUNNING else 0.0, bolus_ml=None,
                                 bolus_end_ml=math.inf, return_state=PumpRunState.RUNNING)
                continue
            _, _, action, params = self._events.pop(0)
            try:
                _ACTIONS[action](self, t, params)
            except (PumpCommandError, KeyError) as exc:
                self.refusals.append(Refusal(t, action, str(exc)))
        self._t_last = max(self._t_last, now_us)

    def _segment_at(self, t_us: int) -> _Seg:
        if t_us >= self._cur.t_us or not self._history:
            return self._cur
        i = bisect.bisect_right(self._history_t, t_us) - 1
        return self._history[max(i, 0)]

    def _alarms_of(self, seg: _Seg, volume: float) -> tuple[PumpAlarm, ...]:
        alarms = list(seg.alarms)
        codes = {a.code for a in alarms}
        remaining = seg.limit_ml - volume
        near = (self.near_end_min > 0 and seg.infusion_id > 0 and math.isfinite(seg.limit_ml)
                and seg.state not in (PumpRunState.COMPLETE, PumpRunState.STOPPED)
                and 0 < remaining <= seg.rate_ml_h * self.near_end_min / 60)
        if near and "near_end" not in codes and "near_end" not in seg.acked:
            alarms.append(_catalogue_alarm("near_end", None)[0])
        if (self.end_alarm and seg.state is PumpRunState.COMPLETE and "end" not in codes
                and "end" not in seg.acked):
            alarms.append(_catalogue_alarm("end", None)[0])
        return tuple(alarms)


def _catalogue_alarm(code: str, text: str | None) -> tuple[PumpAlarm, bool]:
    spec = ALARM_CATALOGUE.get(code)
    if spec is None:
        raise PumpCommandError(f"unknown pump alarm {code!r}; known: "
                               f"{', '.join(ALARM_CATALOGUE)}")
    return PumpAlarm(code, spec.raw, text or spec.text, spec.high_priority), spec.stops


#: Scripted actions: internal commands taking the exact time (no re-settling inside).
_ACTIONS: dict[str, Callable[[PumpModel, int, dict[str, Any]], object]] = {
    "start": lambda p, t, k: p._start(t, "start"),
    "resume": lambda p, t, k: p._start(t, "resume"),
    "run": lambda p, t, k: p._start(t, "run"),
    "pause": lambda p, t, k: p._pause(t),
    "stop": lambda p, t, k: p._stop(t),
    "set_rate": lambda p, t, k: p._set_rate(t, k["rate_ml_h"], allow_zero=False),
    "set_vtbi": lambda p, t, k: p._set_vtbi(t, k["vtbi_ml"]),
    "program": lambda p, t, k: p._cmd_program(t, k["rate_ml_h"], k["vtbi_ml"],
                                              k.get("concentration_mg_ml"), None),
    "bolus": lambda p, t, k: p._bolus(t, k["volume_ml"], k.get("rate_ml_h")),
    "alarm": lambda p, t, k: p._raise(t, *_catalogue_alarm(k["code"], None)),
    "clear_alarm": lambda p, t, k: p._clear(t, k.get("code")),
}
