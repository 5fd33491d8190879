"""Which devices this room has: protocol + port, remembered per installation (QSettings).

The dialog is handed the registered protocols and the serial ports found (the command line
asks the driver registry and pyserial's ``list_ports``), and optionally a ``tester`` that
tries a device for a few seconds, so the UI stays independent of the drivers. A port can also
be typed: ``socket://10.1.2.3:4001`` for a serial device server. The result is a list of
``PROTOCOL=PORT[,name=NAME]`` specifications, the same strings ``kapmonitor record --device``
takes.

Issue 13 item 10: monitors and pumps are listed apart, a device is named by its kind
("pump", "pump2"; a pump is never offered the name "monitor"), and "Test connection" says
in plain words whether data arrives before the nurse starts a session with it. The dialog
is reachable at any time from the window's Session menu (Devices...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QSettings
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

from .bridge import Relay

__all__ = ["SETTINGS_KEY", "DeviceDialog", "configured_devices", "save_devices"]

SETTINGS_KEY = "devices/specs"
#: A test of one device: spec text -> one line saying what happened (runs on a worker).
Tester = Callable[[str], str]
_KIND_TITLES = {"monitor": "Monitors", "pump": "Pumps"}
_NAMES = {"monitor": ["monitor", "oximeter", "capnograph"], "pump": ["pump"]}


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
                 parent: QWidget | None = None, *, tester: Tester | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Devices in this room")
        self.settings = settings
        self.tester = tester
        self._kinds = {name: kind for name, _title, kind in protocols}
        self._pool: ThreadPoolExecutor | None = None
        self._relay = Relay(self._on_result, self)

        self.protocol = QComboBox()
        for kind in ("monitor", "pump"):  # grouped: monitors first, then pumps
            group = [(n, t) for n, t, k in protocols if k == kind]
            if not group:
                continue
            if self.protocol.count():
                self.protocol.insertSeparator(self.protocol.count())
            for name, title in group:
                self.protocol.addItem(f"{title}  ({kind})", name)
        for name, title, kind in protocols:  # kinds a plugin may add
            if kind not in _KIND_TITLES:
                self.protocol.addItem(f"{title}  ({kind})", name)
        self.port = QComboBox()
        self.port.setEditable(True)
        for device, description in ports:
            self.port.addItem(f"{device}  \u2014 {description}", device)
        self.port.setCurrentIndex(-1)
        self.port.lineEdit().setPlaceholderText("/dev/ttyUSB0 or socket://host:port")
        self.name = QComboBox()
        self.name.setEditable(True)
        add = QPushButton("Add")
        add.clicked.connect(self._add)
        self.test_btn = QPushButton("Test connection")
        self.test_btn.setEnabled(tester is not None)
        self.test_btn.setToolTip("Open the port and wait up to 10 s for data from the device")
        self.test_btn.clicked.connect(self._test_form)
        self.lists = {kind: QListWidget() for kind in _KIND_TITLES}
        for spec in configured_devices(settings):
            self._list_for(spec).addItem(spec)
        remove = QPushButton("Remove selected")
        remove.clicked.connect(self._remove)
        test_sel = QPushButton("Test selected")
        test_sel.setEnabled(tester is not None)
        test_sel.clicked.connect(self._test_selected)
        self.error = QLabel("")
        self.error.setObjectName("fieldError")
        self.error.setWordWrap(True)
        self.result = QLabel("")
        self.result.setWordWrap(True)

        form = QGridLayout()
        form.addWidget(QLabel("Protocol"), 0, 0)
        form.addWidget(self.protocol, 0, 1)
        form.addWidget(QLabel("Port"), 1, 0)
        form.addWidget(self.port, 1, 1)
        form.addWidget(QLabel("Name"), 2, 0)
        form.addWidget(self.name, 2, 1)
        form_buttons = QHBoxLayout()
        form_buttons.addStretch(1)
        form_buttons.addWidget(self.test_btn)
        form_buttons.addWidget(add)
        form.addLayout(form_buttons, 3, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(test_sel)
        row.addWidget(remove)
        layout = QVBoxLayout(self)
        hint = QLabel("Serial ports found on this computer are listed; a network serial "
                      "server is typed as socket://HOST:PORT. KAP Monitor only reads from "
                      "devices: it never commands a pump or a monitor.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.result)
        for kind, title in _KIND_TITLES.items():
            layout.addWidget(QLabel(title))
            layout.addWidget(self.lists[kind])
        layout.addLayout(row)
        layout.addWidget(buttons)
        self.setMinimumWidth(560)
        self.protocol.currentIndexChanged.connect(self._suggest_names)
        self._suggest_names()

    # -- names by kind ---------------------------------------------------------------------

    def _kind(self, protocol: str | None) -> str:
        return self._kinds.get(protocol or "", "monitor")

    def _list_for(self, spec: str) -> QListWidget:
        return self.lists["pump" if self._kind(spec.partition("=")[0]) == "pump"
                          else "monitor"]

    def _suggest_names(self) -> None:
        """Names offered for the chosen protocol's kind, the first one not taken yet."""
        kind = self._kind(self.protocol.currentData())
        taken = {s.rpartition(",name=")[2] for s in self.specs()}
        names = []
        for base in _NAMES.get(kind, [kind]):
            name, n = base, 2
            while name in taken:
                name, n = f"{base}{n}", n + 1
            names.append(name)
        self.name.clear()
        self.name.addItems(names)
        self.name.setCurrentIndex(0)

    # -- the lists -------------------------------------------------------------------------

    def specs(self) -> list[str]:
        return [lst.item(i).text() for lst in self.lists.values() for i in range(lst.count())]

    def _form_spec(self) -> str | None:
        port = self.port.currentData() if self.port.currentIndex() >= 0 and \
            self.port.currentText() == self.port.itemText(self.port.currentIndex()) \
            else self.port.currentText().strip()
        name = self.name.currentText().strip()
        if not port:
            self.error.setText("Choose or type a port.")
            return None
        if not name or "," in name or "=" in name:
            self.error.setText("The name must not be empty or contain ',' or '='.")
            return None
        self.error.setText("")
        return f"{self.protocol.currentData()}={port},name={name}"

    def _add(self) -> None:
        spec = self._form_spec()
        if spec is None:
            return
        name = spec.rpartition(",name=")[2]
        if any(s.endswith(f",name={name}") for s in self.specs()):
            self.error.setText(f"A device is already named {name!r}.")
            return
        self._list_for(spec).addItem(spec)
        self._suggest_names()

    def _remove(self) -> None:
        for lst in self.lists.values():
            for item in lst.selectedItems():
                lst.takeItem(lst.row(item))
        self._suggest_names()

    def _save(self) -> None:
        save_devices(self.settings, self.specs())
        self.accept()

    # -- testing a device ------------------------------------------------------------------

    def _test_form(self) -> None:
        spec = self._form_spec()
        if spec is not None:
            self.test(spec)

    def _test_selected(self) -> None:
        for lst in self.lists.values():
            for item in lst.selectedItems():
                self.test(item.text())
                return
        self.error.setText("Select a configured device to test.")

    def test(self, spec: str) -> Future[str] | None:
        """Run the tester on a worker (a port can take seconds to answer); the result line
        appears under the form."""
        if self.tester is None:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device-test")
        self.result.setText(f"Testing {spec}\u2026")
        self.test_btn.setEnabled(False)
        fut = self._pool.submit(self.tester, spec)
        fut.add_done_callback(lambda f: self._relay.post(spec, f))
        return fut

    def _on_result(self, spec: Any, fut: Future[str]) -> None:
        self.test_btn.setEnabled(True)
        exc = fut.exception()
        self.result.setText(f"{spec}: " + (f"test failed: {exc}" if exc is not None
                                           else fut.result()))

    def done(self, result: int) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._relay.close()
        super().done(result)
