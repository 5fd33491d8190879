"""``kapmonitor`` (or ``kapmonitor gui``): the bedside window for a real session.

Devices come from the room's configuration (the device dialog, remembered with QSettings);
with none configured the app offers the simulated devices, clearly labelled DEMO, or the
device dialog. The setup dialog then takes the patient and programme (and offers recovery
of a session a crash left open), and the window runs until the session is closed.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, open_store

NAME = "gui"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="the bedside window (the default)",
                       description="Open the bedside window. With no device configured, "
                       "offers the simulated devices (DEMO).")
    p.add_argument("--devices", action="store_true", help="open the device dialog first")
    p.set_defaults(func=run)


def _ask_demo(parent: object = None) -> str:
    """'demo', 'configure' or 'quit'."""
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(parent)  # type: ignore[arg-type]
    box.setWindowTitle("KAP Monitor")
    box.setText("No devices are configured for this room.")
    box.setInformativeText("Start with SIMULATED devices (DEMO, never a patient), or choose "
                           "the room's monitor and pump?")
    demo = box.addButton("Start DEMO", QMessageBox.ButtonRole.AcceptRole)
    conf = box.addButton("Choose devices\u2026", QMessageBox.ButtonRole.ActionRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    clicked = box.clickedButton()
    return "demo" if clicked is demo else "configure" if clicked is conf else "quit"


def run(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QDialog
    from serial.tools import list_ports

    from kapmonitor.drivers import registry
    from kapmonitor.drivers.connect import (
        DeviceSpecError,
        parse_spec,
        probe,
        start_device,
        try_device,
    )
    from kapmonitor.session import LiveSession
    from kapmonitor.ui import theme
    from kapmonitor.ui.device_dialog import DeviceDialog, configured_devices
    from kapmonitor.ui.main_window import run_app
    from kapmonitor.ui.setup_dialog import SetupDialog

    app = QApplication.instance() or QApplication(["kapmonitor"])
    theme.apply_theme(app)  # type: ignore[arg-type]
    settings = QSettings("kapmonitor", "kapmonitor")
    store = open_store(args, create=True)
    try:
        specs = configured_devices(settings)
        choice = "configure" if args.devices else ("use" if specs else _ask_demo())
        if choice == "quit":
            return 0
        if choice == "configure":
            protocols = [(n, registry.get(n).title, registry.get(n).kind)
                         for n in registry.available()]
            ports = [(p.device, p.description) for p in list_ports.comports()]
            if DeviceDialog(protocols, ports, settings,
                            tester=try_device).exec() != QDialog.DialogCode.Accepted:
                return 0
            specs = configured_devices(settings)
            if not specs:
                choice = "demo"
        if choice == "demo":
            from .demo import pump_start_note, start_demo

            rig, session, links = start_demo(store)
            try:
                return run_app(session, demo=True, settings=settings,
                               demo_note=pump_start_note(rig, 1.0))
            finally:
                if not session.closed:  # type: ignore[attr-defined]
                    session.close()  # type: ignore[attr-defined]
                rig.stop()  # type: ignore[attr-defined]
                links.cleanup()  # type: ignore[attr-defined]
        # one session after another: closing a session brings the setup dialog back for the
        # next patient (issue 13 item 10); leaving one open or cancelling the dialog quits
        while True:
            # every configured device is checked, and its port opened once, before the
            # nurse fills in the setup dialog and before a session exists
            parsed: list[Any] = []
            for text in configured_devices(settings):
                try:
                    spec = parse_spec(text, [p.name for p in parsed])
                    probe(spec)
                except DeviceSpecError as exc:
                    raise CliError(f"configured device {text!r}: {exc}") from None
                parsed.append(spec)
            setup = SetupDialog(store, settings=settings)
            if setup.exec() != QDialog.DialogCode.Accepted:
                return 0
            if setup.resume_id is not None:  # the same session carried on, devices again
                session = LiveSession.resume(store, setup.resume_id).start()
            else:
                session = LiveSession(store, setup.config()).start()
            for spec in parsed:
                start_device(spec, session.attach, session.bus.publish)
            code = run_app(session, settings=settings, open_devices=lambda parent: DeviceDialog(
                [(n, registry.get(n).title, registry.get(n).kind) for n in registry.available()],
                [(p.device, p.description) for p in list_ports.comports()], settings, parent,
                tester=try_device).exec())
            if store.session_row(session.session_id).status != "closed":
                return code
    finally:
        store.close()
