"""GE Datex-Ohmeda S/5 computer interface: the app's side (sans-I/O).

Implements shared/protocols/ge-datex-s5.md. The monitor sends nothing until asked (§1),
so on every (re)connection the host sends a displayed-values request (§4.1: basic class,
every ``interval_s`` seconds, 5 s by default, never below ``MIN_INTERVAL_S``) and a
waveform request (§4.2: PLETH and CO2 by default, the set §8 calls fine at 19200 baud).
The monitor then streams; the host only renews a request when its data stops arriving
(``RENEW_AFTER_INTERVALS`` displayed-value periods, ``WAVE_RENEW_AFTER_S`` for waves), which
covers a monitor that rebooted or a cable that was re-plugged. ``stop_requests()`` queues
the stop requests §8 asks for before the port is closed.

Mapping (§5.2, §5.3). A group whose status lacks EXISTS is a module that is not there: no
reading. A group that EXISTS but is not ACTIVE, or a value that is a special code, gives a
NaN reading flagged ``Quality.INVALID`` (plus OUT_OF_RANGE / CALIBRATING where the code
says so), so the record shows the measurement was lost rather than silently absent:

* HR <- ECG hr; PULSE <- SpO2 pr; SPO2 <- SpO2 x0.01 %
* NIBP sys/dia/mean <- NIBP x0.01 mmHg
* TEMP <- the first of T1..T4 that exists (T1 normally), x0.01 degC
* ETCO2/FICO2 <- CO2 et/fi (x0.01 %) x amb_press (x0.1 mmHg) / 100, as VSCapture does
* RR <- CO2 rr when the CO2 group is active, else ECG imp_rr (§5.2 "For KAP")
* waves: PLETH (x0.01, relative), CO2 (x0.01 % -> mmHg with the last ambient pressure),
  ECG1 (x0.01 mV) -> Channel.ECG. Sample times come from the nominal rate (§6), anchored
  to arrival time and re-anchored only when they drift more than ``WAVE_REANCHOR_S``.

Choices where the document is uncertain:

* ``REQUEST_DRI_LEVELS``: requests are sent once, with DRI level 0 (the document's verified
  request, §4.1 "0 works"); VSCapture sends one per level 7..11 (§3, §8) "to be safe".
* ``NOMINAL_AMB_PRESS_MMHG``: before the monitor has reported a valid ambient pressure,
  CO2 % is converted at 760 mmHg and the value is flagged ``Quality.QUESTIONABLE``.
* The group-specific status bits (§5.1: ECG leads off, CO2 calibrating, ...) are single
  source and uncertain; they are not used. ``ir_amp`` (scale unknown) is not mapped to PI.
* Wave sample codes (<= -32000, §5.3) become NaN; a chunk with some is QUESTIONABLE, a
  chunk with only codes INVALID.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import serial

from kapmonitor.model import CHANNELS, Channel, Message, Quality, Reading, WaveChunk

from ..codecs.ge_s5 import (
    DATA_NOT_CALIBRATED,
    DATA_OVER_RANGE,
    DATA_UNDER_RANGE,
    DRI_PH_DISPL,
    LAST_SPECIAL_SAMPLE,
    WAVE_CO2,
    WAVE_ECG1,
    WAVE_PLETH,
    WF_REQ_CONT_START,
    WF_REQ_CONT_STOP,
    BasicPhdb,
    GeS5Codec,
    Group,
    PhdbRecord,
    PhdbRequest,
    WaveRecord,
    WaveRequest,
    is_special,
)
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ALLOWED_REQUESTS",
    "WAVE_CHANNELS",
    "WAVE_DIVISOR",
    "WAVE_RATES_HZ",
    "GeS5Host",
    "is_allowed",
]

#: DRI levels each request is sent with (§3, §8; uncertain - see the module docstring).
REQUEST_DRI_LEVELS: tuple[int, ...] = (0,)
#: Shortest displayed-values interval (§4.1: VSCaptureWave never goes below 5 s).
MIN_INTERVAL_S = 5
#: Re-send the displayed-values request after this many intervals without a record.
RENEW_AFTER_INTERVALS = 3
#: Re-send the waveform request after this long without a waveform record.
WAVE_RENEW_AFTER_S = 5.0
#: Re-anchor a wave's sample clock to arrival time when it drifts more than this.
WAVE_REANCHOR_S = 1.0
#: Ambient pressure used for CO2 % -> mmHg until the monitor reports one (flagged).
NOMINAL_AMB_PRESS_MMHG = 760.0

#: Nominal sample rates (§4.2) of the waves KAP maps, and their channels and scales (§6).
WAVE_RATES_HZ: dict[int, int] = {WAVE_ECG1: 300, WAVE_PLETH: 100, WAVE_CO2: 25}
WAVE_CHANNELS: dict[int, Channel] = {
    WAVE_ECG1: Channel.ECG,
    WAVE_PLETH: Channel.PLETH,
    WAVE_CO2: Channel.CO2_WAVE,
}
_CHANNEL_WAVES = {c: w for w, c in WAVE_CHANNELS.items()}
#: Raw wave sample / 100 = ECG mV, PLETH relative, CO2 % (§6, "x0.01").
WAVE_DIVISOR = 100
#: §4.2: the requested waves' rates must sum to less than this.
MAX_WAVE_SAMPLES_PER_S = 600

#: The request types the host ever sends (a test checks every byte against this).
ALLOWED_REQUESTS: frozenset[type] = frozenset({PhdbRequest, WaveRequest})


def is_allowed(message: object) -> bool:
    """True for a message the host may send: displayed values start/stop (basic class
    only) and waveform start/stop. Nothing else ever leaves the host."""
    if isinstance(message, PhdbRequest):
        return message.record_type == DRI_PH_DISPL and message.class_bf == 0
    if isinstance(message, WaveRequest):
        return message.req_type in (WF_REQ_CONT_START, WF_REQ_CONT_STOP)
    return False


_Scale = tuple[int, int]  # value = raw * numerator / denominator
_X1: _Scale = (1, 1)
_X001: _Scale = (1, 100)


def _code_quality(raw: int) -> Quality:
    q = Quality.INVALID
    if raw in (DATA_UNDER_RANGE, DATA_OVER_RANGE):
        q |= Quality.OUT_OF_RANGE
    elif raw == DATA_NOT_CALIBRATED:
        q |= Quality.CALIBRATING
    return q


class GeS5Host(HostProtocol):
    """Requests displayed values and waves from an S/5 monitor and maps its records."""

    protocol: ClassVar[str] = "ge-s5"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(
        baudrate=19200,
        parity=serial.PARITY_EVEN,
        rtscts=True,  # §1: 8E1, RTS/CTS
    )
    tick_interval_s: ClassVar[float] = 0.25
    #: Waves arrive several times a second, displayed values every 5 s: two missed
    #: displayed-value records and no wave in between means the link is stale.
    stale_after_s: ClassVar[float] = 12.0

    def __init__(
        self,
        source: str = "monitor",
        *,
        interval_s: int = MIN_INTERVAL_S,
        waves: tuple[Channel, ...] = (Channel.PLETH, Channel.CO2_WAVE),
    ) -> None:
        super().__init__(source)
        if not MIN_INTERVAL_S <= interval_s <= 3600:
            raise ValueError(f"interval_s must be {MIN_INTERVAL_S}..3600 s, got {interval_s}")
        unknown = [c for c in waves if c not in _CHANNEL_WAVES]
        if unknown:
            raise ValueError(f"no S/5 waveform for {unknown}; known: {list(_CHANNEL_WAVES)}")
        ids = tuple(_CHANNEL_WAVES[c] for c in waves)
        if sum(WAVE_RATES_HZ[w] for w in ids) >= MAX_WAVE_SAMPLES_PER_S:
            raise ValueError(f"waves {waves} exceed {MAX_WAVE_SAMPLES_PER_S} samples/s (§4.2)")
        self.interval_s = interval_s
        self.wave_ids = ids
        self.codec = GeS5Codec()
        self._connected = False
        self._reset()

    def _reset(self) -> None:
        self._associated = False
        self._phdb_asked_us = 0
        self._wave_asked_us = 0
        self._last_phdb_us: int | None = None
        self._last_wave_us: int | None = None
        self._amb_raw: int | None = None  # last valid CO2 amb_press, x0.1 mmHg
        #: wave id -> (host time of sample 0, samples since): times follow the nominal rate
        self._wave_clock: dict[int, tuple[int, int]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self._reset()
        self._connected = True
        self._request_phdb(now_us)
        self._request_waves(now_us)

    def connection_lost(self) -> None:
        self._connected = False
        self.codec.reset()
        self._reset()

    @property
    def associated(self) -> bool:
        return self._associated

    def closing(self, now_us: int) -> None:
        """Deliberate stop: ask the monitor to stop sending (§8) before the port closes."""
        self.stop_requests()

    def stop_requests(self) -> None:
        """Queue the stop requests (§8: the monitor keeps streaming after the host goes)."""
        for level in REQUEST_DRI_LEVELS:
            self.send(self.codec.encode(PhdbRequest(DRI_PH_DISPL, 0, 0, level)))
            if self.wave_ids:
                self.send(self.codec.encode(WaveRequest(WF_REQ_CONT_STOP, self.wave_ids, level)))

    def _request_phdb(self, now_us: int) -> None:
        for level in REQUEST_DRI_LEVELS:
            self.send(self.codec.encode(PhdbRequest(DRI_PH_DISPL, self.interval_s, 0, level)))
        self._phdb_asked_us = now_us

    def _request_waves(self, now_us: int) -> None:
        if not self.wave_ids:
            return
        for level in REQUEST_DRI_LEVELS:
            self.send(self.codec.encode(WaveRequest(WF_REQ_CONT_START, self.wave_ids, level)))
        self._wave_asked_us = now_us

    def tick(self, now_us: int) -> list[Message]:
        if not self._connected:
            return []
        since = max(self._phdb_asked_us, self._last_phdb_us or 0)
        if now_us - since >= RENEW_AFTER_INTERVALS * self.interval_s * 1_000_000:
            self._request_phdb(now_us)
        since = max(self._wave_asked_us, self._last_wave_us or 0)
        if self.wave_ids and now_us - since >= WAVE_RENEW_AFTER_S * 1e6:
            self._request_waves(now_us)
        return []

    # -- incoming ---------------------------------------------------------------------------

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        out: list[Message] = []
        for msg in self.codec.feed(data):
            if isinstance(msg, PhdbRecord):
                self._mark_frame(now_us)
                self._last_phdb_us = now_us
                for sub in msg.subrecords:
                    if sub.sr_type == DRI_PH_DISPL and sub.basic is not None:
                        out += self._map_basic(sub.basic, now_us, sub.time * 1_000_000)
            elif isinstance(msg, WaveRecord):
                self._mark_frame(now_us)
                self._last_wave_us = now_us
                out += self._map_waves(msg, now_us)
            elif isinstance(msg, (PhdbRequest, WaveRequest)):
                continue  # our own requests echoed by a loopback cable: not monitor data
            else:
                self._mark_frame(now_us)  # a valid record of a kind KAP does not map
        return out

    def _mark_frame(self, now_us: int) -> None:
        self.last_frame_us = now_us
        self._associated = True

    def _reading(
        self,
        ch: Channel,
        raw: int,
        scale: _Scale,
        now_us: int,
        dev_us: int,
        extra: Quality = Quality.OK,
    ) -> Reading:
        if is_special(raw):
            return Reading(ch, math.nan, now_us, self.source, dev_us, _code_quality(raw) | extra)
        num, den = scale
        value = raw * num / den  # integer product, one rounding: 3680 -> 36.8 exactly
        lo, hi = CHANNELS[ch].plausible
        q = extra if lo <= value <= hi else extra | Quality.OUT_OF_RANGE
        return Reading(ch, value, now_us, self.source, dev_us, q)

    def _group(
        self,
        g: Group,
        fields: list[tuple[Channel, int, _Scale]],
        now_us: int,
        dev_us: int,
        extra: Quality = Quality.OK,
    ) -> list[Reading]:
        if not g.exists:
            return []
        if not g.active:
            q = Quality.INVALID | extra
            return [Reading(ch, math.nan, now_us, self.source, dev_us, q) for ch, _, _ in fields]
        return [self._reading(ch, g.values[i], s, now_us, dev_us, extra) for ch, i, s in fields]

    def _map_basic(self, b: BasicPhdb, now_us: int, dev_us: int) -> list[Reading]:
        out = self._group(b.ecg, [(Channel.HR, 0, _X1)], now_us, dev_us)
        out += self._group(
            b.nibp,
            [
                (Channel.NIBP_SYS, 0, _X001),
                (Channel.NIBP_DIA, 1, _X001),
                (Channel.NIBP_MEAN, 2, _X001),
            ],
            now_us,
            dev_us,
        )
        for t in (b.t1, b.t2, b.t3, b.t4):
            if t.exists:
                out += self._group(t, [(Channel.TEMP, 0, _X001)], now_us, dev_us)
                break
        out += self._group(
            b.spo2, [(Channel.SPO2, 0, _X001), (Channel.PULSE, 1, _X1)], now_us, dev_us
        )
        co2 = b.co2
        if co2.exists:
            amb_raw = co2.values[3]
            if co2.active and not is_special(amb_raw) and amb_raw > 0:
                self._amb_raw = amb_raw
            gas, extra = self._gas_scale()
            out += self._group(
                co2, [(Channel.ETCO2, 0, gas), (Channel.FICO2, 1, gas)], now_us, dev_us, extra
            )
        if co2.exists and co2.active:
            out += self._group(co2, [(Channel.RR, 2, _X1)], now_us, dev_us)
        elif b.ecg.exists and b.ecg.active and not is_special(b.ecg.values[4]):
            out += self._group(b.ecg, [(Channel.RR, 4, _X1)], now_us, dev_us)
        elif co2.exists:
            out += self._group(co2, [(Channel.RR, 2, _X1)], now_us, dev_us)  # NaN, INVALID
        return out

    def _gas_scale(self) -> tuple[_Scale, Quality]:
        """x0.01 % of the ambient pressure (x0.1 mmHg) in mmHg: ``et * amb * 1e-5`` (§5.2),
        at the nominal pressure and flagged until the monitor has reported one."""
        if self._amb_raw is None:
            return (round(NOMINAL_AMB_PRESS_MMHG * 10), 100_000), Quality.QUESTIONABLE
        return (self._amb_raw, 100_000), Quality.OK

    def _map_waves(self, rec: WaveRecord, now_us: int) -> list[WaveChunk]:
        out: list[WaveChunk] = []
        for sub in rec.subrecords:
            ch = WAVE_CHANNELS.get(sub.wave_id)
            if ch is None or not sub.samples:
                continue  # a wave KAP did not ask for and has no channel for
            rate = WAVE_RATES_HZ[sub.wave_id]
            raw = np.asarray(sub.samples, dtype=np.int32)
            codes = raw <= LAST_SPECIAL_SAMPLE
            q = Quality.OK
            if ch is Channel.CO2_WAVE:
                (num, den), q = self._gas_scale()
                values = raw.astype(np.float64) * num / den
            else:
                values = raw.astype(np.float64) / WAVE_DIVISOR
            if codes.any():
                values[codes] = np.nan
                q |= Quality.INVALID if codes.all() else Quality.QUESTIONABLE
            n = len(raw)
            arrival_t0 = now_us - round(n * 1e6 / rate)  # the last sample arrived just now
            anchor, k = self._wave_clock.get(sub.wave_id, (arrival_t0, 0))
            t0 = anchor + round(k * 1e6 / rate)
            if abs(t0 - arrival_t0) > WAVE_REANCHOR_S * 1e6:
                anchor, k, t0 = arrival_t0, 0, arrival_t0
            self._wave_clock[sub.wave_id] = (anchor, k + n)
            # device_t_us: the record's own time stamp (whole seconds, §3 r_time)
            out.append(WaveChunk(ch, t0, float(rate), values, self.source, rec.time * 1_000_000, q))
        return out
