"""The cue library (clinical.md §8.1, §8.2): every id as data, unique shortcuts, and a clinic
file merged over the defaults by id, refused whole with its reasons when it is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kapmonitor.cues import (
    CUES_ENV,
    CueLibrary,
    CueLibraryError,
    normalise_shortcut,
    override_path,
)

from ..conftest import SHARED

CLINICAL = SHARED / "clinical.md"

#: clinical.md §8.2, in order, by category (written out so the test stands without shared/).
SECTION_8_2 = {
    "Set & setting": ["SET-ROOM", "SET-CONSENT", "SET-SUPPORT"],
    "Intention": ["INT-STATE", "INT-RETURN"],
    "Breath": ["BR-SLOW", "BR-COUNT", "BR-SIGH"],
    "Body": ["BODY-SCAN", "BODY-HEAVY", "BODY-HANDS"],
    "Safe place / imagery": ["IMG-SAFE", "IMG-RIVER", "IMG-LIGHT", "IMG-GUIDE"],
    "Music": ["MUS-START", "MUS-SHIFT-CALM", "MUS-SHIFT-EVOC", "MUS-RETURN", "MUS-VOL",
              "MUS-STOP"],
    "Reassurance / distress": ["RA-SAFE", "RA-TEMP", "RA-OPEN", "RA-TOUCH", "RA-NAUSEA"],
    "Emergence / grounding": ["EM-ORIENT", "EM-SENSES", "EM-MOVE", "EM-WATER"],
    "Integration": ["INTG-WORDS", "INTG-IMAGE", "INTG-BODY", "INTG-JOURNAL"],
    "Observation tags": ["OBS-TEARFUL", "OBS-SMILING", "OBS-VERBALISING", "OBS-RESTLESS",
                         "OBS-STILL", "OBS-DISTRESS", "OBS-NAUSEA", "OBS-VOMIT",
                         "OBS-ASLEEP"],
}
ALL_IDS = [i for ids in SECTION_8_2.values() for i in ids]
#: §8.1 phase of each category (INT-RETURN is "used at emergence").
PHASE_OF = {"Set & setting": "preparation", "Intention": "preparation", "Breath": "onset",
            "Body": "onset", "Safe place / imagery": "peak", "Music": "peak",
            "Reassurance / distress": "peak", "Emergence / grounding": "emergence",
            "Integration": "integration", "Observation tags": "any"}


@pytest.fixture(autouse=True)
def no_clinic_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The user's own config must not leak into the tests."""
    monkeypatch.delenv(CUES_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def lib() -> CueLibrary:
    return CueLibrary.load()


def _section_8_2() -> str:
    if not CLINICAL.is_file():
        pytest.skip("shared/clinical.md is not beside the repository")
    text = CLINICAL.read_text("utf-8")
    return text[text.index("### 8.2"):text.index("## 9.")]


# -- the packaged library against §8.2 ------------------------------------------------------


def test_every_section_8_2_id_is_present_in_order_and_category(lib: CueLibrary) -> None:
    assert [c.id for c in lib] == ALL_IDS
    cats = lib.categories()
    assert [c.name for c in cats] == list(SECTION_8_2)
    for cat in cats:
        assert [q.id for q in cat.cues] == SECTION_8_2[cat.name]
        assert cat.phase == PHASE_OF[cat.name]
        assert all(q.category == cat.id for q in cat.cues)


def test_ids_match_the_clinical_document(lib: CueLibrary) -> None:
    """Parsed from clinical.md itself, so an id added there fails here until it is data."""
    section = _section_8_2()
    doc_ids = re.findall(r"`([A-Z]+(?:-[A-Z0-9]+)+)`", section)
    assert doc_ids == ALL_IDS
    assert set(doc_ids) == {c.id for c in lib}


def test_labels_and_example_texts_match_the_clinical_document(lib: CueLibrary) -> None:
    section = _section_8_2()
    labels = dict(re.findall(r'`([A-Z][A-Z0-9-]+)` "([^"]+)"', section))
    assert len(labels) == len(ALL_IDS) - len(SECTION_8_2["Observation tags"])
    for cid, label in labels.items():
        if cid == "MUS-START":  # "Music start (playlist X)": the playlist is free text
            assert label.startswith(lib[cid].label)
        else:
            assert lib[cid].label == label, cid
    examples = dict(re.findall(r'`([A-Z][A-Z0-9-]+)` "[^"]+"\. Example(?: text)?: "([^"]+)"',
                               section))
    assert set(examples) == {"INT-STATE", "BR-SLOW", "BODY-SCAN", "IMG-SAFE", "RA-SAFE",
                             "RA-TEMP", "EM-ORIENT", "INTG-WORDS"}
    for cid, text in examples.items():
        assert lib[cid].text == text, cid


def test_kinds_speakers_markers_and_music_actions(lib: CueLibrary) -> None:
    tags = lib.observation_tags()
    assert [t.id for t in tags] == SECTION_8_2["Observation tags"]
    assert all(t.kind == "observation" and t.spoken_by == "" for t in tags)
    cues = [c for c in lib if c.kind == "cue"]
    assert len(cues) == len(ALL_IDS) - len(tags)
    assert all(c.spoken_by == "therapist" for c in cues)
    # §8.2: RA-* and MUS-* create a marker on the vitals timeline
    for c in lib:
        if c.id.startswith(("RA-", "MUS-")):
            assert c.marker, c.id
    assert {"INT-STATE", "EM-ORIENT", "OBS-DISTRESS", "OBS-VOMIT"} <= {c.id for c in
                                                                      lib.markers()}
    assert not lib["IMG-SAFE"].marker and not lib["OBS-SMILING"].marker
    assert {c.id: c.music_action for c in lib if c.music_action} == {
        "MUS-START": "start", "MUS-SHIFT-CALM": "shift-calm",
        "MUS-SHIFT-EVOC": "shift-evocative", "MUS-RETURN": "return", "MUS-VOL": "volume",
        "MUS-STOP": "stop"}
    assert lib["INT-RETURN"].phase == "emergence"
    assert [p.id for p in lib.phases()][:5] == ["preparation", "onset", "peak", "emergence",
                                               "integration"]


def test_shortcuts_are_unique_normalised_and_documented(lib: CueLibrary) -> None:
    given = [c.shortcut for c in lib if c.shortcut]
    assert len(given) == len(set(given)) == len(lib.by_shortcut())
    assert all(normalise_shortcut(s) == s for s in given)
    assert lib.by_shortcut()["F2"].id == "RA-SAFE"
    assert lib.by_shortcut()[normalise_shortcut("alt+t")].id == "OBS-TEARFUL"
    assert {t.shortcut for t in lib.observation_tags()} == {
        "Alt+T", "Alt+S", "Alt+W", "Alt+R", "Alt+Q", "Alt+D", "Alt+N", "Alt+V", "Alt+A"}
    # the table in the file's header comment lists every default shortcut
    from importlib.resources import files
    header = files("kapmonitor.resources").joinpath("cues.toml").read_text("utf-8")
    header = header[:header.index("schema = 1")]
    for c in lib:
        if c.shortcut:
            assert re.search(rf"{re.escape(c.shortcut)}\s", header), c.shortcut


def test_get_is_case_insensitive_and_none_for_unknown(lib: CueLibrary) -> None:
    assert lib.get("img-safe") is lib["IMG-SAFE"]
    assert lib.get("IMG-NOPE") is None and "IMG-NOPE" not in lib
    with pytest.raises(KeyError):
        lib["IMG-NOPE"]


def test_annotation_fields_carry_id_kind_and_label(lib: CueLibrary) -> None:
    assert lib["IMG-SAFE"].annotation_fields() == {"kind": "cue", "code": "IMG-SAFE",
                                                   "text": "Safe place"}
    assert lib["MUS-START"].annotation_fields(" playlist Ambient 2 ")["text"] == \
        "Music start: playlist Ambient 2"
    assert lib["OBS-TEARFUL"].annotation_fields()["kind"] == "observation"


# -- shortcuts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    ("alt+t", "Alt+T"), ("F5", "F5"), ("f12", "F12"), ("shift+alt+x", "Alt+Shift+X"),
    ("Ctrl+Shift+F3", "Ctrl+Shift+F3"), ("Control+1", "Ctrl+1"), ("meta+k", "Meta+K")])
