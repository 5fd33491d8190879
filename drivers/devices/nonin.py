"""Nonin OEM III host: selects the data format, then turns streamed frames into pleth
chunks and pulse-rate / SpO2 readings.

Implements shared/protocols/nonin-oem.md. The device streams unasked (§2.2), so the only
thing the host sends is the format-selection command of §5, at (re)connection, repeated
until frames of the selected format arrive (at most ``FORMAT_TRIES`` times, one every
``FORMAT_REPLY_TIMEOUT_S``). A NAK ends the attempts: OEM III modules may not support the
command and may simply stream DF2 (§5 [?]). ``select_format=False`` sends nothing at all.

Mapping and the choices made where the document leaves room:

* Pleth: one ``WaveChunk`` at 75 Hz per packet (§2.2), raw device units (0-255 in DF2,
  0-65535 in DF7: the protocol's "arbitrary units", not rescaled). Samples are timed by
  counting frames back from the host time of the read that delivered them (§7) and
  re-anchored on every read. Pleth of incomplete packets is kept (§7), and a partial
  packet still pending when the link drops or the stream stalls is flushed, not lost.
  A packet that shared a read with a codec error is torn: its pleth is kept but marked
  QUESTIONABLE (a coincidental frame may be among it, see codecs/nonin.py).
* Numerics: the recording-format 4-beat pulse rate (frames 1-2) and SpO2 (frame 3) as §2.4
  recommends (``averaging="8-beat"`` picks the extended averages of frames 14-16),
  published once per complete packet (3 per second). They come only from a packet of 25
  frames that started with SYNC and during which the codec counted no error (§7: torn
  packets' FLOAT bytes cannot be trusted). Missing codes 511 / 127 (§2.5) produce no
  reading: a number that was never measured is not published.
* Quality from the STATUS flags OR-ed over the packet (§2.3): SNSD -> SENSOR_OFF|INVALID,
  SNSA -> INVALID (§2.5 policy), ARTF -> ARTEFACT, OOT -> QUESTIONABLE, and the perfusion
  colours in ``QUESTIONABLE_PERFUSION`` -> QUESTIONABLE. The document gives no threshold;
  only red ("low") is flagged, yellow ("marginal") is not.
* The link counts as associated after ``LOCK_FRAMES`` consecutive good frames (§7: one
  8-bit checksum is weak). The format command counts as done when such frames of the
  selected format arrive, not on ACK alone; the codec is told to expect an ACK/NAK for
  ``FORMAT_REPLY_TIMEOUT_S`` after each command, so a stray 0x06 later is line noise.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import numpy as np

from kapmonitor.model import CHANNELS, Channel, Message, Quality, Reading, WaveChunk

from ..codecs.base import Role
from ..codecs.nonin import (
    DEFAULT_DATA_FORMAT,
    FRAME_RATE_HZ,
    FRAMES_PER_PACKET,
    HR_MISSING,
    SPO2_MISSING,
    SUPPORTED_FORMATS,
    NoninAck,
    NoninCodec,
    NoninFrame,
    NoninNak,
    NoninPacket,
    NoninSetFormat,
    Perfusion,
    Status,
)
from ..protocol import HostProtocol, SerialSettings

__all__ = [
    "FORMAT_REPLY_TIMEOUT_S",
    "FORMAT_TRIES",
    "LOCK_FRAMES",
    "QUESTIONABLE_PERFUSION",
    "NoninHost",
    "packet_quality",
]

#: Wait this long for frames of the selected format before repeating the command.
FORMAT_REPLY_TIMEOUT_S: Final = 1.0
#: How many times the format command is sent per connection (§5: may be unsupported).
FORMAT_TRIES: Final = 3
#: Consecutive good frames before the link counts as associated (§7 "2-3").
LOCK_FRAMES: Final = 3
#: Perfusion colours that make a value QUESTIONABLE (the document sets no threshold).
QUESTIONABLE_PERFUSION: Final = frozenset({Perfusion.RED})
#: A pending partial packet is flushed after this long without frames (3 packet periods).
STALL_FLUSH_S: Final = 1.0

FRAME_PERIOD_US: Final = 1e6 / FRAME_RATE_HZ


def packet_quality(flags: int, perfusion: Perfusion) -> Quality:
    """Quality of a packet's values from its aggregated STATUS flags (§2.3, §2.5)."""
    q = Quality.OK
    if flags & Status.SNSD:
        q |= Quality.SENSOR_OFF | Quality.INVALID
    if flags & Status.SNSA:
        q |= Quality.INVALID
    if flags & Status.ARTF:
        q |= Quality.ARTEFACT
    if flags & Status.OOT:
        q |= Quality.QUESTIONABLE
    if perfusion in QUESTIONABLE_PERFUSION:
        q |= Quality.QUESTIONABLE
    return q


