"""EDF+ export: waves at their own rates, numerics as 1-Hz signals, the timeline as EDF+
annotations, for EDF viewers and analysis tools (EDFbrowser, MNE, pyEDFlib).

Written with ``edfio`` (never by hand); read back in the tests by a second library
(pyEDFlib).

- File: EDF+C (continuous), 16-bit samples. Start = the whole second at or before the
  session's creation or first data, whichever is earlier (EDF+ has no sub-second start);
  the header's start date and time are in **UTC** (the recording field says so:
  ``times_UTC``). The data-record duration is the shortest of 1, 2, 4, 5, 8 or 10 s in
  which every signal has a whole number of samples (ECG 500 Hz + pleth 125 Hz + CO2
  62.5 Hz -> 2 s); a rate that fits none is refused with the reason.
- Waves: each sample at its own index ``round((t - start) * rate)`` (contiguous runs
  are laid down sample after sample, so host-time jitter never drops or doubles one).
- Numerics: one sample per second, the last usable reading in [start + k, start + k + 1) s,
  HELD for up to ``hold_s`` seconds (default 10) when the next seconds have none (monitors
  send some numerics every 5 s); NIBP, an intermittent measurement, is held until the next
  one and each measurement is also an annotation at its exact time. Values flagged
  invalid, out of range, sensor off or calibrating are not used (``common.UNUSABLE``).
- **Gap value**: every signal's digital minimum (-32768), which reads back as the
  signal's physical minimum, means "no data" (a wave gap, a numeric with nothing to hold).
  The physical range of each signal is the whole numbers just outside its data
  (floor(min) - 1 to ceil(max) + 1), so real data never reaches the physical minimum.
  Resolution is (physical max - min) / 65535: HR 40-180 /min -> 0.002 /min, pleth
  -1..1 -> 0.00006; a value reads back within half of that.
- Labels are ASCII (``SpO2``, ``EtCO2``), at most 16 characters; dimensions are the EDF
  conventions (``mmHg``, ``degC``, ``/min``, ``%``, ``mV``).
- Annotations (UTF-8 text, onsets in seconds from the start): the session notice (OPEN,
  RECOVERED, DEMO) at 0, the infusion start, every entry in its current version (an amended
  one says so and quotes the original), alarm raises, escalations, acknowledgements and
  clears, pump state and rate changes, NIBP measurements, device link changes, and
  ``gap <channel>`` with the gap's duration where a wave has no data inside the file.
- Patient field: the pseudonym as patient code (spaces as ``_``), sex, birth date and name
  ``X`` (EDF+ for unknown/not given); recording field: start date, the session uid's first
  eight characters as the administration code, ``KAPMonitor`` as equipment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from kapmonitor.model import CHANNELS, Channel, ChannelKind
from kapmonitor.store.reader import NumericSeries, SessionReader, WaveSeries

from .common import (
    ExportError,
    ExportResult,
    SessionMeta,
    atomic_file,
    entry_label,
    load_meta,
    usable,
)

__all__ = ["EDF_DIMENSIONS", "EDF_LABELS", "GAP_DIGITAL", "export_session"]

GAP_DIGITAL = -32768
DIGITAL = (GAP_DIGITAL, 32767)
RECORD_DURATIONS = (1, 2, 4, 5, 8, 10)
INTERMITTENT = frozenset({Channel.NIBP_SYS, Channel.NIBP_DIA, Channel.NIBP_MEAN})
EDF_LABELS: dict[Channel, str] = {
    Channel.HR: "HR", Channel.PULSE: "Pulse", Channel.SPO2: "SpO2",
    Channel.NIBP_SYS: "NIBP sys", Channel.NIBP_DIA: "NIBP dia", Channel.NIBP_MEAN: "NIBP mean",
    Channel.RR: "RR", Channel.ETCO2: "EtCO2", Channel.FICO2: "FiCO2", Channel.TEMP: "Temp",
    Channel.PERF_INDEX: "PI", Channel.PLETH: "Pleth", Channel.ECG: "ECG II",
    Channel.CO2_WAVE: "CO2", Channel.PUMP_RATE: "Pump rate",
    Channel.VOLUME_INFUSED: "Volume infused", Channel.VTBI: "VTBI",
    Channel.DELIVERED_DOSE: "Delivered dose", Channel.PLASMA_ESTIMATE: "Cp estimate",
}
EDF_DIMENSIONS = {"/min": "/min", "%": "%", "mm[Hg]": "mmHg", "Cel": "degC", "1": "",
                  "mV": "mV", "mL/h": "mL/h", "mL": "mL", "mg": "mg", "ng/mL": "ng/mL"}


def _edfio() -> Any:
    try:
        import edfio
    except ImportError:
        raise ExportError("EDF export needs the 'edfio' package: pip install "
                          "'kapmonitor[export]'") from None
    return edfio


def record_duration(rates: Sequence[float]) -> int:
    """The shortest data-record duration in which every rate has whole samples."""
    for d in RECORD_DURATIONS:
        if all(abs(r * d - round(r * d)) < 1e-9 for r in rates):
            return d
    raise ExportError("EDF needs a whole number of samples per data record; the rates "
                      f"{sorted(set(rates))} Hz fit no record of {RECORD_DURATIONS} s")


def physical_range(values: np.ndarray) -> tuple[int, int]:
    """Whole numbers just outside the data, so the gap value (the physical minimum) is
    never a real value and the header fields are exact."""
    if not len(values):
        return (0, 1)
    return (math.floor(float(values.min())) - 1, math.ceil(float(values.max())) + 1)


def _digital(values: np.ndarray, present: np.ndarray, lo: int, hi: int) -> np.ndarray:
    gain = (hi - lo) / (DIGITAL[1] - DIGITAL[0])
    d = np.full(len(values), GAP_DIGITAL, dtype=np.int64)
    d[present] = np.round((values[present] - lo) / gain) + DIGITAL[0]
    if present.any() and (d[present].min() <= GAP_DIGITAL or d[present].max() > DIGITAL[1]):
        raise AssertionError("EDF value outside its physical range")  # physical_range bug
    return d.astype(np.int16)


def wave_grid(w: WaveSeries, start_us: int, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(values, present mask, samples placed) of a wave on ``n`` samples at its rate from
    ``start_us``. Contiguous runs (consecutive samples one period apart, within half a
    period) are placed sample after sample from the run's first index."""
    rate = float(w.rate_hz or 0)
    out = np.zeros(n)
    present = np.zeros(n, dtype=bool)
    if not len(w) or rate <= 0:
        return out, present, 0
    period = 1e6 / rate
    breaks = np.flatnonzero(np.abs(np.diff(w.t_us) - period) > 0.5 * period) + 1
    bounds = [0, *breaks.tolist(), len(w)]
    next_free = 0
    placed = 0
    vals = w.values.astype(np.float64)
    for a, z in itertools.pairwise(bounds):
        i0 = max(round((int(w.t_us[a]) - start_us) * rate / 1e6), next_free)
        i1 = min(i0 + (z - a), n)
        if i1 <= i0:
            continue
        seg = vals[a:a + (i1 - i0)]
        ok = np.isfinite(seg)
        out[i0:i1] = np.where(ok, seg, 0.0)
        present[i0:i1] = ok
        placed += int(ok.sum())
        next_free = i1
    return out, present, placed


