"""B. Braun Space BCC host: the PC (client) side of a SpaceStation/SpaceCom link, sans-I/O.

Implements shared/protocols/bbraun-bcc.md. KAP only reads telemetry (document header and
§8): the host sends the read requests of §4 and ACK bytes, nothing else. Every request
goes through ``is_allowed_request`` (``ALLOWED_COMMANDS`` plus ``MEM:GETSLOT#ps``), so a
test can check each byte the host ever wrote.

Session (§4, §6): ``ADMIN:ALIVE`` with bed ID ``1``; the ``GNACK`` answer's header names
the bed ID used from then on (pitfall 4). ``ADMIN:VERSION`` once per session (kept in
``version``; its reply format is UNCERTAIN, so it is stored raw). Then ``MEM:GET`` every
``POLL_PERIOD_S`` (or ``MEM:GETSLOT#ps`` for one pump when ``slot`` is given). A request
is sent only when the previous answer is complete (its ETX frame arrived and was ACKed)
and ``MIN_GAP_S`` after it (§6: the pumps tolerate a new poll 500 ms after an answer).
Every valid frame is ACKed at once, each part of a multi-part answer included (§2,
pitfall 3); a bad frame is not ACKed (§7.5). No complete frame for ``SESSION_LOST_S`` ->
start again with ``ADMIN:ALIVE`` (§6); ``connection_lost`` + ``connection_made`` does the
same.

A rack holds several pumps: each slot is its own pump, published with
``source = f"{source}/slot{ps}"`` where ``ps`` is the §4 pump index (pillar digit + slot
character, e.g. ``pump/slot11``, ``pump/slot1B``; the 6-character address form of §5 maps
to the same index). Per slot the host emits ``Reading``s of PUMP_RATE (``INRT``) and
VOLUME_INFUSED (``INVI``) as each frame arrives, and a ``PumpState`` at the end of every
answer that mentioned the slot (so at every poll), at once on a ``GNERR 39`` removal, and
at least every ``PUMPSTATE_EVERY_S`` while the link is alive. ``_NV``/``_NA`` are never
numbers: the reading is skipped and the PumpState field is None. ``device_t_us`` is the
rack's relative clock (``relTime`` seconds x 1e6, §5, pitfall 10), not wall time.

Choices where the document is uncertain (each in one constant; change it there once
verified against a real SpaceStation or the B. Braun specification):

* ``POLL_PERIOD_S = 5.0``: §6 says poll every 5-10 s and the open code refuses < 5 s; the
  fastest allowed period gives the quickest alarm reporting.
* ``INVOLACT_MEANING = "syringe"``: §5.2 leaves open whether ``INVOLACT`` is the volume left
  in the syringe or the remaining VTBI. The document's own §7.2 example (17.50 infused +
  32.50 = the 50 mL syringe, with VTBI 35) and the real capture (``INRMT`` = 65535 "not
  applicable" while ``INVOLACT`` = 47.64) both read as syringe volume, which the model has
  no field for. So no VTBI is reported (never invent numbers); set it to ``"vtbi"`` to map
  ``INVOLACT`` to ``vtbi_ml`` and VTBI readings.
* ``ALARM_FLAG_CODES = {}``: §5.2 says no public source maps ``INA1``..``INA15`` to alarm
  types. Every raised flag (any value but ``0``/``_NV``/``_NA``) becomes
  ``PumpAlarm(code="unclassified", raw="INAn,<value>")``, never dropped. The §5.4 bit sets
  are not used: their carrier parameter is unknown.
* Run state (``infer_run_state``): the §5.4 status bits have no known carrier and
  ``DSSTATUS`` does not match them, so the state is inferred from facts of higher
  confidence: ``INRT`` > 0 -> RUNNING; else any raised flag -> ALARM; else, with
  ``INRMT_ZERO_MEANS_COMPLETE``, remaining time ``INRMT`` = 0 after volume was infused ->
  COMPLETE (``INRMT`` is "remaining time", 65535 "not applicable", §5.2, pitfall 7);
  else STOPPED. PAUSED and BOLUS cannot be told apart from STOPPED/RUNNING.
* Concentration: ``INDCON`` with unit ``INDCONU`` 31 (mg/mL) or 32 (µg/mL) only
  (``CONCENTRATION_TO_MG_ML``); ``INDCON`` = 0 is "not set" (the real capture has 0 with
  dose mode off), reported as None. ``drug`` is ``INSOL`` (long name), ``bolus_ml`` is
  ``INBOVAL`` (bolus volume delivered, confidence M/L).
* ``GNERR`` (§5.1): 39 (pump removed) -> PumpState UNKNOWN with
  ``PumpAlarm("pump_removed")`` (the code is confirmed, so it is named); 811 for a known
  pump -> PumpState UNKNOWN, quality INVALID; 11 and 68 are counted in ``errors``; any
  other code addressed to a pump -> ``PumpAlarm("unclassified", raw="GNERR,<code>")``.
* Volume: a decrease of ``INVI`` means a new infusion (``infusion_id`` + 1), so the
  reported volume is monotonic within an infusion. Pump tracking survives reconnects.
* ``stale_after_s = 15``: three poll periods without a frame is a technical alarm long
  before the §6 session timeout of 60 s triggers a new ``ADMIN:ALIVE``.
* Serial settings: §1 says BCC's RS-232 settings are not public (UNCERTAIN); the open code
  uses TCP port 4001 (``socket://HOST:4001``, where line settings do not apply). 9600 8N1
  is a placeholder to override per port.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Final, Literal

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
from ..codecs.bbraun import (
    NO_VALUE_MARKERS,
    BBraunCodec,
    BccAck,
    BccError,
    BccRequest,
    BccResponse,
    Quadruple,
    Unparsed,
    slot_address,
    slot_code,
)
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "ALARM_FLAG_CODES",
    "ALLOWED_COMMANDS",
    "INVOLACT_MEANING",
    "POLL_PERIOD_S",
    "BBraunHost",
    "infer_run_state",
    "is_allowed_request",
]

# --- what the host may ever send (document header, §4, §8) -----------------------------------
ALIVE: Final = "ADMIN:ALIVE"
VERSION: Final = "ADMIN:VERSION"
GET: Final = "MEM:GET"
#: The read-only requests of §4. ``MEM:GETSLOT#ps`` is allowed through ``is_allowed_request``.
ALLOWED_COMMANDS: Final = frozenset({ALIVE, VERSION, GET})
_GETSLOT = re.compile(r"MEM:GETSLOT#[1-3][1-9A-O]\Z")


def is_allowed_request(command: str) -> bool:
    """True for the read-only requests KAP may send to a B. Braun rack (§4)."""
    return command in ALLOWED_COMMANDS or _GETSLOT.match(command) is not None


# --- timing (§6) -------------------------------------------------------------------------------
#: §6: KAP polls every 5-10 s; the open code refuses < 5 s. Choice: 5 s (see docstring).
POLL_PERIOD_S: Final = 5.0
POLL_PERIOD_RANGE_S: Final = (5.0, 10.0)
#: §6: the pumps tolerate a new request 500 ms after the end of the previous answer.
MIN_GAP_S: Final = 0.5
#: §6: the open code waits up to 5 s for GNACK; used for every answer.
RESPONSE_TIMEOUT_S: Final = 5.0
#: §6: no complete frame for ~60 s -> the session is lost; start again with ADMIN:ALIVE.
SESSION_LOST_S: Final = 60.0
#: §4: ADMIN:ALIVE is sent with bed ID "1" before the rack's bed ID is known.
OPENING_BED_ID: Final = "1"
#: Brief/DESIGN: a PumpState at least this often while the link is alive.
PUMPSTATE_EVERY_S: Final = 60.0

# --- interpretation choices (§5.2, UNCERTAIN; see the module docstring) ----------------------
INVOLACT_MEANING: Final[Literal["syringe", "vtbi"]] = "syringe"
#: Flag index -> normalised PumpAlarm code, for INAn flags whose meaning is verified. Empty:
#: the document names none, so every raised flag is "unclassified".
ALARM_FLAG_CODES: Mapping[int, str] = MappingProxyType({})
#: §5.2 pitfall 7: INRMT = 65535 means "not applicable".
INRMT_NOT_APPLICABLE: Final = 65535
INRMT_ZERO_MEANS_COMPLETE: Final = True
#: §5.3 unit code -> factor to mg/mL.
CONCENTRATION_TO_MG_ML: Mapping[int, float] = MappingProxyType({31: 1.0, 32: 1e-3})
BOLUS_VOLUME_PARAMETER: Final = "INBOVAL"

_ALARM_FLAG = re.compile(r"INA(\d+)\Z")
_DECIMAL = re.compile(r"-?\d+(\.\d+)?\Z")


def _number(value: str | None) -> float | None:
    """A §5 decimal value, or None for an absent value, ``_NV``/``_NA`` or anything that is
    not a plain decimal (so ``nan``/``inf`` text never becomes a number)."""
    if value is None or value in NO_VALUE_MARKERS or not _DECIMAL.match(value):
        return None
    return float(value)


def _flag_raised(value: str | None) -> bool:
    return value is not None and value not in NO_VALUE_MARKERS and value != "0"


def infer_run_state(
    rate: float | None, volume: float | None, remaining: int | None, alarmed: bool
) -> PumpRunState:
    """The run state from rate, volume and remaining time (see the module docstring: the
    document gives no confirmed status carrier, so this is an inference)."""
    if rate is None:
        return PumpRunState.UNKNOWN
    if rate > 0:
        return PumpRunState.RUNNING
    if alarmed:
        return PumpRunState.ALARM
    if INRMT_ZERO_MEANS_COMPLETE and remaining == 0 and volume is not None and volume > 0:
        return PumpRunState.COMPLETE
    return PumpRunState.STOPPED


def _quality(channel: Channel, value: float) -> Quality:
    lo, hi = CHANNELS[channel].plausible
    return Quality.OK if lo <= value <= hi else Quality.OUT_OF_RANGE


@dataclass
class _Slot:
    """What the host knows about the pump in one slot (latest raw value per parameter)."""

    code: str
    source: str
    values: dict[str, str | None] = field(default_factory=dict)
    rel_time: int | None = None
    pump_type: str | None = None
    present: bool = True
    infusion_id: int = 1
    last_volume: float | None = None
    event_alarms: tuple[PumpAlarm, ...] = ()
    touched: bool = False
    last_state: PumpState | None = None
    last_publish_us: int | None = None


class BBraunHost(HostProtocol):
    """Polls a SpaceStation rack with read-only BCC requests and maps the answers to pump
    states and readings, one pump per slot (module docstring, document §4-§6)."""

    protocol = "bbraun-bcc"
    serial_settings = SerialSettings(baudrate=9600)  # UNCERTAIN (§1): placeholder
    tick_interval_s: ClassVar[float] = 0.1
    stale_after_s: ClassVar[float] = 15.0

    def __init__(
        self,
        source: str = "pump",
        *,
        slot: str | None = None,
        poll_period_s: float = POLL_PERIOD_S,
        query_version: bool = True,
    ) -> None:
        super().__init__(source)
        lo, hi = POLL_PERIOD_RANGE_S
        if not lo <= poll_period_s <= hi:
            raise ValueError(f"poll period {poll_period_s} s outside {lo}-{hi} s (document §6)")
        if slot is not None:
            slot_address(slot)  # validates the pump index
        self.poll_command = GET if slot is None else f"MEM:GETSLOT#{slot}"
        self.poll_period_s = poll_period_s
        self.query_version = query_version
        self.codec = BBraunCodec(Role.HOST)
        self.bed_id = OPENING_BED_ID
        self.version: tuple[Quadruple, ...] | None = None
        self.rack: dict[str, str | None] = {}
        self.slots: dict[str, _Slot] = {}
        #: GNERR codes received, timeouts, unusable items: diagnostics, never raised.
        self.errors: Counter[str] = Counter()
        self._phase: Literal["closed", "opening", "open"] = "closed"
        self._pending: str | None = None
        self._pending_deadline_us = 0
        self._next_request_us = 0
        self._last_poll_us: int | None = None
        self._version_done = False

    # ---- lifecycle
    @property
    def associated(self) -> bool:
        return self._phase == "open"

    def connection_made(self, now_us: int) -> None:
        self.codec.reset()
        self.take_outgoing()  # bytes queued for a link that is gone are never sent
        self._open_session(now_us)

    def connection_lost(self) -> None:
        self.codec.reset()
        self._phase = "closed"
        self._pending = None

    def _open_session(self, now_us: int) -> None:
        self._phase = "opening"
        self.bed_id = OPENING_BED_ID
        self.version = None
        self._pending = None
        self._version_done = False
        self._last_poll_us = None
        self._request(ALIVE, now_us)

    # ---- sending
    def _request(self, command: str, now_us: int) -> None:
        if not is_allowed_request(command):  # the read-only guarantee, checked at the source
            raise ValueError(f"refusing to send {command!r} to a clinical pump")
        self.send(self.codec.encode(BccRequest(self.bed_id, command)))
        self._pending = command
        self._pending_deadline_us = now_us + round(RESPONSE_TIMEOUT_S * 1e6)
        if command == self.poll_command:
            self._last_poll_us = now_us

    def _schedule_after_answer(self, now_us: int) -> None:
        earliest = now_us + round(MIN_GAP_S * 1e6)
        if self._last_poll_us is not None:
            earliest = max(earliest, self._last_poll_us + round(self.poll_period_s * 1e6))
        self._next_request_us = earliest

    def tick(self, now_us: int) -> list[Message]:
        out: list[Message] = []
        if self._phase == "closed":
            return out
        if self._pending is not None and now_us >= self._pending_deadline_us:
            self.errors[f"timeout {self._pending}"] += 1
            was_alive = self._pending == ALIVE
            self._pending = None
            out += self._publish_touched(now_us)  # what the incomplete answer carried
            if was_alive:
                self._next_request_us = now_us  # retry ADMIN:ALIVE every RESPONSE_TIMEOUT_S
            else:
                self._schedule_after_answer(now_us)
        if (
            self._phase == "open"
            and self.last_frame_us is not None
            and now_us - self.last_frame_us >= SESSION_LOST_S * 1e6
        ):
            self.errors["session lost"] += 1
            self._open_session(now_us)
            return out
        if self._pending is None and now_us >= self._next_request_us:
            if self._phase == "opening":
                self._request(ALIVE, now_us)
            elif self.query_version and not self._version_done:
                self._version_done = True
                self._request(VERSION, now_us)
            else:
                self._request(self.poll_command, now_us)
        out += self._republish(now_us)
        return out

    # ---- receiving
    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        out: list[Message] = []
        for msg in self.codec.feed(data):
            if isinstance(msg, BccResponse):
                self.send(self.codec.encode(BccAck()))  # §2: ACK every valid frame at once
                self.last_frame_us = now_us
                out += self._on_frame(msg, now_us)
        return out

    def _on_frame(self, frame: BccResponse, now_us: int) -> list[Message]:
        out: list[Message] = []
        answered = self._pending
        for item in frame.items:
            if isinstance(item, Unparsed):
                self.errors["unparsed item"] += 1
                continue
            index = item.pump_index
            if index is None:
                self.errors["bad address"] += 1
            elif index == (0, 0):
                self._on_rack(item, frame, now_us)
            else:
                out += self._on_pump(self._slot(slot_code(*index)), item, now_us)
        if answered == VERSION:
            self.version = (self.version or ()) + frame.quadruples
        if frame.final:
            out += self._publish_touched(now_us)
            if answered is not None and (answered != ALIVE or self._phase == "open"):
                self._pending = None
                self._schedule_after_answer(now_us)
        return out

    def _on_rack(self, q: Quadruple, frame: BccResponse, now_us: int) -> None:
        if q.parameter == "GNACK":  # §4: the session is open; adopt the rack's bed ID
            self._phase = "open"
            self.bed_id = frame.bed_id
        elif q.parameter == "GNERR":
            self.errors[f"GNERR {q.value}"] += 1
        else:
            self.rack[q.parameter] = q.value

    def _slot(self, code: str) -> _Slot:
        slot = self.slots.get(code)
        if slot is None:
            slot = self.slots[code] = _Slot(code, f"{self.source}/slot{code}")
        return slot

    def _on_pump(self, slot: _Slot, q: Quadruple, now_us: int) -> list[Message]:
        slot.rel_time = q.rel_time
        device_t_us = q.rel_time * 1_000_000
        if q.parameter == "GNERR":
            return self._on_pump_error(slot, q, now_us)
        slot.present = True
        slot.touched = True
        if q.parameter == "GNNEW":  # §5.1: first report of a pump in this slot
            slot.pump_type = q.value
            return []
        slot.values[q.parameter] = q.value
        channel = {
            "INRT": Channel.PUMP_RATE,
            "INVI": Channel.VOLUME_INFUSED,
            "INVOLACT": Channel.VTBI if INVOLACT_MEANING == "vtbi" else None,
        }.get(q.parameter)
        value = _number(q.value)
        if q.parameter == "INVI" and value is not None:
            if slot.last_volume is not None and value < slot.last_volume:
                slot.infusion_id += 1  # volume went back: a new infusion started
            slot.last_volume = value
        if channel is None or value is None:
            return []
        return [
            Reading(
                channel,
                value,
                t_us=now_us,
                source=slot.source,
                device_t_us=device_t_us,
                quality=_quality(channel, value),
            )
        ]

    def _on_pump_error(self, slot: _Slot, q: Quadruple, now_us: int) -> list[Message]:
        code = q.value or ""
        self.errors[f"GNERR {code}"] += 1
        raw = f"GNERR,{code}"
        if code == str(BccError.PUMP_REMOVED.value):
            alarm = PumpAlarm("pump_removed", raw, "pump removed from its slot (GNERR 39)")
            return self._gone(slot, now_us, (alarm,), Quality.OK)
        if code == str(BccError.WRONG_ADDRESS.value):
            if slot.present and (slot.values or slot.last_state is not None):
                return self._gone(slot, now_us, (), Quality.INVALID)
            slot.present = False
            return []
        if code in (str(BccError.NO_DATA.value), str(BccError.SYNTAX.value)):
            return []
        slot.event_alarms = (
            *slot.event_alarms,
            PumpAlarm("unclassified", raw, "BCC error code not in the public documentation"),
        )
        slot.touched = True
        return []

    def _gone(
        self, slot: _Slot, now_us: int, alarms: tuple[PumpAlarm, ...], quality: Quality
    ) -> list[Message]:
        slot.present = False
        slot.values.clear()
        slot.touched = False
        state = PumpState(
            t_us=now_us,
            state=PumpRunState.UNKNOWN,
            alarms=alarms,
            infusion_id=slot.infusion_id,
            source=slot.source,
            device_t_us=None if slot.rel_time is None else slot.rel_time * 1_000_000,
            quality=quality,
        )
        slot.last_state = state
        slot.last_publish_us = now_us
        return [state]

    # ---- pump states
    def _state(self, slot: _Slot, now_us: int) -> PumpState:
        v = slot.values
        rate = _number(v.get("INRT"))
        volume = _number(v.get("INVI"))
        alarms: list[PumpAlarm] = []
        for param in sorted(v, key=lambda p: (len(p), p)):
            m = _ALARM_FLAG.match(param)
            if m and _flag_raised(v[param]):
                code = ALARM_FLAG_CODES.get(int(m.group(1)), "unclassified")
                text = "" if code != "unclassified" else "pump alarm (type unknown)"
                alarms.append(PumpAlarm(code, f"{param},{v[param]}", text))
        alarms += slot.event_alarms
        remaining_raw = v.get("INRMT")
        remaining = int(remaining_raw) if remaining_raw and remaining_raw.isdigit() else None
        conc = _number(v.get("INDCON"))
        unit = v.get("INDCONU")
        factor = CONCENTRATION_TO_MG_ML.get(int(unit)) if unit and unit.isdigit() else None
        concentration = conc * factor if conc and factor is not None else None  # 0 = not set
        drug = v.get("INSOL")
        quality = Quality.OK
        for ch, x in ((Channel.PUMP_RATE, rate), (Channel.VOLUME_INFUSED, volume)):
            if x is not None:
                quality |= _quality(ch, x)
        return PumpState(
            t_us=now_us,
            state=infer_run_state(rate, volume, remaining, bool(alarms)),
            rate_ml_h=rate,
            volume_infused_ml=volume,
            vtbi_ml=_number(v.get("INVOLACT")) if INVOLACT_MEANING == "vtbi" else None,
            bolus_ml=_number(v.get(BOLUS_VOLUME_PARAMETER)),
            drug=drug if drug and drug not in NO_VALUE_MARKERS else None,
            concentration_mg_ml=concentration,
            alarms=tuple(alarms),
            infusion_id=slot.infusion_id,
            source=slot.source,
            device_t_us=None if slot.rel_time is None else slot.rel_time * 1_000_000,
            quality=quality,
        )

    def _publish_touched(self, now_us: int) -> list[Message]:
        out: list[Message] = []
        for slot in self.slots.values():
            if slot.touched:
                slot.touched = False
                slot.last_state = self._state(slot, now_us)
                slot.event_alarms = ()  # events are reported once
                slot.last_publish_us = now_us
                out.append(slot.last_state)
        return out

    def _republish(self, now_us: int) -> list[Message]:
        """At least every PUMPSTATE_EVERY_S per present pump while frames still arrive, in
        case a rack answers only with changed parameters (not documented either way)."""
        if self.last_frame_us is None or now_us - self.last_frame_us > self.stale_after_s * 1e6:
            return []
        every = round(PUMPSTATE_EVERY_S * 1e6)
        for slot in self.slots.values():
            last = slot.last_publish_us
            if slot.present and slot.values and last is not None and now_us - last >= every:
                slot.touched = True
        return self._publish_touched(now_us)
