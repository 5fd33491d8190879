"""UI benchmark: the bedside window refreshing at 30 Hz offscreen with 4 h of history in
every trend and two live wave strips. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_ui.py [--seconds 20] [--quick]

What is measured, in one run on one session:

1. The whole window (1280x800): each frame is ``MainWindow.frame()`` (ring buffers ->
   tiles, trends, waves, pump panel, alarm state) plus the paint that follows
   (``processEvents``), driven at 30 Hz while a feeder thread publishes a monitor's live
   data through the session's bus in real time (6 numerics at 1 Hz, pleth 100 Hz and CO2
   25 Hz in 0.2 s chunks, a pump state each second): recorder, alarm engine and live buffers
   all run as in a room. Figures: median and p99 frame time (targets: median <= 8 ms,
   p99 <= 16 ms), process CPU share (all threads) and the GUI thread's share, RSS.
   The window spreads its plot redraws: at most one plot (trends, a wave strip, the Cp
   sparkline) is re-rendered per frame, and a trend is re-rendered no more often than one
   pixel of its time axis lasts (a 4-hour view: every ~25 s; at least every 20 s).
2. The trends and waves alone, against a naive redraw measured in the same run and on the
   same data: every frame, every curve gets its whole ring again (``snapshot()`` +
   ``setData``) with no version check, no clip-to-view and no downsampling, and the wave
   strips scroll (a new x axis every frame). The UI's panel here redraws every curve that
   has new data (no throttling, no spreading), so this compares the same work done two
   ways. The two panels are the same size and are refreshed alternately on the same ticks.
   Figure: the ratio of their median and p99 frame times.

History: 10 min baseline + 230 min infusion at 1 Hz per channel (14,400 points per trend),
NIBP every 5 min, pump states every second (the dose tracker and PK estimate see them).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyqtgraph as pg
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from kapmonitor.live import LiveBuffers
from kapmonitor.model import (
    Channel,
    PumpRunState,
    PumpState,
    Reading,
    WaveChunk,
)
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import Store
from kapmonitor.ui import theme
from kapmonitor.ui.main_window import MainWindow
from kapmonitor.ui.plots import DEFAULT_ROWS, TrendPanel
from tests.ui.synthetic import CONTINUOUS, publish_history, scenario, wave_samples

_US = 1_000_000
WAVES = {Channel.PLETH: 100.0, Channel.CO2_WAVE: 25.0}
FRAME_S = 1 / 30


class NaivePanel(pg.GraphicsLayoutWidget):
    """The straightforward way: redraw everything from the full rings every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.curves: list[tuple[Channel, pg.PlotDataItem]] = []
        for i, row in enumerate(DEFAULT_ROWS):
            plot = self.addPlot(row=i, col=0)
            plot.setYRange(*row.y_range)
            for ch in row.channels:
                c = plot.plot(pen=pg.mkPen(theme.PARAM_COLOURS[ch], width=1))
                self.curves.append((ch, c))
        for j, ch in enumerate(WAVES):
            plot = self.addPlot(row=len(DEFAULT_ROWS) + j, col=0)
            self.curves.append((ch, plot.plot(pen=pg.mkPen(theme.PARAM_COLOURS[ch], width=1))))

    def refresh(self, live: LiveBuffers, now_us: int) -> None:
        for ch, curve in self.curves:
            ring = live.ring(ch)
            if ring is None:
                continue
            snap = ring.snapshot()
            if ch in WAVES:
                keep = snap.t_us >= now_us - 10 * _US
                curve.setData((snap.t_us[keep] - now_us) / _US, snap.values[keep])
            else:
                curve.setData((snap.t_us - now_us) / 60e6, snap.values)


