"""``kapmonitor doctor`` (issue 13, item 11): one line per check with its fix, exit 1 on a
FAIL, and checks that never change the machine they look at.

The command runs as a user would (a subprocess). The parts whose input cannot be arranged on
a test machine are fed directly: ``ldd`` output captured on a fresh Debian 12, a serial port
the kernel refuses to open (a pty whose other side is still locked, refused even to root),
a permission refusal for the ``dialout`` group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kapmonitor import doctor
from kapmonitor.doctor import FAIL, OK, WARN, Check, Probe

from .conftest import REPO, run_cli

NAMES = ["python", "pyside6", "qt-libraries", "display", "offscreen", "audio", "serial",
         "database"]

#: ``ldd .../PySide6/Qt/plugins/platforms/libqxcb.so`` on a fresh Debian 12 with only
#: python3-venv installed on top of the desktop's libraries (trimmed: the found libraries
#: after libxcb-util are left out). Each missing library is listed twice because
#: libQt6XcbQpa, which the plugin loads, needs it too.
LDD_FRESH_BOOKWORM = """\
\tlinux-vdso.so.1 (0x00007f9c8fe1a000)
\tlibQt6XcbQpa.so.6 => /opt/v/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f9c8fd4c000)
\tlibQt6Gui.so.6 => /opt/v/PySide6/Qt/plugins/platforms/../../lib/libQt6Gui.so.6 (0x00007f9c8f200000)
\tlibGL.so.1 => /lib/x86_64-linux-gnu/libGL.so.1 (0x00007f9c8f179000)
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f9c8fd36000)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-util.so.1 => /lib/x86_64-linux-gnu/libxcb-util.so.1 (0x00007f9c8fd27000)
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007f9c8fe1c000)
"""  # noqa: E501


def _doctor(*args: str, tmp_path: Path) -> tuple[int, str, str]:
    r = run_cli("doctor", "--db", str(tmp_path / "db" / "kap.sqlite"), *args)
    return r.returncode, r.stdout, r.stderr


# -- the command -------------------------------------------------------------------------------

def test_doctor_json_structure_and_no_missing_qt_library(tmp_path: Path) -> None:
    code, out, err = _doctor("--json", tmp_path=tmp_path)
    assert code in (0, 1), err
    report = json.loads(out)
    assert set(report) == {"ok", "exit_code", "packages", "checks"}
    assert [c["name"] for c in report["checks"]] == NAMES
    for c in report["checks"]:
        assert set(c) == {"name", "status", "summary", "fix", "details"}
        assert c["status"] in (OK, WARN, FAIL)
        assert c["summary"] and "\n" not in c["summary"] and "\n" not in c["fix"]
        assert c["status"] == OK or c["fix"], f"{c['name']} says what is wrong, not the fix"
    failed = [c["name"] for c in report["checks"] if c["status"] == FAIL]
    assert report["exit_code"] == code == (1 if failed else 0)
    assert report["ok"] is (code == 0)

    checks = {c["name"]: c for c in report["checks"]}
    if not sys.platform.startswith("linux"):
        return
    qt = checks["qt-libraries"]
    # the base and X11 groups (Wayland's is looked at, as a WARN, only in a Wayland session)
    missing = {name: group["missing"] for name, group in qt["details"]["groups"].items()
               if group["missing"] and name in ("base", "x11")}
    assert not missing, (f"this machine lacks libraries Qt needs: {missing}; "
                         f"{qt['fix']} (docs/system-packages.md)")
    assert qt["status"] in (OK, WARN)
    assert "Qt/plugins/platforms/libqxcb.so" in qt["details"]["groups"]["x11"]["scanned"]
    assert "Qt/lib/libQt6XcbQpa.so.6" in qt["details"]["groups"]["x11"]["scanned"]
    # the suite itself renders offscreen, so this must work wherever it runs
    assert checks["offscreen"]["status"] in (OK, WARN), checks["offscreen"]
    assert checks["offscreen"]["details"]["platform"] == "offscreen"
    assert checks["display"]["details"]["QT_QPA_PLATFORM"] == "offscreen"  # conftest sets it
    assert not (tmp_path / "db").exists(), "doctor created the database folder"


def test_text_is_one_line_per_check_with_its_fix(tmp_path: Path) -> None:
    code, out, err = _doctor(tmp_path=tmp_path)
    assert err == ""
    lines = out.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == NAMES
    for line in lines:
        status = line.split()[0]
        assert status in (OK, WARN, FAIL)
        assert (status == OK) or "  Fix: " in line
    assert code == (1 if any(line.startswith(FAIL) for line in lines) else 0)


def test_an_unusable_db_url_is_bad_input(tmp_path: Path) -> None:
    r = run_cli("doctor", "--db", "nosuchdialect://x")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "not a database URL" in r.stderr


# -- Qt libraries ------------------------------------------------------------------------------

def test_ldd_not_found_lines_give_the_apt_packages(tmp_path: Path) -> None:
    assert doctor.missing_from_ldd(LDD_FRESH_BOOKWORM) == [
        "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    packages, unknown = doctor.packages_for(doctor.missing_from_ldd(LDD_FRESH_BOOKWORM))
    assert packages == ["libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"]
    assert unknown == []

    # the whole check on a fake PySide6 folder: only the xcb plugin lacks libraries
    for pattern in (*doctor.QT_BASE.patterns, *doctor.QT_X11.patterns):
        path = tmp_path / pattern.replace("*", "abi3")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def fake_ldd(path: Path) -> str:
        return LDD_FRESH_BOOKWORM if "xcb" in path.name.lower() else "\tlibc.so.6 => /x\n"

    check = doctor.check_qt_libraries(tmp_path, env={}, ldd=fake_ldd, platform="linux")
    assert check.status == FAIL
    assert "for the window on an X11 desktop" in check.summary
    assert check.fix.startswith(
        "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1")
    assert check.details["packages"] == ["libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"]
    needed_by = check.details["groups"]["x11"]["missing"]["libxcb-icccm.so.4"]
    assert "Qt/plugins/platforms/libqxcb.so" in needed_by
    assert check.details["groups"]["base"]["missing"] == {}


def test_a_library_the_table_does_not_know_is_named_with_how_to_find_it() -> None:
    packages, unknown = doctor.packages_for(["libpulse.so.0", "libnew-thing.so.7"])
    assert packages == ["libpulse0"]
    assert unknown == ["libnew-thing.so.7"]
    fix = doctor.apt_install(packages, unknown)
    assert "sudo apt install libpulse0" in fix
    assert "libnew-thing.so.7 (apt-file search NAME)" in fix


def test_wayland_libraries_only_warn_and_only_in_a_wayland_session(tmp_path: Path) -> None:
    for pattern in (*doctor.QT_BASE.patterns, *doctor.QT_X11.patterns,
                    *doctor.QT_WAYLAND.patterns):
        path = tmp_path / pattern.replace("*", "abi3")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def fake_ldd(path: Path) -> str:
        inside = path.relative_to(tmp_path).as_posix().lower()
        return "\tlibwayland-cursor.so.0 => not found\n" if "wayland" in inside else ""

    x11 = doctor.check_qt_libraries(tmp_path, env={"DISPLAY": ":0"}, ldd=fake_ldd,
                                    platform="linux")
    assert x11.status == OK
    wayland = doctor.check_qt_libraries(tmp_path, env={"WAYLAND_DISPLAY": "wayland-0"},
                                        ldd=fake_ldd, platform="linux")
    assert wayland.status == WARN
    assert wayland.details["packages"] == ["libwayland-cursor0"]


def _dpkg_owners() -> dict[str, set[str]]:
    owners: dict[str, set[str]] = {}
    for listing in glob.glob("/var/lib/dpkg/info/*.list"):
        package = Path(listing).name[:-len(".list")].split(":")[0]
        with open(listing, errors="replace") as f:
            for line in f:
                owners.setdefault(os.path.basename(line.strip()), set()).add(package)
    return owners


@pytest.mark.skipif(not Path("/var/lib/dpkg/info").is_dir(), reason="not a Debian system")
def test_package_table_agrees_with_dpkg_for_every_installed_library() -> None:
    owners = _dpkg_owners()
    installed = {so: pkg for so, pkg in doctor.SONAME_PACKAGES.items() if so in owners}
    assert installed, "dpkg knows none of the libraries: is this Debian?"
    wrong = {so: (pkg, sorted(owners[so])) for so, pkg in installed.items()
             if pkg not in owners[so]}
    assert wrong == {}


# -- display and the Qt probes -------------------------------------------------------------------

def _probe_script() -> Path:
    return REPO / "ui" / "doctor_checks.py"


def test_a_display_qt_cannot_reach_fails_with_qts_reason() -> None:
    # Qt aborts the process on this; the doctor must outlive it and say why
    env: dict[str, str | None] = {"DISPLAY": ":31999", "WAYLAND_DISPLAY": None,
                                  "QT_QPA_PLATFORM": None}
    probe = doctor.run_probe(_probe_script(), "platform", env=env, timeout=60)
    assert probe.data is None
    assert ":31999" in probe.error or "could not" in probe.error.lower(), probe.stderr
    check = doctor.check_display({"DISPLAY": ":31999"}, probe)
    assert check.status == FAIL
    assert "cannot open a window" in check.summary and check.fix


def test_no_display_warns_and_says_how_to_render_offscreen() -> None:
    check = doctor.check_display({})
    assert check.status == WARN
    assert "QT_QPA_PLATFORM=offscreen kapmonitor demo --screenshot" in check.fix


def test_audio_says_which_package_or_what_is_missing() -> None:
    missing = doctor.check_audio({"libpulse.so.0": ["Qt/lib/libQt6Multimedia.so.6"]}, None)
    assert missing.status == WARN and missing.fix.startswith("sudo apt install libpulse0")
    silent = doctor.check_audio({}, Probe({"outputs": [], "default": None}), groups=[])
    assert silent.status == WARN
    assert "pipewire-pulse" in silent.fix and "pulseaudio" in silent.fix
    playing = doctor.check_audio({}, Probe({"outputs": ["Speakers"], "default": "Speakers"}))
    assert playing.status == OK and "Speakers" in playing.summary


def test_a_refused_binding_fails_with_the_reason() -> None:
    check = doctor.check_pyside("6.12.0", "PySide6 6.12.0 crashes a long-running window")
    assert check.status == FAIL and "PySide6!=6.12.0" in check.fix
    assert doctor.check_pyside(None).status == FAIL


# -- serial ports --------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked_pty() -> Iterator[str]:
    """A pty whose master was never unlocked (no unlockpt): the kernel refuses to open its
    slave with EIO, even to root, so the refusal is testable anywhere."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptsname.restype = ctypes.c_char_p
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    try:
        name = libc.ptsname(master)
        assert name, "ptsname failed"
        yield name.decode()
    finally:
        os.close(master)


