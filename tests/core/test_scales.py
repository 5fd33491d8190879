"""Rating scales (clinical.md §7) and the Modified Aldrete discharge score (§4.4): ranges as
in the document, strict scoring that names the item, value and allowed range, the discharge
rule per variant, and the annotation an assessment becomes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapmonitor.scales import ScaleError, get_scale, load_scales
from kapmonitor.store import SessionReader, Store

#: §7 (and §4.4 for aldrete): items, per-item range, total range, rater, licence UNSURE.
SECTION_7 = {
    "cadss": (23, (0, 4), (0, 92), "clinician", False),
    "moaa-s": (1, (0, 5), (0, 5), "nurse", True),
    "rass": (1, (-5, 4), (-5, 4), "nurse", True),
    "bprs-positive": (4, (1, 7), (4, 28), "clinician", True),
    "madrs": (10, (0, 6), (0, 60), "clinician", True),
    "qids-sr16": (16, (0, 3), (0, 27), "patient", True),
    "phq-9": (9, (0, 3), (0, 27), "patient", False),
    "anxiety-nrs": (1, (0, 10), (0, 10), "patient", False),
    "nausea-nrs": (1, (0, 10), (0, 10), "patient", False),
    "meq30": (30, (0, 5), (0, 5), "patient", True),
    "5d-asc": (94, (0, 100), (0, 100), "patient", False),
    "aldrete": (5, (0, 2), (0, 10), "nurse", False),
}
ALDRETE_ITEMS = ["activity", "respiration", "circulation", "consciousness", "spo2"]


def test_every_scale_matches_section_7() -> None:
    scales = load_scales()
    assert list(scales) == list(SECTION_7)
    for sid, (n, item_range, total_range, rater, unsure) in SECTION_7.items():
        s = scales[sid]
        assert s.item_count == n, sid
        assert s.item_range == item_range, sid
        assert (s.total_min, s.total_max) == total_range, sid
        assert s.rater == rater, sid
        assert s.licence_unsure is unsure, sid
        assert s.name and s.version and s.when and s.licence_note, sid


def test_item_text_ships_only_for_the_generic_nrs() -> None:
    """§7: "Ship item text only for scales whose licence allows it ... none except the
    generic NRS prompts"."""
    scales = load_scales()
    with_text = {sid for sid, s in scales.items()
                 if s.prompt or any(i.text for i in s.items)}
    assert with_text == {"anxiety-nrs", "nausea-nrs"}
    assert {sid for sid, s in scales.items() if s.text_allowed} == with_text
    assert all(scales[sid].licence == "own-words" for sid in with_text)
    assert scales["anxiety-nrs"].prompt.startswith(
        "On a scale from 0 (none) to 10 (worst you can imagine), how anxious")
    assert "nauseous" in scales["nausea-nrs"].prompt


def test_levels_scales_have_a_paraphrased_anchor_for_every_level() -> None:
    moaa, rass = get_scale("moaa-s"), get_scale("rass")
    assert moaa.is_levels and rass.is_levels
    assert sorted(moaa.items[0].anchors) == [0, 1, 2, 3, 4, 5]
    assert sorted(rass.items[0].anchors) == list(range(-5, 5))
    assert rass.items[0].anchor(0) == "alert and calm"
    assert rass.items[0].anchor(4).startswith("combative")
    assert rass.items[0].anchor(-5) == "unarousable"
    assert not get_scale("nausea-nrs").is_levels


def test_aldrete_structure_from_section_4_4() -> None:
    a = get_scale("aldrete")
    assert [i.key for i in a.items] == ALDRETE_ITEMS
    assert all(sorted(i.anchors) == [0, 1, 2] for i in a.items)
    assert [v.id for v in a.variants] == ["modified-1995", "modified-1995-mmhg",
                                         "8-with-resp-spo2"]
    assert a.variant().id == "modified-1995" and a.variant().discharge_min_total == 9
    assert not a.total_only


# -- summaries and annotation fields ---------------------------------------------------------


def test_summaries() -> None:
    assert get_scale("moaa-s").score([4]).summary() == \
        "MOAA/S 4 (responds lethargically to name)"
    assert get_scale("rass").score_total(-2).summary() == \
        "RASS -2 (light sedation, brief eye contact to voice)"
    assert get_scale("rass").score_total(1).summary().startswith("RASS +1 (restless")
    assert get_scale("nausea-nrs").score_total(3).summary() == "Nausea NRS 3/10"
    assert get_scale("anxiety-nrs").score_total(10).summary() == \
        "Anxiety NRS 10/10 (worst imaginable)"
    assert get_scale("cadss").score_total(14).summary() == "CADSS 14/92 (total only)"
    assert get_scale("bprs-positive").score([1, 2, 1, 3]).summary() == (
        "BPRS+ 7/28: conceptual disorganisation 1, hallucinatory behaviour 2, "
        "suspiciousness 1, unusual thought content 3")
    assert get_scale("phq-9").score([1] * 9).summary() == \
        "PHQ-9 9/27; items 1 1 1 1 1 1 1 1 1"


