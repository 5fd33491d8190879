"""Session layer of Philips IntelliVue Data Export: association, release, abort.

Implements shared/protocols/philips-intellivue-mib.md §2.1 and §3.1-§3.2, §3.6: the
CN/AC/RF/FN/DN/AB SPDUs, their session parameters and presentation blocks, and the
MDSEUserInfoStd inside association request and result (poll profile, MDIB object
support). Kept apart from the data-export operations in ``intellivue.py`` because this
part is a fixed ASN.1 envelope around one small structure, while the other is the
attribute-list machinery.

Choices where the document is uncertain:

* ``PRES_HEADER_ACCEPT``: the Association Result presentation header is OpenICE's (§3.2 [?];
  real monitor bytes are not verified). Decoding does not depend on it: the user info is
  found by its BER length and the 16-byte trailer, whatever header precedes it.
* ``AssociationRefuse`` keeps its body raw: the document gives no layout for RF_SPDU.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .intellivue_attributes import (
    NOM_ATTR_POLL_PROFILE_EXT,
    Ava,
    DecodeError,
    Reader,
    TypeId,
    ava_bytes,
    decode_attribute_list,
    encode_attribute_list,
    read_type,
    type_bytes,
    u16,
    u32,
)
from .intellivue_nomenclature import AB_SPDU, AC_SPDU, CN_SPDU, DN_SPDU, FN_SPDU, RF_SPDU

__all__ = [
    "SESSION_SPDUS",
    "Abort",
    "AssociationRefuse",
    "AssociationRequest",
    "AssociationResult",
    "MdibObjectSupport",
    "PollProfileSupport",
    "ReleaseRequest",
    "ReleaseResult",
    "SessionMessage",
    "UserInfo",
    "decode_session",
    "encode_session",
    "monitor_timeout_s",
]

SESSION_SPDUS = frozenset((CN_SPDU, AC_SPDU, RF_SPDU, FN_SPDU, DN_SPDU, AB_SPDU))


#: Session parameters of request/accept (§2.1): fixed.
SESSION_PARAMS = bytes.fromhex("0508130100160102800014020002")
#: Presentation header of the Association Request (§3.1, §9), 131 bytes ending in tag 0x81.
PRES_HEADER_REQUEST = bytes.fromhex(
    "3180a0808001010000a280a003000001a4803080020101060452010001308006025101000000003080020102"
    "060c2a8648ce14020100000001013080060c2a8648ce140201000000020100000000000061803080020101a0"
    "806080a180060c2a8648ce14020100000003010000be802880060c2a8648ce140201000000010102010281"
)
#: Presentation header of the Association Result: OpenICE's (§3.2 [?]), ends ``BE 80 28 80
#: 02 01 02 81`` as the document says.
PRES_HEADER_ACCEPT = bytes.fromhex(
    "3180a0808001010000a280a003000001a58030808001008102510100003080800100810c2a8648ce14020100"
    "000002010000000061803080020101a0806180a180060c2a8648ce14020100000003010000a203020100a305"
    "a103020100be80288002010281"
)
PRES_TRAILER = bytes(16)  # §3.1
#: Release Request (§3.6), verified against two implementations by the document.
RELEASE_REQUEST = bytes.fromhex(
    "09 18 C1 16 61 80 30 80 02 01 01 A0 80 62 80 80 01 00 00 00 00 00 00 00 00 00"
)
#: Release Result (§3.6): the request with 0A first and 63 in place of 62.
RELEASE_RESULT = bytes.fromhex(
    "0A 18 C1 16 61 80 30 80 02 01 01 A0 80 63 80 80 01 00 00 00 00 00 00 00 00 00"
)
#: Abort (§3.6), 48 bytes.
ABORT = bytes.fromhex(
    "19 2E 11 01 03 C1 29 A0 80 A0 80 30 80 02 01 01 06 02 51 01 00 00 00 00 61 80 30 80"
    "02 01 01 A0 80 64 80 80 01 01 00 00 00 00 00 00 00 00 00 00"
)

# PollProfileSupport and user-info constants (§3.1)
POLL_PROFILE_REV_0 = 0x80000000
MDDL_VERSION1 = 0x80000000
NOMEN_VERSION = 0x40000000
SYST_CLIENT = 0x80000000
COLD_START = 0x20000000
NOM_POLL_PROFILE_SUPPORT = 0x0001
NOM_MDIB_OBJ_SUPPORT = 0x0102


def _li(n: int) -> bytes:
    """Session length indicator (§2.1): one byte below 255, else FF hi lo."""
    return bytes((n,)) if n < 255 else b"\xff" + u16(n)


def _read_li(r: Reader) -> int:
    n = r.u8()
    return r.u16() if n == 0xFF else n


def _ber(n: int) -> bytes:
    """BER length as the document's implementations write it (§2.1, §9): 128 -> 82 00 80."""
    if n < 0x80:
        return bytes((n,))
    k = n.bit_length() // 8 + 1
    return bytes((0x80 | k,)) + n.to_bytes(k, "big")


