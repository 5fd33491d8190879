"""FHIR R4 export: one JSON Bundle a clinic's FHIR server or record system can take in.

Built as plain JSON (no FHIR library at run time); the tests validate every resource with
the ``fhir.resources`` R4B models (R4B is R4 with changes only in the medication-
regulation and evidence modules, none of the resources used here).

Bundle: ``type`` **collection** by default (a self-contained record: references between
entries are ``urn:uuid:`` full URLs); ``bundle_type="transaction"`` makes the same content
POSTable to a server in one request (each entry gets ``request``; the Patient is a
conditional create on its pseudonym identifier, so a second session of the same patient
does not duplicate them). Resource ids are UUIDv5 of the session uid and the item, so
re-exporting a session gives the same ids.

Resources (clinical.md §6):

- **Patient**: the pseudonym as ``identifier`` (system ``urn:kapmonitor:patient``); no
  name, no birth date: the app never has them.
- **Device** per connected device (its session source name, protocol, serial number), the
  ``device`` of the Observations it measured and of the MedicationAdministration.
- **Observations of vital signs** (§6.1, §6.2): ``status`` final (``preliminary`` while the
  session is OPEN), category ``vital-signs``, LOINC + MDC codings, ``valueQuantity`` in
  UCUM, ``effectiveDateTime`` in UTC with an explicit ``+00:00`` offset, ``meta.profile``
  the R4 vital-signs profile of the quantity. SpO2 carries 2708-6 (the profile's code) and
  59408-5 (pulse oximetry). Time is the record's host clock (DESIGN §2), not the device's
  own clock, which is kept in the database but is not synchronised between devices.
  DECIMATED: per channel, the last usable reading in each ``interval_s`` (default 60 s)
  bin of session time, exported at the time it was measured (values and times are real
  readings, never averages); ``interval_s=0`` exports every stored reading. Channels
  without a LOINC code (FiCO2, perfusion index) and the app's computed values (delivered
  dose, plasma estimate: the dose goes into the MedicationAdministration) are not
  exported as Observations. A reading flagged questionable or artefact by the device keeps
  its flags in ``note``.
- **Blood pressure**: every NIBP measurement (not decimated) as ONE Observation 85354-9
  with components 8480-6 (systolic), 8462-4 (diastolic) and 8478-0 (mean, when measured);
  a missing part has ``dataAbsentReason`` (the profile requires systolic and diastolic).
- **Body weight** 29463-7 from the session's programme, at the session start.
- **MedicationAdministration** per pump infusion (§6.3): RxNorm 6130 ketamine,
  ``effectivePeriod`` from the pump's first running report to the report that it stopped
  or completed, ``dosage.dose`` the delivered mg recorded by the app (its last
  ``delivered_dose`` value in the period; else pump volume x concentration),
  ``dosage.rateQuantity`` the running rate in mL/h, route IV (SNOMED 47625008, marked
  UNSURE in clinical.md §6.3), method text "intravenous infusion", the weight-based
  programme in ``dosage.text``, concentration, rate changes and pauses in ``note``, the
  weight Observation in ``supportingInformation``. Status: completed (VTBI reached),
  stopped (stopped or paused before it), on-hold (paused or alarming at the last report
  of an open session), in-progress (running in an open session), unknown (still running
  at the last report of a closed or recovered record: the end is that report).
- **Entries** (observations, cues, assessments, phase and gap markers) as Observations
  with a local code (``urn:kapmonitor:entry-kind``), category exam / therapy / survey /
  activity, ``valueString`` (or ``valueQuantity`` ``{score}`` for a scored assessment),
  ``performer.display`` the author, ``issued`` when it was written. A corrected entry is
  exported in its current version with status ``amended`` and the original text in
  ``note``. Observations were chosen over Communication so one query on the patient's
  Observations returns the whole timeline.
- **Waves** (``waves=True``; off by default, as they are large and outside the vital-signs
  profile): Observations with ``valueSampledData`` (origin 0, period in ms, factor 1,
  dimensions 1, values rounded to the channel's display precision) in segments of
  ``wave_segment_s`` (default 10 s) of contiguous samples, ``effectivePeriod`` the
  segment, category procedure, coded with MDC only (waves have no LOINC term).
- Alarm events are not exported to FHIR (they are in the CSV, EDF and vital exports).

OPEN, RECOVERED and DEMO sessions: ``Bundle.meta.tag`` and every resource's ``meta.tag``
carry ``urn:kapmonitor:session-status`` open / recovered with the warning as display; DEMO
sessions also carry the security label HTEST (test health data); the MedicationAdmin-
istration's ``note`` repeats the warning.
"""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from kapmonitor.model import CHANNELS, Channel, PumpRunState, Quality, device_of, now_us
from kapmonitor.store.reader import NumericSeries, SessionReader

