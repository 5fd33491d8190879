"""A simulated New Era NE-1000 bench pump, driven by a pump feed and by commands.

Implements the pump side of shared/protocols/newera-ne1000.md. It answers every command
addressed to it with exactly one reply (§6), reports its status character (§5.1) or a
pending alarm as ``A?x`` (§5.2), and acknowledges an alarm by reporting it (§5.2, §8.1).
Unlike the KAP host it accepts the control commands a bench pump accepts (§5: RAT, VOL,
DIR, RUN, STP, PUR, CLD, DIA, SAF) so test scripts can drive scenarios, and applies them
to the feed when the feed has ProgrammedPump's ``start``/``pause``/``rate_ml_h``/
``vtbi_ml``; a feed without them answers control commands with ``?NA``.

Behaviour the document leaves open, as chosen here:

* A command in Safe framing is answered in Safe framing even in Basic mode (§7.4 sends
  ``SAF10`` as a Safe packet to enable Safe mode); in Safe mode Basic commands are
  ignored (§2, §8.6). A Safe packet with a bad CRC gets ``?COM`` (§5.3).
* While an alarm is pending, a query is answered with the alarm status and its data, a
  control command with the alarm status alone and is not applied (§5.2: an alarm must be
  acknowledged first). After a reported alarm the program is stopped (``S``, §7.2).
* ``STP`` pauses a running program and stops a paused one (§8.9); ``RUN`` resumes a paused
  program and restarts a stopped one, whose ``VOL`` target then counts from the volume
  dispensed so far. ``DIR WDR``/``REV`` answer ``?NA``: the simulated syringe only
  infuses. ``PUR`` runs at ``max_rate_ml_h`` with status ``X`` until ``STP``.
* Numbers are printed with at most 4 digits and 3 decimals (§5), rounded to nearest.
* A system command (``*``) is executed without a reply, so pumps on a chain don't collide.
* Safe watchdog (§3.2): no valid packet for ``SAF`` seconds after the first one stops the
  pump with alarm ``T``. Alarms are announced unasked in Safe mode (§3.2 auto-alarm),
  without acknowledging them. ``power_up_alarm`` makes the first reply ``A?R`` (§7.2).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Final

from kapmonitor.model import PumpAlarm, PumpRunState

from ...codecs.base import Role
from ...codecs.newera import NewEraCodec, NewEraCommand, NewEraReply
from ...protocol import PeerProtocol, SerialSettings
from ..feed import PumpFeed, stopping_alarms

__all__ = ["NewEraPeer", "format_number"]

#: PumpAlarm code -> the alarm letter the pump reports (inverse of the host's table).
_LETTERS: Final = {
    "occlusion": "S",
    "power_interrupted": "R",
    "comms_watchdog": "T",
    "program_error": "E",
    "program_range": "O",
}
_RATE_FROM_ML_H: Final = {"UM": 1000 / 60, "MM": 1 / 60, "UH": 1000.0, "MH": 1.0}
_VOL_FROM_ML: Final = {"UL": 1000.0, "ML": 1.0}
_NUM: Final = r"(\d+\.?\d*|\.\d+)"
_RAT_SET: Final = re.compile(_NUM + r"(UM|MM|UH|MH)?")
_VOL_SET: Final = re.compile(_NUM)
_ACTIONS: Final = frozenset({"RUN", "STP", "PUR"})  # controls even without parameters
INTER_BYTE_TIMEOUT_US: Final = 500_000  # §3.2


def format_number(x: float) -> str:
    """A §5 number: at most 4 digits and one point, at most 3 decimals."""
    for decimals in (3, 2, 1):
        s = f"{x:.{decimals}f}"
        if len(s) - 1 <= 4:
            return s
    return f"{x:.0f}"


class NewEraPeer(PeerProtocol):
    """The pump's side of an NE-1000 link (sans-I/O, see drivers/protocol.py)."""

    protocol: ClassVar[str] = "ne1000"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=19200)
    tick_interval_s: ClassVar[float] = 0.05

    def __init__(
        self,
        feed: PumpFeed,
        *,
        seed: int = 0,
        address: int = 0,
        safe_mode: bool = False,
        watchdog_s: int = 0,
        power_up_alarm: bool = False,
        model: str = "NE1000",
        firmware: str = "3.928",
        diameter_mm: float = 26.59,
        max_rate_ml_h: float = 1500.0,
        rate_units: str = "MH",
        volume_units: str = "ML",
    ) -> None:
        super().__init__()
        self.feed = feed
        self.seed = seed  # deterministic; kept for the common signature
        self.address = address
        self.safe_mode = safe_mode
        self.watchdog_s = watchdog_s
        self.version = f"{model}V{firmware}"
        self.diameter_mm = diameter_mm
        self.max_rate_ml_h = max_rate_ml_h
        self.rate_units = rate_units
        self.volume_units = volume_units
        self.direction = "INF"
        self.silent = False
        self.commands: list[NewEraCommand] = []  # everything received, for tests
        self._rx = NewEraCodec(Role.DEVICE)
        self._tx = NewEraCodec(Role.HOST)
        self._serial = 0
        self._own_alarms: list[tuple[str, str]] = []  # (key, letter): R, T raised here
        if power_up_alarm:
            self._raise_own("R")
        self._announced: set[str] = set()
        self._acked: set[int] = set()  # id() of feed alarms already reported
        self._halted = False  # program stopped (after an alarm or a second STP)
        self._purging = False
        self._saved: tuple[float, float] | None = None
        self._cleared_ml = 0.0
        self._vol_target_ml = float(getattr(feed, "vtbi_ml", 0.0) or 0.0)
        self._last_rx_us: int | None = None
        self._last_valid_us: int | None = None
        self._rx_errors = 0
        self._now = 0

    # -- feed helpers --

    def _can_control(self) -> bool:
        return all(hasattr(self.feed, a) for a in ("start", "pause", "rate_ml_h", "vtbi_ml"))

    @property
    def _f(self) -> Any:  # the feed as a ProgrammedPump-like object (duck-typed)
        return self.feed

    def _snapshot(self) -> tuple[PumpRunState, float, tuple[PumpAlarm, ...]]:
        """State, volume, and the alarms an NE-1000 has: stopping ones (a "near end" notice
        has no NE-1000 equivalent and must not become a program error that stops it)."""
        st = self.feed.pump(self._now)
        return st.state, st.volume_infused_ml or 0.0, stopping_alarms(st.alarms)

    def _raise_own(self, letter: str) -> None:
        self._serial += 1
        self._own_alarms.append((f"own{self._serial}", letter))

    def _pending(self) -> tuple[str, str] | None:
        """(key, letter) of the first alarm not yet reported in a reply."""
        if self._own_alarms:
            return self._own_alarms[0]
        for a in self._snapshot()[2]:
            if id(a) not in self._acked:
                return f"feed{id(a)}", _letter(a)
        return None

    def _acknowledge(self) -> None:
        """Reporting an alarm in a reply acknowledges it (§5.2): the program stops."""
        if self._own_alarms:
            self._own_alarms.pop(0)
        else:
            alarms = self._snapshot()[2]
            for a in alarms:
                self._acked.add(id(a))
            if hasattr(self.feed, "clear_alarms"):
                self._f.clear_alarms()
                self._acked.clear()
        self._stop_program()

    def _status_char(self) -> str:
        state = self._snapshot()[0]
        if self._halted:
            return "S"
        if self._purging:
            return "X"
        return {
            PumpRunState.RUNNING: "I",
            PumpRunState.BOLUS: "X",
            PumpRunState.PAUSED: "P",
        }.get(state, "S")

    def _running(self) -> bool:
        return self._status_char() in ("I", "X")

    # -- link --

    def connection_made(self, now_us: int) -> None:
        self._now = now_us
        self._rx.reset()
        self._check_watchdog(now_us)
        if self.safe_mode:
            self._announce(now_us)

    def connection_lost(self) -> None:
        self._rx.reset()

    def tick(self, now_us: int) -> None:
        self._now = now_us
        self._check_watchdog(now_us)
        if self.safe_mode:
            self._announce(now_us)

    def _check_watchdog(self, now_us: int) -> None:
        """§3.2: no valid packet within SAF seconds stops the pump with alarm T. Checked on
        every event, since the pump's clock runs while no link is open."""
        last = self._last_valid_us
        if not (self.safe_mode and self.watchdog_s and last is not None):
            return
        if now_us - last > self.watchdog_s * 1_000_000:
            self._last_valid_us = None  # re-armed by the next valid packet
            self._stop_program()
            self._raise_own("T")
            self._announce(now_us)

    def _announce(self, now_us: int) -> None:
        """Safe-mode auto-alarm (§3.2): a status packet sent unasked, not acknowledging."""
        pending = self._pending()
        if self.silent or pending is None or pending[0] in self._announced:
            return
        self._announced.add(pending[0])
        self.send(self._tx.encode(NewEraReply(self.address, "A", "", pending[1], safe=True)))

    def data_received(self, data: bytes, now_us: int) -> None:
        self._now = now_us
        self._check_watchdog(now_us)
        if self._last_rx_us is not None and now_us - self._last_rx_us > INTER_BYTE_TIMEOUT_US:
            self._rx.reset()  # §3.2: a gap inside a packet drops it
        self._last_rx_us = now_us
        msgs = self._rx.feed(data)
        errors = sum(self._rx.stats.errors[k] for k in ("crc", "framing"))
        bad, self._rx_errors = errors - self._rx_errors, errors
        if self.silent:
            return
        if bad and self.safe_mode:
            status = self._status_char()
            self.send(self._tx.encode(NewEraReply(self.address, status, "?COM", safe=True)))
        for cmd in msgs:
            if isinstance(cmd, NewEraCommand):
                self._on_command(cmd, now_us)

    def _on_command(self, cmd: NewEraCommand, now_us: int) -> None:
        if cmd.address is not None and cmd.address != self.address and not cmd.system:
            return
        if self.safe_mode and not cmd.safe:
            return  # Safe mode ignores Basic commands (§8.6)
        self.commands.append(cmd)
        if cmd.safe:
            self._last_valid_us = now_us  # watchdog fed by any valid packet (§3.2)
        query = cmd.is_query and cmd.command not in _ACTIONS
        pending = self._pending()
        if pending is not None:
            data = self._query(cmd) if query else ""
            if data is None:
                data = "?"
            self._acknowledge()
            reply = NewEraReply(self.address, "A", data, pending[1], cmd.safe)
        else:
            data = self._query(cmd) if query else self._control(cmd, now_us)
            if data is None:
                data = "?"
            reply = NewEraReply(self.address, self._status_char(), data, None, cmd.safe)
        if not cmd.system:
            self.send(self._tx.encode(reply))

    # -- commands --

    def _rate_prog_ml_h(self) -> float:
        rate = getattr(self.feed, "rate_ml_h", None)
        if rate is None:
            rate = self.feed.pump(self._now).rate_ml_h or 0.0
        return float(rate)

    def _dispensed_ml(self) -> float:
        return max(0.0, self._snapshot()[1] - self._cleared_ml)

    def _query(self, cmd: NewEraCommand) -> str | None:
        """Reply data of a query (§5), or None for an unknown command."""
        c = cmd.command
        vol_f = _VOL_FROM_ML[self.volume_units]
        if c == "":
            return ""
        if c == "VER":
            return self.version
        if c == "SAF":
            return str(self.watchdog_s if self.safe_mode else 0)
        if c == "RAT":
            rate = self._rate_prog_ml_h() * _RATE_FROM_ML_H[self.rate_units]
            return format_number(rate) + self.rate_units
        if c == "VOL":
            return format_number(self._vol_target_ml * vol_f) + self.volume_units
        if c == "DIS":
            inf = format_number(self._dispensed_ml() * vol_f)
            return f"I{inf}W{format_number(0.0)}{self.volume_units}"
        if c == "DIR":
            return self.direction
        if c == "DIA":
            return format_number(self.diameter_mm)
        return None

    def _control(self, cmd: NewEraCommand, now_us: int) -> str | None:
        """Apply a control command; reply data ("" = done, "?NA", "?OOR") or None."""
        c, p = cmd.command, cmd.params
        if c == "SAF":
            if not p.isdigit() or not 0 <= int(p) <= 255:
                return "?OOR"
            self.watchdog_s = int(p)
            self.safe_mode = self.watchdog_s > 0
            return ""
        if c == "DIA":
            if self._running():
                return "?NA"
            if not re.fullmatch(_NUM, p) or not 0.1 <= float(p) <= 50.0:
                return "?OOR"
            self.diameter_mm = float(p)
            return ""
        if c == "DIR":
            return "" if p == "INF" else "?NA" if p in ("WDR", "REV") else "?OOR"
        if c not in ("RAT", "VOL", "RUN", "STP", "PUR", "CLD"):
            return None
        if not self._can_control():
            return "?NA"
        if c == "RAT":
            return self._set_rate(p, now_us)
        if c == "VOL":
            if p in _VOL_FROM_ML:
                self.volume_units = p
                return ""
            if not _VOL_SET.fullmatch(p):
                return "?OOR"
            self._vol_target_ml = float(p) / _VOL_FROM_ML[self.volume_units]
            return ""
        if c == "RUN":
            return self._run(now_us)
        if c == "STP":
            self._stop(now_us)
            return ""
        if c == "PUR":
            if self._running():
                return "?NA"
            self._saved = (self._f.rate_ml_h, self._f.vtbi_ml)
            self._close_segment(now_us)
            self._f.rate_ml_h, self._f.vtbi_ml = self.max_rate_ml_h, math.inf
            self._f.start(now_us)
            self._purging, self._halted = True, False
            return ""
        if c == "CLD":
            if p == "INF":
                self._cleared_ml = self._snapshot()[1]
                return ""
            return "" if p == "WDR" else "?OOR"
        return None

    def _set_rate(self, p: str, now_us: int) -> str:
        m = _RAT_SET.fullmatch(p)
        if not m:
            return "?OOR"
        units = m[2] or self.rate_units
        if units != self.rate_units and self._running():
            return "?NA"  # §5: units only changeable when stopped
        rate = float(m[1]) / _RATE_FROM_ML_H[units]
        if not 0 < rate <= self.max_rate_ml_h:
            return "?OOR"
        self.rate_units = units
        if self._purging and self._saved is not None:
            self._saved = (rate, self._saved[1])
        elif self._running():
            self._close_segment(now_us)  # volume so far at the old rate
            self._f.rate_ml_h = rate
            self._f.start(now_us)  # a rate set while pumping takes effect at once (§5)
        else:
            self._close_segment(now_us)
            self._f.rate_ml_h = rate
        return ""

    def _run(self, now_us: int) -> str:
        ch = self._status_char()
        if ch in ("I", "X"):
            return ""
        self._close_segment(now_us)
        if ch == "S":  # a stopped program restarts: the target counts from here
            done = self._snapshot()[1]
            self._f.vtbi_ml = done + self._vol_target_ml if self._vol_target_ml else math.inf
        self._f.start(now_us)
        self._halted = False
        return ""

    def _stop(self, now_us: int) -> None:
        ch = self._status_char()
        if self._purging:
            self._f.pause(now_us)
            if self._saved is not None:
                self._f.rate_ml_h, self._f.vtbi_ml = self._saved
            self._purging, self._halted = False, True
        elif ch == "I":
            self._f.pause(now_us)  # first STP pauses (§8.9)
        else:
            self._halted = True  # second STP stops the program

    def _close_segment(self, now_us: int) -> None:
        """Freeze the feed's volume before changing rate or target: ProgrammedPump
        integrates its current rate over the open segment, including after completion."""
        if self._snapshot()[0] in (PumpRunState.RUNNING, PumpRunState.BOLUS, PumpRunState.COMPLETE):
            self._f.pause(now_us)

    def _stop_program(self) -> None:
        """An alarm stops the pumping program (§5.2, §7.2): the feed stops delivering."""
        if self._can_control():
            if self._snapshot()[0] in (PumpRunState.RUNNING, PumpRunState.BOLUS):
                self._f.pause(self._now)
            if self._purging and self._saved is not None:
                self._f.rate_ml_h, self._f.vtbi_ml = self._saved
                self._saved = None
        self._halted = True
        self._purging = False


def _letter(alarm: PumpAlarm) -> str:
    """The alarm letter a feed alarm is reported with (§5.2)."""
    if alarm.code in _LETTERS:
        return _LETTERS[alarm.code]
    m = re.fullmatch(r"A\?([A-Z])", alarm.raw)
    return m[1] if m else "E"
