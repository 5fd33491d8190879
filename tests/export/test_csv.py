"""CSV export read back with the standard library's csv module (and by the simulator's
playback, whose "project CSV format" numerics.csv is)."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from datetime import datetime
from itertools import repeat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapmonitor.drivers.sim.playback import read_csv
from kapmonitor.export import ExportError, export_session
from kapmonitor.export.common import UNUSABLE
from kapmonitor.export.csv import FILES, NUMERIC_COLUMNS
from kapmonitor.model import CHANNELS, Channel, ChannelKind
from kapmonitor.store import SessionReader, Store


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def us_of(utc: str) -> int:
    d = datetime.fromisoformat(utc)
    return int(d.timestamp()) * 1_000_000 + d.microsecond


def test_every_stored_value_round_trips_exactly(store: Store, recorded, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = export_session("csv", store.engine, recorded.session_id, out)
    assert result.paths == [out]
    assert result.warnings == []
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    reader = SessionReader(store.engine, recorded.session_id)
    t0 = reader.session()["t0_us"]
    got = rows(out / "numerics.csv")
    assert tuple(got[0]) == NUMERIC_COLUMNS
    numeric = [c for c in reader.channels() if CHANNELS[c].kind is ChannelKind.NUMERIC]
    expected: Counter = Counter()
    for ch in numeric:
        s = reader.numeric(ch)
        values = [None if v != v else v for v in s.values.tolist()]  # NaN: no value
        expected.update(zip(repeat(ch.value), s.t_us.tolist(), values, s.quality.tolist(),
                            s.source, strict=False))
    assert len(got) == expected.total() == result.counts["numerics"]
    times = [us_of(r["utc_time"]) for r in got]
    # every row is a stored value, exactly: the shortest repr of the float64
    assert Counter(zip((r["channel"] for r in got), times,
                       (float(r["value"]) if r["value"] else None for r in got),
                       (int(r["quality"]) for r in got), (r["source"] for r in got),
                       strict=False)) == expected
    for r, t in zip(got, times, strict=True):
        assert r["unit"] == CHANNELS[Channel(r["channel"])].ucum
        # session time in exact microseconds from the infusion start
        assert round(float(r["session_time_s"]) * 1e6) == t - t0
    assert times == sorted(times)
    assert {"monitor", "pump/slot11", "dose", "pk"} <= {r["source"] for r in got}


def test_numerics_play_back_through_the_simulator(store: Store, recorded,
                                                  tmp_path: Path) -> None:
    """numerics.csv is the format drivers/sim/playback.py reads: same values, same spacing."""
    export_session("csv", store.engine, recorded.session_id, tmp_path / "e")
    rec = read_csv(tmp_path / "e" / "numerics.csv")
    hr = SessionReader(store.engine, recorded.session_id).numeric(Channel.HR)
    track = rec.numerics[Channel.HR]
    np.testing.assert_array_equal(track.values, hr.values)
    np.testing.assert_allclose(np.diff(track.times_s), np.diff(hr.t_us) / 1e6, atol=1e-6)
    assert track.intermittent is False and rec.numerics[Channel.NIBP_SYS].intermittent


def test_wide_file_has_the_last_usable_value_of_each_second(synthetic, tmp_path: Path) -> None:
    syn = synthetic()
    export_session("csv", syn.store.engine, syn.session_id, tmp_path / "w")
    wide = rows(tmp_path / "w" / "numerics_wide.csv")
    by_second = {int(r["session_time_s"]): r for r in wide}
    assert list(by_second) == list(range(min(by_second), max(by_second) + 1))
    hr = SessionReader(syn.store.engine, syn.session_id).numeric(Channel.HR)
    for t, v, q in zip(hr.t_us.tolist(), hr.values.tolist(), hr.quality.tolist(), strict=True):
        cell = by_second[(t - syn.t0_us) // 1_000_000]["hr"]
        if q & int(UNUSABLE):
            assert cell == ""  # the INVALID reading is no value
        else:
            assert float(cell) == v  # a QUESTIONABLE one still is
    # SpO2 every 5 s: nothing is carried into the seconds between
    assert by_second[5]["spo2"] == "96.5" and by_second[6]["spo2"] == ""
    assert by_second[3]["nibp_sys"] == "121.0" and by_second[4]["nibp_sys"] == ""
    assert by_second[0]["utc_time"] == "2026-01-01T00:00:00.000000Z"


def test_entries_show_every_version_and_the_original(store: Store, recorded,
                                                     tmp_path: Path) -> None:
    export_session("csv", store.engine, recorded.session_id, tmp_path / "e")
    entries = rows(tmp_path / "e" / "entries.csv")
    by_id = {int(r["entry_id"]): r for r in entries}
    original, amended = by_id[recorded.observation_id], by_id[recorded.amendment_id]
    assert original["text"] == "Calm, eyes closed" and original["current"] == "0"
    assert amended["amends_id"] == str(recorded.observation_id)
    assert amended["version"] == "2" and amended["current"] == "1"
    assert amended["original_text"] == "Calm, eyes closed"
    assert amended["text"] == "Calm, eyes closed, slow breathing"
    assert by_id[recorded.cli_note_id]["text"] == "Patient says: floating feeling"
    kinds = {(r["kind"], r["code"]) for r in entries}
    assert {("cue", "IMG-SAFE"), ("assessment", "nausea-nrs"), ("phase", "infusion"),
            ("phase", "closed")} <= kinds
    nausea = next(r for r in entries if r["code"] == "nausea-nrs")
    assert float(nausea["value"]) == 2.0


def test_alarms_and_pump_events(store: Store, recorded, tmp_path: Path) -> None:
    export_session("csv", store.engine, recorded.session_id, tmp_path / "e")
    alarms = rows(tmp_path / "e" / "alarms.csv")
    spo2 = [a for a in alarms if a["condition"] == "spo2.low"]
    assert [a["action"] for a in spo2][:2] == ["raise", "acknowledge"]
    assert spo2[-1]["action"] == "clear"
    assert float(spo2[0]["value"]) == 85.0 and spo2[1]["user"] == "RN A"
    pumps = rows(tmp_path / "e" / "pump_events.csv")
    reader = SessionReader(store.engine, recorded.session_id)
    assert len(pumps) == len(reader.pump_events())
    assert {p["state"] for p in pumps} >= {"running", "complete"}
    assert float(next(p for p in pumps if p["state"] == "running")["rate_ml_h"]) == 52.5
    channels = {r["channel"]: r for r in rows(tmp_path / "e" / "channels.csv")}
    assert channels["spo2"]["loinc"] == "59408-5" and channels["spo2"]["mdc_code"] == "150456"
    assert channels["ecg"]["kind"] == "wave"


def test_zip_holds_the_same_files(store: Store, recorded, tmp_path: Path) -> None:
    export_session("csv", store.engine, recorded.session_id, tmp_path / "dir")
    export_session("csv", store.engine, recorded.session_id, tmp_path / "s.zip")
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        names = sorted(z.namelist())
        assert names == sorted(f"s/{n}" for n in FILES)
        for name in FILES:
            if name == "session.csv":
                continue
            assert z.read(f"s/{name}").decode() == (tmp_path / "dir" / name).read_text()
        text = io.TextIOWrapper(z.open("s/numerics.csv"), encoding="utf-8", newline="")
        assert len(list(csv.reader(text))) > 100


def test_waves_option_writes_every_sample(store: Store, recorded, tmp_path: Path) -> None:
    result = export_session("csv", store.engine, recorded.session_id, tmp_path / "e",
                            waves=True)
    waves = rows(tmp_path / "e" / "waves.csv")
    reader = SessionReader(store.engine, recorded.session_id)
    pleth = reader.wave(Channel.PLETH)
    got = [float(r["value"]) for r in waves if r["channel"] == "pleth"]
    assert len(got) == len(pleth) == result.counts["wave_samples"] - len(
        reader.wave(Channel.ECG)) - len(reader.wave(Channel.CO2_WAVE))
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), pleth.values)


@pytest.mark.parametrize(("status", "word"), [("open", "OPEN"), ("recovered", "RECOVERED")])
def test_open_and_recovered_sessions_say_so(synthetic, tmp_path: Path, status: str,
                                            word: str) -> None:
    syn = synthetic(status=status, demo=True)
    result = export_session("csv", syn.store.engine, syn.session_id, tmp_path / "e")
    assert any(word in w for w in result.warnings)
    assert any("DEMO" in w for w in result.warnings)
    meta = {}
    warnings = []
    for r in rows(tmp_path / "e" / "session.csv"):
        if r["key"] == "warning":
            warnings.append(r["value"])
        meta[r["key"]] = r["value"]
    assert meta["status"] == f"{word} DEMO"
    assert warnings == result.warnings
    if status == "recovered":
        gap = [r for r in rows(tmp_path / "e" / "entries.csv") if r["kind"] == "gap"]
        assert len(gap) == 1 and "interrupted" in gap[0]["text"]


def test_refuses_to_overwrite_and_leaves_nothing_half_written(store: Store, recorded,
                                                              tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_session("csv", store.engine, recorded.session_id, tmp_path / "taken")
    with pytest.raises(ExportError, match="does not exist"):
        export_session("csv", store.engine, recorded.session_id, tmp_path / "no" / "e")
    with pytest.raises(ExportError, match="no session 99"):
        export_session("csv", store.engine, 99, tmp_path / "e")
    with pytest.raises(ExportError, match="unexpected keyword"):
        export_session("csv", store.engine, recorded.session_id, tmp_path / "e", hold_s=3)
    with pytest.raises(ExportError, match="unknown export format"):
        export_session("xls", store.engine, recorded.session_id, tmp_path / "e")
    assert sorted(p.name for p in tmp_path.iterdir() if "sqlite" not in p.name) == ["taken"]


@pytest.mark.parametrize("name", ["folder", "s.zip"])
def test_a_failure_midway_leaves_no_export(store: Store, recorded, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    import kapmonitor.export.csv as csv_export

    def broken(*args: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(csv_export, "_write_entries", broken)
    with pytest.raises(OSError, match="disk full"):
        export_session("csv", store.engine, recorded.session_id, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir() if "sqlite" not in p.name] == []


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800_000_000), min_size=1,
                max_size=50), st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_time_columns_match_the_row_by_row_definitions(times: list[int], origin: int) -> None:
    from kapmonitor.export.common import iso_utc, session_seconds
    from kapmonitor.export.csv import _time_columns

    st_col, utc_col = _time_columns(np.array(times, dtype=np.int64), origin)
    assert st_col == [session_seconds(t, origin) for t in times]
    assert utc_col == [iso_utc(t) for t in times]
    for t, text in zip(times, st_col, strict=True):
        whole, _, frac = text.lstrip("-").partition(".")
        assert (-1 if text.startswith("-") else 1) * (int(whole) * 10**6 + int(frac)) \
            == t - origin
