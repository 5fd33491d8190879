"""What a session is made of: channels, readings, wave chunks, pump states, device states.

Every layer speaks these types. Drivers produce them, the bus carries them, the store,
the alarm engine and the live buffers consume them (DESIGN §2). They are plain frozen
dataclasses, so they cross threads without copying or locking, and they carry no Qt.

A channel is described once (unit, codes, precision, plausible range) in ``CHANNELS``
rather than on every reading, as bluesky and ophyd-async describe a signal once
(CONVENTIONS 10). Codes and units come from shared/clinical.md §6.1 (LOINC, IEEE 11073-10101
MDC context-free codes = partition x 65536 + term code, UCUM units).

Time: every record carries host UTC time in integer microseconds since the epoch, taken
when the frame completed (``t_us``). A device's own timestamp, where the protocol has one,
is kept beside it (``device_t_us``) and never replaces it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

__all__ = [
    "CHANNELS",
    "Channel",
    "ChannelInfo",
    "ChannelKind",
    "DeviceState",
    "DeviceStatus",
    "Message",
    "PumpAlarm",
    "PumpRunState",
    "PumpState",
    "Quality",
    "Reading",
    "WaveChunk",
    "device_of",
    "now_us",
]


def device_of(source: str) -> str:
    """The device (link) a message source belongs to. A device with several pumps or
    modules behind one link names them ``"<device>/<sub>"`` (``"pump/slot11"``,
    ``"pump/2"``); its link state is reported for ``"<device>"``."""
    return source.split("/", 1)[0]


def now_us() -> int:
    """Host UTC time in integer microseconds: the one clock of every record (DESIGN §2)."""
    return time.time_ns() // 1000


class Channel(enum.StrEnum):
    """Stable channel identifiers. The string values are stored in the database and
    exports, so they never change once released; add new members instead."""

    HR = "hr"
    PULSE = "pulse"
    SPO2 = "spo2"
    NIBP_SYS = "nibp_sys"
    NIBP_DIA = "nibp_dia"
    NIBP_MEAN = "nibp_mean"
    RR = "rr"
    ETCO2 = "etco2"
    FICO2 = "fico2"
    TEMP = "temp"
    PERF_INDEX = "pi"
    PLETH = "pleth"
    ECG = "ecg"
    CO2_WAVE = "co2_wave"
    PUMP_RATE = "pump_rate"
    VOLUME_INFUSED = "volume_infused"
    VTBI = "vtbi"
    DELIVERED_DOSE = "delivered_dose"
    PLASMA_ESTIMATE = "plasma_estimate"


class ChannelKind(enum.Enum):
    NUMERIC = "numeric"
    WAVE = "wave"


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """How a channel is described once: label, unit and codes for exports, display
    precision, and the physically plausible range a decoded value must lie in (a value
    outside it is a decoding or sensor fault, flagged, not an alarm limit)."""

    channel: Channel
    label: str
    kind: ChannelKind
    ucum: str
    display_unit: str
    precision: int
    plausible: tuple[float, float]
    loinc: str | None = None
    mdc_code: int | None = None
    mdc_ref: str | None = None
    nominal_rate_hz: float | None = None  # waves only


_N, _W = ChannelKind.NUMERIC, ChannelKind.WAVE

#: Channel descriptions. Codes from shared/clinical.md §6.1; the EtCO2 LOINC is the
#: partial-pressure term 19891-1 because we store mmHg (§6.1 note); SpO2 uses 59408-5
#: (pulse oximetry) with MDC 150456 (§6.1 note on the 150324 disagreement).
CHANNELS: Mapping[Channel, ChannelInfo] = MappingProxyType(
    {
        i.channel: i
        for i in (
            ChannelInfo(Channel.HR, "HR", _N, "/min", "bpm", 0, (0, 350), "8867-4", 147842,
                  "MDC_ECG_HEART_RATE"),
            ChannelInfo(Channel.PULSE, "Pulse", _N, "/min", "bpm", 0, (0, 350), "8867-4", 149530,
                  "MDC_PULS_OXIM_PULS_RATE"),
            ChannelInfo(Channel.SPO2, "SpO\u2082", _N, "%", "%", 0, (0, 100), "59408-5", 150456,
                  "MDC_PULS_OXIM_SAT_O2"),
            ChannelInfo(Channel.NIBP_SYS, "NIBP sys", _N, "mm[Hg]", "mmHg", 0, (0, 350), "8480-6",
                  150021, "MDC_PRESS_BLD_NONINV_SYS"),
            ChannelInfo(Channel.NIBP_DIA, "NIBP dia", _N, "mm[Hg]", "mmHg", 0, (0, 300), "8462-4",
                  150022, "MDC_PRESS_BLD_NONINV_DIA"),
            ChannelInfo(Channel.NIBP_MEAN, "NIBP mean", _N, "mm[Hg]", "mmHg", 0, (0, 300), "8478-0",
                  150023, "MDC_PRESS_BLD_NONINV_MEAN"),
            ChannelInfo(Channel.RR, "RR", _N, "/min", "rpm", 0, (0, 150), "9279-1", 151562,
                  "MDC_RESP_RATE"),
            ChannelInfo(Channel.ETCO2, "EtCO\u2082", _N, "mm[Hg]", "mmHg", 0, (0, 150), "19891-1",
                  151708, "MDC_AWAY_CO2_ET"),
            ChannelInfo(Channel.FICO2, "FiCO\u2082", _N, "mm[Hg]", "mmHg", 0, (0, 150), None,
                        151716, "MDC_AWAY_CO2_INSP_MIN"),
            ChannelInfo(Channel.TEMP, "Temp", _N, "Cel", "\u00b0C", 1, (15, 45), "8310-5", 150364,
                  "MDC_TEMP_BODY"),
            ChannelInfo(Channel.PERF_INDEX, "PI", _N, "%", "%", 2, (0, 100), None, 150488,
                  "MDC_PULS_OXIM_PERF_REL"),
            ChannelInfo(Channel.PLETH, "Pleth", _W, "1", "", 3, (-1e6, 1e6), None, 150452,
                  "MDC_PULS_OXIM_PLETH", nominal_rate_hz=125.0),
            ChannelInfo(Channel.ECG, "ECG II", _W, "mV", "mV", 3, (-20, 20), None, 131330,
                  "MDC_ECG_ELEC_POTL_II", nominal_rate_hz=250.0),
            ChannelInfo(Channel.CO2_WAVE, "CO\u2082", _W, "mm[Hg]", "mmHg", 1, (-10, 150), None,
                  151756, "MDC_AWAY_CO2", nominal_rate_hz=62.5),
            ChannelInfo(Channel.PUMP_RATE, "Rate", _N, "mL/h", "mL/h", 1, (0, 2000)),
            ChannelInfo(Channel.VOLUME_INFUSED, "Infused", _N, "mL", "mL", 2, (0, 10000)),
            ChannelInfo(Channel.VTBI, "VTBI", _N, "mL", "mL", 1, (0, 10000)),
            ChannelInfo(Channel.DELIVERED_DOSE, "Delivered", _N, "mg", "mg", 1, (0, 10000)),
            ChannelInfo(Channel.PLASMA_ESTIMATE, "Cp est.", _N, "ng/mL", "ng/mL", 0, (0, 1e5)),
        )
    }
)


class Quality(enum.IntFlag):
    """Why a value may not be taken at face value. Stored as an integer with every
    sample; 0 means a valid measurement."""

    OK = 0
    INVALID = 1  # the device says the value is invalid / not available
    QUESTIONABLE = 2  # the device flags it (low perfusion, signal quality, ...)
    ARTEFACT = 4  # motion or interference flagged by the device
    OUT_OF_RANGE = 8  # outside ChannelInfo.plausible: a decoding or sensor fault
    CALIBRATING = 16
    DEMO = 32  # produced by the simulator, never a real patient
    SENSOR_OFF = 64  # probe off / lead off / cuff not connected


@dataclass(frozen=True, slots=True)
class Reading:
    """One numeric value of one channel from one device."""

    channel: Channel
    value: float
    t_us: int
    source: str = ""
    device_t_us: int | None = None
    quality: Quality = Quality.OK


@dataclass(frozen=True, slots=True, eq=False)
class WaveChunk:
    """A run of equally spaced samples of one wave channel. ``t_us`` is the host time of
    the first sample; sample i is at ``t_us + i * 1e6 / rate_hz``."""

    channel: Channel
    t_us: int
    rate_hz: float
    samples: np.ndarray  # float32, one dimension
    source: str = ""
    device_t_us: int | None = None
    quality: Quality = Quality.OK

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"wave rate must be positive, got {self.rate_hz}")
        arr = np.ascontiguousarray(self.samples, dtype=np.float32).reshape(-1)
        arr.setflags(write=False)
        object.__setattr__(self, "samples", arr)

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_us(self) -> int:
        """Host time one sample period after the last sample (where the next chunk starts)."""
        return self.t_us + round(len(self) * 1e6 / self.rate_hz)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WaveChunk):
            return NotImplemented
        return (
            self.channel == other.channel
            and self.t_us == other.t_us
            and self.rate_hz == other.rate_hz
            and self.source == other.source
            and self.device_t_us == other.device_t_us
            and self.quality == other.quality
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]


class PumpRunState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETE = "complete"  # VTBI reached (KVO or stopped, as the pump reports)
    BOLUS = "bolus"
    ALARM = "alarm"  # stopped by an alarm
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PumpAlarm:
    """A pump alarm as the pump reports it. ``code`` is a normalised name such as
    "occlusion", "air_in_line", "near_end", "end", or "unclassified" when the protocol
    document leaves the meaning open; ``raw`` always keeps what came on the wire."""

    code: str
    raw: str
    text: str = ""
    high_priority: bool = True


@dataclass(frozen=True, slots=True)
class PumpState:
    """A snapshot of what one pump channel is doing. A new one is published on every
    change of state, rate or alarm, and at each poll (DESIGN §2; issue 5)."""

    t_us: int
    state: PumpRunState
    rate_ml_h: float | None = None
    volume_infused_ml: float | None = None
    vtbi_ml: float | None = None  # still to be infused (not the programmed total)
    bolus_ml: float | None = None
    drug: str | None = None
    concentration_mg_ml: float | None = None
    alarms: tuple[PumpAlarm, ...] = ()
    infusion_id: int = 0  # increments when the pump starts a new infusion (volume resets)
    source: str = ""
    device_t_us: int | None = None
    quality: Quality = Quality.OK


class DeviceState(enum.StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALE = "stale"  # open, but no valid frame for the stale timeout
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"  # closed on purpose


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device changed state. Low-rate: published only on transitions."""

    source: str
    state: DeviceState
    t_us: int
    detail: str = ""
    protocol: str = ""


Message = Reading | WaveChunk | PumpState | DeviceStatus
