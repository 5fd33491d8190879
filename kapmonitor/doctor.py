"""What would stop this workstation, with the fix for each (``kapmonitor doctor``, DESIGN §5).

Why this exists: on a fresh Debian the README's first command installs cleanly and then dies
when Qt cannot load its X11 platform plugin, because the plugin needs system libraries
(``libxcb-cursor0``, ``libxcb-icccm4``, ...) that pip cannot install. Qt's own message names
the plugin, not the library, and not the package. Each check here answers one question in
plain words and, when something is wrong, gives the exact command that fixes it.

The checks in this module need no Qt (the core never imports Qt, DESIGN §1):

- ``python`` and ``pyside6``: the interpreter and the Qt binding's version, read from the
  installed metadata rather than by importing it;
- ``qt-libraries``: ``ldd`` on the Qt libraries and plugins the app loads (located with
  ``importlib.util.find_spec``, which does not load them), every "not found" library mapped
  to the Debian 12 package that provides it (:data:`SONAME_PACKAGES`);
- ``display``: whether there is a display to open a window on;
- ``serial``: every serial port, whether this user may open it, and the ``dialout`` group;
- ``database``: whether the database's folder is writable and has room. Nothing is created.

What only Qt can tell (the offscreen platform renders, the window's platform plugin loads,
an audio output exists) is asked of ``kapmonitor.ui.doctor_checks``, run as a separate
process: a platform plugin that cannot load aborts the process that tries, and the doctor
must outlive that to report it. :func:`run_probe` runs one such probe and the ``check_*``
functions below turn its answer into a line.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FAIL",
    "OK",
    "SONAME_PACKAGES",
    "WARN",
    "Check",
    "LibraryGroup",
    "Probe",
    "apt_install",
    "check_audio",
    "check_database",
    "check_display",
    "check_offscreen",
    "check_pyside",
    "check_python",
    "check_qt_libraries",
    "check_serial",
    "exit_code",
    "missing_from_ldd",
    "packages_for",
    "pyside_dir",
    "render_json",
    "render_text",
    "run_probe",
    "scan_libraries",
]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
_RANK = {OK: 0, WARN: 1, FAIL: 2}

#: Python the project supports (pyproject.toml ``requires-python``).
MIN_PYTHON = (3, 11)
#: Below this much free space next to the database, warn: a day of sessions with waves
#: runs to hundreds of MiB, and SQLite needs room for its write-ahead log on top.
LOW_DISK_BYTES = 1 << 30
#: ``ldd`` of one library takes milliseconds; this only guards a hung dynamic loader.
LDD_TIMEOUT_S = 30.0
#: A probe imports PySide6 and starts a Qt application: about a second. Connecting to a
#: sound server that does not answer can take much longer, hence the bound.
PROBE_TIMEOUT_S = 45.0

#: Library file name (soname) -> the Debian 12 (bookworm) package that provides it.
#: Built from ``ldd`` of every PySide6 library and plugin the app loads, and checked on a
#: bookworm machine: installed ones with ``/var/lib/dpkg/info/*.list``, the others by
#: listing the package file (``apt-get download P && dpkg -c P.deb``). tests/test_doctor.py
#: compares every installed entry with dpkg again. Ubuntu uses the same names.
SONAME_PACKAGES: dict[str, str] = {
    # the C and C++ runtimes (in every Debian install; listed so a report is complete)
    "libc.so.6": "libc6",
    "libm.so.6": "libc6",
    "libpthread.so.0": "libc6",
    "libdl.so.2": "libc6",
    "libresolv.so.2": "libc6",
    "libgcc_s.so.1": "libgcc-s1",
    "libstdc++.so.6": "libstdc++6",
    "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1",
    # QtCore, QtGui, QtDBus and the offscreen platform
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libpcre2-8.so.0": "libpcre2-8-0",
    "libdbus-1.so.3": "libdbus-1-3",
    "libsystemd.so.0": "libsystemd0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libOpenGL.so.0": "libopengl0",
    "libX11.so.6": "libx11-6",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libbsd.so.0": "libbsd0",
    "libmd.so.0": "libmd0",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libexpat.so.1": "libexpat1",
    "libpng16.so.16": "libpng16-16",
    "libbrotlidec.so.1": "libbrotli1",
    "libbrotlicommon.so.1": "libbrotli1",
    "libXrender.so.1": "libxrender1",
    "libdrm.so.2": "libdrm2",
    "libbz2.so.1": "libbz2-1.0",
    "liblzma.so.5": "liblzma5",
    "liblz4.so.1": "liblz4-1",
    "libcap.so.2": "libcap2",
    "libgcrypt.so.20": "libgcrypt20",
    "libgpg-error.so.0": "libgpg-error0",
    # QtPdf (the report read back) loads QtNetwork, which links Kerberos' GSS-API
    "libgssapi_krb5.so.2": "libgssapi-krb5-2",
    "libkrb5.so.3": "libkrb5-3",
    "libk5crypto.so.3": "libk5crypto3",
    "libkrb5support.so.0": "libkrb5support0",
    "libcom_err.so.2": "libcom-err2",
    "libkeyutils.so.1": "libkeyutils1",
    # the X11 (xcb) platform plugin and its GL integrations
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    # the Wayland platform plugin
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
    # QtMultimedia (alarm tones) and its FFmpeg backend
    "libpulse.so.0": "libpulse0",
    "libsndfile.so.1": "libsndfile1",
    "libasyncns.so.0": "libasyncns0",
    "libXext.so.6": "libxext6",
    "libXrandr.so.2": "libxrandr2",
}


@dataclass
class Check:
    """One answer: ``status`` OK, WARN (works, but something the clinic should know) or
    FAIL (this stops the workstation); ``summary`` and ``fix`` are one line each, in plain
    words; ``details`` carries what a script or a support request needs."""

    name: str
    status: str
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "fix": self.fix, "details": self.details}


@dataclass(frozen=True)
class LibraryGroup:
    """Qt files that serve one purpose, and how bad a library missing for them is."""

    name: str
    purpose: str
    severity: str
    patterns: tuple[str, ...]  # globs relative to the PySide6 package folder


#: What ``kapmonitor`` loads, by purpose. QtPdf reads a PDF report back; QtSvg, QtOpenGL
#: and QtTest come with pyqtgraph; the glx/egl integrations are loaded by the xcb plugin.
QT_BASE = LibraryGroup(
    "base", "every window and offscreen rendering (the tests, --screenshot)", FAIL, (
        "Qt/lib/libQt6Core.so.6", "Qt/lib/libQt6Gui.so.6", "Qt/lib/libQt6Widgets.so.6",
        "Qt/lib/libQt6Svg.so.6", "Qt/lib/libQt6OpenGL.so.6", "Qt/lib/libQt6OpenGLWidgets.so.6",
        "Qt/lib/libQt6Test.so.6", "Qt/lib/libQt6Pdf.so.6", "Qt/lib/libQt6DBus.so.6",
        "QtCore.*.so", "QtGui.*.so", "QtWidgets.*.so", "QtSvg.*.so", "QtPdf.*.so",
        "Qt/plugins/platforms/libqoffscreen.so", "Qt/plugins/imageformats/libqsvg.so",
        "Qt/plugins/iconengines/libqsvgicon.so"))
QT_X11 = LibraryGroup(
    "x11", "the window on an X11 desktop (the xcb platform plugin)", FAIL, (
        "Qt/plugins/platforms/libqxcb.so", "Qt/lib/libQt6XcbQpa.so.6",
        "Qt/plugins/xcbglintegrations/*.so"))
QT_WAYLAND = LibraryGroup(
    "wayland", "a native Wayland window (without it Qt uses X11 through XWayland)", WARN, (
        "Qt/plugins/platforms/libqwayland.so", "Qt/lib/libQt6WaylandClient.so.6",
        "Qt/plugins/wayland-graphics-integration-client/libqt-plugin-wayland-egl.so"))
QT_AUDIO = LibraryGroup(
    "audio", "alarm tones (QtMultimedia)", WARN, (
        "Qt/lib/libQt6Multimedia.so.6", "QtMultimedia.*.so",
        "Qt/plugins/multimedia/*.so"))

_LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$", re.MULTILINE)


# -- reporting --------------------------------------------------------------------------------

def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing FAILs (WARNs are for reading, not for stopping a script), else 1."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def render_text(checks: Sequence[Check]) -> str:
    """One line per check: status, name, what was found, and the fix when there is one.
    One line so that ``kapmonitor doctor | grep FAIL`` shows each problem with its fix."""
    lines = []
    for c in checks:
        line = f"{c.status:<4}  {c.name}: {c.summary}"
        if c.fix:
            line += f"  Fix: {c.fix}"
        lines.append(line)
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """The checks for machines, with every Debian package any check asks for gathered in
    ``packages`` (one ``apt install`` for a provisioning script)."""
    packages = sorted({p for c in checks for p in c.details.get("packages", ())})
    return json.dumps({"ok": exit_code(checks) == 0, "exit_code": exit_code(checks),
                       "packages": packages, "checks": [c.as_dict() for c in checks]},
                      indent=2)


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


# -- Debian packages for missing libraries ----------------------------------------------------

def missing_from_ldd(output: str) -> list[str]:
    """The libraries ``ldd`` could not find (its ``NAME => not found`` lines), sorted and
    without repeats (ldd names a library once per library that needs it)."""
    return sorted(set(_LDD_MISSING.findall(output)))


def packages_for(sonames: Iterable[str]) -> tuple[list[str], list[str]]:
    """(Debian packages that provide ``sonames``, sonames this table does not know)."""
    packages: set[str] = set()
    unknown: list[str] = []
    for name in sorted(set(sonames)):
        package = SONAME_PACKAGES.get(name)
        if package is None:
            unknown.append(name)
        else:
            packages.add(package)
    return sorted(packages), unknown


def apt_install(packages: Sequence[str], unknown: Sequence[str] = ()) -> str:
    """The command that installs ``packages`` (Debian names), and how to find the package
    of a library the table does not know."""
    parts = []
    if packages:
        parts.append("sudo apt install " + " ".join(packages))
        if not _debian_like():
            parts[-1] += " (Debian 12 names; install your distribution's equivalents)"
    if unknown:
        parts.append("install the packages that provide " + ", ".join(unknown)
                     + " (apt-file search NAME)")
    return "; ".join(parts)


def _debian_like() -> bool:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    ids = " ".join(re.findall(r"^(?:ID|ID_LIKE)=\"?([^\"\n]*)", text, re.MULTILINE))
    return "debian" in ids.split() or "ubuntu" in ids.split()


# -- Python and PySide6 ---------------------------------------------------------------------------

def check_python(version: tuple[int, int, int] | None = None) -> Check:
    """The interpreter: the project needs 3.11 or newer (pyproject.toml)."""
    v = version or sys.version_info[:3]
    text = ".".join(map(str, v))
    venv = sys.prefix != sys.base_prefix
    details = {"version": text, "executable": sys.executable, "virtualenv": venv}
    if tuple(v[:2]) < MIN_PYTHON:
        return Check("python", FAIL, f"Python {text} is older than 3.11, which KAP Monitor "
                     "needs", "sudo apt install python3 python3-venv (Debian 12 has 3.11), "
                     "then make the .venv again", details)
    where = " in a virtual environment" if venv else ""
    return Check("python", OK, f"Python {text}{where} ({sys.executable})", details=details)


def pyside_version() -> str | None:
    """The installed PySide6 version from its metadata (the wheel may be split into
    PySide6-Essentials and -Addons), without importing it."""
    for dist in ("PySide6", "PySide6-Essentials"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return None


def pyside_dir() -> Path | None:
    """The installed PySide6 package folder (its ``Qt/lib`` and ``Qt/plugins`` hold the
    Qt libraries), found without importing PySide6: importing would load QtCore, and the
    point is to find out whether it can be loaded."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def check_pyside(version: str | None, binding_error: str | None = None,
                 import_error: str | None = None) -> Check:
    """The Qt binding. ``binding_error`` is the refusal of importing ``kapmonitor.ui`` (a
    release known to crash a long-running window on this Python, ui/_qt_check.py);
    ``import_error`` is why that import failed otherwise."""
    details: dict[str, Any] = {"version": version, "python": sys.version.split()[0]}
    if version is None:
        return Check("pyside6", FAIL, "PySide6 is not installed in this Python",
                     f"{sys.executable} -m pip install -e . (from the repository)", details)
    if binding_error:
        details["error"] = binding_error
        return Check("pyside6", FAIL, f"PySide6 {version} is refused: {binding_error}",
                     f"{sys.executable} -m pip install 'PySide6!={version}'", details)
    if import_error:
        details["error"] = import_error
        return Check("pyside6", FAIL, f"PySide6 {version} does not import: {import_error}",
                     "install the packages the qt-libraries line names, or reinstall: "
                     f"{sys.executable} -m pip install --force-reinstall PySide6", details)
    return Check("pyside6", OK, f"PySide6 {version} on Python {details['python']}",
                 details=details)


