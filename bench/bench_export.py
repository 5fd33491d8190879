"""Export benchmarks (issue 9). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_export.py [--quick] [--heavy]

Builds a 4-hour session through the real Recorder (as bench/bench_store.py does): 11
numerics at 1 Hz (HR, pulse, SpO2, RR, EtCO2, FiCO2, temp, pump rate, volume, delivered
dose, plasma estimate), NIBP every 5 min, ECG at 500 Hz, pleth at 125 Hz and CO2 at
62.5 Hz in IntelliVue-sized chunks, a pump report every 5 s, an entry every 2 min (some
amended) and an alarm every 15 min. Then times each export of it, median of ``--repeat``
runs, with the output's size. ``--heavy`` adds the CSV with every wave sample and FHIR
with every reading and the waves as SampledData. ``--quick``: a 30-minute session.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kapmonitor.alarm_limits import Priority
from kapmonitor.alarms import AlarmAction, AlarmEvent, AlarmKind
from kapmonitor.export import FORMATS, export_session
from kapmonitor.model import Channel, PumpRunState, PumpState, Reading, WaveChunk
from kapmonitor.store import Recorder, Store

T0 = 1_750_000_000_000_000
NUMERICS = {Channel.HR: 70.0, Channel.PULSE: 70.0, Channel.SPO2: 97.0, Channel.RR: 12.0,
            Channel.ETCO2: 36.0, Channel.FICO2: 0.0, Channel.TEMP: 36.6,
            Channel.PUMP_RATE: 52.5, Channel.VOLUME_INFUSED: 0.0,
            Channel.DELIVERED_DOSE: 0.0, Channel.PLASMA_ESTIMATE: 0.0}
WAVES = ((Channel.ECG, 500.0, 128), (Channel.PLETH, 125.0, 32), (Channel.CO2_WAVE, 62.5, 16))


def build_session(store: Store, seconds: int) -> int:
    sid = store.create_session(patient="BENCH-1", room="bench", weight_kg=70.0,
                               dose_mg_per_kg=0.5, duration_min=40.0, concentration_mg_ml=1.0,
                               t_us=T0)
    store.add_device(sid, "monitor", "intellivue", t_us=T0)
    store.add_device(sid, "pump", "bbraun-bcc", t_us=T0)
    store.set_infusion_start(sid, T0 + 600_000_000, T0)
    rec = Recorder(store, sid).start()
    rng = np.random.default_rng(1)
    block = 600
    for s0 in range(0, seconds, block):
        s1 = min(seconds, s0 + block)
        batch: list = []
        for s in range(s0, s1):
            t = T0 + s * 1_000_000
            for ch, base in NUMERICS.items():
                v = base + (s / 3600 if ch is Channel.VOLUME_INFUSED else rng.normal(0, 1)
                            if ch in (Channel.HR, Channel.PULSE) else 0.0)
                batch.append(Reading(ch, round(v, 2), t + 200_000,
                                     "dose" if ch is Channel.DELIVERED_DOSE else
                                     "pk" if ch is Channel.PLASMA_ESTIMATE else
                                     "pump" if ch in (Channel.PUMP_RATE,
                                                      Channel.VOLUME_INFUSED) else "monitor"))
            if s % 300 == 0:
                batch += [Reading(Channel.NIBP_SYS, 120.0, t, "monitor"),
                          Reading(Channel.NIBP_DIA, 80.0, t, "monitor"),
                          Reading(Channel.NIBP_MEAN, 93.0, t, "monitor")]
            if s % 5 == 0:
                batch.append(PumpState(t, PumpRunState.RUNNING, 52.5, s / 3600, 35.0,
                                       drug="ketamine", concentration_mg_ml=1.0,
                                       infusion_id=1, source="pump"))
        for ch, rate, n in WAVES:
            period_us = n * 1e6 / rate
            k0, k1 = (int(s * 1_000_000 // period_us) for s in (s0, s1))
            data = np.sin(np.arange(n, dtype=np.float32) / 7)
            batch += [WaveChunk(ch, T0 + round(k * period_us), rate, data, "monitor")
                      for k in range(k0, k1)]
        rec(batch)
        for s in range(s0, s1, 900):
            rec.record_alarm(AlarmEvent(
                event_id=s, key="spo2.low", action=AlarmAction.RAISE, priority=Priority.HIGH,
                kind=AlarmKind.PHYSIOLOGICAL, t_us=T0 + s * 1_000_000, message="SpO2 LOW",
                channel=Channel.SPO2, value=87.0, limit=88.0))
    rec.stop(timeout=600)
    for s in range(0, seconds, 120):
        aid = store.add_annotation(sid, "observation", f"note at {s} s",
                                   t_us=T0 + s * 1_000_000, author="RN A")
        if s % 1200 == 0:
            store.amend_annotation(aid, text=f"note at {s} s (corrected)")
    store.close_session(sid, T0 + seconds * 1_000_000)
    return sid


def size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 30-minute session")
    ap.add_argument("--heavy", action="store_true", help="also CSV with waves, FHIR with "
                    "every reading and waves")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    seconds = 1800 if args.quick else 4 * 3600
    runs = [("csv", ".d", {}), ("csv", ".zip", {}), ("fhir", ".json", {}),
            ("edf", ".edf", {}), ("vital", ".vital", {})]
    if args.heavy:
        runs += [("csv", "-waves.zip", {"waves": True}),
                 ("fhir", "-all.json", {"interval_s": 0, "waves": True})]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(str(Path(tmp) / "bench.sqlite"))
        t = time.perf_counter()
        sid = build_session(store, seconds)
        print(f"built a {seconds / 3600:g}-hour session in {time.perf_counter() - t:.1f} s "
              f"({seconds * len(NUMERICS)} numerics, "
              f"{seconds * sum(r for _, r, _ in WAVES):.0f} wave samples)")
        print(f"{'format':<34} {'median s':>9} {'min s':>7} {'size MB':>8}  counts")
        for fmt, suffix, opts in runs:
            times = []
            result = None
            for i in range(args.repeat):
                out = Path(tmp) / f"{fmt}{i}{suffix}"
                t = time.perf_counter()
                result = export_session(fmt, store.engine, sid, out, **opts)
                times.append(time.perf_counter() - t)
            assert result is not None
            label = fmt + (" " + " ".join(f"{k}={v}" for k, v in opts.items()) if opts
                           else "") + (" (zip)" if suffix.endswith(".zip") else "")
            counts = ", ".join(f"{k} {v}" for k, v in list(result.counts.items())[:4])
            print(f"{label:<34} {statistics.median(times):>9.2f} {min(times):>7.2f} "
                  f"{size(out) / 1e6:>8.1f}  {counts}")
        store.close()
    print("formats:", ", ".join(FORMATS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
