"""Nonin OEM III serial data formats 2 and 7: frames, packets and the format command.

Implements shared/protocols/nonin-oem.md. The device streams 5-byte frames, 75 a second,
25 to a packet (§2.2); each frame carries a STATUS byte (§2.3), one pleth sample and one
byte of the "float" channel whose meaning depends on the frame's position in the packet
(§2.4). Data Format 2 (DF2) starts every frame with 0x01 and has an 8-bit pleth (§2.1);
Data Format 7 (DF7) has no start byte and a 16-bit pleth (§3). The host selects the format
with an STX/ETX command the device answers with ACK or NAK (§5).

The codec works on frames, not packets: it emits one ``NoninFrame`` per valid frame so
that no pleth sample waits for (or is lost with) a torn packet (§7 "packet completeness").
``NoninPacket.from_frames`` turns the 25 frames of a packet into numerics; the host does
that once it has seen a packet from its SYNC frame on.

Resynchronisation (§7): the parser slides a 5-byte window one byte at a time until the
header and checksum are valid. Choices where the document leaves room:

* Lock is taken on any valid frame, not only a SYNC frame as §7 suggests: the SYNC
  requirement protects packet assembly, and the host already assembles numerics only
  from SYNC on, so locking early keeps the pleth samples of a partial packet.
* When a locked frame fails, the parser backtracks: to one byte after the first frame of
  the run if the run is shorter than ``CONFIRM_FRAMES``, else to one byte after its last
  frame. An 8-bit checksum accepts ~1/256 of random windows (§7; DF7's one-bit header
  makes that 1/512), so a truncated frame can pass for a frame and swallow the head of
  the real one after it, and even be followed by another such coincidence; backtracking
  lets the real frames be found again (frames already published are not repeated). The
  price is that a coincidental frame is emitted too: it cannot be told apart from a real
  one. With data so regular that misaligned windows stay valid (a constant DF7 stream)
  the parse is ambiguous and no parser can recover every frame.
* ACK (0x06) and NAK (0x15) are recognised only while a reply is expected
  (``expect_reply``, set when a command is sent, cleared by the first ACK/NAK), where a
  frame could start and never inside bytes already consumed as a frame (§5: they cannot
  start a DF2 or DF7 frame). Always accepting them would let a coincidental frame plus a
  real checksum byte of 0x06/0x15 shift the alignment by one byte without any error, and
  lose the real frame. Operation responses starting with 0x02 (§5) are not described in
  the document and are counted as garbage.
* ``DEFAULT_DATA_FORMAT`` is DF2: its layout is cross-checked in three sources [X] and OEM
  III modules may power up streaming it (§5), whereas the DF7 layout has one source [1].
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .base import Codec, Role

__all__ = [
    "DEFAULT_DATA_FORMAT",
    "FRAMES_PER_PACKET",
    "FRAME_RATE_HZ",
    "HR_MISSING",
    "SPO2_MISSING",
    "SUPPORTED_FORMATS",
    "NoninAck",
    "NoninCodec",
    "NoninCommand",
    "NoninFrame",
    "NoninNak",
    "NoninPacket",
    "NoninSetFormat",
    "Perfusion",
    "Status",
    "float_bytes",
]

#: Data formats this codec frames (§2, §3). DF8 (§4) is single-source with no checksum.
SUPPORTED_FORMATS: Final = (2, 7)
#: The format the host selects unless told otherwise; see the module docstring.
DEFAULT_DATA_FORMAT: Final = 2

FRAME_LEN: Final = 5
FRAMES_PER_PACKET: Final = 25  # §2.2
FRAME_RATE_HZ: Final = 75.0  # §2.2: 3 packets/s x 25 frames
DF2_START: Final = 0x01  # §2.1 byte 1

HR_MISSING: Final = 511  # §2.5
SPO2_MISSING: Final = 127  # §2.5

STX: Final = 0x02  # §5
ETX: Final = 0x03
ACK: Final = 0x06
NAK: Final = 0x15
OP_DATA_FORMAT: Final = 0x70  # §5 "op 0x70 data format"
_SET_FORMAT_SUBOP: Final = 0x02  # the byte before <fmt> in both forms of §5
#: A locked run of fewer frames than this is still a guess: when it breaks, the parser
#: rescans from just after its first frame (module docstring).
CONFIRM_FRAMES: Final = 4
#: Longest data field accepted in a host command; the document's longest is 4 bytes.
MAX_COMMAND_DATA: Final = 16


class Status(enum.IntFlag):
    """STATUS byte bits (§2.3), the same in DF2 and DF7."""

    SYNC = 0x01
    PERF_GREEN = 0x02
    PERF_RED = 0x04
    SNSA = 0x08  # sensor alarm: unusable data (e.g. finger removed)
    OOT = 0x10  # out of track
    ARTF = 0x20  # artifact
    SNSD = 0x40  # sensor disconnected
    ALWAYS = 0x80  # always 1


#: The single-bit flags of §2.3 that a packet aggregates by OR (IBME, §2.3).
FLAG_MASK: Final = int(Status.SNSD | Status.ARTF | Status.OOT | Status.SNSA)
_PERF_MASK: Final = 0x06


class Perfusion(enum.IntEnum):
    """The 2-bit perfusion colour of §2.3, ordered from no indication to worst signal."""

    NONE = 0  # 00: no indication (bits only set during a pulse)
    GREEN = 1  # 01: high signal quality
    YELLOW = 2  # 11: marginal
    RED = 3  # 10: low

    @classmethod
    def from_status(cls, status: int) -> Perfusion:
        return _PERF_FROM_BITS[(status & _PERF_MASK) >> 1]

    def bits(self) -> int:
        """The STATUS bits of this colour (§2.3)."""
        return _PERF_TO_BITS[self]


_PERF_FROM_BITS = {0: Perfusion.NONE, 1: Perfusion.GREEN, 2: Perfusion.RED, 3: Perfusion.YELLOW}
_PERF_TO_BITS = {p: b << 1 for b, p in _PERF_FROM_BITS.items()}


@dataclass(frozen=True, slots=True)
class NoninFrame:
    """One 5-byte frame of DF2 or DF7 (§2.1, §3). ``value`` is the FLOAT byte, whose
    meaning depends on the frame's position in its packet (§2.4)."""

    data_format: int
    status: int
    pleth: int
    value: int

    @property
    def sync(self) -> bool:
        return bool(self.status & Status.SYNC)

    @property
    def flags(self) -> Status:
        return Status(self.status & FLAG_MASK)

    @property
    def perfusion(self) -> Perfusion:
        return Perfusion.from_status(self.status)


