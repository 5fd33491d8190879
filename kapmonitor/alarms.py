"""The alarm engine: limits, priorities, delays, hysteresis, escalation, latching,
acknowledge, audio pause, technical alarms and the "consider hold" advisory.

It is pure and its time is explicit: nothing here reads a clock or starts a thread.
:meth:`AlarmEngine.evaluate` takes the bus's messages (a reading's time is its ``t_us``) and
:meth:`AlarmEngine.tick` moves time on for delays, reminders, the audio pause and the stale
watchdog, so a test or a replay drives it exactly, and a frozen GUI never stops it (DESIGN §2).
One lock guards the state: the bus's device threads evaluate while the GUI thread
acknowledges. Every change is an :class:`AlarmEvent`, returned and delivered in order to
subscribers (the recorder stores them); a failing subscriber is logged, counted and raised as
a technical alarm, and never stops evaluation (CONVENTIONS 6).

KAP Monitor is a secondary display and record, not a primary alarm device; alarms never stop
a pump. The definitions below are this engine's; clinical.md is cited where it gives them.

Priorities (clinical.md §5.1, IEC 60601-1-8): high, medium, low. Physiological conditions use
the limits of §4.2 from ``resources/alarm_limits.toml`` (see :mod:`kapmonitor.alarm_limits`).

Conditions and keys. Each channel side is ONE condition: ``"spo2.low"``, ``"hr.high"``,
``"nibp_sys.high"``. It is raised at the channel's priority (medium) and escalates to high on
the same key when the value crosses the high-priority limit (``"< 88"`` for SpO2), then
de-escalates when it comes back. Apnoea is ``"rr.apnoea"``. Technical conditions are
``"tech.<source>.stale"``, ``"tech.<source>.disconnected"``, ``"tech.<source>.pump.<code>"``
(``...pump.unclassified.<raw>`` keeps the wire code) and whatever the session raises with
:meth:`AlarmEngine.raise_technical` (``"tech.dose_discrepancy"``, ``"tech.disk"``...).
Advisories are ``"advisory.hold.bp"``, ``"advisory.hold.spo2"``, ``"advisory.hold.hr"``.

Condition delay (§5.3): a limit violation must persist in valid readings for the channel's
``delay_s`` (10 s SpO2, HR, pulse, RR, EtCO2; 0 s NIBP) before the alarm is raised; it is
raised at ``onset + delay`` (by :meth:`tick` or the next reading) at the priority that has
itself persisted for the delay, so escalation to high also needs the high-priority band to
persist for the delay (an artefact spike cannot escalate). "Persist" means every valid reading
since the onset was beyond the limit; a reading inside the limit, or one whose quality is not
OK/DEMO, restarts the delay.

Hysteresis: an active condition clears only when a valid reading is back inside the limit by
the channel's band (SpO2 1 %, HR and pulse 3 /min, RR 2 /min, EtCO2 2 mmHg, NIBP 0 because
its readings are discrete measurements minutes apart): ``< 92`` with 1 clears at >= 93. The
same band applies to de-escalation from the high-priority limit. Clearing has no delay.

Latching (§5.3 app default): a physiological condition that reached HIGH priority and was not
acknowledged while present stays in :meth:`AlarmEngine.active` after it ends, with
``latched=True``, at the highest priority it reached, silent (the visual signal stays, the
sound stops), until :meth:`reset` or :meth:`acknowledge`. A condition acknowledged while
present is removed when it ends (the user already knows). A high-priority pump alarm that
stopped the infusion latches the same way (issue 13: an occlusion the pump cleared by itself
was gone before anyone saw it). Other medium/low physiological, technical and advisory
conditions never latch. A latched condition that recurs is raised
again on the same key and keeps its latch until reset.

Acknowledge (§5.3, IEC 60601-1-8 A2): per condition; its sound stops, its visual stays. If it
is still present after ``timing.reminder_s`` (180 s) the acknowledgement lapses and it sounds
again (a ``reminder`` event). Escalation to a higher priority cancels an acknowledgement.

Audio pause (§5.3): global, default 120 s, at most 180 s, ends by itself (``audio-resume``
event at expiry). It covers alarms up to a ceiling: the highest priority sounding when paused,
and at least medium (so a pre-emptive pause while handling a probe covers the medium alarms
that handling provokes). A raise or escalation above the ceiling breaks through: the pause
ends at once. Advisories never sound.

Pulse rate (oximeter) has HR's limits but is superseded by the ECG heart rate: a pulse
reading taken while a valid HR reading is at most ``timing.supersede_window_s`` (10 s) old is
not evaluated, and ends any pulse condition, so one tachycardia is one alarm.

Apnoea (§4.2 "apnoea 20 s = high", §5.3): ``"rr.apnoea"``, high, when one source has shown
only "no breath" in valid readings for 20 s: RR below 1 /min, or EtCO2 below 5 mmHg. It ends
when every source that showed no breath has shown a breath again. It latches like any high
physiological alarm. RR low (medium, 10 s) is a separate condition and may be active too.

Consider hold (§4.3), kind ``advisory``, priority low, silent, non-latching:
``advisory.hold.bp`` when SBP >= 180 or DBP >= 110 on 2 consecutive NIBP measurements (SBP
and DBP within 30 s are one measurement), or any SBP >= 200 / DBP >= 120; it ends on the first
complete measurement below both. ``advisory.hold.spo2`` when SpO2 < 90 % for more than 30 s,
``advisory.hold.hr`` when HR (or pulse, without ECG) > 130 or < 45 /min for more than 60 s;
both end on the first valid reading back inside.

Technical (non-latching, never escalate by value): a DeviceStatus STALE or DISCONNECTED
raises ``tech.<source>.stale`` / ``.disconnected`` (medium); STREAMING, STOPPED or new data
from the source clears them. Independently, a source that has delivered data and then nothing
(no reading, wave chunk or pump state) for ``technical.stale_timeout_s`` (15 s) raises the
same stale alarm at the :meth:`tick` that sees it (a backstop for a driver thread that died
without saying so). Pump alarms come from ``PumpState.alarms`` and clear when a later state
of the same pump no longer lists them; priorities from ``technical.pump_priorities``
(occlusion high, end low...), else the pump's own flag.

Readings: only readings whose quality is OK or DEMO are evaluated; INVALID, QUESTIONABLE,
ARTEFACT, OUT_OF_RANGE, CALIBRATING, SENSOR_OFF readings, values outside the channel's
plausible range and readings older than the channel's last one are counted and never raise a
physiological alarm (they do restart a pending delay; they never clear an active alarm).
Waves are not evaluated per sample; a wave chunk only proves its device is alive.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .alarm_limits import AlarmLimits, ChannelLimits, LimitsError, Priority, Threshold
from .model import (
    CHANNELS,
    Channel,
    DeviceState,
    DeviceStatus,
    Message,
    PumpRunState,
    PumpState,
    Quality,
    Reading,
    WaveChunk,
    device_of,
)

__all__ = [
    "ActiveAlarm",
    "AlarmAction",
    "AlarmCommandError",
    "AlarmEngine",
    "AlarmEvent",
    "AlarmKind",
    "AlarmLimits",
    "AudioMode",
    "AudioState",
    "LimitsError",
    "Priority",
]

logger = logging.getLogger(__name__)

_US = 1_000_000
#: Quality bits that keep a reading out of alarm evaluation: anything but DEMO.
_NOT_EVALUATED = ~int(Quality.DEMO)
AUDIO_KEY = "system.audio"
SUBSCRIBER_KEY = "tech.alarm_engine.subscriber"
#: A subscriber-failure alarm clears after this long without a new failure.
SUBSCRIBER_CLEAR_S = 30
_LATCHED_SUFFIX = "; latched until reset"


class AlarmKind(enum.StrEnum):
    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"
    ADVISORY = "advisory"
    SYSTEM = "system"  # audio pause / resume: not a condition


class AlarmAction(enum.StrEnum):
    RAISE = "raise"
    ESCALATE = "escalate"
    DEESCALATE = "de-escalate"
    ACKNOWLEDGE = "acknowledge"
    REMINDER = "reminder"
    AUDIO_PAUSE = "audio-pause"
    AUDIO_RESUME = "audio-resume"
    AUDIO_OFF = "audio-off"
    AUDIO_ON = "audio-on"
    CLEAR = "clear"
    RESET = "reset"


class AlarmCommandError(ValueError):
    """A user command (acknowledge, reset, pause, raise_technical) was refused; the
    message says why."""


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One change of alarm state, in the order it happened (``event_id`` increases by one).
    ``limit`` is the threshold applied at ``priority``; ``latched`` is True on the ``clear``
    of a condition that stays displayed until reset."""

    event_id: int
    key: str
    channel: Channel | None
    kind: AlarmKind
    priority: Priority
    action: AlarmAction
    t_us: int
    value: float | None
    limit: float | None
    message: str
    user: str = ""
    source: str = ""
    latched: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "key": self.key,
            "channel": None if self.channel is None else str(self.channel),
            "kind": str(self.kind), "priority": str(self.priority),
            "action": str(self.action), "t_us": self.t_us, "value": self.value,
            "limit": self.limit, "message": self.message, "user": self.user,
            "source": self.source, "latched": self.latched,
        }


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm as the alarm bar shows it. ``present``: the condition still exists;
    ``latched``: it ended but stays until reset; ``audible``: it would sound (present, not
    acknowledged, not an advisory); ``sounding``: audible and not covered by the pause."""

    key: str
    channel: Channel | None
    kind: AlarmKind
    priority: Priority
    peak_priority: Priority
    message: str
    value: float | None
    limit: float | None
    source: str
    raised_us: int
    updated_us: int
    present: bool
    latched: bool
    acknowledged: bool
    audible: bool
    sounding: bool


class AudioMode(enum.StrEnum):
    SILENT = "silent"
    PAUSED = "paused"
    SOUNDING = "sounding"
    OFF = "off"  # IEC 60601-1-8 AUDIO OFF: the room's sounds muted, with a reason


@dataclass(frozen=True, slots=True)
class AudioState:
    """What the speaker does. ``priority``: the highest audible priority (what sounds, or
    would sound were it not paused)."""

    mode: AudioMode
    priority: Priority | None
    paused_remaining_s: float | None = None
    paused_until_us: int | None = None
    #: AUDIO OFF: why, by whom, and until when (None: until the session ends)
    off_reason: str = ""
    off_until_us: int | None = None


# ------------------------------------------------------------------ internal state


class _Cond:
    """A raised condition (present, or latched after it ended)."""

    __slots__ = (
        "ack_us", "acknowledged", "channel", "key", "kind", "latched", "limit", "message",
        "peak", "present", "priority", "raised_us", "reminder_due_us", "source", "sticky",
        "updated_us", "value",
    )

    def __init__(self, key: str, channel: Channel | None, kind: AlarmKind,
                 priority: Priority, source: str, t: int) -> None:
        self.key = key
        self.channel = channel
        self.kind = kind
        self.priority = priority
        self.peak = priority
        self.source = source
        self.raised_us = t
        self.updated_us = t
        self.present = True
        self.latched = False
        self.acknowledged = False
        self.ack_us: int | None = None
        self.reminder_due_us: int | None = None
        self.value: float | None = None
        self.limit: float | None = None
        self.message = ""
        #: a technical condition that latches like a high physiological one: a pump alarm
        #: that stopped the infusion (issue 13 item 5: it cleared itself unseen)
        self.sticky = False

    @property
    def audible(self) -> bool:
        return (self.present and not self.acknowledged
                and self.kind in (AlarmKind.PHYSIOLOGICAL, AlarmKind.TECHNICAL))


class _Side:
    """One side (low or high) of one channel: one condition that can escalate."""

    __slots__ = (
        "base", "channel", "delay_us", "esc_onset", "escalate", "hy", "key", "label",
        "last_value", "low", "medium", "onset", "precision", "source", "unit", "word",
        "worst",
    )

    def __init__(self, lim: ChannelLimits, low: bool) -> None:
        self.channel = lim.channel
        self.key = f"{lim.channel}.{'low' if low else 'high'}"
        self.word = "LOW" if low else "HIGH"
        self.low = low
        med = lim.low if low else lim.high
        assert med is not None
        self.medium: Threshold = med
        self.escalate: Threshold | None = lim.escalate_low if low else lim.escalate_high
        self.base = lim.priority
        self.delay_us = round(lim.delay_s * _US)
        self.hy = lim.hysteresis
        self.label = lim.label
        self.unit = lim.unit
        self.precision = CHANNELS[lim.channel].precision
        self.onset: int | None = None
        self.esc_onset: int | None = None
        self.last_value = math.nan
        self.source = ""
        #: the worst value of the episode (lowest for a low side), shown beside the current
        self.worst: float | None = None


class _Chan:
    """Everything evaluated for one channel, found with one dict lookup per reading."""

    __slots__ = (
        "apnoea_below",
        "channel",
        "hi",
        "hold",
        "last_t",
        "last_valid_t",
        "lo",
        "sides",
        "superseded_by",
    )

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.sides: tuple[_Side, ...] = ()
        self.superseded_by: Channel | None = None
        self.apnoea_below: float | None = None
        self.hold: str | None = None  # "bp", "spo2", "rate"
        self.lo, self.hi = CHANNELS[channel].plausible
        self.last_t = -(2**62)
        self.last_valid_t: int | None = None


class _Src:
    __slots__ = ("alarmed", "armed", "connecting_since", "last_seen", "name", "pump_keys",
                 "tag")

    def __init__(self, name: str) -> None:
        self.name = name or "device"
        self.tag = _tag(name) or "device"
        self.last_seen = -(2**62)
        self.armed = False
        #: first CONNECTING since the device last streamed (or was stopped): a device
        #: that never gets through is alarmed, whatever state its thread is stuck in
        self.connecting_since: int | None = None
        self.alarmed = False
        self.pump_keys: set[str] = set()


class _BpMeasurement:
    __slots__ = ("dbp", "sbp", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.sbp: float | None = None
        self.dbp: float | None = None


_TAG_RE = re.compile(r"[^A-Za-z0-9_-]+")
_TECH_KEY_RE = re.compile(r"tech\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _tag(name: str) -> str:
    return _TAG_RE.sub("_", name).strip("_")


def _fv(v: float | None, precision: int = 0) -> str:
    return "?" if v is None else f"{v:.{precision}f}"


def _max_priority(a: Priority | None, b: Priority | None) -> Priority | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.rank >= b.rank else b


# ------------------------------------------------------------------ the engine


class AlarmEngine:
    """Evaluates readings, pump states and device states against :class:`AlarmLimits`.

    Thread-safe: one lock around all state; subscribers are called outside it, in event
    order, by whichever thread is delivering (a subscriber may call back into the engine).
    """

    def __init__(self, limits: AlarmLimits | None = None) -> None:
        self._limits = limits if limits is not None else AlarmLimits.defaults()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._conds: dict[str, _Cond] = {}
        self._chans: dict[Channel, _Chan] = {}
        self._sides: list[_Side] = []
        self._sources: dict[str, _Src] = {}
        self._subscribers: tuple[Callable[[AlarmEvent], object], ...] = ()
        self._outbox: collections.deque[AlarmEvent] = collections.deque()
        self._delivering = False
        self._last_subscriber_error_us: int | None = None
        self._clock = 0
        self._pause_until: int | None = None
        self._pause_ceiling = Priority.MEDIUM
        self._off: tuple[str, str, int | None] | None = None  # (reason, user, until)
        self._counters: collections.Counter[str] = collections.Counter()
        self._build()

    def _build(self) -> None:
        lim = self._limits
        for ch, cl in lim.channels.items():
            c = self._chan(ch)
            sides = []
            if cl.low is not None:
                sides.append(_Side(cl, low=True))
            if cl.high is not None:
                sides.append(_Side(cl, low=False))
            c.sides = tuple(sides)
            c.superseded_by = cl.superseded_by
            self._sides.extend(sides)
        ap = lim.apnoea
        if ap.enabled:
            self._chan(Channel.RR).apnoea_below = ap.rr_below
            self._chan(Channel.ETCO2).apnoea_below = ap.etco2_below
        self._apnoea_onset: dict[Channel, int | None] = {Channel.RR: None, Channel.ETCO2: None}
        h = lim.hold
        if h.enabled:
            self._chan(Channel.NIBP_SYS).hold = "bp"
            self._chan(Channel.NIBP_DIA).hold = "bp"
            self._chan(Channel.SPO2).hold = "spo2"
            self._chan(Channel.HR).hold = "rate"
            self._chan(Channel.PULSE).hold = "rate"
        self._bp: collections.deque[_BpMeasurement] = collections.deque(
            maxlen=h.consecutive_readings
        )
        self._hold_onset: dict[str, int | None] = {"spo2": None, "rate": None}
        self._hold_value: dict[str, float] = {"spo2": math.nan, "rate": math.nan}
        t = lim.timing
        self._reminder_us = round(t.reminder_s * _US)
        self._supersede_us = round(t.supersede_window_s * _US)
        self._stale_us = round(lim.technical.stale_timeout_s * _US)

    def _chan(self, ch: Channel) -> _Chan:
        c = self._chans.get(ch)
        if c is None:
            c = self._chans[ch] = _Chan(ch)
        return c

    # ------------------------------------------------------------ public: queries

    @property
    def limits(self) -> dict[str, Any]:
        """The limits in force, JSON-serialisable (``kapmonitor sessions --json``)."""
        return self._limits.to_json()

    @property
    def alarm_limits(self) -> AlarmLimits:
        return self._limits

    def active(self) -> list[ActiveAlarm]:
        """Raised alarms (present or latched), highest priority first, then oldest first
        (a standing alarm is not pushed down by newer ones of the same priority)."""
        with self._lock:
            paused = self._paused(self._clock)
            out = []
            for c in self._conds.values():
                shown = c.priority if c.present else c.peak
                out.append(ActiveAlarm(
                    key=c.key, channel=c.channel, kind=c.kind, priority=shown,
                    peak_priority=c.peak, message=c.message, value=c.value, limit=c.limit,
                    source=c.source, raised_us=c.raised_us, updated_us=c.updated_us,
                    present=c.present, latched=c.latched, acknowledged=c.acknowledged,
                    audible=c.audible, sounding=c.audible and not paused,
                ))
        out.sort(key=lambda a: (-a.priority.rank, a.raised_us, a.key))
        return out

    def audio_state(self, now_us: int | None = None) -> AudioState:
        """Silent, paused (with the seconds left) or sounding (with its priority).
        ``now_us`` defaults to the latest time the engine has seen."""
        with self._lock:
            now = self._clock if now_us is None else now_us
            prio = self._audible_priority()
            if self._off is not None:
                reason, _user, until = self._off
                return AudioState(AudioMode.OFF, prio, off_reason=reason, off_until_us=until)
            if self._paused(now):
                assert self._pause_until is not None
                return AudioState(AudioMode.PAUSED, prio,
                                  (self._pause_until - now) / _US, self._pause_until)
            if prio is not None:
                return AudioState(AudioMode.SOUNDING, prio)
            return AudioState(AudioMode.SILENT, None)

    def stats(self) -> dict[str, int]:
        """Counters: readings evaluated and set aside (by reason), events, subscriber
        errors. Cheap; for the status bar and the tests."""
        with self._lock:
            return dict(self._counters)

    # ------------------------------------------------------------ public: subscribers

    def subscribe(self, callback: Callable[[AlarmEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event, in order. Returns an unsubscribe
        function. Callbacks should be quick (enqueue and return)."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)
        return lambda: self.unsubscribe(callback)

    def unsubscribe(self, callback: Callable[[AlarmEvent], object]) -> None:
        with self._lock:
            subs = list(self._subscribers)
            if callback in subs:
                subs.remove(callback)
            self._subscribers = tuple(subs)

    # ------------------------------------------------------------ public: time and data

    def evaluate(self, messages: Iterable[Message] | Message,
                 now_us: int | None = None) -> list[AlarmEvent]:
        """Evaluate the bus's messages (their own ``t_us`` is their time); then, if
        ``now_us`` is given, :meth:`tick` to it. Returns the events produced."""
        if isinstance(messages, Reading | PumpState | DeviceStatus | WaveChunk):
            messages = (messages,)
        out: list[AlarmEvent] = []
        with self._lock:
            for m in messages:
                tp = type(m)
                if tp is Reading:
                    self._on_reading(m, out)  # type: ignore[arg-type]
                elif tp is WaveChunk:
                    self._touch(m.source, m.t_us, out)
                    self._counters["wave_chunks"] += 1
                elif tp is PumpState:
                    self._on_pump(m, out)  # type: ignore[arg-type]
                elif tp is DeviceStatus:
                    self._on_status(m, out)  # type: ignore[arg-type]
                else:
                    self._counters["messages_ignored"] += 1
                    continue
                if m.t_us > self._clock:
                    self._clock = m.t_us
            if now_us is not None:
                self._tick(now_us, out)
            self._queue(out)
        self._deliver()
        return out

    def tick(self, now_us: int) -> list[AlarmEvent]:
        """Move time on: raise conditions whose delay has passed, lapse acknowledgements,
        end an expired audio pause, raise stale alarms for silent devices."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._tick(now_us, out)
            self._queue(out)
        self._deliver()
        return out

    # ------------------------------------------------------------ public: user commands

    def acknowledge(self, condition_key: str, now_us: int, user: str = "") -> list[AlarmEvent]:
        """Acknowledge one condition: its sound stops (reminder after ``reminder_s`` if it is
        still present). On a latched condition that has ended this is a reset."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            c = self._conds.get(condition_key)
            if c is None:
                raise AlarmCommandError(f"there is no active alarm {condition_key!r}")
            if not c.present:
                self._reset(c, now_us, user, out, "acknowledged")
            elif not c.acknowledged:
                self._ack(c, now_us, user, out)
            self._queue(out)
        self._deliver()
        return out

    def acknowledge_all(self, now_us: int, user: str = "") -> list[AlarmEvent]:
        """Acknowledge every present condition and reset every latched one."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            for c in list(self._conds.values()):
                if not c.present:
                    self._reset(c, now_us, user, out, "acknowledged")
                elif not c.acknowledged:
                    self._ack(c, now_us, user, out)
            self._queue(out)
        self._deliver()
        return out

    def reset(self, condition_key: str, now_us: int, user: str = "") -> list[AlarmEvent]:
        """Remove a latched alarm whose condition has ended. Refused for a condition that
        is still present (acknowledge it instead)."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            c = self._conds.get(condition_key)
            if c is None:
                raise AlarmCommandError(f"there is no active alarm {condition_key!r}")
            if c.present:
                raise AlarmCommandError(
                    f"{c.message}: the condition is still present; acknowledge it instead"
                )
            self._reset(c, now_us, user, out, "reset")
            self._queue(out)
        self._deliver()
        return out

    def audio_pause(self, now_us: int, seconds: float | None = None,
                    user: str = "") -> list[AlarmEvent]:
        """AUDIO PAUSED for ``seconds`` (default ``timing.audio_pause_s``, 120 s); visual
        signals continue. Pausing again restarts the countdown."""
        t = self._limits.timing
        s = t.audio_pause_s if seconds is None else seconds
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
            raise AlarmCommandError(f"audio pause must be a number of seconds, got {s!r}")
        if not 1 <= s <= t.audio_pause_max_s:
            raise AlarmCommandError(
                f"audio pause must be 1 to {t.audio_pause_max_s:g} s, got {s:g} s"
            )
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            ceiling = _max_priority(self._audible_priority(), Priority.MEDIUM)
            assert ceiling is not None
            self._pause_until = now_us + round(s * _US)
            self._pause_ceiling = ceiling
            by = f" by {user}" if user else ""
            self._event(out, AlarmAction.AUDIO_PAUSE, AUDIO_KEY, None, AlarmKind.SYSTEM,
                        ceiling, now_us, float(s), None,
                        f"Audio paused for {s:g} s{by} (alarms up to {ceiling} priority)",
                        user=user)
            self._queue(out)
        self._deliver()
        return out

    def audio_resume(self, now_us: int, user: str = "") -> list[AlarmEvent]:
        """End an audio pause early. No event if audio is not paused."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            if self._pause_until is not None:
                by = f" by {user}" if user else ""
                self._end_pause(now_us, out, f"Audio resumed{by}", user)
            self._queue(out)
        self._deliver()
        return out

    def audio_off(self, now_us: int, reason: str, *, user: str = "",
                  minutes: float | None = None) -> list[AlarmEvent]:
        """AUDIO OFF for this session (issue 13 item 4): every alarm stays visible, none
        sounds, until ``audio_on``, the end of ``minutes`` (1 to 720), or the session's end
        (a new engine starts with sound). A reason is required and recorded."""
        if not isinstance(reason, str) or not reason.strip():
            raise AlarmCommandError("say why alarm sounds are turned off in this room")
        if minutes is not None and (isinstance(minutes, bool) or not math.isfinite(minutes)
                                    or not 1 <= minutes <= 720):
            raise AlarmCommandError(f"alarm sounds can be off for 1 to 720 min, got {minutes!r}")
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            until = None if minutes is None else now_us + round(minutes * 60 * _US)
            self._off = (reason.strip(), user, until)
            by = f" by {user}" if user else ""
            how = "until the session ends" if minutes is None else f"for {minutes:g} min"
            self._event(out, AlarmAction.AUDIO_OFF, AUDIO_KEY, None, AlarmKind.SYSTEM,
                        Priority.HIGH, now_us, minutes, None,
                        f"Alarm sounds OFF in this room {how}{by}: {reason.strip()}", user=user)
            self._queue(out)
        self._deliver()
        return out

    def audio_on(self, now_us: int, user: str = "", why: str = "") -> list[AlarmEvent]:
        """End AUDIO OFF. No event when sounds were on."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            if self._off is not None:
                self._audio_on(now_us, out, why or (f"Alarm sounds back on by {user}" if user
                                                    else "Alarm sounds back on"), user)
            self._queue(out)
        self._deliver()
        return out

    def _audio_on(self, t: int, out: list[AlarmEvent], message: str, user: str = "") -> None:
        self._off = None
        self._event(out, AlarmAction.AUDIO_ON, AUDIO_KEY, None, AlarmKind.SYSTEM,
                    Priority.HIGH, t, None, None, message, user=user)

    def raise_technical(self, key: str, priority: Priority | str, message: str,
                        now_us: int) -> list[AlarmEvent]:
        """Raise (or re-prioritise) a technical alarm the session detected: dose
        discrepancy, disk or database error... ``key`` starts with ``tech.``. Raising a
        present key again with the same priority only updates its message."""
        if not isinstance(key, str) or not _TECH_KEY_RE.fullmatch(key):
            raise AlarmCommandError(
                f"technical alarm key must look like 'tech.disk_full', got {key!r}"
            )
        try:
            prio = Priority.parse(priority, "technical alarm")
        except LimitsError as exc:
            raise AlarmCommandError(str(exc)) from None
        if not isinstance(message, str) or not message.strip():
            raise AlarmCommandError("a technical alarm needs a message saying what is wrong")
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            self._set_technical(key, prio, message, now_us, "", out)
            self._queue(out)
        self._deliver()
        return out

    def clear_technical(self, key: str, now_us: int, message: str = "") -> list[AlarmEvent]:
        """Clear a technical alarm; nothing happens if it is not present."""
        out: list[AlarmEvent] = []
        with self._lock:
            self._advance(now_us)
            self._clear_technical(key, now_us, message, out)
            self._queue(out)
        self._deliver()
        return out

    # ------------------------------------------------------------ events and delivery

    def _event(self, out: list[AlarmEvent], action: AlarmAction, key: str,
               channel: Channel | None, kind: AlarmKind, priority: Priority, t: int,
               value: float | None, limit: float | None, message: str, *, user: str = "",
               source: str = "", latched: bool = False) -> None:
        out.append(AlarmEvent(next(self._ids), key, channel, kind, priority, action, t, value,
                              limit, message, user, source, latched))
        self._counters["events"] += 1

    def _cond_event(self, out: list[AlarmEvent], c: _Cond, action: AlarmAction, t: int,
                    message: str | None = None, user: str = "", latched: bool = False,
                    priority: Priority | None = None) -> None:
        self._event(out, action, c.key, c.channel, c.kind, priority or c.priority, t, c.value,
                    c.limit, message or c.message, user=user, source=c.source,
                    latched=latched)

    def _queue(self, events: list[AlarmEvent]) -> None:
        # under the lock: the outbox keeps event_id order across threads
        if events:
            self._outbox.extend(events)

    def _deliver(self) -> None:
        """Deliver queued events in order. Only one thread delivers at a time; another
        thread's events are picked up by the loop already running, so no thread waits on
        a slow subscriber except the one delivering, and a subscriber calling back into
        the engine does not reorder events."""
        with self._lock:
            if self._delivering or not self._outbox:
                return
            self._delivering = True
        try:
            while True:
                with self._lock:
                    if not self._outbox:
                        self._delivering = False
                        return
                    ev = self._outbox.popleft()
                    subs = self._subscribers
                for cb in subs:
                    try:
                        cb(ev)
                    except Exception as exc:
                        self._subscriber_failed(cb, ev, exc)
        except BaseException:
            with self._lock:
                self._delivering = False
            raise

    def _subscriber_failed(self, cb: Callable[[AlarmEvent], object], ev: AlarmEvent,
                           exc: Exception) -> None:
        name = getattr(cb, "__qualname__", None) or repr(cb)
        logger.error("alarm event subscriber %s failed on event %d (%s)", name, ev.event_id,
                     ev.key, exc_info=exc)
        with self._lock:
            self._counters["subscriber_errors"] += 1
            self._last_subscriber_error_us = ev.t_us
            out: list[AlarmEvent] = []
            self._set_technical(
                SUBSCRIBER_KEY, Priority.MEDIUM,
                f"Alarm events not delivered to {name}: {exc!r} "
                f"({self._counters['subscriber_errors']} errors)",
                ev.t_us, "", out,
            )
            self._queue(out)

    # ------------------------------------------------------------ condition primitives

    def _raise(self, key: str, channel: Channel | None, kind: AlarmKind, prio: Priority,
               t: int, value: float | None, limit: float | None, message: str, source: str,
               out: list[AlarmEvent]) -> _Cond:
        c = self._conds.get(key)
        if c is None:
            c = self._conds[key] = _Cond(key, channel, kind, prio, source, t)
        else:  # a latched condition that recurs: raised again, keeps its latch until reset
            c.present = True
            c.latched = False
            c.acknowledged = False
            c.ack_us = c.reminder_due_us = None
            c.priority = prio
            c.peak = _max_priority(c.peak, prio) or prio
            c.raised_us = t
            c.source = source
        c.updated_us = t
        c.value, c.limit, c.message = value, limit, message
        self._cond_event(out, c, AlarmAction.RAISE, t)
        self._breakthrough(c, t, out)
        return c

    def _reprioritise(self, c: _Cond, prio: Priority, t: int, value: float | None,
                      limit: float | None, message: str, out: list[AlarmEvent]) -> None:
        up = prio.rank > c.priority.rank
        c.priority = prio
        c.peak = _max_priority(c.peak, prio) or prio
        c.value, c.limit, c.message, c.updated_us = value, limit, message, t
        if up and c.acknowledged:  # a worse condition needs attention again
            c.acknowledged = False
            c.ack_us = c.reminder_due_us = None
        self._cond_event(out, c, AlarmAction.ESCALATE if up else AlarmAction.DEESCALATE, t)
        if up:
            self._breakthrough(c, t, out)

    def _end(self, c: _Cond, t: int, value: float | None, message: str,
             out: list[AlarmEvent]) -> None:
        """The condition no longer exists: latch it or remove it."""
        c.present = False
        c.value, c.updated_us = value, t
        if (((c.kind is AlarmKind.PHYSIOLOGICAL and c.peak is Priority.HIGH) or c.sticky)
                and not c.acknowledged):
            c.latched = True
            c.message = message + _LATCHED_SUFFIX
            self._cond_event(out, c, AlarmAction.CLEAR, t, latched=True)
        else:
            del self._conds[c.key]
            self._cond_event(out, c, AlarmAction.CLEAR, t, message)

    def _ack(self, c: _Cond, t: int, user: str, out: list[AlarmEvent]) -> None:
        c.acknowledged = True
        c.ack_us = t
        c.reminder_due_us = t + self._reminder_us if c.kind is not AlarmKind.ADVISORY else None
        by = f" by {user}" if user else ""
        self._cond_event(out, c, AlarmAction.ACKNOWLEDGE, t, f"{c.message}: acknowledged{by}",
                         user=user)

    def _reset(self, c: _Cond, t: int, user: str, out: list[AlarmEvent], how: str) -> None:
        del self._conds[c.key]
        by = f" by {user}" if user else ""
        what = c.message.removesuffix(_LATCHED_SUFFIX)
        self._cond_event(out, c, AlarmAction.RESET, t, f"{what}: {how}{by}", user=user,
                         priority=c.peak)

    def _set_technical(self, key: str, prio: Priority, message: str, t: int, source: str,
                       out: list[AlarmEvent]) -> None:
        c = self._conds.get(key)
        if c is None or not c.present:
            self._raise(key, None, AlarmKind.TECHNICAL, prio, t, None, None, message, source,
                        out)
        elif c.priority is not prio:
            self._reprioritise(c, prio, t, None, None, message, out)
        else:
            c.message = message

    def _clear_technical(self, key: str, t: int, message: str, out: list[AlarmEvent]) -> None:
        c = self._conds.get(key)
        if c is not None and c.present:
            self._end(c, t, None, message or f"{c.message}: cleared", out)

    # ------------------------------------------------------------ audio

    def _paused(self, now: int) -> bool:
        return self._pause_until is not None and now < self._pause_until

    def _audible_priority(self) -> Priority | None:
        best: Priority | None = None
        for c in self._conds.values():
            if c.audible:
                best = _max_priority(best, c.priority)
        return best

    def _breakthrough(self, c: _Cond, t: int, out: list[AlarmEvent]) -> None:
        if (self._pause_until is not None and c.audible
                and c.priority.rank > self._pause_ceiling.rank):
            self._end_pause(t, out, f"Audio pause ended: {c.message} broke through")

    def _end_pause(self, t: int, out: list[AlarmEvent], message: str, user: str = "") -> None:
        ceiling = self._pause_ceiling
        self._pause_until = None
        self._event(out, AlarmAction.AUDIO_RESUME, AUDIO_KEY, None, AlarmKind.SYSTEM, ceiling,
                    t, None, None, message, user=user)

    # ------------------------------------------------------------ readings

    def _on_reading(self, r: Reading, out: list[AlarmEvent]) -> None:
        self._touch(r.source, r.t_us, out)
        c = self._chans.get(r.channel)
        if c is None:
            self._counters["readings_not_alarmed"] += 1
            return
        t = r.t_us
        if t < c.last_t:  # a late reading must not undo a newer one
            self._counters["readings_out_of_order"] += 1
            return
        c.last_t = t
        v = float(r.value)
        if r.quality & _NOT_EVALUATED:
            self._counters["readings_bad_quality"] += 1
            self._invalid(c)
            return
        if not c.lo <= v <= c.hi:  # also NaN
            self._counters["readings_implausible"] += 1
            self._invalid(c)
            return
        self._counters["readings_evaluated"] += 1
        c.last_valid_t = t
        superseded = False
        if c.superseded_by is not None:
            other = self._chans.get(c.superseded_by)
            superseded = (other is not None and other.last_valid_t is not None
                          and t - other.last_valid_t <= self._supersede_us)
        if superseded:
            for side in c.sides:
                self._side_superseded(side, v, t, c.superseded_by, out)
        else:
            for side in c.sides:
                self._side_reading(side, v, t, r.source, out)
        if c.apnoea_below is not None:
            self._apnoea_reading(c.channel, v < c.apnoea_below, t, out)
        if c.hold is not None:
            if c.hold == "bp":
                self._hold_bp(c.channel, v, t, r.source, out)
            elif c.hold == "spo2":
                self._hold_timed("spo2", v < self._limits.hold.spo2_below, v, t, out)
            elif not superseded:
                h = self._limits.hold
                self._hold_timed("rate", v > h.hr_above or v < h.hr_below, v, t, out)

    def _invalid(self, c: _Chan) -> None:
        """A reading that cannot be trusted: pending delays restart; nothing clears."""
        for side in c.sides:
            cond = self._conds.get(side.key)
            side.esc_onset = None
            if cond is None or not cond.present:
                side.onset = None
                side.worst = None
        if c.apnoea_below is not None and not self._present("rr.apnoea"):
            self._apnoea_onset[c.channel] = None
        if c.hold in ("spo2", "rate") and not self._present(f"advisory.hold.{_HOLD_KEY[c.hold]}"):
            self._hold_onset[c.hold] = None

    def _present(self, key: str) -> bool:
        c = self._conds.get(key)
        return c is not None and c.present

    def _side_message(self, s: _Side, prio: Priority, v: float) -> tuple[str, float]:
        """The current value first, then the limit, then the worst value of the episode
        when it differs (issue 13 item 6: the text kept the onset value while the tile
        showed a worse one)."""
        th = s.escalate if (prio is Priority.HIGH and s.escalate is not None) else s.medium
        worst = ""
        if s.worst is not None and _fv(s.worst, s.precision) != _fv(v, s.precision):
            worst = f"; worst {_fv(s.worst, s.precision)}"
        return (f"{s.label} {s.word} {_fv(v, s.precision)} {s.unit} ({th.text()}{worst})",
                th.value)

    def _side_reading(self, s: _Side, v: float, t: int, source: str,
                      out: list[AlarmEvent]) -> None:
        s.last_value = v
        s.source = source
        med = s.medium.violated(v)
        esc = s.escalate is not None and s.escalate.violated(v)
        cond = self._conds.get(s.key)
        present = cond is not None and cond.present
        if med or esc:
            if s.worst is None or (v < s.worst if s.low else v > s.worst):
                s.worst = v
            if s.onset is None:
                s.onset = t
            if esc:
                if s.esc_onset is None:
                    s.esc_onset = t
            else:
                s.esc_onset = None
        else:
            s.esc_onset = None
            if not present:
                s.onset = None
                s.worst = None
                return
        if present:
            assert cond is not None
            if not med and s.medium.cleared(v, s.hy):
                s.onset = None
                worst = "" if s.worst is None else (f"; worst {_fv(s.worst, s.precision)} "
                                                    f"{s.unit}")
                s.worst = None
                self._end(cond, t, v, f"{s.label} {s.word} cleared at {_fv(v, s.precision)} "
                          f"{s.unit}{worst}", out)
                return
            if (cond.priority is Priority.HIGH and s.escalate is not None
                    and s.base is not Priority.HIGH and s.escalate.cleared(v, s.hy)):
                msg, lim = self._side_message(s, s.base, v)
                self._reprioritise(cond, s.base, t, v, lim, msg, out)
            else:
                cond.value, cond.updated_us = v, t
                if med or esc:  # the text follows the value (no event: the display reads it)
                    cond.message = self._side_message(s, cond.priority, v)[0] + (
                        ": escalated to high" if cond.message.endswith("escalated to high")
                        else "")
        self._side_due(s, t, out)

    def _side_due(self, s: _Side, t: int, out: list[AlarmEvent]) -> None:
        """Raise or escalate once a band has persisted for the delay."""
        if s.esc_onset is not None and t - s.esc_onset >= s.delay_us:
            due = Priority.HIGH
        elif s.onset is not None and t - s.onset >= s.delay_us:
            due = s.base
        else:
            return
        cond = self._conds.get(s.key)
        if cond is None or not cond.present:
            msg, lim = self._side_message(s, due, s.last_value)
            self._raise(s.key, s.channel, AlarmKind.PHYSIOLOGICAL, due, t, s.last_value, lim,
                        msg, s.source, out)
        elif due.rank > cond.priority.rank:
            msg, lim = self._side_message(s, due, s.last_value)
            self._reprioritise(cond, due, t, s.last_value, lim, msg + ": escalated to high"
                               if due is Priority.HIGH else msg, out)

    def _side_superseded(self, s: _Side, v: float, t: int, by: Channel | None,
                         out: list[AlarmEvent]) -> None:
        s.onset = s.esc_onset = None
        cond = self._conds.get(s.key)
        if cond is not None and cond.present:
            who = self._limits.channels[by].label if by in self._limits.channels else str(by)
            self._end(cond, t, v, f"{s.label} {s.word} superseded by {who}", out)

    # ------------------------------------------------------------ apnoea

    def _apnoea_reading(self, ch: Channel, evidence: bool, t: int,
                        out: list[AlarmEvent]) -> None:
        if evidence:
            if self._apnoea_onset[ch] is None:
                self._apnoea_onset[ch] = t
        else:
            self._apnoea_onset[ch] = None
        self._apnoea_check(t, out)

    def _apnoea_check(self, t: int, out: list[AlarmEvent]) -> None:
        ap = self._limits.apnoea
        if not ap.enabled:
            return
        onsets = self._apnoea_onset
        cond = self._conds.get("rr.apnoea")
        present = cond is not None and cond.present
        if not present:
            need = round(ap.seconds * _US)
            for ch, o in onsets.items():
                if o is not None and t - o >= need:
                    what = "RR 0" if ch is Channel.RR else "no exhaled CO2"
                    self._raise("rr.apnoea", Channel.RR, AlarmKind.PHYSIOLOGICAL, ap.priority,
                                t, None, ap.seconds,
                                f"APNOEA: no breath for {ap.seconds:g} s ({what})", "", out)
                    return
        elif all(o is None for o in onsets.values()):
            assert cond is not None
            self._end(cond, t, None, "APNOEA ended: breathing detected", out)

    # ------------------------------------------------------------ consider hold (§4.3)

    def _hold_bp(self, ch: Channel, v: float, t: int, source: str,
                 out: list[AlarmEvent]) -> None:
        h = self._limits.hold
        m = self._bp[-1] if self._bp else None
        if m is None or t - m.start > round(h.measurement_window_s * _US):
            m = _BpMeasurement(t)
            self._bp.append(m)
        if ch is Channel.NIBP_SYS:
            m.sbp = v
        else:
            m.dbp = v

        def hyper(x: _BpMeasurement) -> bool:
            return ((x.sbp is not None and x.sbp >= h.sbp_at_or_above)
                    or (x.dbp is not None and x.dbp >= h.dbp_at_or_above))

        severe = ((m.sbp is not None and m.sbp >= h.sbp_severe_at_or_above)
                  or (m.dbp is not None and m.dbp >= h.dbp_severe_at_or_above))
        consec = len(self._bp) >= h.consecutive_readings and all(hyper(x) for x in self._bp)
        if m.sbp is not None and m.dbp is not None:
            bp = f"{m.sbp:.0f}/{m.dbp:.0f} mmHg"
        else:
            bp = f"SBP {m.sbp:.0f} mmHg" if m.sbp is not None else f"DBP {m.dbp:.0f} mmHg"
        key = "advisory.hold.bp"
        cond = self._conds.get(key)
        present = cond is not None and cond.present
        if severe or consec:
            if severe:
                msg = (f"Consider hold: BP {bp} (SBP ≥ {h.sbp_severe_at_or_above:g} or DBP ≥ "
                       f"{h.dbp_severe_at_or_above:g})")
            else:
                msg = (f"Consider hold: BP {bp} on {h.consecutive_readings} consecutive "
                       f"readings (SBP ≥ {h.sbp_at_or_above:g} or DBP ≥ "
                       f"{h.dbp_at_or_above:g})")
            if present:
                assert cond is not None
                cond.message, cond.value, cond.updated_us = msg, v, t
            else:
                self._raise(key, ch, AlarmKind.ADVISORY, Priority.LOW, t, v, None, msg, source,
                            out)
        elif present and m.sbp is not None and m.dbp is not None and not hyper(m):
            assert cond is not None
            self._end(cond, t, v, f"Consider hold (BP) ended: BP {bp}", out)

    def _hold_timed(self, which: str, beyond: bool, v: float, t: int,
                    out: list[AlarmEvent]) -> None:
        self._hold_value[which] = v
        if beyond:
            if self._hold_onset[which] is None:
                self._hold_onset[which] = t
            self._hold_due(which, t, out)
        else:
            self._hold_onset[which] = None
            key = f"advisory.hold.{_HOLD_KEY[which]}"
            cond = self._conds.get(key)
            if cond is not None and cond.present:
                self._end(cond, t, v, f"Consider hold ({_HOLD_KEY[which]}) ended at {v:.0f}",
                          out)

    def _hold_due(self, which: str, t: int, out: list[AlarmEvent]) -> None:
        onset = self._hold_onset[which]
        if onset is None:
            return
        h = self._limits.hold
        key = f"advisory.hold.{_HOLD_KEY[which]}"
        if self._present(key):
            return
        v = self._hold_value[which]
        if which == "spo2":
            dur = h.spo2_for_more_than_s
            msg = (f"Consider hold: SpO2 < {h.spo2_below:g} % for more than {dur:g} s "
                   f"(now {v:.0f} %)")
            ch = Channel.SPO2
        else:
            dur = h.hr_for_more_than_s
            msg = (f"Consider hold: heart rate > {h.hr_above:g} or < {h.hr_below:g} /min for "
                   f"more than {dur:g} s (now {v:.0f})")
            ch = Channel.HR
        if t - onset > round(dur * _US):  # "for > 30 s": strictly more
            self._raise(key, ch, AlarmKind.ADVISORY, Priority.LOW, t, v, None, msg, "", out)

    # ------------------------------------------------------------ devices and pumps

    def _touch(self, name: str, t: int, out: list[AlarmEvent]) -> None:
        # data from a pump in a rack ("pump/slot11") is data on the link "pump"
        name = device_of(name)
        s = self._sources.get(name)
        if s is None:
            s = self._sources[name] = _Src(name)
        if t > s.last_seen:
            s.last_seen = t
        s.armed = True
        s.connecting_since = None
        if s.alarmed:
            self._clear_link(s, t, out, "data received")

    def _clear_link(self, s: _Src, t: int, out: list[AlarmEvent], why: str) -> None:
        remaining = False
        for kind in ("stale", "disconnected"):
            c = self._conds.get(f"tech.{s.tag}.{kind}")
            if c is not None and c.present:
                if c.raised_us <= t:
                    self._end(c, t, None, f"{s.name}: {kind} cleared, {why}", out)
                else:
                    remaining = True
        s.alarmed = remaining

    def _on_status(self, st: DeviceStatus, out: list[AlarmEvent]) -> None:
        s = self._sources.get(st.source)
        if s is None:
            s = self._sources[st.source] = _Src(st.source)
        t = st.t_us
        tech = self._limits.technical
        detail = f": {st.detail}" if st.detail else ""
        if st.state is DeviceState.STREAMING:
            if t > s.last_seen:
                s.last_seen = t
            s.armed = True
            s.connecting_since = None
            self._clear_link(s, t, out, "streaming again")
        elif st.state is DeviceState.STALE:
            self._set_technical(f"tech.{s.tag}.stale", tech.stale_priority,
                                f"{s.name}: no valid data (stale){detail}", t, st.source, out)
            s.alarmed = True
        elif st.state is DeviceState.DISCONNECTED:
            self._clear_technical(f"tech.{s.tag}.stale", t, f"{s.name}: disconnected", out)
            self._set_technical(f"tech.{s.tag}.disconnected", tech.disconnected_priority,
                                f"{s.name} DISCONNECTED{detail}", t, st.source, out)
            s.alarmed = True
            s.armed = False
        elif st.state is DeviceState.STOPPED:
            s.armed = False
            s.connecting_since = None
            self._clear_link(s, t, out, "stopped")
        else:  # CONNECTING: no data yet; a disconnected alarm stays until data flows, and
            # a device that stays here (a thread stuck opening its port) is alarmed by _tick
            s.armed = False
            if s.connecting_since is None:
                s.connecting_since = t
        if st.state is DeviceState.DISCONNECTED and s.connecting_since is None:
            s.connecting_since = t

    def _on_pump(self, ps: PumpState, out: list[AlarmEvent]) -> None:
        self._touch(ps.source, ps.t_us, out)
        # alarms are per pump ("pump/slot11"); the link watchdog is per device ("pump")
        s = self._sources.get(ps.source)
        if s is None:
            s = self._sources[ps.source] = _Src(ps.source)
        t = ps.t_us
        prios = self._limits.technical.pump_priorities
        want: dict[str, tuple[Priority, str]] = {}
        for a in ps.alarms:
            code = _tag(a.code.lower()) or "unclassified"
            fallback = Priority.HIGH if a.high_priority else Priority.MEDIUM
            text = f": {a.text}" if a.text else ""
            # words first, what to do next; the wire code only as the detail (issue 13)
            if code == "unclassified":
                key = f"tech.{s.tag}.pump.unclassified.{_tag(a.raw) or 'blank'}"
                detail = f", {a.text}" if a.text else ""
                msg = f"PUMP ALARM \u2014 check pump [{s.name}] (code {a.raw!r}{detail})"
            else:
                key = f"tech.{s.tag}.pump.{code}"
                msg = f"PUMP {code.replace('_', ' ').upper()} \u2014 check pump [{s.name}]{text}"
            want[key] = (prios.get(code, fallback), msg)
        if ps.state is PumpRunState.ALARM and not ps.alarms:
            want[f"tech.{s.tag}.pump.alarm"] = (
                Priority.HIGH, f"PUMP STOPPED BY AN ALARM \u2014 check pump [{s.name}]"
            )
        stopped = ps.state not in (PumpRunState.RUNNING, PumpRunState.BOLUS)
        for key in s.pump_keys - want.keys():
            self._clear_technical(key, t, "", out)
        for key, (prio, msg) in want.items():
            self._set_technical(key, prio, msg, t, ps.source, out)
            c = self._conds.get(key)
            if c is not None and stopped and prio is Priority.HIGH:
                c.sticky = True  # it stopped the infusion: stays until acknowledged
        s.pump_keys = set(want)

    # ------------------------------------------------------------ time

    def _advance(self, now: int) -> None:
        if now > self._clock:
            self._clock = now

    def _tick(self, now: int, out: list[AlarmEvent]) -> None:
        self._advance(now)
        for s in self._sides:
            if s.onset is not None or s.esc_onset is not None:
                self._side_due(s, now, out)
        self._apnoea_check(now, out)
        self._hold_due("spo2", now, out)
        self._hold_due("rate", now, out)
        tech = self._limits.technical
        for s in self._sources.values():
            if (s.connecting_since is not None and now - s.connecting_since >= self._stale_us
                    and not self._present(f"tech.{s.tag}.disconnected")):
                self._set_technical(
                    f"tech.{s.tag}.disconnected", tech.disconnected_priority,
                    f"{s.name} NOT CONNECTED for {(now - s.connecting_since) / _US:.0f} s",
                    now, s.name, out)
                s.alarmed = True
            if s.armed and now - s.last_seen >= self._stale_us:
                key = f"tech.{s.tag}.stale"
                if not self._present(key):
                    self._set_technical(key, tech.stale_priority,
                                        f"{s.name}: no data for {tech.stale_timeout_s:g} s",
                                        now, s.name, out)
                    s.alarmed = True
        for c in list(self._conds.values()):
            if (c.present and c.acknowledged and c.reminder_due_us is not None
                    and now >= c.reminder_due_us):
                c.acknowledged = False
                c.ack_us = c.reminder_due_us = None
                self._cond_event(out, c, AlarmAction.REMINDER, now,
                                 f"{c.message}: still present (reminder)")
                self._breakthrough(c, now, out)
        if self._pause_until is not None and now >= self._pause_until:
            self._end_pause(now, out, "Audio pause expired")
        if self._off is not None and self._off[2] is not None and now >= self._off[2]:
            self._audio_on(now, out, "Alarm sounds back on: the set time ended")
        if (self._last_subscriber_error_us is not None
                and now - self._last_subscriber_error_us >= SUBSCRIBER_CLEAR_S * _US):
            self._last_subscriber_error_us = None
            self._clear_technical(SUBSCRIBER_KEY, now, "Alarm event delivery recovered", out)


_HOLD_KEY = {"spo2": "spo2", "rate": "hr"}
