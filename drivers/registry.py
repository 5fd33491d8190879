"""Protocol names -> codec, host and peer classes, loaded lazily.

Names map to ``"module:Class"`` strings and a class is imported only when its protocol is
chosen, as python-can does for its interfaces (CONVENTIONS 5). Third parties add devices
through the entry-point group ``kapmonitor.devices``: an entry point's name is the protocol
name and its value refers to a ``ProtocolEntry``. The built-ins are declared in
pyproject.toml the same way; ``BUILTIN`` below is the same list, used when the package runs
from a source tree without installed metadata.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Literal

__all__ = ["BUILTIN", "ProtocolEntry", "UnknownProtocolError", "available", "get"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kapmonitor.devices"


class UnknownProtocolError(KeyError):
    def __str__(self) -> str:
        name = self.args[0]
        return f"unknown protocol {name!r}; known: {', '.join(available())}"


def _load(ref: str) -> type:
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class ProtocolEntry:
    """One registered wire protocol. ``document`` names the reference it implements."""

    name: str
    kind: Literal["monitor", "pump"]
    title: str
    codec: str
    host: str
    peer: str
    document: str

    def codec_class(self) -> type:
        return _load(self.codec)

    def host_class(self) -> type:
        return _load(self.host)

    def peer_class(self) -> type:
        return _load(self.peer)


_P = "kapmonitor.drivers"


def _builtin(name: str, kind: Literal["monitor", "pump"], title: str, module: str,
             stem: str, document: str) -> ProtocolEntry:
    return ProtocolEntry(
        name=name,
        kind=kind,
        title=title,
        codec=f"{_P}.codecs.{module}:{stem}Codec",
        host=f"{_P}.devices.{module}:{stem}Host",
        peer=f"{_P}.sim.peers.{module}:{stem}Peer",
        document=document,
    )


INTELLIVUE = _builtin("intellivue", "monitor", "Philips IntelliVue Data Export (MIB/RS232)",
                      "intellivue", "Intellivue", "philips-intellivue-mib.md")
GE_S5 = _builtin("ge-s5", "monitor", "GE Datex-Ohmeda S/5 computer interface",
                 "ge_s5", "GeS5", "ge-datex-s5.md")
MASIMO = _builtin("masimo", "monitor", "Masimo serial ASCII output",
                  "masimo", "Masimo", "masimo-ascii.md")
NONIN = _builtin("nonin", "monitor", "Nonin OEM III (data formats 2 and 7)",
                 "nonin", "Nonin", "nonin-oem.md")
BBRAUN = _builtin("bbraun-bcc", "pump", "B. Braun Space BCC (SpaceCom)",
                  "bbraun", "BBraun", "bbraun-bcc.md")
FRESENIUS = _builtin("fresenius", "pump", "Fresenius Kabi Base Primea / Agilia",
                     "fresenius", "Fresenius", "fresenius-base-primea.md")
ALARIS = _builtin("alaris", "pump", "BD Alaris GH/CC (Asena)",
                  "alaris", "Alaris", "alaris-asena.md")
NE1000 = _builtin("ne1000", "pump", "New Era NE-1000 family (research pump)",
                  "newera", "NewEra", "newera-ne1000.md")

BUILTIN: tuple[ProtocolEntry, ...] = (
    INTELLIVUE, GE_S5, MASIMO, NONIN, BBRAUN, FRESENIUS, ALARIS, NE1000,
)


@cache
def _entries() -> dict[str, ProtocolEntry]:
    found = {e.name: e for e in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and ep.value.startswith(f"{_P}.registry:"):
            continue  # a built-in declared in pyproject.toml: already known
        try:
            entry = ep.load()
        except Exception:  # a broken plugin must not take the app down
            log.exception("could not load device plugin %r (%s)", ep.name, ep.value)
            continue
        if not isinstance(entry, ProtocolEntry):
            log.error("device plugin %r does not refer to a ProtocolEntry", ep.name)
            continue
        found[ep.name] = entry
    return found


def available(kind: str | None = None) -> list[str]:
    """Registered protocol names, sorted; optionally only monitors or pumps."""
    return sorted(n for n, e in _entries().items() if kind is None or e.kind == kind)


def get(name: str) -> ProtocolEntry:
    try:
        return _entries()[name]
    except KeyError:
        raise UnknownProtocolError(name) from None
