"""Store benchmarks (issue: foundation). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_store.py [--quick]

1. Ingest through the real recorder (queue -> writer thread -> WAL file, Core bulk
   inserts, batch audit digests): numerics/s and wave samples/s, and the ratio against
   naive per-row ORM inserts (one ORM object and one commit per sample) measured in the
   same run. Target: >= 100,000 numerics/s and >= 1,000,000 wave samples/s, i.e. >= 100x
   a fully equipped room (~1,000 samples/s).
2. Replay read of one channel of a 4-hour session (1 Hz numerics on 12 channels, 125 Hz
   pleth in 256 ms chunks as IntelliVue delivers them). Target: <= 100 ms.
3. Checking (issue 12): a 4-hour session recorded as live (one commit per 0.2 s, so one
   numeric and one wave audit batch each: ~144,000 audit rows), then ``verify`` (chain,
   every audited row, every sample in exactly one batch: must stay linear), SQLite's
   ``quick_check`` that every open runs, and the ``integrity_check`` ``verify`` runs,
   against the file size. Targets: quick_check well under a second for ~100 MB (start-up),
   verify in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, registry

from kapmonitor.model import Channel, Reading, WaveChunk
from kapmonitor.store import Recorder, SessionReader, Store, audit
from kapmonitor.store.engine import integrity_findings
from kapmonitor.store.schema import numeric_table

ROOM_RATE = 1_000  # samples/s of a fully equipped room (ECG 250 + pleth 125 + CO2 ... )
NUMERIC_CHANNELS = [Channel.HR, Channel.PULSE, Channel.SPO2, Channel.NIBP_SYS,
                    Channel.NIBP_DIA, Channel.NIBP_MEAN, Channel.RR, Channel.ETCO2,
                    Channel.FICO2, Channel.TEMP, Channel.PUMP_RATE, Channel.VOLUME_INFUSED]


def ingest_numerics(store: Store, n: int, batch: int = 500) -> float:
    sid = store.create_session(room="bench")
    rec = Recorder(store, sid).start()
    readings = [Reading(NUMERIC_CHANNELS[i % 12], 60.0 + i % 50, 1_000 + i, "bench")
                for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        rec(readings[i : i + batch])
    rec.flush_now(timeout=600)
    dt = time.perf_counter() - t0
    rec.stop()
    return n / dt


def ingest_waves(store: Store, n_samples: int, chunk: int = 32) -> float:
    sid = store.create_session(room="bench")
    rec = Recorder(store, sid).start()
    data = np.sin(np.arange(chunk) / 5).astype(np.float32)
    chunks = [WaveChunk(Channel.PLETH, i * 256_000, 125.0, data, "bench")
              for i in range(n_samples // chunk)]
    t0 = time.perf_counter()
    for i in range(0, len(chunks), 100):
        rec(chunks[i : i + 100])
    rec.flush_now(timeout=600)
    dt = time.perf_counter() - t0
    rec.stop()
    return len(chunks) * chunk / dt


def naive_orm(store: Store, n: int) -> float:
    """What a first attempt looks like: an ORM object and a commit per sample."""
    reg = registry()

    class NumericORM:
        pass

    reg.map_imperatively(NumericORM, numeric_table, primary_key=[
        numeric_table.c.session_id, numeric_table.c.channel, numeric_table.c.t_us])
    sid = store.create_session(room="bench-naive")
    t0 = time.perf_counter()
    with Session(store.engine) as s:
        for i in range(n):
            row = NumericORM()
            row.session_id, row.channel, row.t_us = sid, "hr", i  # type: ignore[attr-defined]
            row.value, row.quality, row.source = 60.0, 0, "bench"  # type: ignore[attr-defined]
            s.add(row)
            s.commit()
    return n / (time.perf_counter() - t0)


def four_hour_session(store: Store) -> int:
    sid = store.create_session(room="bench-4h")
    rec = Recorder(store, sid).start()
    seconds = 4 * 3600
    t0 = 1_750_000_000_000_000
    for s0 in range(0, seconds, 600):  # 10-minute blocks
        batch: list = [Reading(c, 70.0, t0 + s * 1_000_000, "m")
                       for s in range(s0, s0 + 600) for c in NUMERIC_CHANNELS]
        samples = np.sin(np.arange(32, dtype=np.float32))
        batch += [WaveChunk(Channel.PLETH, t0 + k * 256_000, 125.0, samples, "m")
                  for k in range(s0 * 1_000_000 // 256_000, (s0 + 600) * 1_000_000 // 256_000)]
        rec(batch)
    rec.stop(timeout=600)
    return sid


def live_session(store: Store, hours: float, flush_s: float = 0.2) -> int:
    """A session batched as the live recorder commits it: one flush per ``flush_s`` of
    session time (``flush_now`` stands in for the 0.2 s timer, so the run is not real
    time), 12 numerics at 1 Hz and 125 Hz pleth in 256 ms chunks."""
    sid = store.create_session(room="bench-live")
    rec = Recorder(store, sid, flush_interval_s=3600).start()
    t0 = 1_750_000_000_000_000
    step = int(flush_s * 1_000_000)
    samples = np.sin(np.arange(32, dtype=np.float32))
    next_num, next_chunk = 0, 0
    for t in range(0, int(hours * 3600 * 1_000_000), step):
        batch: list = []
        while next_num < t + step:
            batch += [Reading(c, 70.0, t0 + next_num, "m") for c in NUMERIC_CHANNELS]
            next_num += 1_000_000
        while next_chunk < t + step:
            batch.append(WaveChunk(Channel.PLETH, t0 + next_chunk, 125.0, samples, "m"))
            next_chunk += 256_000
        rec(batch)
        rec.flush_now(timeout=600)
    rec.stop(timeout=600)
    return sid


def checks(tmp: Path, hours: float) -> None:
    path = tmp / "live.sqlite"
    store = Store.open(str(path))
    t0 = time.perf_counter()
    live_session(store, hours)
    made = time.perf_counter() - t0
    with store.engine.connect() as conn:
        t0 = time.perf_counter()
        report = audit.verify_report(conn)
        t_verify = time.perf_counter() - t0
    store.close()
    assert report.ok, report.faults[:3]
    size = path.stat().st_size / 2**20
    t_quick = min(_seconds(lambda: integrity_findings(path)) for _ in range(3))
    t_full = _seconds(lambda: integrity_findings(path, full=True))
    t_open = min(_seconds(lambda: Store.open(str(path)).close()) for _ in range(3))
    t_open0 = min(_seconds(lambda: Store.open(str(path), check=False).close())
                  for _ in range(3))
    print(f"{hours:g} h live-batched session: {report.samples['numeric']:,} numeric, "
          f"{report.samples['wave']:,} wave rows, {report.records:,} audit rows, "
          f"{size:.1f} MiB (recorded in {made:.0f} s)")
    print(f"verify (chain + rows + sample coverage): {t_verify * 1e3:7.0f} ms")
    print(f"quick_check (every open):                {t_quick * 1e3:7.0f} ms "
          f"({t_quick * 1e3 / size * 100:.0f} ms per 100 MiB)")
    print(f"integrity_check (verify):                {t_full * 1e3:7.0f} ms")
    print(f"Store.open with / without the check:     {t_open * 1e3:7.0f} / "
          f"{t_open0 * 1e3:.0f} ms")


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed(fn, repeat: int = 5) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller runs (smoke)")
    ap.add_argument("--checks-only", action="store_true",
                    help="only section 3 (verify, quick_check)")
    args = ap.parse_args()
    if args.checks_only:
        with tempfile.TemporaryDirectory() as tmp:
            checks(Path(tmp), 0.25 if args.quick else 4.0)
        return 0
    n_num = 50_000 if args.quick else 1_000_000
    n_wave = 500_000 if args.quick else 20_000_000
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(str(Path(tmp) / "bench.sqlite"))
        naive = naive_orm(store, 2_000 if args.quick else 5_000)
        num = ingest_numerics(store, n_num)
        wave = ingest_waves(store, n_wave)
        print(f"naive per-row ORM inserts:   {naive:12,.0f} samples/s  (baseline)")
        print(f"recorder numerics:           {num:12,.0f} samples/s  "
              f"x{num / naive:,.0f} vs naive, x{num / ROOM_RATE:,.0f} a full room")
        print(f"recorder wave samples:       {wave:12,.0f} samples/s  "
              f"x{wave / naive:,.0f} vs naive, x{wave / ROOM_RATE:,.0f} a full room")
        sid = four_hour_session(store)
        reader = SessionReader(store.engine, sid)
        t_hr, n_hr = timed(lambda: reader.numeric(Channel.HR).t_us)
        t_pl, n_pl = timed(lambda: reader.wave(Channel.PLETH).values)
        t_win, n_win = timed(lambda: reader.wave(
            Channel.PLETH, 1_750_000_000_000_000 + 7_200_000_000,
            1_750_000_000_000_000 + 7_260_000_000).values)
        print(f"4 h replay read, HR (1 Hz):        {t_hr * 1e3:7.1f} ms for {n_hr:,} values")
        print(f"4 h replay read, pleth (125 Hz):   {t_pl * 1e3:7.1f} ms for {n_pl:,} samples")
        print(f"60 s pleth window at 2 h:          {t_win * 1e3:7.1f} ms for {n_win:,} samples")
        size = (Path(tmp) / "bench.sqlite").stat().st_size
        print(f"database file after the runs:      {size / 2**20:7.1f} MiB")
        store.close()
        checks(Path(tmp), 0.25 if args.quick else 4.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
