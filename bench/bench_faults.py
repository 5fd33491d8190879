"""Fault -> technical alarm, and fault cleared -> data flowing again, for each fault a
bedside PC meets (issue 12: an alarm within 2 s; recovery by itself). Prints figures;
asserts nothing.

    .venv/bin/python bench/bench_faults.py [--repeat 5]

Everything runs at real time (speed 1) through the real path: a Masimo peer on a pty, the
transport, the bus, the recorder and the alarm engine of a ``LiveSession``, a SQLite file.
For each fault: the wall time from injecting it to the technical alarm being active in the
engine (what the window shows), and from clearing it to the first sample taken after the
clearing being committed to the file (polled from another connection). The baseline is the
same commit latency with no fault, measured in the same run: recovery is reported as a
multiple of it.

Store faults are made for real: another process holding SQLite's write lock; SQLite
answering SQLITE_FULL (``max_page_count`` at the file's size); the file removed. Port
faults use the simulator's cable pull on the pty (the peer goes silent, then resumes).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kapmonitor.drivers.devices.masimo import MasimoHost
from kapmonitor.drivers.sim.feed import ScriptedVitals
from kapmonitor.drivers.sim.peers.masimo import MasimoPeer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel, now_us
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import Store
from kapmonitor.store.faults import DiskFull


def wait(pred: Callable[[], bool], timeout: float = 60.0) -> float:
    """Seconds until ``pred`` holds (polled every 5 ms), or nan after ``timeout``."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return float("nan")
        time.sleep(0.005)
    return time.monotonic() - t0


class Rig:
    def __init__(self, folder: Path) -> None:
        self.db = folder / "kap.sqlite"
        self.store = Store.open(str(self.db))
        self.vitals = ScriptedVitals(values={Channel.SPO2: 97.0, Channel.PULSE: 72.0,
                                             Channel.PERF_INDEX: 2.0})
        self.server = PtyServer(MasimoPeer(self.vitals), name="masimo").start()
        self.session = LiveSession(self.store, SessionConfig(patient="BENCH")).start()
        self.runner = DeviceRunner(self.server.url, MasimoHost("oximeter"),
                                   self.session.bus.publish)
        self.session.attach("oximeter", self.runner, protocol="masimo",
                            port=self.server.url)
        self.disk = DiskFull(self.store.engine)
        wait(lambda: self.session.live.latest(Channel.SPO2) is not None)

    def alarmed(self, prefix: str) -> bool:
        return any(a.key.startswith(prefix) and a.present
                   for a in self.session.alarms.active())

    def committed_after(self, t_us: int) -> bool:
        try:
            # read-only URI: polling must never create the file it is waiting for
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=0.05) as c:
                (last,) = c.execute("SELECT max(t_us) FROM numeric").fetchone()
        except sqlite3.Error:
            return False
        return last is not None and last > t_us

    def flowing_after(self, t_us: int) -> float:
        return wait(lambda: self.committed_after(t_us))

    def close(self) -> None:
        self.session.close(timeout=5)
        self.server.stop()
        self.store.close()


def baseline(rig: Rig) -> float:
    return rig.flowing_after(now_us())


