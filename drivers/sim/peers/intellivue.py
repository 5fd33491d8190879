"""A simulated Philips IntelliVue monitor speaking Data Export on the MIB/RS232 port.

The "simulator mirror" of shared/protocols/philips-intellivue-mib.md §8: it answers the
Association Request with a result echoing the client's poll profile (§3.2 [?]), sends the
MDS Create Event Report (§3.3) with its time reference, ignores polls until the MDS Create
Event Result arrives (§3.4, §7 pitfall 10), answers single polls at once and extended polls
with an immediate result and then periodic ones until TIME_PD_POLL runs out (§4.2, §4.3),
drops the association with an Abort after the §3.5 time-out of client silence, and answers
a Release Request with a Release Result (§3.6).

Numerics and waves come from a ``VitalsFeed``. Numerics are quantised to the FLOAT exponent
of each parameter (``PEER_NUMERICS``). Waves are sent in blocks of ``WAVE_BLOCK_S``; a
per-wave sample counter runs against the clock from the moment waves are first polled, so
each block carries exactly the samples that fell due (whole blocks: 128 ECG, 32 pleth, 16
CO2 samples per 256 ms) and none is lost or repeated however ticks fall. Samples are
quantised through each wave's ScaleRangeSpec16 (``PEER_WAVES``, §5.4); a value outside the
scale's range is clipped, as a monitor's A/D saturates, and that block is marked
QUESTIONABLE in its MeasurementState, never passed off as valid.

Choices where the document is uncertain:

* ``NUMERIC_RESULT_INTERVAL_S`` = 1 s (POLL_EXT_PERIOD_NU_1SEC) and ``WAVE_BLOCK_S`` =
  0.256 s ("commonly assumed", §4.3 [?]).
* The poll-result time stamp of a wave result is the time just after its last sample
  (matching the host's ``WAVE_STAMP_MARKS_BLOCK_END``, §5.5 [?]).
* Static attributes (label, unit, SaSpec, scale, sample period) go in the first result of
  every extended poll and in single-poll results (§5.1: "tend to arrive only in the first
  results").
* A result larger than the MTU is split into linked results ROLRS first/middle/last,
  followed by a final RORS with an empty poll info list (§2.2, §7 pitfall 5; what the final
  RORS carries is not stated): ``LINKED_RESULT_FINAL_RORS``.
* A new extended poll of a class replaces the running one of that class.
* Value ranges of the simulated waves (``PEER_WAVES``): ECG -40.96..40.955 mV on 14 bits
  (VSCaptureMP's default, §5.4), pleth -2.048..2.047 on 12 bits, CO2 -10..399.5 mmHg on 12
  bits.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from kapmonitor.model import Channel

from ...codecs import intellivue_attributes as at
from ...codecs import intellivue_nomenclature as nom
from ...codecs.base import Role
from ...codecs.intellivue import (
    Abort,
    AssociationRequest,
    AssociationResult,
    EventReportResult,
    IntellivueCodec,
    IntellivueMessage,
    LinkedState,
    MdsCreateEventReport,
    PollRequest,
    PollResult,
    ReleaseRequest,
    ReleaseResult,
    encode_user_data,
)
from ...codecs.intellivue_attributes import (
    FLOAT_NAN,
    REL_TIME_TICKS_PER_S,
    AbsoluteTime,
    Ava,
    Float,
    NuObsValue,
    NuObsValueCmp,
    ObservationPoll,
    SaObsValue,
    SaSpec,
    ScaleRangeSpec16,
    SingleContextPoll,
    attribute,
    observation_bytes,
)
from ...codecs.intellivue_session import monitor_timeout_s
from ...codecs.intellivue_waves import samples_to_bytes
from ...protocol import PeerProtocol, SerialSettings
from ..feed import VitalsFeed

__all__ = ["PEER_NUMERICS", "PEER_WAVES", "IntellivuePeer"]

NUMERIC_RESULT_INTERVAL_S = 1.0
WAVE_BLOCK_S = 0.256
LINKED_RESULT_FINAL_RORS = True
#: TIME_PD_POLL assumed when an extended poll does not carry one.
DEFAULT_POLL_PERIOD_S = 10.0
#: Largest user data per message when the client's association does not say.
DEFAULT_MTU = 1456
#: Invoke id of the monitor's MDS Create Event Report (any value; the client echoes it).
MDS_CREATE_INVOKE_ID = 1


@dataclass(frozen=True, slots=True)
class NumericSpec:
    handle: int
    physio_id: int
    unit: int
    exponent: int  # FLOAT resolution 10^exponent


@dataclass(frozen=True, slots=True)
class WaveSpec:
    handle: int
    physio_id: int
    unit: int
    period_ticks: int  # RelativeTime ticks per sample
    sa_spec: SaSpec
    scale: ScaleRangeSpec16

    @property
    def rate_hz(self) -> float:
        return REL_TIME_TICKS_PER_S / self.period_ticks


#: The numerics a simulated monitor reports (§6): one object each, NIBP apart.
PEER_NUMERICS: dict[Channel, NumericSpec] = {
    Channel.HR: NumericSpec(0x0101, nom.NOM_ECG_CARD_BEAT_RATE, nom.NOM_DIM_BEAT_PER_MIN, 0),
    Channel.PULSE: NumericSpec(0x0102, nom.NOM_PLETH_PULS_RATE, nom.NOM_DIM_BEAT_PER_MIN, 0),
    Channel.SPO2: NumericSpec(0x0103, nom.NOM_PULS_OXIM_SAT_O2, nom.NOM_DIM_PERCENT, 0),
    Channel.RR: NumericSpec(0x0104, nom.NOM_RESP_RATE, nom.NOM_DIM_RESP_PER_MIN, 0),
    Channel.ETCO2: NumericSpec(0x0105, nom.NOM_AWAY_CO2_ET, nom.NOM_DIM_MMHG, 0),
    Channel.FICO2: NumericSpec(0x0106, nom.NOM_AWAY_CO2_INSP_MIN, nom.NOM_DIM_MMHG, 0),
    Channel.TEMP: NumericSpec(0x0107, nom.NOM_TEMP, nom.NOM_DIM_DEGC, -1),
}
#: NIBP is one object with a compound value (§5.3).
NIBP_HANDLE = 0x0110
NIBP_PARTS: dict[Channel, int] = {
    Channel.NIBP_SYS: nom.NOM_PRESS_BLD_NONINV_SYS,
    Channel.NIBP_DIA: nom.NOM_PRESS_BLD_NONINV_DIA,
    Channel.NIBP_MEAN: nom.NOM_PRESS_BLD_NONINV_MEAN,
}


def _scale(lo: float, hi: float, exponent: int, top: int) -> ScaleRangeSpec16:
    return ScaleRangeSpec16(Float.from_value(lo, exponent), Float.from_value(hi, exponent), 0, top)


#: The waves a simulated monitor reports (§5.4, §6); see the module docstring for ranges.
PEER_WAVES: dict[Channel, WaveSpec] = {
    Channel.ECG: WaveSpec(
        0x0201,
        nom.NOM_ECG_ELEC_POTL_II,
        nom.NOM_DIM_MILLI_VOLT,
        16,
        SaSpec(128, 16, 14, nom.SA_STATIC_SCALE),
        _scale(-40.96, 40.955, -3, 0x3FFF),
    ),
    Channel.PLETH: WaveSpec(
        0x0202,
        nom.NOM_PLETH,
        nom.NOM_DIM_DIMLESS,
        64,
        SaSpec(32, 16, 12, nom.SA_STATIC_SCALE),
        _scale(-2.048, 2.047, -3, 0x0FFF),
    ),
    Channel.CO2_WAVE: WaveSpec(
        0x0203,
        nom.NOM_AWAY_CO2,
        nom.NOM_DIM_MMHG,
        128,
        SaSpec(16, 16, 12, nom.SA_STATIC_SCALE),
        _scale(-10.0, 399.5, -1, 0x0FFF),
    ),
}


class _State(enum.Enum):
    IDLE = "idle"
    WAIT_CREATE_RESULT = "wait_create_result"
    ASSOCIATED = "associated"


@dataclass
class _Poll:
    request: PollRequest
    expires_us: int
    next_us: int
    sequence: int = 0


class IntellivuePeer(PeerProtocol):
    """The monitor's end (§8 "simulator mirror"). Options: ``waves`` (the wave channels to
    report, default all of ``PEER_WAVES``), ``mtu`` (force a smaller result size, to
    exercise linked results), ``rel_time_start`` (the monitor's RelativeTime at power-on;
    default drawn from ``seed``)."""

    protocol: ClassVar[str] = "intellivue"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=115200)
    tick_interval_s: ClassVar[float] = 0.05

    def __init__(
        self,
        feed: VitalsFeed,
        *,
        seed: int = 0,
        waves: tuple[Channel, ...] | None = None,
        mtu: int | None = None,
        rel_time_start: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if options:
            raise TypeError(f"unknown options: {sorted(options)}")
        self.feed = feed
        self.silent = False
        self.codec = IntellivueCodec(Role.DEVICE)
        self.waves = tuple(PEER_WAVES) if waves is None else tuple(waves)
        self._mtu_option = mtu
        rng = random.Random(seed)
        self._rel_start = rng.randrange(1 << 32) if rel_time_start is None else rel_time_start
        self._boot_us: int | None = None
        self._state = _State.IDLE
        # the last NIBP measurement and its time stamp outlive associations, as on a monitor
        self._nibp: tuple[tuple[float | None, ...], int] | None = None
        self._reset_association()

    def _reset_association(self) -> None:
        self._state = _State.IDLE
        self._polls: dict[int, _Poll] = {}
        self._timeout_s = 10.0
        self._mtu = self._mtu_option or DEFAULT_MTU
        self._last_rx_us = 0
        # wave sample clocks (§ module docstring): anchor time, blocks and samples sent
        self._wave_anchor_us: int | None = None
        self._blocks_sent = 0
        self._samples_sent: dict[Channel, int] = {}

    @property
    def associated(self) -> bool:
        return self._state is _State.ASSOCIATED

    # ---------------------------------------------------------------- clock

    def rel_time(self, now_us: int) -> int:
        """The monitor's RelativeTime (125 us ticks since power-on, u32 wrap, §5.5)."""
        if self._boot_us is None:
            self._boot_us = now_us
        return (self._rel_start + (now_us - self._boot_us) * 8 // 1000) & 0xFFFFFFFF

    # ---------------------------------------------------------------- link

    def connection_made(self, now_us: int) -> None:
        self.rel_time(now_us)
        self.codec.reset()

    def connection_lost(self) -> None:
        self.codec.reset()
        self._reset_association()

    def _send(self, msg: IntellivueMessage) -> None:
        self.send(self.codec.encode(msg))

    def data_received(self, data: bytes, now_us: int) -> None:
        if self.silent:
            return
        for msg in self.codec.feed(data):
            self._last_rx_us = now_us
            self._handle(msg, now_us)

    def _handle(self, msg: IntellivueMessage, now_us: int) -> None:
        if isinstance(msg, AssociationRequest):
            self._reset_association()
            self._last_rx_us = now_us
            profile = msg.user_info.poll_profile
            if profile is not None:
                self._timeout_s = monitor_timeout_s(profile.min_poll_period)
                self._mtu = self._mtu_option or min(profile.max_mtu_rx, DEFAULT_MTU)
            self._send(AssociationResult(msg.user_info))  # echo (§3.2 [?])
            rel = self.rel_time(now_us)
            attrs = (
                Ava(at.NOM_ATTR_TIME_ABS, AbsoluteTime.from_epoch_us(now_us)),
                Ava(at.NOM_ATTR_TIME_REL, rel),
            )
            self._send(MdsCreateEventReport(MDS_CREATE_INVOKE_ID, rel, attrs))
            self._state = _State.WAIT_CREATE_RESULT
        elif isinstance(msg, EventReportResult):
            if (
                self._state is _State.WAIT_CREATE_RESULT
                and msg.event_type == nom.NOM_NOTI_MDS_CREAT
            ):
                self._state = _State.ASSOCIATED
        elif isinstance(msg, ReleaseRequest):
            self._send(ReleaseResult())
            self._reset_association()
        elif isinstance(msg, Abort):
            self._reset_association()
        elif isinstance(msg, PollRequest) and self._state is _State.ASSOCIATED:
            self._on_poll(msg, now_us)

    def _on_poll(self, req: PollRequest, now_us: int) -> None:
        code = req.obj_type.code
        if not req.extended:
            self._result(req, self._observations(code, now_us, statics=True), now_us)
            return
        period = attribute(req.ext_attributes, at.NOM_ATTR_TIME_PD_POLL)
        period_us = (
            round(period * 1e6 / REL_TIME_TICKS_PER_S)
            if isinstance(period, int)
            else round(DEFAULT_POLL_PERIOD_S * 1e6)
        )
        if code == nom.NOM_MOC_VMO_METRIC_SA_RT and code not in self._polls:
            self._wave_anchor_us = now_us
            self._blocks_sent = 0
            self._samples_sent = {}
        interval = (
            WAVE_BLOCK_S if code == nom.NOM_MOC_VMO_METRIC_SA_RT else NUMERIC_RESULT_INTERVAL_S
        )
        poll = _Poll(req, now_us + period_us, now_us + round(interval * 1e6))
        self._polls[code] = poll
        poll.sequence = (poll.sequence + 1) & 0xFFFF
        self._result(
            req, self._observations(code, now_us, statics=True), now_us, sequence=poll.sequence
        )

    # ---------------------------------------------------------------- time

    def tick(self, now_us: int) -> None:
        if self.silent or self._state is _State.IDLE:
            return
        if now_us - self._last_rx_us > self._timeout_s * 1e6:  # §3.5 client silence
            self._send(Abort())
            self._reset_association()
            return
        for code, poll in list(self._polls.items()):
            if now_us >= poll.expires_us:
                del self._polls[code]
                if code == nom.NOM_MOC_VMO_METRIC_SA_RT:
                    self._wave_anchor_us = None
                continue
            if code == nom.NOM_MOC_VMO_METRIC_SA_RT:
                if self._blocks_due(now_us) > self._blocks_sent:
                    poll.sequence = (poll.sequence + 1) & 0xFFFF
                    self._result(
                        poll.request,
                        self._observations(code, now_us, False),
                        now_us,
                        sequence=poll.sequence,
                    )
            elif now_us >= poll.next_us:
                poll.next_us += round(NUMERIC_RESULT_INTERVAL_S * 1e6)
                poll.sequence = (poll.sequence + 1) & 0xFFFF
                self._result(
                    poll.request,
                    self._observations(code, now_us, False),
                    now_us,
                    sequence=poll.sequence,
                )

    def _blocks_due(self, now_us: int) -> int:
        if self._wave_anchor_us is None:
            return 0
        return (now_us - self._wave_anchor_us) // round(WAVE_BLOCK_S * 1e6)

    # ---------------------------------------------------------------- content

    def _observations(
        self, code: int, now_us: int, statics: bool
    ) -> tuple[list[ObservationPoll], int]:
        """Objects for a result of class ``code`` and the result's time stamp."""
        rel = self.rel_time(now_us)
        if code == nom.NOM_MOC_VMO_METRIC_NU:
            return self._numerics(now_us, rel, statics), rel
        if code == nom.NOM_MOC_VMO_METRIC_SA_RT:
            return self._wave_blocks(now_us, statics)
        if code == nom.NOM_MOC_VMS_MDS:
            attrs = (
                Ava(at.NOM_ATTR_TIME_ABS, AbsoluteTime.from_epoch_us(now_us)),
                Ava(at.NOM_ATTR_TIME_REL, rel),
            )
            return [ObservationPoll(0, attrs)], rel
        return [], rel

    def _numerics(self, now_us: int, rel: int, statics: bool) -> list[ObservationPoll]:
        values: Mapping[Channel, float | None] = self.feed.numerics(now_us)
        out: list[ObservationPoll] = []
        for ch, spec in PEER_NUMERICS.items():
            if ch not in values:
                continue
            nu = _nu(spec.physio_id, spec.unit, values[ch], spec.exponent)
            attrs: tuple[Ava, ...] = (Ava(at.NOM_ATTR_NU_VAL_OBS, nu),)
            if statics:
                attrs = (Ava(at.NOM_ATTR_ID_LABEL, nom.label(spec.physio_id)), *attrs)
            out.append(ObservationPoll(spec.handle, attrs))
        parts = [ch for ch in NIBP_PARTS if ch in values]
        if parts:
            key = tuple(values[ch] for ch in parts)
            if self._nibp is None or self._nibp[0] != key:
                self._nibp = (key, rel)  # a new measurement, stamped now
            cmp = NuObsValueCmp(
                tuple(_nu(NIBP_PARTS[ch], nom.NOM_DIM_MMHG, values[ch], 0) for ch in parts)
            )
            attrs = (
                Ava(at.NOM_ATTR_NU_CMPD_VAL_OBS, cmp),
                Ava(at.NOM_ATTR_TIME_STAMP_REL, self._nibp[1]),
            )
            if statics:
                attrs = (Ava(at.NOM_ATTR_ID_LABEL, nom.label(nom.NOM_PRESS_BLD_NONINV)), *attrs)
            out.append(ObservationPoll(NIBP_HANDLE, attrs))
        return out

    def _wave_blocks(self, now_us: int, statics: bool) -> tuple[list[ObservationPoll], int]:
        blocks = self._blocks_due(now_us)
        block_us = round(WAVE_BLOCK_S * 1e6)
        anchor = self._wave_anchor_us if self._wave_anchor_us is not None else now_us
        end_us = anchor + blocks * block_us
        out: list[ObservationPoll] = []
        for ch in self.waves:
            spec = PEER_WAVES[ch]
            attrs: list[Ava] = []
            if statics:
                attrs += [
                    Ava(at.NOM_ATTR_ID_LABEL, nom.label(spec.physio_id)),
                    Ava(at.NOM_ATTR_SA_SPECN, spec.sa_spec),
                    Ava(at.NOM_ATTR_SCALE_SPECN_I16, spec.scale),
                    Ava(at.NOM_ATTR_TIME_PD_SAMP, spec.period_ticks),
                    Ava(at.NOM_ATTR_UNIT_CODE, spec.unit),
                ]
            due = (end_us - anchor) * 8 // (1000 * spec.period_ticks)  # samples up to end
            n = due - self._samples_sent.get(ch, 0)
            if n > 0:
                y = np.asarray(self.feed.wave(ch, spec.rate_hz, n, now_us), dtype=np.float64)
                attrs.append(Ava(at.NOM_ATTR_SA_VAL_OBS, _samples(spec, y)))
                self._samples_sent[ch] = due
            if attrs:
                out.append(ObservationPoll(spec.handle, tuple(attrs)))
        self._blocks_sent = max(self._blocks_sent, blocks)
        return out, self.rel_time(end_us)

    # ---------------------------------------------------------------- results

    def _result(
        self,
        req: PollRequest,
        content: tuple[list[ObservationPoll], int],
        now_us: int,
        sequence: int | None = None,
    ) -> None:
        """Send a poll result, split into linked results when it exceeds the MTU."""
        observations, rel = content
        base = PollResult(
            req.invoke_id,
            req.poll_number,
            rel,
            req.obj_type,
            (),
            req.extended,
            sequence if req.extended else None,
            AbsoluteTime.from_epoch_us(now_us),
            req.attr_group,
        )
        pieces = _pack(observations, self._mtu - len(encode_user_data(base)) - 2 - 6)
        if len(pieces) <= 1:
            self._send(replace(base, contexts=_contexts(pieces[0] if pieces else [])))
            return
        for i, piece in enumerate(pieces, 1):
            state = (
                nom.RORLS_FIRST
                if i == 1
                else nom.RORLS_LAST
                if i == len(pieces)
                else nom.RORLS_NOT_FIRST_NOT_LAST
            )
            self._send(
                replace(base, contexts=_contexts(piece), linked=LinkedState(state, i & 0xFF))
            )
        if LINKED_RESULT_FINAL_RORS:
            self._send(base)


def _contexts(obs: list[ObservationPoll]) -> tuple[SingleContextPoll, ...]:
    return (SingleContextPoll(0, tuple(obs)),) if obs else ()


def _pack(observations: list[ObservationPoll], room: int) -> list[list[ObservationPoll]]:
    """Greedy split of observations into pieces whose encoded size fits ``room`` (an object
    larger than that travels alone)."""
    pieces: list[list[ObservationPoll]] = []
    size = 0
    for o in observations:
        n = len(observation_bytes(o))
        if not pieces or size + n > room:
            pieces.append([])
            size = 0
        pieces[-1].append(o)
        size += n
    return pieces


def _nu(physio_id: int, unit: int, value: float | None, exponent: int) -> NuObsValue:
    """A numeric as the monitor sends it; None/NaN -> the NaN FLOAT with state INVALID."""
    if value is None or not math.isfinite(value):
        return NuObsValue(physio_id, nom.MS_INVALID, unit, FLOAT_NAN)
    return NuObsValue(physio_id, 0, unit, Float.from_value(value, exponent))


def _samples(spec: WaveSpec, y: np.ndarray) -> SaObsValue:
    lo, hi = spec.scale.lower_absolute.value, spec.scale.upper_absolute.value
    clipped = np.clip(np.nan_to_num(y, nan=lo), lo, hi)
    state = nom.MS_QUESTIONABLE if not np.array_equal(clipped, y) else 0
    return SaObsValue(spec.physio_id, state, samples_to_bytes(clipped, spec.sa_spec, spec.scale))
