"""Philips IntelliVue Data Export over MIB/RS232: messages and codec.

Implements shared/protocols/philips-intellivue-mib.md. Layers, each in its own module:

* ``intellivue_framing``: BOF/EOF, FCS-16, byte stuffing (§1);
* ``intellivue_attributes``: FLOAT-Type, time, attribute values, poll info lists (§2.2, §5);
* ``intellivue_nomenclature``: the numeric codes (§2-§6);
* ``intellivue_session``: association, release, abort and the user info (§2.1, §3.1-§3.6);
* this module: the data-export remote operations (MDS create event report/result, single
  and extended polls and their results, errors; §2.2, §3.3-§3.4, §4) as frozen dataclasses,
  and ``IntellivueCodec``. All message classes are importable from here.

Both directions are framed alike and every message says what it is (SPDU type, ro_type,
command, action), so one codec decodes either direction and ``Role`` changes nothing.
A frame whose FCS is good but whose content contradicts its own length fields is counted as
a ``format`` error; a well-formed operation this module does not model (a GET, a SET
result, another event) is passed on as ``RemoteOperation`` with its raw bytes, never
dropped.

Choices where the document is uncertain (each in one named constant):

* ``ROER`` carries ``error_value`` (OpenICE's layout, §2.2 [?]).
* ``SESSION_ID``/``P_CONTEXT_ID``: encoded as ``E1 00 00 02``; on decoding only the
  ``E1 00`` session id is required (§2.2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from .base import Codec, Role
from .intellivue_attributes import (
    ABS_TIME_UNSET,
    AbsoluteTime,
    Ava,
    DecodeError,
    ManagedObjectId,
    Reader,
    SingleContextPoll,
    TypeId,
    abs_bytes,
    decode_attribute_list,
    encode_attribute_list,
    mo_bytes,
    poll_info_list_bytes,
    read_abs,
    read_mo,
    read_poll_info_list,
    read_type,
    type_bytes,
    u16,
    u32,
)
from .intellivue_framing import Deframer, frame
from .intellivue_nomenclature import (
    CMD_CONFIRMED_ACTION,
    CMD_CONFIRMED_EVENT_REPORT,
    CMD_EVENT_REPORT,
    DATA_EXPORT,
    NOM_ACT_POLL_MDIB_DATA,
    NOM_ACT_POLL_MDIB_DATA_EXT,
    NOM_MOC_VMS_MDS,
    NOM_NOTI_MDS_CREAT,
    ROER,
    ROIV,
    ROLRS,
    RORS,
)
from .intellivue_session import (
    SESSION_SPDUS,
    Abort,
    AssociationRefuse,
    AssociationRequest,
    AssociationResult,
    MdibObjectSupport,
    PollProfileSupport,
    ReleaseRequest,
    ReleaseResult,
    SessionMessage,
    UserInfo,
    decode_session,
    encode_session,
)

__all__ = [
    "MDS_OBJECT",
    "Abort",
    "AssociationRefuse",
    "AssociationRequest",
    "AssociationResult",
    "EventReport",
    "EventReportResult",
    "IntellivueCodec",
    "IntellivueMessage",
    "LinkedState",
    "MdibObjectSupport",
    "MdsCreateEventReport",
    "PollProfileSupport",
    "PollRequest",
    "PollResult",
    "ReleaseRequest",
    "ReleaseResult",
    "RemoteError",
    "RemoteOperation",
    "UserInfo",
    "decode_user_data",
    "encode_user_data",
]

MDS_OBJECT = ManagedObjectId(NOM_MOC_VMS_MDS, 0, 0)
SESSION_ID = 0xE100  # §2.2
P_CONTEXT_ID = 0x0002

# --------------------------------------------------------------------------- data export


@dataclass(frozen=True, slots=True)
class MdsCreateEventReport:
    """ROIV CONFIRMED_EVENT_REPORT NOM_NOTI_MDS_CREAT (§3.3), monitor -> client. The
    attributes usually carry NOM_ATTR_TIME_ABS and NOM_ATTR_TIME_REL (the time reference)."""

    invoke_id: int
    event_time: int
    attributes: tuple[Ava, ...]
    managed_object: ManagedObjectId = MDS_OBJECT
    created_object: ManagedObjectId = MDS_OBJECT


@dataclass(frozen=True, slots=True)
class EventReport:
    """Any other ROIV (CONFIRMED_)EVENT_REPORT; ``info`` is the event's raw argument."""

    invoke_id: int
    confirmed: bool
    managed_object: ManagedObjectId
    event_time: int
    event_type: int
    info: bytes = b""


