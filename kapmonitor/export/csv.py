"""CSV export: the whole record as plain tables any spreadsheet or script can read.

Where it goes: a FOLDER by default (``out`` must not exist yet; it is created whole or
not at all), or one ZIP archive holding the same files when ``out`` ends in ``.zip``. All
files are UTF-8 without a byte-order mark, comma-separated, with a header row and no
comment lines, so the standard library's ``csv.reader``/``csv.DictReader`` read every one
as it is. Empty cell = no value.

Files:

``session.csv``      key,value: session id, uid, patient pseudonym, status, programme
                     (weight, dose, concentration), times, time origin, the exporting
                     version, the quality-flag legend, and one ``warning`` row per warning.
                     An OPEN or RECOVERED session says so here (``status`` and ``warning``
                     rows): the data files themselves stay comment-free so that tools that
                     read them (playback) need no special case.
``channels.csv``     one row per channel present: label, kind, UCUM unit, LOINC, MDC code
                     and reference id (clinical.md §6.1), rows exported, sources.
``numerics.csv``     long form, one row per stored value, in time order:
                     ``session_time_s,utc_time,channel,value,unit,quality,source``. This is
                     THE project CSV format that ``drivers/sim/playback.py`` reads (a file
                     exported here plays back through the simulator; ``source`` is the
                     optional seventh column it accepts). ``session_time_s`` has six
                     decimals (exact microseconds), ``utc_time`` is ISO 8601 with
                     microseconds and ``Z``, ``value`` is the shortest text that reads back
                     to the stored float64 (exact), empty when the device sent none,
                     ``unit`` is UCUM, ``quality`` the integer ``kapmonitor.model.Quality``
                     flags (0 = a valid measurement; legend in session.csv), ``source`` the
                     device (or ``dose``/``pk`` for values the app computed).
``numerics_wide.csv`` one row per second of session time (``session_time_s`` is the
                     integer second; the row covers [s, s+1)), one column per numeric
                     channel named by its channel id (units in channels.csv): the LAST
                     usable value within that second, empty when there is none (values
                     flagged invalid, out of range, sensor off or calibrating do not count;
                     ``common.UNUSABLE``). Nothing is carried over from earlier seconds.
``entries.csv``      every version of every timeline entry (observations, cues,
                     assessments, phases, gap markers): a correction is a row of its own
                     with ``amends_id`` (the version it corrects), ``version`` (1 = as
                     first written), ``current`` (1 on the version shown today) and
                     ``original_text`` (the first version's text); nothing is hidden.
``alarms.csv``       every alarm-system event (raise, escalate, acknowledge, pause, clear).
``pump_events.csv``  every pump state as reported (state, rate, volume, VTBI, alarms).
``device_events.csv`` device link states (why data has gaps).
``waves.csv``        only with ``waves=True``: every wave sample in the numerics.csv
                     columns, the value as the shortest text that reads back to the stored
                     float32 (large: a 4-hour session with ECG at 500 Hz is ~10 million
                     rows). A wave with gaps is not evenly sampled and will not play back.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import IO, Any

import numpy as np
from sqlalchemy import Engine

from kapmonitor import __version__
from kapmonitor.model import CHANNELS, ChannelKind, Quality
from kapmonitor.store.reader import SessionReader

from .common import (
    ExportResult,
    SessionMeta,
    atomic_dir,
    atomic_file,
    entry_versions,
    iso_utc,
    load_meta,
    number,
    session_seconds,
    usable,
)

__all__ = ["FILES", "NUMERIC_COLUMNS", "export_session"]

#: The long-form columns: drivers/sim/playback.py CSV_COLUMNS plus ``source``.
NUMERIC_COLUMNS = ("session_time_s", "utc_time", "channel", "value", "unit", "quality",
                   "source")
FILES = ("session.csv", "channels.csv", "numerics.csv", "numerics_wide.csv", "entries.csv",
         "alarms.csv", "pump_events.csv", "device_events.csv")
FORMAT_VERSION = "1"


class _Sink:
    """Text files into a folder or into a zip archive, one interface."""

    def __init__(self, folder: Path | None = None, archive: zipfile.ZipFile | None = None,
                 prefix: str = "") -> None:
        self.folder = folder
        self.archive = archive
        self.prefix = prefix
        self.names: list[str] = []

    @contextmanager
    def open(self, name: str) -> Iterator[IO[str]]:
        self.names.append(name)
        if self.folder is not None:
            with (self.folder / name).open("w", newline="", encoding="utf-8") as f:
                yield f
            return
        assert self.archive is not None
        with self.archive.open(self.prefix + name, "w") as raw, io.TextIOWrapper(
                raw, encoding="utf-8", newline="") as f:
            yield f


def export_session(engine: Engine, session_id: int, out_path: str | Path, *,
                   waves: bool = False, overwrite: bool = False) -> ExportResult:
    """Write session ``session_id`` as CSV files into the folder ``out_path`` (created),
    or into one zip archive when ``out_path`` ends in ``.zip`` (``overwrite`` allows
    replacing an existing archive; a folder is never merged into)."""
    meta = load_meta(engine, session_id)
    out = Path(out_path)
    result = ExportResult(warnings=meta.status_warnings())
    if out.suffix.lower() == ".zip":
        with atomic_file(out, overwrite=overwrite) as tmp, zipfile.ZipFile(
                tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            _write_all(_Sink(archive=zf, prefix=out.stem + "/"), engine, meta, result, waves)
    else:
        with atomic_dir(out) as tmp:
            _write_all(_Sink(folder=tmp), engine, meta, result, waves)
    result.paths.append(out)
    return result


def _write_all(sink: _Sink, engine: Engine, meta: SessionMeta, result: ExportResult,
               waves: bool) -> None:
    reader = SessionReader(engine, meta.id)
    channels = reader.channels()
    numeric_channels = [c for c in channels if CHANNELS[c].kind is ChannelKind.NUMERIC]
    wave_channels = [c for c in channels if CHANNELS[c].kind is ChannelKind.WAVE]
    series = {c: reader.numeric(c) for c in numeric_channels}
    c = result.counts
    c["numerics"] = _write_long(sink, "numerics.csv", meta, series)
    c["seconds"] = _write_wide(sink, meta, series)
    wave_rows = {}
    if waves:
        wave_rows = _write_waves(sink, meta, reader, wave_channels)
        c["wave_samples"] = sum(wave_rows.values())
    c["entries"] = _write_entries(sink, engine, meta)
    c["alarm_events"] = _write_rows(sink, "alarms.csv", meta, reader.alarm_events(), (
        "condition", "channel", "kind", "priority", "action", "value", "limit", "message",
        "user"))
    pumps = reader.pump_events()
    for e in pumps:
        e["alarms"] = ";".join(f"{a.get('code', '')}:{a.get('raw', '')}" for a in e["alarms"])
    c["pump_events"] = _write_rows(sink, "pump_events.csv", meta, pumps, (
        "source", "state", "rate_ml_h", "volume_infused_ml", "vtbi_ml", "bolus_ml", "drug",
        "concentration_mg_ml", "infusion_id", "alarms"))
    c["device_events"] = _write_rows(sink, "device_events.csv", meta, reader.device_events(),
                                     ("source", "state", "detail"))
    counts = {ch.value: len(s) for ch, s in series.items()}
    sources = {ch.value: sorted(set(s.source)) for ch, s in series.items()}
    for ch in wave_channels:
        counts[ch.value] = wave_rows.get(ch.value, 0)
        sources[ch.value] = []
    _write_channels(sink, channels, counts, sources)
    _write_session(sink, meta, result)


def _writer(f: IO[str]) -> Any:
    return csv.writer(f, lineterminator="\n")


def _time_columns(t_us: np.ndarray, origin: int) -> tuple[list[str], list[str]]:
    """Session time and UTC text of many times at once: the same as ``session_seconds``
    and ``iso_utc`` per row, with each whole second's date formatted once (a 4-hour
    record has 14,400 of them and millions of wave samples)."""
    t = np.asarray(t_us, dtype=np.int64)
    sec, us = np.divmod(t, 1_000_000)
    uniq, inv = np.unique(sec, return_inverse=True)
    heads = [iso_utc(int(x) * 1_000_000)[:-8] for x in uniq.tolist()]
    utc = [f"{heads[i]}.{u:06d}Z" for i, u in zip(inv.tolist(), us.tolist(), strict=True)]
    d = t - origin
    whole, frac = np.divmod(np.abs(d), 1_000_000)
    st = [f"{'-' if n else ''}{w}.{f:06d}" for n, w, f in zip(
        (d < 0).tolist(), whole.tolist(), frac.tolist(), strict=True)]
    return st, utc


def _write_long(sink: _Sink, name: str, meta: SessionMeta, series: dict) -> int:
    """All channels merged in time order (then channel order)."""
    parts = []
    for ch, s in series.items():
        if len(s):
            parts.append((ch, s))
    n = 0
    with sink.open(name) as f:
        w = _writer(f)
        w.writerow(NUMERIC_COLUMNS)
        if not parts:
            return 0
        t = np.concatenate([s.t_us for _, s in parts])
        order = np.argsort(t, kind="stable")
        chan = np.concatenate([np.full(len(s), i) for i, (_, s) in enumerate(parts)])[order]
        values = np.concatenate([s.values for _, s in parts])[order].tolist()
        quality = np.concatenate([s.quality for _, s in parts])[order].tolist()
        source = np.concatenate([np.asarray(s.source, dtype=object) for _, s in parts])[order]
        st, utc = _time_columns(t[order], meta.origin_us)
        names = [ch.value for ch, _ in parts]
        units = [CHANNELS[ch].ucum for ch, _ in parts]
        for i in range(len(order)):
            k = chan[i]
            w.writerow((st[i], utc[i], names[k], number(values[i]), units[k], quality[i],
                        source[i]))
            n += 1
    return n


def _write_wide(sink: _Sink, meta: SessionMeta, series: dict) -> int:
    """Last usable value per channel per second of session time."""
    origin = meta.origin_us
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lo: int | None = None
    hi: int | None = None
    for ch, s in series.items():
        ok = usable(s.values, s.quality)
        if not ok.any():
            cols[ch.value] = (np.zeros(0, np.int64), np.zeros(0))
            continue
        sec = (s.t_us[ok] - origin) // 1_000_000
        vals = s.values[ok]
        # the last value in each second: unique seconds of the reversed series
        rsec = sec[::-1]
        uniq, first = np.unique(rsec, return_index=True)
        cols[ch.value] = (uniq, vals[::-1][first])
        lo = int(uniq[0]) if lo is None else min(lo, int(uniq[0]))
        hi = int(uniq[-1]) if hi is None else max(hi, int(uniq[-1]))
    names = list(cols)
    with sink.open("numerics_wide.csv") as f:
        w = _writer(f)
        w.writerow(("session_time_s", "utc_time", *names))
        if lo is None or hi is None:
            return 0
        n = hi - lo + 1
        grid = np.full((n, len(names)), np.nan)
        for j, name in enumerate(names):
            secs, vals = cols[name]
            grid[secs - lo, j] = vals
        rows = grid.tolist()
        for i in range(n):
            s = lo + i
            w.writerow((s, iso_utc(origin + s * 1_000_000), *(number(v) for v in rows[i])))
    return n


def _write_waves(sink: _Sink, meta: SessionMeta, reader: SessionReader,
                 channels: Sequence) -> dict[str, int]:
    counts = {}
    with sink.open("waves.csv") as f:
        w = _writer(f)
        w.writerow(NUMERIC_COLUMNS)
        for ch in channels:
            s = reader.wave(ch)
            st, utc = _time_columns(s.t_us, meta.origin_us)
            unit = CHANNELS[ch].ucum
            # the shortest text that reads back to the same float32 sample, '' for NaN
            vals = np.where(np.isnan(s.values), "", s.values.astype(str)).tolist()
            w.writerows(zip(st, utc, repeat(ch.value), vals, repeat(unit), repeat(0),
                            repeat(""), strict=False))
            counts[ch.value] = len(s)
    return counts


def _write_entries(sink: _Sink, engine: Engine, meta: SessionMeta) -> int:
    versions = entry_versions(engine, meta.id)
    with sink.open("entries.csv") as f:
        w = _writer(f)
        w.writerow(("entry_id", "root_id", "amends_id", "version", "current",
                    "session_time_s", "utc_time", "kind", "code", "value", "text",
                    "original_text", "author", "written_utc"))
        for v in versions:
            w.writerow((v.id, v.root_id, "" if v.amends_id is None else v.amends_id,
                        v.version, int(v.current), session_seconds(v.t_us, meta.origin_us),
                        iso_utc(v.t_us), v.kind, v.code,
                        "" if v.value is None else number(v.value), v.text,
                        v.original_text if v.version > 1 else "", v.author,
                        iso_utc(v.created_us)))
    return len(versions)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return number(v)
    return v


def _write_rows(sink: _Sink, name: str, meta: SessionMeta, rows: list[dict],
                columns: Sequence[str]) -> int:
    with sink.open(name) as f:
        w = _writer(f)
        w.writerow(("session_time_s", "utc_time", *columns))
        for r in rows:
            w.writerow((session_seconds(r["t_us"], meta.origin_us), iso_utc(r["t_us"]),
                        *(_cell(r[c]) for c in columns)))
    return len(rows)


def _write_channels(sink: _Sink, channels: Sequence, counts: dict[str, int],
                    sources: dict[str, list[str]]) -> None:
    with sink.open("channels.csv") as f:
        w = _writer(f)
        w.writerow(("channel", "label", "kind", "unit", "loinc", "mdc_code", "mdc_ref",
                    "nominal_rate_hz", "rows", "sources"))
        for ch in channels:
            info = CHANNELS[ch]
            w.writerow((ch.value, info.label, info.kind.value, info.ucum, info.loinc or "",
                        info.mdc_code or "", info.mdc_ref or "",
                        "" if info.nominal_rate_hz is None else number(info.nominal_rate_hz),
                        counts.get(ch.value, 0), ";".join(sources.get(ch.value, []))))


def _write_session(sink: _Sink, meta: SessionMeta, result: ExportResult) -> None:
    r = meta.row
    legend = ";".join(f"{int(q)}={q.name}" for q in Quality if q)
    rows: list[tuple[str, Any]] = [
        ("format", f"kapmonitor-csv {FORMAT_VERSION}"),
        ("exported_by", f"KAP Monitor {__version__}"),
        ("session_id", meta.id), ("session_uid", meta.uid),
        ("status", meta.notice or "CLOSED"),
        ("patient", meta.patient or ""), ("room", r["room"]), ("protocol", r["protocol"]),
        ("drug", r["drug"]), ("route", r["route"]),
        ("weight_kg", _cell(r["weight_kg"])), ("weight_basis", r["weight_basis"]),
        ("dose_mg_per_kg", _cell(r["dose_mg_per_kg"])),
        ("duration_min", _cell(r["duration_min"])),
        ("concentration_mg_ml", _cell(r["concentration_mg_ml"])),
        ("bag_ml", _cell(r["bag_ml"])),
        ("created_utc", iso_utc(meta.created_us)),
        ("infusion_start_utc", "" if meta.t0_us is None else iso_utc(meta.t0_us)),
        ("closed_utc", "" if meta.closed_us is None else iso_utc(meta.closed_us)),
        ("last_data_utc", "" if meta.last_data_us is None else iso_utc(meta.last_data_us)),
        ("time_origin", meta.time_origin),
        ("time_origin_utc", iso_utc(meta.origin_us)),
        ("quality_flags", legend),
        *(("warning", w) for w in result.warnings),
        *((f"count_{k}", v) for k, v in result.counts.items()),
    ]
    with sink.open("session.csv") as f:
        w = _writer(f)
        w.writerow(("key", "value"))
        w.writerows(rows)