# -- Qt libraries ----------------------------------------------------------------------------

LddRunner = Callable[[Path], str]


def run_ldd(path: Path) -> str:
    """``ldd PATH`` output in the C locale (the parser reads its English "not found")."""
    env = {**os.environ, "LC_ALL": "C"}
    result = subprocess.run(["ldd", str(path)], capture_output=True, text=True,
                            timeout=LDD_TIMEOUT_S, env=env, check=False)
    return result.stdout + result.stderr


def scan_libraries(root: Path, group: LibraryGroup,
                   ldd: LddRunner = run_ldd) -> dict[str, Any]:
    """``ldd`` every file of ``group`` under ``root`` (the PySide6 folder): the files
    scanned, the patterns that matched nothing, and each missing library with the files
    that need it."""
    scanned: list[str] = []
    absent: list[str] = []
    needed_by: dict[str, list[str]] = {}
    for pattern in group.patterns:
        files = sorted(root.glob(pattern))
        if not files:
            absent.append(pattern)
        for path in files:
            rel = path.relative_to(root).as_posix()
            scanned.append(rel)
            for soname in missing_from_ldd(ldd(path)):
                needed_by.setdefault(soname, []).append(rel)
    return {"scanned": scanned, "absent": absent, "missing": needed_by}


def check_qt_libraries(root: Path | None = None, *, env: Mapping[str, str] | None = None,
                       ldd: LddRunner = run_ldd, platform: str = sys.platform) -> Check:
    """Every system library the Qt files the app loads need, and for each one missing the
    package: FAIL for the base libraries and the X11 window, WARN for Wayland (only looked
    at in a Wayland session; Qt falls back to X11 there)."""
    if not platform.startswith("linux"):
        return Check("qt-libraries", OK, "not needed here: PySide6 carries Qt's libraries "
                     "on Windows and macOS", details={"platform": platform})
    root = root if root is not None else pyside_dir()
    if root is None:
        return Check("qt-libraries", FAIL, "PySide6 is not installed, so there is no Qt",
                     f"{sys.executable} -m pip install -e .")
    if shutil.which("ldd") is None and ldd is run_ldd:
        return Check("qt-libraries", WARN, "cannot check: the ldd program is missing",
                     "sudo apt install libc-bin")
    env = os.environ if env is None else env
    groups = [QT_BASE, QT_X11]
    if env.get("WAYLAND_DISPLAY"):
        groups.append(QT_WAYLAND)
    details: dict[str, Any] = {"pyside6": str(root), "groups": {}}
    statuses: list[str] = []
    parts: list[str] = []
    all_missing: set[str] = set()
    for group in groups:
        try:
            found = scan_libraries(root, group, ldd)
        except (OSError, subprocess.SubprocessError) as exc:
            return Check("qt-libraries", WARN, f"cannot run ldd: {exc}",
                         "run `ldd` on the files under " + str(root / "Qt") + " by hand")
        details["groups"][group.name] = found
        if found["missing"]:
            statuses.append(group.severity)
            names = sorted(found["missing"])
            all_missing.update(names)
            parts.append(f"{_plural(len(names), 'library')} missing for {group.purpose}: "
                         + ", ".join(names))
    if not parts:
        core = details["groups"]["base"]["absent"]
        if core:
            return Check("qt-libraries", WARN, "this PySide6 lacks " + ", ".join(core),
                         f"{sys.executable} -m pip install --force-reinstall PySide6",
                         details)
        count = sum(len(details["groups"][g.name]["scanned"]) for g in groups)
        return Check("qt-libraries", OK, f"every system library of the {count} Qt files "
                     "the app loads is installed", details=details)
    packages, unknown = packages_for(all_missing)
    details["packages"] = packages
    details["unknown"] = unknown
    return Check("qt-libraries", _worst(statuses), "; ".join(parts),
                 apt_install(packages, unknown), details)