@dataclass(frozen=True, slots=True)
class EventReportResult:
    """RORS CONFIRMED_EVENT_REPORT (§3.4): the MDS Create Event Result when ``event_type``
    is NOM_NOTI_MDS_CREAT."""

    invoke_id: int
    current_time: int
    event_type: int = NOM_NOTI_MDS_CREAT
    managed_object: ManagedObjectId = MDS_OBJECT
    info: bytes = b""


@dataclass(frozen=True, slots=True)
class PollRequest:
    """ROIV CONFIRMED_ACTION NOM_ACT_POLL_MDIB_DATA(_EXT) (§4.1). ``ext_attributes`` (e.g.
    NOM_ATTR_TIME_PD_POLL) exist only on extended polls."""

    invoke_id: int
    poll_number: int
    obj_type: TypeId
    attr_group: int = 0
    extended: bool = False
    ext_attributes: tuple[Ava, ...] = ()
    managed_object: ManagedObjectId = MDS_OBJECT
    scope: int = 0


@dataclass(frozen=True, slots=True)
class LinkedState:
    """ROLRS header fields (§2.2): state 1 first, 2 middle, 3 last; count per message."""

    state: int
    count: int


@dataclass(frozen=True, slots=True)
class PollResult:
    """A (linked) poll result (§4.4): RORS, or ROLRS when ``linked`` is set.
    ``sequence_no`` exists only in extended results."""

    invoke_id: int
    poll_number: int
    rel_time: int
    obj_type: TypeId
    contexts: tuple[SingleContextPoll, ...]
    extended: bool = False
    sequence_no: int | None = None
    abs_time: AbsoluteTime = ABS_TIME_UNSET
    attr_group: int = 0
    linked: LinkedState | None = None
    managed_object: ManagedObjectId = MDS_OBJECT


@dataclass(frozen=True, slots=True)
class RemoteError:
    """ROER (§2.2): ``error_value`` e.g. 2 access denied, 5 no such attribute."""

    invoke_id: int
    error_value: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RemoteOperation:
    """A well-formed data-export message of a kind this module does not model; ``data`` is
    everything after the ROapdus header, kept so nothing is lost."""

    ro_type: int
    data: bytes


SESSION_TYPES = (
    AssociationRequest,
    AssociationResult,
    AssociationRefuse,
    ReleaseRequest,
    ReleaseResult,
    Abort,
)

IntellivueMessage = (
    SessionMessage
    | MdsCreateEventReport
    | EventReport
    | EventReportResult
    | PollRequest
    | PollResult
    | RemoteError
    | RemoteOperation
)

# --------------------------------------------------------------------------- data export


def _roap(ro_type: int, body: bytes) -> bytes:
    return u16(SESSION_ID) + u16(P_CONTEXT_ID) + u16(ro_type) + u16(len(body)) + body


def _apdu(invoke_id: int, command: int, arg: bytes) -> bytes:
    return u16(invoke_id) + u16(command) + u16(len(arg)) + arg


def _poll_result_bytes(m: PollResult) -> bytes:
    action = NOM_ACT_POLL_MDIB_DATA_EXT if m.extended else NOM_ACT_POLL_MDIB_DATA
    if m.extended != (m.sequence_no is not None):
        raise ValueError("sequence_no must be set exactly on extended poll results")
    reply = (
        u16(m.poll_number)
        + (u16(m.sequence_no) if m.sequence_no is not None else b"")
        + u32(m.rel_time)
        + abs_bytes(m.abs_time)
        + type_bytes(m.obj_type)
        + u16(m.attr_group)
        + poll_info_list_bytes(m.contexts)
    )
    result = mo_bytes(m.managed_object) + u16(action) + u16(len(reply)) + reply
    apdu = _apdu(m.invoke_id, CMD_CONFIRMED_ACTION, result)
    if m.linked is None:
        return _roap(RORS, apdu)
    return _roap(ROLRS, bytes((m.linked.state, m.linked.count)) + apdu)


