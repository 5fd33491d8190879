"""Sessions to export: one recorded through the real path (simulated devices on ptys,
tests/export/recording.py), recorded once per test run, and small synthetic ones written
through the store's own Recorder for the states a live recording rarely reaches in a test
(open, recovered, demo, a wave with a gap, flagged values)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.model import Channel, PumpRunState, PumpState, Quality, Reading, WaveChunk
from kapmonitor.store import Abandoned, Recorder, Store, recover

from .recording import Recorded, record_session

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="session")
def recorded_master(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The real session, recorded once per run (about 5 s of wall time)."""
    return record_session(tmp_path_factory.mktemp("recorded") / "kap.sqlite")


@pytest.fixture
def recorded(recorded_master: Recorded, tmp_path: Path) -> Recorded:
    """A private copy of the recorded database, so no test sees another's writes."""
    db = tmp_path / "kap.sqlite"
    shutil.copy(recorded_master.db, db)
    return Recorded(db, recorded_master.session_id, recorded_master.observation_id,
                    recorded_master.amendment_id, recorded_master.cli_note_id)


@pytest.fixture
def store(recorded: Recorded) -> Iterator[Store]:
    s = Store.open(str(recorded.db))
    yield s
    s.close()


@dataclass(frozen=True)
class Synthetic:
    store: Store
    session_id: int
    t0_us: int
    #: the stored wave has a 2-s hole starting at this sample index
    gap_at: int


def write_synthetic(store: Store, *, status: str = "closed", demo: bool = False,
                    patient: str | None = "KAP-SYN", seconds: int = 30,
                    pump_stops: bool = True) -> Synthetic:
    """A session of ``seconds`` with HR every second (one reading flagged INVALID, one
    QUESTIONABLE), SpO2 every 5 s, one NIBP, a 125-Hz pleth with a 2-s hole, a pump that
    runs then is stopped (or runs on: ``pump_stops``), an entry amended twice and an
    assessment; then closed, left OPEN, or RECOVERED as after a crash."""
    sid = store.create_session(patient=patient, room="9", demo=demo, weight_kg=80.0,
                               dose_mg_per_kg=0.5, duration_min=40.0, concentration_mg_ml=1.0,
                               t_us=T0 - 5_000_000)
    store.add_device(sid, "monitor", "intellivue", "/dev/null", "SN-1", t_us=T0 - 4_000_000)
    store.add_device(sid, "pump", "bbraun-bcc", "/dev/null", "SN-2", t_us=T0 - 4_000_000)
    store.set_infusion_start(sid, T0, T0)
    rec = Recorder(store, sid).start()
    msgs: list = []
    for s in range(seconds):
        q = Quality.INVALID if s == 7 else Quality.QUESTIONABLE if s == 8 else Quality.OK
        msgs.append(Reading(Channel.HR, 60.0 + s, T0 + s * 1_000_000 + 250_000, "monitor",
                            quality=q))
        if s % 5 == 0:
            msgs.append(Reading(Channel.SPO2, 97.0 - s / 10, T0 + s * 1_000_000 + 500_000,
                                "monitor"))
    t_nibp = T0 + 3_000_000
    msgs += [Reading(Channel.NIBP_SYS, 121.0, t_nibp, "monitor"),
             Reading(Channel.NIBP_DIA, 79.0, t_nibp, "monitor"),
             Reading(Channel.NIBP_MEAN, 93.0, t_nibp, "monitor")]
    rate = 125.0
    n_total = int(seconds * rate)
    k = np.arange(n_total)
    wave = np.sin(2 * np.pi * k / 100).astype(np.float32)
    gap_at = 1000  # 8 s in
    chunk = 25
    for c0 in range(0, n_total, chunk):
        if gap_at <= c0 < gap_at + 250:  # 2 s of pleth never arrived
            continue
        msgs.append(WaveChunk(Channel.PLETH, T0 + round(c0 * 1e6 / rate), rate,
                              wave[c0:c0 + chunk], "monitor"))
    for s, state, rate_ml, vol in ((0, PumpRunState.RUNNING, 60.0, 0.0),
                                   (10, PumpRunState.RUNNING, 60.0, 0.17),
                                   (20, PumpRunState.STOPPED if pump_stops
                                    else PumpRunState.RUNNING, 0.0, 0.33)):
        msgs.append(PumpState(T0 + s * 1_000_000, state, rate_ml, vol, 30.0, drug="ketamine",
                              concentration_mg_ml=1.0, infusion_id=1, source="pump"))
        msgs.append(Reading(Channel.DELIVERED_DOSE, vol * 1.0, T0 + s * 1_000_000, "dose"))
    rec(msgs)
    rec.stop()
    first = store.add_annotation(sid, "observation", "Anxious", t_us=T0 + 2_000_000,
                                 author="RN A")
    second = store.amend_annotation(first, text="Anxious, reassured", author="RN A")
    store.amend_annotation(second, text="Anxious, reassured, settled", author="RN B")
    store.add_annotation(sid, "assessment", "Nausea NRS 1/10", code="nausea-nrs", value=1.0,
                         t_us=T0 + 12_000_000, author="RN A")
    if status == "closed":
        store.close_session(sid, T0 + seconds * 1_000_000)
    elif status == "recovered":  # as `kapmonitor recover` closes a crashed recording
        recover(store, Abandoned(sid, "recording process 999999 is no longer running",
                                 T0 + seconds * 1_000_000), now=T0 + seconds * 1_000_000 + 1)
    return Synthetic(store, sid, T0, gap_at)


@pytest.fixture
def synthetic(tmp_path: Path) -> Iterator[Callable[..., Synthetic]]:
    stores: list[Store] = []

    def make(**kwargs: object) -> Synthetic:
        store = Store.open(str(tmp_path / f"syn{len(stores)}.sqlite"))
        stores.append(store)
        return write_synthetic(store, **kwargs)  # type: ignore[arg-type]

    yield make
    for s in stores:
        s.close()
