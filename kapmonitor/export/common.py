"""What every export shares: the result, the refusal, the session's metadata, one way to
write time, one rule for which values count, and writing files so that a half-written
export never sits where a complete one is expected.

Time (DESIGN §2): every record carries host UTC time in integer microseconds; an export
writes UTC (never the exporting machine's local zone, which may not be the clinic's) and
session time ``t - t0`` in seconds, where t0 is the infusion start. A session that never
reached an infusion start counts session time from the session's creation instead, and the
export says so (``time_origin``).

Open and recovered sessions (issue 9): an export of a session that is still OPEN holds only
what was recorded so far, and one of a RECOVERED session stops where the recording broke
off. Every format says so inside the file where the format allows it and in
``ExportResult.warnings``, which the command line prints; a DEMO session (simulated data)
is labelled the same way, so it is never mistaken for a patient's record.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from kapmonitor.model import Quality
from kapmonitor.store.reader import SessionReader
from kapmonitor.store.schema import AnnotationRow, DeviceRow, PatientRow, SessionRow

__all__ = [
    "UNUSABLE",
    "ExportError",
    "ExportResult",
    "SessionMeta",
    "atomic_dir",
    "atomic_file",
    "iso_utc",
    "load_meta",
    "session_seconds",
    "usable",
]

APP = "KAP Monitor"

#: Quality flags that mean "not a measurement": such a value is kept, flagged, in the
#: long-form CSV (which shows everything) but left out wherever an export picks one value
#: to stand for a time (the wide CSV, FHIR, EDF and vital tracks). QUESTIONABLE, ARTEFACT
#: and DEMO values are still measurements, shown with their flags where the format can.
UNUSABLE = (Quality.INVALID | Quality.OUT_OF_RANGE | Quality.SENSOR_OFF
            | Quality.CALIBRATING)


class ExportError(ValueError):
    """An export refused, with a one-line reason a user can act on."""


@dataclass
class ExportResult:
    """What an export wrote: the files (or the one folder or archive), row or resource
    counts by kind, and warnings to show the user (open, recovered, demo, missing data)."""

    paths: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SessionMeta:
    """A session's metadata as the exports need it."""

    id: int
    uid: str
    row: dict[str, Any]
    patient: str | None
    status: str
    demo: bool
    created_us: int
    t0_us: int | None
    closed_us: int | None
    last_data_us: int | None
    devices: list[dict[str, Any]]
    gap_text: str | None

    @property
    def origin_us(self) -> int:
        """Session time zero: the infusion start, else the session's creation."""
        return self.t0_us if self.t0_us is not None else self.created_us

    @property
    def time_origin(self) -> str:
        return "infusion start" if self.t0_us is not None else "session start (no infusion " \
                                                                "start was recorded)"

    @property
    def end_us(self) -> int:
        """Where the record ends: its close, else its last data, else its creation."""
        return self.closed_us or self.last_data_us or self.created_us

    @property
    def notice(self) -> str | None:
        """The short in-file label: OPEN, RECOVERED (and DEMO), or None when neither."""
        parts = []
        if self.status == "open":
            parts.append("OPEN")
        elif self.status == "recovered":
            parts.append("RECOVERED")
        if self.demo:
            parts.append("DEMO")
        return " ".join(parts) or None

    def status_warnings(self) -> list[str]:
        """The sentences every export writes into its file and returns as warnings."""
        out = []
        if self.status == "open":
            out.append(f"session {self.id} is still OPEN (being recorded, or never closed): "
                       f"this export holds only what was recorded up to "
                       f"{iso_utc(self.last_data_us or self.created_us)}; export it again "
                       "once the session is closed")
        elif self.status == "recovered":
            out.append(f"session {self.id} was RECOVERED after its recording stopped "
                       f"unexpectedly at {iso_utc(self.end_us)}: data after that point is "
                       "missing" + (f" ({self.gap_text})" if self.gap_text else ""))
        if self.demo:
            out.append(f"session {self.id} is a DEMO session: simulated data, not a patient")
        if self.t0_us is None:
            out.append(f"session {self.id} has no infusion start: session time counts from "
                       "the session start")
        return out


def load_meta(engine: Engine, session_id: int) -> SessionMeta:
    """The session's row, patient pseudonym, devices and recovery note; refuses an unknown
    session with a reason."""
    reader = SessionReader(engine, session_id)
    with engine.connect() as conn:
        row = conn.execute(select(SessionRow.__table__).where(
            SessionRow.id == session_id)).mappings().first()
        if row is None:
            raise ExportError(f"no session {session_id}")
        row = dict(row)
        patient = None
        if row["patient_id"] is not None:
            patient = conn.execute(select(PatientRow.pseudonym).where(
                PatientRow.id == row["patient_id"])).scalar()
        devices = [dict(d) for d in conn.execute(select(DeviceRow.__table__).where(
            DeviceRow.session_id == session_id).order_by(DeviceRow.id)).mappings()]
        gap = conn.execute(select(AnnotationRow.text).where(
            AnnotationRow.session_id == session_id, AnnotationRow.kind == "gap").order_by(
            AnnotationRow.t_us.desc())).scalar()
    last = _last_data_us(reader)
    return SessionMeta(id=row["id"], uid=row["uid"], row=row, patient=patient,
                       status=row["status"], demo=bool(row["demo"]),
                       created_us=row["created_us"], t0_us=row["t0_us"],
                       closed_us=row["closed_us"], last_data_us=last, devices=devices,
                       gap_text=gap)