class Feeder(threading.Thread):
    """A monitor and a pump publishing in real time on the session's bus."""

    def __init__(self, session: LiveSession, t0: int) -> None:
        super().__init__(name="bench-feeder", daemon=True)
        self.session = session
        self.t0 = t0
        self.stop_event = threading.Event()
        self.published = 0

    def run(self) -> None:
        s = self.session
        next_wave = {ch: s.clock() for ch in WAVES}
        next_num = s.clock()
        while not self.stop_event.wait(0.2):
            now = s.clock()
            batch: list = []
            for ch, rate in WAVES.items():
                n = int((now - next_wave[ch]) * rate / _US)
                if n > 0:
                    batch.append(WaveChunk(ch, next_wave[ch], rate,
                                           wave_samples(ch, next_wave[ch], rate, n, 88.0, 13.0),
                                           "monitor"))
                    next_wave[ch] += round(n * _US / rate)
            while next_num <= now:
                v = scenario((next_num - self.t0) / 60e6)
                batch += [Reading(ch, float(v[ch]), next_num, "monitor") for ch in CONTINUOUS]
                batch.append(PumpState(next_num, PumpRunState.COMPLETE, 0.0, 35.0, 0.0,
                                       drug="ketamine", concentration_mg_ml=1.0, infusion_id=1,
                                       source="pump/slot11"))
                next_num += _US
            if batch:
                s.bus.publish(batch)
                self.published += len(batch)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="5 s per measurement")
    args = ap.parse_args(argv)
    seconds = 5.0 if args.quick else args.seconds

    app = QApplication.instance() or QApplication([sys.argv[0]])
    theme.apply_theme(app)
    tmp = tempfile.TemporaryDirectory()
    store = Store.open(str(Path(tmp.name) / "bench.sqlite"))
    cfg = SessionConfig(patient="BENCH", room="bench", weight_kg=70.0, dose_mg_per_kg=0.5,
                        duration_min=40, concentration_mg_ml=1.0, demo=True)
    session = LiveSession(store, cfg).start()
    settings = QSettings(str(Path(tmp.name) / "ui.ini"), QSettings.Format.IniFormat)
    rss0 = rss_mb()
    t_hist = time.perf_counter()
    now = session.clock()
    t0 = publish_history(session.bus.publish, now, baseline_min=10, infusion_min=230,
                         rate_ml_h=52.5, vtbi_ml=35.0, period_s=1.0)
    # the last 30 s of waves (what the wave rings hold)
    start = now - 30 * _US
    session.bus.publish([WaveChunk(ch, start, rate,
                                   wave_samples(ch, start, rate, int(30 * rate), 88.0, 13.0),
                                   "monitor") for ch, rate in WAVES.items()])
    while session.recorder.backlog > 0:  # let the writer catch up before measuring
        time.sleep(0.05)
    hist_s = time.perf_counter() - t_hist
    points = len(session.live.ring(Channel.HR).snapshot())

    win = MainWindow(session, demo=True, settings=settings, enable_audio=False)
    win.resize(1280, 800)
    win.show()
    win.timer.stop()  # frames are driven here, so each can be timed with its paint
    for _ in range(10):
        win.frame()
        app.processEvents()
    rss_window = rss_mb()
    feeder = Feeder(session, t0)
    feeder.start()

    def drive(step, dur: float) -> tuple[list[float], float, float, float]:
        times: list[float] = []
        cpu0, th0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        next_t = time.perf_counter()
        end = next_t + dur
        while time.perf_counter() < end:
            a = time.perf_counter()
            step()
            times.append(time.perf_counter() - a)
            next_t += FRAME_S
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.perf_counter()
        wall = time.perf_counter() - w0
        return times, wall, (time.process_time() - cpu0) / wall, (
            time.thread_time() - th0) / wall

    def window_frame() -> None:
        win.frame()
        app.processEvents()

    frames, wall, cpu, gui_cpu = drive(window_frame, seconds)
    stats = win.frame_stats()
    rss_run = rss_mb()

    # -- plots alone: optimised vs naive, alternating on the same ticks ---------------------
    win.hide()
    limits = session.alarms.alarm_limits
    opt = TrendPanel(limits)
    naive = NaivePanel()
    for w in (opt, naive):
        w.resize(580, 560)
        w.show()
    opt.set_reference(t0, infusion_started=True)
    opt_times: list[float] = []
    naive_times: list[float] = []

    def both() -> None:
        now_us = session.clock()
        a = time.perf_counter()
        opt.refresh(session.live, now_us)
        app.processEvents()
        b = time.perf_counter()
        naive.refresh(session.live, now_us)
        app.processEvents()
        c = time.perf_counter()
        opt_times.append(b - a)
        naive_times.append(c - b)

    for _ in range(5):
        both()
    opt_times.clear()
    naive_times.clear()
    drive(both, seconds)

    feeder.stop_event.set()
    feeder.join(5)
    win.quit_now()
    win.shutdown()
    for w in (opt, naive):
        w.close()
        w.deleteLater()
    win.deleteLater()
    app.processEvents()
    session.close(author="bench")
    store.close()
    tmp.cleanup()

    ms = [x * 1e3 for x in frames]
    print("bench_ui: bedside window, 1280x800 offscreen, 30 Hz, "
          f"{points} points per trend (4 h at 1 Hz), pleth 100 Hz + CO2 25 Hz live")
    print(f"  history published in {hist_s:.1f} s (through the bus, recorder drained)")
    print(f"  frames measured          {len(ms)} in {wall:.1f} s "
          f"({len(ms) / wall:.1f} Hz achieved)")
    print(f"  frame + paint  median    {statistics.median(ms):.2f} ms   (target <= 8 ms)")
    print(f"  frame + paint  p99       {pct(ms, 0.99):.2f} ms   (target <= 16 ms)")
    print(f"  frame + paint  max       {max(ms):.2f} ms")
    print(f"  frame() alone  median    {stats['median_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms")
    print(f"  CPU, whole process       {cpu * 100:.1f} % of one core "
          f"(GUI thread {gui_cpu * 100:.1f} %; feeder, recorder, alarms in the rest)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  RSS                      {rss_run:.0f} MB (before history {rss0:.0f} MB, "
          f"window shown {rss_window:.0f} MB; peak {peak:.0f} MB)")
    om = [x * 1e3 for x in opt_times]
    nm = [x * 1e3 for x in naive_times]
    print(f"  trends+waves, this UI    median {statistics.median(om):.2f} ms, "
          f"p99 {pct(om, 0.99):.2f} ms")
    print(f"  trends+waves, naive      median {statistics.median(nm):.2f} ms, "
          f"p99 {pct(nm, 0.99):.2f} ms")
    print(f"  naive / this UI          {statistics.median(nm) / statistics.median(om):.1f}x "
          f"(median), {pct(nm, 0.99) / pct(om, 0.99):.1f}x (p99)")
    print(f"  feeder published         {feeder.published} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
