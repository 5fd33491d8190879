"""A simulated GE Datex-Ohmeda S/5 monitor on its computer-interface port.

Plays shared/protocols/ge-datex-s5.md from the monitor's side, as §8 "Simulator" asks:
it sends nothing until it gets a valid request, then sends a displayed-values record
(§5, basic class, sr_type 1) at once and every ``tx_interval`` seconds (-1: once, 0: stop),
and, after a waveform start request (§4.2), waveform records (§6) every
``wave_record_period_s`` carrying exactly the samples due at each wave's nominal rate
(a sample counter against the clock, so none is lost or repeated over a long run). Records
carry r_time in Unix seconds, and every 0x7E/0x7D is escaped, checksum included.

What the feed gives becomes raw integers at the protocol's resolution (§5.2 scales):
a channel absent from the feed leaves its group absent (status 0); a channel present but
None gives a group that EXISTS but is not ACTIVE with DATA_INVALID values; a value that
doesn't fit an int16 is sent as DATA_OVER_RANGE / DATA_UNDER_RANGE (§5.3). EtCO2/FiCO2 and
the CO2 wave (mmHg from the feed) are sent as % of ``amb_press_mmhg``. RR goes to the CO2
group when the feed has EtCO2 or FiCO2, otherwise to ECG impedance respiration.

Only the displayed-values record type is simulated (trend requests are ignored), and
only the basic class; each new connection starts a fresh monitor session with no
requests active. ``silent = True`` makes the monitor stop answering and sending.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from kapmonitor.model import Channel

from ...codecs.base import Role
from ...codecs.ge_s5 import (
    BASIC_GROUPS,
    CLASS_DENY_BASIC,
    DATA_INVALID,
    DATA_OVER_RANGE,
    DATA_UNDER_RANGE,
    DRI_PH_DISPL,
    LAST_SPECIAL_SAMPLE,
    LAST_SPECIAL_VALUE,
    STATUS_ACTIVE,
    STATUS_EXISTS,
    WF_REQ_CONT_START,
    WF_REQ_CONT_STOP,
    BasicPhdb,
    GeS5Codec,
    Group,
    PhdbRecord,
    PhdbRequest,
    PhdbSubrecord,
    WaveRecord,
    WaveRequest,
    WaveSubrecord,
)
from ...devices.ge_s5 import WAVE_CHANNELS, WAVE_DIVISOR, WAVE_RATES_HZ
from ...protocol import PeerProtocol
from ..feed import VitalsFeed

__all__ = ["GeS5Peer"]

#: cl_drilvl_subt of the subrecords sent: class 0 (basic) in bits 8-11, as in §7.1.
CL_DRILVL_SUBT_BASIC = 0x0001

# group name -> [(value index, channel, scale of one raw unit in channel units)]
_NUMERIC_MAP: dict[str, list[tuple[int, Channel, float]]] = {
    "ecg": [(0, Channel.HR, 1.0)],
    "nibp": [
        (0, Channel.NIBP_SYS, 0.01),
        (1, Channel.NIBP_DIA, 0.01),
        (2, Channel.NIBP_MEAN, 0.01),
    ],
    "t1": [(0, Channel.TEMP, 0.01)],
    "spo2": [(0, Channel.SPO2, 0.01), (1, Channel.PULSE, 1.0)],
}


def _raw(value: float, scale: float) -> int:
    """A value in channel units as a §5.2 int16, or the §5.3 code when it can't fit."""
    r = round(value / scale)
    if r > 32767:
        return DATA_OVER_RANGE
    if r <= LAST_SPECIAL_VALUE:
        return DATA_UNDER_RANGE
    return r