def _encode_export(m: IntellivueMessage) -> bytes:
    if isinstance(m, PollRequest):
        if not m.extended and m.ext_attributes:
            raise ValueError("a single poll has no extended attributes")
        arg = u16(m.poll_number) + type_bytes(m.obj_type) + u16(m.attr_group)
        if m.extended:
            arg += encode_attribute_list(m.ext_attributes)
        action = NOM_ACT_POLL_MDIB_DATA_EXT if m.extended else NOM_ACT_POLL_MDIB_DATA
        body = mo_bytes(m.managed_object) + u32(m.scope) + u16(action) + u16(len(arg)) + arg
        return _roap(ROIV, _apdu(m.invoke_id, CMD_CONFIRMED_ACTION, body))
    if isinstance(m, PollResult):
        return _poll_result_bytes(m)
    if isinstance(m, MdsCreateEventReport):
        info = mo_bytes(m.created_object) + encode_attribute_list(m.attributes)
        body = (
            mo_bytes(m.managed_object)
            + u32(m.event_time)
            + u16(NOM_NOTI_MDS_CREAT)
            + u16(len(info))
            + info
        )
        return _roap(ROIV, _apdu(m.invoke_id, CMD_CONFIRMED_EVENT_REPORT, body))
    if isinstance(m, EventReport):
        if m.confirmed and m.event_type == NOM_NOTI_MDS_CREAT:
            raise ValueError("use MdsCreateEventReport for NOM_NOTI_MDS_CREAT")
        body = (
            mo_bytes(m.managed_object)
            + u32(m.event_time)
            + u16(m.event_type)
            + u16(len(m.info))
            + m.info
        )
        cmd = CMD_CONFIRMED_EVENT_REPORT if m.confirmed else CMD_EVENT_REPORT
        return _roap(ROIV, _apdu(m.invoke_id, cmd, body))
    if isinstance(m, EventReportResult):
        body = (
            mo_bytes(m.managed_object)
            + u32(m.current_time)
            + u16(m.event_type)
            + u16(len(m.info))
            + m.info
        )
        return _roap(RORS, _apdu(m.invoke_id, CMD_CONFIRMED_EVENT_REPORT, body))
    if isinstance(m, RemoteError):
        return _roap(ROER, _apdu(m.invoke_id, m.error_value, m.data))
    if isinstance(m, RemoteOperation):
        return _roap(m.ro_type, m.data)
    raise TypeError(f"not an IntelliVue message: {m!r}")


def _decode_action_arg(invoke: int, r: Reader) -> IntellivueMessage | None:
    mo = read_mo(r)
    scope = r.u32()
    action = r.u16()
    if action not in (NOM_ACT_POLL_MDIB_DATA, NOM_ACT_POLL_MDIB_DATA_EXT):
        return None
    a = r.sub(r.u16())
    r.done()
    ext = action == NOM_ACT_POLL_MDIB_DATA_EXT
    pn, ot, grp = a.u16(), read_type(a), a.u16()
    attrs = decode_attribute_list(a) if ext else ()
    a.done()
    return PollRequest(invoke, pn, ot, grp, ext, attrs, mo, scope)


def _decode_action_result(
    invoke: int, r: Reader, linked: LinkedState | None
) -> IntellivueMessage | None:
    mo = read_mo(r)
    action = r.u16()
    if action not in (NOM_ACT_POLL_MDIB_DATA, NOM_ACT_POLL_MDIB_DATA_EXT):
        return None
    a = r.sub(r.u16())
    r.done()
    ext = action == NOM_ACT_POLL_MDIB_DATA_EXT
    pn = a.u16()
    seq = a.u16() if ext else None
    rel = a.u32()
    abs_t = read_abs(a)
    ot, grp = read_type(a), a.u16()
    contexts = read_poll_info_list(a)
    a.done()
    return PollResult(invoke, pn, rel, ot, contexts, ext, seq, abs_t, grp, linked, mo)


