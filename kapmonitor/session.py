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
so alarms keep being evaluated and recorded even when no GUI runs or the GUI freezes. The
same ticker supervises: a device whose thread ended is restarted with a technical alarm,
and a recorder that cannot commit for a second becomes a technical alarm (issue 12).

No database call runs on a device thread or the GUI thread: t0, phase entries, notes,
devices and the close itself go to the recorder's writer thread (``Recorder.submit``), in
order with the samples and retried through a fault until they land, so a lock held by
another program never stalls a pump's reader and t0 is never lost.

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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from .alarm_limits import AlarmLimits, Priority
from .alarms import AlarmEngine, AlarmEvent
from .bus import Bus, Subscription
from .dosing import DeliveredDose, DeliveredDoseTracker
from .live import LiveBuffers
from .model import (
    Channel,
    DeviceState,
    Message,
    PumpRunState,
    PumpState,
    Quality,
    Reading,
    now_us,
)
from .phases import DischargeRules, PhaseCheck
from .pk import DEFAULT_MODEL, PKModel, PlasmaEstimator
from .resume import ResumeState, load_resume_state, stored_pump_states
from .store import Recorder, Store
from .store.errors import describe_db_error
from .store.recorder import Unwritten

__all__ = ["DeviceHandle", "LiveSession", "Phase", "PhaseNeedsConfirmation", "SessionConfig"]

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


class PhaseNeedsConfirmation(ValueError):
    """A phase change that contradicts what the room knows; ``checks`` say what, and
    ``set_phase(..., confirmed=True[, reason=...])`` makes it anyway, on the record."""

    def __init__(self, checks: list[PhaseCheck]) -> None:
        super().__init__("; ".join(c.message for c in checks))
        self.checks = checks


class DeviceHandle(Protocol):
    """What the session needs of a device: start it, stop it. It publishes on its own.

    A handle may also offer ``is_alive() -> bool`` and ``restart() -> bool`` (the
    transport's ``DeviceRunner`` does): the session's supervisor then restarts a device
    whose thread ended, and ``state`` (a ``DeviceState``) tells it when data flows again."""

    def start(self) -> object: ...
    def stop(self, timeout: float = ...) -> None: ...


