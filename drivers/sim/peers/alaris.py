"""Simulated BD Alaris GH/CC syringe pump (Asena protocol), byte for byte.

Plays the pump side of shared/protocols/alaris-asena.md: exactly one reply frame per
recognised command, echoing the command name (§2), with the reply layouts chosen once in
``drivers/codecs/alaris.py`` (``InfStatus``, ``VtbiStatus``, ``AlarmStatus``,
``RATE_FORMAT``, ``VOLUME_FORMAT``). Values come from a ``PumpFeed``.

KAP simulator conventions where the document is silent (§6, §8 "KAP simulator choice"):

- No reply at all to a bad CRC, an unknown command or an overlong frame; a partial frame
  is discarded on ESC or after ``PARTIAL_TIMEOUT_S`` without CR (§6).
- ``INF`` f3: ``RUNNING_TOKEN`` (``INF``) while infusing, ``HLD`` otherwise; f2 ``A`` when
  an alarm is active or the VTBI is complete; pressure ``pressure_mmhg`` (530.15 mmHg
  during an occlusion, as in the real alarm frame); f13 counts state/alarm changes.
- End of infusion is reported as ``AL_VTBIS`` (VTBI complete, stop), matching the
  ``INF_VTBI ... ^STOP`` end action; other ``PumpAlarm`` codes map through
  ``SIM_ALARM_CODES``; a raw ``AL_...`` code in ``PumpAlarm.raw`` is sent as it is.
- Remote control (simulator only, for infupy and test scripts, §5.3, §9):
  ``REMOTE_CTRL^ENABLED^<CRC of the serial>`` enables it (a wrong code gets no reply);
  ``INF_RATE^r^ml/h``, ``INF_START``, ``INF_STOP``, ``INF_VTBI^ACTIV^v^ml^STOP`` are then
  applied to a ``ProgrammedPump``-like feed. An infusion started by command stops with
  ``AL_COMTO`` after ``COMMS_TIMEOUT_S`` without traffic (Alaris CC DFU, §4).
"""

from __future__ import annotations

from typing import Any, ClassVar

from kapmonitor.model import PumpAlarm, PumpRunState, PumpState

from ...codecs.alaris import (
    PRESSURE_FORMAT,
    RATE_FORMAT,
    VOLUME_FORMAT,
    AlarisCodec,
    AlarisFrame,
    AlarmStatus,
    InfStatus,
    VtbiStatus,
    crc16,
    parse_decimal,
)
from ...devices.alaris import SERIAL
from ...protocol import PeerProtocol, SerialSettings
from ..feed import PumpFeed

__all__ = ["AlarisPeer"]

PARTIAL_TIMEOUT_S = 1.0
COMMS_TIMEOUT_S = 15.0
RUNNING_TOKEN = "INF"
OCCLUSION_PRESSURE_MMHG = 530.15
#: PumpAlarm.code -> Alaris ALARM code (simulator convention).
SIM_ALARM_CODES: dict[str, tuple[str, str]] = {
    "occlusion": ("AL_OCCLU", "OCCLUSION"),
    "near_end": ("AL_NEOIN", "NEAR END OF INFUSION"),
    "end": ("AL_EOIST", "END OF INFUSION"),
    "syringe": ("AL_SYRCO", "CHECK SYRINGE"),
    "battery": ("AL_LWBAT", "LOW BATTERY"),
    "power": ("AL_ACDIS", "AC DISCONNECTED"),
    "comms": ("AL_COMTO", "COMMS TIMEOUT"),
}
SIM_OTHER_ALARM = ("AL_FAULT", "FAULT")
VTBI_DONE = ("AL_VTBIS", "VTBI COMPLETE")