from .common import (
    ExportError,
    ExportResult,
    SessionMeta,
    atomic_file,
    fhir_datetime,
    load_meta,
    usable,
)

__all__ = ["VITAL_CODES", "export_session"]

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SD = "http://hl7.org/fhir/StructureDefinition/"
KAP_PATIENT = "urn:kapmonitor:patient"
KAP_SESSION = "urn:kapmonitor:session"
KAP_STATUS = "urn:kapmonitor:session-status"
KAP_ENTRY = "urn:kapmonitor:entry-kind"
KAP_DEVICE = "urn:kapmonitor:device"


@dataclass(frozen=True)
class VitalCode:
    """How one channel is coded: LOINC codings (the profile's first), display, profile."""

    loinc: tuple[tuple[str, str], ...]
    profile: str
    mdc_display: str


#: clinical.md §6.1; the profile is the R4 vital-signs profile of the quantity.
VITAL_CODES: dict[Channel, VitalCode] = {
    Channel.HR: VitalCode((("8867-4", "Heart rate"),), "heartrate", "MDC_ECG_HEART_RATE"),
    Channel.PULSE: VitalCode((("8867-4", "Heart rate"),), "heartrate",
                             "MDC_PULS_OXIM_PULS_RATE"),
    Channel.SPO2: VitalCode((("2708-6", "Oxygen saturation in Arterial blood"),
                             ("59408-5", "Oxygen saturation in Arterial blood by Pulse "
                                         "oximetry")), "oxygensat", "MDC_PULS_OXIM_SAT_O2"),
    Channel.RR: VitalCode((("9279-1", "Respiratory rate"),), "resprate", "MDC_RESP_RATE"),
    Channel.TEMP: VitalCode((("8310-5", "Body temperature"),), "bodytemp", "MDC_TEMP_BODY"),
    Channel.ETCO2: VitalCode((("19891-1", "Carbon dioxide [Partial pressure] in Exhaled gas "
                                          "--at end expiration"),), "vitalsigns",
                             "MDC_AWAY_CO2_ET"),
}
BP_PARTS = (
    (Channel.NIBP_SYS, "8480-6", "Systolic blood pressure"),
    (Channel.NIBP_DIA, "8462-4", "Diastolic blood pressure"),
    (Channel.NIBP_MEAN, "8478-0", "Mean blood pressure"),
)
#: Parts of one NIBP measurement are stamped within this of each other.
BP_MATCH_US = 2_000_000
ENTRY_CATEGORY = {"observation": "exam", "cue": "therapy", "assessment": "survey",
                  "phase": "activity"}
FLAG_NOTES = (Quality.QUESTIONABLE, Quality.ARTEFACT, Quality.DEMO)


