"""What the chart record (the PDF report, issue 13 item 12) computes from a recorded session:
the vital-signs flowsheet, the dose given in running segments with the pauses between them,
and the alarm events in plain words. Pure (no Qt), so it is tested without a display and any
other export can print the same rows.

Why these rules:

- **Flowsheet rows.** A paper anaesthesia/sedation chart has a row at fixed intervals and
  one at every blood pressure; clinicians read it down a column. So: one row every
  :data:`INTERVAL_US` (5 min, the NIBP cadence of clinical.md §4.1) of *session time*,
  anchored on the infusion start (t0), so the rows fall at T-10:00, T-05:00, T+00:00 ...
  from the first vital-sign data to the end of the record (baseline rows are negative),
  plus one row at every NIBP measurement at the measurement's own time. A measurement that
  lands on the same second as a 5-min row shares that row (two rows printing the same time
  would read as a duplicate).
- **Values in a row.** HR, SpO2, RR and EtCO2 are the measured value *nearest* the row's
  time within :data:`NEAREST_US` (±60 s), never an average and never carried forward
  further than that: a gap in the record stays a gap ("—") on the chart. A value counts
  only if the export rule says it is a measurement (``common.usable``: finite, not flagged
  invalid, out of range, sensor off or calibrating).
- **NIBP measurements.** A monitor sends NIBP either once per measurement (IntelliVue) or
  repeats the held values with every frame (GE S/5). A measurement is therefore a usable
  systolic (else diastolic) value that differs from the previous one, or that follows it
  by more than :data:`NIBP_REPEAT_US`, or that follows an unusable one; the held repeats
  of a GE S/5 collapse into the first. Limitation: a GE S/5 reporting two consecutive
  measurements with identical values shows them as one. Diastolic and mean belong to the
  systolic stamped within :data:`NIBP_MATCH_US` (as the FHIR export pairs them).
- **Dose segments.** The pump's own state reports (every change and every poll, stored as
  pump events) are cut into segments: a *running* segment per stretch at one rate (a rate
  change of 0.05 mL/h or more starts a new one), and a *hold* for every stretch without
  delivery (paused, stopped, stopped by an alarm, complete). A hold followed by running
  again is a pause (or a stop and restart) and carries its duration, so a 5.5-min hold
  can no longer hide inside "running from +00:00 to +45:24". Volume per segment comes from
  the pump's counter (a counter that restarts, as on a new infusion, is summed, not
  subtracted), mg = mL x concentration. The cause of a hold is the pump alarm that the
  pump reported when it stopped and that it did not already report while running (a
  near-end notice during the run is not why a clinician paused).
- **Alarm words.** The screen marks priority with asterisks (IEC 60601-1-8 visual
  convention); on paper they read as footnote marks, so the record writes the priority as
  a word: "HIGH — SpO2 LOW 85 % (< 88)".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kapmonitor.model import Channel
from kapmonitor.store.reader import NumericSeries, SessionReader

from .common import SessionMeta, load_meta, usable

__all__ = [
    "FLOWSHEET_CHANNELS",
    "INTERVAL_US",
    "NEAREST_US",
    "NIBP_CHANNELS",
    "ChartData",
    "DoseSegment",
    "FlowsheetRow",
    "NibpMeasurement",
    "alarm_event_word",
    "alarm_wording",
    "dose_segments",
    "duration_text",
    "flowsheet_rows",
    "nibp_measurements",
    "pump_at",
    "session_clock",
]

_US = 1_000_000
#: one scheduled row every 5 min of session time (clinical.md §4.1: NIBP every 5 min)
INTERVAL_US = 5 * 60 * _US
#: a continuous value stands for a row's time only if measured within this of it
NEAREST_US = 60 * _US
#: held NIBP values repeated by the monitor within this are the same measurement
NIBP_REPEAT_US = 90 * _US
#: the parts of one NIBP measurement are stamped within this of each other
NIBP_MATCH_US = 2 * _US
#: a rate change of at least this starts a new running segment (the pump panel's rule)
RATE_STEP_ML_H = 0.05
#: a pump alarm reported this soon after the pump stopped still explains the stop (a pump
#: polled every few seconds may report the alarm on the poll after the state change)
CAUSE_WINDOW_US = 10 * _US

FLOWSHEET_CHANNELS = (Channel.HR, Channel.SPO2, Channel.RR, Channel.ETCO2)
NIBP_CHANNELS = (Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN)
_DELIVERING = frozenset({"running", "bolus"})


def session_clock(t_us: int, origin_us: int) -> str:
    """'T+12:34', 'T-03:10' (baseline), 'T+1:02:03': the live header's clock format, so
    the chart and the screen name a moment the same way."""
    d = (int(t_us) - int(origin_us)) / _US
    sign = "+" if d >= 0 else "-"
    s = int(abs(d))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"T{sign}{h}:{m:02d}:{sec:02d}" if h else f"T{sign}{m:02d}:{sec:02d}"


def duration_text(seconds: float) -> str:
    """'5 min 30 s', '45 s', '1 h 02 min': a length of time as a nurse would write it."""
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {sec:02d} s" if sec else f"{m} min"
    return f"{sec} s"


# ----------------------------------------------------------------------------- flowsheet


@dataclass(frozen=True, slots=True)
class NibpMeasurement:
    """One NIBP measurement: its time and its parts (None when the part was not sent)."""

    t_us: int
    sys: float | None
    dia: float | None
    mean: float | None

    def text(self) -> str:
        """'128/81 (97)': systolic/diastolic (mean), a missing part as '—'."""
        def f(v: float | None) -> str:
            return "\u2014" if v is None else f"{v:.0f}"

        out = f"{f(self.sys)}/{f(self.dia)}"
        return out + (f" ({f(self.mean)})" if self.mean is not None else "")


@dataclass(frozen=True, slots=True)
class FlowsheetRow:
    """One row of the flowsheet: at ``t_us``; ``scheduled`` when it is a 5-min row,
    ``nibp`` when an NIBP measurement was taken at this time; ``values`` holds HR, SpO2,
    RR and EtCO2 (None: nothing measured within ±60 s); ``pump`` what the pump was doing."""

    t_us: int
    origin_us: int
    scheduled: bool
    nibp: NibpMeasurement | None
    values: Mapping[Channel, float | None]
    pump: str = "\u2014"

    @property
    def session_s(self) -> float:
        return (self.t_us - self.origin_us) / _US

    @property
    def session_time(self) -> str:
        return session_clock(self.t_us, self.origin_us)


def _usable_part(s: NumericSeries) -> tuple[np.ndarray, np.ndarray]:
    ok = usable(s.values, s.quality)
    return s.t_us[ok], s.values[ok]


def _nearest(t: np.ndarray, v: np.ndarray, at: int, within: int) -> float | None:
    """The value of the sample nearest ``at`` within ``within`` (the earlier one on a
    tie: what was on the screen at that moment), else None."""
    if not t.size:
        return None
    i = int(np.searchsorted(t, at))
    best: tuple[int, int] | None = None
    for j in (i - 1, i):
        if 0 <= j < t.size:
            d = abs(int(t[j]) - at)
            if d <= within and (best is None or d < best[0]):
                best = (d, j)
    return None if best is None else float(v[best[1]])


def nibp_measurements(series: Mapping[Channel, NumericSeries]) -> list[NibpMeasurement]:
    """Every NIBP measurement in time order (see the module notes for what counts as one:
    held repeats collapse into the first)."""
    sys_, dia, mean = (series.get(c) for c in NIBP_CHANNELS)
    anchor = sys_ if sys_ is not None and len(sys_) else dia
    if anchor is None or not len(anchor):
        return []
    ok = usable(anchor.values, anchor.quality)
    parts = {c: _usable_part(s) for c, s in ((Channel.NIBP_SYS, sys_),
                                                (Channel.NIBP_DIA, dia),
                                                (Channel.NIBP_MEAN, mean)) if s is not None}
    out: list[NibpMeasurement] = []
    prev_key: tuple[float | None, ...] | None = None
    prev_t = 0
    for i in range(len(anchor)):
        if not ok[i]:
            prev_key = None  # an invalid cycle in between: the next value is a new one
            continue
        t = int(anchor.t_us[i])
        vals = tuple(_nearest(*parts[c], t, NIBP_MATCH_US) if c in parts else None
                     for c in NIBP_CHANNELS)
        if prev_key is None or vals != prev_key or t - prev_t > NIBP_REPEAT_US:
            out.append(NibpMeasurement(t, *vals))
        prev_key, prev_t = vals, t
    return out


def flowsheet_rows(series: Mapping[Channel, NumericSeries], *, origin_us: int, end_us: int,
                   segments: Sequence[DoseSegment] = ()) -> list[FlowsheetRow]:
    """The flowsheet: a row every 5 min of session time from the first vital-sign data to
    ``end_us`` and one at every NIBP measurement, in time order."""
    firsts = []
    for c in (*FLOWSHEET_CHANNELS, *NIBP_CHANNELS):
        s = series.get(c)
        if s is not None and len(s):
            t, _ = _usable_part(s)
            if t.size:
                firsts.append(int(t[0]))
    if not firsts:
        return []
    first = min(firsts)
    k0 = math.ceil((first - origin_us) / INTERVAL_US)
    k1 = math.floor((end_us - origin_us) / INTERVAL_US)
    grid = [origin_us + k * INTERVAL_US for k in range(k0, k1 + 1)]
    nibp = [m for m in nibp_measurements(series) if m.t_us <= end_us]
    rows: dict[int, tuple[bool, NibpMeasurement | None]] = {t: (True, None) for t in grid}
    for m in nibp:
        g = origin_us + round((m.t_us - origin_us) / INTERVAL_US) * INTERVAL_US
        if g in rows and session_clock(g, origin_us) == session_clock(m.t_us, origin_us):
            key = g  # it prints the same time as the 5-min row: one row
        else:
            key = m.t_us
        scheduled, prev = rows.get(key, (False, None))
        rows[key] = (scheduled, prev or m)
    parts = {c: _usable_part(series[c]) for c in FLOWSHEET_CHANNELS if c in series}
    out = []
    for t in sorted(rows):
        scheduled, m = rows[t]
        values = {c: (_nearest(*parts[c], t, NEAREST_US) if c in parts else None)
                  for c in FLOWSHEET_CHANNELS}
        out.append(FlowsheetRow(t, origin_us, scheduled, m, values, pump_at(segments, t)))
    return out


# ----------------------------------------------------------------------------- dose


@dataclass(frozen=True, slots=True)
class DoseSegment:
    """A stretch of one pump's record: delivering (``running``/``bolus``) at one rate, or a
    hold (``paused``, ``stopped``, ``alarm``, ``complete``, ``unknown``).

    ``end_us`` is the next change, or the end of the record when ``open_end``;
    ``volume_ml``/``mg`` what the pump delivered in a running segment; ``alarms`` the pump
    alarms that caused a hold (as the pump worded them); ``resumed``: a hold the pump ran
    on after (a pause or a stop and restart, not the end of the infusion)."""

    source: str
    state: str
    start_us: int
    end_us: int
    rate_ml_h: float | None = None
    volume_ml: float | None = None
    mg: float | None = None
    alarms: tuple[str, ...] = ()
    open_end: bool = False
    resumed: bool = False

    @property
    def delivering(self) -> bool:
        return self.state in _DELIVERING

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / _US

    @property
    def is_pause(self) -> bool:
        """A hold between two running segments."""
        return not self.delivering and self.resumed

    def describe(self) -> str:
        """The state in words: 'running 52.5 mL/h', 'PAUSED', 'COMPLETE (VTBI reached)'."""
        if self.delivering:
            rate = f" {self.rate_ml_h:g} mL/h" if self.rate_ml_h is not None else ""
            return f"{self.state}{rate}"
        return _HOLD_WORDS.get(self.state, self.state.upper())


_HOLD_WORDS = {"paused": "PAUSED", "stopped": "STOPPED", "alarm": "STOPPED BY A PUMP ALARM",
               "complete": "COMPLETE (VTBI reached)", "unknown": "STATE UNKNOWN"}


def _alarm_names(event: Mapping[str, Any]) -> list[str]:
    out = []
    for a in event.get("alarms") or ():
        name = a.get("text") or (a.get("code") or "").replace("_", " ") or a.get("raw") or "?"
        if a.get("code") == "unclassified" and a.get("raw"):
            name = f"unclassified (code {a['raw']!r})"
        out.append(str(name))
    return out


def _key(e: Mapping[str, Any]) -> tuple[str, float | None]:
    if e["state"] in _DELIVERING:
        return e["state"], e["rate_ml_h"]
    return "hold", None


def _same(a: tuple[str, float | None], b: tuple[str, float | None]) -> bool:
    """Same segment: both holds, or delivering in the same state at the same rate."""
    if a[0] != b[0]:
        return False
    if a[0] == "hold":
        return True
    if a[1] is None or b[1] is None:
        return a[1] is None and b[1] is None
    return abs(a[1] - b[1]) < RATE_STEP_ML_H


def _delivered_ml(events: Sequence[Mapping[str, Any]]) -> float | None:
    """The volume the pump counted from the first to the last of ``events``; a counter
    that restarts (a new infusion, or a lower reading) adds its new value."""
    total, prev = 0.0, None
    seen = False
    for e in events:
        v = e.get("volume_infused_ml")
        if v is None:
            continue
        if prev is not None:
            pv, pid = prev
            same = e.get("infusion_id", 0) == pid and v >= pv
            total += (v - pv) if same else v
            seen = True
        prev = (float(v), e.get("infusion_id", 0))
    return total if seen else (0.0 if prev is not None else None)


def dose_segments(pump_events: Sequence[Mapping[str, Any]], *, end_us: int,
                  concentration_mg_ml: float | None = None) -> list[DoseSegment]:
    """The running segments and holds of every pump in ``pump_events`` (as
    ``SessionReader.pump_events`` returns them), from each pump's first delivery to
    ``end_us``, in time order. Before the first delivery the pump was only being set up,
    so that is not a hold."""
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for e in sorted(pump_events, key=lambda e: (int(e["t_us"]), e.get("id") or 0)):
        by_source.setdefault(e["source"], []).append(e)
    out: list[DoseSegment] = []
    for source, events in by_source.items():
        first = next((i for i, e in enumerate(events) if e["state"] in _DELIVERING), None)
        if first is None:
            continue
        events = events[first:]
        # cut into runs of the same key: [(start index, end index exclusive)]
        runs: list[tuple[int, int]] = []
        start = 0
        for i in range(1, len(events)):
            if not _same(_key(events[i]), _key(events[start])):
                runs.append((start, i))
                start = i
        runs.append((start, len(events)))
        segs: list[DoseSegment] = []
        last_running: Mapping[str, Any] | None = None
        for n, (a, b) in enumerate(runs):
            ev = events[a:b]
            head = ev[0]
            last = n == len(runs) - 1
            seg_end = int(events[b]["t_us"]) if not last else max(int(end_us),
                                                                    int(ev[-1]["t_us"]))
            conc = head.get("concentration_mg_ml") or concentration_mg_ml
            if head["state"] in _DELIVERING:
                # the first report after the run holds the counter at the stop
                counted = ev if last else [*ev, events[b]]
                ml = _delivered_ml(counted)
                if head["state"] == "bolus" and head.get("bolus_ml") is not None and ml == 0:
                    ml = float(head["bolus_ml"])
                segs.append(DoseSegment(
                    source, head["state"], int(head["t_us"]), seg_end,
                    rate_ml_h=head.get("rate_ml_h"), volume_ml=ml,
                    mg=None if ml is None or not conc else ml * float(conc), open_end=last))
                last_running = ev[-1]
            else:
                before = set(_alarm_names(last_running)) if last_running is not None else set()
                window = [e for e in ev if int(e["t_us"]) - int(head["t_us"]) <= CAUSE_WINDOW_US]
                causes: list[str] = []
                for e in window:
                    for name in _alarm_names(e):
                        # a notice already shown while it ran did not stop it, unless the
                        # pump itself says an alarm stopped it
                        if (name not in before or e["state"] == "alarm") and name not in causes:
                            causes.append(name)
                state = next((e["state"] for e in ev if e["state"] == "alarm"), head["state"])
                segs.append(DoseSegment(source, state, int(head["t_us"]), seg_end,
                                        alarms=tuple(causes), open_end=last,
                                        resumed=not last))
        out.extend(segs)
    out.sort(key=lambda s: (s.start_us, s.source))
    return out


def pump_at(segments: Sequence[DoseSegment], t_us: int) -> str:
    """What the pump(s) did at ``t_us`` in a word or a rate: '52.5 mL/h', 'PAUSED', '—'
    before the infusion; several pumps are joined with ' / '."""
    by_source: dict[str, str] = {}
    for s in segments:
        if s.start_us <= t_us and (t_us < s.end_us or (s.open_end and t_us <= s.end_us)):
            if s.delivering:
                by_source[s.source] = (f"{s.rate_ml_h:g} mL/h" if s.rate_ml_h is not None
                                       else s.state)
            else:
                by_source[s.source] = {"complete": "complete", "alarm": "ALARM STOP"}.get(
                    s.state, s.state.upper())
    return " / ".join(by_source.values()) or "\u2014"


# ----------------------------------------------------------------------------- alarms

_EVENT_WORDS = {"raise": "raised", "escalate": "escalated", "de-escalate": "de-escalated",
                "acknowledge": "acknowledged", "reminder": "reminder",
                "audio-pause": "audio paused", "audio-resume": "audio resumed",
                "audio-off": "audio off", "audio-on": "audio on", "clear": "ended",
                "reset": "reset"}


def alarm_event_word(action: str) -> str:
    """The event column of the record: 'raised', 'acknowledged', 'ended' ..."""
    return _EVENT_WORDS.get(action, action)


def alarm_wording(ev: Mapping[str, Any]) -> str:
    """A recorded alarm event in plain words for paper: the priority as a word on a raise
    or a change of priority ('HIGH — SpO2 LOW 85 % (< 88)'), the engine's own words
    otherwise ('SpO2 LOW 85 % (< 88): acknowledged by RN A', 'ended: ...')."""
    action = ev["action"]
    msg = ev.get("message") or ev.get("condition") or ""
    prio = str(ev.get("priority") or "").upper()
    if ev.get("kind") == "advisory" and action == "raise":
        detail = msg.split(":", 1)[1].strip() if ":" in msg else msg
        return f"{prio} \u2014 CONSIDER HOLD: {detail}" if prio else f"CONSIDER HOLD: {detail}"
    if action in ("raise", "escalate", "de-escalate"):
        suffix = {"escalate": " (escalated)", "de-escalate": " (de-escalated)"}.get(action, "")
        return f"{prio} \u2014 {msg}{suffix}" if prio else f"{msg}{suffix}"
    if action == "clear":  # the engine often says so itself: "APNOEA ended: ..."
        said = any(w in msg.lower() for w in ("ended", "cleared"))
        return msg if said else f"ended: {msg}"
    if action == "audio-pause":
        return "audio paused" + (f" by {ev['user']}" if ev.get("user") else "")
    if action == "audio-resume":
        return "audio pause ended"
    return msg


# ----------------------------------------------------------------------------- loading


@dataclass
class ChartData:
    """The flowsheet, the NIBP measurements and the dose segments of one recorded
    session, read once (one indexed query per channel and one for the pump events)."""

    meta: SessionMeta
    rows: list[FlowsheetRow]
    nibp: list[NibpMeasurement]
    segments: list[DoseSegment]
    end_us: int
    series: dict[Channel, NumericSeries] = field(repr=False, default_factory=dict)

    @property
    def origin_us(self) -> int:
        return self.meta.origin_us

    @property
    def running(self) -> list[DoseSegment]:
        return [s for s in self.segments if s.delivering]

    @property
    def pauses(self) -> list[DoseSegment]:
        return [s for s in self.segments if s.is_pause]

    @classmethod
    def from_reader(cls, reader: SessionReader, meta: SessionMeta | None = None,
                    *, end_us: int | None = None) -> ChartData:
        """Read the session through ``reader``; ``end_us`` defaults to the record's end
        (its close, else its last data)."""
        meta = meta if meta is not None else load_meta(reader.engine, reader.session_id)
        end = int(end_us) if end_us is not None else meta.end_us
        series = {c: reader.numeric(c) for c in (*FLOWSHEET_CHANNELS, *NIBP_CHANNELS)}
        series = {c: s for c, s in series.items() if len(s)}
        segments = dose_segments(reader.pump_events(), end_us=end,
                                 concentration_mg_ml=meta.row.get("concentration_mg_ml"))
        rows = flowsheet_rows(series, origin_us=meta.origin_us, end_us=end, segments=segments)
        return cls(meta, rows, nibp_measurements(series), segments, end, series)