@dataclass(frozen=True, slots=True)
class NoninAck:
    """The device accepted a command (§5)."""


@dataclass(frozen=True, slots=True)
class NoninNak:
    """The device refused a command (§5)."""


@dataclass(frozen=True, slots=True)
class NoninSetFormat:
    """Select the serial data format (§5). ``options`` None is the short form
    ``02 70 02 02 <fmt> 03``; an int selects the 3150 long form with its checksum."""

    data_format: int
    options: int | None = None


@dataclass(frozen=True, slots=True)
class NoninCommand:
    """Any other STX/ETX control message ``02 <opcode> <len> <data> 03`` (§5), kept raw."""

    opcode: int
    data: bytes = b""


# --- packets -------------------------------------------------------------------------

# FLOAT byte positions, 0-based frame index in the packet (§2.4).
F_HR_MSB, F_HR_LSB, F_SPO2, F_REV = 0, 1, 2, 3
F_TMR_MSB, F_TMR_LSB, F_STAT2 = 5, 6, 7
F_SPO2_D, F_SPO2_FAST, F_SPO2_BB = 8, 9, 10
F_EHR_MSB, F_EHR_LSB, F_ESPO2, F_ESPO2_D = 13, 14, 15, 16
F_HRD_MSB, F_HRD_LSB, F_EHRD_MSB, F_EHRD_LSB = 19, 20, 21, 22


def _hr(msb: int, lsb: int) -> int:
    """9-bit pulse rate from its two FLOAT bytes (§2.5)."""
    return ((msb & 0x03) << 7) | (lsb & 0x7F)


