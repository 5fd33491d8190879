"""Masimo pulse oximeter "ASCII 1" serial output: the app's side (sans-I/O).

Implements shared/protocols/masimo-ascii.md. **The host sends nothing, ever**: the
oximeter streams one line a second and accepts no commands (§1 "One-directional"), so
there is no association, polling or keep-alive. ``send`` is overridden to refuse, and
``HOST_COMMANDS`` (the commands the host may send) is empty; a test checks that not one
byte leaves the host.

Mapping (§3, §4, §5): SPO2 -> Channel.SPO2 (%), BPM -> Channel.PULSE (/min),
PI -> Channel.PERF_INDEX (%), each with the line's receipt time (§2: the device clock is
not wall time; it is kept as ``device_t_us``, read as UTC). A field printed with dashes
gives a NaN reading flagged ``Quality.INVALID``; a field the device does not print (e.g. no
PI on some models) gives no reading. The EXC word becomes quality flags through
``EXC_QUALITY`` (sensor off -> SENSOR_OFF, interference -> ARTEFACT, low perfusion ->
QUESTIONABLE, ...); §4's conservative policy makes values under NO_SENSOR, SENSOR_OFF,
DEFECTIVE_SENSOR or PULSE_SEARCH INVALID even when digits are printed. Values outside
``CHANNELS[..].plausible`` are flagged OUT_OF_RANGE.

The ALARM word (§5) reports limit alarms, silencing and low battery: none says anything
about a value's quality, so it maps to no Quality flag; its bits are kept, decoded, in
``device_alarms`` for the alarm engine (the model has no monitor-alarm message yet).

Choices where the document is uncertain:

* ``EXC_QUALITY``: EXC bits >= 0x001000 come from one transcription (§5, uncertain); they
  are mapped to QUESTIONABLE only (never INVALID or SENSOR_OFF), except the SpCO/SpMet
  confidence bits, which do not concern SpO2, pulse or PI. Unknown/reserved bits set ->
  QUESTIONABLE. A missing EXC word (dashes) -> QUESTIONABLE.
* ``stale_after_s`` is 3 s: §8 says no line for more than 2-3 s is a cable or mode problem.
* ``MODE_HINT_AFTER_LINES`` lines that arrive but don't parse set ``hint`` to tell the user
  to select ASCII 1 (§1), the usual cause.
"""

from __future__ import annotations

import calendar
import math
from typing import ClassVar

from kapmonitor.model import CHANNELS, Channel, Message, Quality, Reading

from ..codecs.masimo import MasimoCodec, MasimoRecord
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ALARM_BITS",
    "EXC_BITS",
    "EXC_QUALITY",
    "HOST_COMMANDS",
    "MasimoHost",
    "alarm_names",
    "exc_quality",
]

#: What the host may send: nothing (§1, one-directional).
HOST_COMMANDS: frozenset[bytes] = frozenset()

#: §5 ALARM bits.
ALARM_BITS: dict[int, str] = {
    0x0001: "spo2_high",
    0x0002: "spo2_low",
    0x0004: "pulse_high",
    0x0008: "pulse_low",
    0x0010: "alarm_active",
    0x0020: "alarm_silenced",
    0x0040: "low_battery",
    0x0100: "spco_high",
    0x0200: "spco_low",
    0x0400: "spmet_high",
    0x0800: "spmet_low",
    0x1000: "desat_index",
    0x2000: "pi_delta",
}

#: §5 EXC bits.
EXC_BITS: dict[int, str] = {
    0x000001: "no_sensor",
    0x000002: "defective_sensor",
    0x000004: "low_perfusion",
    0x000008: "pulse_search",
    0x000010: "interference",
    0x000020: "sensor_off",
    0x000040: "ambient_light",
    0x000080: "unrecognised_sensor",
    0x000100: "incompatible_sensor",
    0x000400: "low_signal_iq",
    0x000800: "masimo_set",
    0x001000: "no_cable",
    0x002000: "cable_life_expired",
    0x004000: "incompatible_cable",
    0x008000: "unrecognised_cable",
    0x010000: "defective_cable",
    0x020000: "sensor_calibrating",
    0x040000: "sensor_life_expired",
    0x080000: "emitter_temperature",
    0x100000: "sensor_current_limit",
    0x200000: "spco_low_confidence",
    0x400000: "spmet_low_confidence",
}

