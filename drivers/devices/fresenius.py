"""Fresenius Kabi Base Primea host: connect, poll, acknowledge; never command a pump.

Implements the host side of shared/protocols/fresenius-base-primea.md, sans-I/O:

- §6 session: ``0DC`` (connect to the base), wait ``BASE_SETTLE_S`` (1 s, "as per the
  Fresenius documentation", §6 step 2 / §12 pitfall 10), ``0LE;b`` (module bitmap, §5.3),
  ``nDC`` for each present module, then poll ``nLE;adr`` every ``POLL_INTERVAL_S``;
  the bitmap is re-read every ``BITMAP_INTERVAL_S`` (as infupy does, §10 step 3) so
  modules that appear or disappear are noticed. One command outstanding at a time.
- §2, §6 steps 6-7: ENQ is answered with DC4 at once; every good frame is ACKed; a bad
  checksum gets NAK ``2`` (a control byte in a frame ``8``, an overlong frame ``7``).
- §4: spontaneous ``E``/``M`` frames are ACKed and then echoed (``[origin]E``); ``E``
  items are used as telemetry like a poll reply.
- §6 timing: reply timeout ``REPLY_TIMEOUT_S`` then ``MAX_RESENDS`` resend (also after a
  NAK, e.g. link error 6). ``I;0D`` restarts the session, ``I;1E`` reconnects the module
  (``nDC``) and retries (§12 pitfall 8), ``I;0E`` drops the module.
- The host sends only ``ALLOWED_COMMANDS`` (read-only, §5.1); never a §5.2 control
  command. ``host_may_send`` checks one decoded message, for tests.

Source naming: the modules of one base are separate pumps. Everything a module reports
carries the source ``module_source(host.source, n)`` = ``"<source>/<n>"`` (e.g.
``"pump/1"`` for slot 1; ``model.device_of`` gives the link); a module appearing in or
disappearing from the base is announced with a ``DeviceStatus`` for that source.

Choices where the document is UNCERTAIN (§5.3, §8):

- Alarm item ``a``: its encoding is unknown, so it is never interpreted. Following §8, a
  module's ``a`` value at the first poll is its baseline (``alarm_baseline``, kept across
  reconnects of the link) and any other value becomes
  ``PumpAlarm("unclassified", raw=<a value>)``. 0 is not assumed to mean "no alarm".
  The baseline value is announced in the module's ``DeviceStatus`` detail.
- Run state: not decodable (§8). RUNNING = rate > 0 and the infused volume ``r`` rose
  within ``delivery_hold_s``; otherwise ALARM if an unclassified alarm is active, STOPPED
  if the rate is 0, else UNKNOWN. COMPLETE is never reported: end of infusion has no
  documented encoding (it shows as an unclassified alarm, §9 example 4).
- VTBI, drug and concentration are not available (§5.3, §8): ``vtbi_ml``/``drug`` stay
  None and no VTBI reading is produced.
- ``POLL_IDENTIFIERS`` = ``adr`` as in §9 example 4; ``m``/``e`` are not requested
  because their meaning is unknown. Identifiers the pump adds anyway are kept raw in
  ``pump.raw_items``.
- ``MAX_MODULES`` = 5 (bits 0-4 of the bitmap, §1; more is UNCERTAIN).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import ClassVar

import serial

from kapmonitor.model import (
    CHANNELS,
    Channel,
    DeviceState,
    DeviceStatus,
    Message,
    PumpAlarm,
    PumpRunState,
    PumpState,
    Quality,
    Reading,
)

from ..codecs.fresenius import (
    NAK_FOR_ERROR,
    Ack,
    Command,
    Dc4,
    Enq,
    FreseniusCodec,
    FreseniusMessage,
    Item,
    Nak,
    Reply,
    hex_value,
)
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ALLOWED_COMMANDS",
    "FreseniusHost",
    "ModulePump",
    "host_may_send",
    "module_source",
]

#: §1: 19200 baud, 7 data bits, even parity, 1 stop bit, no flow control.
SERIAL = SerialSettings(
    baudrate=19200,
    bytesize=serial.SEVENBITS,
    parity=serial.PARITY_EVEN,
    stopbits=serial.STOPBITS_ONE,
)

#: §5.1: the read-only commands KAP may send. Control commands (§5.2: MO, PR, PO, PB, ...)
#: are deliberately absent. The host itself uses DC and LE.
ALLOWED_COMMANDS: frozenset[str] = frozenset({"DC", "FC", "LE", "LF", "LP", "DE", "AE"})

BASE = 0
#: §1: bitmap bits 0-4 -> modules 1-5 (whether a base holds more is UNCERTAIN).
MAX_MODULES = 5
#: §6 step 2: wait after the base connect reply (from the Fresenius document, per infupy).
BASE_SETTLE_S = 1.0
#: §6: infupy's reply timeout; then one resend.
REPLY_TIMEOUT_S = 1.0
MAX_RESENDS = 1
#: §6 timing table: "KAP default 1-2 s is safe".
POLL_INTERVAL_S = 1.0
#: §10 step 3: infupy re-reads the base every 5 s.
BITMAP_INTERVAL_S = 5.0
#: After the base connect failed twice, try again this much later.
RECONNECT_INTERVAL_S = 5.0
#: §9 example 4: rate, volume and the raw alarm item.
POLL_IDENTIFIERS = "adr"
#: §5.3 scaling.
RATE_ML_H_PER_UNIT = 0.1
VOLUME_ML_PER_UNIT = 0.001
#: Brief/DESIGN: a PumpState at least this often even when nothing changed.
REPUBLISH_S = 60.0
#: RUNNING needs a rise of ``r`` within max(this, time for 2 volume units at the rate).
DELIVERY_HOLD_MIN_S = 3.0


def module_source(source: str, module: int) -> str:
    """The source name of one pump module of a base (see the module docstring)."""
    return f"{source}/{module}"


def host_may_send(message: FreseniusMessage) -> bool:
    """True if the host is allowed to put ``message`` on the wire: link bytes, the §4
    echo of a spontaneous frame, or a read-only command from ``ALLOWED_COMMANDS``."""
    match message:
        case Ack() | Dc4() | Nak():
            return True
        case Reply(status=status, payload=None):
            return status in ("E", "M")
        case Command(command=cmd):
            return cmd in ALLOWED_COMMANDS
    return False


def delivery_hold_s(rate_ml_h: float | None) -> float:
    """How long after the last rise of ``r`` a pump still counts as delivering: long
    enough for two 0.001 mL steps at the reported rate, so slow infusions do not flicker."""
    if not rate_ml_h or rate_ml_h <= 0:
        return DELIVERY_HOLD_MIN_S
    return max(DELIVERY_HOLD_MIN_S, 2 * VOLUME_ML_PER_UNIT / rate_ml_h * 3600.0)


@dataclass
class ModulePump:
    """Telemetry state of one module. Survives link reconnects, so volume continuity,
    ``infusion_id`` and the alarm baseline are kept while the host object lives."""

    module: int
    source: str
    infusion_id: int = 1
    rate_ml_h: float | None = None
    volume_units: int | None = None
    last_rise_us: int | None = None
    alarm_raw: str | None = None
    alarm_baseline: str | None = None
    raw_items: dict[str, str] = field(default_factory=dict)
    published: tuple[object, ...] | None = None
    published_us: int | None = None

    @property
    def volume_ml(self) -> float | None:
        return None if self.volume_units is None else self.volume_units * VOLUME_ML_PER_UNIT

    def alarms(self) -> tuple[PumpAlarm, ...]:
        if self.alarm_raw is None or self.alarm_raw == self.alarm_baseline:
            return ()
        return (
            PumpAlarm(
                code="unclassified",
                raw=self.alarm_raw,
                text=(
                    f"Fresenius a={self.alarm_raw} (meaning undocumented; "
                    f"a={self.alarm_baseline} at session start)"
                ),
            ),
        )

    def run_state(self, now_us: int) -> PumpRunState:
        rate = self.rate_ml_h
        delivering = (
            rate is not None
            and rate > 0
            and self.last_rise_us is not None
            and now_us - self.last_rise_us <= delivery_hold_s(rate) * 1e6
        )
        if delivering:
            return PumpRunState.RUNNING
        if self.alarms():
            return PumpRunState.ALARM
        if rate == 0:
            return PumpRunState.STOPPED
        return PumpRunState.UNKNOWN


@dataclass
class _Request:
    command: Command
    kind: str  # "base", "bitmap", "module", "poll"
    sent_us: int = 0
    sends: int = 0


def _quality(channel: Channel, value: float) -> Quality:
    lo, hi = CHANNELS[channel].plausible
    return Quality.OK if lo <= value <= hi else Quality.OUT_OF_RANGE


class FreseniusHost(HostProtocol):
    """KAP's end of a Base Primea link (see the module docstring for the sequence)."""

    protocol: ClassVar[str] = "fresenius"
    serial_settings: ClassVar[SerialSettings] = SERIAL
    tick_interval_s: ClassVar[float] = 0.1
    stale_after_s: ClassVar[float] = 5.0

    def __init__(self, source: str = "pump") -> None:
        super().__init__(source)
        self.codec = FreseniusCodec()
        self.pumps: dict[int, ModulePump] = {}
        #: Application error codes received (§7.2), for diagnostics.
        self.error_replies: Counter[str] = Counter()
        #: Link errors and oddities: NAK codes received, unexpected frames, bad values.
        self.link_events: Counter[str] = Counter()
        self._phase = "closed"  # closed, connecting, settling, ready, backoff
        self._queue: deque[_Request] = deque()
        self._outstanding: _Request | None = None
        self._connected: set[int] = set()
        self._present: set[int] = set()
        self._wake_us = 0
        self._next_poll_us = 0
        self._next_bitmap_us = 0

    # -- lifecycle --------------------------------------------------------------------

    @property
    def associated(self) -> bool:
        return self._phase == "ready"

    def connection_made(self, now_us: int) -> None:
        self._reset_link()
        self._start_session(now_us)

    def connection_lost(self) -> None:
        self._reset_link()
        self._phase = "closed"

    def _reset_link(self) -> None:
        self.codec.reset()
        self.take_outgoing()
        self._queue.clear()
        self._outstanding = None
        self._connected.clear()
        self._present.clear()

    def _start_session(self, now_us: int) -> None:
        self._queue.clear()
        self._outstanding = None
        self._connected.clear()
        self._phase = "connecting"
        self._request(Command(BASE, "DC"), "base", now_us)

    # -- requests ---------------------------------------------------------------------

    def _request(self, command: Command, kind: str, now_us: int, *, first: bool = False) -> None:
        if command.command not in ALLOWED_COMMANDS:  # never a control command (§5.2)
            raise RuntimeError(f"refusing to send {command!r} to a clinical pump")
        req = _Request(command, kind)
        if first:
            self._queue.appendleft(req)
        else:
            self._queue.append(req)
        self._send_next(now_us)

    def _send_next(self, now_us: int) -> None:
        if self._outstanding is None and self._queue:
            self._transmit(self._queue.popleft(), now_us)

    def _transmit(self, req: _Request, now_us: int) -> None:
        req.sent_us = now_us
        req.sends += 1
        self._outstanding = req
        self.send(self.codec.encode(req.command))

    def _queued(self, kind: str, module: int) -> bool:
        reqs = [*self._queue, *([self._outstanding] if self._outstanding else [])]
        return any(r.kind == kind and r.command.module == module for r in reqs)

    def _retry_or_fail(self, now_us: int) -> list[Message]:
        req = self._outstanding
        if req is None:
            return []
        if req.sends <= MAX_RESENDS:
            self._transmit(req, now_us)
            return []
        self._outstanding = None
        out = self._failed(req, now_us)
        self._send_next(now_us)
        return out

    def _failed(self, req: _Request, now_us: int) -> list[Message]:
        self.link_events[f"failed_{req.kind}"] += 1
        if req.kind == "base":
            self._phase = "backoff"
            self._queue.clear()
            self._wake_us = now_us + round(RECONNECT_INTERVAL_S * 1e6)
        elif req.kind == "bitmap":  # the base is gone or has dropped us: start over
            self._start_session(now_us)
        return []

    # -- time -------------------------------------------------------------------------

    def tick(self, now_us: int) -> list[Message]:
        out: list[Message] = []
        if self._phase == "closed":
            return out
        if self._phase == "backoff" and now_us >= self._wake_us:
            self._start_session(now_us)
        if self._phase == "settling" and now_us >= self._wake_us:
            self._phase = "ready"
            self._next_poll_us = now_us + round(POLL_INTERVAL_S * 1e6)
            self._next_bitmap_us = now_us + round(BITMAP_INTERVAL_S * 1e6)
            self._request(Command(BASE, "LE", "b"), "bitmap", now_us)
        req = self._outstanding
        if req is not None and now_us - req.sent_us >= REPLY_TIMEOUT_S * 1e6:
            self.link_events["timeout"] += 1
            out += self._retry_or_fail(now_us)
        if self._phase == "ready":
            if now_us >= self._next_poll_us:
                self._next_poll_us = max(
                    self._next_poll_us + round(POLL_INTERVAL_S * 1e6), now_us + 1
                )
                for n in sorted(self._connected):
                    if not self._queued("poll", n):
                        self._request(Command(n, "LE", POLL_IDENTIFIERS), "poll", now_us)
            if now_us >= self._next_bitmap_us:
                self._next_bitmap_us = now_us + round(BITMAP_INTERVAL_S * 1e6)
                if not self._queued("bitmap", BASE):
                    self._request(Command(BASE, "LE", "b"), "bitmap", now_us)
        return out

    # -- bytes in ---------------------------------------------------------------------

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        before = {r: self.codec.stats.errors[r] for r in NAK_FOR_ERROR}
        msgs = self.codec.feed(data)
        out: list[Message] = []
        for msg in msgs:
            self.last_frame_us = now_us
            match msg:
                case Enq():
                    self.send(self.codec.encode(Dc4()))
                case Ack() | Dc4():
                    pass  # the pump's ACK of our frame: the reply itself is awaited
                case Nak(code=code):
                    self.link_events[f"nak_{code}"] += 1
                    out += self._retry_or_fail(now_us)
                case Reply():
                    self.send(self.codec.encode(Ack()))
                    out += self._on_reply(msg, now_us)
                case Command():
                    self.send(self.codec.encode(Ack()))
                    self.link_events["command_from_pump"] += 1
        for reason, code in NAK_FOR_ERROR.items():
            for _ in range(self.codec.stats.errors[reason] - before[reason]):
                self.send(self.codec.encode(Nak(code)))
        return out

    def _on_reply(self, reply: Reply, now_us: int) -> list[Message]:
        if reply.status in ("E", "M"):
            # §4: ACK (sent above), then the application-level echo "[origin]E".
            self.send(self.codec.encode(Reply(reply.module, reply.status)))
            if reply.status == "E" and reply.module in self._connected:
                return self._telemetry(reply.module, reply.items, now_us, poll=False)
            self.link_events[f"spontaneous_{reply.status}"] += 1
            return []
        req = self._outstanding
        if req is None or reply.module != req.command.module:
            self.link_events["unexpected_reply"] += 1
            return []
        self._outstanding = None
        if reply.status == "C":
            out = self._on_success(req, reply, now_us)
        elif reply.status == "I":
            out = self._on_error(req, reply.payload or "", now_us)
        else:
            self.link_events[f"status_{reply.status}"] += 1
            out = self._failed(req, now_us)
        self._send_next(now_us)
        return out

    def _on_success(self, req: _Request, reply: Reply, now_us: int) -> list[Message]:
        module = req.command.module
        assert module is not None
        if req.kind == "base":
            self._phase = "settling"
            self._wake_us = now_us + round(BASE_SETTLE_S * 1e6)
            return []
        if req.kind == "bitmap":
            return self._on_bitmap(reply.items, now_us)
        if req.kind == "module":
            self._connected.add(module)
            pump = self._pump(module)
            if not self._queued("poll", module):  # a poll retried after I;1E is queued
                self._request(Command(module, "LE", POLL_IDENTIFIERS), "poll", now_us)
            return [
                DeviceStatus(
                    pump.source,
                    DeviceState.STREAMING,
                    now_us,
                    detail=f"Fresenius module {module} connected",
                    protocol=self.protocol,
                )
            ]
        return self._telemetry(module, reply.items, now_us, poll=True)

    def _on_error(self, req: _Request, code: str, now_us: int) -> list[Message]:
        self.error_replies[code] += 1
        module = req.command.module
        assert module is not None
        if code == "0D":  # §7.2: base session not open -> reopen it
            self._start_session(now_us)
            return []
        if code == "1E" and req.kind != "module":  # §7.2: module session not open
            self._connected.discard(module)
            req.sends = 0
            self._queue.appendleft(req)
            self._queue.appendleft(_Request(Command(module, "DC"), "module"))
            return []
        if code == "0E" or req.kind == "module":  # module unreachable
            return self._drop_module(module, now_us, f"module {module} error {code}")
        return self._failed(req, now_us)

    def _on_bitmap(self, items: tuple[Item, ...], now_us: int) -> list[Message]:
        bitmap = next((hex_value(i.value) for i in items if i.ident == "b"), None)
        if bitmap is None:
            self.link_events["bad_bitmap"] += 1
            return []
        present = {k + 1 for k in range(MAX_MODULES) if bitmap >> k & 1}
        out: list[Message] = []
        for n in sorted(self._present - present):
            out += self._drop_module(n, now_us, f"module {n} no longer in the base bitmap")
        self._present = present
        for n in sorted(present - self._connected):
            if not self._queued("module", n):
                self._request(Command(n, "DC"), "module", now_us)
        return out

    def _drop_module(self, module: int, now_us: int, why: str) -> list[Message]:
        was = module in self._connected
        self._connected.discard(module)
        self._present.discard(module)
        self._queue = deque(r for r in self._queue if r.command.module != module)
        if not was:
            return []
        return [
            DeviceStatus(
                self._pump(module).source,
                DeviceState.DISCONNECTED,
                now_us,
                detail=why,
                protocol=self.protocol,
            )
        ]

    def _pump(self, module: int) -> ModulePump:
        if module not in self.pumps:
            self.pumps[module] = ModulePump(module, module_source(self.source, module))
        return self.pumps[module]

    # -- telemetry --------------------------------------------------------------------

    def _telemetry(
        self, module: int, items: tuple[Item, ...], now_us: int, *, poll: bool
    ) -> list[Message]:
        """Apply the items of an LE reply or an E frame; readings for what arrived and a
        PumpState when state, rate, alarms or infusion changed (or every REPUBLISH_S)."""
        pump = self._pump(module)
        out: list[Message] = []
        for item in items:
            if item.ident == "d":
                units = hex_value(item.value)
                if units is None:
                    self.link_events["bad_value_d"] += 1
                    continue
                pump.rate_ml_h = round(units * RATE_ML_H_PER_UNIT, 1)
                out.append(self._reading(Channel.PUMP_RATE, pump.rate_ml_h, pump, now_us))
            elif item.ident == "r":
                units = hex_value(item.value)
                if units is None:
                    self.link_events["bad_value_r"] += 1
                    continue
                if pump.volume_units is not None and units < pump.volume_units:
                    pump.infusion_id += 1  # volume reset: a new infusion (§8)
                    pump.last_rise_us = None
                elif pump.volume_units is not None and units > pump.volume_units:
                    pump.last_rise_us = now_us
                pump.volume_units = units
                volume = round(units * VOLUME_ML_PER_UNIT, 3)
                out.append(self._reading(Channel.VOLUME_INFUSED, volume, pump, now_us))
            elif item.ident == "a":
                if pump.alarm_baseline is None:
                    pump.alarm_baseline = item.value
                    out.append(
                        DeviceStatus(
                            pump.source,
                            DeviceState.STREAMING,
                            now_us,
                            detail=f"alarm item baseline a={item.value} (meaning undocumented)",
                            protocol=self.protocol,
                        )
                    )
                pump.alarm_raw = item.value
            else:
                pump.raw_items[item.ident] = item.value
        state = self._state(pump, now_us)
        key = (state.state, state.rate_ml_h, state.alarms, state.infusion_id)
        if (
            key != pump.published
            or pump.published_us is None
            or now_us - pump.published_us >= REPUBLISH_S * 1e6
        ):
            pump.published, pump.published_us = key, now_us
            out.append(state)
        return out

    def _reading(self, channel: Channel, value: float, pump: ModulePump, now_us: int) -> Reading:
        return Reading(channel, value, now_us, pump.source, quality=_quality(channel, value))

    def _state(self, pump: ModulePump, now_us: int) -> PumpState:
        quality = Quality.OK
        if pump.rate_ml_h is not None:
            quality |= _quality(Channel.PUMP_RATE, pump.rate_ml_h)
        volume = pump.volume_ml
        if volume is not None:
            volume = round(volume, 3)
            quality |= _quality(Channel.VOLUME_INFUSED, volume)
        return PumpState(
            t_us=now_us,
            state=pump.run_state(now_us),
            rate_ml_h=pump.rate_ml_h,
            volume_infused_ml=volume,
            alarms=pump.alarms(),
            infusion_id=pump.infusion_id,
            source=pump.source,
            quality=quality,
        )