def _decode_event(invoke: int, cmd: int, r: Reader) -> IntellivueMessage:
    mo = read_mo(r)
    t, etype = r.u32(), r.u16()
    info = r.sub(r.u16())
    r.done()
    if cmd == CMD_CONFIRMED_EVENT_REPORT and etype == NOM_NOTI_MDS_CREAT:
        created = read_mo(info)
        attrs = decode_attribute_list(info)
        info.done()
        return MdsCreateEventReport(invoke, t, attrs, mo, created)
    return EventReport(
        invoke, cmd == CMD_CONFIRMED_EVENT_REPORT, mo, t, etype, info.take(info.remaining)
    )


def _decode_export(r: Reader) -> IntellivueMessage:
    if r.u16() != SESSION_ID:
        raise DecodeError("session id")
    r.u16()  # presentation context id
    ro_type, n = r.u16(), r.u16()
    if n != r.remaining:
        raise DecodeError(f"ROapdus length {n} != {r.remaining}")
    start = r.pos
    raw = RemoteOperation(ro_type, bytes(r.data[start : r.end]))
    linked = None
    if ro_type == ROLRS:
        linked = LinkedState(r.u8(), r.u8())
    if ro_type in (ROIV, RORS, ROLRS):
        invoke, cmd = r.u16(), r.u16()
        body = r.sub(r.u16())
        r.done()
        msg: IntellivueMessage | None = None
        if ro_type == ROIV and cmd == CMD_CONFIRMED_ACTION:
            msg = _decode_action_arg(invoke, body)
        elif ro_type == ROIV and cmd in (CMD_EVENT_REPORT, CMD_CONFIRMED_EVENT_REPORT):
            msg = _decode_event(invoke, cmd, body)
        elif cmd == CMD_CONFIRMED_ACTION:
            msg = _decode_action_result(invoke, body, linked)
        elif ro_type == RORS and cmd == CMD_CONFIRMED_EVENT_REPORT:
            mo = read_mo(body)
            t, etype = body.u32(), body.u16()
            info = body.take(body.u16())
            body.done()
            msg = EventReportResult(invoke, t, etype, mo, info)
        return raw if msg is None else msg
    if ro_type == ROER:
        invoke, err = r.u16(), r.u16()
        data = r.take(r.u16())
        r.done()
        return RemoteError(invoke, err, data)
    return raw


def decode_user_data(data: bytes) -> IntellivueMessage:
    """One session-layer message (the user data of one frame). Raises DecodeError when the
    bytes contradict their own structure."""
    r = Reader(bytes(data))
    first = r.u8()
    if first == DATA_EXPORT:
        return _decode_export(Reader(bytes(data)))
    if first in SESSION_SPDUS:
        return decode_session(first, r)
    raise DecodeError(f"unknown SPDU type 0x{first:02X}")


def encode_user_data(m: IntellivueMessage) -> bytes:
    """The unframed user data of one message."""
    if isinstance(m, SESSION_TYPES):
        return encode_session(m)
    return _encode_export(m)


class IntellivueCodec(Codec):
    """Bytes <-> IntelliVue messages, incremental (CONVENTIONS 1). ``feed`` never raises:
    framing errors are counted by the deframer, content errors as ``format``."""

    protocol: ClassVar[str] = "intellivue"
    document: ClassVar[str] = "philips-intellivue-mib.md"

    def __init__(self, role: Role = Role.HOST) -> None:
        super().__init__(role)
        self._deframer = Deframer(self.stats)

    def feed(self, data: bytes) -> list[IntellivueMessage]:
        self.stats.bytes_in += len(data)
        out: list[IntellivueMessage] = []
        for block in self._deframer.feed(data):
            try:
                msg = decode_user_data(block)
            except (DecodeError, ValueError, struct.error):
                self.stats.error("format")
                continue
            except Exception:  # a decoder bug must not kill a reader thread (CONVENTIONS 1)
                self.stats.error("internal")
                continue
            self.stats.frames += 1
            out.append(msg)
        return out

    def encode(self, message: IntellivueMessage) -> bytes:
        return frame(encode_user_data(message))

    def reset(self) -> None:
        self._deframer.reset()
