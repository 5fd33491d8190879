"""Rules for moving a session between phases (issue 13 item 3), as data.

A phase change is a clinical statement in the record ("infusion ended at ...", "ready for
discharge"), so the ones that contradict what the room knows ask first: ending the infusion
while the pump reports delivery, declaring discharge readiness before the minimum
observation time or without a discharge assessment. The rules come from
``resources/discharge.toml`` (clinical.md §4.4); the session applies them
(``LiveSession.phase_checks``), the window asks, and what was confirmed or overridden is
written in the phase entry itself.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

__all__ = ["DischargeRules", "PhaseCheck"]


@dataclass(frozen=True, slots=True)
class DischargeRules:
    observation_min: Mapping[str, float]
    scale: str
    minimum: float

    def observation_for(self, route: str) -> float:
        """Minutes of observation after dosing ends for ``route`` (IV when unknown)."""
        for key, minutes in self.observation_min.items():
            if key.lower() == (route or "IV").lower():
                return minutes
        return self.observation_min.get("IV", 60.0)

    @classmethod
    @cache
    def defaults(cls) -> DischargeRules:
        doc = tomllib.loads((files("kapmonitor.resources") / "discharge.toml").read_text())
        obs = {str(k): float(v) for k, v in doc["observation_min"].items()}
        if not obs or any(not 0 <= v <= 24 * 60 for v in obs.values()):
            raise ValueError("discharge.toml: observation_min must be minutes in 0..1440")
        a = doc["assessment"]
        return cls(obs, str(a["scale"]), float(a["minimum"]))


@dataclass(frozen=True, slots=True)
class PhaseCheck:
    """Why a phase change needs a second look. ``needs_reason``: confirming is not enough,
    a clinician must say why (discharge readiness without an assessment)."""

    message: str
    needs_reason: bool = False