@pytest.mark.skipif(not os.path.exists("/dev/ptmx"), reason="needs Unix ptys")
def test_serial_check_reports_a_pty_it_cannot_open_and_one_it_can() -> None:
    master, slave = os.openpty()
    try:
        good = os.ttyname(slave)
        with _locked_pty() as locked:
            check = doctor.check_serial([good, locked], listed=[])
    finally:
        os.close(slave)
        os.close(master)
    assert check.status == FAIL
    ports = {p["port"]: p for p in check.details["ports"]}
    assert ports[good]["ok"] is True
    assert ports[locked]["ok"] is False and ports[locked]["errno"] == errno.EIO
    assert f"{good} OK" in check.summary
    assert f"{locked} the device does not answer" in check.summary
    assert "unplug and replug" in check.fix


@pytest.mark.skipif(not os.path.exists("/dev/ptmx"), reason="needs Unix ptys")
def test_serial_check_passes_a_pty_it_can_open() -> None:
    master, slave = os.openpty()
    try:
        check = doctor.check_serial([os.ttyname(slave)], listed=[])
    finally:
        os.close(slave)
        os.close(master)
    assert check.status == OK, check.summary
    assert check.details["ports"][0]["ok"] is True


def test_a_permission_refusal_gives_the_dialout_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(port: str, description: str = "") -> doctor.PortFinding:
        return doctor.PortFinding(port, description, False, "no permission (the port is "
                                  "root:dialout crw-rw----)", errno.EACCES,
                                  "root:dialout crw-rw----", "dialout")

    monkeypatch.setattr(doctor, "probe_port", refused)
    check = doctor.check_serial(listed=[("/dev/ttyUSB0", "FT232R USB UART")], groups=[],
                                is_root=False)
    assert check.status == FAIL
    assert "/dev/ttyUSB0 no permission" in check.summary
    assert "sudo usermod -aG dialout $USER, then log out and in" in check.fix \
        or "log out and in (or reboot)" in check.fix


