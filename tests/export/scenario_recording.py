"""A shipped simulator scenario recorded into a real SQLite file, for the chart record tests
(issue 13 item 12).

The scenario runs on its own clock, second by second, without pseudo-terminals: what a
monitor and a pump would report (``Simulation``: the patient's numerics, an NIBP reading
per measurement, the pump's state every ``pump_poll_s``, the delivered dose) goes through
the real alarm engine and the real Recorder into the store, with the session opened,
infusion start marked at the pump's first running report, and closed, as a live session
does. A 70-minute scenario takes a second or two, so the whole timeline is there: the
desaturation scenario's 5.5-min hold at T+27:30 and its late end at T+45:30, the occlusion
scenario's pump alarm that stopped the infusion for 3 min.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kapmonitor.alarms import AlarmAction, AlarmEngine, AlarmEvent
from kapmonitor.drivers.sim.scenario import Simulation, load_scenario
from kapmonitor.model import Channel, Message, PumpRunState, Reading
from kapmonitor.store import Recorder, Store

_US = 1_000_000
_MIN = 60 * _US
#: 2026-01-01T00:00:00Z: the session opens here, the infusion starts baseline_min later
START = 1_767_225_600_000_000
CONTINUOUS = (Channel.HR, Channel.PULSE, Channel.SPO2, Channel.RR, Channel.ETCO2,
              Channel.TEMP)
NIBP = (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN)


@dataclass(frozen=True)
class ScenarioRecording:
    db: Path
    session_id: int
    scenario: str
    start_us: int
    t0_us: int
    end_us: int
    #: host times of the NIBP readings written (one per measurement)
    nibp_us: tuple[int, ...]
    alarm_events: int


def record_scenario(db: Path, name: str = "desaturation", *, seed: int = 7,
                    extra_nibp_min: Sequence[float] = (), acknowledge: Sequence[str] = (),
                    pump_poll_s: int = 2, patient: str = "KAP-CHART-1") -> ScenarioRecording:
    """Record scenario ``name`` into ``db`` and close the session at the scenario's end.
    ``extra_nibp_min``: NIBP measurements started by hand at these minutes of session time
    (besides the monitor's 5-min cycle); ``acknowledge``: alarm keys the nurse ("RN A")
    acknowledges 5 s after they are raised."""
    sc = load_scenario(name)
    sim = Simulation(sc, seed=seed, start_us=START)
    store = Store.open(str(db))
    prog = sc.programme
    sid = store.create_session(
        patient=patient, room="5", clinicians="RN A, Dr B", protocol=f"scenario {name}",
        weight_kg=sc.profile.weight_kg if prog is None else prog.weight_kg,
        dose_mg_per_kg=None if prog is None else prog.dose_mg_per_kg,
        duration_min=None if prog is None else prog.duration_min,
        concentration_mg_ml=None if prog is None else prog.concentration_mg_ml,
        t_us=START, owned=False)
    store.add_device(sid, "monitor", "intellivue", "/dev/null", t_us=START)
    store.add_device(sid, "pump", "bbraun-bcc", "/dev/null", t_us=START)
    store.add_annotation(sid, "phase", "Baseline", code="baseline", t_us=START,
                         author="kapmonitor")
    rec = Recorder(store, sid).start()
    engine = AlarmEngine()
    extra = sorted(sim.t0_us + round(m * _MIN) for m in extra_nibp_min)
    to_ack: dict[str, int] = {}
    last_nibp: int | None = None
    nibp_times: list[int] = []
    t0: int | None = None
    n_alarms = 0
    try:
        for s in range(round(sim.duration_s) + 1):
            t = START + s * _US
            while extra and extra[0] <= t:
                sim.patient.request_nibp(extra.pop(0))
            values = sim.patient.numerics(t)
            msgs: list[Message] = [Reading(ch, float(v), t, "monitor")
                                   for ch in CONTINUOUS if (v := values.get(ch)) is not None]
            if sim.patient.nibp_measured_us != last_nibp:
                last_nibp = sim.patient.nibp_measured_us
                msgs += [Reading(ch, float(v), t, "monitor")
                         for ch in NIBP if (v := values.get(ch)) is not None]
                nibp_times.append(t)
            if s % pump_poll_s == 0:
                st = sim.pump.pump(t)
                msgs.append(dataclasses.replace(st, source="pump"))
                if st.concentration_mg_ml:
                    msgs.append(Reading(Channel.DELIVERED_DOSE, sim.pump.cumulative_mg(t), t,
                                        "dose"))
                if t0 is None and st.state is PumpRunState.RUNNING:
                    t0 = t
                    store.set_infusion_start(sid, t, t)
                    store.add_annotation(sid, "phase", "Infusion", code="infusion", t_us=t,
                                         author="pump")
            events: list[AlarmEvent] = engine.evaluate(msgs, now_us=t)
            for ev in events:
                if ev.action is AlarmAction.RAISE and ev.key in acknowledge:
                    to_ack[ev.key] = t + 5 * _US
            for key, when in list(to_ack.items()):
                if when <= t:
                    del to_ack[key]
                    events += engine.acknowledge(key, t, user="RN A")
            n_alarms += len(events)
            rec([*msgs, *events])
    finally:
        rec.stop(timeout=60)
        store.close_session(sid, sim.end_us)
        store.close()
    assert t0 is not None, f"the pump of scenario {name} never ran"
    return ScenarioRecording(db, sid, name, START, t0, sim.end_us, tuple(nibp_times),
                             n_alarms)