def test_shortcut_normalisation(spec: str, expected: str) -> None:
    assert normalise_shortcut(spec) == expected


@pytest.mark.parametrize(("spec", "reason"), [
    ("t", "needs Ctrl, Alt or Meta"), ("Shift+T", "needs Ctrl, Alt or Meta"),
    ("F1", "kept for Help"), ("F11", "full screen"), ("Alt+F4", "closes the window"),
    ("Ctrl+C", "editing"), ("Hyper+X", "unknown modifier"), ("Alt+Enter", "not F1-F24"),
    ("F25", "not F1-F24"), ("Alt+Alt+T", "repeats Alt"), ("Alt+", "not like"), ("", "empty")])
def test_bad_shortcuts_are_refused_with_reason(spec: str, reason: str) -> None:
    with pytest.raises(CueLibraryError, match=re.escape(reason)):
        normalise_shortcut(spec)


# -- clinic override -------------------------------------------------------------------------

OVERRIDE = """
[[category]]
id = "clinic"
name = "Our clinic"
phase = "peak"

[[cue]]
id = "RA-SAFE"
text = "You are safe with us."

[[cue]]
id = "IMG-GARDEN"
category = "imagery"
label = "Garden"
shortcut = "ctrl+alt+g"

[[cue]]
id = "CL-BELL"
category = "clinic"
label = "Singing bowl"
marker = true
"""


