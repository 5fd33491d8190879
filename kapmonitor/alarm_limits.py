"""Alarm limits: the defaults as data, per-session overrides, and strict validation.

The numbers live in ``resources/alarm_limits.toml`` (clinical.md §4.2 limits, §4.3 "consider
hold" criteria, §5.3 delays and audio timing), not in code, so a clinic reviews one file and a
session records exactly what it ran with. A session builds its :class:`AlarmLimits` from the
defaults plus overrides (:meth:`AlarmLimits.with_overrides`); every value is checked and a bad
one is refused with a reason a nurse understands, never clamped (CONVENTIONS 19).

A threshold carries its comparison (``"< 92"``, ``">= 200"``) because the sources mix strict
and inclusive limits (§4.2: HR high priority "> 150" but SBP high priority "≥ 200") and the
alarm message shows the limit exactly as it was applied.
"""

from __future__ import annotations

import enum
import functools
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from types import MappingProxyType
from typing import Any

from .model import CHANNELS, Channel, ChannelKind

__all__ = [
    "AlarmLimits",
    "ApnoeaSettings",
    "ChannelLimits",
    "HoldCriteria",
    "LimitsError",
    "Priority",
    "TechnicalSettings",
    "Threshold",
    "TimingSettings",
    "parse_override_args",
]

SCHEMA = 1

#: §5.3: monitors allow a configurable physiological alarm delay of 0 to 15 s at most.
MAX_DELAY_S = 15.0


class LimitsError(ValueError):
    """An alarm setting was refused; the message says which and why."""


