"""Alarm tones (clinical.md §5.2) and the player that follows the alarm engine's audio state.

Why:

- The tones follow IEC 60601-1-8 as clinical.md §5.2 summarises it: high priority is a
  burst of 10 pulses grouped 3+2, 3+2; medium 3 pulses; low 1 pulse. Each pulse has a
  fundamental in 150-1000 Hz and four harmonics (300-4000 Hz) within 15 dB of it, a rise and
  fall of ~15 % of the pulse, and the §5.2 durations and spacings (UNSURE in the source; the
  values chosen sit inside its ranges). The WAV files are generated with the standard
  library's ``wave`` and numpy into a cache directory on first use, so no binary audio ships
  and a clinic can regenerate them.
- Sound is a second channel only: KAP Monitor is a secondary display, so when there is no
  audio output (no QtMultimedia backend, no device - the usual case offscreen) nothing
  fails; the status reads "no audio output" and the visual alarm carries on.
- The engine decides *whether* it sounds (acknowledge, audio pause, break-through); this
  module only turns ``AudioState.mode == SOUNDING`` at a priority into bursts repeated at the
  §5.2 intervals (high every 10 s, medium every 25 s, low once). Alarm sounds are turned
  off through the engine's AUDIO OFF (a reason, recorded, ending with the session), never
  by a setting that outlives the session.
"""

from __future__ import annotations

import logging
import math
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, QTimer, QUrl, Signal

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import AudioMode, AudioState

__all__ = ["RATE_HZ", "TONES", "AlarmSounder", "Tone", "burst", "write_tones"]

log = logging.getLogger(__name__)

RATE_HZ = 44_100
VERSION = 1  # bump when the tone design changes: the cache file names carry it


@dataclass(frozen=True)
class Tone:
    """One priority's burst: pulse fundamental and timing, in seconds."""

    priority: Priority
    fundamental_hz: float
    pulse_s: float
    spacing_s: float  # silence between pulses inside a group
    groups: tuple[int, ...]  # pulses per group: (3, 2, 3, 2) for high
    group_gap_s: float  # silence between groups
    half_gap_s: float  # extra silence between the two halves of a high burst
    repeat_s: float | None  # burst repeat interval; None: once

    def layout(self) -> list[float]:
        """Start time of each pulse in the burst."""
        starts: list[float] = []
        t = 0.0
        half = len(self.groups) // 2
        for g, n in enumerate(self.groups):
            if g and g == half and len(self.groups) == 4:
                t += self.half_gap_s
            for _ in range(n):
                starts.append(t)
                t += self.pulse_s + self.spacing_s
            t += self.group_gap_s - self.spacing_s
        return starts


TONES: dict[Priority, Tone] = {
    # high: 10 pulses 3+2, 3+2; pulse 150 ms (75-200), spacing 100 ms (50-125)
    Priority.HIGH: Tone(Priority.HIGH, 660.0, 0.150, 0.100, (3, 2, 3, 2), 0.350, 0.700, 10.0),
    # medium: 3 pulses; pulse 200 ms (125-250), spacing 200 ms (125-250)
    Priority.MEDIUM: Tone(Priority.MEDIUM, 523.0, 0.200, 0.200, (3,), 0.200, 0.0, 25.0),
    # low: 1 pulse, once (§5.2: repeat no more often than ~15 s, or not at all)
    Priority.LOW: Tone(Priority.LOW, 440.0, 0.200, 0.200, (1,), 0.200, 0.0, None),
}

#: relative amplitudes of the fundamental and harmonics 2..5: -3 to -10 dB, within 15 dB
HARMONICS = (1.0, 0.7, 0.5, 0.4, 0.32)


def _pulse(f0: float, seconds: float, rate: int = RATE_HZ) -> np.ndarray:
    n = round(seconds * rate)
    t = np.arange(n) / rate
    y = sum(a * np.sin(2 * math.pi * f0 * (k + 1) * t) for k, a in enumerate(HARMONICS))
    ramp = max(1, int(n * 0.15))  # rise/fall 15 % of the pulse (§5.2: 10-20 %)
    env = np.ones(n)
    env[:ramp] = np.linspace(0.0, 1.0, ramp)
    env[-ramp:] = np.linspace(1.0, 0.0, ramp)
    return np.asarray(y) * env