#: A recorder that has not committed for this long (a lock, a full disk, a slow disk) is a
#: technical alarm: issue 12 asks for one within 2 s of the fault.
DB_STALL_ALARM_S = 0.5


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
                 limits: AlarmLimits | None = None,
                 resume: ResumeState | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        # timers are due in the clock's time: at a simulated --speed N, wake N times as often
        self.tick_s = max(0.005, tick_s / getattr(clock, "speed", 1.0))
        limits = limits or AlarmLimits.defaults().with_overrides(config.alarm_overrides)
        self.alarms = AlarmEngine(limits)
        self.started_us = clock()
        self.resumed_from = resume
        if resume is None:
            self.session_id = store.create_session(
                patient=config.patient, room=config.room, clinicians=config.clinicians,
                protocol=config.protocol, demo=config.demo, alarm_limits=self.alarms.limits,
                t_us=self.started_us, **config.programme_columns())
        else:
            self.session_id = resume.session_id
            store.claim_session(resume.session_id, self.started_us)
        self.bus = Bus(on_critical_error=self._critical_failed)
        self.recorder = Recorder(store, self.session_id, on_error=self._db_error)
        self.live = LiveBuffers()
        self.t0_us: int | None = None if resume is None else resume.t0_us
        #: who set t0: "pump" (its first report of delivery) or "manual" (Start infusion)
        self.t0_source: str | None = None
        #: the pump's first delivery after a manual t0, until a clinician decides
        self.t0_proposal_us: int | None = None
        self._t0_entry: Future[Any] | None = None
        self._pump_started = False
        self._t0_listeners: list[Callable[[int], object]] = []
        self.discharge_rules = DischargeRules.defaults()
        #: when dosing ended (the Emergence entry); the observation countdown runs from it
        self.infusion_end_us: int | None = None if resume is None else resume.infusion_end_us
        self._assessments: list[float] = ([] if resume is None
                                          else list(resume.discharge_scores))
        #: phase entries of this run, for undo: (phase, future of the annotation id)
        self._phase_history: list[tuple[Phase, Future[Any]]] = []
        self.phase = Phase.BASELINE if resume is None else Phase(resume.phase)
        self.devices: dict[str, DeviceHandle] = {}
        self._dose_lock = threading.Lock()
        self._tracker: DeliveredDoseTracker | None = None
        self._estimator: PlasmaEstimator | None = None
        self._pump_source: str | None = None
        self._last_pump: PumpState | None = None
        self.last_dose: DeliveredDose | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._listeners: list[Callable[[AlarmEvent], object]] = []
        self._subs: list[Subscription] = []
        self._db_alarm = False
        self._dropped_seen = (0, 0)
        self._restarted: set[str] = set()
        self.closed = False
        #: what the close could not write (falsy when everything landed)
        self.unwritten = Unwritten()
        if resume is not None:
            self._replay_pump_history(resume)

    @classmethod
    def resume(cls, store: Store, session_id: int, *, clock: Callable[[], int] = now_us,
               tick_s: float = 0.2, pk_model: PKModel = DEFAULT_MODEL) -> LiveSession:
        """Carry on an open session (left by a closed window or a crash) as the same
        session: its programme, t0, phase and alarm limits from the store, the delivered
        dose and plasma estimate rebuilt from its pump events. ``start()`` then records a
        gap marker over the outage; attach the devices again as for a new session."""
        st = load_resume_state(store, session_id)
        config = SessionConfig(patient=st.patient, room=st.room, clinicians=st.clinicians,
                               protocol=st.protocol, demo=st.demo, pk_model=pk_model,
                               **{k: v for k, v in st.programme.items() if v is not None})
        return cls(store, config, clock=clock, tick_s=tick_s, limits=st.alarm_limits,
                   resume=st)

    def _replay_pump_history(self, st: ResumeState) -> None:
        """The dose tracker and the plasma estimator fed every stored pump state, exactly
        as live: the state a session that never stopped had at its last pump event."""
        if st.pump_source is None:
            return
        for state in stored_pump_states(self.store, st.session_id, st.pump_source):
            self._pump_source = state.source
            self._last_pump = state
            if state.state in (PumpRunState.RUNNING, PumpRunState.BOLUS):
                self._pump_started = True
            self._update_dose(state, replay=True)

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
        st = self.resumed_from
        if st is None:
            self._phase_entry(Phase.BASELINE, self.started_us, "kapmonitor")
        else:
            gap_s = (self.started_us - st.last_data_us) / 1e6
            self._submit(self.session_id, "gap",
                         f"Recording interrupted for {_duration(gap_s)}: the session was "
                         "resumed. Data in this interval is missing; the delivered dose "
                         "continues from the pump's volume counter.",
                         t_us=st.last_data_us, author="kapmonitor", code="recording-resumed",
                         value=round(gap_s, 3))
        return self

    def attach(self, name: str, device: DeviceHandle, *, protocol: str = "", port: str = "",
               serial_number: str = "") -> None:
        """Register and start a device whose messages carry ``source == name``. The device
        row is written by the recorder, so a busy database never delays the device."""
        t_us = self.clock()
        self.recorder.submit(lambda conn: self.store.add_device(
            self.session_id, name, protocol, port, serial_number, t_us=t_us, conn=conn),
            f"device {name}")
        device.start()
        self.devices[name] = device  # after start: the supervisor only sees started devices

    def close(self, t_us: int | None = None, *, author: str = "",
              timeout: float = 15.0) -> Unwritten:
        """Stop devices, write everything, close the session. Idempotent.

        The recorder is flushed *with* the closing entries, not after them: a failing
        write can no longer leave the queued rows to die with a thread (issue 12). If the
        database still refuses after ``timeout`` seconds, the session stays open (the next
        start offers recovery, with a gap marker from its last data) and the returned
        ``Unwritten`` says what was not written; it is falsy when everything landed."""
        if self.closed:
            return self.unwritten
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
        for sub in self._subs:
            sub.close()
        self._phase_entry(Phase.CLOSED, t_us, author or "kapmonitor")
        self.recorder.submit(
            lambda conn: self.store.close_session(self.session_id, t_us, conn=conn),
            "the session's close")
        self.unwritten = self.recorder.stop(timeout)
        return self.unwritten

    def abandon(self) -> None:
        """Stop threads without closing the session (as a crash would leave it): for tests
        of recovery and for a GUI that is killed mid-session."""
        for device in self.devices.values():
            device.stop()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        self.unwritten = self.recorder.stop()
        self.closed = True

    # -- time ------------------------------------------------------------------------------

    def session_time_s(self, t_us: int | None = None) -> float | None:
        """Seconds since the infusion start (negative before it); None until t0 is known."""
        if self.t0_us is None:
            return None
        return ((t_us if t_us is not None else self.clock()) - self.t0_us) / 1e6

    def mark_infusion_start(self, t_us: int | None = None, *, author: str = "",
                            source: str = "manual") -> None:
        """t0 by hand. With a pump connected, the pump's first delivery afterwards is
        offered as the true t0 (``t0_proposal_us``, ``on_t0_proposal``): issue 13 item 1, a
        manual start 9.5 min early otherwise shifts every session time in the record."""
        t_us = t_us if t_us is not None else self.clock()
        with self._dose_lock:
            self.t0_us = t_us
            self.t0_source = source
            self.phase = Phase.INFUSION
        self._t0_entry = self._record_infusion_start(t_us, author or source)

    def pump_running(self) -> bool | None:
        """Whether the session's pump reports delivery now; None without a pump."""
        pump = self._last_pump
        if pump is None:
            return None
        return pump.state in (PumpRunState.RUNNING, PumpRunState.BOLUS)

    def on_t0_proposal(self, callback: Callable[[int], object]) -> None:
        """``callback(pump_start_us)`` when a pump starts delivering after a manual t0.
        Called on the pump's reader thread: a GUI relays it to its own thread."""
        self._t0_listeners.append(callback)

    def accept_pump_t0(self, *, author: str = "") -> Future[Any]:
        """Move t0 to the pump's first delivery: the session's t0 is updated (the audit
        keeps the manual value) and the Infusion phase entry is amended (the original entry
        stays, pointing at nothing new; the amendment points at it)."""
        with self._dose_lock:
            new = self.t0_proposal_us
            if new is None:
                raise ValueError("no pump start to move t0 to")
            old = self.t0_us
            self.t0_us, self.t0_source, self.t0_proposal_us = new, "pump", None
            if self._estimator is not None and self._estimator.start_us != new:
                self._estimator = None  # rebuilt from the pump's start at its next report
        entry, sid, now = self._t0_entry, self.session_id, self.clock()
        shift = (new - old) / 60e6 if old is not None else 0.0

        def write(conn: Connection) -> int:
            self.store.set_infusion_start(sid, new, now, conn=conn)
            text = (f"Infusion (t0 moved {shift:+.1f} min to the pump's first delivery; "
                    "the manual start is kept in the amended entry)")
            if entry is None:
                return self.store.add_annotation(sid, "phase", text, t_us=new, author=author,
                                                 code=Phase.INFUSION.value, conn=conn)
            return self.store.amend_annotation(int(entry.result()), text=text, t_us=new,
                                               author=author, conn=conn)
        return self.recorder.submit(write, "t0 moved to the pump's start")

    def keep_manual_t0(self, reason: str, *, author: str = "") -> Future[int]:
        """Keep the manual t0 although the pump started later; the reason is recorded."""
        if not reason.strip():
            raise ValueError("say why the manual start time is kept")
        with self._dose_lock:
            pump = self.t0_proposal_us
            self.t0_proposal_us = None
        where = (f" (the pump started delivering at session time "
                 f"{(pump - (self.t0_us or pump)) / 60e6:+.1f} min)") if pump else ""
        return self.add_entry("observation", f"Manual infusion start kept{where}: {reason}",
                              author=author, code="t0-kept-manual")

    def _record_infusion_start(self, t_us: int, author: str) -> Future[Any]:
        """t0 and its phase entry in one transaction on the recorder's thread: called from
        the pump's reader thread, so it only enqueues; retried until it lands."""
        now = self.clock()
        sid, label = self.session_id, PHASE_LABELS[Phase.INFUSION]

        def write(conn: Connection) -> int:
            self.store.set_infusion_start(sid, t_us, now, conn=conn)
            return self.store.add_annotation(sid, "phase", label, t_us=t_us, author=author,
                                             code=Phase.INFUSION.value, conn=conn)
        return self.recorder.submit(write, "the infusion start")

    def observation_remaining_s(self, t_us: int | None = None) -> float | None:
        """Seconds of the minimum observation after the infusion still to run (0 when
        done); None before the infusion has ended."""
        if self.infusion_end_us is None:
            return None
        need = self.discharge_rules.observation_for(self.config.route) * 60.0
        now = t_us if t_us is not None else self.clock()
        return max(0.0, need - (now - self.infusion_end_us) / 1e6)

    def phase_checks(self, phase: Phase, t_us: int | None = None) -> list[PhaseCheck]:
        """What a move to ``phase`` would contradict (empty: nothing to confirm)."""
        checks: list[PhaseCheck] = []
        pump = self._last_pump
        if phase in (Phase.EMERGENCE, Phase.RECOVERY, Phase.DISCHARGE_READY) and \
                self.pump_running() and pump is not None:
            rate = "" if pump.rate_ml_h is None else f" at {pump.rate_ml_h:g} mL/h"
            checks.append(PhaseCheck(f"the pump still reports delivery{rate}"))
        if phase is Phase.DISCHARGE_READY:
            remaining = self.observation_remaining_s(t_us)
            minutes = self.discharge_rules.observation_for(self.config.route)
            if remaining:
                checks.append(PhaseCheck(
                    f"the minimum observation of {minutes:g} min after the infusion has "
                    f"{remaining / 60:.0f} min to run"))
            rules = self.discharge_rules
            if not any(v >= rules.minimum for v in self._assessments):
                checks.append(PhaseCheck(
                    f"no discharge assessment (Aldrete score of {rules.minimum:g} or more) is "
                    "recorded", needs_reason=True))
        return checks

    def set_phase(self, phase: Phase, t_us: int | None = None, *, author: str = "",
                  confirmed: bool = False, reason: str = "") -> None:
        """Move to a later phase (the timeline only goes forward; ``undo_phase`` amends the
        last change). A change that contradicts the room (``phase_checks``) raises
        ``PhaseNeedsConfirmation`` unless ``confirmed``; discharge readiness without an
        assessment also needs a ``reason``. Both are written in the phase entry."""
        if _ORDER.index(phase) <= _ORDER.index(self.phase):
            raise ValueError(f"cannot go from {PHASE_LABELS[self.phase]} back to "
                             f"{PHASE_LABELS[phase]}")
        if phase is Phase.CLOSED:
            raise ValueError("close the session with close()")
        if phase is Phase.INFUSION:
            self.mark_infusion_start(t_us, author=author)
            return
        t_us = t_us if t_us is not None else self.clock()
        checks = self.phase_checks(phase, t_us)
        if checks and not confirmed:
            raise PhaseNeedsConfirmation(checks)
        if any(c.needs_reason for c in checks) and not reason.strip():
            raise ValueError("say why the session is ready for discharge without an "
                             "assessment")
        text = PHASE_LABELS[phase]
        if checks:
            text += " (confirmed although " + "; ".join(c.message for c in checks) + ")"
        if reason.strip():
            text += f"; reason: {reason.strip()}"
        if phase is Phase.EMERGENCE:
            self.infusion_end_us = t_us
        self._phase_entry(phase, t_us, author, text)

    def undo_phase(self, *, author: str = "") -> Future[Any]:
        """Take back the last phase change made in this window (a mistaken or double click):
        the entry is amended to say so and the session returns to the phase before; nothing
        is deleted. The infusion start is corrected through t0, not undone here."""
        if not self._phase_history:
            raise ValueError("no phase change to undo")
        last, fut = self._phase_history[-1]
        if last in (Phase.INFUSION, Phase.BASELINE):
            raise ValueError("the infusion start is corrected by moving t0, not undone")
        self._phase_history.pop()
        back = _ORDER[_ORDER.index(last) - 1]  # after Infusion, so t0 is set
        self.phase = back
        if last is Phase.EMERGENCE:
            self.infusion_end_us = None
        text = f"{PHASE_LABELS[last]} undone: back to {PHASE_LABELS[back]}"
        return self.recorder.submit(
            lambda conn: self.store.amend_annotation(int(fut.result()), text=text,
                                                     author=author, code=back.value,
                                                     conn=conn), "a phase change undone")

    def _phase_entry(self, phase: Phase, t_us: int, author: str,
                     text: str | None = None) -> Future[int]:
        self.phase = phase
        fut = self._submit(self.session_id, "phase", text or PHASE_LABELS[phase], t_us=t_us,
                           author=author, code=phase.value)
        if phase is not Phase.CLOSED:
            self._phase_history.append((phase, fut))
        return fut

    # -- entries ---------------------------------------------------------------------------

    def _submit(self, *args: Any, **kwargs: Any) -> Future[int]:
        """Entries go to the recorder's writer thread: the GUI never waits on the disk, and
        an entry written during a database fault lands when the fault clears."""
        return self.recorder.submit(
            lambda conn: self.store.add_annotation(*args, conn=conn, **kwargs),
            f"a {args[1]} entry")

    def add_entry(self, kind: str, text: str = "", *, t_us: int | None = None,
                  author: str = "", code: str = "", value: float | None = None) -> Future[int]:
        """An observation, cue or assessment at ``t_us`` (default now); returns a future of
        the annotation id."""
        if kind == "assessment" and code == self.discharge_rules.scale and value is not None:
            self._assessments.append(float(value))
        return self._submit(self.session_id, kind, text, t_us=t_us or self.clock(),
                            author=author, code=code, value=value)

    def amend_entry(self, annotation_id: int, *, text: str | None = None,
                    value: float | None = None, author: str = "") -> Future[int]:
        return self.recorder.submit(
            lambda conn: self.store.amend_annotation(annotation_id, text=text, value=value,
                                                     author=author, conn=conn),
            "a correction")

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

    def audio_off(self, reason: str, *, minutes: float | None = None,
                  user: str = "") -> list[AlarmEvent]:
        """Turn the room's alarm sounds off for this session (recorded with the reason);
        they come back after ``minutes`` or with the next session, never silently later."""
        return self.alarms.audio_off(self.clock(), reason, user=user, minutes=minutes)

    def audio_on(self, *, user: str = "") -> list[AlarmEvent]:
        return self.alarms.audio_on(self.clock(), user=user)

    def _evaluate_alarms(self, messages: Sequence[Message]) -> None:
        self.alarms.evaluate(messages)

    def _critical_failed(self, sub: Subscription, exc: BaseException) -> None:
        self.alarms.raise_technical(f"tech.{sub.name}.failed", Priority.HIGH,
                                    f"{sub.name} failed: {exc}", self.clock())

    def _db_error(self, exc: BaseException | None) -> None:
        """From the recorder's thread: a failed commit raises (or updates) the database
        alarm at once; a commit after failures clears it. The alarm events themselves are
        recorded when the database takes writes again."""
        now = self.clock()
        if exc is None:
            self._db_alarm = False
            self.alarms.clear_technical("tech.database", now, "Recording to disk resumed")
        else:
            self._db_alarm = True
            self.alarms.raise_technical(
                "tech.database", Priority.HIGH,
                f"Recording to disk failed: {describe_db_error(exc)}; "
                f"{self.recorder.pending_rows} rows kept in memory", now)

    def _watch_recorder(self, now: int) -> None:
        """From the ticker: a commit that has waited ``DB_STALL_ALARM_S`` (a lock waits the
        busy timeout before it fails) raises the alarm without waiting for the failure;
        rows dropped at the memory bound raise a second one."""
        rec = self.recorder
        stalled = rec.stalled_s()
        if stalled >= DB_STALL_ALARM_S:
            if not self._db_alarm:
                self._db_alarm = True
                why = rec.fault or "waiting for the database (busy, full or slow disk)"
                self.alarms.raise_technical(
                    "tech.database", Priority.HIGH,
                    f"Recording to disk is stalled: {why}; {rec.pending_rows} rows kept in "
                    "memory", now)
        elif self._db_alarm and rec.fault is None:
            self._db_alarm = False
            self.alarms.clear_technical("tech.database", now, "Recording to disk resumed")
        dropped = (rec.stats.dropped_wave_samples, rec.stats.dropped_numerics)
        if dropped != self._dropped_seen:
            self._dropped_seen = dropped
            self.alarms.raise_technical(
                "tech.database.loss", Priority.MEDIUM,
                f"Data lost: {dropped[0]} wave samples and {dropped[1]} numerics dropped to "
                "stay within memory while the disk was unavailable (counted in the record)",
                now)

    def _supervise_devices(self, now: int) -> None:
        """Restart a device whose thread ended (it should never happen: the transport
        turns every failure into a reconnect) and keep an alarm up until it streams."""
        for name, device in self.devices.items():
            is_alive = getattr(device, "is_alive", None)
            restart = getattr(device, "restart", None)
            key = f"tech.driver.{_alarm_tag(name)}"
            if is_alive is not None and restart is not None and not is_alive():
                failed = False
                try:
                    restarted = bool(restart())
                except Exception as exc:
                    log.exception("restarting device %s failed", name)
                    restarted, failed = False, True
                    why = f"; restart failed: {exc}"
                else:
                    why = "; restarted" if restarted else ""
                # restart() is False for a device stopped on purpose: nothing to say
                if restarted or (failed and name not in self._restarted):
                    self._restarted.add(name)
                    log.error("driver for %s stopped%s", name, why)
                    self.alarms.raise_technical(key, Priority.HIGH,
                                                f"Driver for {name} stopped{why}", now)
            elif name in self._restarted and getattr(device, "state", None) is \
                    DeviceState.STREAMING:
                self._restarted.discard(name)
                self.alarms.clear_technical(key, now, f"Driver for {name} streaming again")

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
                delivering = m.state in (PumpRunState.RUNNING, PumpRunState.BOLUS)
                started = proposal = False
                if delivering and self.t0_us is None:
                    # t0 and phase change together, before anything is published, so every
                    # reader sees one consistent timeline
                    self.t0_us = m.t_us
                    self.t0_source = "pump"
                    self.phase = Phase.INFUSION
                    started = True
                elif (delivering and not self._pump_started and self.t0_source == "manual"
                      and self.t0_proposal_us is None):
                    self.t0_proposal_us = m.t_us
                    proposal = True
                if delivering:
                    self._pump_started = True
                out += self._update_dose(m)
            if started:
                self._t0_entry = self._record_infusion_start(m.t_us, "pump")
            if proposal:
                for cb in list(self._t0_listeners):
                    try:
                        cb(m.t_us)
                    except Exception:
                        log.exception("t0 proposal listener failed")
            if (m.state is PumpRunState.COMPLETE and self.phase is Phase.INFUSION):
                self.set_phase(Phase.EMERGENCE, m.t_us, author="pump", confirmed=True)
        if out:
            self.bus.publish(out)

    def _update_dose(self, state: PumpState, *, replay: bool = False) -> list[Message]:
        if not self._ensure_dose_models():
            return []
        assert self._tracker is not None
        dose = self._tracker.update(state)
        self.last_dose = dose
        out: list[Message] = []
        if dose.delivered_mg is not None:
            out.append(Reading(Channel.DELIVERED_DOSE, dose.delivered_mg, state.t_us, "dose"))
        if dose.discrepancy and not replay:
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
            try:
                self._watch_recorder(now)
                self._supervise_devices(now)
            except Exception:
                log.exception("supervision failed")
            if now >= next_cp:
                next_cp = now + 1_000_000
                cp = self.plasma_now()
                if cp is not None:
                    self.bus.publish([Reading(Channel.PLASMA_ESTIMATE, cp, now, "pk",
                                              quality=Quality.QUESTIONABLE)])


def _alarm_tag(name: str) -> str:
    """A device name as an alarm-key part (``pump/slot2`` -> ``pump_slot2``)."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name) or "device"


def _duration(seconds: float) -> str:
    """``75`` -> "1 min 15 s": how long an outage was, in words a nurse reads."""
    seconds = max(0, round(seconds))
    m, sec = divmod(seconds, 60)
    h, m = divmod(m, 60)
    if h:
        return f"{h} h {m} min"
    return f"{m} min {sec} s" if m else f"{sec} s"
