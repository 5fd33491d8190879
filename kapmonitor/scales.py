"""Rating scales of the clinician panel and the Modified Aldrete discharge score
(clinical.md §7, §4.4).

The structure of each scale (items, per-item range, total range, who rates, licence) lives
in ``resources/scales.toml``; this module loads it, checks it for internal consistency,
and scores an assessment. Scoring is strict (CONVENTIONS 19): a missing, unknown, fractional
or out-of-range item score is refused with the item, the value and the allowed range, because
a silently clamped MOAA/S or Aldrete item would put a wrong number in the record and, for
Aldrete, a wrong discharge call on the screen.

Item text ships only where the licence allows it (§7: the generic NRS prompts, in the app's
own words); other scales carry numbers and paraphrased anchors only.

An :class:`Assessment` becomes an annotation (``kind="assessment"``, ``code`` = scale id,
``value`` = total, ``text`` = a compact summary with the item scores) through
:meth:`Assessment.annotation_fields`.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from types import MappingProxyType
from typing import Any

__all__ = [
    "Assessment",
    "Scale",
    "ScaleError",
    "ScaleItem",
    "Variant",
    "get_scale",
    "load_scales",
]

SCHEMA = 1
RESOURCE = "scales.toml"
RATERS = ("clinician", "nurse", "patient")
DIRECTIONS = ("higher-is-worse", "higher-is-better", "higher-is-more", "zero-is-best")
LICENCES = ("own-words", "free", "published", "permission-needed", "licence-needed")
TOTAL_RULES = ("sum", "mean", "domains")

_SCALE_KEYS = frozenset({
    "name", "short", "version", "measures", "rater", "when", "direction", "licence",
    "licence_unsure", "licence_note", "text_allowed", "prompt", "integer", "unit", "total",
    "total_min", "total_max", "total_only", "item_count", "item_min", "item_max", "items",
    "anchors", "domains", "variants", "default_variant"})
_ITEM_KEYS = frozenset({"key", "label", "min", "max", "anchors", "text"})
_VARIANT_KEYS = frozenset({"id", "name", "discharge_min_total", "discharge_require"})
_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class ScaleError(ValueError):
    """A scale file or a score was refused; the message says which item and why."""


def _fmt(x: float, signed: bool = False) -> str:
    """3.0 -> "3", 2.5 -> "2.5"; with ``signed`` a positive value shows its "+" (RASS)."""
    x = round(float(x), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    s = f"{x:g}"
    return f"+{s}" if signed and x > 0 else s


@dataclass(frozen=True, slots=True)
class ScaleItem:
    """One scored item. ``text`` is empty unless the scale's licence allows shipping it."""

    key: str
    label: str
    min: float
    max: float
    anchors: Mapping[float, str] = field(default_factory=dict)
    text: str = ""

    def anchor(self, value: float) -> str:
        return self.anchors.get(float(value), "")

    def range_text(self, signed: bool = False) -> str:
        return f"{_fmt(self.min, signed)} to {_fmt(self.max, signed)}"


@dataclass(frozen=True, slots=True)
class Variant:
    """A named variant of a scale with its discharge rule (§4.4: "Store the variant name
    with the score")."""

    id: str
    name: str
    discharge_min_total: float | None = None
    discharge_require: Mapping[str, float] = field(default_factory=dict)

    def criterion(self, scale: Scale) -> str:
        """``">= 9"`` or ``">= 8 with respiration 2 and SpO2 2"``."""
        if self.discharge_min_total is None:
            return ""
        out = f">= {_fmt(self.discharge_min_total)}"
        if self.discharge_require:
            reqs = [f"{scale.item(k).label} {_fmt(v)}" for k, v in self.discharge_require.items()]
            out += " with " + " and ".join(reqs)
        return out