def burst(tone: Tone, rate: int = RATE_HZ) -> np.ndarray:
    """The burst as float samples in [-1, 1]."""
    starts = tone.layout()
    length = starts[-1] + tone.pulse_s + 0.05
    out = np.zeros(round(length * rate))
    p = _pulse(tone.fundamental_hz, tone.pulse_s, rate)
    for s in starts:
        i = round(s * rate)
        out[i:i + p.shape[0]] += p
    peak = float(np.max(np.abs(out))) or 1.0
    return out / peak * 0.8


def write_tones(directory: Path) -> dict[Priority, Path]:
    """Write one WAV per priority into ``directory`` (16-bit mono, 44.1 kHz); files of
    this tone version that exist are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[Priority, Path] = {}
    for prio, tone in TONES.items():
        path = directory / f"alarm_{prio.value}_v{VERSION}.wav"
        if not path.exists():
            samples = (burst(tone) * 32767).astype("<i2")
            tmp = path.with_suffix(".tmp")
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE_HZ)
                w.writeframes(samples.tobytes())
            tmp.replace(path)
        out[prio] = path
    return out


def _default_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("kapmonitor", appauthor=False)) / "sounds"


class AlarmSounder(QObject):
    """Plays the burst of the sounding priority, repeated, while the engine says SOUNDING.

    ``played`` records every burst started (priority, monotonic time) whether or not a
    device exists, so the schedule is testable offscreen."""

    statusChanged = Signal(str)

    def __init__(self, settings: QSettings | None = None, room: str = "", *,
                 cache_dir: Path | None = None, enable_output: bool = True,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.room = room or "default"
        self.cache_dir = cache_dir
        self.played: list[tuple[Priority, float]] = []
        self.priority: Priority | None = None
        self._effects: dict[Priority, object] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._repeat)
        self.output_error = ""
        if enable_output:
            self._open_output()
        else:
            self.output_error = "no audio output"

    # -- output ----------------------------------------------------------------------------

    def _open_output(self) -> None:
        try:
            from PySide6.QtMultimedia import QMediaDevices, QSoundEffect
        except ImportError as exc:  # no multimedia backend (e.g. libpulse missing)
            log.info("alarm sounds disabled: %s", exc)
            self.output_error = "no audio output"
            return
        try:
            if not QMediaDevices.audioOutputs():
                self.output_error = "no audio output"
                return
            paths = write_tones(self.cache_dir or _default_cache())
        except Exception as exc:  # a sound problem must never take the window down
            log.warning("alarm sounds disabled: %s", exc)
            self.output_error = "no audio output"
            return
        for prio, path in paths.items():
            eff = QSoundEffect(self)
            eff.setSource(QUrl.fromLocalFile(str(path)))
            eff.setVolume(0.9)
            self._effects[prio] = eff

    @property
    def available(self) -> bool:
        return bool(self._effects)

    def status(self) -> str:
        """What the alarm bar shows about the output: '' when sound works. Muting is the
        engine's AUDIO OFF (recorded, with a reason, ending with the session): a mute kept
        in the settings by an earlier version is ignored, so no session starts muted
        (issue 13 item 4)."""
        return self.output_error

    # -- following the engine ------------------------------------------------------------------

    def update_state(self, state: AudioState | None) -> None:
        """Follow the engine: start/stop/switch bursts. Cheap when nothing changed."""
        prio = state.priority if state is not None and state.mode is AudioMode.SOUNDING else None
        if prio == self.priority:
            return
        self.priority = prio
        self._timer.stop()
        if prio is None:
            self._stop_sound()
            return
        self._play(prio)

    def _play(self, prio: Priority) -> None:
        self.played.append((prio, time.monotonic()))
        eff = self._effects.get(prio)
        if eff is not None:
            self._stop_sound()
            eff.play()  # type: ignore[attr-defined]
        repeat = TONES[prio].repeat_s
        if repeat is not None:
            self._timer.start(int(repeat * 1000))

    def _repeat(self) -> None:
        if self.priority is not None:
            self._play(self.priority)

    def _stop_sound(self) -> None:
        for eff in self._effects.values():
            eff.stop()  # type: ignore[attr-defined]

    def shutdown(self) -> None:
        self._timer.stop()
        self._stop_sound()
        self.priority = None
