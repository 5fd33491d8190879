"""The guided-imagery cue library and observation tags (clinical.md §8.1, §8.2).

Cues are data, not code: ``resources/cues.toml`` holds every §8.2 id with its button label,
example text, who delivers it, the §8.1 phase it belongs to, whether it marks the vitals
timeline, and a default keyboard shortcut. §8.2 requires that "clinics can edit texts", so a
clinic file is merged over the packaged one by id (see :meth:`CueLibrary.load`). Because a
bad library would surface at the bedside as a missing button or a shortcut that fires the
wrong cue, every file is validated whole and refused with its reasons (CONVENTIONS 19),
never half-applied.

A cue used in a session becomes an annotation: ``kind`` ``"cue"`` or ``"observation"``,
``code`` the cue id, ``text`` its label (plus any free text), see
:meth:`Cue.annotation_fields`. The id is what the record keeps, so ids are never reused for
another meaning; labels and texts may change.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import platformdirs

__all__ = [
    "CUES_ENV",
    "Category",
    "Cue",
    "CueLibrary",
    "CueLibraryError",
    "Phase",
    "normalise_shortcut",
    "override_path",
]

SCHEMA = 1
#: Environment variable naming a clinic's cue file (merged over the packaged library).
CUES_ENV = "KAPMONITOR_CUES"
RESOURCE = "cues.toml"
KINDS = ("cue", "observation")
#: Who delivers a cue (§8.2 ``spoken_by``); observation tags are not spoken and take "".
SPOKEN_BY = ("therapist", "nurse", "clinician")
MUSIC_ACTIONS = ("start", "shift-calm", "shift-evocative", "return", "volume", "stop")
MAX_LABEL = 40

_TOP_KEYS = frozenset({"schema", "phase", "category", "cue"})
_PHASE_KEYS = frozenset({"id", "number", "name", "time"})
_CATEGORY_KEYS = frozenset({"id", "name", "phase", "kind"})
_CUE_KEYS = frozenset({"id", "category", "label", "text", "spoken_by", "marker", "phase",
                       "music_action", "shortcut"})
_CUE_ID = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*$")
_SLUG = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")

# Shortcuts: Qt's portable text form ("Alt+T", "Shift+F6"), normalised so that "alt+t" and
# "Alt+T" collide as they would on the keyboard.
_MODIFIERS = ("Ctrl", "Alt", "Shift", "Meta")
_FKEY = re.compile(r"^F([1-9]|1[0-9]|2[0-4])$")
#: Left to the window and the note field: Help, full screen, close window, text editing.
_RESERVED = {
    "F1": "F1 is kept for Help",
    "F11": "F11 is kept for full screen",
    "Alt+F4": "Alt+F4 closes the window",
    **{f"Ctrl+{k}": f"Ctrl+{k} is kept for editing the note text" for k in "ACVXYZ"},
    "Ctrl+Q": "Ctrl+Q is kept for quitting",
    "Ctrl+W": "Ctrl+W is kept for closing",
}


class CueLibraryError(ValueError):
    """A cue file was refused; the message lists every reason."""


@dataclass(frozen=True, slots=True)
class Phase:
    """A §8.1 session phase (``any`` for entries used throughout)."""

    id: str
    number: int
    name: str
    time: str


@dataclass(frozen=True, slots=True)
class Cue:
    """One button of the cues panel, or one observation tag (``kind == "observation"``).

    ``marker`` cues change the session state and are drawn on the vitals timeline (§8.2:
    RA-* during distress, MUS-*), so replay shows them next to BP and HR changes."""

    id: str
    category: str
    label: str
    text: str
    spoken_by: str
    kind: str
    marker: bool
    phase: str
    shortcut: str
    music_action: str = ""

    def annotation_fields(self, note: str = "") -> dict[str, Any]:
        """Keyword arguments for ``Store.add_annotation`` (with the session id): the label
        is written into the text so a record reads on its own, even after a clinic has
        relabelled the cue; free text (§8.2 "optional free text") follows it."""
        note = note.strip()
        return {"kind": self.kind, "code": self.id,
                "text": f"{self.label}: {note}" if note else self.label}


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: str
    phase: str
    kind: str
    cues: tuple[Cue, ...]


def normalise_shortcut(spec: str) -> str:
    """``"alt+t"`` -> ``"Alt+T"``; ``"shift+f6"`` -> ``"Shift+F6"``. Raises
    :class:`CueLibraryError` for a key that cannot work as a cue shortcut: a bare letter
    (it would steal typing from the note field), Shift + letter (a capital), an unknown
    key, or a key the window keeps for itself (F1, F11, Alt+F4, Ctrl editing keys)."""
    if not isinstance(spec, str) or not spec.strip():
        raise CueLibraryError(f"shortcut {spec!r} is empty")
    parts = [p.strip() for p in spec.split("+")]
    if any(not p for p in parts):
        raise CueLibraryError(f"shortcut {spec!r} is not like 'F5' or 'Alt+T'")
    *mods_raw, key_raw = parts
    mods: set[str] = set()
    canon = {m.lower(): m for m in _MODIFIERS} | {"control": "Ctrl", "option": "Alt",
                                                  "cmd": "Meta", "meta": "Meta"}
    for m in mods_raw:
        name = canon.get(m.lower())
        if name is None:
            raise CueLibraryError(f"shortcut {spec!r}: unknown modifier {m!r} "
                                  f"(use {', '.join(_MODIFIERS)})")
        if name in mods:
            raise CueLibraryError(f"shortcut {spec!r} repeats {name}")
        mods.add(name)
    key = key_raw.upper()
    if _FKEY.match(key):
        pass
    elif len(key) == 1 and (key.isascii() and key.isalnum()):
        if not mods & {"Ctrl", "Alt", "Meta"}:
            raise CueLibraryError(
                f"shortcut {spec!r} needs Ctrl, Alt or Meta: a plain or shifted letter "
                "or digit would be typed into the note field instead")
    else:
        raise CueLibraryError(f"shortcut {spec!r}: key {key_raw!r} is not F1-F24, "
                              "a letter or a digit")
    out = "+".join([m for m in _MODIFIERS if m in mods] + [key])
    if out in _RESERVED:
        raise CueLibraryError(f"shortcut {spec!r} is not available: {_RESERVED[out]}")
    return out


def override_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The clinic cue file to merge, if any: ``path``, else ``$KAPMONITOR_CUES``, else
    ``cues.toml`` in the user config directory when it exists. A file named explicitly
    (argument or environment) must exist: a typo must not silently give the defaults."""
    if path is not None and str(path) != "":
        p = Path(path)
        if not p.is_file():
            raise CueLibraryError(f"cue file {p} does not exist")
        return p
    env = os.environ.get(CUES_ENV, "")
    if env:
        p = Path(env)
        if not p.is_file():
            raise CueLibraryError(f"cue file {p} (from ${CUES_ENV}) does not exist")
        return p
    p = Path(platformdirs.user_config_dir("kapmonitor", appauthor=False)) / RESOURCE
    return p if p.is_file() else None


