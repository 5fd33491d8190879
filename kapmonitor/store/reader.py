"""Reading a recorded session back, for replay, exports and checks.

A channel's range comes back with one indexed query (``ix_numeric_session_channel_t``)
straight into numpy arrays, so a 4-hour trend loads in milliseconds (bench/bench_store.py).
Annotations come back as entries with their amendment history: the reader returns each
entry's latest version and the versions it replaced, oldest first, so nothing corrected
ever disappears from view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from kapmonitor.model import Channel

from .schema import (
    AlarmEventRow,
    AnnotationRow,
    DeviceEventRow,
    PumpEventRow,
    SessionRow,
    numeric_table,
    wave_table,
)

__all__ = ["Entry", "NumericSeries", "SessionReader", "WaveSeries"]


@dataclass(frozen=True, slots=True)
class NumericSeries:
    t_us: np.ndarray  # int64
    values: np.ndarray  # float64, NaN where the value was absent
    quality: np.ndarray  # int32
    source: list[str]
    device_t_us: list[int | None]

    def __len__(self) -> int:
        return int(self.t_us.shape[0])


@dataclass(frozen=True, slots=True)
class WaveSeries:
    """Samples of a wave, concatenated, each with its host time."""

    t_us: np.ndarray
    values: np.ndarray  # float32
    rate_hz: float | None
    chunks: int

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True, slots=True)
class Entry:
    """An annotation in its latest version; ``history`` holds the versions it replaced,
    oldest first (the original is ``history[0]`` when amended)."""

    id: int
    kind: str
    t_us: int
    author: str
    text: str
    code: str
    value: float | None
    created_us: int
    amends_id: int | None
    root_id: int
    history: tuple[Entry, ...] = field(default=())

    @property
    def amended(self) -> bool:
        return bool(self.history)


def _entry(r: Any, root: int, history: tuple[Entry, ...] = ()) -> Entry:
    return Entry(id=r.id, kind=r.kind, t_us=r.t_us, author=r.author, text=r.text,
                 code=r.code, value=r.value, created_us=r.created_us, amends_id=r.amends_id,
                 root_id=root, history=history)


class SessionReader:
    def __init__(self, engine: Engine, session_id: int) -> None:
        self.engine = engine
        self.session_id = session_id

    def session(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(SessionRow.__table__).where(
                SessionRow.id == self.session_id)).mappings().one()
            return dict(row)

    def channels(self) -> list[Channel]:
        with self.engine.connect() as conn:
            names = set(conn.execute(select(numeric_table.c.channel).distinct().where(
                numeric_table.c.session_id == self.session_id)).scalars())
            names |= set(conn.execute(select(wave_table.c.channel).distinct().where(
                wave_table.c.session_id == self.session_id)).scalars())
        return sorted((Channel(n) for n in names), key=list(Channel).index)

    def numeric(self, channel: Channel, t_from: int | None = None,
                t_to: int | None = None) -> NumericSeries:
        t = numeric_table
        q = select(t.c.t_us, t.c.value, t.c.quality, t.c.source, t.c.device_t_us).where(
            t.c.session_id == self.session_id, t.c.channel == channel.value)
        if t_from is not None:
            q = q.where(t.c.t_us >= t_from)
        if t_to is not None:
            q = q.where(t.c.t_us <= t_to)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(t.c.t_us)).cursor.fetchall()
        if not rows:
            return NumericSeries(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int32), [],
                                 [])
        ts, vs, qs, ss, ds = zip(*rows, strict=True)
        return NumericSeries(
            np.array(ts, dtype=np.int64),
            np.array(vs, dtype=np.float64),  # NULL (None) becomes NaN
            np.array(qs, dtype=np.int32),
            list(ss),
            list(ds),
        )

    def wave(self, channel: Channel, t_from: int | None = None,
             t_to: int | None = None) -> WaveSeries:
        w = wave_table
        q = select(w.c.t_us, w.c.rate_hz, w.c.n, w.c.data).where(
            w.c.session_id == self.session_id, w.c.channel == channel.value)
        if t_from is not None:  # a chunk that starts before t_from may still overlap it
            q = q.where(w.c.t_us >= t_from - 60_000_000)
        if t_to is not None:
            q = q.where(w.c.t_us <= t_to)
        with self.engine.connect() as conn:
            # Tens of thousands of small rows: take the driver's tuples as they are, since
            # wrapping each in a Row costs more than the query (bench/bench_store.py).
            rows = conn.execute(q.order_by(w.c.t_us)).cursor.fetchall()
        if not rows:
            return WaveSeries(np.zeros(0, np.int64), np.zeros(0, np.float32), None, 0)
        t_col, rate_col, n_col, data_col = zip(*rows, strict=True)
        values = np.frombuffer(b"".join(data_col), dtype="<f4")
        starts = np.array(t_col, dtype=np.int64)
        counts = np.array(n_col, dtype=np.int64)
        periods = 1e6 / np.array(rate_col, dtype=np.float64)
        # sample i of chunk c is at start_c + i * period_c, all chunks at once
        first = np.repeat(np.cumsum(counts) - counts, counts)
        index = np.arange(int(counts.sum()), dtype=np.int64) - first
        times = np.repeat(starts, counts) + np.round(index * np.repeat(periods, counts)
                                                     ).astype(np.int64)
        if t_from is not None or t_to is not None:
            lo = t_from if t_from is not None else times[0]
            hi = t_to if t_to is not None else times[-1]
            keep = (times >= lo) & (times <= hi)
            times, values = times[keep], values[keep]
        return WaveSeries(times, values.astype(np.float32), float(rate_col[-1]), len(rows))

    def entries(self) -> list[Entry]:
        """Annotations in time order, each in its latest version with its history."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(AnnotationRow.__table__).where(
                AnnotationRow.session_id == self.session_id).order_by(
                AnnotationRow.id)).all()
        by_id = {r.id: r for r in rows}
        children: dict[int, list[Any]] = {}
        for r in rows:
            if r.amends_id is not None:
                children.setdefault(r.amends_id, []).append(r)
        out = []
        for r in rows:
            if r.amends_id is not None:
                continue
            # Follow the corrections: the newest amendment of the newest amendment ...
            chain = [r]
            while children.get(chain[-1].id):
                chain.append(max(children[chain[-1].id], key=lambda c: (c.created_us, c.id)))
            history = tuple(_entry(c, r.id) for c in chain[:-1])
            out.append(_entry(by_id[chain[-1].id], r.id, history))
        out.sort(key=lambda e: (e.t_us, e.id))
        return out

    def _events(self, table: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(
                table.c.session_id == self.session_id).order_by(table.c.t_us, table.c.id))
            return [dict(r) for r in rows.mappings()]

    def alarm_events(self) -> list[dict[str, Any]]:
        return self._events(AlarmEventRow.__table__)

    def pump_events(self) -> list[dict[str, Any]]:
        out = self._events(PumpEventRow.__table__)
        for e in out:
            e["alarms"] = json.loads(e["alarms"])
        return out

    def device_events(self) -> list[dict[str, Any]]:
        return self._events(DeviceEventRow.__table__)