_Q = Quality
#: EXC bit -> the quality flags it puts on SpO2, pulse rate and PI (module docstring).
EXC_QUALITY: dict[int, Quality] = {
    0x000001: _Q.SENSOR_OFF | _Q.INVALID,  # no sensor
    0x000002: _Q.INVALID,  # defective sensor
    0x000004: _Q.QUESTIONABLE,  # low perfusion
    0x000008: _Q.INVALID,  # pulse search
    0x000010: _Q.ARTEFACT,  # interference
    0x000020: _Q.SENSOR_OFF | _Q.INVALID,  # sensor off (patient)
    0x000040: _Q.ARTEFACT,  # ambient light
    0x000080: _Q.QUESTIONABLE,  # unrecognised sensor
    0x000100: _Q.QUESTIONABLE,  # incompatible sensor
    0x000400: _Q.QUESTIONABLE,  # low signal IQ
    0x000800: _Q.OK,  # "Masimo SET": a processing-mode indicator, not a fault
    **{bit: _Q.QUESTIONABLE for bit in EXC_BITS if 0x001000 <= bit <= 0x100000},  # uncertain
    0x200000: _Q.OK,  # SpCO low confidence: not SpO2/PR/PI
    0x400000: _Q.OK,  # SpMet low confidence
}

#: Lines that arrive without one parsing before ``hint`` suggests the ASCII 1 mode (§1).
MODE_HINT_AFTER_LINES = 3
MODE_HINT = "lines from the oximeter do not parse: select the ASCII 1 serial output mode"

#: Record field -> channel.
_CHANNELS: tuple[tuple[str, str, Channel], ...] = (
    ("SPO2", "spo2", Channel.SPO2),
    ("BPM", "bpm", Channel.PULSE),
    ("PI", "pi", Channel.PERF_INDEX),
)


def exc_quality(exc: int | None) -> Quality:
    """The quality flags an EXC word puts on SpO2, pulse rate and PI."""
    if exc is None:
        return Quality.QUESTIONABLE
    q = Quality.OK
    bit = 1
    while bit <= exc:
        if exc & bit:
            q |= EXC_QUALITY.get(bit, Quality.QUESTIONABLE)
        bit <<= 1
    return q


def alarm_names(word: int | None) -> frozenset[str]:
    """Names of the ALARM bits set (unknown bits as ``bit_0x....``)."""
    if word is None:
        return frozenset()
    names = set()
    bit = 1
    while bit <= word:
        if word & bit:
            names.add(ALARM_BITS.get(bit, f"bit_{bit:#06x}"))
        bit <<= 1
    return frozenset(names)


def device_time_us(date: str, time: str) -> int | None:
    """The device clock (MM/DD/YY HH:MM:SS, §2) read as UTC, or None if it isn't a time."""
    try:
        mo, d, y = (int(x) for x in date.split("/"))
        h, mi, s = (int(x) for x in time.split(":"))
        if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(2000 + y, mo)[1]):
            return None
        if not (h < 24 and mi < 60 and s < 60):
            return None
        return calendar.timegm((2000 + y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000
    except ValueError:
        return None


class MasimoHost(HostProtocol):
    """Listens to an oximeter's ASCII 1 stream; never writes (see the module docstring)."""

    protocol: ClassVar[str] = "masimo"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)  # §1: 8N1, none
    tick_interval_s: ClassVar[float] = 0.5
    stale_after_s: ClassVar[float] = 3.0

    def __init__(self, source: str = "oximeter") -> None:
        super().__init__(source)
        self.codec = MasimoCodec()
        self.device_alarms: frozenset[str] = frozenset()
        self.device_serial: str | None = None
        self.hint: str | None = None
        self._bad_lines = 0

    def send(self, data: bytes) -> None:
        raise RuntimeError("the Masimo ASCII 1 output is one-way: the host sends nothing")

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self._bad_lines = 0

    def connection_lost(self) -> None:
        self.codec.reset()

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        errors = self.codec.stats.errors
        bad_before = errors["format"] + errors["partial"] + errors["overflow"]
        records = self.codec.feed(data)
        bad = errors["format"] + errors["partial"] + errors["overflow"] - bad_before
        if records:
            self._bad_lines, self.hint = 0, None
        elif bad:
            self._bad_lines += bad
            if self._bad_lines >= MODE_HINT_AFTER_LINES:
                self.hint = MODE_HINT
        out: list[Message] = []
        for rec in records:
            self.last_frame_us = now_us
            out += self._map(rec, now_us)
        return out

    def _map(self, rec: MasimoRecord, now_us: int) -> list[Reading]:
        self.device_alarms = alarm_names(rec.alarm)
        if rec.serial is not None:
            self.device_serial = rec.serial
        dev_us = device_time_us(rec.date, rec.time)
        q_exc = exc_quality(rec.exc)
        out = []
        for tag, attr, ch in _CHANNELS:
            if not rec.has(tag):
                continue  # this device does not print the field
            value = getattr(rec, attr)
            if value is None:
                out.append(Reading(ch, math.nan, now_us, self.source, dev_us, _Q.INVALID | q_exc))
                continue
            lo, hi = CHANNELS[ch].plausible
            q = q_exc if lo <= value <= hi else q_exc | Quality.OUT_OF_RANGE
            out.append(Reading(ch, float(value), now_us, self.source, dev_us, q))
        return out
