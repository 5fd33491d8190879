"""The live session: one infusion, from setup to close (DESIGN §1, §2; issue "Clinical core").

It wires what the GUI and ``kapmonitor record --headless`` share, so both behave the same:

    devices --publish--> Bus --> Recorder (critical)     -> SQLite, batched
                             --> AlarmEngine (critical)  -> alarm events -> Recorder
                             --> LiveBuffers (best effort) -> the GUI timer
                             --> dose tracking           -> delivered dose and plasma
                                                            estimate, back onto the bus

Devices come in through an interface (anything with ``start()``/``stop()`` that publishes
to ``session.bus.publish``); the core never imports a concrete driver. A ticker thread
advances alarm timers (delays, stale devices, audio-pause expiry) and the plasma estimate,
so alarms keep being evaluated and recorded even when no GUI runs or the GUI freezes.

Timeline: ``t0`` is the infusion start, taken from the pump when it first reports running
(or marked by hand); session time is ``t - t0`` and negative during the baseline. Phases
(clinical.md §8.1, §4.4): setup/baseline -> infusion -> emergence -> recovery ->
discharge-ready -> closed, each change recorded as a ``phase`` annotation.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from .alarm_limits import AlarmLimits, Priority
from .alarms import AlarmEngine, AlarmEvent
from .bus import Bus, Subscription
from .dosing import DeliveredDose, DeliveredDoseTracker
from .live import LiveBuffers
from .model import Channel, Message, PumpRunState, PumpState, Quality, Reading, now_us
from .pk import DEFAULT_MODEL, PKModel, PlasmaEstimator
from .store import Recorder, Store

__all__ = ["DeviceHandle", "LiveSession", "Phase", "SessionConfig"]

log = logging.getLogger(__name__)


class Phase(enum.StrEnum):
    BASELINE = "baseline"
    INFUSION = "infusion"
    EMERGENCE = "emergence"
    RECOVERY = "recovery"
    DISCHARGE_READY = "discharge-ready"
    CLOSED = "closed"


PHASE_LABELS = {
    Phase.BASELINE: "Baseline", Phase.INFUSION: "Infusion", Phase.EMERGENCE: "Emergence",
    Phase.RECOVERY: "Recovery", Phase.DISCHARGE_READY: "Discharge ready",
    Phase.CLOSED: "Closed",
}
_ORDER = list(Phase)


class DeviceHandle(Protocol):
    """What the session needs of a device: start it, stop it. It publishes on its own."""

    def start(self) -> object: ...
    def stop(self, timeout: float = ...) -> None: ...


@dataclass
class SessionConfig:
    """What the setup dialog (or the headless command line) collects."""

    patient: str | None = None
    room: str = ""
    clinicians: str = ""
    protocol: str = ""
    weight_kg: float | None = None
    weight_basis: str = "actual"
    dose_mg_per_kg: float | None = None
    duration_min: float | None = None
    concentration_mg_ml: float | None = None
    bag_ml: float | None = None
    route: str = "IV"
    demo: bool = False
    pk_model: PKModel = DEFAULT_MODEL
    alarm_overrides: Mapping[str, Any] = field(default_factory=dict)

    def programme_columns(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "weight_kg", "weight_basis", "dose_mg_per_kg", "duration_min",
            "concentration_mg_ml", "bag_ml", "route")}


class LiveSession:
    def __init__(self, store: Store, config: SessionConfig, *,
                 clock: Callable[[], int] = now_us, tick_s: float = 0.2,
                 limits: AlarmLimits | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        # timers are due in the clock's time: at a simulated --speed N, wake N times as often
        self.tick_s = max(0.005, tick_s / getattr(clock, "speed", 1.0))
        limits = limits or AlarmLimits.defaults().with_overrides(config.alarm_overrides)
        self.alarms = AlarmEngine(limits)
        self.started_us = clock()
        self.session_id = store.create_session(
            patient=config.patient, room=config.room, clinicians=config.clinicians,
            protocol=config.protocol, demo=config.demo, alarm_limits=self.alarms.limits,
            t_us=self.started_us, **config.programme_columns())
        self.bus = Bus(on_critical_error=self._critical_failed)
        self.recorder = Recorder(store, self.session_id, on_error=self._db_error)
        self.live = LiveBuffers()
        self.t0_us: int | None = None
        self.phase = Phase.BASELINE
        self.devices: dict[str, DeviceHandle] = {}
        self._dose_lock = threading.Lock()
        self._tracker: DeliveredDoseTracker | None = None
        self._estimator: PlasmaEstimator | None = None
        self._pump_source: str | None = None
        self._last_pump: PumpState | None = None
        self.last_dose: DeliveredDose | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-notes")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._listeners: list[Callable[[AlarmEvent], object]] = []
        self._subs: list[Subscription] = []
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LiveSession:
        self.recorder.start()
        self.alarms.subscribe(self.recorder.record_alarm)
        self._subs = [
            self.bus.subscribe(self.recorder, name="recorder", critical=True),
            self.bus.subscribe(self._evaluate_alarms, name="alarms", critical=True),
            self.bus.subscribe(self._track_dose, name="dose", critical=True),
            self.bus.subscribe(self.live, name="live"),
        ]
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True,
                                        name=f"session-{self.session_id}")
        self._ticker.start()
        self._phase_entry(Phase.BASELINE, self.started_us, "kapmonitor")
        return self

    def attach(self, name: str, device: DeviceHandle, *, protocol: str = "", port: str = "",
               serial_number: str = "") -> None:
        """Register and start a device whose messages carry ``source == name``."""
        self.store.add_device(self.session_id, name, protocol, port, serial_number,
                              t_us=self.clock())
        self.devices[name] = device
        device.start()

    def close(self, t_us: int | None = None, *, author: str = "") -> None:
        """Stop devices, write everything, close the session. Idempotent."""
        if self.closed:
            return
        self.closed = True
        t_us = t_us if t_us is not None else self.clock()
        for name, device in self.devices.items():
            try:
                device.stop()
            except Exception:
                log.exception("device %s did not stop cleanly", name)
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        self._writer.shutdown(wait=True)
        self._phase_entry(Phase.CLOSED, t_us, author or "kapmonitor", direct=True)
        for sub in self._subs:
            sub.close()
        self.recorder.stop()
        self.store.close_session(self.session_id, t_us)

    def abandon(self) -> None:
        """Stop threads without closing the session (as a crash would leave it): for tests
        of recovery and for a GUI that is killed mid-session."""
        for device in self.devices.values():
            device.stop()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        self._writer.shutdown(wait=True)
        self.recorder.stop()
        self.closed = True

    # -- time ------------------------------------------------------------------------------

    def session_time_s(self, t_us: int | None = None) -> float | None:
        """Seconds since the infusion start (negative before it); None until t0 is known."""
        if self.t0_us is None:
            return None
        return ((t_us if t_us is not None else self.clock()) - self.t0_us) / 1e6

    def mark_infusion_start(self, t_us: int | None = None, *, author: str = "",
                            source: str = "manual") -> None:
        t_us = t_us if t_us is not None else self.clock()
        self.t0_us = t_us
        self.phase = Phase.INFUSION
        self._record_infusion_start(t_us, author or source)

    def _record_infusion_start(self, t_us: int, author: str) -> None:
        self.store.set_infusion_start(self.session_id, t_us, self.clock())
        self._phase_entry(Phase.INFUSION, t_us, author)

    def set_phase(self, phase: Phase, t_us: int | None = None, *, author: str = "") -> None:
        """Move to a later phase (the timeline only goes forward; a mistaken phase marker
        is corrected by amending its annotation)."""
        if _ORDER.index(phase) <= _ORDER.index(self.phase):
            raise ValueError(f"cannot go from {PHASE_LABELS[self.phase]} back to "
                             f"{PHASE_LABELS[phase]}")
        if phase is Phase.CLOSED:
            raise ValueError("close the session with close()")
        if phase is Phase.INFUSION:
            self.mark_infusion_start(t_us, author=author)
            return
        self._phase_entry(phase, t_us if t_us is not None else self.clock(), author)

    def _phase_entry(self, phase: Phase, t_us: int, author: str, direct: bool = False) -> None:
        self.phase = phase
        add = (self.store.add_annotation if direct else self._submit)
        add(self.session_id, "phase", PHASE_LABELS[phase], t_us=t_us, author=author,
            code=phase.value)

    # -- entries ---------------------------------------------------------------------------

    def _submit(self, *args: Any, **kwargs: Any) -> Future[int]:
        """Writes from the GUI thread go to a worker: the GUI never waits on the disk."""
        return self._writer.submit(self.store.add_annotation, *args, **kwargs)

    def add_entry(self, kind: str, text: str = "", *, t_us: int | None = None,
                  author: str = "", code: str = "", value: float | None = None) -> Future[int]:
        """An observation, cue or assessment at ``t_us`` (default now); returns a future of
        the annotation id."""
        return self._submit(self.session_id, kind, text, t_us=t_us or self.clock(),
                            author=author, code=code, value=value)

    def amend_entry(self, annotation_id: int, *, text: str | None = None,
                    value: float | None = None, author: str = "") -> Future[int]:
        return self._writer.submit(self.store.amend_annotation, annotation_id, text=text,
                                   value=value, author=author)

    # -- alarms ----------------------------------------------------------------------------

    def on_alarm(self, callback: Callable[[AlarmEvent], object]) -> Callable[[], None]:
        """Low-rate alarm events, e.g. for a Qt bridge. Called on the evaluating thread."""
        return self.alarms.subscribe(callback)

    def acknowledge(self, key: str | None = None, *, user: str = "") -> list[AlarmEvent]:
        now = self.clock()
        if key is None:
            return self.alarms.acknowledge_all(now, user=user)
        return self.alarms.acknowledge(key, now, user=user)

    def audio_pause(self, seconds: float | None = None, *, user: str = "") -> list[AlarmEvent]:
        return self.alarms.audio_pause(self.clock(), seconds, user=user)

    def _evaluate_alarms(self, messages: Sequence[Message]) -> None:
        self.alarms.evaluate(messages)

    def _critical_failed(self, sub: Subscription, exc: BaseException) -> None:
        self.alarms.raise_technical(f"tech.{sub.name}.failed", Priority.HIGH,
                                    f"{sub.name} failed: {exc}", self.clock())

    def _db_error(self, exc: BaseException | None) -> None:
        now = self.clock()
        if exc is None:
            self.alarms.clear_technical("tech.database", now, "recording resumed")
        else:
            self.alarms.raise_technical("tech.database", Priority.HIGH,
                                        f"Recording to disk failed: {exc}", now)

    # -- dose and plasma estimate ----------------------------------------------------------

    def _ensure_dose_models(self) -> bool:
        cfg = self.config
        if self._tracker is None and cfg.weight_kg:
            self._tracker = DeliveredDoseTracker(concentration_mg_ml=cfg.concentration_mg_ml,
                                                 weight_kg=cfg.weight_kg)
        return self._tracker is not None

    def _track_dose(self, messages: Sequence[Message]) -> None:
        out: list[Message] = []
        for m in messages:
            if not isinstance(m, PumpState):
                continue
            with self._dose_lock:
                if self._pump_source is None:
                    self._pump_source = m.source
                if m.source != self._pump_source:
                    continue
                self._last_pump = m
                if self.t0_us is None and m.state in (PumpRunState.RUNNING, PumpRunState.BOLUS):
                    # t0 and phase change together, before anything is published, so every
                    # reader sees one consistent timeline
                    self.t0_us = m.t_us
                    self.phase = Phase.INFUSION
                    started = True
                else:
                    started = False
                out += self._update_dose(m)
            if started:
                self._record_infusion_start(m.t_us, "pump")
            if (m.state is PumpRunState.COMPLETE and self.phase is Phase.INFUSION):
                self.set_phase(Phase.EMERGENCE, m.t_us, author="pump")
        if out:
            self.bus.publish(out)

    def _update_dose(self, state: PumpState) -> list[Message]:
        if not self._ensure_dose_models():
            return []
        assert self._tracker is not None
        dose = self._tracker.update(state)
        self.last_dose = dose
        out: list[Message] = []
        if dose.delivered_mg is not None:
            out.append(Reading(Channel.DELIVERED_DOSE, dose.delivered_mg, state.t_us, "dose"))
        if dose.discrepancy:
            self.alarms.raise_technical(
                "tech.dose.discrepancy", Priority.MEDIUM,
                f"Delivered volume differs from the pump's counter by "
                f"{dose.discrepancy_ml:.1f} mL", state.t_us)
        if self.config.weight_kg and self.t0_us is not None:
            if self._estimator is None:
                self._estimator = PlasmaEstimator(self.config.pk_model, self.config.weight_kg,
                                                  start_us=self.t0_us)
            if state.t_us >= self._estimator.t_us:
                self._estimator.advance(state.t_us, dose.interval_mg or 0.0)
        return out

    def plasma_now(self) -> float | None:
        """The estimate projected to now at the pump's current rate (for the display)."""
        with self._dose_lock:
            est, pump = self._estimator, self._last_pump
            if est is None:
                return None
            rate = 0.0
            conc = self.config.concentration_mg_ml
            if (pump is not None and pump.state is PumpRunState.RUNNING and pump.rate_ml_h
                    and conc):
                rate = pump.rate_ml_h * conc / 60.0
            now = max(self.clock(), est.t_us)
            return est.estimate(now, rate_mg_min=rate).cp_ng_ml

    # -- ticker ----------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        """Alarm timers, and the plasma estimate once per second of session time (exact at
        each pump report, projected at the pump's rate in between): one series, not two."""
        next_cp = 0
        while not self._stop.wait(self.tick_s):
            now = self.clock()
            try:
                self.alarms.tick(now)
            except Exception:
                log.exception("alarm tick failed")
            if now >= next_cp:
                next_cp = now + 1_000_000
                cp = self.plasma_now()
                if cp is not None:
                    self.bus.publish([Reading(Channel.PLASMA_ESTIMATE, cp, now, "pk",
                                              quality=Quality.QUESTIONABLE)])