def test_aldrete_annotation_fields() -> None:
    a = get_scale("aldrete").score({"activity": 2, "respiration": 2, "circulation": 1,
                                    "consciousness": 2, "SpO2": 2})
    assert a.annotation_fields() == {
        "kind": "assessment", "code": "aldrete", "value": 9.0,
        "text": "Aldrete 9/10: activity 2, respiration 2, circulation 1, consciousness 2, "
                "SpO2 2 — meets discharge (>= 9); variant modified-1995"}
    assert a.annotation_fields("walked to the door")["text"].endswith(
        "variant modified-1995; walked to the door")


def test_assessment_is_written_and_read_back(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "kap.sqlite"))
    try:
        sid = store.create_session(owned=False)
        fields = get_scale("moaa-s").score([5]).annotation_fields()
        aid = store.add_annotation(sid, author="nurse B", t_us=1_000, **fields)
        [e] = SessionReader(store.engine, sid).entries()
    finally:
        store.close()
    assert (e.id, e.kind, e.code, e.value, e.author) == (aid, "assessment", "moaa-s", 5.0,
                                                         "nurse B")
    assert e.text == "MOAA/S 5 (responds readily to name in a normal voice)"


# -- strict scoring ----------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "call", "reason"), [
    ("aldrete", lambda s: s.score([2, 2, 3, 2, 2]),
     "Aldrete circulation: 3 is out of range (allowed 0 to 2)"),
    ("aldrete", lambda s: s.score({**dict.fromkeys(ALDRETE_ITEMS, 2), "spo2": -1}),
     "Aldrete SpO2: -1 is out of range (allowed 0 to 2)"),
    ("rass", lambda s: s.score([5]), "RASS: +5 is out of range (allowed -5 to +4)"),
    ("rass", lambda s: s.score_total(-6), "RASS: -6 is out of range (allowed -5 to +4)"),
    ("moaa-s", lambda s: s.score([4.5]),
     "MOAA/S: 4.5 is not a whole number (allowed 0 to 5, in steps of 1)"),
    ("moaa-s", lambda s: s.score([6]), "MOAA/S: 6 is out of range (allowed 0 to 5)"),
    ("nausea-nrs", lambda s: s.score_total(11),
     "Nausea NRS: 11 is out of range (allowed 0 to 10)"),
    ("nausea-nrs", lambda s: s.score_total(math.nan), "is not a score (allowed 0 to 10)"),
    ("nausea-nrs", lambda s: s.score([True]), "score must be a number"),
    ("nausea-nrs", lambda s: s.score(["3"]), "score must be a number"),
    ("bprs-positive", lambda s: s.score([0, 1, 1, 1]),
     "BPRS+ conceptual disorganisation: 0 is out of range (allowed 1 to 7)"),
    ("aldrete", lambda s: s.score({"activity": 2}),
     "missing score(s) for respiration, circulation, consciousness, spo2"),
    ("aldrete", lambda s: s.score({**dict.fromkeys(ALDRETE_ITEMS, 2), "colour": 2}),
     "unknown item(s) colour"),
    ("aldrete", lambda s: s.score([2, 2]), "needs 5 item score(s), got 2"),
    ("aldrete", lambda s: s.score_total(9), "a total alone is not accepted"),
    ("aldrete", lambda s: s.score([2] * 5, variant="strict"), "unknown variant 'strict'"),
    ("cadss", lambda s: s.score_total(93), "CADSS: total 93 is out of range (allowed 0 to 92)"),
    ("cadss", lambda s: s.score_total(12.5), "total 12.5 is not a whole number"),
    ("cadss", lambda s: s.score([0] * 22 + [5]), "CADSS item 23: 5 is out of range"),
])
def test_out_of_range_and_malformed_scores_are_refused_with_reason(scale, call,
                                                                   reason: str) -> None:
    with pytest.raises(ScaleError) as info:
        call(get_scale(scale))
    assert reason in str(info.value)


@given(st.lists(st.integers(0, 4), min_size=23, max_size=23))
def test_cadss_total_is_the_sum_of_valid_items(items: list[int]) -> None:
    a = get_scale("cadss").score(items)
    assert a.total == sum(items) and 0 <= a.total <= 92
    assert a.item_scores == tuple((str(i + 1), float(v)) for i, v in enumerate(items))


@given(st.integers(0, 22), st.one_of(st.integers(-50, -1), st.integers(5, 50)))
def test_any_out_of_range_cadss_item_is_named(pos: int, bad: int) -> None:
    items = [0] * 23
    items[pos] = bad
    with pytest.raises(ScaleError, match=rf"CADSS item {pos + 1}: {bad} is out of range"):
        get_scale("cadss").score(items)


