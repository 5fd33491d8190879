"""BD Alaris GH/CC (Asena) host: identify, poll, read alarms; never take remote control.

Implements the host side of shared/protocols/alaris-asena.md, sans-I/O:

- §4 identification (the read-only part of the OpenICE sequence): ``INST_SERIALNO``
  (required), ``COMMS_RESPONSE_MAX`` (sets the reply timeout) and ``COMMS_PROTOCOL``
  (both optional: a failure does not block telemetry). No connect command exists.
- §4 polling: ``INF`` every ``POLL_INTERVAL_S``; ``INF_VTBI`` and ``ALARM`` every
  ``SLOW_POLL_INTERVAL_S``; ``ALARM`` also at once when the ``INF`` alarm flag changes
  (§7) or its f13 event-log id changes (the pump logged something new), and the
  PumpState waits for that answer so an alarm appears with its code.
- §4/§6 timing: one command at a time; a reply may take ``COMMS_RESPONSE_MAX`` (4 s seen),
  so the timeout is that plus ``REPLY_GRACE_S`` and the command is resent once (§11
  pitfall 7: an eager resend risks two replies). A reply with a bad CRC is dropped by the
  codec and left to the timeout; a reply naming another command is ignored (§6).
  ``REIDENTIFY_AFTER`` failed commands in a row restart the identification (pump
  restarted or swapped).
- The host sends only the bare queries in ``READ_ONLY_QUERIES`` (§5.1). It never sends
  ``REMOTE_CTRL``/``REMOTE_CFG`` or any command with values (§5.3, §11 pitfall 5);
  ``host_may_send`` checks one decoded frame, for tests.

Mapping and the choices where the document is UNCERTAIN (§5.2, §5.4, §7):

- rate = ``INF`` f4 (``ml/h``), volume infused = f7 (``ml``); a different unit text gives
  the reading ``Quality.INVALID`` (never converted by guesswork).
- VTBI = ``INF_VTBI`` field 2 as the pump reports it (the programmed VTBI, §7); the host
  does not subtract the volume infused, because that is right only if the VTBI was set at
  the start of this infusion (§7).
- Alarms: ``ALARM`` codes in ``ALARM_INTERPRETATION`` (§5.4, the document's interpretation)
  become a normalised ``PumpAlarm`` whose text says "(interpreted)" and keeps the raw code;
  any other code, an ``INF`` alarm flag other than ``-``/``A``, or flag ``A`` while
  ``ALARM`` names no alarm become ``PumpAlarm("unclassified", raw)``.
- Run state: COMPLETE when an interpreted end-of-infusion alarm is active; f3 ``HLD``
  (on hold) -> ALARM if an alarm is active else PAUSED; otherwise RUNNING when the rate is
  positive and the volume rose within ``delivery_hold_s`` (the "infusing" token of f3 is
  unknown, §5.2, so it is not trusted); ALARM if an alarm is active; STOPPED at rate 0;
  else UNKNOWN.
- Drug (f6, "empty in all examples") is not used; pressure and time remaining have no
  model channel and are not published.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import serial

from kapmonitor.model import (
    CHANNELS,
    Channel,
    Message,
    PumpAlarm,
    PumpRunState,
    PumpState,
    Quality,
    Reading,
)

from ..codecs.alaris import (
    AlarisCodec,
    AlarisFrame,
    AlarmStatus,
    InfStatus,
    VtbiStatus,
    parse_decimal,
)
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ALARM_INTERPRETATION",
    "READ_ONLY_QUERIES",
    "AlarisHost",
    "host_may_send",
    "interpret_alarm",
]

#: §1: 38400 baud, 8 data bits, no parity, 1 stop bit, no flow control.
SERIAL = SerialSettings(
    baudrate=38400,
    bytesize=serial.EIGHTBITS,
    parity=serial.PARITY_NONE,
    stopbits=serial.STOPBITS_ONE,
)

#: §5.1 read-only queries, sent bare (no parameters). ``INF_RATE`` and ``INF_VTBI`` with
#: values set the pump, so a frame with parameters is never allowed.
READ_ONLY_QUERIES: frozenset[str] = frozenset(
    {
        "INST_SERIALNO",
        "COMMS_RESPONSE_MAX",
        "COMMS_PROTOCOL",
        "SYRINGE_STATUS",
        "INF_RATE_MAX_SYRINGE",
        "INF",
        "INF_RATE",
        "INF_VI",
        "INF_VTBI",
        "ALARM",
    }
)

#: §4: the longest reply time seen (used until the pump tells its own).
DEFAULT_RESPONSE_MAX_S = 4.0
#: §4 timing table: "wait up to the reported maximum (+0.5 s) ... resend once".
REPLY_GRACE_S = 0.5
MAX_RESENDS = 1
#: §4: "KAP default: INF every 1-2 s, ALARM and INF_VTBI every 5 s".
POLL_INTERVAL_S = 1.0
SLOW_POLL_INTERVAL_S = 5.0
#: After INST_SERIALNO failed (twice), ask again this much later.
RETRY_INTERVAL_S = 5.0
REIDENTIFY_AFTER = 3
RATE_UNIT = "ml/h"
VOLUME_UNIT = "ml"
#: Brief/DESIGN: a PumpState at least this often even when nothing changed.
REPUBLISH_S = 60.0
DELIVERY_HOLD_MIN_S = 3.0
VOLUME_RESOLUTION_ML = 0.001

#: §5.4: code -> (normalised alarm, high priority). The meanings are the document's
#: interpretation (UNCERTAIN); AL_LDSCN, AL_TCITG, AL_TITCA, AL_TITNC and unknown codes
#: are unclassified.
ALARM_INTERPRETATION: Mapping[str, tuple[str, bool]] = MappingProxyType(
    {
        "AL_OCCLU": ("occlusion", True),
        "AL_NEOIN": ("near_end", False),
        "AL_EOIST": ("end", True),
        "AL_EOIKV": ("end", True),
        "AL_VTBIS": ("end", True),
        "AL_VTBIK": ("end", True),
        "AL_VTBIC": ("end", True),
        "AL_SYRCO": ("syringe", True),
        "AL_DRDIS": ("syringe", True),
        "AL_LWBAT": ("battery", False),
        "AL_EMBAT": ("battery", True),
        "AL_LBTAC": ("battery", False),
        "AL_ACDIS": ("power", False),
        "AL_COMTO": ("comms", True),
        "AL_CALLB": ("attention", True),
        "AL_FAULT": ("technical", True),
        "AL_PRDSC": ("technical", True),
        "AL_RHIGH": ("programming", True),
    }
)
NO_ALARM_FLAG, ALARM_FLAG, HOLD_TOKEN = "-", "A", "HLD"


def host_may_send(frame: AlarisFrame) -> bool:
    """True if the host may send ``frame``: a bare read-only query (§5.1)."""
    return frame.command in READ_ONLY_QUERIES and frame.params == ()


def interpret_alarm(status: AlarmStatus) -> PumpAlarm | None:
    """The PumpAlarm for an ``ALARM`` reply; None for ``AL_NOALM``."""
    code = status.code.strip()
    if code == AlarmStatus.NO_ALARM:
        return None
    shown = status.text.strip()
    known = ALARM_INTERPRETATION.get(code)
    if known is None:
        text = f"Alaris {code}" + (f" {shown}" if shown else "") + " (meaning undocumented)"
        return PumpAlarm("unclassified", raw=code, text=text)
    name, high = known
    text = f"Alaris {code}" + (f" {shown}" if shown else "") + f": {name} (interpreted)"
    return PumpAlarm(name, raw=code, text=text, high_priority=high)


def delivery_hold_s(rate_ml_h: float | None) -> float:
    """How long after the last rise of the volume a pump still counts as delivering:
    long enough for two volume steps at the reported rate (slow infusions)."""
    if not rate_ml_h or rate_ml_h <= 0:
        return DELIVERY_HOLD_MIN_S
    return max(DELIVERY_HOLD_MIN_S, 2 * VOLUME_RESOLUTION_ML / rate_ml_h * 3600.0)


def _quality(channel: Channel, value: float) -> Quality:
    lo, hi = CHANNELS[channel].plausible
    return Quality.OK if lo <= value <= hi else Quality.OUT_OF_RANGE


@dataclass
class _Request:
    command: str
    sent_us: int = 0
    sends: int = 0


class AlarisHost(HostProtocol):
    """KAP's end of an Alaris GH/CC serial link (see the module docstring)."""

    protocol: ClassVar[str] = "alaris"
    serial_settings: ClassVar[SerialSettings] = SERIAL
    tick_interval_s: ClassVar[float] = 0.1
    #: Longer than one slow reply (4 s + grace), so a slow pump is not flagged stale.
    stale_after_s: ClassVar[float] = 6.0

    def __init__(self, source: str = "pump") -> None:
        super().__init__(source)
        self.codec = AlarisCodec()
        self.serial_number: str | None = None
        self.protocol_version: str | None = None
        self.response_max_s = DEFAULT_RESPONSE_MAX_S
        #: Oddities seen on the link: timeouts, mismatched replies, bad fields.
        self.link_events: Counter[str] = Counter()
        # telemetry state, kept across reconnects (volume continuity, infusion_id)
        self.infusion_id = 1
        self._rate: float | None = None
        self._volume: float | None = None
        self._last_rise_us: int | None = None
        self._flag: str | None = None
        self._event_id: str | None = None
        self._hold = False
        self._alarm: AlarmStatus | None = None
        self._vtbi: float | None = None
        self._quality = Quality.OK
        self._published: tuple[object, ...] | None = None
        self._published_us: int | None = None
        # link state
        self._phase = "closed"  # closed, identifying, ready, backoff
        self._queue: deque[_Request] = deque()
        self._outstanding: _Request | None = None
        self._failures = 0
        self._wake_us = 0
        self._next_poll_us = 0
        self._next_slow_us = 0
        self._alarm_pending = False

    # -- lifecycle --------------------------------------------------------------------

    @property
    def associated(self) -> bool:
        return self._phase == "ready"

    def connection_made(self, now_us: int) -> None:
        self._reset_link()
        self._identify(now_us)

    def connection_lost(self) -> None:
        self._reset_link()
        self._phase = "closed"

    def _reset_link(self) -> None:
        self.codec.reset()
        self.take_outgoing()
        self._queue.clear()
        self._outstanding = None
        self._failures = 0
        self._alarm_pending = False

    def _identify(self, now_us: int) -> None:
        self._queue.clear()
        self._outstanding = None
        self._phase = "identifying"
        for cmd in ("INST_SERIALNO", "COMMS_RESPONSE_MAX", "COMMS_PROTOCOL"):
            self._queue.append(_Request(cmd))
        self._send_next(now_us)

    def _start_polling(self, now_us: int) -> None:
        self._phase = "ready"
        self._next_poll_us = now_us + round(POLL_INTERVAL_S * 1e6)
        self._next_slow_us = now_us + round(SLOW_POLL_INTERVAL_S * 1e6)
        for cmd in ("INF", "ALARM", "INF_VTBI"):  # ALARM first: the state waits for it
            self._enqueue(cmd, now_us)

    # -- requests ---------------------------------------------------------------------

    @property
    def _timeout_us(self) -> int:
        return round((self.response_max_s + REPLY_GRACE_S) * 1e6)

    def _enqueue(self, command: str, now_us: int, *, first: bool = False) -> None:
        """Queue a query unless it is already in flight; ``first`` puts it (or the copy
        already waiting) at the head of the queue."""
        if self._outstanding is not None and self._outstanding.command == command:
            return
        waiting = [r for r in self._queue if r.command == command]
        if waiting and not first:
            return
        for r in waiting:
            self._queue.remove(r)
        req = _Request(command)
        if first:
            self._queue.appendleft(req)
        else:
            self._queue.append(req)
        self._send_next(now_us)

    def _send_next(self, now_us: int) -> None:
        if self._outstanding is None and self._queue:
            self._transmit(self._queue.popleft(), now_us)

    def _transmit(self, req: _Request, now_us: int) -> None:
        frame = AlarisFrame(req.command)
        if not host_may_send(frame):  # never a control command (§5.3)
            raise RuntimeError(f"refusing to send {frame!r} to a clinical pump")
        req.sent_us = now_us
        req.sends += 1
        self._outstanding = req
        self.send(self.codec.encode(frame))

    def _timed_out(self, now_us: int) -> list[Message]:
        req = self._outstanding
        assert req is not None
        self.link_events[f"timeout_{req.command}"] += 1
        if req.sends <= MAX_RESENDS:
            self._transmit(req, now_us)
            return []
        self._outstanding = None
        self._failures += 1
        out: list[Message] = []
        if req.command == "INST_SERIALNO":
            self._phase = "backoff"
            self._queue.clear()
            self._wake_us = now_us + round(RETRY_INTERVAL_S * 1e6)
            return out
        if req.command == "COMMS_PROTOCOL":
            self._start_polling(now_us)
        elif req.command == "ALARM" and self._alarm_pending:
            self._alarm_pending = False  # publish what is known rather than nothing
            out += self._publish(now_us)
        if self._phase == "ready" and self._failures >= REIDENTIFY_AFTER:
            self._identify(now_us)
            return out
        self._send_next(now_us)
        return out

    # -- time -------------------------------------------------------------------------

    def tick(self, now_us: int) -> list[Message]:
        out: list[Message] = []
        if self._phase == "closed":
            return out
        if self._phase == "backoff" and now_us >= self._wake_us:
            self._identify(now_us)
        req = self._outstanding
        if req is not None and now_us - req.sent_us >= self._timeout_us:
            out += self._timed_out(now_us)
        if self._phase == "ready":
            if now_us >= self._next_poll_us:
                self._next_poll_us = max(
                    self._next_poll_us + round(POLL_INTERVAL_S * 1e6), now_us + 1
                )
                self._enqueue("INF", now_us)
            if now_us >= self._next_slow_us:
                self._next_slow_us = now_us + round(SLOW_POLL_INTERVAL_S * 1e6)
                self._enqueue("INF_VTBI", now_us)
                self._enqueue("ALARM", now_us)
        return out

    # -- bytes in ---------------------------------------------------------------------

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        out: list[Message] = []
        for frame in self.codec.feed(data):
            self.last_frame_us = now_us
            req = self._outstanding
            if req is None or frame.command != req.command:
                self.link_events["unexpected_reply"] += 1
                continue
            self._outstanding = None
            self._failures = 0
            out += self._on_reply(frame, now_us)
            self._send_next(now_us)
        return out

    def _on_reply(self, frame: AlarisFrame, now_us: int) -> list[Message]:
        cmd, p = frame.command, frame.params
        if cmd == "INST_SERIALNO":
            self.serial_number = " ".join(p)
        elif cmd == "COMMS_RESPONSE_MAX":
            value = parse_decimal(p[0]) if len(p) == 2 and p[1].strip() == "ms" else None
            if value is not None and 0 < value <= 60_000:
                self.response_max_s = value / 1000.0
            else:
                self.link_events["bad_response_max"] += 1
        elif cmd == "COMMS_PROTOCOL":
            self.protocol_version = " ".join(p)
            self._start_polling(now_us)
        elif cmd == "INF":
            return self._on_inf(frame, now_us)
        elif cmd == "INF_VTBI":
            return self._on_vtbi(frame, now_us)
        elif cmd == "ALARM":
            status = AlarmStatus.from_frame(frame)
            if status is None:
                self.link_events["bad_ALARM"] += 1
            self._alarm = status
            self._alarm_pending = False
            return self._publish(now_us)
        return []

    # -- telemetry --------------------------------------------------------------------

    def _reading(self, channel: Channel, value: float, now_us: int, quality: Quality) -> Reading:
        return Reading(
            channel, value, now_us, self.source, quality=quality | _quality(channel, value)
        )

    def _on_inf(self, frame: AlarisFrame, now_us: int) -> list[Message]:
        inf = InfStatus.from_frame(frame)
        if inf is None:
            self.link_events["bad_INF"] += 1
            return []
        out: list[Message] = []
        quality = Quality.OK
        rate = parse_decimal(inf.rate)
        if rate is None:
            self.link_events["bad_rate"] += 1
        else:
            q = Quality.OK if inf.rate_unit.strip().lower() == RATE_UNIT else Quality.INVALID
            reading = self._reading(Channel.PUMP_RATE, rate, now_us, q)
            quality |= reading.quality
            out.append(reading)
        self._rate = rate
        volume = parse_decimal(inf.volume)
        if volume is None:
            self.link_events["bad_volume"] += 1
        else:
            q = Quality.OK if inf.volume_unit.strip().lower() == VOLUME_UNIT else Quality.INVALID
            reading = self._reading(Channel.VOLUME_INFUSED, volume, now_us, q)
            quality |= reading.quality
            out.append(reading)
            if self._volume is not None and volume < self._volume - VOLUME_RESOLUTION_ML / 2:
                self.infusion_id += 1  # volume reset: a new infusion
                self._last_rise_us = None
            elif self._volume is not None and volume > self._volume + VOLUME_RESOLUTION_ML / 2:
                self._last_rise_us = now_us
        self._volume = volume
        self._quality = quality
        self._hold = inf.state.strip() == HOLD_TOKEN
        flag, event = inf.alarm_flag.strip(), inf.event_id.strip()
        if flag != self._flag or event != self._event_id:
            # §7: the flag changed or the pump logged a new event: ask ALARM at once and
            # publish once it has told the code, so an alarm never appears without it.
            self._flag, self._event_id = flag, event
            self._alarm_pending = True
            self._enqueue("ALARM", now_us, first=True)
        if not self._alarm_pending:
            out += self._publish(now_us)
        return out

    def _on_vtbi(self, frame: AlarisFrame, now_us: int) -> list[Message]:
        status = VtbiStatus.from_frame(frame)
        if status is None:
            self.link_events["bad_INF_VTBI"] += 1
            return []
        self._vtbi = status.vtbi_ml
        out: list[Message] = []
        remaining = self._vtbi_remaining()
        if remaining is not None:
            out.append(self._reading(Channel.VTBI, remaining, now_us, Quality.OK))
        if not self._alarm_pending:
            out += self._publish(now_us)  # only if the VTBI changed what the state says
        return out

    def alarms(self) -> tuple[PumpAlarm, ...]:
        """The pump's alarms as last reported (see the module docstring)."""
        out: list[PumpAlarm] = []
        coded = interpret_alarm(self._alarm) if self._alarm is not None else None
        if coded is not None:
            out.append(coded)
        flag = self._flag
        if flag not in (None, NO_ALARM_FLAG, ALARM_FLAG):
            out.append(PumpAlarm("unclassified", raw=flag, text=f"Alaris INF alarm flag {flag!r}"))
        elif flag == ALARM_FLAG and coded is None:
            out.append(
                PumpAlarm(
                    "unclassified",
                    raw=flag,
                    text="Alaris INF alarm flag set; ALARM names no alarm code",
                )
            )
        return tuple(out)

    def run_state(self, now_us: int) -> PumpRunState:
        alarms = self.alarms()
        if any(a.code == "end" for a in alarms):
            return PumpRunState.COMPLETE
        if self._hold:
            return PumpRunState.ALARM if alarms else PumpRunState.PAUSED
        rate = self._rate
        if (
            rate is not None
            and rate > 0
            and self._last_rise_us is not None
            and now_us - self._last_rise_us <= delivery_hold_s(rate) * 1e6
        ):
            return PumpRunState.RUNNING
        if alarms:
            return PumpRunState.ALARM
        if rate == 0:
            return PumpRunState.STOPPED
        return PumpRunState.UNKNOWN

    def _vtbi_remaining(self) -> float | None:
        """The model's VTBI is what is still to be infused; INF_VTBI carries the programmed
        total (the chosen layout, codecs/alaris.py), so subtract what has gone in."""
        if self._vtbi is None:
            return None
        return max(0.0, round(self._vtbi - (self._volume or 0.0), 6))

    def _publish(self, now_us: int) -> list[Message]:
        if self._rate is None and self._volume is None:
            return []  # no INF yet: nothing to say about the pump
        state = PumpState(
            t_us=now_us,
            state=self.run_state(now_us),
            rate_ml_h=self._rate,
            volume_infused_ml=self._volume,
            vtbi_ml=self._vtbi_remaining(),
            alarms=self.alarms(),
            infusion_id=self.infusion_id,
            source=self.source,
            quality=self._quality,
        )
        key = (state.state, state.rate_ml_h, state.alarms, state.infusion_id, state.vtbi_ml)
        if (
            key == self._published
            and self._published_us is not None
            and now_us - self._published_us < REPUBLISH_S * 1e6
        ):
            return []
        self._published, self._published_us = key, now_us
        return [state]
