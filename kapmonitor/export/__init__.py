"""Exports of a recorded session (DESIGN §1 ``export/``; issue 9).

Each format is one module with ``export_session(engine, session_id, out_path, **options)
-> ExportResult``; this registry names them and imports a module only when it is chosen,
so the optional libraries of one format (edfio for EDF, vitaldb for .vital: the ``export``
extra) are never needed by another. The PDF report lives with the GUI
(``kapmonitor.ui.report``), as it draws plots; the command line dispatches to it.

Every export says in its output when the session is still OPEN or was RECOVERED (and when
it is DEMO data), and returns the same sentences in ``ExportResult.warnings``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine

from .common import ExportError, ExportResult

__all__ = ["FORMATS", "ExportError", "ExportFormat", "ExportResult", "export_session"]


@dataclass(frozen=True, slots=True)
class ExportFormat:
    """A format: its module (imported when used), what it writes, and the package its
    writer needs beyond the core (None: the standard library only)."""

    name: str
    module: str
    description: str
    suffix: str
    requires: str | None = None

    def load(self) -> Any:
        if self.requires is not None and importlib.util.find_spec(self.requires) is None:
            raise ExportError(f"{self.name} export needs the {self.requires!r} package: "
                              "pip install 'kapmonitor[export]'")
        return importlib.import_module(self.module)


FORMATS: Mapping[str, ExportFormat] = MappingProxyType({f.name: f for f in (
    ExportFormat("csv", f"{__name__}.csv", "CSV tables (a folder, or a .zip)", ""),
    ExportFormat("fhir", f"{__name__}.fhir", "FHIR R4 Bundle (JSON)", ".json"),
    ExportFormat("edf", f"{__name__}.edf", "EDF+ waves, 1-Hz numerics and annotations",
                 ".edf", "edfio"),
    ExportFormat("vital", f"{__name__}.vital", "VitalDB .vital file", ".vital", "vitaldb"),
)})


def export_session(fmt: str, engine: Engine, session_id: int, out_path: str | Path,
                   **options: Any) -> ExportResult:
    """Export with the format named ``fmt``; unknown formats and options are refused."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ExportError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    module = spec.load()
    try:
        return module.export_session(engine, session_id, out_path, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ExportError(f"{fmt} export: {exc}") from None
        raise