@dataclass(frozen=True, slots=True)
class PollProfileSupport:
    """PollProfileSupport (§3.1). Times are RelativeTime ticks (125 us); ``ext_options``
    is the NOM_ATTR_POLL_PROFILE_EXT option word, None when that package is absent."""

    min_poll_period: int
    max_mtu_rx: int
    max_mtu_tx: int
    max_bw_tx: int = 0xFFFFFFFF
    options: int = 0x60000000
    ext_options: int | None = None
    ext_attributes: tuple[Ava, ...] = ()
    revision: int = POLL_PROFILE_REV_0
    other_packages: tuple[Ava, ...] = ()


@dataclass(frozen=True, slots=True)
class MdibObjectSupport:
    """One NOM_MDIB_OBJ_SUPPORT entry (§3.1): an object class and its max instances."""

    obj_type: TypeId
    max_inst: int


@dataclass(frozen=True, slots=True)
class UserInfo:
    """MDSEUserInfoStd (§3.1): what the client asks for, or what the monitor grants."""

    poll_profile: PollProfileSupport | None
    mdib_support: tuple[MdibObjectSupport, ...] | None = None
    protocol_version: int = MDDL_VERSION1
    nomenclature_version: int = NOMEN_VERSION
    functional_units: int = 0
    system_type: int = SYST_CLIENT
    startup_mode: int = COLD_START
    option_list: tuple[Ava, ...] = ()
    other_profiles: tuple[Ava, ...] = ()


@dataclass(frozen=True, slots=True)
class AssociationRequest:
    """CN_SPDU (§3.1)."""

    user_info: UserInfo


@dataclass(frozen=True, slots=True)
class AssociationResult:
    """AC_SPDU (§3.2): the monitor accepts, granting ``user_info``."""

    user_info: UserInfo


@dataclass(frozen=True, slots=True)
class AssociationRefuse:
    """RF_SPDU (§2): the document gives no layout, so the body after the LI is kept raw."""

    body: bytes = b""


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """FN_SPDU (§3.6)."""


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """DN_SPDU (§3.6)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """AB_SPDU (§3.6), either direction."""


# --------------------------------------------------------------------------- user info


def _profile_bytes(p: PollProfileSupport) -> bytes:
    if p.ext_options is None and p.ext_attributes:
        raise ValueError("ext_attributes need the POLL_PROFILE_EXT package (ext_options)")
    pkgs: tuple[Ava, ...] = p.other_packages
    if p.ext_options is not None:
        ext = u32(p.ext_options) + encode_attribute_list(p.ext_attributes)
        pkgs = (Ava(NOM_ATTR_POLL_PROFILE_EXT, ext), *pkgs)
    return (
        u32(p.revision)
        + u32(p.min_poll_period)
        + u32(p.max_mtu_rx)
        + u32(p.max_mtu_tx)
        + u32(p.max_bw_tx)
        + u32(p.options)
        + encode_attribute_list(pkgs)
    )


def _read_profile(r: Reader) -> PollProfileSupport:
    rev, period, rx, tx, bw, opts = (r.u32() for _ in range(6))
    pkgs = decode_attribute_list(r)
    ext_options: int | None = None
    ext_attrs: tuple[Ava, ...] = ()
    others: list[Ava] = []
    for a in pkgs:
        if (
            a.attribute_id == NOM_ATTR_POLL_PROFILE_EXT
            and ext_options is None
            and isinstance(a.value, bytes)
        ):
            er = Reader(a.value)
            ext_options = er.u32()
            ext_attrs = decode_attribute_list(er)
            er.done()
        else:
            others.append(a)
    return PollProfileSupport(period, rx, tx, bw, opts, ext_options, ext_attrs, rev, tuple(others))


def _mdib_bytes(entries: tuple[MdibObjectSupport, ...]) -> bytes:
    body = b"".join(type_bytes(e.obj_type) + u32(e.max_inst) for e in entries)
    return u16(len(entries)) + u16(len(body)) + body


def _read_mdib(r: Reader) -> tuple[MdibObjectSupport, ...]:
    count, length = r.u16(), r.u16()
    s = r.sub(length)
    out = tuple(MdibObjectSupport(read_type(s), s.u32()) for _ in range(count))
    s.done()
    return out


def _user_info_bytes(u: UserInfo) -> bytes:
    profiles: list[bytes] = []
    count = 0
    if u.poll_profile is not None:
        v = _profile_bytes(u.poll_profile)
        profiles.append(u16(NOM_POLL_PROFILE_SUPPORT) + u16(len(v)) + v)
        count += 1
    if u.mdib_support is not None:
        v = _mdib_bytes(u.mdib_support)
        profiles.append(u16(NOM_MDIB_OBJ_SUPPORT) + u16(len(v)) + v)
        count += 1
    for a in u.other_profiles:
        profiles.append(ava_bytes(a))
        count += 1
    body = b"".join(profiles)
    return (
        u32(u.protocol_version)
        + u32(u.nomenclature_version)
        + u32(u.functional_units)
        + u32(u.system_type)
        + u32(u.startup_mode)
        + encode_attribute_list(u.option_list)
        + u16(count)
        + u16(len(body))
        + body
    )


def _typed_profile(aid: int, raw: bytes) -> Any:
    """Typed profile value when it parses and re-encodes identically, else None."""
    try:
        r = Reader(raw)
        if aid == NOM_POLL_PROFILE_SUPPORT:
            p: Any = _read_profile(r)
            again = _profile_bytes(p)
        else:
            p = _read_mdib(r)
            again = _mdib_bytes(p)
        r.done()
    except (DecodeError, ValueError, struct.error):
        return None
    return p if again == raw else None


def _read_user_info(r: Reader) -> UserInfo:
    pv, nv, fu, st, sm = (r.u32() for _ in range(5))
    options = decode_attribute_list(r)
    count, length = r.u16(), r.u16()
    s = r.sub(length)
    profile: PollProfileSupport | None = None
    mdib: tuple[MdibObjectSupport, ...] | None = None
    others: list[Ava] = []
    for _ in range(count):
        aid, n = s.u16(), s.u16()
        raw = s.take(n)
        typed = None
        if (aid == NOM_POLL_PROFILE_SUPPORT and profile is None) or (
            aid == NOM_MDIB_OBJ_SUPPORT and mdib is None
        ):
            typed = _typed_profile(aid, raw)
        if typed is None:
            others.append(Ava(aid, raw))
        elif aid == NOM_POLL_PROFILE_SUPPORT:
            profile = typed
        else:
            mdib = typed
    s.done()
    return UserInfo(profile, mdib, pv, nv, fu, st, sm, options, tuple(others))


def _find_user_info(pres: bytes) -> UserInfo:
    """The user info inside a presentation block: after tag 0x81 and a BER length L, with
    exactly L + 16 (trailer) bytes left. Searching for that rather than matching a fixed
    header lets a monitor's own header bytes through (§3.2 [?])."""
    i = pres.find(0x81)
    while i >= 0:
        try:
            r = Reader(pres, i + 1)
            n = r.u8()
            if n & 0x80:
                k = n & 0x7F
                n = int.from_bytes(r.take(k), "big") if 0 < k <= 4 else -1
            if n >= 0 and r.pos + n + len(PRES_TRAILER) == len(pres):
                s = r.sub(n)
                ui = _read_user_info(s)
                s.done()
                return ui
        except DecodeError:
            pass
        i = pres.find(0x81, i + 1)
    raise DecodeError("no user info in presentation block")


