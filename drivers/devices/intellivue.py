"""Philips IntelliVue monitor over MIB/RS232 Data Export: the app's side, sans-I/O.

Follows the minimal client state machine of shared/protocols/philips-intellivue-mib.md §8:

1. on (re)connect send Abort to clear a stale session, wait ``ABORT_SETTLE_S``;
2. send the Association Request (variant B, §3.1); wait ``ASSOCIATION_TIMEOUT_S`` for the
   result; on refuse, abort or timeout try again after ``ASSOCIATION_RETRY_S``;
3. answer the MDS Create Event Report with its result, echoing invoke id and event time
   (§3.4), and take the monitor's time reference from it (§5.5);
4. (the optional RTSA priority list of §4.3 is not set: the monitor's own list is used);
5. extended polls for numerics and real-time waves with ``POLL_PERIOD_S`` (§4.2, §4.3),
   re-issued ``POLL_RENEW_BEFORE_S`` before they expire, with new invoke id and poll number;
6. a single poll of the MDS as keep-alive when nothing was sent for the keep-alive interval
   (§3.5); nothing received for ``RECEIVE_TIMEOUT_S`` -> abort and back to step 1;
7. ``release()``: Release Request, wait ``RELEASE_TIMEOUT_S`` for the result, else Abort.

Poll results are mapped to ``Reading`` and ``WaveChunk`` (§4.4, §5, §6). Results whose
invoke id this host did not issue (another client's, or a previous session's ghost traffic,
§7 pitfall 14) are ignored and counted in ``counters``; so is anything the host cannot map
with certainty (a unit it cannot convert, a wave without its scale): never guessed, never
silent.

Choices where the document is uncertain (each a named constant below):

* ``NUMERIC_SOURCES``: which physio ids feed a channel, in priority order (airway RR from
  CO2 before impedance RR; generic temperature before site temperatures); one reading per
  channel per result.
* ``WAVE_STAMP_MARKS_BLOCK_END``: a wave block's poll-result time stamp is taken as the time
  just after its last sample (§5.5 [?] leaves first vs last open).
* ``WAVE_GAP_TOLERANCE_S``: blocks whose device times join within this are contiguous
  (host times chained without jitter); otherwise the chunk is re-anchored to arrival time.
* Wave scaling (§5.4): the object's ScaleRangeSpec16, linear; raw values outside the scaled
  range are extrapolated, not clamped (CONVENTIONS 19), and the chunk is flagged
  QUESTIONABLE. Without a scale spec, sample spec and sample period the block is not
  emitted (counted ``wave_no_spec``). ``PLETH_ANY_UNIT``: pleth is relative, so its unit
  code is not checked (the document marks its unit [?]).
* ``MONITOR_CLOCK_IS_UTC``: the monitor's AbsoluteTime carries no zone; ``device_t_us`` reads
  it as UTC (a monitor set to local time shows as offset by the zone, never as host time).
* NIBP is episodic (§5.3, §7 pitfall 8): a value is emitted once per measurement, detected
  by the object's NOM_ATTR_TIME_STAMP_REL, or by a change of values when there is none.
* Values come out as Readings with quality flags rather than being skipped: INVALID /
  UNAVAILABLE state or a NaN/NRes/INF FLOAT -> Quality.INVALID (value NaN or +-inf),
  QUESTIONABLE, CALIBRATING, DEMO/TEST -> Quality.DEMO (§5.3).
* EtCO2 in % cannot be converted to mmHg without the barometric pressure: not emitted,
  counted ``unit``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import ClassVar

import numpy as np

from kapmonitor.model import CHANNELS, Channel, Message, Quality, Reading, WaveChunk

from ..codecs import intellivue_attributes as at
from ..codecs import intellivue_nomenclature as nom
from ..codecs.base import Role
from ..codecs.intellivue import (
    Abort,
    AssociationRefuse,
    AssociationRequest,
    AssociationResult,
    EventReportResult,
    IntellivueCodec,
    IntellivueMessage,
    MdibObjectSupport,
    MdsCreateEventReport,
    PollProfileSupport,
    PollRequest,
    PollResult,
    ReleaseRequest,
    ReleaseResult,
    RemoteError,
    UserInfo,
)
from ..codecs.intellivue_attributes import (
    REL_TIME_TICK_US,
    REL_TIME_TICKS_PER_S,
    AbsoluteTime,
    Ava,
    NuObsValue,
    NuObsValueCmp,
    SaObsValue,
    SaObsValueCmp,
    SaSpec,
    ScaleRangeSpec16,
    TypeId,
    attribute,
)
from ..codecs.intellivue_session import monitor_timeout_s
from ..codecs.intellivue_waves import scale_samples
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ASSOCIATION_REQUEST",
    "HOST_MESSAGE_TYPES",
    "NUMERIC_SOURCES",
    "WAVE_SOURCES",
    "IntellivueHost",
    "monitor_timeout_s",
]

# ------------------------------------------------------------------ timing (§3.5, §8)
ABORT_BEFORE_ASSOCIATE = True  # §8 step 1 (optional there; clears ghost sessions, §7.14)
ABORT_SETTLE_S = 0.5
ASSOCIATION_TIMEOUT_S = 5.0  # §8 step 2
ASSOCIATION_RETRY_S = 2.0
MDS_CREATE_TIMEOUT_S = 5.0  # §3.5: result + MDS create awaited 5 s (Koshsky)
POLL_PERIOD_S = 60.0  # §8 step 5 / §4.2 recommendation
POLL_RENEW_BEFORE_S = 10.0  # §8 step 6
KEEPALIVE_IDLE_S = 4.0  # §8 step 6: transmit at least this often
RECEIVE_TIMEOUT_S = 10.0  # §8 step 6: silence -> re-associate
RELEASE_TIMEOUT_S = 2.0  # §8 step 7

#: The Association Request (§3.1 variant B, the document's recommendation): 500 ms minimum
#: poll period, MTU 1456, NU_1SEC | RTSA | ENUM | NU_PRIO_LIST, six MDIB object classes.
ASSOCIATION_REQUEST = AssociationRequest(
    UserInfo(
        PollProfileSupport(
            min_poll_period=0x0FA0,
            max_mtu_rx=0x05B0,
            max_mtu_tx=0x05B0,
            max_bw_tx=0xFFFFFFFF,
            options=nom.P_OPT_DYN_CREATE_OBJECTS | nom.P_OPT_DYN_DELETE_OBJECTS,
            ext_options=0x8E000000,
        ),
        tuple(
            MdibObjectSupport(TypeId(nom.NOM_PART_OBJ, c), n)
            for c, n in ((0x21, 1), (0x06, 0xC9), (0x09, 0x3C), (0x05, 0x10), (0x2A, 1), (0x36, 1))
        ),
    )
)

#: Every message type this host ever sends: a monitor is never told to change anything.
HOST_MESSAGE_TYPES: frozenset[type] = frozenset(
    {Abort, AssociationRequest, EventReportResult, PollRequest, ReleaseRequest, ReleaseResult}
)


# ------------------------------------------------------------------ mapping tables (§6)

#: Physio ids feeding each numeric channel, in priority order (see module docstring).
NUMERIC_SOURCES: dict[Channel, tuple[int, ...]] = {
    Channel.HR: (nom.NOM_ECG_CARD_BEAT_RATE,),
    Channel.PULSE: (nom.NOM_PLETH_PULS_RATE, nom.NOM_PULS_RATE),
    Channel.SPO2: (nom.NOM_PULS_OXIM_SAT_O2,),
    Channel.NIBP_SYS: (nom.NOM_PRESS_BLD_NONINV_SYS,),
    Channel.NIBP_DIA: (nom.NOM_PRESS_BLD_NONINV_DIA,),
    Channel.NIBP_MEAN: (nom.NOM_PRESS_BLD_NONINV_MEAN,),
    Channel.RR: (nom.NOM_AWAY_RESP_RATE, nom.NOM_RESP_RATE),
    Channel.ETCO2: (nom.NOM_AWAY_CO2_ET,),
    Channel.FICO2: (nom.NOM_AWAY_CO2_INSP_MIN,),
    Channel.TEMP: (
        nom.NOM_TEMP,
        nom.NOM_TEMP_CORE,
        nom.NOM_TEMP_ESOPH,
        nom.NOM_TEMP_TYMP,
        nom.NOM_TEMP_RECT,
    ),
}
#: Physio ids of the wave channels (§6).
WAVE_SOURCES: dict[int, Channel] = {
    nom.NOM_ECG_ELEC_POTL_II: Channel.ECG,
    nom.NOM_PLETH: Channel.PLETH,
    nom.NOM_AWAY_CO2: Channel.CO2_WAVE,
}
EPISODIC = frozenset({Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN})

_MMHG_PER_KPA = 7.500617


def _same(x: float) -> float:
    return x


_PRESSURE: dict[int, Callable[[float], float]] = {
    nom.NOM_DIM_MMHG: _same,
    nom.NOM_DIM_KILO_PASCAL: lambda x: x * _MMHG_PER_KPA,
}
_RATE: dict[int, Callable[[float], float]] = {
    nom.NOM_DIM_BEAT_PER_MIN: _same,
    nom.NOM_DIM_PULS_PER_MIN: _same,
}
#: Unit code -> conversion into the channel's unit (model CHANNELS). Missing = refused.
UNIT_CONVERSIONS: dict[Channel, dict[int, Callable[[float], float]]] = {
    Channel.HR: _RATE,
    Channel.PULSE: _RATE,
    Channel.SPO2: {nom.NOM_DIM_PERCENT: _same},
    Channel.NIBP_SYS: _PRESSURE,
    Channel.NIBP_DIA: _PRESSURE,
    Channel.NIBP_MEAN: _PRESSURE,
    Channel.RR: {nom.NOM_DIM_RESP_PER_MIN: _same},
    Channel.ETCO2: _PRESSURE,
    Channel.FICO2: _PRESSURE,
    Channel.TEMP: {nom.NOM_DIM_DEGC: _same, nom.NOM_DIM_FAHR: lambda f: (f - 32.0) * 5.0 / 9.0},
    Channel.ECG: {nom.NOM_DIM_MILLI_VOLT: _same},
    Channel.CO2_WAVE: _PRESSURE,
}
PLETH_ANY_UNIT = True

WAVE_STAMP_MARKS_BLOCK_END = True
WAVE_GAP_TOLERANCE_S = 0.05
#: Chained host times may drift from arrival times (clock drift, delays); beyond this the
#: chunk is re-anchored to its arrival.
WAVE_REANCHOR_S = 1.0
MONITOR_CLOCK_IS_UTC = True


def quality_of(state: int) -> Quality:
    """MeasurementState (§5.3) -> model quality flags."""
    q = Quality.OK
    if state & (nom.MS_INVALID | nom.MS_UNAVAILABLE):
        q |= Quality.INVALID
    if state & nom.MS_QUESTIONABLE:
        q |= Quality.QUESTIONABLE
    if state & nom.MS_CALIBRATION_ONGOING:
        q |= Quality.CALIBRATING
    if state & (nom.MS_TEST_DATA | nom.MS_DEMO_DATA):
        q |= Quality.DEMO
    return q


def _signed32(d: int) -> int:
    d &= 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


# ------------------------------------------------------------------ per-object cache


@dataclass
class _ObjectInfo:
    """Static attributes of one object handle (§5.1: sent once, cached per handle)."""

    label: int | None = None
    unit: int | None = None
    sa_spec: SaSpec | None = None
    scale: ScaleRangeSpec16 | None = None
    period_ticks: int | None = None


@dataclass
class _WaveTrack:
    next_rel: int  # device rel time (ticks) just after the last sample
    next_t_us: int  # host time just after the last sample


@dataclass
class _Poll:
    invoke_id: int
    expires_us: int
    previous: int | None = None  # superseded poll, accepted until this one answers


class _State(enum.Enum):
    IDLE = "idle"
    SETTLING = "settling"
    WAIT_RETRY = "wait_retry"
    ASSOCIATING = "associating"
    WAIT_MDS_CREATE = "wait_mds_create"
    ASSOCIATED = "associated"
    RELEASING = "releasing"
    CLOSED = "closed"


@dataclass
class _Session:
    """Everything that lives exactly as long as one association."""

    time_ref: tuple[int, int] | None = None  # (abs us, rel ticks)
    objects: dict[int, _ObjectInfo] = field(default_factory=dict)
    polls: dict[int, _Poll] = field(default_factory=dict)  # object class -> poll
    singles: set[int] = field(default_factory=set)  # outstanding single-poll invoke ids
    waves: dict[Channel, _WaveTrack] = field(default_factory=dict)
    keepalive_s: float = KEEPALIVE_IDLE_S


class IntellivueHost(HostProtocol):
    """Client side of IntelliVue Data Export (§8). ``waves=False`` polls numerics only."""

    protocol: ClassVar[str] = "intellivue"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=115200)  # §1.1
    tick_interval_s: ClassVar[float] = 0.05
    stale_after_s: ClassVar[float] = 5.0  # numerics arrive ~1/s, waves several per second

    def __init__(self, source: str = "monitor", *, waves: bool = True) -> None:
        super().__init__(source)
        self.codec = IntellivueCodec(Role.HOST)
        self.waves = waves
        self.counters: Counter[str] = Counter()
        self._state = _State.IDLE
        self._deadline_us = 0
        self._last_rx_us = 0
        self._last_tx_us = 0
        self._invoke = 0
        self._poll_number = 0
        self._s = _Session()
        # Last NIBP measurement per (handle, channel). Kept across associations and
        # reconnections: the same measurement, stamped by the monitor's clock, is not a new
        # reading because the link was re-established.
        self._nibp_keys: dict[tuple[int, Channel], tuple[object, ...]] = {}

    # -------------------------------------------------------------- lifecycle

    @property
    def associated(self) -> bool:
        return self._state is _State.ASSOCIATED

    @property
    def state(self) -> str:
        return self._state.value

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self._restart(now_us)

    def connection_lost(self) -> None:
        self.codec.reset()
        self._state = _State.IDLE
        self._s = _Session()

    #: §3.6: a release waits for the monitor's release result for up to 2 s.
    closing_grace_s = 2.5

    def closing(self, now_us: int) -> None:
        """Deliberate stop: release the association (§3.6) rather than just vanish."""
        self.release(now_us)

    @property
    def closed(self) -> bool:
        return self._state in (_State.IDLE, _State.CLOSED)

    def release(self, now_us: int) -> None:
        """Orderly shutdown (§3.6, §8 step 7)."""
        if self._state in (_State.IDLE, _State.CLOSED):
            return
        if self._state not in (_State.WAIT_MDS_CREATE, _State.ASSOCIATED):
            self._send(Abort(), now_us)  # nothing to release; make sure nothing half-opens
            self._state = _State.CLOSED
            return
        self._send(ReleaseRequest(), now_us)
        self._state = _State.RELEASING
        self._deadline_us = now_us + round(RELEASE_TIMEOUT_S * 1e6)

    def _restart(self, now_us: int) -> None:
        """Back to §8 step 1: forget the association; abort any stale one first."""
        self._s = _Session()
        self._last_rx_us = now_us
        if ABORT_BEFORE_ASSOCIATE:
            self._send(Abort(), now_us)
            self._state = _State.SETTLING
            self._deadline_us = now_us + round(ABORT_SETTLE_S * 1e6)
        else:
            self._associate(now_us)

    def _associate(self, now_us: int) -> None:
        # Invoke ids and poll numbers keep counting across associations, so results of a
        # previous session that a monitor keeps sending (§7 pitfall 14) never match.
        self._s = _Session()
        self._send(ASSOCIATION_REQUEST, now_us)
        self._state = _State.ASSOCIATING
        self._deadline_us = now_us + round(ASSOCIATION_TIMEOUT_S * 1e6)

    def _retry_later(self, now_us: int) -> None:
        self._s = _Session()
        self._state = _State.WAIT_RETRY
        self._deadline_us = now_us + round(ASSOCIATION_RETRY_S * 1e6)

    def _send(self, msg: IntellivueMessage, now_us: int) -> None:
        self.send(self.codec.encode(msg))
        self._last_tx_us = now_us

    def _next_invoke(self) -> int:
        self._invoke = self._invoke % 0xFFFF + 1
        return self._invoke

    def _next_poll_number(self) -> int:
        self._poll_number = self._poll_number % 0xFFFF + 1
        return self._poll_number

    # -------------------------------------------------------------- time

    def tick(self, now_us: int) -> list[Message]:
        st = self._state
        if st in (_State.SETTLING, _State.WAIT_RETRY) and now_us >= self._deadline_us:
            self._associate(now_us)
        elif st in (_State.ASSOCIATING, _State.WAIT_MDS_CREATE) and now_us >= self._deadline_us:
            self.counters["association_timeout"] += 1
            if st is _State.WAIT_MDS_CREATE:
                self._send(Abort(), now_us)
            self._retry_later(now_us)
        elif st is _State.RELEASING and now_us >= self._deadline_us:
            self._send(Abort(), now_us)
            self._state = _State.CLOSED
        elif st is _State.ASSOCIATED:
            if now_us - self._last_rx_us >= RECEIVE_TIMEOUT_S * 1e6:
                self.counters["receive_timeout"] += 1
                self._restart(now_us)
                return []
            renew = round(POLL_RENEW_BEFORE_S * 1e6)
            for cls, poll in list(self._s.polls.items()):
                if now_us >= poll.expires_us - renew:
                    self._extended_poll(cls, now_us)
            if now_us - self._last_tx_us >= self._s.keepalive_s * 1e6:
                inv = self._next_invoke()
                self._s.singles.add(inv)
                self._send(
                    PollRequest(
                        inv, self._next_poll_number(), TypeId(nom.NOM_PART_OBJ, nom.NOM_MOC_VMS_MDS)
                    ),
                    now_us,
                )
        return []

    def _extended_poll(self, obj_class: int, now_us: int) -> None:
        """§4.2/§4.3: poll ``obj_class`` for ``POLL_PERIOD_S``."""
        inv = self._next_invoke()
        ticks = round(POLL_PERIOD_S * REL_TIME_TICKS_PER_S)
        req = PollRequest(
            inv,
            self._next_poll_number(),
            TypeId(nom.NOM_PART_OBJ, obj_class),
            nom.NOM_ATTR_GRP_ALL,
            True,
            (Ava(at.NOM_ATTR_TIME_PD_POLL, ticks),),
        )
        old = self._s.polls.get(obj_class)
        previous = None if old is None else old.invoke_id
        self._s.polls[obj_class] = _Poll(inv, now_us + round(POLL_PERIOD_S * 1e6), previous)
        self._send(req, now_us)

    # -------------------------------------------------------------- bytes in

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        out: list[Message] = []
        for msg in self.codec.feed(data):
            self.last_frame_us = now_us
            self._last_rx_us = now_us
            out.extend(self._handle(msg, now_us))
        return out

    def _handle(self, msg: IntellivueMessage, now_us: int) -> Iterable[Message]:
        st = self._state
        if isinstance(msg, AssociationResult):
            if st is _State.ASSOCIATING:
                profile = msg.user_info.poll_profile
                if profile is not None:
                    limit = monitor_timeout_s(profile.min_poll_period) - 1.0
                    self._s.keepalive_s = max(0.5, min(KEEPALIVE_IDLE_S, limit))
                self._state = _State.WAIT_MDS_CREATE
                self._deadline_us = now_us + round(MDS_CREATE_TIMEOUT_S * 1e6)
            return ()
        if isinstance(msg, AssociationRefuse | Abort):
            self.counters["refused" if isinstance(msg, AssociationRefuse) else "aborted"] += 1
            if st in (_State.ASSOCIATING, _State.WAIT_MDS_CREATE, _State.ASSOCIATED):
                self._retry_later(now_us)
            elif st is _State.RELEASING:
                self._state = _State.CLOSED
            return ()
        if isinstance(msg, ReleaseResult):
            if st is _State.RELEASING:
                self._state = _State.CLOSED
            return ()
        if isinstance(msg, ReleaseRequest):  # the monitor ends the association
            self._send(ReleaseResult(), now_us)
            if st is not _State.RELEASING:
                self._retry_later(now_us)
            return ()
        if isinstance(msg, MdsCreateEventReport):
            if st in (_State.WAIT_MDS_CREATE, _State.ASSOCIATED):
                self._on_mds_create(msg, now_us)
            return ()
        if st is not _State.ASSOCIATED:
            self.counters["not_associated"] += 1
            return ()
        if isinstance(msg, PollResult):
            return self._on_poll_result(msg, now_us)
        if isinstance(msg, RemoteError):
            self.counters[f"remote_error_{msg.error_value}"] += 1
            self._s.singles.discard(msg.invoke_id)
            return ()
        self.counters["unhandled"] += 1
        return ()

    def _on_mds_create(self, msg: MdsCreateEventReport, now_us: int) -> None:
        """§3.3-§3.4: reply (mandatory before polls are answered, §7.10), take the time
        reference, start polling. A repeated create means the monitor restarted the MDS:
        caches are reset (§7.7) and the polls re-issued."""
        self._send(
            EventReportResult(
                msg.invoke_id, msg.event_time, nom.NOM_NOTI_MDS_CREAT, msg.created_object
            ),
            now_us,
        )
        keepalive = self._s.keepalive_s
        self._s = _Session(keepalive_s=keepalive)
        self._s.time_ref = self._time_ref(msg.attributes, msg.event_time)
        self._state = _State.ASSOCIATED
        self._extended_poll(nom.NOM_MOC_VMO_METRIC_NU, now_us)
        if self.waves:
            self._extended_poll(nom.NOM_MOC_VMO_METRIC_SA_RT, now_us)

    @staticmethod
    def _time_ref(attrs: tuple[Ava, ...], event_time: int) -> tuple[int, int] | None:
        abs_t = attribute(attrs, at.NOM_ATTR_TIME_ABS)
        rel = attribute(attrs, at.NOM_ATTR_TIME_REL)
        if not isinstance(abs_t, AbsoluteTime):
            return None
        dt = abs_t.to_datetime()
        if dt is None:
            return None
        if MONITOR_CLOCK_IS_UTC:
            dt = dt.replace(tzinfo=UTC)
        abs_us = int(dt.timestamp()) * 1_000_000 + dt.microsecond
        return abs_us, rel if isinstance(rel, int) else event_time

    def _device_us(self, rel: int) -> int | None:
        ref = self._s.time_ref
        if ref is None:
            return None
        return ref[0] + _signed32(rel - ref[1]) * REL_TIME_TICK_US

    # -------------------------------------------------------------- poll results

    def _accept(self, msg: PollResult) -> bool:
        """Only results of polls this host issued (§7 pitfall 14); a superseded extended
        poll is accepted until its replacement answers, so renewal leaves no gap."""
        if msg.invoke_id in self._s.singles:
            if msg.linked is None:
                self._s.singles.discard(msg.invoke_id)
            return True
        for poll in self._s.polls.values():
            if msg.invoke_id == poll.invoke_id:
                poll.previous = None
                return True
            if msg.invoke_id == poll.previous:
                return True
        return False

    def _on_poll_result(self, msg: PollResult, now_us: int) -> list[Message]:
        if not self._accept(msg):
            self.counters["foreign_invoke_id"] += 1
            return []
        if self._s.time_ref is None and msg.abs_time.to_datetime() is not None:
            ref = (Ava(at.NOM_ATTR_TIME_ABS, msg.abs_time),)
            self._s.time_ref = self._time_ref(ref, msg.rel_time)
        out: list[Message] = []
        candidates: dict[Channel, list[tuple[int, NuObsValue, int, int | None]]] = {}
        for ctx in msg.contexts:
            for obs in ctx.observations:
                info = self._update_object(obs.handle, obs.attributes)
                stamp = attribute(obs.attributes, at.NOM_ATTR_TIME_STAMP_REL)
                stamp = stamp if isinstance(stamp, int) else None
                for a in obs.attributes:  # typed values occur only under their own ids
                    v = a.value
                    if isinstance(v, NuObsValue):
                        self._candidate(candidates, v, info, obs.handle, stamp)
                    elif isinstance(v, NuObsValueCmp):
                        for nv in v.values:
                            self._candidate(candidates, nv, info, obs.handle, stamp)
                    elif isinstance(v, SaObsValue):
                        out.extend(self._wave(v, info, msg.rel_time, now_us))
                    elif isinstance(v, SaObsValueCmp):
                        for sv in v.values:
                            out.extend(self._wave(sv, info, msg.rel_time, now_us))
        for ch, cands in candidates.items():
            r = self._numeric(ch, cands, msg.rel_time, now_us)
            if r is not None:
                out.append(r)
        return out

    def _update_object(self, handle: int, attrs: tuple[Ava, ...]) -> _ObjectInfo:
        info = self._s.objects.get(handle)
        label = attribute(attrs, at.NOM_ATTR_ID_LABEL)
        if info is None or (isinstance(label, int) and info.label not in (None, label)):
            if info is not None:  # a re-used handle (§7.7): a different object now
                for key in [k for k in self._nibp_keys if k[0] == handle]:
                    del self._nibp_keys[key]
            info = self._s.objects[handle] = _ObjectInfo()
        for a in attrs:
            v = a.value
            if a.attribute_id == at.NOM_ATTR_ID_LABEL and isinstance(v, int):
                info.label = v
            elif a.attribute_id == at.NOM_ATTR_UNIT_CODE and isinstance(v, int):
                info.unit = v
            elif a.attribute_id == at.NOM_ATTR_SA_SPECN and isinstance(v, SaSpec):
                info.sa_spec = v
            elif a.attribute_id == at.NOM_ATTR_SCALE_SPECN_I16 and isinstance(v, ScaleRangeSpec16):
                info.scale = v
            elif a.attribute_id == at.NOM_ATTR_TIME_PD_SAMP and isinstance(v, int):
                info.period_ticks = v
        return info

    @staticmethod
    def _physio(physio_id: int, info: _ObjectInfo) -> int:
        """§5.3: NOM_METRIC_NOS or 0 -> fall back to the object's label."""
        if physio_id in (0, nom.NOM_METRIC_NOS) and info.label is not None:
            return info.label & 0xFFFF
        return physio_id

    def _candidate(
        self,
        cands: dict[Channel, list[tuple[int, NuObsValue, int, int | None]]],
        v: NuObsValue,
        info: _ObjectInfo,
        handle: int,
        stamp: int | None,
    ) -> None:
        pid = self._physio(v.physio_id, info)
        for ch, ids in NUMERIC_SOURCES.items():
            if pid in ids:
                cands.setdefault(ch, []).append((ids.index(pid), v, handle, stamp))
                return
        self.counters["unmapped_numeric"] += 1

    def _numeric(
        self,
        ch: Channel,
        cands: list[tuple[int, NuObsValue, int, int | None]],
        rel: int,
        now_us: int,
    ) -> Reading | None:
        def usable(c: tuple[int, NuObsValue, int, int | None]) -> bool:
            return c[1].value.special is None and not quality_of(c[1].state) & Quality.INVALID

        cands.sort(key=lambda c: (not usable(c), c[0]))
        _, v, handle, stamp = cands[0]
        if ch in EPISODIC:
            key = (stamp,) if stamp is not None else (v.value, v.state, v.unit_code)
            if self._nibp_keys.get((handle, ch)) == key:
                return None
            self._nibp_keys[handle, ch] = key
        quality = quality_of(v.state)
        if v.value.special is not None:
            value = v.value.value
            quality |= Quality.INVALID
        else:
            conv = UNIT_CONVERSIONS.get(ch, {}).get(v.unit_code)
            if conv is None:
                self.counters["unit"] += 1
                return None
            value = conv(v.value.value)
            lo, hi = CHANNELS[ch].plausible
            if not lo <= value <= hi:
                quality |= Quality.OUT_OF_RANGE
        device_rel = stamp if (ch in EPISODIC and stamp is not None) else rel
        return Reading(ch, value, now_us, self.source, self._device_us(device_rel), quality)

    def _wave(self, sa: SaObsValue, info: _ObjectInfo, rel: int, now_us: int) -> list[WaveChunk]:
        ch = WAVE_SOURCES.get(self._physio(sa.physio_id, info))
        if ch is None:
            self.counters["unmapped_wave"] += 1
            return []
        spec, scale, period = info.sa_spec, info.scale, info.period_ticks
        if spec is None or scale is None or not period:
            self.counters["wave_no_spec"] += 1
            return []
        conv = UNIT_CONVERSIONS.get(ch, {}).get(info.unit) if info.unit is not None else None
        if conv is None:
            if not (ch is Channel.PLETH and PLETH_ANY_UNIT):
                self.counters["unit"] += 1
                return []
            conv = _same
        samples, outside = scale_samples(sa.data, spec, scale)
        if samples is None:
            self.counters["wave_format"] += 1
            return []
        n = len(samples)
        if n == 0:
            return []
        quality = quality_of(sa.state) | (Quality.QUESTIONABLE if outside else Quality.OK)
        values = conv(samples)  # the conversions are linear and work on arrays
        rate = REL_TIME_TICKS_PER_S / period
        dur_us = round(n * 1e6 / rate)
        start_rel = (rel - n * period) & 0xFFFFFFFF if WAVE_STAMP_MARKS_BLOCK_END else rel
        t_us = now_us - dur_us
        track = self._s.waves.get(ch)
        if track is not None:
            gap_s = _signed32(start_rel - track.next_rel) / REL_TIME_TICKS_PER_S
            if (
                abs(gap_s) <= WAVE_GAP_TOLERANCE_S
                and abs(track.next_t_us - t_us) <= WAVE_REANCHOR_S * 1e6
            ):
                t_us = track.next_t_us
            else:
                self.counters["wave_reanchor"] += 1
        self._s.waves[ch] = _WaveTrack((start_rel + n * period) & 0xFFFFFFFF, t_us + dur_us)
        chunk = WaveChunk(
            ch,
            t_us,
            rate,
            values.astype(np.float32),
            self.source,
            self._device_us(start_rel),
            quality,
        )
        return [chunk]