def _hms(seconds: float) -> str:
    if seconds >= 24 * 3600:
        return "24+"  # §5.2 f11
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class AlarisPeer(PeerProtocol):
    """An Alaris GH/CC syringe pump on its RS-232 port. ``silent = True`` stops replies."""

    protocol: ClassVar[str] = "alaris"
    serial_settings: ClassVar[SerialSettings] = SERIAL
    tick_interval_s: ClassVar[float] = 0.1

    def __init__(
        self,
        feed: PumpFeed,
        *,
        seed: int = 0,
        serial_number: str = "KAP-00001",
        protocol_text: str = "Asena Rev 2.1.5",
        response_max_ms: int = 4000,
        pressure_mmhg: float = 12.40,
        **options: Any,
    ) -> None:
        super().__init__()
        if options:
            raise TypeError(f"unknown AlarisPeer options: {sorted(options)}")
        self.feed = feed
        self.seed = seed
        self.serial_number = serial_number
        self.protocol_text = protocol_text
        self.response_max_ms = response_max_ms
        self.pressure_mmhg = pressure_mmhg
        self.codec = AlarisCodec()
        self.silent = False
        #: Every frame received, in order (the tests check what a host asked for).
        self.received: list[AlarisFrame] = []
        self.remote = False
        self._event_id = 1000 + seed
        self._last_key: tuple[object, ...] | None = None
        self._last_rx_us = 0
        self._serial_started = False

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self.take_outgoing()
        self.remote = False
        self._last_rx_us = now_us

    def connection_lost(self) -> None:
        self.codec.reset()
        self.remote = False

    # -- link -------------------------------------------------------------------------

    def tick(self, now_us: int) -> None:
        if self.codec.in_frame and now_us - self._last_rx_us > PARTIAL_TIMEOUT_S * 1e6:
            self.codec.reset()  # §6: partial frame dropped after 1 s without CR
        if self._serial_started and now_us - self._last_rx_us > COMMS_TIMEOUT_S * 1e6:
            self._serial_started = False
            raise_alarm = getattr(self.feed, "raise_alarm", None)
            if raise_alarm is not None:
                raise_alarm(PumpAlarm("comms", "AL_COMTO", "communications failure"), now_us)

    def data_received(self, data: bytes, now_us: int) -> None:
        if self.silent:
            return
        self._last_rx_us = now_us
        for frame in self.codec.feed(data):
            self.received.append(frame)
            reply = self._answer(frame, now_us)
            if reply is not None:
                self.send(self.codec.encode(reply))

    # -- application ------------------------------------------------------------------

    def _answer(self, frame: AlarisFrame, now_us: int) -> AlarisFrame | None:
        cmd, p = frame.command, frame.params
        if not p:
            query = self._query(cmd, now_us)
            if query is not None:
                return query
        return self._control(cmd, p, now_us)

    def _query(self, cmd: str, now_us: int) -> AlarisFrame | None:
        if cmd == "INST_SERIALNO":
            return AlarisFrame(cmd, (self.serial_number,))
        if cmd == "COMMS_RESPONSE_MAX":
            return AlarisFrame(cmd, (str(self.response_max_ms), "ms"))
        if cmd == "COMMS_PROTOCOL":
            return AlarisFrame(cmd, (self.protocol_text,))
        if cmd == "SYRINGE_STATUS":
            return AlarisFrame(cmd, ("BD PLASTIPAK", " 50", "CONF"))
        if cmd == "INF_RATE_MAX_SYRINGE":
            return AlarisFrame(cmd, (RATE_FORMAT.format(1200.0), "ml/h"))
        st = self.feed.pump(now_us)
        if cmd == "INF":
            return self._inf(st).to_frame()
        if cmd == "INF_RATE":
            return AlarisFrame(cmd, (RATE_FORMAT.format(st.rate_ml_h or 0.0), "ml/h"))
        if cmd == "INF_VI":
            return AlarisFrame(cmd, (VOLUME_FORMAT.format(st.volume_infused_ml or 0.0), "ml"))
        if cmd == "INF_VTBI":
            if st.vtbi_ml is None:
                return VtbiStatus(VtbiStatus.INACTIVE).to_frame()
            total = st.vtbi_ml + (st.volume_infused_ml or 0.0)  # the feed gives what is left
            return VtbiStatus(
                VtbiStatus.ACTIVE, VOLUME_FORMAT.format(total), "ml", "STOP"
            ).to_frame()
        if cmd == "ALARM":
            code, text = self._alarm_code(st)
            if code is None:
                return AlarmStatus(AlarmStatus.NO_ALARM, " ", " ").to_frame()  # §8 example 3
            return AlarmStatus(code, text, "").to_frame()
        return None

    @staticmethod
    def _alarm_code(st: PumpState) -> tuple[str | None, str]:
        if st.alarms:
            a = st.alarms[0]
            if a.raw.startswith("AL_"):
                return a.raw, a.text.upper() or a.raw
            return SIM_ALARM_CODES.get(a.code, SIM_OTHER_ALARM)
        if st.state is PumpRunState.COMPLETE:
            return VTBI_DONE
        return None, ""

    def _inf(self, st: PumpState) -> InfStatus:
        code, _ = self._alarm_code(st)
        running = st.state in (PumpRunState.RUNNING, PumpRunState.BOLUS)
        key = (st.state, code)
        if key != self._last_key:  # f13: the pump logged an event
            self._last_key = key
            self._event_id += 1
        rate = st.rate_ml_h or 0.0
        left = st.vtbi_ml
        remaining = left / rate * 3600 if left is not None and rate > 0 else 0.0
        occluded = any(a.code == "occlusion" or a.raw == "AL_OCCLU" for a in st.alarms)
        pressure = OCCLUSION_PRESSURE_MMHG if occluded else self.pressure_mmhg
        return InfStatus(
            serial=self.serial_number,
            alarm_flag="A" if code is not None else "-",
            state=RUNNING_TOKEN if running else "HLD",
            rate=RATE_FORMAT.format(rate),
            rate_unit="ml/h",
            drug="",
            volume=VOLUME_FORMAT.format(st.volume_infused_ml or 0.0),
            volume_unit="ml",
            pressure=PRESSURE_FORMAT.format(pressure),
            pressure_unit="mmHg",
            time_remaining=_hms(remaining),
            log_type="EVENT",
            event_id=str(self._event_id),
        )

    def _control(self, cmd: str, p: tuple[str, ...], now_us: int) -> AlarisFrame | None:
        masked = ("****", "PERMIT", "0", "ms")
        if cmd in ("REMOTE_CTRL", "REMOTE_CFG") and p:
            if p[0] == "ENABLED" and len(p) == 2:
                if p[1] != f"{crc16(self.serial_number.encode('ascii')):04X}":
                    return None  # refusal token unknown (§5.3): stay silent
                if cmd == "REMOTE_CTRL":
                    self.remote = True
                return AlarisFrame(cmd, ("ENABLED", *masked))
            if p == ("DISABLED",):
                if cmd == "REMOTE_CTRL":
                    self.remote = False
                return AlarisFrame(cmd, ("DISABLED", *masked))
            return None
        if cmd == "REMQUERY" and p == ("DEACT",):
            return AlarisFrame(cmd, ("DEACT", "", "", "", ""))
        if not self.remote:
            return None
        feed: Any = self.feed
        if cmd == "INF_RATE" and len(p) == 2 and p[1] == "ml/h":
            rate = parse_decimal(p[0])
            if rate is None or rate < 0 or not hasattr(feed, "rate_ml_h"):
                return None
            running = feed.pump(now_us).state is PumpRunState.RUNNING
            if running:
                feed.pause(now_us)
            feed.rate_ml_h = rate
            if running:
                feed.start(now_us)
            return AlarisFrame(cmd, (RATE_FORMAT.format(rate), "ml/h"))
        if cmd == "INF_START" and not p and hasattr(feed, "start"):
            feed.start(now_us)
            self._serial_started = True
            return AlarisFrame(cmd)
        if cmd == "INF_STOP" and not p and hasattr(feed, "pause"):
            feed.pause(now_us)
            self._serial_started = False
            return AlarisFrame(cmd)
        if cmd == "INF_VTBI" and len(p) == 4 and p[0] == "ACTIV" and hasattr(feed, "vtbi_ml"):
            vtbi = parse_decimal(p[1])
            if vtbi is None or vtbi <= 0:
                return None
            feed.vtbi_ml = vtbi
            return AlarisFrame(cmd, p)
        return None