class Priority(enum.StrEnum):
    """IEC 60601-1-8 alarm priority (clinical.md §5.1). Stored as its string value;
    compare with :attr:`rank`."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, value: object, where: str) -> Priority:
        """A priority from its name, refused with the allowed names otherwise."""
        try:
            return cls(str(value).lower()) if isinstance(value, str) else cls(value)
        except ValueError:
            raise LimitsError(
                f"{where}: priority must be low, medium or high, got {value!r}"
            ) from None


_RANK = {Priority.LOW: 1, Priority.MEDIUM: 2, Priority.HIGH: 3}

_SYMBOL = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
_THRESHOLD_RE = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*$")
_FROM_SYMBOL = {"≤": "<=", "≥": ">="}


def _fmt(x: float) -> str:
    """A number as a nurse reads it: 92, not 92.0; 37.5 stays 37.5."""
    return f"{x:g}"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One limit with its comparison. ``op`` is one of ``< <= > >=``; a low-side limit
    uses ``<``/``<=``, a high-side limit ``>``/``>=``."""

    op: str
    value: float
    is_low: bool = field(init=False, repr=False, compare=False)
    strict: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in _SYMBOL:
            raise LimitsError(f"comparison must be one of < <= > >=, got {self.op!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise LimitsError(f"limit must be a number, got {self.value!r}")
        if not math.isfinite(self.value):
            raise LimitsError(f"limit must be a finite number, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "is_low", self.op.startswith("<"))
        object.__setattr__(self, "strict", len(self.op) == 1)

    def violated(self, v: float) -> bool:
        """True when ``v`` is beyond the limit (the alarm side)."""
        if self.is_low:
            return v < self.value if self.strict else v <= self.value
        return v > self.value if self.strict else v >= self.value

    def cleared(self, v: float, hysteresis: float) -> bool:
        """True when ``v`` is back inside the limit by at least ``hysteresis``: the value
        shifted ``hysteresis`` towards the alarm side would still not violate. With
        ``< 92`` and 1: cleared at 93 and above."""
        return not self.violated(v - hysteresis if self.is_low else v + hysteresis)

    def text(self) -> str:
        """``"< 88"``, ``"≥ 200"``: how the limit appears in alarm messages."""
        return f"{_SYMBOL[self.op]} {_fmt(self.value)}"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "value": self.value}

    @classmethod
    def parse(cls, spec: object, *, low_side: bool, where: str) -> Threshold:
        """From ``"< 92"``, ``{"op": "<", "value": 92}``, or a bare number (which takes the
        side's usual strict comparison: ``<`` for a low limit, ``>`` for a high one)."""
        if isinstance(spec, bool):
            raise LimitsError(f"{where} must be a limit such as '< 92', got {spec!r}")
        if isinstance(spec, int | float):
            op, value = ("<" if low_side else ">"), float(spec)
        elif isinstance(spec, str):
            m = _THRESHOLD_RE.match(spec)
            if not m:
                raise LimitsError(f"{where} must look like '< 92' or '>= 200', got {spec!r}")
            op = _FROM_SYMBOL.get(m.group(1), m.group(1))
            value = float(m.group(2))
        elif isinstance(spec, Mapping) and set(spec) == {"op", "value"}:
            op, value = str(spec["op"]), spec["value"]  # type: ignore[assignment]
        else:
            raise LimitsError(f"{where} must be a limit such as '< 92', got {spec!r}")
        try:
            th = cls(op, value)
        except LimitsError as exc:
            raise LimitsError(f"{where}: {exc}") from None
        if th.is_low != low_side:
            side = "below (< or <=)" if low_side else "above (> or >=)"
            raise LimitsError(f"{where} must alarm {side}, got {th.text()!r}")
        return th


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """The limits of one channel (clinical.md §4.2). ``low``/``high`` raise the condition at
    ``priority``; ``escalate_low``/``escalate_high`` make the same condition high priority.
    ``delay_s`` is the alarm condition delay (§5.3); ``hysteresis`` the clearing band in the
    channel's unit. A channel with ``superseded_by`` (pulse rate) is not evaluated while that
    channel (ECG heart rate) has a recent valid reading."""

    channel: Channel
    label: str
    low: Threshold | None = None
    high: Threshold | None = None
    escalate_low: Threshold | None = None
    escalate_high: Threshold | None = None
    priority: Priority = Priority.MEDIUM
    delay_s: float = 0.0
    hysteresis: float = 0.0
    superseded_by: Channel | None = None

    @property
    def unit(self) -> str:
        return CHANNELS[self.channel].display_unit

    def validate(self) -> None:
        """Refuse limits that cannot work as written, naming the channel and the fix."""
        name = self.label
        info = CHANNELS[self.channel]
        if info.kind is not ChannelKind.NUMERIC:
            raise LimitsError(f"{name}: alarm limits apply to numeric channels only")
        if self.low is None and self.high is None:
            raise LimitsError(f"{name}: needs a low or a high limit (or leave the channel out)")
        lo_p, hi_p = info.plausible
        for what, th in self._thresholds():
            if not lo_p <= th.value <= hi_p:
                raise LimitsError(
                    f"{name} {what} limit {_fmt(th.value)} {self.unit} is outside the "
                    f"measurable range {_fmt(lo_p)} to {_fmt(hi_p)}"
                )
        if self.escalate_low is not None:
            if self.low is None:
                raise LimitsError(f"{name}: a high-priority low limit needs a low limit")
            if not self.escalate_low.value < self.low.value:
                raise LimitsError(
                    f"{name} high-priority low limit {_fmt(self.escalate_low.value)} must be "
                    f"below the low limit {_fmt(self.low.value)}"
                )
        if self.escalate_high is not None:
            if self.high is None:
                raise LimitsError(f"{name}: a high-priority high limit needs a high limit")
            if not self.escalate_high.value > self.high.value:
                raise LimitsError(
                    f"{name} high-priority high limit {_fmt(self.escalate_high.value)} must "
                    f"be above the high limit {_fmt(self.high.value)}"
                )
        if (self.escalate_low or self.escalate_high) and self.priority is Priority.HIGH:
            raise LimitsError(
                f"{name}: priority is already high, so there is nothing to escalate to"
            )
        if not (0.0 <= self.delay_s <= MAX_DELAY_S):
            raise LimitsError(
                f"{name} alarm delay must be 0 to {_fmt(MAX_DELAY_S)} s, got "
                f"{_fmt(self.delay_s)} s"
            )
        if not (math.isfinite(self.hysteresis) and self.hysteresis >= 0):
            raise LimitsError(f"{name} hysteresis must be 0 or more, got {self.hysteresis!r}")
        if self.low is not None and self.high is not None:
            if not self.low.value < self.high.value:
                raise LimitsError(
                    f"{name} low limit {_fmt(self.low.value)} must be below the high limit "
                    f"{_fmt(self.high.value)}"
                )
            if 2 * self.hysteresis >= self.high.value - self.low.value:
                raise LimitsError(
                    f"{name} hysteresis {_fmt(self.hysteresis)} is too wide for limits "
                    f"{_fmt(self.low.value)} to {_fmt(self.high.value)}"
                )
        if self.superseded_by is not None and self.superseded_by is self.channel:
            raise LimitsError(f"{name} cannot be superseded by itself")

    def _thresholds(self) -> Iterable[tuple[str, Threshold]]:
        for what, th in (
            ("low", self.low),
            ("high", self.high),
            ("high-priority low", self.escalate_low),
            ("high-priority high", self.escalate_high),
        ):
            if th is not None:
                yield what, th

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "unit": self.unit}
        for key in ("low", "high", "escalate_low", "escalate_high"):
            th = getattr(self, key)
            d[key] = None if th is None else th.to_json()
        d["priority"] = str(self.priority)
        d["delay_s"] = self.delay_s
        d["hysteresis"] = self.hysteresis
        d["superseded_by"] = None if self.superseded_by is None else str(self.superseded_by)
        return d


