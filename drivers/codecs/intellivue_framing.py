"""Transport framing of Philips IntelliVue Data Export on the MIB/RS232 port.

Implements shared/protocols/philips-intellivue-mib.md §1: ``C0 | 11 01 LEN | data | FCS | C1``
with PPP-style transparency (§1.4) and the RFC 1662 FCS-16 (§1.3). This module knows nothing
about what the user data means; ``intellivue.py`` parses it. It is separate because the same
application messages also run over LAN/UDP, where only this layer differs (doc preamble).

Choices where the document is uncertain:

* A BOF seen inside an open frame means the frame was truncated (§1.4 [?]): it is counted as
  ``truncated`` and collection restarts at that BOF (both implementations the document read
  do the same).
* An escape byte followed by BOF is treated the same way (the BOF wins, never un-escaped),
  because a BOF can never occur inside a frame (§1.2).
"""

from __future__ import annotations

import binascii
import struct

from .base import CodecStats

__all__ = [
    "BOF",
    "EOF",
    "ESC",
    "HEADER",
    "Deframer",
    "escape",
    "fcs16",
    "frame",
    "unescape",
]

BOF = 0xC0  # §1.2
EOF = 0xC1
ESC = 0x7D  # §1.4
ESC_XOR = 0x20
PROTOCOL_ID = 0x11  # Data Export
MSG_TYPE_AS = 0x01  # AS/SPDU, the only type used
HEADER = bytes((PROTOCOL_ID, MSG_TYPE_AS))
#: LEN is a u16 (§1.2); a frame longer than this cannot be valid, so collection stops.
MAX_USER_DATA = 0xFFFF
#: Residue of the CRC register run over data + FCS when the FCS is good (§1.3 (b)).
GOOD_RESIDUE = 0xF0B8

# The FCS is the *reflected* CCITT CRC (RFC 1662). binascii.crc_hqx computes the
# non-reflected one (poly 0x1021, MSB first); bit-reversing every input byte and the final
# register turns one into the other (init 0xFFFF is its own reverse), so the C routine does
# the work instead of a Python loop over bits.
_REV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _rev16(x: int) -> int:
    return (_REV8[x & 0xFF] << 8) | _REV8[x >> 8]


def fcs16(data: bytes) -> int:
    """PPP FCS-16 (CRC-16/X.25) of ``data`` as transmitted (final one's complement applied).
    Check value: ``fcs16(b"123456789") == 0x906E`` (§1.3)."""
    return _rev16(binascii.crc_hqx(bytes(data).translate(_REV8), 0xFFFF)) ^ 0xFFFF


_SPECIAL = frozenset((BOF, EOF, ESC))


def escape(data: bytes) -> bytes:
    """Transparency for everything between BOF and EOF (§1.4): C0/C1/7D -> 7D, b^0x20."""
    if not _SPECIAL.intersection(data):
        return bytes(data)
    out = bytearray()
    for b in data:
        if b in _SPECIAL:
            out += bytes((ESC, b ^ ESC_XOR))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Inverse of :func:`escape` for a complete, well-formed escaped body."""
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append((next(it, 0) ^ ESC_XOR) if b == ESC else b)
    return bytes(out)


def frame(user_data: bytes) -> bytes:
    """One wire frame around one session-layer message (§1.2): the FCS covers the unescaped
    header and data and goes low byte first; header, data and FCS are all escaped (§1.4,
    as OpenICE does, not as VSCaptureMP does)."""
    if len(user_data) > MAX_USER_DATA:
        raise ValueError(f"user data of {len(user_data)} bytes does not fit a u16 LEN")
    body = HEADER + struct.pack(">H", len(user_data)) + bytes(user_data)
    fcs = fcs16(body)
    return bytes((BOF,)) + escape(body + bytes((fcs & 0xFF, fcs >> 8))) + bytes((EOF,))


class Deframer:
    """Incremental BOF/ESC/EOF state machine (§7 pitfall 4). ``feed`` returns the user-data
    blocks of the frames that completed with a good LEN and FCS; everything else is counted
    in ``stats`` under a reason and dropped, and collection resynchronises on the next BOF.

    Reasons: ``garbage`` (a run of bytes outside any frame), ``truncated`` (BOF inside an
    open frame), ``aborted`` (``7D C1``, §1.4), ``overflow`` (longer than LEN can say),
    ``format`` (wrong protocol id / message type or too short), ``length`` (LEN disagrees
    with the bytes received), ``checksum`` (FCS).
    """

    def __init__(self, stats: CodecStats) -> None:
        self.stats = stats
        self._in_frame = False
        self._escaped = False
        self._in_garbage = False
        self._buf = bytearray()

    def reset(self) -> None:
        self._in_frame = False
        self._escaped = False
        self._in_garbage = False
        self._buf.clear()

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        buf = self._buf
        for b in data:
            if b == BOF:
                if self._in_frame:
                    self.stats.error("truncated")
                self._in_frame, self._escaped, self._in_garbage = True, False, False
                buf.clear()
            elif not self._in_frame:
                if not self._in_garbage:
                    self._in_garbage = True
                    self.stats.error("garbage")
            elif self._escaped:
                self._escaped = False
                if b == EOF:
                    self.stats.error("aborted")
                    self._in_frame = False
                    buf.clear()
                else:
                    buf.append(b ^ ESC_XOR)
            elif b == ESC:
                self._escaped = True
            elif b == EOF:
                self._in_frame = False
                block = self._check(bytes(buf))
                buf.clear()
                if block is not None:
                    out.append(block)
            else:
                buf.append(b)
                if len(buf) > MAX_USER_DATA + 6:
                    self.stats.error("overflow")
                    self._in_frame = False
                    buf.clear()
        return out

    def _check(self, body: bytes) -> bytes | None:
        if len(body) < 6 or body[:2] != HEADER:
            self.stats.error("format")
            return None
        (n,) = struct.unpack_from(">H", body, 2)
        if n != len(body) - 6:
            self.stats.error("length")
            return None
        fcs = body[-2] | (body[-1] << 8)
        if fcs != fcs16(body[:-2]):
            self.stats.error("checksum")
            return None
        return body[4:-2]