def test_a_port_owned_by_root_alone_needs_a_udev_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(port: str, description: str = "") -> doctor.PortFinding:
        return doctor.PortFinding(port, description, False, "no permission", errno.EACCES,
                                  "root:root crw-------", "root")

    monkeypatch.setattr(doctor, "probe_port", refused)
    check = doctor.check_serial(listed=[("/dev/ttyS0", "")], groups=[], is_root=False)
    assert check.status == FAIL and "udev rule" in check.fix


def test_a_missing_port_named_with_port_fails() -> None:
    check = doctor.check_serial(["/dev/kap-no-such-port"], listed=[])
    assert check.status == FAIL
    assert "/dev/kap-no-such-port does not exist" in check.summary
    assert "kapmonitor ports" in check.fix


# -- database ------------------------------------------------------------------------------------

def test_database_check_on_a_missing_folder_does_not_create_it(tmp_path: Path) -> None:
    target = tmp_path / "not" / "yet" / "kap.sqlite"
    check = doctor.check_database(str(target))
    assert check.status == OK, check.summary
    assert "will be created" in check.summary and "free" in check.summary
    assert check.details["checked_folder"] == str(tmp_path)
    assert not (tmp_path / "not").exists()
    assert list(tmp_path.iterdir()) == []


def test_database_check_on_an_existing_file_leaves_it_alone(tmp_path: Path) -> None:
    db = tmp_path / "kap.sqlite"
    db.write_bytes(b"")
    before = db.stat()
    check = doctor.check_database(str(db))
    assert check.status == OK and "is writable" in check.summary
    after = db.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kap.sqlite"]  # no -wal, -shm