def lock_fault(rig: Rig, hold_s: float = 4.0) -> tuple[float, float]:
    code = ("import sqlite3, sys\n"
            f"c = sqlite3.connect({str(rig.db)!r}, timeout=30, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
            "sys.stdin.readline(); c.execute('ROLLBACK')\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    p.stdout.readline()
    to_alarm = wait(lambda: rig.alarmed("tech.database"))
    wait(lambda: False, hold_s - to_alarm)  # keep the lock a while: rows pile up
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait()
    p.stdin.close()
    p.stdout.close()
    cleared = now_us()
    return to_alarm, rig.flowing_after(cleared)


def disk_full(rig: Rig, hold_s: float = 3.0) -> tuple[float, float]:
    """Measured from the first refused commit: SQLite keeps filling free space in pages
    the file already has before it answers SQLITE_FULL (seconds at this data rate)."""
    errors = rig.session.recorder.stats.errors
    rig.disk.full = True
    wait(lambda: rig.session.recorder.stats.errors > errors)
    to_alarm = wait(lambda: rig.alarmed("tech.database"))
    wait(lambda: False, hold_s)
    rig.disk.full = False
    cleared = now_us()
    return to_alarm, rig.flowing_after(cleared)


def file_removed(rig: Rig) -> tuple[float, float]:
    """The alarm is raised and cleared within the commit that restores the file, so the
    first figure is the time to the restored file and the second to data in it."""
    rig.db.unlink()
    removed = now_us()
    return wait(rig.db.exists), rig.flowing_after(removed)


def cable_pulled(rig: Rig, hold_s: float = 8.0) -> tuple[float, float]:
    """The peer goes silent (the simulator's cable pull); the alarm comes when the
    protocol's stale time has passed, by design."""
    rig.server.cut(hold_s)
    pulled = time.monotonic()
    to_alarm = wait(lambda: rig.alarmed("tech.oximeter"))
    wait(lambda: False, hold_s - (time.monotonic() - pulled))
    cleared = now_us()
    return to_alarm, rig.flowing_after(cleared)


FAULTS: dict[str, Callable[[Rig], tuple[float, float]]] = {
    "database locked by another process": lock_fault,
    "disk full (from the first SQLITE_FULL)": disk_full,
    "database file removed": file_removed,
    "cable pulled (peer silent 8 s)": cable_pulled,
}


def pending_memory(folder: Path, minutes: float = 10.0) -> None:
    """What the recorder holds in memory while the disk refuses: ``minutes`` of a full room
    (1,000 wave samples/s as 125 Hz pleth + 500 Hz ECG + 375 Hz more in 32-sample chunks,
    and 20 numerics/s) pushed into a recorder whose database answers SQLITE_FULL. Measured
    with tracemalloc (Python allocations, numpy buffers included)."""
    import tracemalloc

    import numpy as np

    from kapmonitor.model import Reading, WaveChunk
    from kapmonitor.store import Recorder

    store = Store.open(str(folder / "mem.sqlite"))
    sid = store.create_session(owned=False)

    disk = DiskFull(store.engine)
    disk.full = True
    rec = Recorder(store, sid, max_pending_wave_samples=10**9, max_pending_numerics=10**9)
    seconds = int(minutes * 60)
    t = now_us()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rec.start()
    for sec in range(seconds):
        msgs: list = [Reading(Channel.HR, 70.0, t + sec * 1_000_000 + k * 50_000, "m")
                      for k in range(20)]
        for k in range(1000 // 32 + 1):
            msgs.append(WaveChunk(Channel.PLETH, t + sec * 1_000_000 + k * 32_000, 1000.0,
                                  np.zeros(32, dtype=np.float32), "m"))
        rec(msgs)
    wait(lambda: rec.pending_rows >= seconds * (20 + 32), 600)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    n_wave = rec._wave_pending
    n_num = len(rec._numerics)
    print(f"pending in memory while the disk is full, {minutes:g} min of a full room: "
          f"{n_wave:,} wave samples + {n_num:,} numerics = {used / 2**20:.1f} MiB "
          f"({used / (n_wave + n_num):.1f} B per sample); the default bound "
          f"({4_000_000:,} wave samples, {250_000:,} numerics) is "
          f"{4_000_000 / 1000 / 60:.0f} min of waves and {250_000 / 20 / 60:.0f} min of "
          "numerics at this rate")
    disk.remove()
    rec.stop(timeout=60)
    store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--memory-only", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pending_memory(Path(folder))
        if args.memory_only:
            return 0
        rig = Rig(Path(folder))
        try:
            base = [baseline(rig) for _ in range(args.repeat)]
            b = statistics.median(base)
            print(f"baseline: sample -> committed, median {b * 1000:.0f} ms "
                  f"(max {max(base) * 1000:.0f} ms, {args.repeat} runs)")
            print(f"{'fault':40s} {'-> alarm median/max':>22s} {'cleared -> data':>22s}"
                  f" {'x baseline':>10s}")
            for name, fault in FAULTS.items():
                res = [fault(rig) for _ in range(args.repeat)]
                alarm = [r[0] for r in res]
                flow = [r[1] for r in res]
                print(f"{name:40s} {statistics.median(alarm):8.2f} s / {max(alarm):5.2f} s "
                      f"{statistics.median(flow):8.2f} s / {max(flow):5.2f} s "
                      f"{statistics.median(flow) / b:9.1f}x", flush=True)
        finally:
            rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
