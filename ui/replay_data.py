"""A recorded session loaded for review: what the replay window and the PDF report share.

Why it is built this way (DESIGN §3, §6; CONVENTIONS 9):

- Loading is cheap and done once. Each numeric channel comes back with ONE indexed range
  query (``SessionReader.numeric``, index ``ix_numeric_session_channel_t``) straight into
  numpy arrays; waves are never loaded whole, only the window around the cursor
  (:class:`WaveWindow`, one indexed query per re-read, cached so that playback re-reads a
  wave every ~40 s of session time, not every frame).
- Replay is reader -> pacer -> the same consumers as live (CONVENTIONS 9). The consumers
  are the live view's own widgets (tiles, trends, wave strips, pump panel, alarm bar); what
  they read in replay is :class:`CursorBuffers`, which answers the questions a
  :class:`~kapmonitor.live.LiveBuffers` answers ("the latest value of HR", "the ring's
  version", "the last quality", "the pumps") as of a cursor time instead of now. So a tile
  shows in replay exactly what it showed at the bedside at that moment: the last value at
  or before the cursor, grey with its age when older than the channel's stale time, "--"
  with the reason when the device flagged it.
- Values the live buffers draw as gaps are gaps here too: a value flagged invalid, sensor
  off or out of range becomes NaN, and a device that went stale or disconnected breaks the
  lines of the channels it fed (as ``LiveBuffers._break`` does).
- Alarm state at any time is rebuilt from the recorded alarm events (raise, escalate,
  acknowledge, clear, latch, reset) into the engine's own :class:`ActiveAlarm` shape, so the
  live alarm bar can show what was alarming at the cursor.
- Nothing here imports Qt: the report and the benchmark use it without widgets.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import ActiveAlarm, AlarmKind
from kapmonitor.export.common import SessionMeta, load_meta
from kapmonitor.live import Snapshot
from kapmonitor.model import (
    CHANNELS,
    Channel,
    ChannelKind,
    DeviceState,
    PumpAlarm,
    PumpRunState,
    PumpState,
    Quality,
    device_of,
)
from kapmonitor.store.reader import Entry, SessionReader, WaveSeries
from kapmonitor.store.schema import wave_table

__all__ = [
    "NOT_A_MEASUREMENT",
    "AlarmTimeline",
    "ChannelStats",
    "CursorBuffers",
    "DisplaySeries",
    "PumpTimeline",
    "RecordedSession",
    "ReplayDoseView",
    "TimelineItem",
    "WaveWindow",
    "alarm_text",
    "decimate_minmax",
    "format_session_clock",
    "stats_for",
]

_US = 1_000_000
#: Qualities drawn as gaps, as the live buffers do (kapmonitor/live.py).
NOT_A_MEASUREMENT = Quality.INVALID | Quality.SENSOR_OFF | Quality.OUT_OF_RANGE
#: the suffix the alarm engine puts on the clear of a latched condition
_LATCHED_SUFFIX = "; latched until reset"
_BREAK_STATES = {DeviceState.DISCONNECTED.value, DeviceState.STALE.value,
                 DeviceState.STOPPED.value}
NUMERIC_CHANNELS = tuple(c for c in Channel if CHANNELS[c].kind is ChannelKind.NUMERIC)
WAVE_CHANNELS = (Channel.PLETH, Channel.ECG, Channel.CO2_WAVE)


def format_session_clock(t_us: int, ref_us: int | None) -> str:
    """'T+12:34', 'T+1:02:03', 'T-03:10' (baseline): the live header's clock format."""
    if ref_us is None:
        return "T --:--"
    d = (t_us - ref_us) / _US
    sign = "+" if d >= 0 else "-"
    s = int(abs(d))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"T{sign}{h}:{m:02d}:{sec:02d}" if h else f"T{sign}{m:02d}:{sec:02d}"


# ----------------------------------------------------------------------------- series