def test_database_check_warns_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    check = doctor.check_database(str(tmp_path / "kap.sqlite"), low_disk=1 << 62)
    assert check.status == WARN and "free" in check.summary and check.fix


def test_database_check_refuses_what_the_app_refuses(tmp_path: Path) -> None:
    assert doctor.check_database("sqlite://").status == FAIL  # in memory: lost at exit
    (tmp_path / "file").write_text("x")
    blocked = doctor.check_database(str(tmp_path / "file" / "kap.sqlite"))
    assert blocked.status == FAIL and "is a file" in blocked.summary
    assert doctor.check_database(str(tmp_path)).status == FAIL  # a folder, not a file


# -- reporting -----------------------------------------------------------------------------------

def test_exit_code_and_packages_gathered_for_provisioning() -> None:
    checks = [Check("a", OK, "fine"), Check("b", WARN, "hm", "do x",
                                            {"packages": ["libpulse0"]}),
              Check("c", WARN, "hm", "do y", {"packages": ["libpulse0", "libxcb-icccm4"]})]
    assert doctor.exit_code(checks) == 0
    report = json.loads(doctor.render_json(checks))
    assert report["packages"] == ["libpulse0", "libxcb-icccm4"]
    assert doctor.exit_code([*checks, Check("d", FAIL, "no", "fix")]) == 1
    text = doctor.render_text(checks).splitlines()
    assert text[1] == "WARN  b: hm  Fix: do x"