def _association_bytes(spdu: int, header: bytes, ui: UserInfo) -> bytes:
    v = _user_info_bytes(ui)
    pres = header + _ber(len(v)) + v + PRES_TRAILER
    body = SESSION_PARAMS + b"\xc1" + _li(len(pres)) + pres
    return bytes((spdu,)) + _li(len(body)) + body


SessionMessage = (
    AssociationRequest
    | AssociationResult
    | AssociationRefuse
    | ReleaseRequest
    | ReleaseResult
    | Abort
)


def decode_session(spdu: int, r: Reader) -> SessionMessage:
    """Decode a session SPDU whose type byte ``spdu`` has been read from ``r``."""
    n = _read_li(r)
    if n != r.remaining:
        raise DecodeError(f"session LI {n} != {r.remaining}")
    if spdu == RF_SPDU:
        return AssociationRefuse(r.take(n))
    if spdu == FN_SPDU:
        return ReleaseRequest()
    if spdu == DN_SPDU:
        return ReleaseResult()
    if spdu == AB_SPDU:
        return Abort()
    # CN / AC: session parameters, then the presentation block (0xC1, LI, data).
    while r.remaining:
        pid = r.u8()
        plen = _read_li(r)
        if pid == 0xC1:
            if plen != r.remaining:
                raise DecodeError("presentation LI does not match")
            ui = _find_user_info(r.take(plen))
            return AssociationRequest(ui) if spdu == CN_SPDU else AssociationResult(ui)
        r.take(plen)
    raise DecodeError("no presentation block")


def encode_session(m: SessionMessage) -> bytes:
    """The user data of one session-layer message."""
    if isinstance(m, AssociationRequest):
        return _association_bytes(CN_SPDU, PRES_HEADER_REQUEST, m.user_info)
    if isinstance(m, AssociationResult):
        return _association_bytes(AC_SPDU, PRES_HEADER_ACCEPT, m.user_info)
    if isinstance(m, AssociationRefuse):
        return bytes((RF_SPDU,)) + _li(len(m.body)) + m.body
    if isinstance(m, ReleaseRequest):
        return RELEASE_REQUEST
    if isinstance(m, ReleaseResult):
        return RELEASE_RESULT
    return ABORT


def monitor_timeout_s(min_poll_period_ticks: int) -> float:
    """How long a monitor waits for client traffic before it drops the association (§3.5,
    OpenICE's rule [1]): negotiated min poll period <= 3.3 s -> 10 s; <= 43 s -> 3 x period;
    else 130 s. Both the host (keep-alive interval) and the peer (time-out) use it."""
    period = min_poll_period_ticks / 8000  # RelativeTime ticks of 125 us
    if period <= 3.3:
        return 10.0
    if period <= 43.0:
        return 3.0 * period
    return 130.0