def _last_data_us(reader: SessionReader) -> int | None:
    from sqlalchemy import func

    from kapmonitor.store.schema import numeric_table, wave_table

    with reader.engine.connect() as conn:
        values = [
            conn.execute(select(func.max(numeric_table.c.t_us)).where(
                numeric_table.c.session_id == reader.session_id)).scalar(),
            conn.execute(select(func.max(wave_table.c.t_us)).where(
                wave_table.c.session_id == reader.session_id)).scalar(),
        ]
    found = [int(v) for v in values if v is not None]
    return max(found) if found else None


# ----------------------------------------------------------------------------- time


def iso_utc(t_us: int) -> str:
    """``2024-05-01T10:00:00.000000Z``: microseconds, UTC, the form drivers/sim/playback.py
    reads."""
    return datetime.fromtimestamp(t_us // 1_000_000, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S") + f".{t_us % 1_000_000:06d}Z"


def fhir_datetime(t_us: int) -> str:
    """An ISO 8601 instant with an explicit offset, as FHIR's dateTime/instant want."""
    return iso_utc(t_us)[:-1] + "+00:00"


def session_seconds(t_us: int, origin_us: int) -> str:
    """Session time in seconds with exactly six decimals, computed in integers so no
    microsecond is lost to floating point."""
    d = int(t_us) - int(origin_us)
    sign = "-" if d < 0 else ""
    s, us = divmod(abs(d), 1_000_000)
    return f"{sign}{s}.{us:06d}"


def usable(values: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Mask of values that count as measurements (finite, no UNUSABLE flag)."""
    return np.isfinite(values) & ((quality & int(UNUSABLE)) == 0)


def number(v: float) -> str:
    """A float as the shortest text that reads back to the same float; '' for NaN."""
    return "" if math.isnan(v) else repr(float(v))


# ----------------------------------------------------------------------------- files


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ExportError(f"{out} already exists (choose another path, or overwrite)")
        if out.is_dir() and not out.is_symlink():
            raise ExportError(f"{out} is a folder; refusing to replace a folder")
    if not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist")


@contextlib.contextmanager
def atomic_file(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary path beside ``out`` that becomes ``out`` only when the body finishes, so
    a failed export leaves nothing half-written behind."""
    out = Path(out)
    _check_target(out, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` renamed to ``out`` when the body finishes. An
    existing ``out`` is refused: a folder of clinical files is never merged into."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out} already exists (choose a new folder name)")
    if not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class EntryVersion:
    """One stored version of a timeline entry. ``root_id`` is the first version's id,
    ``version`` counts from 1 along the corrections, ``current`` marks the version the
    reader shows (store/reader.py ``entries``); ``original_text`` is the first version's
    text, so a correction never hides what was first written."""

    id: int
    root_id: int
    amends_id: int | None
    version: int
    current: bool
    t_us: int
    kind: str
    code: str
    value: float | None
    text: str
    original_text: str
    author: str
    created_us: int


def entry_versions(engine: Engine, session_id: int) -> list[EntryVersion]:
    """Every version of every entry (amended ones included), by time, then entry, then
    version."""
    with engine.connect() as conn:
        rows = conn.execute(select(AnnotationRow.__table__).where(
            AnnotationRow.session_id == session_id).order_by(AnnotationRow.id)).all()
    current = {e.id for e in SessionReader(engine, session_id).entries()}
    by_id = {r.id: r for r in rows}
    out = []
    for r in rows:
        chain = [r]
        while chain[-1].amends_id is not None and chain[-1].amends_id in by_id:
            chain.append(by_id[chain[-1].amends_id])
        root = chain[-1]
        out.append(EntryVersion(
            id=r.id, root_id=root.id, amends_id=r.amends_id, version=len(chain),
            current=r.id in current, t_us=r.t_us, kind=r.kind, code=r.code, value=r.value,
            text=r.text, original_text=root.text, author=r.author, created_us=r.created_us))
    root_t = {v.id: v.t_us for v in out if v.amends_id is None}
    out.sort(key=lambda v: (root_t.get(v.root_id, v.t_us), v.root_id, v.version, v.id))
    return out


def entry_label(kind: str, text: str, code: str, value: float | None,
                original: str | None = None) -> str:
    """One line for an entry where a format has only text (EDF+ annotations, vital
    events): ``cue IMG-SAFE: Safe place``; an amended entry says so and keeps the
    original: ``observation (amended; originally "Calm"): Calm, slow breathing``."""
    head = kind + (f" {code}" if code else "")
    if original is not None:
        head += f' (amended; originally "{original}")'
    body = text or ("" if value is None else f"{value:g}")
    return f"{head}: {body}" if body else head