@dataclass(frozen=True, slots=True)
class ApnoeaSettings:
    """Apnoea (clinical.md §4.2 "apnoea 20 s = high"; §5.3 no extra delay): no breath seen
    by one source (RR below ``rr_below``, or EtCO2 below ``etco2_below``) for ``seconds``."""

    enabled: bool = True
    seconds: float = 20.0
    priority: Priority = Priority.HIGH
    rr_below: float = 1.0
    etco2_below: float = 5.0

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled, "seconds": self.seconds, "priority": str(self.priority),
            "rr_below": self.rr_below, "etco2_below": self.etco2_below,
        }


@dataclass(frozen=True, slots=True)
class HoldCriteria:
    """The "consider hold" banner of clinical.md §4.3, raised as advisories."""

    enabled: bool = True
    sbp_at_or_above: float = 180.0
    dbp_at_or_above: float = 110.0
    consecutive_readings: int = 2
    sbp_severe_at_or_above: float = 200.0
    dbp_severe_at_or_above: float = 120.0
    spo2_below: float = 90.0
    spo2_for_more_than_s: float = 30.0
    hr_above: float = 130.0
    hr_below: float = 45.0
    hr_for_more_than_s: float = 60.0
    measurement_window_s: float = 30.0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TechnicalSettings:
    """Technical alarm settings: the engine's own stale watchdog and the priorities given
    to device-link and pump alarms (clinical.md §3.3, §5.3)."""

    stale_timeout_s: float = 15.0
    stale_priority: Priority = Priority.MEDIUM
    disconnected_priority: Priority = Priority.MEDIUM
    pump_priorities: Mapping[str, Priority] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "stale_timeout_s": self.stale_timeout_s,
            "stale_priority": str(self.stale_priority),
            "disconnected_priority": str(self.disconnected_priority),
            "pump_priorities": {k: str(v) for k, v in sorted(self.pump_priorities.items())},
        }


@dataclass(frozen=True, slots=True)
class TimingSettings:
    """Acknowledge reminder and audio pause timing (clinical.md §5.3)."""

    reminder_s: float = 180.0
    audio_pause_s: float = 120.0
    audio_pause_max_s: float = 180.0
    supersede_window_s: float = 10.0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- document schema

_CHANNEL_KEYS = frozenset({
    "label", "unit", "low", "high", "escalate_low", "escalate_high", "priority", "delay_s",
    "hysteresis", "superseded_by",
})
_THRESHOLD_KEYS = ("low", "high", "escalate_low", "escalate_high")
_SECTIONS: dict[str, frozenset[str]] = {
    "timing": frozenset(TimingSettings.__slots__),  # type: ignore[attr-defined]
    "apnoea": frozenset(ApnoeaSettings.__slots__),  # type: ignore[attr-defined]
    "consider_hold": frozenset(HoldCriteria.__slots__),  # type: ignore[attr-defined]
    "technical": frozenset(TechnicalSettings.__slots__),  # type: ignore[attr-defined]
}


