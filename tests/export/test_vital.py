"""VitalDB .vital written with the vitaldb package, read back with ``vitaldb.VitalFile``."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import pytest

from kapmonitor.export import export_session
from kapmonitor.export.common import usable
from kapmonitor.export.vital import EVENT_TRACK, track_name
from kapmonitor.model import Channel
from kapmonitor.store import SessionReader, Store


def read_vital(path: Path):
    """The file through vitaldb's own reader. vitaldb imports wfdb and pandas (whose
    deprecation warnings are theirs) and leaves its file to the garbage collector, so both
    are contained here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import vitaldb

        vf = vitaldb.VitalFile(str(path))
        gc.collect()
    return vf


def recs(vf, name: str) -> list[dict]:
    trk = vf.trks[name]
    return sorted(trk.recs, key=lambda r: r["dt"])


def test_tracks_round_trip(store: Store, recorded, tmp_path: Path) -> None:
    result = export_session("vital", store.engine, recorded.session_id, tmp_path / "s.vital")
    vf = read_vital(tmp_path / "s.vital")
    reader = SessionReader(store.engine, recorded.session_id)
    assert {"monitor", "pump", "KAPMonitor"} <= set(vf.devs)
    assert vf.devs["monitor"].type == "intellivue"
    # waves: one packed record per track; float32 samples equal to the stored ones
    for ch, name in ((Channel.ECG, "ECG_II"), (Channel.PLETH, "PLETH"),
                     (Channel.CO2_WAVE, "CO2")):
        w = reader.wave(ch)
        trk = vf.trks[f"monitor/{name}"]
        assert trk.type == 1 and trk.srate == w.rate_hz
        [rec] = trk.recs
        assert rec["dt"] == pytest.approx(w.t_us[0] / 1e6, abs=1e-6)
        np.testing.assert_array_equal(np.asarray(rec["val"], dtype=np.float32), w.values)
        assert result.counts[f"samples_{ch.value}"] == len(w)
    # numerics: every usable reading at its own time, as float32
    for ch, dev in ((Channel.HR, "monitor"), (Channel.SPO2, "monitor"),
                    (Channel.NIBP_SYS, "monitor"), (Channel.PUMP_RATE, "pump"),
                    (Channel.VOLUME_INFUSED, "pump"), (Channel.DELIVERED_DOSE, "KAPMonitor")):
        s = reader.numeric(ch)
        ok = usable(s.values, s.quality)
        got = recs(vf, track_name(dev, ch))
        assert len(got) == ok.sum()
        np.testing.assert_allclose([r["dt"] for r in got], s.t_us[ok] / 1e6, atol=1e-6)
        np.testing.assert_allclose([r["val"] for r in got], s.values[ok], rtol=1e-7)
    assert vf.trks["monitor/BT"].unit == "\u00b0C"
    events = [r["val"] for r in recs(vf, EVENT_TRACK)]
    assert 'observation (amended; originally "Calm, eyes closed"): Calm, eyes closed, ' \
           "slow breathing" in events
    assert "cue IMG-SAFE: Safe place" in events
    assert "observation: Patient says: floating feeling" in events
    assert any(e.startswith("alarm raise spo2.low") for e in events)
    assert "pump pump/slot11 running 52.5 mL/h" in events
    assert any(e.startswith("pump pump/slot11 complete") for e in events)
    assert vf.dtstart <= reader.session()["created_us"] / 1e6 + 1e-6
    assert vf.dtend >= reader.wave(Channel.ECG).t_us[-1] / 1e6


@pytest.mark.parametrize("status", ["open", "recovered"])
def test_open_and_recovered_say_so(synthetic, tmp_path: Path, status: str) -> None:
    syn = synthetic(status=status)
    result = export_session("vital", syn.store.engine, syn.session_id, tmp_path / "s.vital")
    vf = read_vital(tmp_path / "s.vital")
    first = recs(vf, EVENT_TRACK)[0]
    assert status.upper() in first["val"] and first["val"].startswith("KAPMonitor:")
    assert any(status.upper() in w for w in result.warnings)
    # the pleth with a hole: samples around it kept, the hole is NaN in the packed track
    [rec] = vf.trks["monitor/PLETH"].recs
    vals = np.asarray(rec["val"])
    assert np.isnan(vals[syn.gap_at:syn.gap_at + 250]).all()
    assert np.isfinite(vals[:syn.gap_at]).all() and np.isfinite(vals[syn.gap_at + 250:]).all()
    hr = recs(vf, "monitor/HR")
    assert len(hr) == 29  # the INVALID reading left out