@dataclass(frozen=True, slots=True)
class DisplaySeries:
    """One numeric channel as the display draws it: times, values (NaN where the live
    view would draw a gap) and the stored quality flags."""

    t_us: np.ndarray
    values: np.ndarray
    quality: np.ndarray
    sources: frozenset[str]

    def __len__(self) -> int:
        return int(self.t_us.shape[0])

    def index_at(self, t_us: int) -> int:
        """How many samples are at or before ``t_us``."""
        return int(np.searchsorted(self.t_us, t_us, side="right"))


def decimate_minmax(t_us: np.ndarray, values: np.ndarray, buckets: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """At most ``2 * buckets`` points that keep every bucket's minimum and maximum in time
    order (peak decimation: a one-sample desaturation survives), and a bucket with no finite
    value stays a gap (NaN). Returns the input when it is already small enough."""
    n = int(t_us.shape[0])
    if n <= 2 * buckets or buckets <= 0:
        return t_us, values
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    starts, ends = edges[:-1], edges[1:]
    finite = np.isfinite(values)
    big = np.where(finite, values, np.inf)
    small = np.where(finite, values, -np.inf)
    # index of the min and max of each bucket (reduceat on argmin needs a trick: use the
    # sorted order of (bucket, value) pairs)
    bucket_of = np.repeat(np.arange(buckets), ends - starts)
    order_min = np.lexsort((big, bucket_of))
    order_max = np.lexsort((-small, bucket_of))
    i_min = order_min[starts]
    i_max = order_max[starts]
    has = np.add.reduceat(finite.astype(np.int64), starts) > 0
    lo = np.minimum(i_min, i_max)
    hi = np.maximum(i_min, i_max)
    idx = np.empty(2 * buckets, dtype=np.int64)
    idx[0::2], idx[1::2] = lo, hi
    t = t_us[idx]
    v = values[idx].astype(np.float64, copy=True)
    gap = np.repeat(~has, 2)
    v[gap] = np.nan
    return t, v


# ----------------------------------------------------------------------------- alarms


class AlarmTimeline:
    """The alarm state at any time, rebuilt from the recorded alarm events with the
    engine's rules (kapmonitor/alarms.py): a raise makes a condition present, escalation
    cancels an acknowledgement, a reminder lapses it, a clear removes the condition unless
    the engine latched it ("; latched until reset"), a reset removes a latched one. System
    events (audio pause and resume) are not conditions."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.times: list[int] = []
        self.states: list[tuple[ActiveAlarm, ...]] = []
        conds: dict[str, dict[str, Any]] = {}
        for ev in events:
            if ev["kind"] == AlarmKind.SYSTEM.value:
                continue
            key, action, t = ev["condition"], ev["action"], int(ev["t_us"])
            c = conds.get(key)
            prio = Priority(ev["priority"])
            if action == "raise" or c is None:
                if action in ("clear", "reset"):
                    continue  # a clear of a condition raised before the record began
                if c is None:
                    c = conds[key] = {"raised_us": t, "peak": prio}
                c.update(present=True, latched=False, acknowledged=False, priority=prio,
                         message=ev["message"], value=ev["value"], limit=ev["limit"],
                         channel=ev["channel"], kind=ev["kind"], updated_us=t)
                c["peak"] = max(c["peak"], prio, key=lambda p: p.rank)
            elif action in ("escalate", "de-escalate"):
                c.update(priority=prio, message=ev["message"], value=ev["value"],
                         limit=ev["limit"], updated_us=t)
                if action == "escalate":
                    c["acknowledged"] = False
                    c["peak"] = max(c["peak"], prio, key=lambda p: p.rank)
            elif action == "acknowledge":
                c["acknowledged"] = True
            elif action == "reminder":
                c["acknowledged"] = False
            elif action == "clear":
                if ev["message"].endswith(_LATCHED_SUFFIX):
                    c.update(present=False, latched=True, message=ev["message"],
                             updated_us=t)
                else:
                    del conds[key]
            elif action == "reset":
                del conds[key]
            self.times.append(t)
            self.states.append(self._active(conds))

    @staticmethod
    def _active(conds: Mapping[str, dict[str, Any]]) -> tuple[ActiveAlarm, ...]:
        out = []
        for key, c in conds.items():
            kind = AlarmKind(c["kind"])
            audible = c["present"] and not c["acknowledged"] and kind is not AlarmKind.ADVISORY
            ch = c["channel"]
            out.append(ActiveAlarm(
                key=key, channel=Channel(ch) if ch in Channel._value2member_map_ else None,
                kind=kind, priority=c["priority"], peak_priority=c["peak"],
                message=c["message"], value=c["value"], limit=c["limit"], source="",
                raised_us=c["raised_us"], updated_us=c["updated_us"], present=c["present"],
                latched=c["latched"], acknowledged=c["acknowledged"], audible=audible,
                sounding=audible))
        out.sort(key=lambda a: (-a.priority.rank, a.raised_us))
        return tuple(out)

    def index_at(self, t_us: int) -> int:
        """A number that changes exactly when the alarm state does (for redraw checks)."""
        return bisect.bisect_right(self.times, t_us)

    def active_at(self, t_us: int) -> tuple[ActiveAlarm, ...]:
        i = self.index_at(t_us)
        return self.states[i - 1] if i else ()


# ----------------------------------------------------------------------------- pumps


def pump_state(row: Mapping[str, Any]) -> PumpState:
    """A recorded pump event back as the model's PumpState."""
    try:
        state = PumpRunState(row["state"])
    except ValueError:
        state = PumpRunState.UNKNOWN
    alarms = tuple(PumpAlarm(str(a.get("code", "")), str(a.get("raw", "")),
                             str(a.get("text", ""))) for a in row.get("alarms") or ())
    return PumpState(t_us=int(row["t_us"]), state=state, rate_ml_h=row["rate_ml_h"],
                     volume_infused_ml=row["volume_infused_ml"], vtbi_ml=row["vtbi_ml"],
                     bolus_ml=row["bolus_ml"], drug=row["drug"],
                     concentration_mg_ml=row["concentration_mg_ml"], alarms=alarms,
                     infusion_id=int(row.get("infusion_id") or 0), source=row["source"])


class PumpTimeline:
    """Each pump's state at any time, and the moments worth a marker: a change of run
    state, of rate, of alarms, or a new infusion."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.by_source: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}
        for e in events:
            times, rows = self.by_source.setdefault(e["source"], ([], []))
            times.append(int(e["t_us"]))
            rows.append(e)
        self._cache: dict[tuple[str, int], PumpState] = {}

    def states_at(self, t_us: int) -> dict[str, PumpState]:
        out = {}
        for source, (times, rows) in self.by_source.items():
            i = bisect.bisect_right(times, t_us)
            if i:
                key = (source, i - 1)
                st = self._cache.get(key)
                if st is None:
                    st = self._cache[key] = pump_state(rows[i - 1])
                out[source] = st
        return out

    def index_at(self, t_us: int) -> tuple[int, ...]:
        return tuple(bisect.bisect_right(times, t_us) for times, _ in self.by_source.values())

    def changes(self) -> list[tuple[dict[str, Any], str]]:
        """(event, description) for each notable change, in time order."""
        out = []
        several = len(self.by_source) > 1
        for source, (_, rows) in self.by_source.items():
            prev: dict[str, Any] | None = None
            for r in rows:
                codes = [a.get("text") or a.get("code") for a in r["alarms"]]
                pcodes = ([a.get("text") or a.get("code") for a in prev["alarms"]]
                          if prev is not None else [])
                rate = r["rate_ml_h"]
                changed = (prev is None or r["state"] != prev["state"]
                           or codes != pcodes or r["infusion_id"] != prev["infusion_id"]
                           or (rate is not None and prev["rate_ml_h"] is not None
                               and abs(rate - prev["rate_ml_h"]) >= 0.05
                               and r["state"] == "running"))
                if changed:
                    text = f"Pump {r['state'].upper()}"
                    if r["state"] in ("running", "bolus") and rate is not None:
                        text += f" {rate:g} mL/h"
                    if r["state"] == "complete":
                        text += " (VTBI reached)"
                    if codes:
                        text = "Pump alarm: " + ", ".join(str(c) for c in codes)
                    if r["volume_infused_ml"] is not None and r["state"] != "running":
                        text += f", {r['volume_infused_ml']:.1f} mL infused"
                    if several:
                        text = f"{source}: {text}"
                    out.append((r, text))
                prev = r
        out.sort(key=lambda x: (x[0]["t_us"], x[0]["id"]))
        return out


# ----------------------------------------------------------------------------- timeline


@dataclass(frozen=True, slots=True)
class TimelineItem:
    """One row of the replay's entries list: an annotation (with its amendment history),
    an alarm event, a pump change or a device state change, at ``t_us``."""

    t_us: int
    kind: str  # observation, cue, assessment, phase, gap, alarm, pump, device
    text: str
    author: str = ""
    priority: str | None = None  # alarms
    action: str | None = None  # alarms
    history: tuple[Entry, ...] = ()
    entry: Entry | None = None

    @property
    def amended(self) -> bool:
        return bool(self.history)


# ----------------------------------------------------------------------------- session


@dataclass
class RecordedSession:
    """A recorded session, loaded once for replay or a report."""

    engine: Engine
    session_id: int
    meta: SessionMeta
    numerics: dict[Channel, DisplaySeries]
    wave_channels: tuple[Channel, ...]
    entries: list[Entry]
    alarm_events: list[dict[str, Any]]
    pump_events: list[dict[str, Any]]
    device_events: list[dict[str, Any]]
    alarms: AlarmTimeline = field(init=False)
    pumps: PumpTimeline = field(init=False)

    def __post_init__(self) -> None:
        self.alarms = AlarmTimeline(self.alarm_events)
        self.pumps = PumpTimeline(self.pump_events)

    @classmethod
    def load(cls, engine: Engine, session_id: int) -> RecordedSession:
        """Everything but the waves, with one query per numeric channel."""
        meta = load_meta(engine, session_id)
        reader = SessionReader(engine, session_id)
        device_events = reader.device_events()
        numerics: dict[Channel, DisplaySeries] = {}
        for ch in NUMERIC_CHANNELS:
            s = reader.numeric(ch)
            if len(s) == 0:
                continue
            values = s.values.copy()
            values[(s.quality & int(NOT_A_MEASUREMENT)) != 0] = np.nan
            series = DisplaySeries(s.t_us, values, s.quality, frozenset(s.source))
            numerics[ch] = _with_breaks(series, device_events)
        with engine.connect() as conn:
            waves = tuple(ch for ch in WAVE_CHANNELS if conn.execute(
                select(wave_table.c.t_us).where(wave_table.c.session_id == session_id,
                                                wave_table.c.channel == ch.value).limit(1)
            ).first() is not None)
        return cls(engine, session_id, meta, numerics, waves, reader.entries(),
                   reader.alarm_events(), reader.pump_events(), device_events)

    # -- time --------------------------------------------------------------------------

    @property
    def ref_us(self) -> int:
        """Session time zero: the infusion start, else the session's creation."""
        return self.meta.origin_us

    @property
    def t0_us(self) -> int | None:
        return self.meta.t0_us

    @property
    def start_us(self) -> int:
        firsts = [int(s.t_us[0]) for s in self.numerics.values() if len(s)]
        return min([self.meta.created_us, *firsts])

    @property
    def end_us(self) -> int:
        """The end of the record: the close, else the last data (open or recovered)."""
        ends = [self.meta.end_us, *(int(s.t_us[-1]) for s in self.numerics.values()
                                    if len(s))]
        if self.meta.closed_us is not None:
            return max(self.meta.closed_us, self.start_us)
        return max(ends)

    @property
    def row(self) -> dict[str, Any]:
        return self.meta.row

    def config(self) -> SimpleNamespace:
        """The programme as the pump panel reads it from a live session's config."""
        r = self.row
        return SimpleNamespace(**{k: r.get(k) for k in (
            "weight_kg", "weight_basis", "dose_mg_per_kg", "duration_min",
            "concentration_mg_ml", "bag_ml", "route", "room", "clinicians", "protocol")},
            patient=self.meta.patient)

    # -- values ------------------------------------------------------------------------

    def value_at(self, channel: Channel, t_us: int) -> tuple[int, float, int] | None:
        """(time, value, quality) of the last sample at or before ``t_us``."""
        s = self.numerics.get(channel)
        if s is None:
            return None
        i = s.index_at(t_us)
        if i == 0:
            return None
        return int(s.t_us[i - 1]), float(s.values[i - 1]), int(s.quality[i - 1])

    def phase_at(self, t_us: int) -> str | None:
        """The label of the last phase marker at or before ``t_us``."""
        label = None
        for e in self.entries:
            if e.t_us > t_us:
                break
            if e.kind == "phase":
                label = e.text
        return label

    def timeline(self) -> list[TimelineItem]:
        """Every entry, alarm event, pump change and device break, in time order."""
        items: list[TimelineItem] = []
        for e in self.entries:
            items.append(TimelineItem(e.t_us, e.kind, e.text, e.author, history=e.history,
                                      entry=e))
        for ev in self.alarm_events:
            if ev["action"] in ("reminder",):
                continue
            text = alarm_text(ev)
            # "...: acknowledged by RN A" names the user already
            user = "" if ev["user"] and f"by {ev['user']}" in text else ev["user"]
            items.append(TimelineItem(int(ev["t_us"]), "alarm", text, user,
                                      priority=ev["priority"], action=ev["action"]))
        for row, text in self.pumps.changes():
            items.append(TimelineItem(int(row["t_us"]), "pump", text))
        last: dict[str, str] = {}
        for d in self.device_events:
            prev = last.get(d["source"])
            last[d["source"]] = d["state"]
            if d["state"] in _BREAK_STATES - {DeviceState.STOPPED.value} or (
                    d["state"] == DeviceState.STREAMING.value and prev in _BREAK_STATES):
                text = f"{d['source']}: {d['state'].upper()}"
                if d["detail"]:
                    text += f" ({d['detail']})"
                items.append(TimelineItem(int(d["t_us"]), "device", text))
        order = {"phase": 0, "pump": 1, "alarm": 3, "device": 2}
        items.sort(key=lambda i: (i.t_us, order.get(i.kind, 4)))
        return items


def alarm_text(ev: Mapping[str, Any]) -> str:
    """A recorded alarm event as one line: '*** SpO2 LOW 85 % (< 88)' on a raise; the
    engine's own words ('...: acknowledged by RN A') otherwise."""
    from kapmonitor.alarms import AlarmAction

    action = ev["action"]
    stars = {"high": "***", "medium": "**", "low": "*"}.get(ev["priority"], "")
    msg = ev["message"] or ev["condition"]
    if ev["kind"] == AlarmKind.ADVISORY.value and action == AlarmAction.RAISE.value:
        return f"CONSIDER HOLD: {msg.split(':', 1)[1].strip() if ':' in msg else msg}"
    if action in (AlarmAction.RAISE.value, AlarmAction.ESCALATE.value,
                  AlarmAction.DEESCALATE.value):
        word = {"escalate": " (escalated)", "de-escalate": " (de-escalated)"}.get(action, "")
        return f"{stars} {msg}{word}".strip()
    if action == AlarmAction.CLEAR.value:
        return f"ended: {msg}"
    if action == AlarmAction.AUDIO_PAUSE.value:
        return "audio paused" + (f" by {ev['user']}" if ev["user"] else "")
    if action == AlarmAction.AUDIO_RESUME.value:
        return "audio pause ended"
    return msg


def _with_breaks(series: DisplaySeries, device_events: list[dict[str, Any]]) -> DisplaySeries:
    """A NaN after the last sample before each stale/disconnected/stopped state of a
    device that fed this channel, as the live buffers insert one (a break, not a line)."""
    devices = {device_of(s) for s in series.sources}
    times = [int(d["t_us"]) for d in device_events
             if d["state"] in _BREAK_STATES and d["source"] in devices]
    if not times or len(series) == 0:
        return series
    t, v, q = series.t_us, series.values, series.quality
    at, new_t = [], []
    for te in times:
        i = int(np.searchsorted(t, te, side="right"))
        if i == 0 or math.isnan(v[i - 1]):
            continue
        at.append(i)
        new_t.append(max(te, int(t[i - 1]) + 1))
    if not at:
        return series
    return DisplaySeries(np.insert(t, at, new_t), np.insert(v, at, np.nan),
                         np.insert(q, at, 0), series.sources)


# ----------------------------------------------------------------------------- cursor


class _CursorRing:
    """One channel as a ring buffer would look at the cursor: ``latest()`` is the last
    sample at or before it, ``version`` moves whenever the cursor crosses a sample."""

    __slots__ = ("_k", "series")

    def __init__(self, series: DisplaySeries) -> None:
        self.series = series
        self._k = 0

    def move(self, t_us: int) -> None:
        self._k = self.series.index_at(t_us)

    @property
    def version(self) -> int:
        return self._k

    def __len__(self) -> int:
        return self._k

    def latest(self) -> tuple[int, float] | None:
        k = self._k
        if k == 0:
            return None
        return int(self.series.t_us[k - 1]), float(self.series.values[k - 1])

    def snapshot(self, since_us: int | None = None) -> Snapshot:
        k = self._k
        lo = 0 if since_us is None else int(np.searchsorted(self.series.t_us[:k], since_us))
        return Snapshot(self.series.t_us[lo:k].copy(), self.series.values[lo:k].copy(), k)

    def quality(self) -> Quality | None:
        k = self._k
        return Quality(int(self.series.quality[k - 1])) if k else None


class _Qualities(Mapping[Channel, Quality]):
    """``LiveBuffers.last_quality`` at the cursor."""

    def __init__(self, rings: Mapping[Channel, _CursorRing]) -> None:
        self._rings = rings

    def __getitem__(self, ch: Channel) -> Quality:
        ring = self._rings[ch]
        q = ring.quality()
        if q is None:
            raise KeyError(ch)
        return q

    def __iter__(self) -> Iterator[Channel]:
        return (c for c, r in self._rings.items() if r.version)

    def __len__(self) -> int:
        return sum(1 for r in self._rings.values() if r.version)


class CursorBuffers:
    """What the live widgets read (``LiveBuffers``' interface) as of a cursor time:
    ``ring(ch)``, ``latest(ch)``, ``last_quality``, ``pumps``, ``devices``. Moving the cursor
    is a binary search per channel, so a scrub costs microseconds here."""

    def __init__(self, rec: RecordedSession) -> None:
        self.rec = rec
        self._rings = {ch: _CursorRing(s) for ch, s in rec.numerics.items()}
        self.last_quality: Mapping[Channel, Quality] = _Qualities(self._rings)
        self.pumps: dict[str, PumpState] = {}
        self.devices: dict[str, Any] = {}
        self.cursor_us = rec.start_us
        self._pump_index: tuple[int, ...] | None = None
        self.move(self.cursor_us)

    def move(self, t_us: int) -> None:
        self.cursor_us = t_us
        for ring in self._rings.values():
            ring.move(t_us)
        idx = self.rec.pumps.index_at(t_us)
        if idx != self._pump_index:
            self._pump_index = idx
            self.pumps = self.rec.pumps.states_at(t_us)

    def ring(self, channel: Channel) -> _CursorRing | None:
        return self._rings.get(channel)

    def channels(self) -> list[Channel]:
        return list(self._rings)

    def latest(self, channel: Channel) -> tuple[int, float] | None:
        ring = self._rings.get(channel)
        return ring.latest() if ring is not None else None

    def rate_hz(self, channel: Channel) -> float | None:
        return None


class ReplayDoseView:
    """The pump panel's view of a session (``config``, ``last_dose``, ``plasma_now()``) at
    the cursor: the delivered dose and the plasma estimate as they were recorded then."""

    def __init__(self, rec: RecordedSession, buffers: CursorBuffers) -> None:
        self.rec = rec
        self.buffers = buffers
        self.config = rec.config()
        self._dose_key: tuple[int, float] | None = None
        self._dose: SimpleNamespace | None = None

    @property
    def last_dose(self) -> SimpleNamespace | None:
        last = self.buffers.latest(Channel.DELIVERED_DOSE)
        if last is None or math.isnan(last[1]):
            self._dose_key, self._dose = None, None
            return None
        if last != self._dose_key:  # same object while unchanged: the panel skips redraws
            w = self.config.weight_kg
            self._dose_key = last
            self._dose = SimpleNamespace(delivered_mg=last[1],
                                         delivered_mg_per_kg=last[1] / w if w else None)
        return self._dose

    def plasma_now(self) -> float | None:
        last = self.buffers.latest(Channel.PLASMA_ESTIMATE)
        return None if last is None or math.isnan(last[1]) else last[1]


class WaveWindow:
    """The samples of one wave around the cursor, read with one indexed query per re-read
    (``SessionReader.wave(ch, t_from, t_to)``) and cached with a margin, so scrubbing within
    the margin and playback re-read rarely."""

    def __init__(self, reader: SessionReader, channel: Channel, margin_s: float = 20.0
                 ) -> None:
        self.reader = reader
        self.channel = channel
        self.margin_us = int(margin_s * _US)
        self._lo = self._hi = 0
        self._data: WaveSeries | None = None
        self.reads = 0

    def get(self, t_from: int, t_to: int) -> tuple[np.ndarray, np.ndarray]:
        if self._data is None or t_from < self._lo or t_to > self._hi:
            self._lo, self._hi = t_from - self.margin_us, t_to + self.margin_us
            self._data = self.reader.wave(self.channel, self._lo, self._hi)
            self.reads += 1
        d = self._data
        a = int(np.searchsorted(d.t_us, t_from, side="left"))
        b = int(np.searchsorted(d.t_us, t_to, side="right"))
        return d.t_us[a:b], d.values[a:b]


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Summary of one numeric channel over the session, for the report's table."""

    channel: Channel
    n: int
    minimum: float | None
    min_t_us: int | None
    maximum: float | None
    max_t_us: int | None
    baseline: float | None  # median of the 10 min before t0
    baseline_n: int
    last: float | None


def stats_for(rec: RecordedSession, channels: tuple[Channel, ...] | None = None
              ) -> list[ChannelStats]:
    """The report's per-channel statistics in channel order."""
    out = []
    for ch in channels or tuple(rec.numerics):
        s = rec.numerics.get(ch)
        if s is None:
            continue
        ok = np.isfinite(s.values)
        if not ok.any():
            continue
        t, v = s.t_us[ok], s.values[ok]
        i_min, i_max = int(np.argmin(v)), int(np.argmax(v))
        base, nb = None, 0
        if rec.t0_us is not None:
            m = (t >= rec.t0_us - 600 * _US) & (t < rec.t0_us)
            nb = int(m.sum())
            if nb:
                base = float(np.median(v[m]))
        out.append(ChannelStats(ch, int(v.shape[0]), float(v[i_min]), int(t[i_min]),
                                float(v[i_max]), int(t[i_max]), base, nb, float(v[-1])))
    return out
