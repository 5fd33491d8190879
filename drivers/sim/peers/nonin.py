"""A simulated Nonin OEM III: streams DF2 or DF7 packets from a vitals feed.

Implements the device side of shared/protocols/nonin-oem.md: 25-frame packets, 3 per
second, frame k of the stream due at ``k / 75`` s after the link opened (§2.2, §7
"Simulator"). Each tick emits exactly the frames due since the last one and asks the feed
for exactly that many pleth samples at 75 Hz, so over any run the number of samples equals
the number of frames the clock allows: none lost, none duplicated. Numerics are taken from
the feed once per packet, at its SYNC frame, and put in every HR / SpO2 slot of §2.4.

The device answers the format command of §5 with ACK and switches format at the next
packet boundary (the document does not say when the switch happens; a boundary keeps
packets whole); ``accepts_format_command=False`` models an OEM III that answers NAK.

Pleth: feed values (arbitrary units) become device counts ``round(v * gain + offset)``;
the defaults put the feed's +-1 around mid-scale. A value beyond the format's range is
limited to it and counted in ``clipped`` (a simulator artefact, never silent).
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

from kapmonitor.model import Channel

from ...codecs.base import Role
from ...codecs.nonin import (
    FRAME_RATE_HZ,
    FRAMES_PER_PACKET,
    HR_MISSING,
    SPO2_MISSING,
    SUPPORTED_FORMATS,
    NoninAck,
    NoninCodec,
    NoninFrame,
    NoninNak,
    NoninSetFormat,
    Perfusion,
    Status,
    float_bytes,
)
from ...protocol import PeerProtocol, SerialSettings
from ..feed import VitalsFeed

__all__ = ["PLETH_SCALE", "NoninPeer"]

#: Default (gain, offset) from feed units to device pleth counts, per data format.
PLETH_SCALE: Final = {2: (100.0, 128.0), 7: (25600.0, 32768.0)}
_PLETH_MAX: Final = {2: 0xFF, 7: 0xFFFF}


class NoninPeer(PeerProtocol):
    """The device's side of a Nonin link (sans-I/O, see drivers/protocol.py)."""

    protocol: ClassVar[str] = "nonin"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)  # §1
    tick_interval_s: ClassVar[float] = 0.02

    def __init__(
        self,
        feed: VitalsFeed,
        *,
        seed: int = 0,
        data_format: int = 2,
        accepts_format_command: bool = True,
        pleth_gain: float | None = None,
        pleth_offset: float | None = None,
        sensor_off: bool = False,
        perfusion: Perfusion = Perfusion.GREEN,
    ) -> None:
        super().__init__()
        if data_format not in SUPPORTED_FORMATS:
            raise ValueError(f"data format {data_format} not supported ({SUPPORTED_FORMATS})")
        self.feed = feed
        self.seed = seed  # the stream is deterministic; kept for the common signature
        self.data_format = data_format  # the format the device streams (kept across links)
        self.accepts_format_command = accepts_format_command
        self._gain = pleth_gain
        self._offset = pleth_offset
        self.sensor_off = sensor_off
        self.perfusion = perfusion
        self.silent = False
        self.clipped = 0
        self.frames_sent = 0  # over the peer's life, for tests
        self._next_format: int | None = None
        self._rx = NoninCodec(Role.DEVICE)
        self._tx_codecs = {f: NoninCodec(Role.HOST, data_format=f) for f in SUPPORTED_FORMATS}
        self._t0: int | None = None
        self._due_done = 0
        self._index = 0  # position of the next frame in its packet
        self._floats: list[int] = []
        self._status = 0

    def connection_made(self, now_us: int) -> None:
        self._t0 = now_us
        self._due_done = 0
        self._index = 0
        self._rx.reset()

    def connection_lost(self) -> None:
        self._t0 = None

    def data_received(self, data: bytes, now_us: int) -> None:
        for msg in self._rx.feed(data):
            if self.silent:
                continue
            if (
                isinstance(msg, NoninSetFormat)
                and self.accepts_format_command
                and msg.data_format in SUPPORTED_FORMATS
            ):
                self._next_format = msg.data_format
                self.send(self._tx().encode(NoninAck()))
            else:
                self.send(self._tx().encode(NoninNak()))

    def _tx(self) -> NoninCodec:
        return self._tx_codecs[self.data_format]

    def tick(self, now_us: int) -> None:
        if self._t0 is None:
            return
        due = (now_us - self._t0) * int(FRAME_RATE_HZ) // 1_000_000 + 1
        n = due - self._due_done
        if n <= 0:
            return
        self._due_done = due
        if self.silent:
            self._index = (self._index + n) % FRAMES_PER_PACKET
            return
        samples = self.feed.wave(Channel.PLETH, FRAME_RATE_HZ, n, now_us)
        out = bytearray()
        for v in samples:
            if self._index == 0:
                self._start_packet(now_us)
            tx = self._tx()
            status = self._status | (Status.SYNC if self._index == 0 else 0)
            frame = NoninFrame(
                self.data_format, int(status), self._pleth(float(v)), self._floats[self._index]
            )
            out += tx.encode(frame)
            self._index = (self._index + 1) % FRAMES_PER_PACKET
        self.frames_sent += n
        self.send(bytes(out))

    def _start_packet(self, now_us: int) -> None:
        if self._next_format is not None:
            self.data_format, self._next_format = self._next_format, None
        values = self.feed.numerics(now_us)
        pulse = values.get(Channel.PULSE, values.get(Channel.HR))
        spo2 = values.get(Channel.SPO2)
        status = int(Status.ALWAYS)
        if self.sensor_off:
            status |= Status.SNSD | Status.SNSA
            pulse = spo2 = None
        else:
            status |= self.perfusion.bits()
        self._status = status
        self._floats = float_bytes(self._code(pulse, HR_MISSING), self._code(spo2, SPO2_MISSING))

    def _code(self, value: float | None, missing: int) -> int:
        """A numeric as the protocol sends it; None or unencodable -> the missing code."""
        if value is None or not math.isfinite(value):
            return missing
        v = round(value)
        return v if 0 <= v < missing else missing

    def _pleth(self, v: float) -> int:
        gain, offset = PLETH_SCALE[self.data_format]
        gain = gain if self._gain is None else self._gain
        offset = offset if self._offset is None else self._offset
        top = _PLETH_MAX[self.data_format]
        x = round(v * gain + offset) if math.isfinite(v) else 0
        if not 0 <= x <= top:
            self.clipped += 1
            x = min(max(x, 0), top)
        return x