class GeS5Peer(PeerProtocol):
    """The monitor's end of the DRI link (see the module docstring)."""

    protocol: ClassVar[str] = "ge-s5"

    def __init__(
        self,
        feed: VitalsFeed,
        *,
        seed: int = 0,
        amb_press_mmhg: float = 760.0,
        wave_record_period_s: float = 0.2,
        dri_level: int = 0,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.seed = seed  # the S/5 output is deterministic; kept for the common signature
        self.amb_press_mmhg = amb_press_mmhg
        self.wave_record_period_us = round(wave_record_period_s * 1e6)
        self.dri_level = dri_level
        self.codec = GeS5Codec(Role.DEVICE)
        self.silent = False
        self.requests: list[PhdbRequest | WaveRequest] = []  # every request received
        self._reset()

    def _reset(self) -> None:
        self._record_no = 0
        self._phdb_interval_us: int | None = None  # None: no displayed values requested
        self._phdb_next_us: int | None = None
        self._phdb_once = False
        self._waves: dict[int, tuple[int, int]] = {}  # wave id -> (clock start, samples sent)
        self._wave_next_us: int | None = None

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self._reset()

    def connection_lost(self) -> None:
        self.codec.reset()
        self._reset()

    # -- requests -----------------------------------------------------------------------------

    def data_received(self, data: bytes, now_us: int) -> None:
        for msg in self.codec.feed(data):
            if self.silent:
                continue
            if isinstance(msg, PhdbRequest):
                self.requests.append(msg)
                self._on_phdb_request(msg, now_us)
            elif isinstance(msg, WaveRequest):
                self.requests.append(msg)
                self._on_wave_request(msg, now_us)

    def _on_phdb_request(self, req: PhdbRequest, now_us: int) -> None:
        if req.record_type != DRI_PH_DISPL or req.class_bf & CLASS_DENY_BASIC:
            return  # trends and extended classes are not simulated
        if req.interval_s == 0:
            self._phdb_interval_us = self._phdb_next_us = None
            return
        self._phdb_once = req.interval_s < 0
        self._phdb_interval_us = max(1, req.interval_s) * 1_000_000
        self._phdb_next_us = now_us
        self._send_phdb(now_us)

    def _on_wave_request(self, req: WaveRequest, now_us: int) -> None:
        if req.req_type == WF_REQ_CONT_STOP:
            for w in req.waves or tuple(self._waves):
                self._waves.pop(w, None)
        elif req.req_type == WF_REQ_CONT_START:
            keep = {w: self._waves.get(w, (now_us, 0)) for w in req.waves if w in WAVE_CHANNELS}
            self._waves = keep
        if self._waves and self._wave_next_us is None:
            self._wave_next_us = now_us + self.wave_record_period_us
        elif not self._waves:
            self._wave_next_us = None

    # -- streaming --------------------------------------------------------------------------

    def tick(self, now_us: int) -> None:
        if self.silent:
            # the monitor is not sending: its wave clocks restart when it resumes
            self._waves = {w: (now_us, 0) for w in self._waves}
            if self._phdb_next_us is not None:
                self._phdb_next_us = max(self._phdb_next_us, now_us)
            return
        self._send_phdb(now_us)
        if self._wave_next_us is not None and now_us >= self._wave_next_us:
            self._send_waves(now_us)
            while self._wave_next_us <= now_us:
                self._wave_next_us += self.wave_record_period_us

    def _next_record_no(self) -> int:
        n = self._record_no
        self._record_no = (n + 1) & 0xFF
        return n

    def _send_phdb(self, now_us: int) -> None:
        if self._phdb_next_us is None or now_us < self._phdb_next_us:
            return
        t = now_us // 1_000_000
        sub = PhdbSubrecord(
            DRI_PH_DISPL,
            t,
            self._basic(self.feed.numerics(now_us)),
            cl_drilvl_subt=CL_DRILVL_SUBT_BASIC,
        )
        rec = PhdbRecord(t, (sub,), self._next_record_no(), self.dri_level)
        self.send(self.codec.encode(rec))
        if self._phdb_once:
            self._phdb_interval_us = self._phdb_next_us = None
            return
        assert self._phdb_interval_us is not None
        while self._phdb_next_us <= now_us:
            self._phdb_next_us += self._phdb_interval_us

    def _basic(self, values: Mapping[Channel, float | None]) -> BasicPhdb:
        groups: dict[str, object] = {}
        amb_raw = round(self.amb_press_mmhg * 10)
        gas_scale = self.amb_press_mmhg * 1e-4  # mmHg per 0.01 % (§5.2)
        has_co2 = Channel.ETCO2 in values or Channel.FICO2 in values
        mapping = dict(_NUMERIC_MAP)
        if has_co2:
            mapping["co2"] = [
                (0, Channel.ETCO2, gas_scale),
                (1, Channel.FICO2, gas_scale),
                (2, Channel.RR, 1.0),
            ]
        else:
            mapping["ecg"] = [*mapping["ecg"], (4, Channel.RR, 1.0)]
        for name, has_header, names in BASIC_GROUPS:
            vals = [DATA_INVALID] * len(names)
            status = 0
            for idx, ch, scale in mapping.get(name, []):
                if ch not in values:
                    continue
                status |= STATUS_EXISTS
                v = values[ch]
                if v is not None:
                    status |= STATUS_ACTIVE
                    vals[idx] = _raw(v, scale)
            if name == "co2" and status:
                vals[3] = amb_raw
            if has_header:
                groups[name] = Group(status, 0, tuple(vals))
            else:
                groups[name] = tuple(vals)
        ecg = groups["ecg"]
        assert isinstance(ecg, Group)
        groups["ecg_extra"] = (ecg.values[0], DATA_INVALID, DATA_INVALID)  # hr_ecg, as §7.1
        return BasicPhdb(**groups)  # type: ignore[arg-type]

    def _send_waves(self, now_us: int) -> None:
        subs = []
        for w, (start_us, sent) in self._waves.items():
            rate = WAVE_RATES_HZ[w]
            due = (now_us - start_us) * rate // 1_000_000 - sent
            if due <= 0:
                continue
            ch = WAVE_CHANNELS[w]
            y = np.asarray(self.feed.wave(ch, float(rate), due, now_us), dtype=np.float64)
            if ch is Channel.CO2_WAVE:
                y = y / self.amb_press_mmhg * 100.0  # mmHg -> % (§6)
            raw = np.round(y * WAVE_DIVISOR)
            bad = ~np.isfinite(raw) | (raw > 32767) | (raw <= LAST_SPECIAL_SAMPLE)
            raw[bad] = DATA_INVALID
            subs.append(WaveSubrecord(w, tuple(int(r) for r in raw)))
            self._waves[w] = (start_us, sent + due)
        if subs:
            t = now_us // 1_000_000
            self.send(
                self.codec.encode(
                    WaveRecord(t, tuple(subs), self._next_record_no(), self.dri_level)
                )
            )