def test_qids_scores_nine_domains() -> None:
    # sleep max(3,1,0,0)=3, mood 2, weight max(0,1,2,0)=2, five single domains 1+1+0+1+1,
    # psychomotor max(2,3)=3: 3+2+2+4+3 = 14
    a = get_scale("qids-sr16").score([3, 1, 0, 0, 2, 0, 1, 2, 0, 1, 1, 0, 1, 1, 2, 3])
    assert a.total == 14
    assert get_scale("qids-sr16").score([3] * 16).total == 27


def test_meq30_total_is_the_item_mean() -> None:
    a = get_scale("meq30").score([3] * 29 + [4])
    assert a.total == pytest.approx(91 / 30)
    assert a.summary().startswith("MEQ30 3.03/5 (mean)")
    assert get_scale("5d-asc").score([12.5] * 94).total == 12.5  # VAS: decimals allowed


# -- Aldrete discharge ----------------------------------------------------------------------------


def test_aldrete_default_discharge_is_total_at_least_9_over_every_combination() -> None:
    a = get_scale("aldrete")
    for combo in itertools.product((0, 1, 2), repeat=5):
        res = a.score(list(combo))
        assert res.total == sum(combo)
        assert res.meets_discharge is (sum(combo) >= 9), combo


@pytest.mark.parametrize(("items", "variant", "meets", "tail"), [
    ([2, 2, 2, 2, 2], None, True, "— meets discharge (>= 9); variant modified-1995"),
    ([2, 2, 1, 2, 2], None, True, "— meets discharge (>= 9)"),
    ([2, 1, 1, 2, 2], None, False, "— does not meet discharge (>= 9; total 8)"),
    ([2, 2, 1, 2, 2], "modified-1995-mmhg", True, "variant modified-1995-mmhg"),
    ([1, 2, 1, 2, 2], "8-with-resp-spo2", True,
     "— meets discharge (>= 8 with respiration 2 and SpO2 2)"),
    ([2, 2, 2, 2, 1], "8-with-resp-spo2", False,
     "— does not meet discharge (>= 8 with respiration 2 and SpO2 2; SpO2 is 1)"),
    ([2, 1, 1, 2, 1], "8-with-resp-spo2", False,
     "(>= 8 with respiration 2 and SpO2 2; total 7, respiration is 1, SpO2 is 1)"),
])
def test_aldrete_discharge_per_variant(items: list[int], variant: str | None, meets: bool,
                                       tail: str) -> None:
    res = get_scale("aldrete").score(items, variant=variant)
    assert res.meets_discharge is meets
    assert tail in res.summary()


def test_scales_without_a_discharge_rule_report_none() -> None:
    assert get_scale("nausea-nrs").score_total(2).meets_discharge is None
    assert "discharge" not in get_scale("moaa-s").score([5]).summary()


def test_unknown_scale_lists_the_known_ones() -> None:
    with pytest.raises(ScaleError, match=r"unknown scale 'gad-7' \(one of cadss, moaa-s"):
        get_scale("gad-7")
    assert get_scale("Nausea-NRS").id == "nausea-nrs"


# -- the file is validated ---------------------------------------------------------------------

BASE = """
[scales.x]
name = "X"
short = "X"
version = "1"
measures = "m"
rater = "nurse"
when = "w"
direction = "higher-is-worse"
licence = "published"
licence_unsure = true
licence_note = "n"
text_allowed = false
integer = true
total = "sum"
total_min = 0
total_max = 6
total_only = false
item_count = 3
item_min = 0
item_max = 2
"""


@pytest.mark.parametrize(("change", "reason"), [
    (("total_max = 6", "total_max = 7"),
     "declared total range 0 to 7 does not match the items (0 to 6)"),
    (("text_allowed = false", 'text_allowed = false\nprompt = "How ...?"'),
     "a prompt is item text, which this scale's licence (published) does not allow"),
    (("text_allowed = false", "text_allowed = true"), "text_allowed needs licence own-words"),
    (("rater = \"nurse\"", "rater = \"robot\""), "rater must be one of"),
    (("item_max = 2", "item_max = 2\ncolour = 1"), "unknown key(s) colour"),
    (("item_max = 2", "item_max = 2\nanchors = { 3 = \"x\" }"),
     "anchor 3 is outside the item range 0 to 2"),
    (("integer = true", "integer = 1"), "integer has the wrong type"),
])
def test_bad_scale_files_are_refused(change: tuple[str, str], reason: str) -> None:
    load_scales(BASE)  # the base itself is fine
    with pytest.raises(ScaleError) as info:
        load_scales(BASE.replace(*change))
    assert reason in str(info.value)
