"""EDF+ written with edfio, read back with a second, independent library (pyEDFlib):
sample counts, values within the digital resolution, the gap value, annotations."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from kapmonitor.export import ExportError, export_session
from kapmonitor.export.common import usable
from kapmonitor.export.edf import EDF_LABELS, GAP_DIGITAL, physical_range, record_duration
from kapmonitor.model import Channel
from kapmonitor.store import SessionReader, Store


class Edf:
    """Everything the test needs from one file, read with pyEDFlib, file closed."""

    def __init__(self, path: Path) -> None:
        f = pyedflib.EdfReader(str(path))
        try:
            self.labels = f.getSignalLabels()
            self.rates = {lab: f.getSampleFrequency(i) for i, lab in enumerate(self.labels)}
            self.data = {lab: f.readSignal(i) for i, lab in enumerate(self.labels)}
            self.digital = {lab: f.readSignal(i, digital=True)
                            for i, lab in enumerate(self.labels)}
            self.pmin = {lab: f.getPhysicalMinimum(i) for i, lab in enumerate(self.labels)}
            self.pmax = {lab: f.getPhysicalMaximum(i) for i, lab in enumerate(self.labels)}
            self.dims = {lab: f.getPhysicalDimension(i) for i, lab in enumerate(self.labels)}
            self.start = f.getStartdatetime().replace(tzinfo=UTC)
            self.duration = f.getFileDuration()
            onsets, durations, texts = f.readAnnotations()
            self.annotations = list(zip(onsets.tolist(), durations.tolist(), list(texts),
                                        strict=True))
            self.patient_code = f.getPatientCode()
            self.header = f.getHeader()
        finally:
            f.close()

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp()) * 1_000_000

    def resolution(self, label: str) -> float:
        return (self.pmax[label] - self.pmin[label]) / 65535

    def texts(self) -> list[str]:
        return [t for _, _, t in self.annotations]


def test_waves_numerics_and_annotations_round_trip(store: Store, recorded,
                                                   tmp_path: Path) -> None:
    result = export_session("edf", store.engine, recorded.session_id, tmp_path / "s.edf")
    edf = Edf(tmp_path / "s.edf")
    reader = SessionReader(store.engine, recorded.session_id)
    assert edf.patient_code == "KAP-EXP-1"
    assert result.counts["record_duration_s"] == 2  # 62.5-Hz CO2 needs 2-s records
    assert edf.duration == result.counts["data_records"] * 2
    # waves: every stored sample at its own index, within half the digital resolution
    for ch in (Channel.ECG, Channel.PLETH, Channel.CO2_WAVE):
        label = EDF_LABELS[ch]
        w = reader.wave(ch)
        assert edf.rates[label] == w.rate_hz
        assert len(edf.data[label]) == edf.duration * w.rate_hz
        idx = np.round((w.t_us - edf.start_us) * w.rate_hz / 1e6).astype(int)
        assert len(np.unique(idx)) == len(w)  # no sample dropped or doubled
        got = edf.data[label][idx]
        assert np.max(np.abs(got - w.values)) <= edf.resolution(label) / 2 + 1e-9
        assert result.counts[f"samples_{ch.value}"] == len(w)
        outside = np.ones(len(edf.data[label]), dtype=bool)
        outside[idx] = False  # before the first sample, after the last: the gap value
        assert np.all(edf.digital[label][outside] == GAP_DIGITAL)
    assert edf.dims[EDF_LABELS[Channel.ECG]] == "mV"
    # numerics at 1 Hz: the last reading of each second (IntelliVue sends every second)
    for ch in (Channel.HR, Channel.SPO2, Channel.TEMP, Channel.PUMP_RATE):
        label = EDF_LABELS[ch]
        assert edf.rates[label] == 1
        s = reader.numeric(ch)
        sec = (s.t_us - edf.start_us) // 1_000_000
        for k, v in zip(sec.tolist(), s.values.tolist(), strict=True):
            if k == sec.max() or (sec == k).sum() == 1:
                assert abs(edf.data[label][k] - v) <= edf.resolution(label) / 2 + 1e-9
    assert edf.dims["SpO2"] == "%" and edf.dims["Temp"] == "degC"
    assert edf.dims["NIBP sys"] == "mmHg"
    # NIBP holds until the next measurement
    nibp = edf.data["NIBP sys"]
    s = reader.numeric(Channel.NIBP_SYS)
    k1, k2 = ((s.t_us - edf.start_us) // 1_000_000).tolist()
    assert np.allclose(nibp[k1:k2], 118, atol=0.01) and np.allclose(nibp[k2:], 134, atol=0.01)
    texts = edf.texts()
    assert 'observation (amended; originally "Calm, eyes closed"): Calm, eyes closed, ' \
           "slow breathing" in texts
    assert "cue IMG-SAFE: Safe place" in texts
    assert "assessment nausea-nrs: Nausea NRS 2/10" in texts
    assert "observation: Patient says: floating feeling" in texts
    assert "NIBP 118/76 (90) mmHg" in texts and "NIBP 134/84 (101) mmHg" in texts
    assert "infusion start" in texts
    assert any(t.startswith("alarm raise spo2.low (high)") for t in texts)
    assert any(t.startswith("pump pump/slot11 complete") for t in texts)
    raise_t = next(a["t_us"] for a in reader.alarm_events() if a["action"] == "raise")
    onset = next(o for o, _, t in edf.annotations if t.startswith("alarm raise"))
    assert onset == pytest.approx((raise_t - edf.start_us) / 1e6, abs=1e-6)
    assert not any("KAPMonitor:" in t for t in texts)  # a closed session needs no notice


def test_gaps_holds_and_flags(synthetic, tmp_path: Path) -> None:
    syn = synthetic(status="recovered")
    result = export_session("edf", syn.store.engine, syn.session_id, tmp_path / "s.edf",
                            hold_s=2)
    edf = Edf(tmp_path / "s.edf")
    reader = SessionReader(syn.store.engine, syn.session_id)
    # the 2-s pleth hole reads back as the gap value and is annotated with its length
    pleth = edf.digital["Pleth"]
    off = round((syn.t0_us - edf.start_us) * 125 / 1e6)
    hole = slice(off + syn.gap_at, off + syn.gap_at + 250)
    assert np.all(pleth[hole] == GAP_DIGITAL)
    assert pleth[off + syn.gap_at - 1] != GAP_DIGITAL and pleth[hole.stop] != GAP_DIGITAL
    assert edf.data["Pleth"][hole.start] == edf.pmin["Pleth"]  # gap = physical minimum
    gap = next((o, d) for o, d, t in edf.annotations if t == "gap pleth")
    assert gap == (pytest.approx((syn.t0_us - edf.start_us) / 1e6 + 8, abs=1e-6),
                   pytest.approx(2.0))
    assert result.counts["gaps"] == 1
    # HR: the INVALID reading at second 7 is not used; the value of second 6 is held
    hr = edf.data["HR"]
    k0 = (syn.t0_us - edf.start_us) // 1_000_000
    assert hr[k0 + 7] == pytest.approx(66, abs=0.01)
    assert hr[k0 + 8] == pytest.approx(68, abs=0.01)  # QUESTIONABLE still counts
    # SpO2 every 5 s, held 2 s, then the gap value
    spo2 = edf.digital["SpO2"]
    assert spo2[k0 + 1] != GAP_DIGITAL and spo2[k0 + 2] != GAP_DIGITAL
    assert spo2[k0 + 3] == GAP_DIGITAL and spo2[k0 + 4] == GAP_DIGITAL
    s = reader.numeric(Channel.SPO2)
    assert edf.data["SpO2"][k0] == pytest.approx(s.values[0], abs=edf.resolution("SpO2"))
    # a RECOVERED session says so at the start and in the header
    first = edf.annotations[0]
    assert first[0] == 0 and "RECOVERED" in first[2]
    assert "RECOVERED" in edf.header["recording_additional"]
    assert any(t.startswith("gap recording-interrupted: Recording interrupted")
               for t in edf.texts())
    assert any("RECOVERED" in w for w in result.warnings)
    hr_s = reader.numeric(Channel.HR)
    assert usable(hr_s.values, hr_s.quality).sum() == 29


def test_open_session_notice(synthetic, tmp_path: Path) -> None:
    syn = synthetic(status="open")
    result = export_session("edf", syn.store.engine, syn.session_id, tmp_path / "s.edf")
    edf = Edf(tmp_path / "s.edf")
    assert edf.annotations[0][0] == 0 and "still OPEN" in edf.annotations[0][2]
    assert "OPEN" in edf.header["recording_additional"]
    assert any("OPEN" in w for w in result.warnings)


def test_record_duration_and_ranges() -> None:
    assert record_duration([500, 125, 62.5, 1]) == 2
    assert record_duration([300, 100, 1]) == 1
    assert record_duration([0.2, 1]) == 5
    with pytest.raises(ExportError, match="whole number of samples"):
        record_duration([1 / 3])
    assert physical_range(np.array([64.0, 64.0])) == (63, 65)
    assert physical_range(np.array([-0.5, 0.7])) == (-2, 2)


def test_bad_input(store: Store, recorded, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="hold"):
        export_session("edf", store.engine, recorded.session_id, tmp_path / "a.edf",
                       hold_s=-1)
    empty = store.create_session(room="empty")
    with pytest.raises(ExportError, match="no data"):
        export_session("edf", store.engine, empty, tmp_path / "a.edf")
    assert not (tmp_path / "a.edf").exists()


def test_note_with_line_breaks_stays_one_annotation(synthetic, tmp_path: Path) -> None:
    syn = synthetic()
    syn.store.add_annotation(syn.session_id, "observation", "Tearful.\nAsked for music\x14",
                             t_us=syn.t0_us + 4_000_000, author="RN A")
    export_session("edf", syn.store.engine, syn.session_id, tmp_path / "s.edf")
    assert "observation: Tearful. Asked for music " in Edf(tmp_path / "s.edf").texts()