class _Builder:
    def __init__(self, meta: SessionMeta, bundle_type: str) -> None:
        self.meta = meta
        self.bundle_type = bundle_type
        self.entries: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.keys: dict[str, int] = {}
        self.tags: list[dict[str, str]] = []
        self.security: list[dict[str, str]] = []
        warnings = meta.status_warnings()
        if meta.status in ("open", "recovered"):
            self.tags.append({"system": KAP_STATUS, "code": meta.status,
                              "display": warnings[0]})
        if meta.demo:
            self.security.append({"system": ACT_REASON, "code": "HTEST",
                                  "display": "test health data"})
        self.status_note = [w for w in warnings if "OPEN" in w or "RECOVERED" in w
                            or "DEMO" in w]

    def uid(self, key: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kapmonitor:{self.meta.uid}:{key}"))

    def ref(self, rid: str) -> dict[str, str]:
        return {"reference": f"urn:uuid:{rid}"}

    def add(self, resource: dict[str, Any], key: str, *,
            if_none_exist: str | None = None) -> str:
        n = self.keys.get(key, 0)  # two readings stamped alike still get two ids
        self.keys[key] = n + 1
        rid = self.uid(key if n == 0 else f"{key}#{n}")
        resource = {"resourceType": resource.pop("resourceType"), "id": rid, **resource}
        meta: dict[str, Any] = resource.setdefault("meta", {})
        if self.tags:
            meta["tag"] = list(self.tags)
        if self.security:
            meta["security"] = list(self.security)
        if not meta:
            del resource["meta"]
        entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{rid}", "resource": resource}
        if self.bundle_type == "transaction":
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
            if if_none_exist:
                entry["request"]["ifNoneExist"] = if_none_exist
        self.entries.append(entry)
        kind = resource["resourceType"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return rid

    def bundle(self) -> dict[str, Any]:
        b: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": self.uid(f"bundle:{self.bundle_type}"),
            "meta": {},
            "identifier": {"system": KAP_SESSION, "value": self.meta.uid},
            "type": self.bundle_type,
            "timestamp": fhir_datetime(now_us()),
            "entry": self.entries,
        }
        if self.tags:
            b["meta"]["tag"] = list(self.tags)
        if self.security:
            b["meta"]["security"] = list(self.security)
        if not b["meta"]:
            del b["meta"]
        return b


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def _category(code: str) -> list[dict[str, Any]]:
    displays = {"vital-signs": "Vital Signs", "exam": "Exam", "therapy": "Therapy",
                "survey": "Survey", "activity": "Activity"}
    return [{"coding": [_coding(OBS_CATEGORY, code, displays[code])]}]


def _quantity(value: float, ch: Channel) -> dict[str, Any]:
    info = CHANNELS[ch]
    return {"value": _decimal(value, info.precision + 2), "unit": info.display_unit or info.ucum,
            "system": UCUM, "code": info.ucum}


def _decimal(value: float, digits: int) -> float | int:
    """A JSON number: integral values as integers, others rounded to ``digits`` decimals
    (more than the channel's display precision, so nothing measured is lost)."""
    v = round(float(value), digits)
    return int(v) if v.is_integer() else v


def _flags_note(q: int) -> list[dict[str, str]]:
    flags = [f.name.lower() for f in FLAG_NOTES if q & f]
    return [{"text": "device flags: " + ", ".join(flags)}] if flags else []


def _decimate(s: NumericSeries, origin: int, interval_s: float) -> np.ndarray:
    """Indices of the last usable reading in each ``interval_s`` bin of session time (all
    usable readings when ``interval_s`` is 0)."""
    ok = np.flatnonzero(usable(s.values, s.quality))
    if interval_s == 0 or len(ok) == 0:
        return ok
    bins = (s.t_us[ok] - origin) // round(interval_s * 1e6)
    last = np.r_[bins[1:] != bins[:-1], True]
    return ok[last]


def export_session(engine: Engine, session_id: int, out_path: str | Path, *,
                   interval_s: float = 60.0, bundle_type: str = "collection",
                   waves: bool = False, wave_segment_s: float = 10.0,
                   overwrite: bool = False) -> ExportResult:
    """Write session ``session_id`` as one FHIR R4 Bundle (JSON) to ``out_path``."""
    if bundle_type not in ("collection", "transaction"):
        raise ExportError(f"bundle type {bundle_type!r}: use collection or transaction")
    if not (isinstance(interval_s, int | float) and math.isfinite(interval_s)
            and interval_s >= 0):
        raise ExportError(f"numeric interval {interval_s!r} s: use a number of seconds >= 0 "
                          "(0 = every reading)")
    if not (math.isfinite(wave_segment_s) and 0.1 <= wave_segment_s <= 600):
        raise ExportError(f"wave segment {wave_segment_s!r} s: use 0.1 to 600 s")
    meta = load_meta(engine, session_id)
    reader = SessionReader(engine, session_id)
    b = _Builder(meta, bundle_type)
    result = ExportResult(warnings=meta.status_warnings())
    patient = _patient(b, meta, result)
    devices = _devices(b, meta)
    obs_status = "preliminary" if meta.status == "open" else "final"
    weight = _weight(b, meta, patient, obs_status)
    channels = set(reader.channels())
    for ch in VITAL_CODES:
        if ch in channels:
            _vitals(b, meta, reader.numeric(ch), ch, patient, devices, obs_status, interval_s)
    if {Channel.NIBP_SYS, Channel.NIBP_DIA} & channels:
        _blood_pressure(b, meta, reader, patient, devices, obs_status)
    _medication(b, meta, reader, patient, devices, weight, result)
    _entries(b, meta, reader, patient, obs_status)
    if waves:
        for ch in (Channel.ECG, Channel.PLETH, Channel.CO2_WAVE):
            if ch in channels:
                _waves(b, meta, reader, ch, patient, devices, obs_status, wave_segment_s)
    bundle = b.bundle()
    with atomic_file(Path(out_path), overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    result.paths.append(Path(out_path))
    result.counts.update(b.counts)
    result.counts["entries"] = len(b.entries)
    return result


def _patient(b: _Builder, meta: SessionMeta, result: ExportResult) -> str:
    res: dict[str, Any] = {"resourceType": "Patient"}
    if meta.patient:
        res["identifier"] = [{"system": KAP_PATIENT, "value": meta.patient}]
        return b.add(res, f"patient:{meta.patient}",
                     if_none_exist=f"identifier={KAP_PATIENT}|{meta.patient}")
    result.warnings.append(f"session {meta.id} has no patient pseudonym: the Patient "
                           "resource has no identifier")
    return b.add(res, "patient")


def _devices(b: _Builder, meta: SessionMeta) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in meta.devices:
        if d["source"] in out:
            continue
        res: dict[str, Any] = {
            "resourceType": "Device",
            "identifier": [{"system": KAP_DEVICE, "value": f"{meta.uid}/{d['source']}"}],
            "deviceName": [{"name": d["source"], "type": "user-friendly-name"}],
        }
        if d["serial_number"]:
            res["serialNumber"] = d["serial_number"]
        if d["protocol"]:
            res["type"] = {"text": d["protocol"]}
        out[d["source"]] = b.add(res, f"device:{d['source']}")
    return out


def _obs(meta: SessionMeta, status: str, category: str, code: dict[str, Any], patient: str,
         t_us: int, b: _Builder) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": status, "category": _category(category),
            "code": code, "subject": b.ref(patient), "effectiveDateTime": fhir_datetime(t_us)}


def _weight(b: _Builder, meta: SessionMeta, patient: str, status: str) -> str | None:
    kg = meta.row["weight_kg"]
    if kg is None:
        return None
    res = _obs(meta, status, "vital-signs", {
        "coding": [_coding(LOINC, "29463-7", "Body weight"),
                   _coding(MDC, "188736", "MDC_MASS_BODY_ACTUAL")], "text": "Body weight"},
        patient, meta.created_us, b)
    res["meta"] = {"profile": [SD + "bodyweight"]}
    res["valueQuantity"] = {"value": _decimal(kg, 3), "unit": "kg", "system": UCUM,
                            "code": "kg"}
    if meta.row["weight_basis"] and meta.row["weight_basis"] != "actual":
        res["note"] = [{"text": f"weight basis: {meta.row['weight_basis']}"}]
    return b.add(res, "weight")


def _device_ref(b: _Builder, devices: dict[str, str], source: str) -> dict[str, str] | None:
    rid = devices.get(source) or devices.get(device_of(source))
    return b.ref(rid) if rid else None


def _vitals(b: _Builder, meta: SessionMeta, s: NumericSeries, ch: Channel, patient: str,
            devices: dict[str, str], status: str, interval_s: float) -> None:
    vc = VITAL_CODES[ch]
    info = CHANNELS[ch]
    code = {"coding": [*(_coding(LOINC, c, d) for c, d in vc.loinc),
                       _coding(MDC, str(info.mdc_code), vc.mdc_display)],
            "text": info.label.replace("\u2082", "2")}
    for i in _decimate(s, meta.origin_us, interval_s).tolist():
        t = int(s.t_us[i])
        res = _obs(meta, status, "vital-signs", code, patient, t, b)
        res["meta"] = {"profile": [SD + vc.profile]}
        res["valueQuantity"] = _quantity(float(s.values[i]), ch)
        dev = _device_ref(b, devices, s.source[i])
        if dev:
            res["device"] = dev
        note = _flags_note(int(s.quality[i]))
        if note:
            res["note"] = note
        b.add(res, f"obs:{ch.value}:{t}")


def _blood_pressure(b: _Builder, meta: SessionMeta, reader: SessionReader, patient: str,
                    devices: dict[str, str], status: str) -> None:
    parts = {ch: reader.numeric(ch) for ch, _, _ in BP_PARTS}
    anchor = Channel.NIBP_SYS if len(parts[Channel.NIBP_SYS]) else Channel.NIBP_DIA
    a = parts[anchor]
    for i in np.flatnonzero(usable(a.values, a.quality)).tolist():
        t = int(a.t_us[i])
        components = []
        flags = int(a.quality[i])
        for ch, loinc, display in BP_PARTS:
            s = parts[ch]
            comp: dict[str, Any] = {"code": {"coding": [
                _coding(LOINC, loinc, display),
                _coding(MDC, str(CHANNELS[ch].mdc_code), CHANNELS[ch].mdc_ref)]}}
            j = _match(s, t)
            if j is not None:
                comp["valueQuantity"] = _quantity(float(s.values[j]), ch)
                flags |= int(s.quality[j])
            elif ch is Channel.NIBP_MEAN:
                continue
            else:
                comp["dataAbsentReason"] = {"coding": [_coding(ABSENT, "unknown", "Unknown")]}
            components.append(comp)
        res = _obs(meta, status, "vital-signs", {"coding": [
            _coding(LOINC, "85354-9", "Blood pressure panel with all children optional"),
            _coding(MDC, "150020", "MDC_PRESS_BLD_NONINV")], "text": "NIBP"}, patient, t, b)
        res["meta"] = {"profile": [SD + "bp"]}
        res["component"] = components
        dev = _device_ref(b, devices, a.source[i])
        if dev:
            res["device"] = dev
        note = _flags_note(flags)
        if note:
            res["note"] = note
        b.add(res, f"bp:{t}")


def _match(s: NumericSeries, t: int) -> int | None:
    """The usable reading of ``s`` nearest ``t`` within BP_MATCH_US."""
    if not len(s):
        return None
    ok = usable(s.values, s.quality)
    d = np.where(ok, np.abs(s.t_us - t), np.iinfo(np.int64).max)
    j = int(np.argmin(d))
    return j if d[j] <= BP_MATCH_US else None


# ----------------------------------------------------------------------------- infusion


@dataclass
class _Infusion:
    source: str
    infusion_id: int
    events: list[dict[str, Any]]


def infusions(pump_events: Sequence[dict[str, Any]]) -> list[_Infusion]:
    """Pump reports grouped by (pump, infusion), keeping those where the pump ran."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for e in pump_events:
        groups.setdefault((e["source"], e["infusion_id"]), []).append(e)
    running = (PumpRunState.RUNNING.value, PumpRunState.BOLUS.value)
    return [_Infusion(src, iid, evs) for (src, iid), evs in groups.items()
            if any(e["state"] in running for e in evs)]


def _medication(b: _Builder, meta: SessionMeta, reader: SessionReader, patient: str,
                devices: dict[str, str], weight: str | None, result: ExportResult) -> None:
    runs = infusions(reader.pump_events())
    if not runs:
        result.warnings.append(f"session {meta.id} has no pump report of a running "
                               "infusion: no MedicationAdministration exported")
        return
    dose = reader.numeric(Channel.DELIVERED_DOSE)
    row = meta.row
    for inf in runs:
        _one_infusion(b, meta, inf, dose, row, patient, devices, weight, result)


def _one_infusion(b: _Builder, meta: SessionMeta, inf: _Infusion, dose: NumericSeries,
                  row: dict[str, Any], patient: str, devices: dict[str, str],
                  weight: str | None, result: ExportResult) -> None:
    running = (PumpRunState.RUNNING.value, PumpRunState.BOLUS.value)
    evs = inf.events
    first = next(i for i, e in enumerate(evs) if e["state"] in running)
    start = evs[first]["t_us"]
    last_run = max(i for i, e in enumerate(evs) if e["state"] in running)
    after = evs[last_run + 1:]
    end_ev = next((e for e in after if e["state"] in (
        PumpRunState.COMPLETE.value, PumpRunState.STOPPED.value, PumpRunState.PAUSED.value,
        PumpRunState.ALARM.value)), None)
    final_state = evs[-1]["state"]
    held = final_state in (PumpRunState.PAUSED.value, PumpRunState.ALARM.value)
    if end_ev is not None and end_ev["state"] == PumpRunState.COMPLETE.value:
        status, end = "completed", end_ev["t_us"]
    elif end_ev is not None and held and meta.status == "open":
        status, end = "on-hold", None
    elif end_ev is not None:
        status, end = "stopped", end_ev["t_us"]
    elif meta.status == "open":
        status, end = "in-progress", None
    else:  # still running at the last report of a closed or recovered record
        status, end = "unknown", evs[-1]["t_us"]
    conc = next((e["concentration_mg_ml"] for e in reversed(evs)
                 if e["concentration_mg_ml"]), None) or row["concentration_mg_ml"]
    rates = [(e["t_us"], e["rate_ml_h"]) for e in evs[first:] if e["state"] in running
             and e["rate_ml_h"] is not None]
    t_end = end if end is not None else evs[-1]["t_us"]
    delivered = _delivered(dose, start, t_end)
    basis = "recorded by the app from pump telemetry"
    if delivered is None:
        vol = next((e["volume_infused_ml"] for e in reversed(evs)
                    if e["volume_infused_ml"] is not None), None)
        if vol is not None and conc:
            delivered, basis = vol * conc, "pump volume x concentration"
    drug = (next((e["drug"] for e in evs if e["drug"]), None) or row["drug"] or "").strip()
    med: dict[str, Any] = {"text": drug or "ketamine"}
    if drug.lower() in ("ketamine", "ketamine hcl", "ketamine hydrochloride"):
        med["coding"] = [_coding(RXNORM, "6130", "ketamine")]
    else:
        result.warnings.append(f"pump drug {drug!r} is not ketamine: the "
                               "MedicationAdministration has the drug name only, no RxNorm code")
    dosage: dict[str, Any] = {
        "route": {"coding": [_coding(SNOMED, "47625008", "Intravenous route")]},
        "method": {"text": "intravenous infusion"},
    }
    text = _programme_text(row, delivered, basis)
    if text:
        dosage["text"] = text
    if delivered is not None:
        dosage["dose"] = {"value": _decimal(delivered, 3), "unit": "mg", "system": UCUM,
                          "code": "mg"}
    else:
        result.warnings.append(f"infusion {inf.infusion_id} on {inf.source}: no delivered "
                               "dose could be determined (no dose values, no concentration)")
    if rates:
        dosage["rateQuantity"] = {"value": _decimal(rates[-1][1], 3), "unit": "mL/h",
                                  "system": UCUM, "code": "mL/h"}
    period: dict[str, str] = {"start": fhir_datetime(start)}
    if end is not None:
        period["end"] = fhir_datetime(end)
    notes = [{"text": t} for t in b.status_note]
    if conc:
        notes.append({"text": f"concentration {conc:g} mg/mL"})
    changes = _rate_changes(rates)
    if len(changes) > 1:
        notes.append({"text": "rates: " + "; ".join(
            f"{r:g} mL/h from {fhir_datetime(t)}" for t, r in changes)})
    pauses = [f"{e['state']} at {fhir_datetime(e['t_us'])}" for e in evs[first:last_run]
              if e["state"] not in running]
    if pauses:
        notes.append({"text": "interruptions: " + "; ".join(_dedupe(pauses))})
    if status == "unknown":
        notes.append({"text": "the pump was still running when the record ended; the end "
                              "is the last pump report recorded"})
    res: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "status": status,
        "medicationCodeableConcept": med,
        "subject": b.ref(patient),
        "effectivePeriod": period,
        "dosage": dosage,
    }
    dev = _device_ref(b, devices, inf.source)
    if dev:
        res["device"] = [dev]
    if weight:
        res["supportingInformation"] = [b.ref(weight)]
    if notes:
        res["note"] = notes
    b.add(res, f"medadmin:{inf.source}:{inf.infusion_id}")


def _delivered(dose: NumericSeries, start: int, end: int) -> float | None:
    if not len(dose):
        return None
    ok = usable(dose.values, dose.quality) & (dose.t_us >= start) & (dose.t_us <= end)
    idx = np.flatnonzero(ok)
    return float(dose.values[idx[-1]]) if len(idx) else None


def _rate_changes(rates: list[tuple[int, float]]) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    for t, r in rates:
        if not out or out[-1][1] != r:
            out.append((t, r))
    return out


def _dedupe(items: list[str]) -> list[str]:
    out: list[str] = []
    for x in items:
        if not out or out[-1].split(" at ")[0] != x.split(" at ")[0]:
            out.append(x)
    return out


def _programme_text(row: dict[str, Any], delivered: float | None, basis: str) -> str:
    parts = []
    dose, minutes, kg = row["dose_mg_per_kg"], row["duration_min"], row["weight_kg"]
    if dose is not None:
        planned = f"{dose:g} mg/kg"
        if minutes:
            planned += f" over {minutes:g} min"
        if kg:
            planned += f" ({dose * kg:.1f} mg for {kg:g} kg)"
        parts.append("planned " + planned)
    if delivered is not None:
        d = f"delivered {delivered:.2f} mg"
        if kg:
            d += f" ({delivered / kg:.3f} mg/kg)"
        parts.append(f"{d}, {basis}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- entries


def _entries(b: _Builder, meta: SessionMeta, reader: SessionReader, patient: str,
             status: str) -> None:
    for e in reader.entries():
        code = {"coding": [_coding(KAP_ENTRY, e.kind)], "text": e.code or e.kind}
        res = _obs(meta, "amended" if e.amended else status,
                   ENTRY_CATEGORY.get(e.kind, "activity"), code, patient, e.t_us, b)
        res["issued"] = fhir_datetime(e.created_us)
        if e.author:
            res["performer"] = [{"display": e.author}]
        notes = []
        if e.kind == "assessment" and e.value is not None:
            res["valueQuantity"] = {"value": _decimal(e.value, 6), "unit": "score",
                                    "system": UCUM, "code": "{score}"}
            if e.text:
                notes.append({"text": e.text})
        elif e.text:
            res["valueString"] = e.text
        elif e.value is not None:
            res["valueQuantity"] = {"value": _decimal(e.value, 6)}
        else:
            res["valueString"] = e.code
        if e.amended:
            first = e.history[0]
            notes.append({"text": f'amended {len(e.history)} time(s); originally "{first.text}"'
                                  f" by {first.author or 'unknown'} at "
                                  f"{fhir_datetime(first.created_us)}"})
        if e.kind == "gap":
            notes.append({"text": "the recording was interrupted here"})
        if notes:
            res["note"] = notes
        b.add(res, f"entry:{e.root_id}")


# ----------------------------------------------------------------------------- waves


def _waves(b: _Builder, meta: SessionMeta, reader: SessionReader, ch: Channel, patient: str,
           devices: dict[str, str], status: str, segment_s: float) -> None:
    w = reader.wave(ch)
    if not len(w) or not w.rate_hz:
        return
    info = CHANNELS[ch]
    rate = float(w.rate_hz)
    period_us = 1e6 / rate
    gaps = np.flatnonzero(np.abs(np.diff(w.t_us) - period_us) > 0.5 * period_us) + 1
    bounds = [0, *gaps.tolist(), len(w)]
    per = max(1, round(segment_s * rate))
    code = {"coding": [_coding(MDC, str(info.mdc_code), info.mdc_ref)],
            "text": info.label.replace("\u2082", "2")}
    for a, z in itertools.pairwise(bounds):
        for s0 in range(a, z, per):
            s1 = min(z, s0 + per)
            vals = w.values[s0:s1].astype(np.float64)
            data = " ".join("E" if not math.isfinite(v) else _fmt(v, info.precision)
                            for v in vals.tolist())
            t = int(w.t_us[s0])
            res = _obs(meta, status, "vital-signs", code, patient, t, b)
            del res["effectiveDateTime"]
            res["category"] = [{"coding": [_coding(OBS_CATEGORY, "procedure", "Procedure")]}]
            res["effectivePeriod"] = {"start": fhir_datetime(t),
                                      "end": fhir_datetime(t + round((s1 - s0) * period_us))}
            res["valueSampledData"] = {
                "origin": {"value": 0, "unit": info.display_unit or info.ucum, "system": UCUM,
                           "code": info.ucum},
                "period": _decimal(1000.0 / rate, 6),
                "factor": 1,
                "dimensions": 1,
                "data": data,
            }
            b.add(res, f"wave:{ch.value}:{t}")


def _fmt(v: float, precision: int) -> str:
    s = f"{v:.{precision}f}"
    return "0" if float(s) == 0 else s.rstrip("0").rstrip(".") if "." in s else s