def numeric_grid(s: NumericSeries, start_us: int, n: int,
                 hold_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) at 1 Hz: the last usable reading in each second, held forward
    for ``hold_s`` seconds (None: until the next reading)."""
    out = np.zeros(n)
    present = np.zeros(n, dtype=bool)
    ok = usable(s.values, s.quality)
    if not ok.any():
        return out, present
    sec = (s.t_us[ok] - start_us) // 1_000_000
    vals = s.values[ok]
    inside = (sec >= 0) & (sec < n)
    sec, vals = sec[inside], vals[inside]
    rsec = sec[::-1]
    uniq, first = np.unique(rsec, return_index=True)
    last_vals = vals[::-1][first]
    # hold: for each second, the latest reading second at or before it
    idx = np.searchsorted(uniq, np.arange(n), side="right") - 1
    has = idx >= 0
    age = np.where(has, np.arange(n) - uniq[np.clip(idx, 0, None)], np.inf)
    limit = np.inf if hold_s is None else math.floor(hold_s)
    present = has & (age <= limit)
    out[present] = last_vals[idx[present]]
    return out, present


def export_session(engine: Engine, session_id: int, out_path: str | Path, *,
                   hold_s: float = 10.0, overwrite: bool = False) -> ExportResult:
    """Write session ``session_id`` as one EDF+ file to ``out_path``."""
    if not (math.isfinite(hold_s) and 0 <= hold_s <= 3600):
        raise ExportError(f"hold of {hold_s!r} s: use 0 to 3600 s")
    edfio = _edfio()
    meta = load_meta(engine, session_id)
    reader = SessionReader(engine, session_id)
    result = ExportResult(warnings=meta.status_warnings())
    channels = reader.channels()
    waves = {c: reader.wave(c) for c in channels if CHANNELS[c].kind is ChannelKind.WAVE}
    waves = {c: w for c, w in waves.items() if len(w) and w.rate_hz}
    nums = {c: reader.numeric(c) for c in channels if CHANNELS[c].kind is ChannelKind.NUMERIC}
    nums = {c: s for c, s in nums.items() if usable(s.values, s.quality).any()}
    if not waves and not nums:
        raise ExportError(f"session {session_id} has no data to write as EDF")
    firsts = [int(w.t_us[0]) for w in waves.values()] + [int(s.t_us[0]) for s in nums.values()]
    lasts = [int(w.t_us[-1] + 1e6 / w.rate_hz) for w in waves.values()]  # type: ignore[operator]
    lasts += [int(s.t_us[-1]) + 1_000_000 for s in nums.values()]
    # from the session's creation, so the baseline's first entries are inside the file
    start_us = min([*firsts, meta.created_us]) // 1_000_000 * 1_000_000
    rates = [float(w.rate_hz) for w in waves.values()] + [1.0]  # type: ignore[arg-type]
    record = record_duration(rates)
    n_records = max(1, math.ceil((max(lasts) - start_us) / 1e6 / record))
    duration = n_records * record
    signals = []
    presence: dict[Channel, tuple[np.ndarray, float]] = {}
    for ch, w in waves.items():
        rate = float(w.rate_hz)  # type: ignore[arg-type]
        n = round(duration * rate)
        values, present, placed = wave_grid(w, start_us, n)
        presence[ch] = (present, rate)
        result.counts[f"samples_{ch.value}"] = placed
        signals.append(_signal(edfio, ch, values, present, rate, meta))
        result.counts["gaps"] = result.counts.get("gaps", 0) + len(_gaps(present, rate))
    for ch, s in nums.items():
        values, present = numeric_grid(s, start_us, duration,
                                       None if ch in INTERMITTENT else hold_s)
        signals.append(_signal(edfio, ch, values, present, 1.0, meta))
    annotations = _annotations(edfio, meta, reader, start_us, duration, presence)
    result.counts["signals"] = len(signals)
    result.counts["annotations"] = len(annotations)
    result.counts["data_records"] = n_records
    result.counts["record_duration_s"] = record
    start = dt.datetime.fromtimestamp(start_us / 1e6, dt.UTC)
    status = (meta.notice or "closed").replace(" ", "_")
    edf = edfio.Edf(
        signals,
        patient=edfio.Patient(code=_field(meta.patient or "X"), name="X"),
        recording=edfio.Recording(startdate=start.date(),
                                  hospital_administration_code=_field(meta.uid[:8]),
                                  equipment_code="KAPMonitor",
                                  additional=("times_UTC", f"session_{meta.id}", status)),
        starttime=start.time().replace(tzinfo=None),
        data_record_duration=record,
        annotations=annotations,
    )
    out = Path(out_path)
    with atomic_file(out, overwrite=overwrite) as tmp:
        edf.write(tmp)
    result.paths.append(out)
    return result


def _field(text: str) -> str:
    """An EDF+ header subfield: ASCII, no spaces."""
    ascii_text = text.encode("ascii", "replace").decode().replace("?", "_")
    return "_".join(ascii_text.split()) or "X"


def _signal(edfio: Any, ch: Channel, values: np.ndarray, present: np.ndarray, rate: float,
            meta: SessionMeta) -> Any:
    info = CHANNELS[ch]
    lo, hi = physical_range(values[present])
    digital = _digital(values, present, lo, hi)
    return edfio.EdfSignal.from_digital(
        digital, rate, label=EDF_LABELS.get(ch, ch.value)[:16],
        transducer_type=f"kapmonitor {ch.value}",
        physical_dimension=EDF_DIMENSIONS.get(info.ucum, ""),
        physical_range=(lo, hi), digital_range=DIGITAL,
        prefiltering="" if info.kind is ChannelKind.WAVE else "1 Hz last value",
    )


def _gaps(present: np.ndarray, rate: float) -> list[tuple[float, float]]:
    """(onset s, duration s) of each run without data between data (not before the
    first sample or after the last: the file simply starts or ends there)."""
    idx = np.flatnonzero(present)
    if not len(idx):
        return []
    inner = present[idx[0]:idx[-1] + 1]
    d = np.diff(inner.astype(np.int8))
    starts = np.flatnonzero(d == -1) + 1 + idx[0]
    ends = np.flatnonzero(d == 1) + 1 + idx[0]
    return [(a / rate, (b - a) / rate) for a, b in zip(starts.tolist(), ends.tolist(),
                                                       strict=True)]


def _annotations(edfio: Any, meta: SessionMeta, reader: SessionReader, start_us: int,
                 duration: int,
                 presence: dict[Channel, tuple[np.ndarray, float]]) -> list[Any]:
    out: list[tuple[float, float | None, str]] = []

    def onset(t_us: int) -> float:
        return min(max(0.0, (t_us - start_us) / 1e6), float(duration))

    if meta.notice:
        for w in meta.status_warnings():
            if any(k in w for k in ("OPEN", "RECOVERED", "DEMO")):
                out.append((0.0, None, f"KAPMonitor: {w}"))
    if meta.t0_us is not None:
        out.append((onset(meta.t0_us), None, "infusion start"))
    for e in reader.entries():
        original = e.history[0].text if e.amended else None
        out.append((onset(e.t_us), None, entry_label(e.kind, e.text, e.code, e.value,
                                                     original)))
    for a in reader.alarm_events():
        value = "" if a["value"] is None else f" {a['value']:g}"
        out.append((onset(a["t_us"]), None,
                    f"alarm {a['action']} {a['condition']} ({a['priority']}){value}"))
    last: dict[str, tuple[str, float | None]] = {}
    for p in reader.pump_events():
        key = (p["state"], p["rate_ml_h"])
        if last.get(p["source"]) == key:
            continue
        last[p["source"]] = key
        rate = "" if p["rate_ml_h"] is None else f" {p['rate_ml_h']:g} mL/h"
        out.append((onset(p["t_us"]), None, f"pump {p['source']} {p['state']}{rate}"))
    sys_, dia, mean = (reader.numeric(c) for c in (Channel.NIBP_SYS, Channel.NIBP_DIA,
                                                    Channel.NIBP_MEAN))
    for i in np.flatnonzero(usable(sys_.values, sys_.quality)).tolist():
        t = int(sys_.t_us[i])
        text = f"NIBP {sys_.values[i]:g}"
        j = _near(dia, t)
        if j is not None:
            text += f"/{dia.values[j]:g}"
        k = _near(mean, t)
        if k is not None:
            text += f" ({mean.values[k]:g})"
        out.append((onset(t), None, text + " mmHg"))
    for d in reader.device_events():
        out.append((onset(d["t_us"]), None, f"device {d['source']} {d['state']}"))
    for ch, (present, rate) in presence.items():
        for a, length in _gaps(present, rate):
            out.append((a, length, f"gap {ch.value}"))
    out.sort(key=lambda x: x[0])
    return [edfio.EdfAnnotation(o, d, _clean(text)) for o, d, text in out]


def _clean(text: str) -> str:
    """EDF+ annotation text: control characters (a note's line breaks, and the bytes 0,
    20 and 21 that delimit TALs) become spaces."""
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)


def _near(s: NumericSeries, t: int) -> int | None:
    if not len(s):
        return None
    j = int(np.argmin(np.abs(s.t_us - t)))
    return j if abs(int(s.t_us[j]) - t) <= 2_000_000 and math.isfinite(s.values[j]) else None