@dataclass(frozen=True, slots=True)
class Scale:
    """The structure of one rating scale (clinical.md §7) or of the Aldrete score (§4.4)."""

    id: str
    name: str
    short: str
    version: str
    measures: str
    rater: str
    when: str
    direction: str
    licence: str
    licence_unsure: bool
    licence_note: str
    text_allowed: bool
    prompt: str
    integer: bool
    unit: str
    total_rule: str
    total_min: float
    total_max: float
    total_only: bool
    items: tuple[ScaleItem, ...]
    domains: tuple[tuple[str, ...], ...] = ()
    variants: tuple[Variant, ...] = ()
    default_variant: str | None = None

    # -- structure -------------------------------------------------------------------------

    @property
    def item_count(self) -> int:
        return len(self.items)

    @property
    def item_range(self) -> tuple[float, float] | None:
        """The per-item range when every item shares one, else None."""
        ranges = {(i.min, i.max) for i in self.items}
        return next(iter(ranges)) if len(ranges) == 1 else None

    @property
    def signed(self) -> bool:
        """Scores below zero exist (RASS), so positive ones are shown with "+"."""
        return self.total_min < 0

    @property
    def is_levels(self) -> bool:
        """A single rated level with an anchor for every value (MOAA/S, RASS): shown as
        "MOAA/S 4 (anchor)" rather than "4/5"."""
        if len(self.items) != 1 or not self.integer:
            return False
        it = self.items[0]
        return all(float(v) in it.anchors for v in range(int(it.min), int(it.max) + 1))

    @property
    def has_discharge_rule(self) -> bool:
        return any(v.discharge_min_total is not None for v in self.variants)

    def item(self, key: str) -> ScaleItem:
        k = key.strip().lower()
        for it in self.items:
            if it.key == k:
                return it
        raise ScaleError(f"{self.short}: unknown item {key!r} "
                         f"(items: {', '.join(i.key for i in self.items)})")

    def variant(self, variant_id: str | None = None) -> Variant | None:
        """The named variant, or the default one; None for a scale without variants."""
        if variant_id is None:
            variant_id = self.default_variant
            if variant_id is None:
                return None
        for v in self.variants:
            if v.id == variant_id:
                return v
        known = ", ".join(v.id for v in self.variants) or "none"
        raise ScaleError(f"{self.short}: unknown variant {variant_id!r} (variants: {known})")

    # -- scoring ---------------------------------------------------------------------------

    def _check(self, item: ScaleItem, value: object) -> float:
        where = self.short if len(self.items) == 1 else f"{self.short} {item.label}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScaleError(f"{where}: score must be a number, got {value!r}")
        v = float(value)
        allowed = f"allowed {item.range_text(self.signed)}"
        if not math.isfinite(v):
            raise ScaleError(f"{where}: {value!r} is not a score ({allowed})")
        if v < item.min or v > item.max:
            raise ScaleError(f"{where}: {_fmt(v, self.signed)} is out of range ({allowed})")
        if self.integer and v != int(v):
            raise ScaleError(f"{where}: {_fmt(v)} is not a whole number ({allowed}, in "
                             "steps of 1)")
        return v

    def score(self, item_scores: Mapping[str, float] | Sequence[float], *,
              variant: str | None = None) -> Assessment:
        """Score one assessment from every item: a mapping item key -> score (keys as in
        :attr:`items`, case-insensitive) or a sequence in item order. Every item is checked
        against its range; missing, unknown or out-of-range items are refused."""
        var = self.variant(variant)
        if isinstance(item_scores, Mapping):
            given = {str(k).strip().lower(): v for k, v in item_scores.items()}
            keys = [i.key for i in self.items]
            unknown = [k for k in given if k not in keys]
            if unknown:
                raise ScaleError(f"{self.short}: unknown item(s) {', '.join(unknown)} "
                                 f"(items: {', '.join(keys)})")
            missing = [k for k in keys if k not in given]
            if missing:
                raise ScaleError(f"{self.short}: missing score(s) for "
                                 f"{', '.join(missing)}; every item is needed")
            values = [given[k] for k in keys]
        else:
            if isinstance(item_scores, str | bytes):
                raise ScaleError(f"{self.short}: item scores must be numbers")
            values = list(item_scores)
            if len(values) != len(self.items):
                raise ScaleError(f"{self.short}: needs {len(self.items)} item score(s), "
                                 f"got {len(values)}")
        checked = tuple((it.key, self._check(it, v))
                        for it, v in zip(self.items, values, strict=True))
        total = self._total(dict(checked))
        return self._assessment(total, checked, var)

    def score_total(self, total: float, *, variant: str | None = None) -> Assessment:
        """Record a total without item scores, where the scale allows it (a licensed paper
        form scored elsewhere). A single-item scale's total is its item, fully checked."""
        if len(self.items) == 1:
            return self.score([total], variant=variant)
        if not self.total_only:
            raise ScaleError(
                f"{self.short} needs all {len(self.items)} item scores "
                f"({', '.join(i.key for i in self.items)}); a total alone is not accepted")
        var = self.variant(variant)
        if isinstance(total, bool) or not isinstance(total, int | float):
            raise ScaleError(f"{self.short}: total must be a number, got {total!r}")
        t = float(total)
        allowed = f"allowed {_fmt(self.total_min, self.signed)} to " \
                  f"{_fmt(self.total_max, self.signed)}"
        if not math.isfinite(t) or t < self.total_min or t > self.total_max:
            raise ScaleError(f"{self.short}: total {_fmt(t) if math.isfinite(t) else t} "
                             f"is out of range ({allowed})")
        if self.integer and self.total_rule != "mean" and t != int(t):
            raise ScaleError(f"{self.short}: total {_fmt(t)} is not a whole number "
                             f"({allowed})")
        return self._assessment(t, None, var)

    def _total(self, scores: Mapping[str, float]) -> float:
        if self.total_rule == "mean":
            return sum(scores.values()) / len(scores)
        if self.total_rule == "domains":
            return float(sum(max(scores[k] for k in d) for d in self.domains))
        return float(sum(scores.values()))

    def _assessment(self, total: float, items: tuple[tuple[str, float], ...] | None,
                    var: Variant | None) -> Assessment:
        meets: bool | None = None
        why = ""
        if var is not None and var.discharge_min_total is not None:
            failed = []
            if total < var.discharge_min_total:
                failed.append(f"total {_fmt(total)}")
            if var.discharge_require:
                if items is None:
                    failed.append("item scores not given")
                else:
                    got = dict(items)
                    failed += [f"{self.item(k).label} is {_fmt(got[k])}"
                               for k, want in var.discharge_require.items() if got[k] != want]
            meets = not failed
            why = ", ".join(failed)
        return Assessment(scale=self, total=total, item_scores=items, variant=var,
                          meets_discharge=meets, discharge_shortfall=why)