class NoninHost(HostProtocol):
    """The app's side of a Nonin OEM III link (sans-I/O, see drivers/protocol.py)."""

    protocol: ClassVar[str] = "nonin"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)  # §1
    tick_interval_s: ClassVar[float] = 0.05
    #: Packets come 3 per second (§2.2); 2 s without a valid frame is six lost packets.
    stale_after_s: ClassVar[float] = 2.0

    def __init__(
        self,
        source: str = "nonin",
        *,
        data_format: int = DEFAULT_DATA_FORMAT,
        select_format: bool = True,
        averaging: Literal["4-beat", "8-beat"] = "4-beat",
    ) -> None:
        super().__init__(source)
        if data_format not in SUPPORTED_FORMATS:
            raise ValueError(f"data format {data_format} not supported ({SUPPORTED_FORMATS})")
        if averaging not in ("4-beat", "8-beat"):
            raise ValueError(f"averaging must be '4-beat' or '8-beat', got {averaging!r}")
        self.data_format = data_format
        self.select_format = select_format
        self.averaging = averaging
        self.codec = NoninCodec(Role.HOST, data_format=data_format)
        #: "off", "waiting", "locked", "refused" (NAK) or "unconfirmed" (tries used up).
        self.format_state = "off"
        self.acks = 0
        self.naks = 0
        self._tries = 0
        self._sent_us = 0
        self._good_run = 0
        self._errors_seen = 0
        self._frames: list[NoninFrame] = []
        self._pkt_t0 = 0
        self._synced = False
        self._torn = False
        self._last_frame_t = 0
        self._pending: list[Message] = []

    @property
    def associated(self) -> bool:
        return self._good_run >= LOCK_FRAMES

    # -- lifecycle --

    def connection_made(self, now_us: int) -> None:
        self._flush(complete_allowed=False)
        self.codec.reset()
        self._good_run = 0
        self._errors_seen = self.codec.stats.error_count
        self._tries = 0
        self.format_state = "off"
        if self.select_format:
            self._send_format(now_us)

    def connection_lost(self) -> None:
        self._flush(complete_allowed=False)  # delivered by the next tick(), not lost
        self.codec.reset()
        self._good_run = 0
        if self.format_state == "waiting":
            self.format_state = "off"

    def _send_format(self, now_us: int) -> None:
        self.send(self.codec.encode(NoninSetFormat(self.data_format)))
        self.codec.expect_reply = True
        self._tries += 1
        self._sent_us = now_us
        self.format_state = "waiting"

    def tick(self, now_us: int) -> list[Message]:
        waited = now_us - self._sent_us >= FORMAT_REPLY_TIMEOUT_S * 1e6
        if self.format_state == "waiting" and waited:
            if self._tries < FORMAT_TRIES:
                self._send_format(now_us)
            else:
                self.format_state = "unconfirmed"
        if self.codec.expect_reply and self.format_state != "waiting" and waited:
            self.codec.expect_reply = False  # a late 0x06/0x15 is garbage, not a reply
        if self._frames and now_us - self._last_frame_t > STALL_FLUSH_S * 1e6:
            self._flush(complete_allowed=False)
        out, self._pending = self._pending, []
        return out

    # -- data --

    def data_received(self, data: bytes, now_us: int) -> list[Message]:
        msgs = self.codec.feed(data)
        errors = self.codec.stats.error_count
        torn_read = errors != self._errors_seen
        if torn_read:
            # Somewhere in this read a frame was lost or garbled: the packet in progress
            # and any packet started in this read may be torn (§7).
            self._errors_seen = errors
            self._good_run = 0
            self._torn = True
        n_frames = sum(isinstance(m, NoninFrame) for m in msgs)
        j = 0
        for m in msgs:
            if isinstance(m, NoninFrame):
                # Count frames back from the end of the read (§7: time by frame count).
                t = now_us - round((n_frames - 1 - j) * FRAME_PERIOD_US)
                j += 1
                self.last_frame_us = now_us
                self._on_frame(m, t, torn_read)
            elif isinstance(m, NoninAck):
                self.acks += 1
            elif isinstance(m, NoninNak):
                self.naks += 1
                if self.format_state == "waiting":
                    self.format_state = "refused"
        out, self._pending = self._pending, []
        return out

    def _on_frame(self, f: NoninFrame, t: int, torn_read: bool) -> None:
        self._good_run += 1
        if self.format_state == "waiting" and self._good_run >= LOCK_FRAMES:
            self.format_state = "locked"
        if f.sync:
            self._flush(complete_allowed=False)
            self._synced = True
            self._torn = torn_read
        elif len(self._frames) >= FRAMES_PER_PACKET:
            self._flush(complete_allowed=False)  # 25 frames without SYNC: orphans
        if not self._frames:
            self._pkt_t0 = t
        self._frames.append(f)
        self._last_frame_t = t
        if self._synced and len(self._frames) == FRAMES_PER_PACKET:
            self._flush(complete_allowed=True)

    def _flush(self, *, complete_allowed: bool) -> None:
        """Publish the packet in progress: its pleth always, its numerics only when it is
        complete and untorn."""
        if not self._frames:
            return
        pkt = NoninPacket.from_frames(self._frames)
        t0 = self._pkt_t0
        t_end = self._last_frame_t
        torn = self._torn
        self._frames = []
        self._synced = False
        self._torn = False
        q = packet_quality(pkt.flags, pkt.perfusion)
        # Pleth samples are individually checksummed; a read with errors may still hide
        # a coincidental frame among them (codecs/nonin.py), hence QUESTIONABLE.
        wave_q = q | Quality.QUESTIONABLE if torn else q
        self._pending.append(
            WaveChunk(
                Channel.PLETH,
                t0,
                FRAME_RATE_HZ,
                np.asarray(pkt.pleth, dtype=np.float32),
                source=self.source,
                quality=wave_q,
            )
        )
        if not (complete_allowed and pkt.complete and not torn):
            return
        if self.averaging == "4-beat":
            hr, spo2 = pkt.hr, pkt.spo2
        else:
            hr, spo2 = pkt.hr_extended, pkt.spo2_extended
        self._reading(Channel.PULSE, hr, HR_MISSING, t_end, q)
        self._reading(Channel.SPO2, spo2, SPO2_MISSING, t_end, q)

    def _reading(self, ch: Channel, value: int | None, missing: int, t: int, q: Quality) -> None:
        if value is None or value == missing:
            return  # §2.5 missing code: nothing was measured, nothing is published
        lo, hi = CHANNELS[ch].plausible
        if not lo <= value <= hi:
            q |= Quality.OUT_OF_RANGE
        self._pending.append(Reading(ch, float(value), t, source=self.source, quality=q))
