"""The package installs as one ``kapmonitor`` namespace (DESIGN §1), its layers point one
way (CONVENTIONS 18), and the code is ruff-clean."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import REPO

MAPPED = {"kapmonitor": "kapmonitor", "drivers": "kapmonitor.drivers", "ui": "kapmonitor.ui",
          "resources": "kapmonitor.resources"}


def _modules() -> list[str]:
    out = []
    for folder, package in MAPPED.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "migrations" in parts:  # Alembic scripts run inside alembic, not imported
                continue
            out.append(".".join([package, *parts]))
    return out


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_under_kapmonitor(module: str) -> None:
    importlib.import_module(module)


def test_package_list_covers_every_folder() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            if "migrations" in rel.parts:
                continue
            found.add(".".join([package, *rel.parts]))
    assert found - listed == set(), "packages missing from pyproject.toml"
    assert listed - found == set(), "pyproject.toml lists packages that do not exist"


def test_no_generic_top_level_names_installed(tmp_path: Path) -> None:
    """Outside the source tree, only ``kapmonitor`` is importable: the install never puts
    ``drivers``, ``ui`` or ``resources`` on sys.path."""
    code = ("import importlib.util as u; "
            "print([n for n in ('drivers', 'ui', 'resources') if u.find_spec(n)]); "
            "import kapmonitor.drivers, kapmonitor.ui, kapmonitor.resources")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


def test_ruff_clean() -> None:
    r = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True,
                       check=False, timeout=120)
    assert r.returncode == 0, r.stdout
