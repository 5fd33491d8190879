"""Simulated Fresenius Kabi Base Primea with pump modules, byte for byte.

Plays the base side of shared/protocols/fresenius-base-primea.md: ACK then exactly one
reply frame per command (§10 "what the simulator must do"), NAK ``2`` for a bad checksum,
``I;xx`` application errors (§7.2), the module bitmap (§5.3 ``b``), ENQ line checks, and
spontaneous ``E`` frames after ``DE``. Values come from a ``PumpFeed`` per module slot.

Behaviour the document leaves open, chosen here (KAP simulator conventions, not pump
facts; §6 "Simulator defaults"):

- ENQ every ``ENQ_INTERVAL_S`` while the base session is open; the session is dropped if
  DC4 does not come within ``DC4_TIMEOUT_S`` or no frame arrives for ``IDLE_TIMEOUT_S``,
  after which every command but ``DC`` gets ``I;0D`` / ``I;1E``.
- A reply frame not ACKed within ``ACK_TIMEOUT_S`` is re-sent once (a NAK from the host
  also triggers the resend), then counted as link error 5.
- Alarm item ``a`` (encoding UNCERTAIN): a bit mask of ``SIM_ALARM_BITS``, with 4 for end of
  infusion as §9 example 4 suggests. KAP's host does not interpret it.
- ``LF;b`` (device type, format UNCERTAIN) answers ``DEVICE_TYPE``; ``LP`` answers
  ``I;01`` ("Base Primea does not support it", §5.1).
- Spontaneous ``E`` frames: sent when a registered value changes, at most once per
  ``SPONTANEOUS_INTERVAL_S`` (§5.1: on change vs periodic is UNCERTAIN).
- Control commands (§5.2) need ``MO;2`` first, else ``I;02``. ``PR`` (rate) and ``PO``
  (pause) are applied to a ``ProgrammedPump``-like feed; the other control commands are
  answered ``I;01`` (not simulated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from kapmonitor.model import PumpRunState, PumpState

from ...codecs.fresenius import (
    NAK_FOR_ERROR,
    Ack,
    Command,
    Dc4,
    Enq,
    FreseniusCodec,
    Nak,
    Reply,
    hex_value,
)
from ...devices.fresenius import MAX_MODULES, SERIAL
from ...protocol import PeerProtocol, SerialSettings
from ..feed import PumpFeed

__all__ = ["FreseniusPeer"]

ENQ_INTERVAL_S = 5.0
DC4_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 15.0
ACK_TIMEOUT_S = 1.0
SPONTANEOUS_INTERVAL_S = 1.0
DEVICE_TYPE = "KAPSIM"
#: KAP simulator convention for the undocumented alarm item ``a`` (bits OR-ed together).
SIM_ALARM_BITS: dict[str, int] = {"occlusion": 0x2, "end": 0x4, "near_end": 0x8}
SIM_ALARM_OTHER = 0x1
#: §5.2 control commands (the simulator accepts them only in PC-control mode).
CONTROL_COMMANDS = frozenset(
    {"MO", "PR", "PO", "PB", "PF", "PV", "RV", "PP", "PS", "RZ", "OF", "SI", "EP", "AP", "EN"}
)
_IDENTIFIERS = "adrmeks"


class FreseniusPeer(PeerProtocol):
    """A Base Primea holding one module per feed.

    ``feed`` is one ``PumpFeed`` (placed in slot ``module``, default 1) or a mapping
    slot -> feed for several modules. ``silent = True`` makes the base stop answering.
    """

    protocol: ClassVar[str] = "fresenius"
    serial_settings: ClassVar[SerialSettings] = SERIAL
    tick_interval_s: ClassVar[float] = 0.1

    def __init__(
        self,
        feed: PumpFeed | Mapping[int, PumpFeed],
        *,
        seed: int = 0,
        module: int = 1,
        **options: Any,
    ) -> None:
        super().__init__()
        if options:
            raise TypeError(f"unknown FreseniusPeer options: {sorted(options)}")
        feeds = dict(feed) if isinstance(feed, Mapping) else {module: feed}
        for n in feeds:
            if not 1 <= n <= MAX_MODULES:
                raise ValueError(f"module slot must be 1..{MAX_MODULES}, got {n}")
        self.feeds: dict[int, PumpFeed] = feeds
        self.seed = seed
        self.codec = FreseniusCodec()
        self.silent = False
        #: Every command received, in order (the tests check what a host asked for).
        self.received: list[Command] = []
        self.link_errors: dict[str, int] = {}
        self._reset()

    def _reset(self) -> None:
        self.codec.reset()
        self.base_open = False
        self.open_modules: set[int] = set()
        self.mode: dict[int, int] = dict.fromkeys(self.feeds, 1)
        self.spontaneous: dict[int, str] = {}
        self._spont_sent: dict[int, str] = {}
        self._spont_due_us = 0
        self._last_rx_us = 0
        self._next_enq_us = 0
        self._enq_sent_us: int | None = None
        self._unacked: tuple[bytes, int, bool] | None = None

    def connection_made(self, now_us: int) -> None:
        self._reset()
        self.take_outgoing()
        self._last_rx_us = now_us

    def connection_lost(self) -> None:
        self._reset()

    def _count(self, what: str) -> None:
        self.link_errors[what] = self.link_errors.get(what, 0) + 1

    # -- link -------------------------------------------------------------------------

    def _send_frame(self, msg: Reply, now_us: int) -> None:
        frame = self.codec.encode(msg)
        self.send(frame)
        self._unacked = (frame, now_us, False)

    def _resend(self, now_us: int) -> None:
        if self._unacked is None:
            return
        frame, _, resent = self._unacked
        if resent:
            self._count("ack_timeout")  # link error 5
            self._unacked = None
        else:
            self.send(frame)
            self._unacked = (frame, now_us, True)

    def _close_session(self) -> None:
        self.base_open = False
        self.open_modules.clear()
        self.spontaneous.clear()
        self._enq_sent_us = None

    def tick(self, now_us: int) -> None:
        if self.silent:
            return
        if self._unacked is not None and now_us - self._unacked[1] >= ACK_TIMEOUT_S * 1e6:
            self._resend(now_us)
        if not self.base_open:
            return
        if self._enq_sent_us is not None and now_us - self._enq_sent_us > DC4_TIMEOUT_S * 1e6:
            self._count("no_dc4")
            self._close_session()
            return
        if now_us - self._last_rx_us > IDLE_TIMEOUT_S * 1e6:
            self._count("idle")
            self._close_session()
            return
        if now_us >= self._next_enq_us and self._enq_sent_us is None:
            self.send(self.codec.encode(Enq()))
            self._enq_sent_us = now_us
            self._next_enq_us = now_us + round(ENQ_INTERVAL_S * 1e6)
        if now_us >= self._spont_due_us:
            self._spont_due_us = now_us + round(SPONTANEOUS_INTERVAL_S * 1e6)
            for n, ids in sorted(self.spontaneous.items()):
                if n not in self.open_modules:
                    continue
                payload = ";".join(self._item(n, i, now_us) or "" for i in ids)
                if payload != self._spont_sent.get(n):
                    self._spont_sent[n] = payload
                    self._send_frame(Reply(n, "E", payload), now_us)

    def data_received(self, data: bytes, now_us: int) -> None:
        if self.silent:
            return
        before = {r: self.codec.stats.errors[r] for r in NAK_FOR_ERROR}
        for msg in self.codec.feed(data):
            self._last_rx_us = now_us
            match msg:
                case Ack():
                    self._unacked = None
                case Nak():
                    self._resend(now_us)
                case Dc4():
                    self._enq_sent_us = None
                case Enq():
                    self.send(self.codec.encode(Dc4()))
                case Reply():  # the host's echo of an E/M frame: ACK only (§10)
                    self.send(self.codec.encode(Ack()))
                case Command():
                    self.received.append(msg)
                    if msg.module is None:  # this simulates a base: address required
                        self.send(self.codec.encode(Nak("4")))
                        continue
                    self.send(self.codec.encode(Ack()))
                    self._send_frame(self._answer(msg, now_us), now_us)
        for reason, code in NAK_FOR_ERROR.items():
            for _ in range(self.codec.stats.errors[reason] - before[reason]):
                self.send(self.codec.encode(Nak(code)))

    # -- application ------------------------------------------------------------------

    def _answer(self, cmd: Command, now_us: int) -> Reply:
        n, name, args = cmd.module, cmd.command, cmd.args
        assert n is not None

        def ok(payload: str | None = None) -> Reply:
            return Reply(n, "C", payload)

        def err(code: str) -> Reply:
            return Reply(n, "I", code)

        if name == "DC":
            if n == 0:
                self.base_open = True
                self._next_enq_us = now_us + round(ENQ_INTERVAL_S * 1e6)
                return ok()
            if not self.base_open:
                return err("0D")
            if n not in self.feeds:
                return err("0E")
            self.open_modules.add(n)
            return ok()
        if not self.base_open:
            return err("0D")
        if n == 0:
            return self._answer_base(name, args)
        if n not in self.feeds:
            return err("0E")
        if n not in self.open_modules:
            return err("1E")
        if name == "FC":
            self.open_modules.discard(n)
            self.spontaneous.pop(n, None)
            return ok()
        if name == "LE":
            return self._read(n, args, now_us)
        if name == "LF":
            return ok(f"b{DEVICE_TYPE}") if args == "b" else err("0A")
        if name == "DE":
            bad = self._check_ids(args)
            if bad:
                return err(bad)
            assert args is not None
            self.spontaneous[n] = args
            self._spont_sent.pop(n, None)
            return ok()
        if name == "AE":
            self.spontaneous.pop(n, None)
            return ok()
        if name in CONTROL_COMMANDS:
            return self._control(n, name, args, now_us)
        return err("01")  # LP (not on a Base Primea), LN, LM, DM, AM and unknown commands

    def _answer_base(self, name: str, args: str | None) -> Reply:
        if name == "FC":
            self._close_session()
            return Reply(0, "C")
        if name == "LE":
            if args != "b":
                return Reply(0, "I", "0A" if args else "04")
            bitmap = sum(1 << (k - 1) for k in self.feeds)
            return Reply(0, "C", f"b{bitmap:X}")
        if name == "LF":
            return Reply(0, "C", f"b{DEVICE_TYPE}") if args == "b" else Reply(0, "I", "0A")
        return Reply(0, "I", "01")

    @staticmethod
    def _check_ids(args: str | None) -> str | None:
        if not args:
            return "04"
        if not all("a" <= c <= "z" for c in args):
            return "0B"
        if not all(c in _IDENTIFIERS for c in args):
            return "0A"
        return None

    def _read(self, n: int, args: str | None, now_us: int) -> Reply:
        bad = self._check_ids(args)
        if bad:
            return Reply(n, "I", bad)
        assert args is not None
        return Reply(n, "C", ";".join(self._item(n, i, now_us) or "" for i in args))

    def _item(self, n: int, ident: str, now_us: int) -> str | None:
        st = self.feeds[n].pump(now_us)
        if ident == "d":
            return f"d{round((st.rate_ml_h or 0.0) * 10):X}"
        if ident == "r":
            return f"r{round((st.volume_infused_ml or 0.0) * 1000):X}"
        if ident == "a":
            return f"a{_alarm_bits(st):X}"
        if ident == "m":
            return f"m{self.mode[n]:X}"
        if ident in "eks":
            return f"{ident}0"
        return None

    def _control(self, n: int, name: str, args: str | None, now_us: int) -> Reply:
        if name == "MO":
            if args not in ("1", "2"):
                return Reply(n, "I", "04")
            self.mode[n] = int(args)
            return Reply(n, "C")
        if self.mode[n] != 2:
            return Reply(n, "I", "02")
        feed: Any = self.feeds[n]
        if name == "PR":
            units = hex_value(args or "")
            if units is None:
                return Reply(n, "I", "04")
            if not hasattr(feed, "rate_ml_h"):
                return Reply(n, "I", "03")
            running = feed.pump(now_us).state is PumpRunState.RUNNING
            if running:
                feed.pause(now_us)
            feed.rate_ml_h = units / 10
            if running:
                feed.start(now_us)
            return Reply(n, "C")
        if name == "PO":
            if not hasattr(feed, "pause"):
                return Reply(n, "I", "03")
            feed.pause(now_us)
            return Reply(n, "C")
        return Reply(n, "I", "01")


def _alarm_bits(state: PumpState) -> int:
    bits = 0
    for alarm in state.alarms:
        bits |= SIM_ALARM_BITS.get(alarm.code, SIM_ALARM_OTHER)
    if state.state is PumpRunState.COMPLETE:
        bits |= SIM_ALARM_BITS["end"]
    return bits
