"""New Era NE-1000 family host: read-only telemetry polling of a research syringe pump.

Implements shared/protocols/newera-ne1000.md. KAP Monitor never commands a pump (the
document's policy, before §1): this host sends only the queries in ``HOST_QUERIES``,
always without parameters (a command without parameters is a query, §5).
``is_allowed_host_command`` is the check a test applies to every byte the host sends, and
the host applies before it sends anything. Notably it never sends ``SAF0`` to rescue a
pump left in Safe mode (§8.6): the mode is a constructor option instead, and the codec
decodes only that mode's framing.

Sequence: on connection ``VER`` identifies the pump (§5), and in Safe mode ``SAF`` reads
the watchdog so polls come at least every SAF/2 s (§6). Then every ``poll_period_s``
(default ``POLL_PERIOD_S`` = 1 s, §6) a cycle of status-only, ``RAT`` and ``DIS`` queries,
plus ``VOL`` every ``VOL_EVERY`` cycles, in the order of the §7.1 example. One command at a
time; a reply timeout of ``REPLY_TIMEOUT_S`` with one retry (§6), and a Safe ``?COM`` reply
(§5.3) also earns one retry. After ``MAX_MISSED`` unanswered commands in a row the host
re-associates (``VER`` again).

Mapping (§5.1, §5.4):

* Run state from the status character: I -> RUNNING, W -> RUNNING with QUESTIONABLE
  quality (withdrawing is abnormal for KAP), X (purge) -> BOLUS, P/T/U -> PAUSED, S ->
  STOPPED, or COMPLETE when a volume target is set and reached (§5.4 "end"), A -> ALARM.
* Alarms (§5.2) are latched (§8.1: reporting an alarm clears it on the pump) until the
  pump runs again; letters map through ``ALARMS`` and unknown ones become "unclassified"
  with the raw text kept. A stall (S) is the nearest thing to an occlusion (§5.4).
* Rate: ``RAT`` is the programmed rate (§8.2); the delivered rate published is RAT while
  I/W and 0 otherwise. During a purge (X) the rate is unknown (the maximum rate depends on
  the syringe) and none is published.
* Volume: ``DIS`` infused volume, converted from its unit (UL/ML, §8.4). DIS accumulates
  until cleared and KAP cannot clear it (§8.3), so the host subtracts the value seen when
  a new infusion starts: a start from stopped (S, or stopped by an alarm) into running,
  when the current infusion already has volume, or a drop of DIS (someone cleared it).
  Each new infusion increments ``infusion_id``. A pump found running at connection is
  taken to have been cleared at its start (``BASELINE_AT_CONNECT_ML`` = 0: the document's
  §5.4 assumption; the true start is unknowable).
* VTBI = VOL - infused when VOL > 0 (§5.4); VOL 0 (continuous) publishes no VTBI.
* Readings of a cycle are published when the cycle ends, each only if its reply came in
  this cycle; a PumpState is published at the end of every cycle and at once whenever a
  reply changes the run state or the alarms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

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

from ..codecs.base import Role
from ..codecs.newera import NewEraCodec, NewEraCommand, NewEraReply
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ALARMS",
    "BASELINE_AT_CONNECT_ML",
    "HOST_QUERIES",
    "POLL_PERIOD_S",
    "NewEraHost",
    "is_allowed_host_command",
    "parse_number",
    "pump_alarm",
]

#: The only commands the host ever sends, each without parameters (queries, §5).
HOST_QUERIES: Final = frozenset({"", "VER", "SAF", "RAT", "DIS", "VOL"})

POLL_PERIOD_S: Final = 1.0  # §6: 1 Hz telemetry polling
MIN_POLL_PERIOD_S: Final = 0.25  # no limit is published (§6); stay well above 50 ms
REPLY_TIMEOUT_S: Final = 1.0  # §6
VOL_EVERY: Final = 5  # §6: "every few seconds VOL"
MAX_MISSED: Final = 3
BASELINE_AT_CONNECT_ML: Final = 0.0
#: A stopped pump whose infused volume is within this fraction of a resolution step of
#: the target has completed (the pump stops exactly at VOL; both print 4 digits).
_COMPLETE_SLACK: Final = 0.5

#: Alarm letters of §5.2 -> (PumpAlarm code, text). Anything else is "unclassified".
ALARMS: Final = {
    "S": ("occlusion", "motor stalled (obstruction, or pusher at the end of its travel)"),
    "R": ("power_interrupted", "pump was reset: power was interrupted"),
    "T": ("comms_watchdog", "Safe-mode communications watchdog expired"),
    "E": ("program_error", "pumping program error"),
    "O": ("program_range", "program phase out of range"),
}

_RATE_TO_ML_H: Final = {"UM": 60e-3, "MM": 60.0, "UH": 1e-3, "MH": 1.0}  # §5 RAT units
_VOL_TO_ML: Final = {"UL": 1e-3, "ML": 1.0}  # §5 VOL/DIS units
_NUM: Final = r"(\d+\.?\d*|\.\d+)"
_RAT_RE: Final = re.compile(_NUM + r"(UM|MM|UH|MH)")
_VOL_RE: Final = re.compile(_NUM + r"(UL|ML)?")
_DIS_RE: Final = re.compile("I" + _NUM + "W" + _NUM + r"(UL|ML)")

_RUNNING: Final = frozenset("IWX")
_STOPPED: Final = frozenset("SA")
_STATES: Final = {
    "I": PumpRunState.RUNNING,
    "W": PumpRunState.RUNNING,
    "X": PumpRunState.BOLUS,
    "P": PumpRunState.PAUSED,
    "T": PumpRunState.PAUSED,
    "U": PumpRunState.PAUSED,
    "S": PumpRunState.STOPPED,
    "A": PumpRunState.ALARM,
}


def is_allowed_host_command(cmd: object) -> bool:
    """True for the queries KAP may send: a known query mnemonic, no parameters, not a
    system command (a system command reaches every pump on the line)."""
    return (
        isinstance(cmd, NewEraCommand)
        and cmd.command in HOST_QUERIES
        and cmd.params == ""
        and not cmd.system
    )


def parse_number(text: str) -> tuple[float, float]:
    """A §5 number and its resolution (one unit of its last digit): "17.50" -> (17.5, 0.01)."""
    _, _, frac = text.partition(".")
    return float(text), 10.0 ** -len(frac)


def pump_alarm(letter: str) -> PumpAlarm:
    """The PumpAlarm of an ``A?x`` status (§5.2); unknown letters stay unclassified."""
    raw = f"A?{letter}" if letter else "A"
    if letter in ALARMS:
        code, text = ALARMS[letter]
        return PumpAlarm(code, raw, text)
    return PumpAlarm("unclassified", raw, "alarm letter not in the protocol document")


@dataclass
class _Outstanding:
    command: str
    sent_us: int
    retried: bool = False


class NewEraHost(HostProtocol):
    """The app's side of an NE-1000 link (sans-I/O, see drivers/protocol.py)."""

    protocol: ClassVar[str] = "ne1000"
    #: §1: selectable on the pump; 19200 is the documented factory default choice.
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=19200)
    tick_interval_s: ClassVar[float] = 0.05
    stale_after_s: ClassVar[float] = 5.0

    def __init__(
        self,
        source: str = "pump",
        *,
        address: int | None = 0,
        safe_mode: bool = False,
        poll_period_s: float = POLL_PERIOD_S,
    ) -> None:
        super().__init__(source)
        if address is not None and not 0 <= address <= 99:
            raise ValueError(f"pump address must be 0..99 (§1), got {address}")
        if safe_mode and address is None:
            raise ValueError("Safe mode needs the pump address: an empty packet is not valid")
        if poll_period_s < MIN_POLL_PERIOD_S:
            raise ValueError(f"poll period {poll_period_s} s below {MIN_POLL_PERIOD_S} s")
        self.address = address
        self.safe_mode = safe_mode
        self.poll_period_s = poll_period_s
        self.codec = NewEraCodec(Role.HOST, mode="safe" if safe_mode else "basic")
        self.version: str | None = None
        self.watchdog_s: int | None = None
        self.error_replies: dict[str, int] = {}
        self.unsolicited = 0
        self._associated = False
        self._identified = False
        self._queue: list[str] = []
        self._req: _Outstanding | None = None
        self._next_cycle_us: int | None = None
        self._cycle = 0
        self._in_cycle = False
        self._missed = 0
        # pump picture
        self._status: str | None = None
        self._rate_prog: float | None = None
        self._dis_ml: float | None = None
        self._dis_res = 0.001
        self._vol_ml: float | None = None
        self._vol_res = 0.001
        self._baseline = BASELINE_AT_CONNECT_ML
        self._infusion_id = 1
        self._latched: tuple[PumpAlarm, ...] = ()
        self._last_key: tuple[object, ...] | None = None
        # this cycle's fresh values: channel -> (value, t_us, quality)
        self._fresh: dict[Channel, tuple[float, int, Quality]] = {}
        self._got_reply = False

    @property
    def associated(self) -> bool:
        return self._associated

    # -- lifecycle --

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self._associated = False
        self._req = None
        self._missed = 0
        self._start_connect(now_us)

    def connection_lost(self) -> None:
        self.codec.reset()
        self._associated = False
        self._req = None
        self._queue = []
        self._in_cycle = False
        self._next_cycle_us = None

    def _start_connect(self, now_us: int) -> None:
        self._queue = ["VER"] + (["SAF"] if self.safe_mode else [])
        self._identified = False
        self._in_cycle = False
        self._next_cycle_us = None
        self._send_next(now_us)

    def _period_us(self) -> int:
        period = self.poll_period_s
        if self.safe_mode and self.watchdog_s:
            period = min(period, self.watchdog_s / 2)  # §6: heartbeat at half the watchdog
        return round(period * 1e6)

    # -- sending --

    def _send_next(self, now_us: int) -> None:
        if self._req is not None or not self._queue:
            return
        self._transmit(self._queue.pop(0), now_us, retried=False)

    def _transmit(self, command: str, now_us: int, *, retried: bool) -> None:
        cmd = NewEraCommand(command, "", self.address, False, self.safe_mode)
        if not is_allowed_host_command(cmd):  # the policy, enforced where bytes are made
            raise AssertionError(f"refusing to send a non-query {cmd!r}")
        self.send(self.codec.encode(cmd))
        self._req = _Outstanding(command, now_us, retried)

    def tick(self, now_us: int) -> list[Message]:
        out: list[Message] = []
        o = self._req
        if o is not None and now_us - o.sent_us >= REPLY_TIMEOUT_S * 1e6:
            if not o.retried:
                self._transmit(o.command, now_us, retried=True)
            else:
                self._req = None
                self._missed += 1
                if self._missed >= MAX_MISSED and self._associated:
                    self._associated = self._identified = False
                    self._queue = []
                    self._in_cycle = False
                    self._next_cycle_us = now_us + self._period_us()
                self._after_reply(now_us, out)
        due = self._next_cycle_us is not None and now_us >= self._next_cycle_us
        if self._req is None and not self._queue and due:
            self._start_cycle(now_us)
        return out

    def _start_cycle(self, now_us: int) -> None:
        if not self._associated:
            self._start_connect(now_us)
            return
        period = self._period_us()
        nxt = (self._next_cycle_us or now_us) + period
        self._next_cycle_us = nxt if nxt > now_us else now_us + period
        self._queue = ["", "RAT", "DIS"] + (["VOL"] if self._cycle % VOL_EVERY == 0 else [])
        self._cycle += 1
        self._in_cycle = True
        self._fresh = {}
        self._got_reply = False
        self._send_next(now_us)

    # -- receiving --

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        out: list[Message] = []
        for msg in self.codec.feed(data):
            if isinstance(msg, NewEraReply):
                self._on_reply(msg, now_us, out)
        return out

    def _on_reply(self, r: NewEraReply, now_us: int, out: list[Message]) -> None:
        if self.address is not None and r.address != self.address:
            return  # another pump on a daisy chain (§1)
        self.last_frame_us = now_us
        self._got_reply = True
        self._missed = 0
        o = self._req
        if r.error is not None:
            self.error_replies[r.error] = self.error_replies.get(r.error, 0) + 1
        self._on_status(r, now_us, out)
        if o is None:
            self.unsolicited += 1  # Safe-mode auto-alarm (§3.2) or a late reply
            return
        if r.error == "?COM" and not o.retried:
            self._transmit(o.command, now_us, retried=True)  # our packet was garbled
            return
        if self.safe_mode and r.status == "A" and not r.data and o.command != "":
            return  # maybe an auto-alarm packet; the real reply (or the timeout) follows
        self._req = None
        if o.command == "VER":
            self._identified = True  # any answer proves a pump; "?" = an older firmware
        if r.error is None:
            self._on_data(o.command, r, now_us)
        self._after_reply(now_us, out)

    def _after_reply(self, now_us: int, out: list[Message]) -> None:
        if self._queue:
            self._send_next(now_us)
            return
        if not self._associated:
            if self._identified:
                self._associated = True
                self._next_cycle_us = now_us
                self._start_cycle(now_us)
            elif self._next_cycle_us is None:
                self._next_cycle_us = now_us + self._period_us()  # retry VER later
            return
        if self._in_cycle:
            self._in_cycle = False
            self._end_cycle(now_us, out)

    def _on_data(self, command: str, r: NewEraReply, now_us: int) -> None:
        d = r.data
        if command == "VER":
            self.version = d
        elif command == "SAF":
            if d.isdigit():
                self.watchdog_s = int(d)
        elif command == "RAT":
            m = _RAT_RE.fullmatch(d)
            if m:
                self._rate_prog = round(float(m[1]) * _RATE_TO_ML_H[m[2]], 9)
                self._fresh_rate(r.status, now_us)
        elif command == "VOL":
            m = _VOL_RE.fullmatch(d)
            if m and (m[2] or float(m[1]) == 0):
                value, res = parse_number(m[1])
                factor = _VOL_TO_ML[m[2] or "ML"]
                self._vol_ml, self._vol_res = round(value * factor, 9), res * factor
        elif command == "DIS":
            m = _DIS_RE.fullmatch(d)
            if m:
                value, res = parse_number(m[1])
                factor = _VOL_TO_ML[m[3]]
                self._on_dis(round(value * factor, 9), res * factor, now_us)

    def _fresh_rate(self, status: str, now_us: int) -> None:
        assert self._rate_prog is not None
        q = Quality.OK
        if status in ("I", "W"):
            rate = self._rate_prog
            if status == "W":
                q |= Quality.QUESTIONABLE
        elif status == "X":
            return  # purge at the syringe's maximum rate: unknown, not published
        else:
            rate = 0.0
        self._fresh[Channel.PUMP_RATE] = (rate, now_us, q)

    def _on_dis(self, dis: float, res: float, now_us: int) -> None:
        if self._dis_ml is not None and dis < self._dis_ml - res / 2:
            self._new_infusion(baseline=0.0)  # DIS was cleared (CLD)
        self._dis_ml, self._dis_res = dis, res
        self._fresh[Channel.VOLUME_INFUSED] = (self._infused(), now_us, Quality.OK)

    def _infused(self) -> float:
        if self._dis_ml is None:
            return 0.0
        return round(self._dis_ml - self._baseline, 9)

    def _new_infusion(self, baseline: float) -> None:
        if self._infused() > 0:
            self._infusion_id += 1
        self._baseline = baseline

    def _on_status(self, r: NewEraReply, now_us: int, out: list[Message]) -> None:
        prev = self._status
        s = r.status
        if s in _RUNNING and prev in _STOPPED:
            self._new_infusion(baseline=self._dis_ml or 0.0)  # §8.3: subtract DIS at start
        if s in _RUNNING:
            self._latched = ()
        if s == "A":
            alarm = pump_alarm(r.alarm or "")
            if all(a.raw != alarm.raw for a in self._latched):
                self._latched = (*self._latched, alarm)
        self._status = s
        key = self._state_key()
        if key != self._last_key and prev is not None:
            out.append(self._pump_state(now_us))
        elif prev is None:
            self._last_key = key

    def _run_state(self) -> PumpRunState:
        s = self._status
        if s is None:
            return PumpRunState.UNKNOWN
        if self._latched and s not in _RUNNING:
            return PumpRunState.ALARM
        state = _STATES.get(s, PumpRunState.UNKNOWN)
        if state is PumpRunState.STOPPED and self._vol_ml:
            slack = _COMPLETE_SLACK * max(self._vol_res, self._dis_res)
            if self._infused() >= self._vol_ml - slack:
                return PumpRunState.COMPLETE
        return state

    def _delivered_rate(self) -> float | None:
        s = self._status
        if self._rate_prog is None or s == "X" or s is None:
            return None
        return self._rate_prog if s in ("I", "W") else 0.0

    def _vtbi(self) -> float | None:
        if not self._vol_ml or self._dis_ml is None:
            return None
        return round(self._vol_ml - self._infused(), 9)

    def _state_key(self) -> tuple[object, ...]:
        return (self._run_state(), self._delivered_rate(), self._latched, self._infusion_id)

    def _pump_state(self, now_us: int) -> PumpState:
        self._last_key = self._state_key()
        return PumpState(
            t_us=now_us,
            state=self._run_state(),
            rate_ml_h=self._delivered_rate(),
            volume_infused_ml=None if self._dis_ml is None else self._infused(),
            vtbi_ml=self._vtbi(),
            alarms=self._latched,
            infusion_id=self._infusion_id,
            source=self.source,
            quality=Quality.QUESTIONABLE if self._status == "W" else Quality.OK,
        )

    def _end_cycle(self, now_us: int, out: list[Message]) -> None:
        if not self._got_reply:
            return
        fresh = self._fresh
        if Channel.VOLUME_INFUSED in fresh and (vtbi := self._vtbi()) is not None:
            fresh[Channel.VTBI] = (vtbi, fresh[Channel.VOLUME_INFUSED][1], Quality.OK)
        for ch in (Channel.PUMP_RATE, Channel.VOLUME_INFUSED, Channel.VTBI):
            if ch in fresh:
                value, t, q = fresh[ch]
                lo, hi = CHANNELS[ch].plausible
                if not lo <= value <= hi:
                    q |= Quality.OUT_OF_RANGE
                out.append(Reading(ch, value, t, source=self.source, quality=q))
        self._fresh = {}
        out.append(self._pump_state(now_us))