def test_override_merges_by_id(tmp_path: Path, lib: CueLibrary) -> None:
    path = tmp_path / "cues.toml"
    path.write_text(OVERRIDE)
    merged = CueLibrary.load(path)
    ra = merged["RA-SAFE"]
    assert ra.text == "You are safe with us."
    assert (ra.label, ra.shortcut, ra.marker, ra.category) == ("You are safe", "F2", True,
                                                               "reassurance")
    assert [c.id for c in merged.categories()[4].cues][-1] == "IMG-GARDEN"
    assert merged.categories()[-1].name == "Our clinic"
    assert merged["CL-BELL"].phase == "peak" and merged["CL-BELL"].spoken_by == "therapist"
    assert merged.by_shortcut()["Ctrl+Alt+G"].id == "IMG-GARDEN"
    assert len(merged) == len(lib) + 2
    assert merged.sources[-1] == str(path)
    # the packaged library is untouched
    assert CueLibrary.defaults()["RA-SAFE"].text.startswith("You are safe here.")


def test_override_found_through_env_then_user_config(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert override_path() is None
    conf = tmp_path / "xdg" / "kapmonitor"
    conf.mkdir(parents=True)
    (conf / "cues.toml").write_text('[[cue]]\nid = "BR-SIGH"\nlabel = "Big sigh"\n')
    assert override_path() == conf / "cues.toml"
    assert CueLibrary.load()["BR-SIGH"].label == "Big sigh"

    env_file = tmp_path / "env.toml"
    env_file.write_text('[[cue]]\nid = "BR-SIGH"\nlabel = "Sigh (env)"\n')
    monkeypatch.setenv(CUES_ENV, str(env_file))
    assert CueLibrary.load()["BR-SIGH"].label == "Sigh (env)"

    arg_file = tmp_path / "arg.toml"
    arg_file.write_text('[[cue]]\nid = "BR-SIGH"\nlabel = "Sigh (arg)"\n')
    assert CueLibrary.load(arg_file)["BR-SIGH"].label == "Sigh (arg)"

    monkeypatch.setenv(CUES_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(CueLibraryError, match=r"missing\.toml .*does not exist"):
        CueLibrary.load()
    with pytest.raises(CueLibraryError, match="does not exist"):
        CueLibrary.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(("override", "reasons"), [
    ('[[cue]]\nid = "IMG-X"\ncategory = "imagery"\nlabel = "A"\n'
     '[[cue]]\nid = "IMG-X"\ncategory = "imagery"\nlabel = "B"\n',
     ["cue IMG-X: duplicate id"]),
    ('[[cue]]\nid = "IMG-SAFE"\nshortcut = "F2"\n',
     ["shortcut F2 is given to both IMG-SAFE and RA-SAFE"]),
    ('[[cue]]\nid = "EM-WATER"\nshortcut = "alt+t"\n',
     ["shortcut Alt+T is given to both EM-WATER and OBS-TEARFUL"]),
    ('[[cue]]\nid = "IMG-SAFE"\ncolour = "blue"\n',
     ["cue IMG-SAFE: unknown key(s) colour"]),
    ('[[cue]]\nid = "IMG-NEW"\ncategory = "imagery"\n', ["cue IMG-NEW: missing label"]),
    ('[[cue]]\nid = "IMG-NEW"\ncategory = "imagery"\nlabel = "  "\n',
     ["cue IMG-NEW: label is empty"]),
    ('[[cue]]\nid = "IMG-NEW"\ncategory = "garden"\nlabel = "X"\n',
     ["unknown category 'garden'"]),
    ('[[cue]]\nid = "OBS-NEW"\ncategory = "observation"\nlabel = "Yawning"\n'
     'spoken_by = "therapist"\n', ["an observation tag is not spoken"]),
    ('[[cue]]\nid = "img-lower"\ncategory = "imagery"\nlabel = "X"\n', ["upper case"]),
    ('[[cue]]\nid = "RA-SAFE"\nmarker = "yes"\n', ["marker must be true or false"]),
    ('[[cue]]\nid = "RA-SAFE"\nphase = "later"\n', ["unknown phase 'later'"]),
    ('[[cue]]\nid = "RA-SAFE"\nlabel = "' + "x" * 41 + '"\n', ["at most 40"]),
    ('[[cue]]\nid = "RA-SAFE"\nshortcut = "q"\n', ["needs Ctrl, Alt or Meta"]),
    ('[[cue]]\nid = "MUS-VOL"\nmusic_action = "louder"\n', ["music_action must be one of"]),
    ('[[cue]]\nlabel = "no id"\n', ["cue #1 has no id"]),
    ('[cues]\nid = "X"\n', ["unknown key(s) cues"]),
    ('schema = 2\n', ["schema 2 is not supported"]),
    ('[[cue]\n', ["not valid TOML"]),
    # several problems are all reported at once
    ('[[cue]]\nid = "IMG-NEW"\ncategory = "imagery"\n'
     '[[cue]]\nid = "BR-SIGH"\nshortcut = "F4"\n',
     ["cue IMG-NEW: missing label", "shortcut F4 is given to both BR-SLOW and BR-SIGH"]),
])
def test_bad_override_is_refused_with_reasons(tmp_path: Path, override: str,
                                              reasons: list[str]) -> None:
    path = tmp_path / "cues.toml"
    path.write_text(override)
    with pytest.raises(CueLibraryError) as info:
        CueLibrary.load(path)
    for reason in reasons:
        assert reason in str(info.value)


def test_a_complete_library_can_stand_alone() -> None:
    lib = CueLibrary.from_toml(
        '[[phase]]\nid = "any"\nnumber = 0\nname = "Any"\n'
        '[[category]]\nid = "tags"\nname = "Tags"\nphase = "any"\nkind = "observation"\n'
        '[[cue]]\nid = "OBS-CALM"\ncategory = "tags"\nlabel = "Calm"\nshortcut = "F2"\n')
    assert [c.id for c in lib.observation_tags()] == ["OBS-CALM"]
    assert lib["OBS-CALM"].spoken_by == ""