# -- display and the Qt probes --------------------------------------------------------------------

@dataclass
class Probe:
    """What one ``kapmonitor.ui.doctor_checks`` process answered: its JSON (``data``), or
    ``error`` in one line when it gave none (crashed, aborted by Qt, timed out)."""

    data: dict[str, Any] | None
    error: str = ""
    stderr: str = ""


def run_probe(script: Path, name: str, *, env: Mapping[str, str | None] | None = None,
              timeout: float = PROBE_TIMEOUT_S) -> Probe:
    """Run ``python -P SCRIPT NAME`` with ``env`` changes (None removes a variable) and
    read the JSON object it prints last. ``-P`` keeps the script's folder off ``sys.path``
    (ui/ has modules with generic names). A probe runs apart because Qt aborts the whole
    process when a platform plugin cannot load."""
    full = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    try:
        result = subprocess.run([sys.executable, "-P", str(script), name],
                                capture_output=True, text=True, timeout=timeout, env=full,
                                check=False)
    except subprocess.TimeoutExpired:
        return Probe(None, f"no answer within {timeout:.0f} s")
    except OSError as exc:
        return Probe(None, f"could not start {sys.executable}: {exc.strerror or exc}")
    stderr = result.stderr.strip()
    for line in reversed(result.stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                return Probe(data, stderr=stderr)
    return Probe(None, _probe_failure(result.returncode, stderr), stderr)


def _probe_failure(code: int, stderr: str) -> str:
    """Qt's own most telling line from a failed probe ("could not connect to display",
    "Could not load the Qt platform plugin ..."), else the last line, else the exit."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    telling = [ln for ln in lines if re.search(
        r"could not connect|could not load|cannot open shared object|no qt platform plugin",
        ln, re.IGNORECASE)]
    if telling:
        return telling[0][:300]
    if lines:
        return lines[-1][:300]
    if code < 0:
        return f"the probe was stopped by signal {-code}"
    return f"the probe exited with status {code} and said nothing"


def check_display(env: Mapping[str, str], probe: Probe | None = None) -> Check:
    """Whether a window can open here: a display in the environment (``DISPLAY`` for X11,
    ``WAYLAND_DISPLAY`` for Wayland) and, when there is one, whether Qt's platform plugin
    loaded on it (``probe``, the ``platform`` probe)."""
    display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    forced = env.get("QT_QPA_PLATFORM", "")
    details: dict[str, Any] = {"DISPLAY": display or None, "WAYLAND_DISPLAY": wayland or None,
                               "QT_QPA_PLATFORM": forced or None}
    if forced.split(":")[0] in ("offscreen", "minimal"):
        return Check("display", WARN, f"QT_QPA_PLATFORM={forced} is set: windows are drawn "
                     "off screen and never shown", "unset QT_QPA_PLATFORM on the bedside "
                     "workstation (keep it for tests and --screenshot runs)", details)
    if not display and not wayland:
        return Check("display", WARN, "no display (neither DISPLAY nor WAYLAND_DISPLAY is "
                     "set): the window cannot open here", "run kapmonitor from the desktop "
                     "session (not over plain ssh), or render without one: "
                     "QT_QPA_PLATFORM=offscreen kapmonitor demo --screenshot out.png "
                     "--quit-after 600", details)
    where = ", ".join(x for x in (f"DISPLAY={display}" if display else "",
                                  f"WAYLAND_DISPLAY={wayland}" if wayland else "") if x)
    if probe is None:
        return Check("display", OK, f"{where} (not opened)", details=details)
    if probe.data is None:
        details["error"] = probe.error
        return Check("display", FAIL, f"{where} is set but Qt cannot open a window on it: "
                     f"{probe.error}", "install the packages the qt-libraries line names; "
                     "if none are missing, check that this user may use the display "
                     "(XAUTHORITY, xhost)", details)
    details.update(probe.data)
    return Check("display", OK, f"a window opens on {where} (Qt platform "
                 f"{probe.data.get('platform', '?')})", details=details)


def check_offscreen(probe: Probe) -> Check:
    """Whether Qt renders with ``QT_QPA_PLATFORM=offscreen`` and no display (the tests,
    ``--screenshot`` on a headless machine), with fonts to draw numbers in."""
    if probe.data is None:
        return Check("offscreen", FAIL, "Qt cannot render offscreen: " + probe.error,
                     "install the packages the qt-libraries line names",
                     {"error": probe.error})
    data = probe.data
    details = dict(data)
    if data.get("import_errors"):
        bad = "; ".join(f"{k}: {v}" for k, v in data["import_errors"].items())
        return Check("offscreen", FAIL, "Qt modules do not import: " + bad,
                     "install the packages the qt-libraries line names", details)
    if not data.get("rendered"):
        return Check("offscreen", FAIL, "Qt started offscreen but drew nothing",
                     "run with --debug and report it", details)
    if not data.get("fonts"):
        return Check("offscreen", WARN, "Qt renders offscreen but finds no fonts: numbers "
                     "would show as empty boxes", "sudo apt install fonts-dejavu-core",
                     details | {"packages": ["fonts-dejavu-core"]})
    return Check("offscreen", OK, f"QT_QPA_PLATFORM=offscreen renders without a display "
                 f"({_plural(int(data['fonts']), 'font family')})", details=details)


def check_audio(missing: Mapping[str, list[str]], probe: Probe | None,
                *, groups: Sequence[int] | None = None) -> Check:
    """Whether the alarm tones can sound: QtMultimedia's libraries (``missing``, from
    :func:`scan_libraries` on :data:`QT_AUDIO`) and an audio output device (``probe``).
    Never worse than WARN: KAP Monitor is a secondary display and the visual alarm goes on
    without sound (ui/sounds.py), but the clinic must know the tones are silent."""
    details: dict[str, Any] = {"missing": dict(missing)}
    if missing:
        packages, unknown = packages_for(missing)
        details |= {"packages": packages, "unknown": unknown}
        return Check("audio", WARN, "alarm tones are silent: QtMultimedia needs "
                     + ", ".join(sorted(missing)), apt_install(packages, unknown), details)
    if probe is None:
        return Check("audio", OK, "QtMultimedia's libraries are installed (device not "
                     "checked)", details=details)
    if probe.data is None or probe.data.get("import_error"):
        why = probe.error if probe.data is None else probe.data["import_error"]
        details["error"] = why
        return Check("audio", WARN, f"alarm tones are silent: QtMultimedia fails ({why})",
                     "sudo apt install libpulse0", details | {"packages": ["libpulse0"]})
    outputs = probe.data.get("outputs") or []
    details |= probe.data
    if not outputs:
        hint = _audio_group_hint(groups)
        return Check("audio", WARN, "alarm tones are silent: no audio output device (no "
                     "sound server is running, or no sound card)",
                     "sudo apt install pipewire-pulse (or pulseaudio), log in to the "
                     f"desktop session, and plug in speakers{hint}",
                     details | {"packages": ["pipewire-pulse"]})
    default = probe.data.get("default") or outputs[0]
    return Check("audio", OK, f"alarm tones play on {default!s} "
                 f"({_plural(len(outputs), 'audio output')})", details=details)


def _audio_group_hint(groups: Sequence[int] | None) -> str:
    """Outside a desktop login (a kiosk account, a service) the sound devices belong to
    the ``audio`` group; a desktop user gets them from the login session instead."""
    try:
        import grp
        gid = grp.getgrnam("audio").gr_gid
    except (ImportError, KeyError):
        return ""
    mine = os.getgroups() if groups is None else groups
    if os.geteuid() == 0 or gid in mine:
        return ""
    return ("; when it runs outside a desktop login, add the user to the audio group: "
            "sudo usermod -aG audio $USER, then log out and in")


# -- serial ports -----------------------------------------------------------------------------

@dataclass
class PortFinding:
    """One port: whether this user opened it for reading and writing, and if not why."""

    port: str
    description: str
    ok: bool
    reason: str = ""
    errno: int | None = None
    owner: str = ""  # "user:group mode", for a refusal that is about permissions
    group: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"port": self.port, "description": self.description, "ok": self.ok,
                "reason": self.reason, "errno": self.errno, "owner": self.owner}


def _owner(st: os.stat_result) -> tuple[str, str]:
    user, group = str(st.st_uid), str(st.st_gid)
    with contextlib.suppress(ImportError, KeyError):
        import pwd
        user = pwd.getpwuid(st.st_uid).pw_name
    with contextlib.suppress(ImportError, KeyError):
        import grp
        group = grp.getgrgid(st.st_gid).gr_name
    return f"{user}:{group} {stat.filemode(st.st_mode)}", group


def probe_port(port: str, description: str = "") -> PortFinding:
    """Try to open ``port`` for reading and writing, then close it at once. Nothing is
    written or read; opening a real serial port raises its DTR and RTS lines for that
    moment, as any terminal program's open does. Non-blocking, so a port waiting for
    carrier detect does not hang the doctor."""
    try:
        st = os.stat(port)
    except OSError as exc:
        return PortFinding(port, description, False, "does not exist" if exc.errno ==
                           errno.ENOENT else exc.strerror or str(exc), exc.errno)
    owner, group = _owner(st)
    flags = os.O_RDWR | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(port, flags)
    except OSError as exc:
        reasons = {
            errno.EACCES: f"no permission (the port is {owner})",
            errno.EPERM: f"no permission (the port is {owner})",
            errno.EBUSY: "in use: another program holds it exclusively",
            errno.EIO: "the device does not answer (unplugged, or a terminal nobody "
                       "opened the other side of)",
            errno.ENXIO: "no device behind it (unplugged?)",
            errno.ENODEV: "no device behind it (unplugged?)",
        }
        reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
        return PortFinding(port, description, False, reason, exc.errno, owner, group)
    os.close(fd)
    return PortFinding(port, description, True, owner=owner, group=group)


def _listed_ports() -> list[tuple[str, str]]:
    from serial.tools import list_ports

    return sorted((p.device, p.description or "") for p in list_ports.comports())


def _membership(name: str, groups: Sequence[int] | None) -> dict[str, Any] | None:
    """Whether this process has group ``name`` (what opening a port is checked against),
    and whether /etc/group lists the user in it (true but not yet in effect until the user
    logs out and in). None where groups do not apply (Windows) or the group is unknown."""
    try:
        import grp
        import pwd
    except ImportError:
        return None
    try:
        entry = grp.getgrnam(name)
    except KeyError:
        return None
    user = ""
    with contextlib.suppress(KeyError):
        user = pwd.getpwuid(os.geteuid()).pw_name
    mine = list(os.getgroups()) if groups is None else list(groups)
    active = entry.gr_gid in mine or os.getegid() == entry.gr_gid
    listed = active or user in entry.gr_mem
    return {"group": name, "user": user, "active": active, "listed": listed}


def _usermod(group: str, member: Mapping[str, Any] | None) -> str:
    if member is not None and member["listed"] and not member["active"]:
        return (f"you were added to the {group} group but this login predates it: log "
                "out and in (or reboot)")
    return f"sudo usermod -aG {group} $USER, then log out and in"


def check_serial(extra: Sequence[str] = (), *,
                 listed: Sequence[tuple[str, str]] | None = None,
                 groups: Sequence[int] | None = None,
                 is_root: bool | None = None) -> Check:
    """Every serial port pyserial lists (``listed``, default ``list_ports.comports()``) and
    every ``extra`` port named with ``--port``: may this user open it? A refusal for
    permission is a FAIL with the group fix; so is a port that does not answer. With no
    port at all, only the group is checked, so an adapter plugged in later works."""
    ports = list(listed if listed is not None else _listed_ports())
    seen = {p for p, _ in ports}
    ports += [(p, "named with --port") for p in extra if p not in seen]
    findings = [probe_port(p, d) for p, d in ports]
    if is_root is None:
        is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    root = is_root
    dialout = _membership("dialout", groups) if sys.platform.startswith("linux") else None
    details: dict[str, Any] = {"ports": [f.as_dict() for f in findings], "dialout": dialout,
                               "root": root}
    bad = [f for f in findings if not f.ok]
    if root:
        member = " (running as root)"
    elif dialout is None:
        member = ""
    else:
        member = (" (you are in the dialout group)" if dialout["active"]
                  else " (you are not in the dialout group)")
    if not findings:
        if dialout is not None and not dialout["active"] and not root:
            return Check("serial", WARN, "no serial ports found, and you are not in the "
                         "dialout group: a USB serial adapter plugged in later will refuse "
                         "you", _usermod("dialout", dialout), details)
        return Check("serial", OK, "no serial ports found (plug in the USB serial adapter; "
                     f"a network device server is reached as socket://HOST:PORT){member}",
                     details=details)
    said = ", ".join(f"{f.port} " + ("OK" if f.ok else f.reason) for f in findings)
    if not bad:
        return Check("serial", OK, f"{_plural(len(findings), 'port')}: {said}{member}",
                     details=details)
    fixes = []
    denied = [f for f in bad if f.errno in (errno.EACCES, errno.EPERM)]
    for group in sorted({f.group for f in denied}):
        if group in ("", "root"):
            fixes.append(f"{', '.join(f.port for f in denied if f.group == group)} "
                         "belong to root alone: add a udev rule giving them to the dialout "
                         "group (GROUP=\"dialout\", MODE=\"0660\")")
        else:
            member = dialout if group == "dialout" else _membership(group, groups)
            fixes.append(_usermod(group, member))
    if any(f.errno == errno.EBUSY for f in bad):
        fixes.append("close the other program that holds the port (another kapmonitor "
                     "record?)")
    if any(f.errno in (errno.EIO, errno.ENXIO, errno.ENODEV) for f in bad):
        fixes.append("unplug and replug the adapter, and check the cable")
    if any(f.errno == errno.ENOENT for f in bad):
        fixes.append("check the port name with `kapmonitor ports`")
    if not fixes:
        fixes.append("see the reason given for each port")
    return Check("serial", FAIL, f"{_plural(len(bad), 'port')} of {len(findings)} cannot "
                 f"be opened: {said}", "; ".join(fixes), details)


# -- database ---------------------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _readonly_fs(path: Path) -> bool:
    try:
        flags = os.statvfs(path).f_flag
    except (OSError, AttributeError):
        return False
    return bool(flags & getattr(os, "ST_RDONLY", 1))


def _mib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def check_database(value: str | None = None, *, low_disk: int = LOW_DISK_BYTES) -> Check:
    """The database ``--db`` names (else ``$KAPMONITOR_DB``, else the default file):
    may this user write it and its folder (SQLite writes a ``-wal`` and ``-shm`` file next
    to it), and is there room. Nothing is created: a folder that does not exist yet is
    judged by the nearest one that does, which is where the app would create it. A URL
    the app cannot read raises ``sqlalchemy.exc.ArgumentError`` (the caller's bad input)."""
    from sqlalchemy.exc import ArgumentError

    from kapmonitor.store.engine import DB_ENV, MEMORY_REFUSED, resolve_db_url, sqlite_file

    try:
        url = resolve_db_url(value)
        dialect = url.get_dialect()
    except ArgumentError as exc:  # includes an unknown dialect (NoSuchModuleError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        return Check("database", FAIL, f"{value or os.environ.get(DB_ENV)!r} is "
                     f"not a database URL this app can use ({first})",
                     "give --db (or KAPMONITOR_DB) a file path or a SQLAlchemy URL",
                     {"unusable_url": True})
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() != "sqlite":
        details = {"url": shown}
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            name = getattr(exc, "name", None) or str(exc)
            return Check("database", FAIL, f"{shown} needs the database driver {name!r}, "
                         "which is not installed", f"{sys.executable} -m pip install "
                         f"{name}", details)
        return Check("database", OK, f"a database server ({url.get_backend_name()}, "
                     f"{shown}): doctor does not connect to it; `kapmonitor sessions` "
                     "does", details=details)
    path = sqlite_file(url)
    if path is None:
        return Check("database", FAIL, MEMORY_REFUSED, "give --db a file path",
                     {"url": shown})
    details: dict[str, Any] = {"path": str(path), "exists": path.exists()}
    if path.exists() and not path.is_file():
        return Check("database", FAIL, f"{path} is not a file", "give --db a file path",
                     details)
    anchor = _nearest_existing(path.parent)
    details["folder"] = str(path.parent)
    details["checked_folder"] = str(anchor)
    if not anchor.is_dir():
        return Check("database", FAIL, f"{anchor} is a file, so the folder {path.parent} "
                     "cannot be made", "choose another --db", details)
    if _readonly_fs(anchor):
        return Check("database", FAIL, f"{anchor} is on a read-only disk",
                     "choose --db on a writable disk", details)
    writable = [p for p in (anchor, path, Path(f"{path}-wal"), Path(f"{path}-shm"))
                if p.exists()]
    denied = [p for p in writable if not os.access(p, os.W_OK | (os.X_OK if p.is_dir()
                                                                  else os.R_OK))]
    if denied:
        return Check("database", FAIL, "you may not write " + ", ".join(map(str, denied)),
                     f"sudo chown -R $USER {anchor}, or choose another --db", details)
    try:
        free = shutil.disk_usage(anchor).free
    except OSError as exc:
        free = None
        details["disk_error"] = exc.strerror or str(exc)
    details["free_bytes"] = free
    if path.exists():
        state = f"{path} ({_mib(path.stat().st_size)}) is writable"
    elif anchor == path.parent:
        state = f"{path} will be created on the first recording (its folder is writable)"
    else:
        state = (f"{path} will be created on the first recording, with its folder "
                 f"(under {anchor}, which is writable)")
    if free is not None and free < low_disk:
        return Check("database", WARN, f"{state}, but only {_mib(free)} is free there",
                     f"free some space on that disk, or choose --db on another (under "
                     f"{_mib(low_disk)} free a long session can fill it)", details)
    room = f"; {_mib(free)} free" if free is not None else ""
    return Check("database", OK, state + room, details=details)
