"""From ``PROTOCOL=PORT`` to a running device in a session.

The one place where a device specification (from the command line, the device dialog or
the demo) becomes a host protocol on a transport publishing to a session's bus, so the GUI,
``record --headless`` and ``demo`` connect devices identically.

Specification: ``PROTOCOL=PORT[,name=SOURCE][,baudrate=N]...``, e.g.
``intellivue=/dev/ttyUSB0``, ``bbraun-bcc=socket://10.0.0.5:4001,name=pump``. Extra
``key=value`` pairs override the protocol's serial settings for that port.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kapmonitor.model import Message, now_us

from . import registry
from .transport import DeviceRunner

__all__ = ["DeviceSpec", "DeviceSpecError", "parse_spec", "start_device"]

_SERIAL_KEYS = {"baudrate": int, "bytesize": int, "parity": str, "stopbits": float,
                "xonxoff": lambda v: v.lower() in ("1", "true", "yes", "on"),
                "rtscts": lambda v: v.lower() in ("1", "true", "yes", "on")}


class DeviceSpecError(ValueError):
    pass


@dataclass(frozen=True)
class DeviceSpec:
    protocol: str
    port: str
    name: str
    serial: dict[str, Any] = field(default_factory=dict)

    @property
    def entry(self) -> registry.ProtocolEntry:
        return registry.get(self.protocol)


def parse_spec(text: str, taken: Sequence[str] = ()) -> DeviceSpec:
    """Parse one ``PROTOCOL=PORT[,k=v...]``; the default name is the protocol's kind
    ("monitor" or "pump"), numbered when taken already."""
    protocol, sep, rest = text.partition("=")
    if not sep or not rest:
        raise DeviceSpecError(f"device {text!r} is not PROTOCOL=PORT")
    try:
        entry = registry.get(protocol.strip())
    except registry.UnknownProtocolError as exc:
        raise DeviceSpecError(str(exc)) from None
    # socket://host:port and rfc2217:// contain no commas; options follow the port
    port, *options = rest.split(",")
    name, serial = "", {}
    for opt in options:
        key, eq, value = opt.partition("=")
        if not eq:
            raise DeviceSpecError(f"option {opt!r} of {text!r} is not key=value")
        if key == "name":
            name = value
        elif key in _SERIAL_KEYS:
            try:
                serial[key] = _SERIAL_KEYS[key](value)
            except ValueError:
                raise DeviceSpecError(f"{key}={value!r} is not valid") from None
        else:
            raise DeviceSpecError(f"unknown option {key!r} in {text!r}; known: name, "
                                  + ", ".join(_SERIAL_KEYS))
    if not name:
        name = entry.kind
        n = 2
        while name in taken:
            name, n = f"{entry.kind}{n}", n + 1
    if name in taken:
        raise DeviceSpecError(f"two devices are named {name!r}")
    return DeviceSpec(entry.name, port.strip(), name, serial)


def start_device(spec: DeviceSpec, attach: Callable[..., None],
                 publish: Callable[[Sequence[Message]], None], *,
                 clock: Callable[[], int] = now_us, **host_options: Any) -> DeviceRunner:
    """Build the host protocol and its transport and hand them to ``attach`` (a
    ``LiveSession.attach``), which records the device and starts it."""
    host = spec.entry.host_class()(spec.name, **host_options)
    runner = DeviceRunner(spec.port, host, publish, serial_overrides=spec.serial, clock=clock)
    attach(spec.name, runner, protocol=spec.protocol, port=spec.port)
    return runner
