"""Fidelity on a real signal (issue 7): PhysioNet record a103l (../shared/data, 250 Hz ECG
and PLETH from an ICU monitor) played through the IntelliVue peer on a real pty, decoded by
the IntelliVue host, recorded to SQLite. What is stored must be the record itself, sample
for sample, within the protocol's quantisation (IntelliVue sample arrays as the peer scales
them: ECG 14 bits over 81.915 mV -> 0.005 mV; pleth 12 bits over 4.095 -> 0.001), and the
stored sample count must equal what went on the wire: nothing lost, nothing duplicated.

IntelliVue carries ECG at 500 Hz and pleth at 125 Hz, so the peer asks the playback for
those rates: pleth sample k is record sample 2k exactly; ECG sample k is the record at
k/500 s (even k: a record sample; odd k: the midpoint, linear interpolation)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from kapmonitor.drivers.devices.intellivue import IntellivueHost
from kapmonitor.drivers.sim.clock import ScaledClock
from kapmonitor.drivers.sim.peers.intellivue import IntellivuePeer
from kapmonitor.drivers.sim.playback import PlaybackVitals, read_wfdb
from kapmonitor.drivers.sim.rig import CountingVitals
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel
from kapmonitor.session import LiveSession, SessionConfig
from kapmonitor.store import SessionReader, Store

from ..conftest import DATA

RECORD = DATA / "physionet" / "a103l"
SPEED = 20.0
SIM_SECONDS = 150.0


def _offset(stored: np.ndarray, expected_at) -> int:
    """The record position of the first stored sample: the playback starts its stream at
    the elapsed time of the first wave poll."""
    head = stored[:400].astype(np.float64)
    errs = [np.abs(head - expected_at(np.arange(o, o + len(head)))).max()
            for o in range(0, 5000)]
    return int(np.argmin(errs))


def test_a103l_through_intellivue_is_stored_sample_for_sample(db_path: Path) -> None:
    assert RECORD.with_suffix(".hea").exists(), f"missing {RECORD}.hea (../shared/data)"
    rec = read_wfdb(RECORD)
    ecg_rec = rec.waves[Channel.ECG].samples.astype(np.float64)
    pleth_rec = rec.waves[Channel.PLETH].samples.astype(np.float64)
    clock = ScaledClock(SPEED)
    feed = CountingVitals(PlaybackVitals(rec, start_us=clock()))
    peer = IntellivuePeer(feed, waves=(Channel.ECG, Channel.PLETH))
    server = PtyServer(peer, clock=clock, name="intellivue").start()
    store = Store.open(str(db_path))
    session = LiveSession(store, SessionConfig(patient="a103l", demo=True), clock=clock).start()
    try:
        session.attach("monitor", DeviceRunner(server.url, IntellivueHost("monitor"),
                                               session.bus.publish, clock=clock),
                       protocol="intellivue", port=server.url)
        # let the record play SIM_SECONDS of its waves: a condition on what the peer sent,
        # not a wall-clock budget (a loaded machine associates later)
        deadline = time.monotonic() + 120
        while (feed.sent.get("pleth", 0) < 125 * SIM_SECONDS
               or feed.sent.get("ecg", 0) < 500 * SIM_SECONDS):
            assert time.monotonic() < deadline, f"the peer sent only {feed.sent}"
            threading.Event().wait(0.05)
        peer.silent = True  # stop sending, then wait until all that was sent is stored
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            session.recorder.flush_now()
            reader = SessionReader(store.engine, session.session_id)
            if len(reader.wave(Channel.PLETH)) >= feed.sent.get("pleth", 0) and \
                    len(reader.wave(Channel.ECG)) >= feed.sent.get("ecg", 0):
                break
            threading.Event().wait(0.1)
    finally:
        session.close()
        server.stop()
    reader = SessionReader(store.engine, session.session_id)
    pleth = reader.wave(Channel.PLETH).values.astype(np.float64)
    ecg = reader.wave(Channel.ECG).values.astype(np.float64)
    store.close()

    assert len(pleth) == feed.sent["pleth"] > 125 * (SIM_SECONDS - 10)
    assert len(ecg) == feed.sent["ecg"] > 500 * (SIM_SECONDS - 10)

    def pleth_at(k: np.ndarray) -> np.ndarray:
        return pleth_rec[(2 * k) % len(pleth_rec)]

    def ecg_at(k: np.ndarray) -> np.ndarray:
        return np.interp(k / 2.0, np.arange(len(ecg_rec)), ecg_rec)

    o = _offset(pleth, pleth_at)
    err = np.abs(pleth - pleth_at(np.arange(o, o + len(pleth))))
    assert err.max() <= 0.001 / 2 + 1e-6, f"pleth differs by up to {err.max():.4f}"
    o = _offset(ecg, ecg_at)
    err = np.abs(ecg - ecg_at(np.arange(o, o + len(ecg))))
    assert err.max() <= 0.005 / 2 + 1e-6, f"ECG differs by up to {err.max():.4f} mV"