def _number(value: object, where: str, lo: float, hi: float, unit: str = "") -> float:
    u = f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LimitsError(f"{where} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise LimitsError(f"{where} must be {_fmt(lo)} to {_fmt(hi)}{u}, got {_fmt(value)}{u}")
    return float(value)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise LimitsError(f"{where} must be true or false, got {value!r}")
    return value


def _check_keys(section: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise LimitsError(f"unknown alarm setting {where}.{unknown[0]}")


def _channel_from(name: object, where: str) -> Channel:
    try:
        ch = Channel(str(name))
    except ValueError:
        raise LimitsError(f"{where}: unknown channel {name!r}") from None
    return ch


def _parse_channel(name: str, spec: Mapping[str, Any]) -> ChannelLimits:
    where = f"channels.{name}"
    ch = _channel_from(name, where)
    if not isinstance(spec, Mapping):
        raise LimitsError(f"{where} must be a table of settings")
    _check_keys(spec, _CHANNEL_KEYS, where)
    label = spec.get("label", CHANNELS[ch].label)
    if not isinstance(label, str) or not label.strip():
        raise LimitsError(f"{where}.label must be a non-empty text")
    unit = spec.get("unit", CHANNELS[ch].display_unit)
    if unit != CHANNELS[ch].display_unit:
        raise LimitsError(
            f"{label} limits must be in {CHANNELS[ch].display_unit}, not {unit!r}"
        )
    ths: dict[str, Threshold | None] = {}
    for key in _THRESHOLD_KEYS:
        raw = spec.get(key)
        ths[key] = None if raw is None else Threshold.parse(
            raw, low_side=key.endswith("low"), where=f"{label} {key.replace('_', ' ')}"
        )
    sup = spec.get("superseded_by")
    limits = ChannelLimits(
        channel=ch,
        label=label,
        low=ths["low"],
        high=ths["high"],
        escalate_low=ths["escalate_low"],
        escalate_high=ths["escalate_high"],
        priority=Priority.parse(spec.get("priority", "medium"), f"{label} priority"),
        delay_s=_number(spec.get("delay_s", 0), f"{label} alarm delay", 0, MAX_DELAY_S, "s"),
        hysteresis=_number(spec.get("hysteresis", 0), f"{label} hysteresis", 0, math.inf),
        superseded_by=None if sup is None else _channel_from(sup, f"{where}.superseded_by"),
    )
    limits.validate()
    return limits


def _parse_timing(d: Mapping[str, Any]) -> TimingSettings:
    _check_keys(d, _SECTIONS["timing"], "timing")
    t = TimingSettings(
        reminder_s=_number(d.get("reminder_s", 180), "acknowledge reminder", 30, 600, "s"),
        audio_pause_s=_number(d.get("audio_pause_s", 120), "audio pause", 10, 600, "s"),
        audio_pause_max_s=_number(
            d.get("audio_pause_max_s", 180), "longest audio pause", 10, 600, "s"
        ),
        supersede_window_s=_number(
            d.get("supersede_window_s", 10), "pulse supersede window", 1, 120, "s"
        ),
    )
    if t.audio_pause_s > t.audio_pause_max_s:
        raise LimitsError(
            f"audio pause {_fmt(t.audio_pause_s)} s is longer than the longest allowed pause "
            f"{_fmt(t.audio_pause_max_s)} s"
        )
    return t


def _parse_apnoea(d: Mapping[str, Any]) -> ApnoeaSettings:
    _check_keys(d, _SECTIONS["apnoea"], "apnoea")
    return ApnoeaSettings(
        enabled=_bool(d.get("enabled", True), "apnoea.enabled"),
        seconds=_number(d.get("seconds", 20), "apnoea time", 5, 60, "s"),
        priority=Priority.parse(d.get("priority", "high"), "apnoea priority"),
        rr_below=_number(d.get("rr_below", 1), "apnoea RR threshold", 0, 8, "/min"),
        etco2_below=_number(d.get("etco2_below", 5), "apnoea EtCO2 threshold", 0, 25, "mmHg"),
    )


def _parse_hold(d: Mapping[str, Any]) -> HoldCriteria:
    _check_keys(d, _SECTIONS["consider_hold"], "consider_hold")
    n = d.get("consecutive_readings", 2)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 5:
        raise LimitsError(f"consider-hold consecutive readings must be 1 to 5, got {n!r}")
    h = HoldCriteria(
        enabled=_bool(d.get("enabled", True), "consider_hold.enabled"),
        sbp_at_or_above=_number(d.get("sbp_at_or_above", 180), "consider-hold SBP", 100, 300,
                                "mmHg"),
        dbp_at_or_above=_number(d.get("dbp_at_or_above", 110), "consider-hold DBP", 50, 200,
                                "mmHg"),
        consecutive_readings=n,
        sbp_severe_at_or_above=_number(d.get("sbp_severe_at_or_above", 200),
                                       "consider-hold severe SBP", 100, 300, "mmHg"),
        dbp_severe_at_or_above=_number(d.get("dbp_severe_at_or_above", 120),
                                       "consider-hold severe DBP", 50, 200, "mmHg"),
        spo2_below=_number(d.get("spo2_below", 90), "consider-hold SpO2", 50, 100, "%"),
        spo2_for_more_than_s=_number(d.get("spo2_for_more_than_s", 30),
                                     "consider-hold SpO2 time", 0, 600, "s"),
        hr_above=_number(d.get("hr_above", 130), "consider-hold HR high", 60, 250, "/min"),
        hr_below=_number(d.get("hr_below", 45), "consider-hold HR low", 20, 100, "/min"),
        hr_for_more_than_s=_number(d.get("hr_for_more_than_s", 60), "consider-hold HR time",
                                   0, 600, "s"),
        measurement_window_s=_number(d.get("measurement_window_s", 30),
                                     "NIBP measurement window", 1, 120, "s"),
    )
    if h.sbp_severe_at_or_above < h.sbp_at_or_above:
        raise LimitsError("consider-hold severe SBP must not be below the SBP criterion")
    if h.dbp_severe_at_or_above < h.dbp_at_or_above:
        raise LimitsError("consider-hold severe DBP must not be below the DBP criterion")
    if h.hr_below >= h.hr_above:
        raise LimitsError("consider-hold HR low criterion must be below the HR high criterion")
    return h


def _parse_technical(d: Mapping[str, Any]) -> TechnicalSettings:
    _check_keys(d, _SECTIONS["technical"], "technical")
    pp = d.get("pump_priorities", {})
    if not isinstance(pp, Mapping):
        raise LimitsError("technical.pump_priorities must be a table of code = priority")
    pumps: dict[str, Priority] = {}
    for code, pr in pp.items():
        if not re.fullmatch(r"[a-z0-9_]+", str(code)):
            raise LimitsError(f"pump alarm code {code!r} must be lower-case letters, digits, _")
        pumps[str(code)] = Priority.parse(pr, f"pump alarm {code}")
    return TechnicalSettings(
        stale_timeout_s=_number(d.get("stale_timeout_s", 15), "device stale timeout", 2, 600,
                                "s"),
        stale_priority=Priority.parse(d.get("stale_priority", "medium"), "stale priority"),
        disconnected_priority=Priority.parse(
            d.get("disconnected_priority", "medium"), "disconnected priority"
        ),
        pump_priorities=MappingProxyType(pumps),
    )


@dataclass(frozen=True)
class AlarmLimits:
    """Everything the alarm engine is configured with, validated. Build it with
    :meth:`defaults` and :meth:`with_overrides`; it is immutable, so a session can hand it
    to the engine and the recorder without copying."""

    channels: Mapping[Channel, ChannelLimits]
    apnoea: ApnoeaSettings = field(default_factory=ApnoeaSettings)
    hold: HoldCriteria = field(default_factory=HoldCriteria)
    technical: TechnicalSettings = field(default_factory=TechnicalSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    overridden: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", MappingProxyType(dict(self.channels)))
        for ch, lim in self.channels.items():
            if lim.channel is not ch:
                raise LimitsError(f"limits for {lim.label} filed under {ch}")
            if lim.superseded_by is not None and lim.superseded_by not in self.channels:
                raise LimitsError(
                    f"{lim.label} is superseded by {lim.superseded_by}, which has no limits"
                )

    # ------------------------------------------------------------ construction

    @classmethod
    def defaults(cls) -> AlarmLimits:
        """The installation defaults from ``resources/alarm_limits.toml`` (read once)."""
        return _load_defaults()

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> AlarmLimits:
        """From a whole document, in the TOML form or the :meth:`to_json` form."""
        if not isinstance(doc, Mapping):
            raise LimitsError("alarm settings must be a table")
        _check_keys(doc, {"schema", "channels", "overridden", *_SECTIONS}, "(top level)")
        schema = doc.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise LimitsError(f"alarm settings schema {schema!r} is not supported "
                              f"(expected {SCHEMA})")
        chans = doc.get("channels", {})
        if not isinstance(chans, Mapping) or not chans:
            raise LimitsError("alarm settings need at least one channel")
        channels = {}
        for name, spec in chans.items():
            lim = _parse_channel(str(name), spec)
            channels[lim.channel] = lim
        overridden = doc.get("overridden", ())
        return cls(
            channels=channels,
            apnoea=_parse_apnoea(doc.get("apnoea", {})),
            hold=_parse_hold(doc.get("consider_hold", {})),
            technical=_parse_technical(doc.get("technical", {})),
            timing=_parse_timing(doc.get("timing", {})),
            overridden=tuple(str(p) for p in overridden),
        )

    @classmethod
    def from_toml(cls, text: str) -> AlarmLimits:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LimitsError(f"alarm settings file is not valid TOML: {exc}") from None
        return cls.from_mapping(doc)

    def with_overrides(self, overrides: Mapping[str, Any]) -> AlarmLimits:
        """These limits with a session's changes applied, all re-validated.

        ``overrides`` is nested like the TOML (``{"channels": {"hr": {"high": 130}}}``) or
        flat with dotted keys (``{"hr.high": 130, "apnoea.seconds": 15}``; a leading channel
        name means ``channels.<name>``). A number keeps the limit's comparison, a string such
        as ``">= 130"`` sets both, ``None`` removes that limit. Unknown settings are refused.
        """
        doc = self.to_json()
        changed: list[str] = list(self.overridden)
        for path, value in _flatten(overrides):
            _apply(doc, path, value)
            dotted = ".".join(path)
            if dotted not in changed:
                changed.append(dotted)
        doc["overridden"] = changed
        return AlarmLimits.from_mapping(doc)

    # ------------------------------------------------------------ export

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable document that :meth:`from_mapping` reads back unchanged
        (stored with a session; shown by ``kapmonitor sessions --json``)."""
        return {
            "schema": SCHEMA,
            "channels": {str(ch): lim.to_json() for ch, lim in self.channels.items()},
            "apnoea": self.apnoea.to_json(),
            "consider_hold": self.hold.to_json(),
            "technical": self.technical.to_json(),
            "timing": self.timing.to_json(),
            "overridden": list(self.overridden),
        }


def _flatten(overrides: Mapping[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    if not isinstance(overrides, Mapping):
        raise LimitsError("alarm overrides must be a table of setting = value")
    out: list[tuple[tuple[str, ...], Any]] = []

    def walk(prefix: tuple[str, ...], m: Mapping[str, Any]) -> None:
        for k, v in m.items():
            path = (*prefix, *str(k).split("."))
            if isinstance(v, Mapping) and set(v) != {"op", "value"}:
                walk(path, v)
            else:
                out.append((path, v))

    walk((), overrides)
    expanded = []
    channel_names = {c.value for c in Channel}
    for path, v in out:
        if path and path[0] in channel_names:
            path = ("channels", *path)
        expanded.append((path, v))
    return expanded


def _apply(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    dotted = ".".join(path)
    if path[0] == "channels":
        if len(path) != 3:
            raise LimitsError(f"unknown alarm setting {dotted}")
        name, key = path[1], path[2]
        _channel_from(name, dotted)
        if key not in _CHANNEL_KEYS:
            raise LimitsError(f"unknown alarm setting {dotted}")
        chans = doc["channels"]
        spec = chans.setdefault(name, {})
        if key in _THRESHOLD_KEYS and isinstance(value, int | float) and not isinstance(
            value, bool
        ):
            old = spec.get(key)
            if isinstance(old, Mapping):  # keep the comparison, change the number
                value = {"op": old["op"], "value": value}
        spec[key] = value
        return
    if path[0] == "technical" and len(path) == 3 and path[1] == "pump_priorities":
        doc["technical"]["pump_priorities"][path[2]] = value
        return
    if len(path) != 2 or path[0] not in _SECTIONS or path[1] not in _SECTIONS[path[0]]:
        raise LimitsError(f"unknown alarm setting {dotted}")
    doc[path[0]][path[1]] = value


def parse_override_args(items: Iterable[str]) -> dict[str, Any]:
    """``["hr.high=130", "spo2.low=< 90", "map.high=off"]`` from a command line into a flat
    override mapping: numbers become numbers, ``off``/``none`` remove a limit, ``true``/
    ``false`` are booleans, anything else stays text (a limit such as ``"< 90"``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise LimitsError(f"alarm override must look like hr.high=130, got {item!r}")
        low = raw.lower()
        value: Any
        if low in ("off", "none"):
            value = None
        elif low in ("true", "false"):
            value = low == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key] = value
    return out


@functools.cache
def _load_defaults() -> AlarmLimits:
    text = files("kapmonitor.resources").joinpath("alarm_limits.toml").read_text("utf-8")
    return AlarmLimits.from_toml(text)