# ------------------------------------------------------------------------------ loading


class _Raw:
    """The merged, not yet validated content: ordered id -> fields for each section."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, dict[str, Any]] = {}
        self.cues: dict[str, dict[str, Any]] = {}
        self.sources: list[str] = []

    def copy(self) -> _Raw:
        new = _Raw()
        new.phases = copy.deepcopy(self.phases)
        new.categories = copy.deepcopy(self.categories)
        new.cues = copy.deepcopy(self.cues)
        new.sources = list(self.sources)
        return new


def _read_doc(text: str, source: str) -> dict[str, Any]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CueLibraryError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise CueLibraryError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(allowed: {', '.join(sorted(_TOP_KEYS))})")
    schema = doc.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise CueLibraryError(f"{source}: schema {schema!r} is not supported "
                              f"(expected {SCHEMA})")
    return doc


def _merge(raw: _Raw, doc: Mapping[str, Any], source: str, errors: list[str]) -> None:
    """Apply one document over ``raw``: known ids are updated key by key, new ids appended
    in file order. Problems are collected, not raised one by one, so a clinic sees them all."""
    sections = (("phase", raw.phases, _PHASE_KEYS), ("category", raw.categories,
                _CATEGORY_KEYS), ("cue", raw.cues, _CUE_KEYS))
    for name, target, allowed in sections:
        entries = doc.get(name, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            errors.append(f"{source}: '{name}' must be a list of tables ([[{name}]])")
            continue
        seen: set[str] = set()
        for i, entry in enumerate(entries, 1):
            eid = entry.get("id")
            if not isinstance(eid, str) or not eid:
                errors.append(f"{source}: {name} #{i} has no id")
                continue
            where = f"{source}: {name} {eid}"
            if eid in seen:
                errors.append(f"{where}: duplicate id (given twice in this file)")
                continue
            seen.add(eid)
            unknown = set(entry) - allowed
            if unknown:
                errors.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(allowed: {', '.join(sorted(allowed))})")
                continue
            target.setdefault(eid, {}).update(copy.deepcopy(entry))
    raw.sources.append(source)


def _str(d: Mapping[str, Any], key: str, where: str, errors: list[str],
         default: str | None = None) -> str:
    v = d.get(key, default)
    if v is None:
        errors.append(f"{where}: missing {key}")
        return ""
    if not isinstance(v, str):
        errors.append(f"{where}: {key} must be text, got {v!r}")
        return ""
    return v


def _build(raw: _Raw) -> CueLibrary:
    errors: list[str] = []
    phases: dict[str, Phase] = {}
    for pid, p in raw.phases.items():
        where = f"phase {pid}"
        if not _SLUG.match(pid):
            errors.append(f"{where}: id must be lower case words joined by '-'")
        number = p.get("number")
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            errors.append(f"{where}: number must be a whole number >= 0, got {number!r}")
            number = 0
        phases[pid] = Phase(pid, number, _str(p, "name", where, errors),
                            _str(p, "time", where, errors, ""))
    if not phases:
        errors.append("no phases defined")

    cats: dict[str, dict[str, Any]] = {}
    for cid, c in raw.categories.items():
        where = f"category {cid}"
        if not _SLUG.match(cid):
            errors.append(f"{where}: id must be lower case words joined by '-'")
        name = _str(c, "name", where, errors)
        phase = _str(c, "phase", where, errors)
        if phase and phase not in phases:
            errors.append(f"{where}: unknown phase {phase!r} "
                          f"(one of {', '.join(phases)})")
        kind = _str(c, "kind", where, errors, "cue")
        if kind not in KINDS:
            errors.append(f"{where}: kind must be cue or observation, got {kind!r}")
        cats[cid] = {"name": name, "phase": phase, "kind": kind, "cues": []}

    cues: dict[str, Cue] = {}
    shortcut_owner: dict[str, str] = {}
    for qid, q in raw.cues.items():
        where = f"cue {qid}"
        n_before = len(errors)
        if not _CUE_ID.match(qid):
            errors.append(f"{where}: id must be upper case words joined by '-', "
                          "like IMG-SAFE")
        category = _str(q, "category", where, errors)
        if category and category not in cats:
            errors.append(f"{where}: unknown category {category!r} "
                          f"(one of {', '.join(cats)})")
        cat = cats.get(category, {"phase": "", "kind": "cue", "cues": []})
        kind = cat["kind"]
        label = _str(q, "label", where, errors)
        if "label" in q and isinstance(label, str) and not label.strip():
            errors.append(f"{where}: label is empty")
        if len(label) > MAX_LABEL:
            errors.append(f"{where}: label is {len(label)} characters, at most "
                          f"{MAX_LABEL} fit on a button")
        text = _str(q, "text", where, errors, "")
        default_by = "" if kind == "observation" else "therapist"
        spoken_by = _str(q, "spoken_by", where, errors, default_by)
        if kind == "observation" and spoken_by:
            errors.append(f"{where}: an observation tag is not spoken; spoken_by must "
                          f"be empty, got {spoken_by!r}")
        elif kind == "cue" and spoken_by not in SPOKEN_BY:
            errors.append(f"{where}: spoken_by must be one of {', '.join(SPOKEN_BY)}, "
                          f"got {spoken_by!r}")
        marker = q.get("marker", False)
        if not isinstance(marker, bool):
            errors.append(f"{where}: marker must be true or false, got {marker!r}")
            marker = False
        phase = _str(q, "phase", where, errors, cat["phase"])
        if phase and phase not in phases:
            errors.append(f"{where}: unknown phase {phase!r} (one of {', '.join(phases)})")
        music = _str(q, "music_action", where, errors, "")
        if music and music not in MUSIC_ACTIONS:
            errors.append(f"{where}: music_action must be one of "
                          f"{', '.join(MUSIC_ACTIONS)}, got {music!r}")
        shortcut = _str(q, "shortcut", where, errors, "")
        if shortcut:
            try:
                shortcut = normalise_shortcut(shortcut)
            except CueLibraryError as exc:
                errors.append(f"{where}: {exc}")
                shortcut = ""
            else:
                other = shortcut_owner.get(shortcut)
                if other is not None:
                    errors.append(f"shortcut {shortcut} is given to both {other} and "
                                  f"{qid} (shortcuts must be unique)")
                else:
                    shortcut_owner[shortcut] = qid
        if len(errors) > n_before:
            continue
        cue = Cue(id=qid, category=category, label=label.strip(), text=text.strip(),
                  spoken_by=spoken_by, kind=kind, marker=marker, phase=phase,
                  shortcut=shortcut, music_action=music)
        cues[qid] = cue
        cat["cues"].append(cue)

    if errors:
        head = f"cue library refused ({' + '.join(raw.sources)})"
        raise CueLibraryError(head + ":\n  " + "\n  ".join(errors))
    categories = tuple(Category(cid, c["name"], c["phase"], c["kind"], tuple(c["cues"]))
                       for cid, c in cats.items())
    return CueLibrary(phases, categories, cues, tuple(raw.sources), raw)


class CueLibrary:
    """The validated cue library: categories in file order, cues by id and by shortcut.

    Build it with :meth:`load` (packaged defaults plus a clinic file), :meth:`defaults`,
    :meth:`from_toml` or :meth:`merged`; all refuse a bad file with :class:`CueLibraryError`.
    """

    def __init__(self, phases: Mapping[str, Phase], categories: tuple[Category, ...],
                 cues: Mapping[str, Cue], sources: tuple[str, ...], raw: _Raw) -> None:
        self._phases = dict(phases)
        self._categories = categories
        self._cues = dict(cues)
        self.sources = sources
        self._raw = raw

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str, source: str = "cues.toml") -> CueLibrary:
        """A complete library from one document."""
        return cls._from_docs([(text, source)])

    @classmethod
    def _from_docs(cls, docs: list[tuple[str, str]], base: _Raw | None = None) -> CueLibrary:
        raw = base.copy() if base is not None else _Raw()
        errors: list[str] = []
        for text, source in docs:
            _merge(raw, _read_doc(text, source), source, errors)
        if errors:
            raise CueLibraryError("cue library refused:\n  " + "\n  ".join(errors))
        return _build(raw)

    @classmethod
    def defaults(cls) -> CueLibrary:
        """The packaged library (``resources/cues.toml``), read once."""
        return _packaged()

    def merged(self, text: str, source: str = "override") -> CueLibrary:
        """This library with a clinic document merged over it by id, validated whole."""
        return self._from_docs([(text, source)], base=self._raw)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> CueLibrary:
        """The packaged library, with the clinic file of :func:`override_path` merged over
        it when there is one (``path``, else ``$KAPMONITOR_CUES``, else ``cues.toml`` in
        ``platformdirs.user_config_dir("kapmonitor")``)."""
        base = cls.defaults()
        p = override_path(path)
        if p is None:
            return base
        try:
            text = p.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CueLibraryError(f"cannot read cue file {p}: {exc}") from None
        return base.merged(text, str(p))

    # -- queries ---------------------------------------------------------------------------

    def categories(self) -> tuple[Category, ...]:
        """Categories in file order (packaged first, then a clinic's new ones), each with
        its cues in file order."""
        return self._categories

    def phases(self) -> tuple[Phase, ...]:
        return tuple(self._phases.values())

    def get(self, cue_id: str) -> Cue | None:
        """The cue with this id (case-insensitive), or None."""
        return self._cues.get(cue_id.strip().upper())

    def __getitem__(self, cue_id: str) -> Cue:
        cue = self.get(cue_id)
        if cue is None:
            raise KeyError(cue_id)
        return cue

    def __contains__(self, cue_id: object) -> bool:
        return isinstance(cue_id, str) and self.get(cue_id) is not None

    def __iter__(self) -> Iterator[Cue]:
        return iter(self._cues.values())

    def __len__(self) -> int:
        return len(self._cues)

    def by_shortcut(self) -> dict[str, Cue]:
        """Normalised shortcut (``"Alt+T"``) -> cue; look a key up with
        :func:`normalise_shortcut`."""
        return {c.shortcut: c for c in self._cues.values() if c.shortcut}

    def observation_tags(self) -> tuple[Cue, ...]:
        return tuple(c for c in self._cues.values() if c.kind == "observation")

    def markers(self) -> tuple[Cue, ...]:
        """Cues drawn as markers on the vitals timeline (§8.2)."""
        return tuple(c for c in self._cues.values() if c.marker)


@functools.cache
def _packaged() -> CueLibrary:
    text = files("kapmonitor.resources").joinpath(RESOURCE).read_text("utf-8")
    return CueLibrary.from_toml(text, f"kapmonitor.resources/{RESOURCE}")
