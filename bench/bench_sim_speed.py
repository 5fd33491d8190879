"""How fast can a whole simulated session run through the real path without loss?
(issue 7: target >= 60x real time). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_sim_speed.py [--speeds 60 120 240] [--scenario standard]

For each speed: ``kapmonitor simulate`` (IntelliVue monitor with ECG 500 Hz, pleth 125 Hz
and CO2 62.5 Hz waves, B. Braun pump) and ``kapmonitor record --headless`` run as two
processes over ptys for the scenario's whole duration on one simulated clock. Loss is
counted against the simulator's own tally of wave samples put on the wire (its truth log)
and HR against one value per simulated second. Reported per process (from wait4): CPU
seconds and peak RSS; for the recorder also its maximum queue depth.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PY = sys.executable


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class PeakRss:
    """Samples each process's VmHWM (peak resident set) and CPU time from /proc while it
    runs (a process that exits on its own is reaped before wait4 could tell us)."""

    def __init__(self, *pids: int) -> None:
        self.peak = dict.fromkeys(pids, 0.0)
        self.cpu = dict.fromkeys(pids, 0.0)
        self._hz = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self.peak:
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu[pid] = (int(stat[11]) + int(stat[12])) / self._hz
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak[pid] = max(self.peak[pid], int(line.split()[1]) / 1024)
                except OSError:
                    pass

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return self.peak


def reap(proc: subprocess.Popen) -> float:
    """Wait for one child; the CPU seconds it used."""
    before = _children_cpu()
    proc.wait()
    return _children_cpu() - before


def run(scenario: str, speed: float, minutes: float, tmp: Path) -> dict:
    epoch = time.time_ns() // 1000
    truth, db = tmp / "truth.jsonl", tmp / "bench.sqlite"
    sim = subprocess.Popen([PY, "-m", "kapmonitor", "simulate", "--scenario", scenario,
                            "--speed", str(speed), "--epoch", str(epoch), "--truth", str(truth),
                            "--link-dir", str(tmp)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    assert sim.stdout is not None
    sim.stdout.readline()
    sim.stdout.readline()
    t0 = time.perf_counter()
    rec = subprocess.Popen([PY, "-m", "kapmonitor", "record", "--headless", "--db", str(db),
                            "--device", f"intellivue={tmp / 'monitor'}",
                            "--device", f"bbraun-bcc={tmp / 'pump'}", "--speed", str(speed),
                            "--epoch", str(epoch), "--duration", str((minutes - 5) * 60),
                            "--weight", "70", "--concentration", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert rec.stdout is not None
    rss = PeakRss(rec.pid, sim.pid)
    out = rec.stdout.read()
    rec.stdout.close()
    rec_cpu = reap(rec)
    wall = time.perf_counter() - t0
    sim.terminate()
    sim.stdout.close()
    sim_cpu = reap(sim)
    peaks = rss.stop()
    rec_rss, sim_rss = peaks[rec.pid], peaks[sim.pid]
    sim_cpu = max(sim_cpu, rss.cpu[sim.pid])
    rows = [json.loads(x) for x in truth.read_text().splitlines()]
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT channel, sum(n) FROM wave GROUP BY channel"))
        n_hr, hr_first, hr_last = conn.execute(
            "SELECT count(*), min(t_us), max(t_us) FROM numeric WHERE channel='hr'").fetchone()
        (t_end,) = conn.execute("SELECT max(t_us) FROM wave").fetchone()
    # the recorder stops before the simulator: what it stored must lie between what had
    # been sent at the truth tick before its last sample and at the tick after
    ticks = [r for r in rows if not r.get("final")]
    before = [r for r in ticks if r["t_us"] <= t_end][-1]["wave_samples_sent"]
    after = next(r for r in ticks if r["t_us"] > t_end)["wave_samples_sent"]
    return {
        "wall": wall, "before": before, "after": after, "stored": stored,
        "hr": (n_hr, (hr_last - hr_first) / 1e6 + 1),
        "queue": int(out.split("queue max ")[1].split()[0]),
        "rec": (rec_cpu, rec_rss), "sim": (sim_cpu, sim_rss),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speeds", type=float, nargs="+", default=[60, 120, 240])
    ap.add_argument("--scenario", default="standard")
    ap.add_argument("--minutes", type=float, default=140,
                    help="the scenario's length; the record stops 5 min before it ends")
    args = ap.parse_args()
    print(f"scenario {args.scenario}, {args.minutes:g} simulated minutes, IntelliVue + "
          "B. Braun, simulate and record as two processes over ptys")
    for speed in args.speeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(args.scenario, speed, args.minutes, Path(tmp))
        ok = all(r["before"][ch] <= r["stored"][ch] <= r["after"][ch] for ch in r["stored"])
        spans = {ch: f"{r['before'][ch]}<={r['stored'][ch]}<={r['after'][ch]}"
                 for ch in sorted(r["stored"])}
        print(f"{speed:5g}x  wall {r['wall']:6.1f} s   wave samples sent<=stored<=sent(+1 s) "
              f"{spans} ({'no loss' if ok else 'LOSS'})   HR stored {r['hr'][0]}, numeric "
              f"results sent {r['before'].get('numerics', 0)}..{r['after'].get('numerics', 0)}"
              "   "
              f"recorder queue max {r['queue']}   CPU s / peak RSS MiB: record "
              f"{r['rec'][0]:.1f}/{r['rec'][1]:.0f}, simulate {r['sim'][0]:.1f}/{r['sim'][1]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
