"""Simulated B. Braun SpaceStation rack (SpaceCom, BCC server side), sans-I/O.

Plays shared/protocols/bbraun-bcc.md from the rack's end: one or more pumps, each a
``PumpFeed`` in a slot (``slot`` for the main feed, ``extra_pumps`` for more), answering
the §4 requests with §5 quadruples framed as in §2-§3:

* ``ADMIN:ALIVE`` -> ``<rel>,50100,GNACK,0`` with the rack's own bed ID (§4, §7.1).
* ``ADMIN:VERSION`` -> one quadruple whose parameter is the version text and has no value
  (the open simulator's form, §4; the real form is UNCERTAIN).
* ``MEM:GET`` -> the rack parameters plus every pump, one frame per pump, all but the last
  ending in ETB (§2, the layout of the real capture); ``GNERR,11`` when no pump is in the
  rack (§5.1).
* ``MEM:GETSLOT#ps`` -> that pump in one frame, or ``GNERR,811`` at the asked address
  (§5.1, §7.3); any other request -> ``GNERR,68`` at ``50100`` (§5.1).

Each pump reports the §5.2 parameter set in the captured order; ``GNNEW`` precedes a pump's
data the first time it is reported in a session (after each ``ADMIN:ALIVE``), and a removed
pump (``remove_pump``) is announced once with ``GNERR,39`` at its address (§7.4). The values
that the host interprets come from the feed: ``INRT`` rate, ``INVI`` volume, ``INVOLACT``
per ``INVOLACT_MEANING`` (syringe volume left, the host's choice), ``INRMT`` remaining time
in seconds (0 when complete, 65535 when not applicable), ``INSOL`` drug, ``INDCON``/
``INDCONU`` concentration in mg/mL (unit 31). Values the host does not interpret
(``DSSTATUS``, ``INMn``, rack ``FM*``) copy the patterns of the real capture.

Simulator choices where the document is silent (none of them is a claim about real racks):

* ``PEER_WAITS_FOR_ACK``: the next part of a multi-part answer is sent only after the ACK
  of the previous one (the real capture's test feeds parts one ACK at a time); a part not
  ACKed within ``ACK_TIMEOUT_S`` abandons the answer, a NAK resends the part.
* ``SIM_ALARM_FLAGS``: a feed alarm raises an ``INAn`` flag chosen here (occlusion ->
  ``INA3``, as §7.4's example; §7.4 allows any flag until the mapping is verified).
* ``INRMT_UNIT_S``: the unit of ``INRMT`` is UNCERTAIN (§5.2); the simulator uses seconds.

Test hooks (a separate channel, never BCC, §8): ``silent`` (stop answering),
``remove_pump``/``insert_pump``. The peer records every request and any breach of the §6
rules by the host (request before the answer was complete, or sooner than 500 ms after it)
in ``requests`` and ``violations``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import ClassVar, Final

from kapmonitor.model import PumpRunState, PumpState

from ...codecs.base import Role
from ...codecs.bbraun import (
    BBraunCodec,
    BccAck,
    BccNak,
    BccRequest,
    BccResponse,
    Quadruple,
    slot_address,
)
from ...devices.bbraun import INRMT_NOT_APPLICABLE, INVOLACT_MEANING, MIN_GAP_S
from ...protocol import PeerProtocol
from ..feed import PumpFeed, stopping_alarms

__all__ = ["BBraunPeer"]

PEER_WAITS_FOR_ACK: Final = True
ACK_TIMEOUT_S: Final = 5.0
INRMT_UNIT_S: Final = 1.0
#: Feed alarm code -> INAn flag index (simulator only, see the module docstring).
SIM_ALARM_FLAGS: Mapping[str, int] = {"occlusion": 3, "air_in_line": 4, "near_end": 5, "end": 7}
SIM_ALARM_FLAG_DEFAULT: Final = 1
#: Flags and mode flags that were ``_NV`` on every pump of the real capture (§5.2).
_NV_FLAGS: Final = frozenset({6, 10, 13})
_NV_MODES: Final = frozenset({4, 9})
#: Mode flags that were 1 on the running pumps / on the idle pump of the real capture.
_MODES_RUNNING: Final = frozenset({3, 5, 8})
_MODES_IDLE: Final = frozenset({1, 8})
#: Rack parameters as in the real capture (meanings unknown, §5.2).
RACK_PARAMETERS: Final = (
    ("FMNOR", "1"),
    ("FMSTAT", "00051"),
    ("FMDONGLE", "T"),
    ("FMBANY", "_NV"),
    ("FMRT", "FMS1NSNS"),
    ("FMRSTAT", "00051"),
)
PUMP_TYPE: Final = "688F030006"  # Perfusor Space, as in the capture's GNNEW
RACK: Final = "50100"
_GETSLOT = re.compile(r"MEM:GETSLOT#(..)\Z")


def _fmt(x: float | None, decimals: int) -> str:
    return "_NV" if x is None else f"{x:.{decimals}f}"


class BBraunPeer(PeerProtocol):
    """A SpaceStation rack with one pump per slot, answering BCC requests (module doc)."""

    protocol = "bbraun-bcc"
    tick_interval_s: ClassVar[float] = 0.1

    def __init__(
        self,
        feed: PumpFeed,
        *,
        seed: int = 0,
        slot: str = "11",
        extra_pumps: Mapping[str, PumpFeed] | None = None,
        bed_id: str = "KAPBED1",
        syringe_ml: float = 50.0,
        version: str = "V3.30",
        stuffing: bool = False,
    ) -> None:
        super().__init__()
        self.codec = BBraunCodec(Role.DEVICE, stuffing=stuffing)
        self.pumps: dict[str, PumpFeed] = {}
        for code, f in {slot: feed, **(extra_pumps or {})}.items():
            slot_address(code)  # validates the slot code
            self.pumps[code] = f
        self.bed_id = bed_id
        self.syringe_ml = syringe_ml
        self.version = version
        self.silent = False
        self.requests: list[BccRequest] = []
        self.violations: list[str] = []
        self.acks = 0
        self._rng = random.Random(seed)
        self._clock0_s = self._rng.randrange(1_000, 100_000)  # the rack's uptime at start
        self._t0_us: int | None = None
        self._identity: dict[str, tuple[str, str]] = {}
        self._announced: set[str] = set()
        self._events: list[Quadruple] = []
        self._run_s: dict[str, float] = {}
        self._last_seen: dict[str, tuple[int, PumpRunState]] = {}
        self._parts: list[bytes] = []
        self._awaiting: bytes | None = None
        self._sent_at_us = 0
        self._answer_end_us: int | None = None

    # ---- test hooks (not BCC)
    def remove_pump(self, code: str) -> None:
        """Take the pump out of its slot: the next answer carries ``GNERR,39`` (§5.1)."""
        del self.pumps[code]
        self._announced.discard(code)
        self._events.append(Quadruple(0, slot_address(code), "GNERR", "39"))

    def insert_pump(self, code: str, feed: PumpFeed) -> None:
        """Put a pump into a slot: its next report starts with ``GNNEW`` (§5.1)."""
        slot_address(code)
        self.pumps[code] = feed
        self._announced.discard(code)

    # ---- lifecycle
    def connection_made(self, now_us: int) -> None:
        if self._t0_us is None:
            self._t0_us = now_us
        self.codec.reset()
        self._parts = []
        self._awaiting = None
        self._answer_end_us = None

    def connection_lost(self) -> None:
        self.codec.reset()
        self._parts = []
        self._awaiting = None

    def _rel(self, now_us: int) -> int:
        """relTime: seconds on the rack's own clock (§5)."""
        t0 = self._t0_us if self._t0_us is not None else now_us
        return self._clock0_s + (now_us - t0) // 1_000_000

    # ---- receiving
    def data_received(self, data: bytes, now_us: int) -> None:
        if self.silent:
            return
        for msg in self.codec.feed(data):
            if isinstance(msg, BccAck):
                self.acks += 1
                self._on_ack(now_us)
            elif isinstance(msg, BccNak) and self._awaiting is not None:
                self.send(self._awaiting)
            elif isinstance(msg, BccRequest):
                self._on_request(msg, now_us)

    def tick(self, now_us: int) -> None:
        if self._awaiting is not None and now_us - self._sent_at_us > ACK_TIMEOUT_S * 1e6:
            self._awaiting = None  # no ACK: abandon the rest of the answer
            self._parts = []
            self._answer_end_us = now_us

    def _on_ack(self, now_us: int) -> None:
        if self._awaiting is None:
            self.violations.append("ACK without a frame to acknowledge")
            return
        self._awaiting = None
        if self._parts:
            self._send_part(self._parts.pop(0), now_us)
        else:
            self._answer_end_us = now_us

    def _send_part(self, frame: bytes, now_us: int) -> None:
        self.send(frame)
        self._awaiting = frame
        self._sent_at_us = now_us

    def _on_request(self, req: BccRequest, now_us: int) -> None:
        self.requests.append(req)
        if self._awaiting is not None or self._parts:
            self.violations.append(f"{req.command} before the previous answer was complete")
            self._parts = []
            self._awaiting = None
        elif self._answer_end_us is not None and now_us - self._answer_end_us < MIN_GAP_S * 1e6:
            self.violations.append(f"{req.command} less than 500 ms after the previous answer")
        groups = self._answer(req, now_us)
        frames = [
            self.codec.encode(BccResponse(self.bed_id, tuple(g), final=i == len(groups) - 1))
            for i, g in enumerate(groups)
        ]
        if PEER_WAITS_FOR_ACK:
            self._parts = frames[1:]
            self._send_part(frames[0], now_us)
        else:  # pragma: no cover - alternative behaviour kept for experiments
            for f in frames:
                self.send(f)

    # ---- answers
    def _answer(self, req: BccRequest, now_us: int) -> list[list[Quadruple]]:
        rel = self._rel(now_us)
        cmd = req.command
        if cmd == "ADMIN:ALIVE":
            self._announced.clear()  # a new session: every pump is new again
            return [[Quadruple(rel, RACK, "GNACK", "0")]]
        if cmd == "ADMIN:VERSION":
            return [[Quadruple(rel, RACK, self.version, None)]]
        events = [Quadruple(rel, q.address, q.parameter, q.value) for q in self._events]
        if cmd == "MEM:GET":
            self._events.clear()
            if not self.pumps:
                return [[*events, Quadruple(rel, RACK, "GNERR", "11")]]
            rack = [Quadruple(rel, RACK, p, v) for p, v in RACK_PARAMETERS]
            groups = [self._pump_items(code, rel, now_us) for code in sorted(self.pumps)]
            groups[0] = rack + events + groups[0]
            return groups
        m = _GETSLOT.match(cmd)
        if m is None:
            return [[Quadruple(rel, RACK, "GNERR", "68")]]
        code = m.group(1)
        if code not in self.pumps:
            return [[Quadruple(rel, "501" + code, "GNERR", "811")]]
        self._events = [e for e in self._events if e.address != "501" + code]
        mine = [e for e in events if e.address == "501" + code]
        return [mine + self._pump_items(code, rel, now_us)]

    def _pump_items(self, code: str, rel: int, now_us: int) -> list[Quadruple]:
        st: PumpState = self.pumps[code].pump(now_us)
        addr = slot_address(code)
        items: list[Quadruple] = []

        def q(parameter: str, value: str | None) -> None:
            items.append(Quadruple(rel, addr, parameter, value))

        if code not in self._announced:
            self._announced.add(code)
            q("GNNEW", PUMP_TYPE)
        running = st.state in (PumpRunState.RUNNING, PumpRunState.BOLUS)
        self._account_run_time(code, st.state, now_us)
        nr, sernum = self._ids(code)
        volume = st.volume_infused_ml
        if INVOLACT_MEANING == "vtbi":
            left = st.vtbi_ml
        else:
            left = None if volume is None else max(0.0, self.syringe_ml - volume)
        drug = st.drug
        q("INRT", _fmt(st.rate_ml_h, 2))
        q("INSOL", drug or "_NV")
        q("INSOLSN", drug[:7] if drug else "_NV")
        q("INSOLID", "_NV")
        q("INVOLACT", _fmt(left, 2))
        q("INRMT", str(self._remaining_time(st)))
        q("INDOCAL", "0")
        q("INDCON", _fmt(st.concentration_mg_ml, 2) if st.concentration_mg_ml else "0")
        q("INDCONU", "31")  # §5.3: mg/mL
        q("INDORT", "0")
        q("INDORTU", "69")  # §5.3: mg/kg/h
        q("INVI", _fmt(volume, 2))
        q("INTIME", str(int(self._run_s.get(code, 0.0) // 60)))
        q("INBORT", "800.00")
        q("INNR", nr)
        q("INP1", "4")
        q("INP2", "35" if running else "0")
        q("INSYR", f"{self.syringe_ml:.0f}")
        q("INSTBY", "0")
        q("INSERNUM", sernum)
        q("INDTNR", "6144")
        q("DSSTATUS", "00051" if running else "00050")
        q("INBOVAL", _fmt(st.bolus_ml or 0.0, 1))
        q("INBOCNT", "0")
        modes = _MODES_RUNNING if running else _MODES_IDLE
        for n in range(1, 13):
            q(f"INM{n}", "_NV" if n in _NV_MODES else str(int(n in modes)))
        raised = {SIM_ALARM_FLAGS.get(a.code, SIM_ALARM_FLAG_DEFAULT)
                  for a in stopping_alarms(st.alarms)}
        for n in range(1, 16):
            q(f"INA{n}", "_NV" if n in _NV_FLAGS else str(int(n in raised)))
        return items

    def _remaining_time(self, st: PumpState) -> int:
        """INRMT: 0 at the end of the programme, seconds left while running with a VTBI,
        else the "not applicable" sentinel (§5.2, pitfall 7)."""
        if st.state is PumpRunState.COMPLETE:
            return 0
        rate, left = st.rate_ml_h, st.vtbi_ml
        if st.state is PumpRunState.RUNNING and rate and left is not None:
            return min(INRMT_NOT_APPLICABLE - 1, round(left / rate * 3600 / INRMT_UNIT_S))
        return INRMT_NOT_APPLICABLE

    def _account_run_time(self, code: str, state: PumpRunState, now_us: int) -> None:
        last = self._last_seen.get(code)
        if last is not None and last[1] is PumpRunState.RUNNING:
            self._run_s[code] = self._run_s.get(code, 0.0) + (now_us - last[0]) / 1e6
        self._last_seen[code] = (now_us, state)

    def _ids(self, code: str) -> tuple[str, str]:
        ident = self._identity.get(code)
        if ident is None:
            ident = (f"6000{self._rng.randrange(0x10000):04X}", str(self._rng.randrange(1, 99999)))
            self._identity[code] = ident
        return ident
