"""VitalDB ``.vital`` export, for Vital Recorder and the ``vitaldb`` Python package that
research groups use for perioperative signals.

Written with the ``vitaldb`` package (the ``export`` extra), never by hand; the tests read
the file back with ``vitaldb.VitalFile``.

- Devices: one per data source as the session named it (``monitor``, ``pump``), its type
  the protocol; values the app computed (delivered dose, plasma estimate) come from a
  device ``KAPMonitor``.
- Tracks are named ``DEVICE/NAME`` with VitalDB's usual names where one exists
  (``ECG_II``, ``PLETH``, ``CO2``, ``HR``, ``PLETH_SPO2``, ``NIBP_SBP`` ..., ``RATE``,
  ``VOL`` for the pump). Waves are wave tracks at their rate, one record per contiguous
  run (the file packs each track with NaN in the gaps). Numerics are numeric tracks with
  one record per usable reading at its own time (values flagged invalid, out of range,
  sensor off or calibrating are left out; ``common.UNUSABLE``). Values are stored as
  32-bit floats (relative precision 6e-8).
- ``EVENT``: a string track with the session notice (OPEN, RECOVERED, DEMO) at the start,
  the infusion start, every entry in its current version (an amended one says so and
  quotes the original), alarm events, and pump state and rate changes.
- Times are UTC (``dgmt`` 0), as everywhere in KAP Monitor's exports.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from kapmonitor.model import CHANNELS, Channel, ChannelKind, device_of
from kapmonitor.store.reader import SessionReader
from kapmonitor.store.schema import wave_table

from .common import ExportError, ExportResult, atomic_file, entry_label, load_meta, usable

__all__ = ["EVENT_TRACK", "TRACK_NAMES", "export_session", "track_name"]

EVENT_TRACK = "EVENT"
APP_DEVICE = "KAPMonitor"
TRACK_NAMES: dict[Channel, str] = {
    Channel.HR: "HR", Channel.PULSE: "PLETH_HR", Channel.SPO2: "PLETH_SPO2",
    Channel.NIBP_SYS: "NIBP_SBP", Channel.NIBP_DIA: "NIBP_DBP", Channel.NIBP_MEAN: "NIBP_MBP",
    Channel.RR: "RR", Channel.ETCO2: "ETCO2", Channel.FICO2: "INCO2", Channel.TEMP: "BT",
    Channel.PERF_INDEX: "PI", Channel.PLETH: "PLETH", Channel.ECG: "ECG_II",
    Channel.CO2_WAVE: "CO2", Channel.PUMP_RATE: "RATE", Channel.VOLUME_INFUSED: "VOL",
    Channel.VTBI: "VTBI", Channel.DELIVERED_DOSE: "DOSE", Channel.PLASMA_ESTIMATE: "CP_EST",
}
#: Display ranges for Vital Recorder's plots (the file needs some; a viewer can change them).
_DISPLAY: dict[Channel, tuple[float, float]] = {
    Channel.HR: (0, 200), Channel.PULSE: (0, 200), Channel.SPO2: (80, 100),
    Channel.NIBP_SYS: (0, 250), Channel.NIBP_DIA: (0, 250), Channel.NIBP_MEAN: (0, 250),
    Channel.RR: (0, 40), Channel.ETCO2: (0, 60), Channel.TEMP: (34, 40),
    Channel.PLETH: (-1.5, 1.5), Channel.ECG: (-2, 2), Channel.CO2_WAVE: (0, 60),
}


def _vitaldb() -> Any:
    try:
        # vitaldb imports wfdb and pandas, whose deprecation warnings are about their code,
        # not ours, and would fail a run that turns warnings into errors
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import vitaldb
    except ImportError:
        raise ExportError("vital export needs the 'vitaldb' package: pip install "
                          "'kapmonitor[export]'") from None
    return vitaldb


def track_name(device: str, ch: Channel) -> str:
    return f"{device}/{TRACK_NAMES.get(ch, ch.value.upper())}"


def _device(sources: list[str]) -> str:
    """The device a channel's values came from (the most frequent source's link)."""
    if not sources:
        return APP_DEVICE
    names = [device_of(s) for s in sources]
    best = max(set(names), key=names.count)
    return APP_DEVICE if best in ("dose", "pk", "") else best


def export_session(engine: Engine, session_id: int, out_path: str | Path, *,
                   overwrite: bool = False) -> ExportResult:
    """Write session ``session_id`` as one .vital file to ``out_path``."""
    vitaldb = _vitaldb()
    meta = load_meta(engine, session_id)
    reader = SessionReader(engine, session_id)
    result = ExportResult(warnings=meta.status_warnings())
    vf = vitaldb.VitalFile()
    protocols = {d["source"]: d["protocol"] for d in meta.devices}
    first: list[float] = [meta.created_us / 1e6]
    last: list[float] = [meta.end_us / 1e6]
    for ch in reader.channels():
        info = CHANNELS[ch]
        lo, hi = _DISPLAY.get(ch, (0.0, 0.0))
        unit = info.display_unit or info.ucum
        if info.kind is ChannelKind.WAVE:
            w = reader.wave(ch)
            if not len(w) or not w.rate_hz:
                continue
            rate = float(w.rate_hz)
            period = 1e6 / rate
            breaks = np.flatnonzero(np.abs(np.diff(w.t_us) - period) > 0.5 * period) + 1
            bounds = [0, *breaks.tolist(), len(w)]
            recs = [{"dt": int(w.t_us[a]) / 1e6,
                     "val": np.ascontiguousarray(w.values[a:z], dtype=np.float32)}
                    for a, z in itertools.pairwise(bounds)]
            dev = _wave_device(engine, session_id, ch)
            _ensure_device(vf, dev, protocols)
            vf.add_track(track_name(dev, ch), recs, srate=rate, unit=unit, mindisp=lo,
                         maxdisp=hi)
            result.counts[f"samples_{ch.value}"] = len(w)
            first.append(recs[0]["dt"])
            last.append((int(w.t_us[-1]) + period) / 1e6)
        else:
            s = reader.numeric(ch)
            ok = np.flatnonzero(usable(s.values, s.quality))
            if not len(ok):
                continue
            recs = [{"dt": t / 1e6, "val": v} for t, v in zip(
                s.t_us[ok].tolist(), s.values[ok].tolist(), strict=True)]
            dev = _device([s.source[i] for i in ok.tolist()])
            _ensure_device(vf, dev, protocols)
            vf.add_track(track_name(dev, ch), recs, unit=unit, mindisp=lo, maxdisp=hi)
            result.counts[f"values_{ch.value}"] = len(recs)
            first.append(recs[0]["dt"])
            last.append(recs[-1]["dt"])
    events = _events(meta, reader)
    if events:
        vf.add_track(EVENT_TRACK, [{"dt": t, "val": text} for t, text in events])
    result.counts["events"] = len(events)
    if not vf.trks:
        raise ExportError(f"session {session_id} has no data to write as .vital")
    vf.dtstart = min(first)
    vf.dtend = max(last)
    vf.dgmt = 0
    out = Path(out_path)
    with atomic_file(out, overwrite=overwrite) as tmp:
        if vf.to_vital(str(tmp)) is False:
            raise ExportError(f"vitaldb could not write {out}")
    result.paths.append(out)
    result.counts["tracks"] = len(vf.trks)
    return result


def _wave_device(engine: Engine, session_id: int, ch: Channel) -> str:
    """The device that sent most of a wave's chunks (the reader's series has no source)."""
    w = wave_table
    with engine.connect() as conn:
        rows = conn.execute(select(w.c.source, func.count()).where(
            w.c.session_id == session_id, w.c.channel == ch.value).group_by(w.c.source)).all()
    if not rows:
        return APP_DEVICE
    return _device([max(rows, key=lambda r: r[1])[0]])


def _ensure_device(vf: Any, name: str, protocols: dict[str, str]) -> None:
    if name not in vf.devs:
        vf.add_device(name, protocols.get(name) or name)


def _events(meta: Any, reader: SessionReader) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    start = meta.created_us / 1e6
    for w in meta.status_warnings():
        if any(k in w for k in ("OPEN", "RECOVERED", "DEMO")):
            out.append((start, f"KAPMonitor: {w}"))
    if meta.t0_us is not None:
        out.append((meta.t0_us / 1e6, "infusion start"))
    for e in reader.entries():
        original = e.history[0].text if e.amended else None
        out.append((e.t_us / 1e6, entry_label(e.kind, e.text, e.code, e.value, original)))
    for a in reader.alarm_events():
        value = "" if a["value"] is None or math.isnan(a["value"]) else f" {a['value']:g}"
        out.append((a["t_us"] / 1e6,
                    f"alarm {a['action']} {a['condition']} ({a['priority']}){value}"))
    last: dict[str, tuple[str, float | None]] = {}
    for p in reader.pump_events():
        key = (p["state"], p["rate_ml_h"])
        if last.get(p["source"]) == key:
            continue
        last[p["source"]] = key
        rate = "" if p["rate_ml_h"] is None else f" {p['rate_ml_h']:g} mL/h"
        out.append((p["t_us"] / 1e6, f"pump {p['source']} {p['state']}{rate}"))
    out.sort(key=lambda x: x[0])
    return out