@dataclass(frozen=True, slots=True)
class NoninPacket:
    """The content of one packet (§2.2-§2.5), built from its frames.

    ``complete`` is True only for exactly 25 frames starting with the SYNC frame; only then
    are the FLOAT-derived numerics filled in (None otherwise: §7 says they may be torn).
    Numerics are raw: 511 / 127 are the missing codes (§2.5), kept so the caller decides.
    ``flags`` is the OR of the single-bit STATUS flags over the frames and ``perfusion``
    the worst colour seen (the colour is a 2-bit field, so OR-ing it would invent yellow
    from green + red).
    """

    data_format: int
    complete: bool
    flags: int
    perfusion: Perfusion
    pleth: tuple[int, ...]
    hr: int | None = None  # 4-beat average pulse rate, recording format (frames 1-2)
    spo2: int | None = None  # 4-beat average SpO2, recording format (frame 3)
    rev: int | None = None
    timer: int | None = None  # [?] frames 6-7, may be reserved on OEM III
    stat2: int | None = None  # [?] frame 8
    spo2_display: int | None = None  # frame 9, holds ~10 s after finger removal
    spo2_fast: int | None = None  # frame 10
    spo2_beat: int | None = None  # frame 11, beat-to-beat (unaveraged)
    hr_extended: int | None = None  # frames 14-15, 8-beat average
    spo2_extended: int | None = None  # frame 16, 8-beat average
    spo2_extended_display: int | None = None  # frame 17
    hr_display: int | None = None  # frames 20-21
    hr_extended_display: int | None = None  # frames 22-23

    @classmethod
    def from_frames(cls, frames: Sequence[NoninFrame]) -> NoninPacket:
        fmt = frames[0].data_format if frames else DEFAULT_DATA_FORMAT
        flags = 0
        perfusion = Perfusion.NONE
        for f in frames:
            flags |= f.status & FLAG_MASK
            perfusion = max(perfusion, f.perfusion)
        complete = len(frames) == FRAMES_PER_PACKET and frames[0].sync
        pleth = tuple(f.pleth for f in frames)
        if not complete:
            return cls(fmt, False, flags, perfusion, pleth)
        v = [f.value for f in frames]
        return cls(
            fmt,
            True,
            flags,
            perfusion,
            pleth,
            hr=_hr(v[F_HR_MSB], v[F_HR_LSB]),
            spo2=v[F_SPO2] & 0x7F,
            rev=v[F_REV],
            timer=((v[F_TMR_MSB] & 0x7F) << 7) | (v[F_TMR_LSB] & 0x7F),
            stat2=v[F_STAT2],
            spo2_display=v[F_SPO2_D] & 0x7F,
            spo2_fast=v[F_SPO2_FAST] & 0x7F,
            spo2_beat=v[F_SPO2_BB] & 0x7F,
            hr_extended=_hr(v[F_EHR_MSB], v[F_EHR_LSB]),
            spo2_extended=v[F_ESPO2] & 0x7F,
            spo2_extended_display=v[F_ESPO2_D] & 0x7F,
            hr_display=_hr(v[F_HRD_MSB], v[F_HRD_LSB]),
            hr_extended_display=_hr(v[F_EHRD_MSB], v[F_EHRD_LSB]),
        )


def float_bytes(
    hr: int = HR_MISSING,
    spo2: int = SPO2_MISSING,
    *,
    rev: int = 0x30,
    timer: int = 0,
    stat2: int = 0,
) -> list[int]:
    """The 25 FLOAT bytes of a packet carrying ``hr`` and ``spo2`` in every HR and SpO2
    slot of §2.4 (a simulated device has one value of each, so its averaged, fast,
    beat-to-beat and display variants all agree). Reserved slots are 0."""
    if not 0 <= hr <= HR_MISSING or not 0 <= spo2 <= SPO2_MISSING:
        raise ValueError(f"HR {hr} or SpO2 {spo2} outside the protocol's 9/7 bits")
    v = [0] * FRAMES_PER_PACKET
    msb, lsb = (hr >> 7) & 0x03, hr & 0x7F
    for m, lo in (
        (F_HR_MSB, F_HR_LSB),
        (F_EHR_MSB, F_EHR_LSB),
        (F_HRD_MSB, F_HRD_LSB),
        (F_EHRD_MSB, F_EHRD_LSB),
    ):
        v[m], v[lo] = msb, lsb
    for i in (F_SPO2, F_SPO2_D, F_SPO2_FAST, F_SPO2_BB, F_ESPO2, F_ESPO2_D):
        v[i] = spo2
    v[F_REV] = rev & 0xFF
    v[F_TMR_MSB], v[F_TMR_LSB] = (timer >> 7) & 0x7F, timer & 0x7F
    v[F_STAT2] = stat2 & 0xFF
    return v


