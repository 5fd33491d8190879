"""FHIR export validated by an independent implementation of the R4 models
(``fhir.resources.R4B``: R4B differs from R4 only in modules this export does not use),
then checked against the store value by value."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle

from kapmonitor.export import ExportError, export_session
from kapmonitor.export.common import usable
from kapmonitor.model import Channel
from kapmonitor.store import SessionReader, Store

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"


def load(path: Path) -> tuple[dict[str, Any], Bundle]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data, Bundle.model_validate(data)  # raises on any R4 structural error


def resources(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == kind]


def codes(concept: dict[str, Any], system: str) -> set[str]:
    return {c["code"] for c in concept.get("coding", []) if c["system"] == system}


def us_of(text: str) -> int:
    d = datetime.fromisoformat(text)
    assert d.utcoffset() is not None, f"{text} has no timezone"
    return round(d.timestamp() * 1e6)


@pytest.fixture
def bundle(store: Store, recorded, tmp_path: Path) -> tuple[dict[str, Any], Bundle]:
    export_session("fhir", store.engine, recorded.session_id, tmp_path / "b.json")
    return load(tmp_path / "b.json")


def test_bundle_is_valid_and_every_reference_resolves(bundle) -> None:
    data, parsed = bundle
    assert parsed.type == "collection"
    full_urls = {e["fullUrl"] for e in data["entry"]}
    assert len(full_urls) == len(data["entry"])

    def refs(x: Any) -> list[str]:
        if isinstance(x, dict):
            out = [x["reference"]] if "reference" in x else []
            return out + [r for v in x.values() for r in refs(v)]
        if isinstance(x, list):
            return [r for v in x for r in refs(v)]
        return []

    assert refs(data) and set(refs(data)) <= full_urls
    [patient] = resources(data, "Patient")
    assert patient["identifier"][0]["value"] == "KAP-EXP-1"
    assert "name" not in patient and "birthDate" not in patient
    assert {d["deviceName"][0]["name"] for d in resources(data, "Device")} == {"monitor", "pump"}


def test_vital_signs_are_decimated_real_readings(bundle, store: Store, recorded) -> None:
    data, _ = bundle
    reader = SessionReader(store.engine, recorded.session_id)
    t0 = reader.session()["t0_us"]
    obs = resources(data, "Observation")
    hr = [o for o in obs if "147842" in codes(o["code"], MDC)]
    s = reader.numeric(Channel.HR)
    ok = usable(s.values, s.quality)
    bins = np.unique((s.t_us[ok] - t0) // 60_000_000)
    assert len(hr) == len(bins)  # one per 60-s bin of session time
    stored = dict(zip(s.t_us.tolist(), s.values.tolist(), strict=True))
    for o in hr:
        assert o["status"] == "final"
        assert codes(o["category"][0], "http://terminology.hl7.org/CodeSystem/"
                     "observation-category") == {"vital-signs"}
        assert codes(o["code"], LOINC) == {"8867-4"}
        q = o["valueQuantity"]
        assert q["system"] == "http://unitsofmeasure.org" and q["code"] == "/min"
        assert q["value"] == stored[us_of(o["effectiveDateTime"])]  # a real reading, at its time
        assert o["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/heartrate"]
    spo2 = next(o for o in obs if "150456" in codes(o["code"], MDC))
    assert codes(spo2["code"], LOINC) == {"2708-6", "59408-5"}
    assert spo2["valueQuantity"]["code"] == "%"
    etco2 = next(o for o in obs if "151708" in codes(o["code"], MDC))
    assert codes(etco2["code"], LOINC) == {"19891-1"}
    assert etco2["valueQuantity"]["code"] == "mm[Hg]"
    temp = next(o for o in obs if codes(o["code"], LOINC) == {"8310-5"})
    assert temp["valueQuantity"] == {"value": 36.6, "unit": "\u00b0C",
                                     "system": "http://unitsofmeasure.org", "code": "Cel"}
    weight = next(o for o in obs if codes(o["code"], LOINC) == {"29463-7"})
    assert weight["valueQuantity"]["value"] == 70 and weight["valueQuantity"]["code"] == "kg"


def test_every_nibp_is_one_blood_pressure_observation(bundle) -> None:
    data, _ = bundle
    bp = [o for o in resources(data, "Observation") if codes(o["code"], LOINC) == {"85354-9"}]
    assert len(bp) == 2
    assert all("valueQuantity" not in o for o in bp)
    values = []
    for o in bp:
        comp = {next(iter(codes(c["code"], LOINC))): c["valueQuantity"] for c in o["component"]}
        assert all(q["code"] == "mm[Hg]" for q in comp.values())
        values.append((comp["8480-6"]["value"], comp["8462-4"]["value"],
                       comp["8478-0"]["value"]))
    assert values == [(118, 76, 90), (134, 84, 101)]


def test_infusion_is_a_medication_administration(bundle, store: Store, recorded) -> None:
    data, _ = bundle
    [ma] = resources(data, "MedicationAdministration")
    reader = SessionReader(store.engine, recorded.session_id)
    pumps = reader.pump_events()
    first_run = next(p for p in pumps if p["state"] == "running")
    complete = next(p for p in pumps if p["state"] == "complete")
    assert ma["status"] == "completed"
    assert codes(ma["medicationCodeableConcept"],
                 "http://www.nlm.nih.gov/research/umls/rxnorm") == {"6130"}
    assert us_of(ma["effectivePeriod"]["start"]) == first_run["t_us"]
    assert us_of(ma["effectivePeriod"]["end"]) == complete["t_us"]
    dose = reader.numeric(Channel.DELIVERED_DOSE)
    delivered = float(dose.values[dose.t_us <= complete["t_us"]][-1])
    assert delivered == pytest.approx(0.8, abs=0.02)
    assert ma["dosage"]["dose"] == {"value": pytest.approx(delivered, abs=5e-4), "unit": "mg",
                                    "system": "http://unitsofmeasure.org", "code": "mg"}
    assert ma["dosage"]["rateQuantity"]["value"] == 52.5
    assert ma["dosage"]["rateQuantity"]["code"] == "mL/h"
    assert codes(ma["dosage"]["route"], "http://snomed.info/sct") == {"47625008"}
    assert "0.5 mg/kg over 40 min" in ma["dosage"]["text"]
    weight = next(e["fullUrl"] for e in data["entry"]
                  if "29463-7" in codes(e["resource"].get("code", {}), LOINC))
    assert ma["supportingInformation"] == [{"reference": weight}]
    assert any("1 mg/mL" in n["text"] for n in ma["note"])


def test_entries_are_observations_with_their_corrections(bundle, recorded) -> None:
    data, _ = bundle
    entries = [o for o in resources(data, "Observation")
               if codes(o["code"], "urn:kapmonitor:entry-kind")]
    amended = next(o for o in entries if o.get("valueString", "").startswith("Calm"))
    assert amended["status"] == "amended"
    assert amended["valueString"] == "Calm, eyes closed, slow breathing"
    assert 'originally "Calm, eyes closed"' in amended["note"][0]["text"]
    assert amended["performer"] == [{"display": "RN A"}]
    nausea = next(o for o in entries if o["code"]["text"] == "nausea-nrs")
    assert nausea["valueQuantity"]["value"] == 2
    assert nausea["category"][0]["coding"][0]["code"] == "survey"
    cue = next(o for o in entries if o["code"]["text"] == "IMG-SAFE")
    assert cue["category"][0]["coding"][0]["code"] == "therapy"
    assert any(o.get("valueString") == "Patient says: floating feeling" for o in entries)


def test_transaction_bundle_every_reading_and_waves(store: Store, recorded,
                                                    tmp_path: Path) -> None:
    result = export_session("fhir", store.engine, recorded.session_id, tmp_path / "t.json",
                            bundle_type="transaction", interval_s=0, waves=True)
    data, parsed = load(tmp_path / "t.json")
    assert parsed.type == "transaction"
    assert all(e["request"]["method"] == "POST" for e in data["entry"])
    patient = next(e for e in data["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["request"]["ifNoneExist"] == "identifier=urn:kapmonitor:patient|KAP-EXP-1"
    reader = SessionReader(store.engine, recorded.session_id)
    obs = resources(data, "Observation")
    hr = [o for o in obs if "147842" in codes(o["code"], MDC)]
    assert len(hr) == len(reader.numeric(Channel.HR))  # interval 0: every reading
    pleth = [o for o in obs if "150452" in codes(o["code"], MDC)]
    samples = np.concatenate([np.array(o["valueSampledData"]["data"].split(), dtype=float)
                              for o in pleth])
    stored = reader.wave(Channel.PLETH)
    assert len(samples) == len(stored)
    np.testing.assert_allclose(samples, stored.values, atol=0.0005 + 1e-9)
    assert pleth[0]["valueSampledData"]["period"] == 8  # ms at 125 Hz
    assert result.counts["Observation"] == len(obs)


@pytest.mark.parametrize("status", ["open", "recovered"])
def test_open_and_recovered_sessions_are_tagged(synthetic, tmp_path: Path, status: str) -> None:
    syn = synthetic(status=status, demo=True)
    result = export_session("fhir", syn.store.engine, syn.session_id, tmp_path / "b.json")
    data, _ = load(tmp_path / "b.json")
    assert any(status.upper() in w for w in result.warnings)
    tags = data["meta"]["tag"]
    assert tags[0]["system"] == "urn:kapmonitor:session-status" and tags[0]["code"] == status
    assert status.upper() in tags[0]["display"]
    assert data["meta"]["security"][0]["code"] == "HTEST"
    for e in data["entry"]:
        assert e["resource"]["meta"]["tag"] == tags
    vital = [o for o in resources(data, "Observation") if o["category"][0]["coding"][0]["code"]
             == "vital-signs"]
    assert {o["status"] for o in vital} == {"preliminary" if status == "open" else "final"}
    [ma] = resources(data, "MedicationAdministration")
    assert ma["status"] == "stopped"  # the pump was stopped before the record ended
    assert any(status.upper() in n["text"] for n in ma["note"])
    # a 3-times written entry: its current version, amended, with the first in the note
    obs = next(o for o in resources(data, "Observation") if o.get("valueString", "")
               .startswith("Anxious"))
    assert obs["valueString"] == "Anxious, reassured, settled"
    assert 'amended 2 time(s); originally "Anxious"' in obs["note"][0]["text"]


@pytest.mark.parametrize(("status", "expected"), [("open", "in-progress"),
                                                  ("closed", "unknown"),
                                                  ("recovered", "unknown")])
def test_an_infusion_still_running_at_the_end(synthetic, tmp_path: Path, status: str,
                                              expected: str) -> None:
    syn = synthetic(status=status, pump_stops=False)
    export_session("fhir", syn.store.engine, syn.session_id, tmp_path / "b.json")
    data, _ = load(tmp_path / "b.json")
    [ma] = resources(data, "MedicationAdministration")
    assert ma["status"] == expected
    end = ma["effectivePeriod"].get("end")
    assert (end is None) == (status == "open")
    if end is not None:
        assert us_of(end) == syn.t0_us + 20_000_000  # the last pump report
        assert any("still running" in n["text"] for n in ma["note"])
    assert ma["dosage"]["dose"]["value"] == 0.33  # the last delivered dose recorded


def test_flagged_and_invalid_readings(synthetic, tmp_path: Path) -> None:
    syn = synthetic()
    export_session("fhir", syn.store.engine, syn.session_id, tmp_path / "b.json", interval_s=0)
    data, _ = load(tmp_path / "b.json")
    hr = {us_of(o["effectiveDateTime"]): o for o in resources(data, "Observation")
          if "147842" in codes(o["code"], MDC)}
    assert syn.t0_us + 7_250_000 not in hr  # the INVALID reading is not an observation
    flagged = hr[syn.t0_us + 8_250_000]
    assert flagged["note"] == [{"text": "device flags: questionable"}]
    assert len(hr) == 29


def test_bad_options_are_refused(store: Store, recorded, tmp_path: Path) -> None:
    for kwargs, reason in (({"bundle_type": "batch"}, "bundle type"),
                           ({"interval_s": -1}, "numeric interval"),
                           ({"wave_segment_s": 0}, "wave segment")):
        with pytest.raises(ExportError, match=reason):
            export_session("fhir", store.engine, recorded.session_id, tmp_path / "b.json",
                           **kwargs)
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(ExportError, match="already exists"):
        export_session("fhir", store.engine, recorded.session_id, tmp_path / "b.json")
    export_session("fhir", store.engine, recorded.session_id, tmp_path / "b.json",
                   overwrite=True)
    load(tmp_path / "b.json")