@dataclass(frozen=True, slots=True)
class Assessment:
    """A scored assessment; ``item_scores`` is None when only a total was recorded."""

    scale: Scale
    total: float
    item_scores: tuple[tuple[str, float], ...] | None
    variant: Variant | None = None
    meets_discharge: bool | None = None
    discharge_shortfall: str = ""

    def summary(self) -> str:
        """A compact line for the timeline and exports, e.g. ``"MOAA/S 4 (responds
        lethargically to name)"``, ``"Nausea NRS 3/10"``, ``"Aldrete 9/10: activity 2,
        respiration 2, circulation 1, consciousness 2, SpO2 2 — meets discharge (>= 9)"``."""
        s = self.scale
        total = _fmt(self.total, s.signed)
        if s.is_levels:
            out = f"{s.short} {total} ({s.items[0].anchor(self.total)})"
        elif len(s.items) == 1:
            anchor = s.items[0].anchor(self.total)
            out = f"{s.short} {total}/{_fmt(s.total_max)}" + (f" ({anchor})" if anchor else "")
        else:
            rule = " (mean)" if s.total_rule == "mean" else ""
            out = f"{s.short} {total}/{_fmt(s.total_max)}{rule}"
            if self.item_scores is None:
                out += " (total only)"
            elif not all(it.key.isdigit() for it in s.items):  # named items
                out += ": " + ", ".join(f"{s.item(k).label} {_fmt(v)}"
                                        for k, v in self.item_scores)
            else:
                out += "; items " + " ".join(_fmt(v) for _, v in self.item_scores)
        if self.meets_discharge is not None and self.variant is not None:
            crit = self.variant.criterion(s)
            if self.meets_discharge:
                out += f" — meets discharge ({crit})"
            else:
                out += f" — does not meet discharge ({crit}; {self.discharge_shortfall})"
        if self.variant is not None:
            out += f"; variant {self.variant.id}"
        return out

    def annotation_fields(self, note: str = "") -> dict[str, Any]:
        """Keyword arguments for ``Store.add_annotation`` (with the session id, author and
        time): kind "assessment", code = scale id, value = total, text = the summary with
        any free-text note after it."""
        note = note.strip()
        text = self.summary() + (f"; {note}" if note else "")
        return {"kind": "assessment", "code": self.scale.id, "value": float(self.total),
                "text": text}


