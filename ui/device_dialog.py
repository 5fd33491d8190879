"""Which devices this room has: protocol + port, remembered per installation (QSettings).

The dialog is handed the registered protocols and the serial ports found (the command line
asks the driver registry and pyserial's ``list_ports``), so the UI stays independent of the
drivers. A port can also be typed: ``socket://10.1.2.3:4001`` for a serial device server.
The result is a list of ``PROTOCOL=PORT[,name=NAME]`` specifications, the same strings
``kapmonitor record --device`` takes.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["SETTINGS_KEY", "DeviceDialog", "configured_devices", "save_devices"]

SETTINGS_KEY = "devices/specs"


def configured_devices(settings: QSettings) -> list[str]:
    value = settings.value(SETTINGS_KEY, [])
    if isinstance(value, str):
        value = [value] if value else []
    return [str(v) for v in value or []]


def save_devices(settings: QSettings, specs: Sequence[str]) -> None:
    settings.setValue(SETTINGS_KEY, list(specs))
    settings.sync()


class DeviceDialog(QDialog):
    """``protocols``: (name, title, kind) triples; ``ports``: (device, description)."""

    def __init__(self, protocols: Sequence[tuple[str, str, str]],
                 ports: Sequence[tuple[str, str]], settings: QSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Devices in this room")
        self.settings = settings
        self.protocol = QComboBox()
        for name, title, kind in protocols:
            self.protocol.addItem(f"{title}  ({kind})", name)
        self.port = QComboBox()
        self.port.setEditable(True)
        for device, description in ports:
            self.port.addItem(f"{device}  \u2014 {description}", device)
        self.port.setCurrentIndex(-1)
        self.port.lineEdit().setPlaceholderText("/dev/ttyUSB0 or socket://host:port")
        self.name = QComboBox()
        self.name.setEditable(True)
        self.name.addItems(["monitor", "pump", "oximeter", "capnograph"])
        add = QPushButton("Add")
        add.clicked.connect(self._add)
        self.list = QListWidget()
        self.list.addItems(configured_devices(settings))
        remove = QPushButton("Remove selected")
        remove.clicked.connect(self._remove)
        self.error = QLabel("")
        self.error.setObjectName("fieldError")
        self.error.setWordWrap(True)

        form = QGridLayout()
        form.addWidget(QLabel("Protocol"), 0, 0)
        form.addWidget(self.protocol, 0, 1)
        form.addWidget(QLabel("Port"), 1, 0)
        form.addWidget(self.port, 1, 1)
        form.addWidget(QLabel("Name"), 2, 0)
        form.addWidget(self.name, 2, 1)
        form.addWidget(add, 3, 1, alignment=Qt.AlignmentFlag.AlignRight)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(remove)
        layout = QVBoxLayout(self)
        hint = QLabel("Serial ports found on this computer are listed; a network serial "
                      "server is typed as socket://HOST:PORT.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(QLabel("Configured"))
        layout.addWidget(self.list)
        layout.addLayout(row)
        layout.addWidget(buttons)

    def specs(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _add(self) -> None:
        port = self.port.currentData() if self.port.currentIndex() >= 0 and \
            self.port.currentText() == self.port.itemText(self.port.currentIndex()) \
            else self.port.currentText().strip()
        name = self.name.currentText().strip()
        if not port:
            self.error.setText("Choose or type a port.")
            return
        if not name or "," in name or "=" in name:
            self.error.setText("The name must not be empty or contain ',' or '='.")
            return
        if any(s.endswith(f",name={name}") for s in self.specs()):
            self.error.setText(f"A device is already named {name!r}.")
            return
        self.error.setText("")
        self.list.addItem(f"{self.protocol.currentData()}={port},name={name}")

    def _remove(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))

    def _save(self) -> None:
        save_devices(self.settings, self.specs())
        self.accept()