# --- codec ---------------------------------------------------------------------------


def _checksum(b: bytes | bytearray) -> int:
    """CHK = sum of the first four bytes mod 256 (§2.1, §3)."""
    return (b[0] + b[1] + b[2] + b[3]) & 0xFF


class NoninCodec(Codec):
    """Frames of one data format (HOST role: what the device streams) or STX/ETX commands
    (DEVICE role: what the host sends). ``data_format`` is fixed per instance because
    DF2 and DF7 frames are not self-describing; the host builds a codec for the format it
    selected."""

    protocol = "nonin"
    document = "nonin-oem.md"

    def __init__(self, role: Role = Role.HOST, *, data_format: int = DEFAULT_DATA_FORMAT) -> None:
        super().__init__(role)
        if data_format not in SUPPORTED_FORMATS:
            raise ValueError(f"data format {data_format} not supported ({SUPPORTED_FORMATS})")
        self.data_format = data_format
        self._buf = bytearray()
        self._pos = 0
        self._locked = False
        self._last = 0  # start of the last frame of the locked run
        self._run_start = 0  # start of the run's first frame (where the lock was taken)
        self._run_len = 0
        self._emitted: set[int] = set()  # starts of frames already published, in _buf
        self._fresh = 0  # first byte not consumed by an emitted message
        self._miss_counted = False
        #: Set by whoever sends a command: the next ACK or NAK byte where a frame could
        #: start is the device's answer. Otherwise those bytes are garbage (see above).
        self.expect_reply = False

    def reset(self) -> None:
        self._buf.clear()
        self._pos = self._last = self._fresh = self._run_start = self._run_len = 0
        self._emitted = set()
        self._locked = False
        self._miss_counted = False
        self.expect_reply = False

    # -- encoding --

    def encode(self, message: object) -> bytes:
        if isinstance(message, NoninFrame):
            return self._encode_frame(message)
        if isinstance(message, NoninAck):
            return bytes([ACK])
        if isinstance(message, NoninNak):
            return bytes([NAK])
        if isinstance(message, NoninSetFormat):
            fmt, opts = message.data_format, message.options
            if not 0 <= fmt <= 0xFF:
                raise ValueError(f"data format {fmt} is not a byte")
            if opts is None:
                data = bytes([_SET_FORMAT_SUBOP, fmt])
            else:
                if not 0 <= opts <= 0xFF:
                    raise ValueError(f"options {opts} is not a byte")
                chk = (OP_DATA_FORMAT + 4 + _SET_FORMAT_SUBOP + fmt + opts) & 0xFF
                data = bytes([_SET_FORMAT_SUBOP, fmt, opts, chk])
            return bytes([STX, OP_DATA_FORMAT, len(data)]) + data + bytes([ETX])
        if isinstance(message, NoninCommand):
            if not 0 <= message.opcode <= 0xFF or len(message.data) > MAX_COMMAND_DATA:
                raise ValueError(f"not encodable: {message!r}")
            if _parse_command(message.opcode, bytes(message.data)) != message:
                raise ValueError(f"{message!r} is a format command: use NoninSetFormat")
            return bytes([STX, message.opcode, len(message.data)]) + message.data + bytes([ETX])
        raise TypeError(f"NoninCodec cannot encode {type(message).__name__}")

    def _encode_frame(self, f: NoninFrame) -> bytes:
        if f.data_format != self.data_format:
            raise ValueError(f"frame of DF{f.data_format} on a DF{self.data_format} codec")
        top = 0xFF if f.data_format == 2 else 0xFFFF
        if not (0x80 <= f.status <= 0xFF and 0 <= f.pleth <= top and 0 <= f.value <= 0xFF):
            raise ValueError(f"field out of range in {f!r} (STATUS needs bit 7)")
        if f.data_format == 2:
            head = bytes([DF2_START, f.status, f.pleth, f.value])
        else:
            head = bytes([f.status, f.pleth >> 8, f.pleth & 0xFF, f.value])
        return head + bytes([_checksum(head)])

    # -- decoding --

    def feed(self, data: bytes) -> list[object]:
        self.stats.bytes_in += len(data)
        self._buf += data
        try:
            out = self._feed_frames() if self.role is Role.HOST else self._feed_commands()
        except Exception:  # never raise into a reader thread (CONVENTIONS 1)
            self.stats.error("internal")
            self.reset()
            return []
        self.stats.frames += len(out)
        return out

    def _check(self, i: int) -> str | None:
        """Why the window at ``i`` is not a frame, or None if it is one."""
        b = self._buf
        if self.data_format == 2:
            if b[i] != DF2_START or not b[i + 1] & 0x80:
                return "header"
        elif not b[i] & 0x80:
            return "header"
        return None if _checksum(b[i : i + 4]) == b[i + 4] else "checksum"

    def _frame_at(self, i: int) -> NoninFrame:
        b = self._buf
        if self.data_format == 2:
            return NoninFrame(2, b[i + 1], b[i + 2], b[i + 3])
        return NoninFrame(7, b[i], (b[i + 1] << 8) | b[i + 2], b[i + 3])

    def _feed_frames(self) -> list[object]:
        out: list[object] = []
        b = self._buf
        i = self._pos
        while True:
            if self.expect_reply and i < len(b) and i >= self._fresh and b[i] in (ACK, NAK):
                out.append(NoninAck() if b[i] == ACK else NoninNak())
                self.expect_reply = False
                i += 1
                self._fresh = i
                continue
            if len(b) - i < FRAME_LEN:
                break
            reason = self._check(i)
            if reason is None and i in self._emitted and not self._locked:
                reason = "emitted"  # rescanning after a backtrack: already published
            if reason is None:
                if i not in self._emitted:
                    out.append(self._frame_at(i))
                    self._emitted.add(i)
                if not self._locked:
                    self._locked, self._run_start, self._run_len = True, i, 0
                self._run_len += 1
                self._last, self._miss_counted = i, False
                i += FRAME_LEN
                self._fresh = max(self._fresh, i)
            elif self._locked:
                self.stats.error(reason)
                self._locked, self._miss_counted = False, True
                # backtrack (module docstring): over the whole run while it is short
                i = (self._run_start if self._run_len < CONFIRM_FRAMES else self._last) + 1
            else:
                if i >= self._fresh and not self._miss_counted:
                    self.stats.error("garbage")
                    self._miss_counted = True
                i += 1
        if not self._locked:
            keep = i
        elif self._run_len < CONFIRM_FRAMES:
            keep = self._run_start
        else:
            keep = self._last
        del b[:keep]
        self._pos = i - keep
        self._last = max(self._last - keep, 0)
        self._run_start = max(self._run_start - keep, 0)
        self._fresh = max(self._fresh - keep, 0)
        self._emitted = {p - keep for p in self._emitted if p >= keep}
        return out

    def _feed_commands(self) -> list[object]:
        out: list[object] = []
        b = self._buf
        i = 0
        while i < len(b):
            if b[i] != STX:
                j = b.find(STX, i)
                j = len(b) if j < 0 else j
                if not self._miss_counted:  # one count per run of garbage
                    self.stats.error("garbage")
                    self._miss_counted = True
                i = j
                continue
            if len(b) - i < 3:
                break
            n = b[i + 2]
            if n > MAX_COMMAND_DATA:
                self.stats.error("length")
                i += 1
                continue
            end = i + 3 + n
            if len(b) <= end:
                break
            if b[end] != ETX:
                self.stats.error("framing")
                i += 1
                continue
            msg = _parse_command(b[i + 1], bytes(b[i + 3 : end]))
            if msg is None:
                self.stats.error("checksum")
            else:
                out.append(msg)
                self._miss_counted = False
            i = end + 1
        del b[:i]
        return out


def _parse_command(opcode: int, data: bytes) -> NoninSetFormat | NoninCommand | None:
    """A host command from its opcode and data (§5); None if its checksum is wrong."""
    if opcode == OP_DATA_FORMAT and data[:1] == bytes([_SET_FORMAT_SUBOP]):
        if len(data) == 2:
            return NoninSetFormat(data[1])
        if len(data) == 4:
            fmt, opts, chk = data[1], data[2], data[3]
            if (OP_DATA_FORMAT + 4 + _SET_FORMAT_SUBOP + fmt + opts) & 0xFF != chk:
                return None
            return NoninSetFormat(fmt, opts)
    return NoninCommand(opcode, data)