# ------------------------------------------------------------------------------ loading


def _req(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise ScaleError(f"{where}: missing {key}")
    v = d[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(v, bool) and bool not in types:
        raise ScaleError(f"{where}: {key} must be a {types[0].__name__}, not true/false")
    if not isinstance(v, typ):
        raise ScaleError(f"{where}: {key} has the wrong type ({v!r})")
    return v


def _num(d: Mapping[str, Any], key: str, where: str) -> float:
    v = _req(d, key, (int, float), where)
    if not math.isfinite(v):
        raise ScaleError(f"{where}: {key} must be finite")
    return float(v)


def _anchors(raw: Any, lo: float, hi: float, where: str) -> dict[float, str]:
    if not isinstance(raw, Mapping):
        raise ScaleError(f"{where}: anchors must be a table of score = text")
    out: dict[float, str] = {}
    for k, text in raw.items():
        try:
            v = float(k)
        except ValueError:
            raise ScaleError(f"{where}: anchor key {k!r} is not a score") from None
        if not lo <= v <= hi:
            raise ScaleError(f"{where}: anchor {k} is outside the item range "
                             f"{_fmt(lo)} to {_fmt(hi)}")
        if not isinstance(text, str) or not text.strip():
            raise ScaleError(f"{where}: anchor {k} needs a short text")
        out[v] = text.strip()
    return dict(sorted(out.items(), reverse=True))


def _parse_scale(sid: str, d: Mapping[str, Any]) -> Scale:
    where = f"scale {sid}"
    if not _ID.match(sid):
        raise ScaleError(f"{where}: id must be lower case words joined by '-'")
    if not isinstance(d, Mapping):
        raise ScaleError(f"{where}: must be a table")
    unknown = set(d) - _SCALE_KEYS
    if unknown:
        raise ScaleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    text = {k: _req(d, k, str, where) for k in
            ("name", "short", "version", "measures", "rater", "when", "direction", "licence",
             "licence_note", "total")}
    flags = {k: _req(d, k, bool, where) for k in
             ("licence_unsure", "text_allowed", "integer", "total_only")}
    for key, allowed in (("rater", RATERS), ("direction", DIRECTIONS),
                         ("licence", LICENCES), ("total", TOTAL_RULES)):
        if text[key] not in allowed:
            raise ScaleError(f"{where}: {key} must be one of {', '.join(allowed)}, "
                             f"got {text[key]!r}")
    prompt = d.get("prompt", "")
    if not isinstance(prompt, str):
        raise ScaleError(f"{where}: prompt must be text")
    if flags["text_allowed"] and text["licence"] != "own-words":
        raise ScaleError(f"{where}: text_allowed needs licence own-words (§7: item text "
                         "ships only where the licence allows it)")
    if prompt and not flags["text_allowed"]:
        raise ScaleError(f"{where}: a prompt is item text, which this scale's licence "
                         f"({text['licence']}) does not allow shipping")

    items: list[ScaleItem] = []
    if "items" in d:
        if any(k in d for k in ("item_count", "item_min", "item_max", "anchors")):
            raise ScaleError(f"{where}: give either [[items]] or item_count/item_min/"
                             "item_max/anchors, not both")
        raw_items = d["items"]
        if not isinstance(raw_items, list) or not raw_items:
            raise ScaleError(f"{where}: items must be a non-empty list of tables")
        for n, it in enumerate(raw_items, 1):
            iw = f"{where} item {n}"
            if not isinstance(it, Mapping):
                raise ScaleError(f"{iw}: must be a table")
            unknown = set(it) - _ITEM_KEYS
            if unknown:
                raise ScaleError(f"{iw}: unknown key(s) {', '.join(sorted(unknown))}")
            key = _req(it, "key", str, iw)
            if not _ID.match(key):
                raise ScaleError(f"{iw}: key must be lower case words joined by '-'")
            lo, hi = _num(it, "min", iw), _num(it, "max", iw)
            items.append(ScaleItem(key, _req(it, "label", str, iw) or key, lo, hi,
                                   MappingProxyType(_anchors(it.get("anchors", {}), lo, hi,
                                                             iw)),
                                   it.get("text", "")))
    else:
        n = _req(d, "item_count", int, where)
        if n < 1:
            raise ScaleError(f"{where}: item_count must be at least 1")
        lo, hi = _num(d, "item_min", where), _num(d, "item_max", where)
        anchors = MappingProxyType(_anchors(d.get("anchors", {}), lo, hi, where))
        items = [ScaleItem(str(i), f"item {i}", lo, hi, anchors) for i in range(1, n + 1)]
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        raise ScaleError(f"{where}: duplicate item keys")
    for it in items:
        if it.min >= it.max:
            raise ScaleError(f"{where} item {it.key}: min must be below max")
        if flags["integer"] and (it.min != int(it.min) or it.max != int(it.max)):
            raise ScaleError(f"{where} item {it.key}: whole-number scale with a "
                             "fractional range")
        if it.text and not flags["text_allowed"]:
            raise ScaleError(f"{where} item {it.key}: item text is not allowed by this "
                             f"scale's licence ({text['licence']})")

    domains: tuple[tuple[str, ...], ...] = ()
    if text["total"] == "domains":
        raw_domains = d.get("domains")
        if not isinstance(raw_domains, list) or not raw_domains:
            raise ScaleError(f"{where}: total = domains needs a domains list")
        domains = tuple(tuple(str(k) for k in dom) for dom in raw_domains)
        flat = [k for dom in domains for k in dom]
        if sorted(flat) != sorted(keys) or len(flat) != len(set(flat)):
            raise ScaleError(f"{where}: domains must use every item exactly once")
    elif "domains" in d:
        raise ScaleError(f"{where}: domains only go with total = domains")

    # The declared total range must be what the items give: a typo in either is caught.
    if text["total"] == "sum":
        expect = (sum(i.min for i in items), sum(i.max for i in items))
    elif text["total"] == "mean":
        expect = (min(i.min for i in items), max(i.max for i in items))
    else:
        by_key = {i.key: i for i in items}
        expect = (sum(max(by_key[k].min for k in dom) for dom in domains),
                  sum(max(by_key[k].max for k in dom) for dom in domains))
    declared = (_num(d, "total_min", where), _num(d, "total_max", where))
    if declared != expect:
        raise ScaleError(f"{where}: declared total range {_fmt(declared[0])} to "
                         f"{_fmt(declared[1])} does not match the items "
                         f"({_fmt(expect[0])} to {_fmt(expect[1])})")

    variants: list[Variant] = []
    for n, v in enumerate(d.get("variants", []), 1):
        vw = f"{where} variant {n}"
        if not isinstance(v, Mapping):
            raise ScaleError(f"{vw}: must be a table")
        unknown = set(v) - _VARIANT_KEYS
        if unknown:
            raise ScaleError(f"{vw}: unknown key(s) {', '.join(sorted(unknown))}")
        vid = _req(v, "id", str, vw)
        min_total = _num(v, "discharge_min_total", vw) if "discharge_min_total" in v else None
        if min_total is not None and not declared[0] <= min_total <= declared[1]:
            raise ScaleError(f"{vw}: discharge_min_total outside the total range")
        require: dict[str, float] = {}
        for k, want in dict(v.get("discharge_require", {})).items():
            if k not in keys:
                raise ScaleError(f"{vw}: discharge_require names unknown item {k!r}")
            it = items[keys.index(k)]
            if isinstance(want, bool) or not isinstance(want, int | float) \
                    or not it.min <= want <= it.max:
                raise ScaleError(f"{vw}: discharge_require {k} = {want!r} is outside "
                                 f"{it.range_text()}")
            require[k] = float(want)
        variants.append(Variant(vid, _req(v, "name", str, vw), min_total,
                                MappingProxyType(require)))
    vids = [v.id for v in variants]
    if len(set(vids)) != len(vids):
        raise ScaleError(f"{where}: duplicate variant ids")
    default_variant = d.get("default_variant")
    if variants and default_variant not in vids:
        raise ScaleError(f"{where}: default_variant must name one of {', '.join(vids)}")
    if not variants and default_variant is not None:
        raise ScaleError(f"{where}: default_variant without variants")

    unit = d.get("unit", "")
    if not isinstance(unit, str):
        raise ScaleError(f"{where}: unit must be text")
    return Scale(
        id=sid, name=text["name"], short=text["short"], version=text["version"],
        measures=text["measures"], rater=text["rater"], when=text["when"],
        direction=text["direction"], licence=text["licence"],
        licence_unsure=flags["licence_unsure"], licence_note=text["licence_note"],
        text_allowed=flags["text_allowed"], prompt=prompt.strip(), integer=flags["integer"],
        unit=unit, total_rule=text["total"], total_min=declared[0], total_max=declared[1],
        total_only=flags["total_only"], items=tuple(items), domains=domains,
        variants=tuple(variants), default_variant=default_variant)


def load_scales(text: str | None = None) -> Mapping[str, Scale]:
    """Scale id -> :class:`Scale`, in file order, from ``text`` or the packaged
    ``resources/scales.toml`` (read and validated once). A bad file raises
    :class:`ScaleError` naming the scale and the key."""
    if text is None:
        return _packaged()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScaleError(f"scales file is not valid TOML: {exc}") from None
    unknown = set(doc) - {"schema", "scales"}
    if unknown:
        raise ScaleError(f"scales file: unknown key(s) {', '.join(sorted(unknown))}")
    if doc.get("schema", SCHEMA) != SCHEMA:
        raise ScaleError(f"scales file: schema {doc.get('schema')!r} is not supported "
                         f"(expected {SCHEMA})")
    scales = doc.get("scales")
    if not isinstance(scales, Mapping) or not scales:
        raise ScaleError("scales file: no [scales.ID] tables")
    return MappingProxyType({sid: _parse_scale(sid, d) for sid, d in scales.items()})


@functools.cache
def _packaged() -> Mapping[str, Scale]:
    return load_scales(files("kapmonitor.resources").joinpath(RESOURCE).read_text("utf-8"))


def get_scale(scale_id: str, scales: Mapping[str, Scale] | None = None) -> Scale:
    """A scale by id (case-insensitive), refused with the known ids otherwise."""
    scales = load_scales() if scales is None else scales
    s = scales.get(scale_id.strip().lower())
    if s is None:
        raise ScaleError(f"unknown scale {scale_id!r} (one of {', '.join(scales)})")
    return s
