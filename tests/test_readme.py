"""The README's promises that a test can hold: its Debian package line is the one `.ci/run`
installs, and its test command is the one `.ci/run` runs."""

from __future__ import annotations

import re

from .conftest import REPO


def test_readme_apt_line_is_what_ci_installs() -> None:
    readme = (REPO / "README.md").read_text()
    (line,) = re.findall(r"^sudo apt install (.+)$", readme, flags=re.M)
    ci = (REPO / ".ci" / "debian-packages").read_text().split()
    assert line.split() == ci


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && " \
              ".venv/bin/python -m pytest"
    assert command in readme
    assert (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command
