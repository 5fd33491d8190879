"""Replay benchmark (issue 9): the replay window and the PDF report on a 4-hour session.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_replay.py [--hours 4] [--jumps 50]

The session is written with the store's Recorder directly (as bench/bench_store.py does):
12 numeric channels at 1 Hz, pleth at 125 Hz in 32-sample chunks (256 ms, as IntelliVue
sends it), a pump state, delivered dose and Cp estimate every 10 s, a note every 10 min
(one of them amended) and an SpO2 alarm raised, acknowledged and cleared every 30 min.

1. Time to first paint of the ReplayWindow (target <= 1 s): from the constructor to the
   first paint of the trends, split into the record's load (one indexed query per numeric
   channel), building the widgets, and the paint; 1280x800 offscreen.
2. Scrub latency (target <= 50 ms): 50 jumps to random times, each ``set_cursor`` (tiles,
   alarm bar, pump panel, entries list, cursor line, the wave window read: 10 s of pleth
   around the cursor from the database, cached with a 20 s margin) plus the repaint that
   follows; median and p99. Against a naive cursor measured in the same run: one database
   query per channel per jump for the value at the cursor, and an uncached wave read.
3. PDF export of the session: time and pages.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import AlarmAction, AlarmEvent, AlarmKind
from kapmonitor.model import Channel, PumpRunState, PumpState, Reading, WaveChunk
from kapmonitor.store import Recorder, SessionReader, Store
from kapmonitor.ui import theme
from kapmonitor.ui.replay_data import RecordedSession
from kapmonitor.ui.replay_window import ReplayWindow
from kapmonitor.ui.report import export_session

_US = 1_000_000
T0 = 1_750_000_000_000_000
NUMERIC = [Channel.HR, Channel.PULSE, Channel.SPO2, Channel.NIBP_SYS, Channel.NIBP_DIA,
           Channel.NIBP_MEAN, Channel.RR, Channel.ETCO2, Channel.FICO2, Channel.TEMP,
           Channel.PUMP_RATE, Channel.VOLUME_INFUSED]
BASE = {Channel.HR: 75, Channel.PULSE: 75, Channel.SPO2: 97, Channel.NIBP_SYS: 130,
        Channel.NIBP_DIA: 80, Channel.NIBP_MEAN: 97, Channel.RR: 14, Channel.ETCO2: 36,
        Channel.FICO2: 0, Channel.TEMP: 36.7, Channel.PUMP_RATE: 52.5,
        Channel.VOLUME_INFUSED: 0}


def build(store: Store, hours: float) -> int:
    """The 4-hour session; 10 min of baseline before t0 (the infusion start)."""
    start = T0 - 600 * _US
    end = T0 + int(hours * 3600 * _US) - 600 * _US
    sid = store.create_session(patient="BENCH-4H", room="bench", clinicians="RN Bench",
                               weight_kg=70.0, dose_mg_per_kg=0.5, duration_min=40.0,
                               concentration_mg_ml=1.0, demo=True, t_us=start, owned=False)
    store.set_infusion_start(sid, T0, T0)
    store.add_annotation(sid, "phase", "Infusion", code="infusion", t_us=T0, author="pump")
    rec = Recorder(store, sid).start()
    rng = np.random.default_rng(0)
    wave = np.sin(np.arange(32, dtype=np.float32) / 5)
    n_alarm = 0
    for s0 in range((start - T0) // _US, (end - T0) // _US, 600):  # 10-minute blocks
        secs = np.arange(s0, s0 + 600)
        noise = rng.normal(0, 1, (len(NUMERIC), secs.size))
        batch: list = []
        for i, ch in enumerate(NUMERIC):
            for s, z in zip(secs.tolist(), noise[i].tolist(), strict=True):
                v = BASE[ch] + (z if ch not in (Channel.PUMP_RATE, Channel.VOLUME_INFUSED)
                                else 0.0)
                if ch is Channel.VOLUME_INFUSED:
                    v = max(0.0, s) * 52.5 / 3600
                batch.append(Reading(ch, float(v), T0 + s * _US, "monitor"))
        for s in secs[::10].tolist():
            if s >= 0:
                ml = s * 52.5 / 3600
                batch += [PumpState(T0 + s * _US, PumpRunState.RUNNING, 52.5, ml, 35.0 - ml,
                                    drug="ketamine", concentration_mg_ml=1.0, infusion_id=1,
                                    source="pump"),
                          Reading(Channel.DELIVERED_DOSE, ml, T0 + s * _US, "dose"),
                          Reading(Channel.PLASMA_ESTIMATE, min(250.0, s / 8), T0 + s * _US,
                                  "pk")]
        batch += [WaveChunk(Channel.PLETH, T0 + k * 256_000, 125.0, wave, "monitor")
                  for k in range(s0 * _US // 256_000, (s0 + 600) * _US // 256_000)]
        rec(batch)
        if s0 >= 0 and s0 % 1800 == 0:
            t = T0 + (s0 + 300) * _US
            for dt, action, msg in ((0, AlarmAction.RAISE, "SpO2 LOW 86 % (< 88)"),
                                    (8, AlarmAction.ACKNOWLEDGE,
                                     "SpO2 LOW 86 % (< 88): acknowledged by RN Bench"),
                                    (40, AlarmAction.CLEAR, "SpO2 LOW cleared at 95 %")):
                n_alarm += 1
                rec.record_alarm(AlarmEvent(n_alarm, "spo2.low", Channel.SPO2,
                                            AlarmKind.PHYSIOLOGICAL, Priority.HIGH, action,
                                            t + dt * _US, 86.0, 88.0, msg))
    rec.stop(timeout=600)
    first = None
    for m in range(10, int((end - T0) / 60e6), 10):
        nid = store.add_annotation(sid, "observation", f"Settled, breathing easily ({m} min)",
                                   t_us=T0 + m * 60 * _US, author="RN Bench")
        first = first or nid
    if first is not None:
        store.amend_annotation(first, text="Settled; breathing easily, eyes closed",
                               author="RN Bench")
    store.close_session(sid, end)
    return sid


class _FirstPaint(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:
        if ev.type() == QEvent.Type.Paint and self.at is None:
            self.at = time.perf_counter()
        return False


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=4.0)
    ap.add_argument("--jumps", type=int, default=50)
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    theme.apply_theme(app)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(str(Path(tmp) / "bench.sqlite"))
        t = time.perf_counter()
        sid = build(store, args.hours)
        print(f"built a {args.hours:g}-hour session in {time.perf_counter() - t:.1f} s")
        reader = SessionReader(store.engine, sid)
        n_num = sum(len(reader.numeric(c)) for c in NUMERIC)
        n_wave = len(reader.wave(Channel.PLETH))
        print(f"  {n_num:,} numeric values, {n_wave:,} pleth samples at 125 Hz, "
              f"{len(reader.entries())} entries, {len(reader.alarm_events())} alarm events")

        # 1. first paint --------------------------------------------------------------
        opens = []
        for _ in range(3):
            t0 = time.perf_counter()
            rec = RecordedSession.load(store.engine, sid)
            t_load = time.perf_counter() - t0
            win = ReplayWindow(store.engine, sid, recorded=rec)
            t_build = time.perf_counter() - t0
            spy = _FirstPaint()
            win.trends.viewport().installEventFilter(spy)
            win.resize(1280, 800)
            win.show()
            deadline = time.perf_counter() + 10
            while spy.at is None and time.perf_counter() < deadline:
                app.processEvents()
            painted = (spy.at or time.perf_counter()) - t0
            opens.append((t_load, t_build, painted))
            if len(opens) < 3:
                win.shutdown()
                win.close()
                win.deleteLater()
                app.processEvents()
        med = sorted(opens, key=lambda x: x[2])[1]
        print(f"first paint of the replay window: {med[2] * 1e3:7.0f} ms   (target <= 1000)"
              f"  [load {med[0] * 1e3:.0f} ms, widgets {(med[1] - med[0]) * 1e3:.0f} ms, "
              f"paint {(med[2] - med[1]) * 1e3:.0f} ms; median of 3]")

        # 2. scrub ---------------------------------------------------------------------
        rnd = random.Random(1)
        targets = [rnd.randrange(win.start_us, win.end_us) for _ in range(args.jumps)]
        lat, state = [], []
        for t in targets:
            a = time.perf_counter()
            win.set_cursor(t)
            b = time.perf_counter()
            app.processEvents()  # the repaint of trends, tiles, strips, list
            c = time.perf_counter()
            lat.append(c - a)
            state.append(b - a)
        reads = sum(w.reads for w in win._wave_windows)
        print(f"scrub, {args.jumps} random jumps incl. wave read and repaint: median "
              f"{statistics.median(lat) * 1e3:5.1f} ms, p99 {pct(lat, 0.99) * 1e3:5.1f} ms"
              "   (target <= 50)")
        print(f"  of which the cursor update without paint: median "
              f"{statistics.median(state) * 1e3:5.1f} ms, p99 {pct(state, 0.99) * 1e3:5.1f} "
              f"ms; {reads} wave window reads")
        naive = []
        for t in targets:
            a = time.perf_counter()
            for ch in NUMERIC:  # the last value at or before the cursor, per channel
                s = reader.numeric(ch, t_to=t)
                _ = s.values[-1] if len(s) else None
            reader.wave(Channel.PLETH, t - 5 * _US, t + 5 * _US)
            naive.append(time.perf_counter() - a)
        print(f"  naive cursor (SessionReader.numeric(ch, t_to=cursor) per channel per jump, "
              "uncached wave, no paint): median "
              f"{statistics.median(naive) * 1e3:5.1f} ms, p99 {pct(naive, 0.99) * 1e3:5.1f} ms"
              f"; ours without paint is x{statistics.median(naive) / statistics.median(state):.0f}"
              " faster")
        # playback cost: one pacer tick at 60x
        win.set_speed(60)
        ticks = []
        win.set_cursor(win.start_us)
        win.play()
        end = time.perf_counter() + 3
        while time.perf_counter() < end:
            a = time.perf_counter()
            win._tick()
            app.processEvents()
            ticks.append(time.perf_counter() - a)
        win.pause()
        print(f"playback at 60x, one pacer tick incl. repaint: median "
              f"{statistics.median(ticks) * 1e3:5.1f} ms, p99 {pct(ticks, 0.99) * 1e3:5.1f} ms"
              f" (a 30 Hz pacer has 33 ms)")
        win.shutdown()
        win.close()
        win.deleteLater()
        app.processEvents()

        # 3. PDF -----------------------------------------------------------------------
        times, pages = [], 0
        for i in range(3):
            out = Path(tmp) / f"report{i}.pdf"
            a = time.perf_counter()
            res = export_session(store.engine, sid, out)
            times.append(time.perf_counter() - a)
            pages = res.counts["pages"]
        size = (Path(tmp) / "report0.pdf").stat().st_size
        print(f"PDF report: {statistics.median(times) * 1e3:6.0f} ms (median of 3), {pages} "
              f"pages, {size / 1024:.0f} KiB")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
