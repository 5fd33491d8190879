"""Layers are enforced, not hoped for (CONVENTIONS 18; DESIGN §1): ``ui -> kapmonitor <-
drivers``. import-linter cannot follow the package-dir mapping that puts drivers/ and ui/
under ``kapmonitor``, so the contracts are checked here on the source: every import
statement of every module, resolved to an absolute name, against the rules below."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

ROOTS = {"kapmonitor": "kapmonitor", "drivers": "kapmonitor.drivers", "ui": "kapmonitor.ui",
         "resources": "kapmonitor.resources"}
QT_AND_PLOTS = ("PySide6", "pyqtgraph", "shiboken6")
IO_AND_THREADS = ("serial", "socket", "threading", "time", "select", "os", "asyncio", "pty")


def _modules() -> Iterator[tuple[str, Path]]:
    for folder, package in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def _imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # `from kapmonitor import ui` imports kapmonitor.ui
                yield node.lineno, f"{name}.{alias.name}"


def _hits(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _core(module: str) -> bool:
    return module.startswith("kapmonitor") and not _hits(module, (
        "kapmonitor.drivers", "kapmonitor.ui", "kapmonitor.resources", "kapmonitor.cli"))


#: (who, rule text, predicate(importer, imported) -> True when forbidden)
RULES = [
    ("core", "the core imports no Qt, no pyqtgraph, no driver and no UI",
     lambda m, i: _core(m) and _hits(i, (*QT_AND_PLOTS, "kapmonitor.drivers", "kapmonitor.ui"))),
    ("drivers", "drivers import no UI, no Qt, and from the core only the model "
                "(the simulator may use the clinical models)",
     lambda m, i: _hits(m, ("kapmonitor.drivers",)) and (
         _hits(i, (*QT_AND_PLOTS, "kapmonitor.ui"))
         or (_core(i) and not _hits(i, ("kapmonitor.model",))
             and not (_hits(m, ("kapmonitor.drivers.sim",))
                      and _hits(i, ("kapmonitor.pk", "kapmonitor.dosing")))))),
    ("codecs", "codecs touch no port, thread, clock, transport, device or simulator",
     lambda m, i: _hits(m, ("kapmonitor.drivers.codecs",)) and _hits(i, (
         *IO_AND_THREADS, "kapmonitor.drivers.transport", "kapmonitor.drivers.devices",
         "kapmonitor.drivers.sim", "kapmonitor.drivers.protocol"))),
]


@pytest.mark.parametrize(("who", "rule", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_layer_contract(who: str, rule: str, forbidden) -> None:
    broken = [f"{path.relative_to(REPO)}:{line} imports {name}"
              for module, path in _modules()
              for line, name in _imports(module, path)
              if forbidden(module, name)]
    assert not broken, f"{rule}:\n" + "\n".join(broken)


def test_rules_catch_a_violation() -> None:
    """The checker itself must be able to fail."""
    core_rule, drivers_rule, codec_rule = (r[2] for r in RULES)
    assert core_rule("kapmonitor.alarms", "PySide6.QtWidgets")
    assert core_rule("kapmonitor.session", "kapmonitor.drivers.devices.intellivue")
    assert drivers_rule("kapmonitor.drivers.devices.nonin", "kapmonitor.store")
    assert not drivers_rule("kapmonitor.drivers.sim.patient", "kapmonitor.pk")
    assert codec_rule("kapmonitor.drivers.codecs.nonin", "serial")
    assert not codec_rule("kapmonitor.drivers.codecs.nonin", "kapmonitor.model")
