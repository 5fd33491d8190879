"""A simulated Masimo oximeter streaming "ASCII 1" lines (shared/protocols/masimo-ascii.md).

As §8 "Simulator" asks: exactly the §2 widths, CR LF, one line every ``period_s`` (1 s,
§1) on a fixed schedule (no drift over a long run), dashes for anything missing. The
device listens to nothing; bytes it gets are only kept in ``received`` so a test can show
there were none. SpO2 and pulse rate are printed as integers and PI with two decimals
(the protocol's resolution); SpCO, SpMet, DESAT, PIDELTA and PVI are not simulated and
print as dashes. When the feed has no SpO2, EXC reports SENSOR_OFF and ALARM "alarm
active", as in the document's sensor-off example (§6); ``exc`` / ``alarm`` override both.

``start_mid_line=True`` opens the link in the middle of a line, as a real port usually
does (§8 "Start-up"); ``silent = True`` stops the stream.
"""

from __future__ import annotations

import time
from typing import ClassVar

from kapmonitor.model import Channel

from ...codecs.masimo import RADICAL7_LAYOUT, MasimoCodec, MasimoRecord
from ...protocol import PeerProtocol
from ..feed import VitalsFeed

__all__ = ["MasimoPeer"]

EXC_SENSOR_OFF = 0x000020
ALARM_ACTIVE = 0x0010


def _fit(value: float | None, digits: int, decimals: int = 0) -> int | float | None:
    """A feed value at the printed resolution, or None (dashes) if it can't be printed."""
    if value is None:
        return None
    v = round(value, decimals) if decimals else round(value)
    return v if 0 <= v < 10**digits else None


class MasimoPeer(PeerProtocol):
    """The oximeter's end of the link (see the module docstring)."""

    protocol: ClassVar[str] = "masimo"

    def __init__(
        self,
        feed: VitalsFeed,
        *,
        seed: int = 0,
        serial: str | None = "0000123456",
        layout: tuple[str, ...] = RADICAL7_LAYOUT,
        period_s: float = 1.0,
        start_mid_line: bool = False,
        exc: int | None = None,
        alarm: int | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.seed = seed  # the output is deterministic; kept for the common signature
        self.serial = serial if "SN" in layout else None
        self.layout = layout
        self.period_us = round(period_s * 1e6)
        self.start_mid_line = start_mid_line
        self.exc = exc
        self.alarm = alarm
        self.codec = MasimoCodec()
        self.silent = False
        self.received = bytearray()
        self.lines_sent = 0
        self._next_us: int | None = None

    def connection_made(self, now_us: int) -> None:
        self._next_us = now_us + self.period_us
        if self.start_mid_line:
            line = self.codec.encode(self._record(now_us - self.period_us))
            self.send(line[len(line) // 2 :])

    def connection_lost(self) -> None:
        self._next_us = None

    def data_received(self, data: bytes, now_us: int) -> None:
        self.received += data  # the oximeter has no input protocol (§1)

    def tick(self, now_us: int) -> None:
        if self._next_us is None:
            return
        while self._next_us <= now_us:
            if not self.silent:
                self.send(self.codec.encode(self._record(self._next_us)))
                self.lines_sent += 1
            self._next_us += self.period_us

    def _record(self, now_us: int) -> MasimoRecord:
        values = self.feed.numerics(now_us)
        spo2 = _fit(values.get(Channel.SPO2), 3)
        bpm = _fit(values.get(Channel.PULSE), 3)
        pi = _fit(values.get(Channel.PERF_INDEX), 2, 2)
        sensor_off = spo2 is None and bpm is None
        exc = self.exc if self.exc is not None else (EXC_SENSOR_OFF if sensor_off else 0)
        alarm = self.alarm if self.alarm is not None else (ALARM_ACTIVE if sensor_off else 0)
        t = time.gmtime(now_us // 1_000_000)
        return MasimoRecord(
            date=time.strftime("%m/%d/%y", t),
            time=time.strftime("%H:%M:%S", t),
            spo2=spo2 if "SPO2" in self.layout else None,
            bpm=bpm if "BPM" in self.layout else None,
            pi=float(pi) if pi is not None and "PI" in self.layout else None,
            alarm=alarm,
            exc=exc,
            serial=self.serial,
            layout=self.layout,
        )
