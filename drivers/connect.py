"""From ``PROTOCOL=PORT`` to a running device in a session.

The one place where a device specification (from the command line, the device dialog or
the demo) becomes a host protocol on a transport publishing to a session's bus, so the GUI,
``record --headless`` and ``demo`` connect devices identically.

Specification: ``PROTOCOL=PORT[,name=SOURCE][,baudrate=N]...``, e.g.
``intellivue=/dev/ttyUSB0``, ``bbraun-bcc=socket://10.0.0.5:4001,name=pump``. Extra
``key=value`` pairs override the protocol's serial settings for that port.

A specification is checked completely here, before a session starts: a transport retries
a port it cannot open for ever (a cable may come back), so a typo that reached it (parity
``Q``, ``socket://`` without a port, a scheme pyserial does not know) would be a device
that never connects, in a record that looks fine. Serial settings are checked against
pyserial's allowed values (any positive baud rate: ``Serial.BAUDRATES`` lists only the
standard ones, and adapters take others), URLs by their scheme and shape. ``probe`` then
opens a local port once, exclusively, to refuse a missing port, a permission problem or a
port another program holds, with the fix in the message.
"""

from __future__ import annotations

import errno
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import serial

from kapmonitor.model import Message, now_us

from . import registry
from .transport import DeviceRunner, describe_error

__all__ = ["DeviceSpec", "DeviceSpecError", "parse_spec", "probe", "start_device", "try_device"]

#: Lengths of the device columns a spec is stored in (store.schema.DeviceRow: source 64,
#: port 255); drivers do not import the store, so the numbers are repeated here.
NAME_MAX = 64
PORT_MAX = 255
#: URL schemes that name a network endpoint and need HOST:PORT.
_NETWORK_SCHEMES = frozenset({"socket", "rfc2217"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class DeviceSpecError(ValueError):
    """A device specification or port that cannot work; the message is one line."""


def _whole(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("a whole number") from None


def _baudrate(value: str) -> int:
    baud = _whole(value)
    if baud <= 0:
        raise ValueError("a baud rate is a positive whole number")
    return baud


def _bytesize(value: str) -> int:
    size = _whole(value)
    if size not in serial.Serial.BYTESIZES:
        raise ValueError("one of " + ", ".join(map(str, serial.Serial.BYTESIZES)))
    return size


def _parity(value: str) -> str:
    parity = value.strip().upper()
    if parity not in serial.Serial.PARITIES:
        raise ValueError("one of " + ", ".join(serial.Serial.PARITIES))
    return parity


def _stopbits(value: str) -> float:
    allowed = serial.Serial.STOPBITS
    try:
        bits = float(value)
    except ValueError:
        bits = None
    for stop in allowed:
        if bits == stop:
            return stop
    raise ValueError("one of " + ", ".join(map(str, allowed)))


def _flag(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("on or off")


_SERIAL_KEYS: dict[str, Callable[[str], Any]] = {
    "baudrate": _baudrate, "bytesize": _bytesize, "parity": _parity, "stopbits": _stopbits,
    "xonxoff": _flag, "rtscts": _flag}


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
    ("monitor" or "pump"), numbered when taken already. Raises ``DeviceSpecError`` with
    one line for anything that could not connect."""
    protocol, sep, rest = text.partition("=")
    if not sep or not rest:
        raise DeviceSpecError(f"device {text!r} is not PROTOCOL=PORT")
    try:
        entry = registry.get(protocol.strip())
    except registry.UnknownProtocolError as exc:
        raise DeviceSpecError(str(exc)) from None
    # socket://host:port and rfc2217:// contain no commas; options follow the port
    port, *options = rest.split(",")
    port = port.strip()
    _check_port(port, text)
    name, settings = "", {}
    for opt in options:
        key, eq, value = opt.partition("=")
        key = key.strip()
        if not eq:
            raise DeviceSpecError(f"option {opt!r} of {text!r} is not key=value")
        if key in settings or (key == "name" and name):
            raise DeviceSpecError(f"option {key!r} is given twice in {text!r}")
        if key == "name":
            name = value.strip()
            if not name:
                raise DeviceSpecError(f"name= is empty in {text!r}")
            if len(name) > NAME_MAX:
                raise DeviceSpecError(f"device name {name[:20]!r}... is longer than "
                                      f"{NAME_MAX} characters")
            if not name.isprintable():
                raise DeviceSpecError(f"device name {name!r} holds control characters")
        elif key in _SERIAL_KEYS:
            try:
                settings[key] = _SERIAL_KEYS[key](value)
            except ValueError as exc:
                raise DeviceSpecError(f"{key}={value!r} is not valid for {port}: "
                                      f"{exc}") from None
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
    return DeviceSpec(entry.name, port, name, settings)


def _check_port(port: str, text: str) -> None:
    """A device path, or a URL whose scheme pyserial has a handler for, with the shape that
    scheme needs (``socket://HOST:PORT``)."""
    if not port:
        raise DeviceSpecError(f"device {text!r} names no port after '='")
    if len(port) > PORT_MAX:
        raise DeviceSpecError(f"port {port[:30]!r}... is longer than {PORT_MAX} characters")
    if not port.isprintable():
        raise DeviceSpecError(f"port {port!r} holds control characters")
    if "://" not in port:
        return
    scheme = port.split("://", 1)[0].lower()
    if not scheme or not _url_handler(scheme):
        raise DeviceSpecError(f"{port}: unknown URL scheme {scheme + '://'!r}; use a device "
                              "path, socket://HOST:PORT or rfc2217://HOST:PORT")
    if scheme in _NETWORK_SCHEMES:
        parts = urlsplit(port)
        try:
            number = parts.port
        except ValueError:
            number = -1
        if not parts.hostname:
            raise DeviceSpecError(f"{port}: {scheme}:// needs a host, as in "
                                  f"{scheme}://10.0.0.5:4001")
        if number is None:
            raise DeviceSpecError(f"{port}: {scheme}:// needs a TCP port, as in "
                                  f"{scheme}://{parts.hostname}:4001")
        if not 1 <= number <= 65535:
            raise DeviceSpecError(f"{port}: the TCP port must be a number from 1 to 65535")
    elif scheme != "loop" and not port.split("://", 1)[1]:  # loop:// is whole as it is
        raise DeviceSpecError(f"{port}: nothing after {scheme}://")


def _url_handler(scheme: str) -> bool:
    """Whether pyserial's ``serial_for_url`` has a handler for ``scheme`` (it looks for a
    module ``protocol_<scheme>`` in ``serial.protocol_handler_packages``)."""
    if not scheme.isidentifier():
        return False
    for package in serial.protocol_handler_packages:
        try:
            if importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None:
                return True
        except ImportError:
            continue
    return False


def probe(spec: DeviceSpec) -> None:
    """Open a local port once, exclusively, and close it: ``DeviceSpecError`` with the fix
    when it is missing, not ours to open, held by another program (two recorders on one
    port would each get part of its bytes), or not a serial port. URLs (``socket://``
    and the like) are not probed: a device server may come up after the recorder, and
    the transport keeps trying."""
    if "://" in spec.port:
        return
    port = spec.port
    try:
        handle = serial.serial_for_url(port, exclusive=True, **spec.serial)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceSpecError(_probe_reason(port, exc)) from None
    except Exception as exc:  # termios.error and the like escape pyserial's open()
        raise DeviceSpecError(f"{port} cannot be opened: {describe_error(exc)}") from None
    handle.close()


def _probe_reason(port: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        return f"port {port} is in use by another program"
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return f"no such port {port} (see `kapmonitor ports`)"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied on {port}: add your user to the dialout group"
    if code == errno.EISDIR or code == errno.ENOTTY or "Inappropriate ioctl" in text:
        return f"{port} is not a serial port (see `kapmonitor ports`)"
    strerror = getattr(exc, "strerror", None)
    reason = strerror or (text.splitlines()[0] if text else "it cannot be opened")
    return f"cannot open port {port}: {reason}"


def start_device(spec: DeviceSpec, attach: Callable[..., None],
                 publish: Callable[[Sequence[Message]], None], *,
                 clock: Callable[[], int] = now_us, **host_options: Any) -> DeviceRunner:
    """Build the host protocol and its transport and hand them to ``attach`` (a
    ``LiveSession.attach``), which records the device and starts it."""
    host = spec.entry.host_class()(spec.name, **host_options)
    runner = DeviceRunner(spec.port, host, publish, serial_overrides=spec.serial, clock=clock)
    attach(spec.name, runner, protocol=spec.protocol, port=spec.port)
    return runner


def try_device(text: str, seconds: float = 10.0) -> str:
    """Try one device (the device dialog's "Test connection"): parse and probe its spec,
    run its host protocol on a transport for up to ``seconds`` until data arrives, and say
    what happened in one line. Nothing is recorded; the port is released afterwards."""
    import threading

    from kapmonitor.model import DeviceStatus, PumpState, Reading, WaveChunk

    try:
        spec = parse_spec(text)
        probe(spec)
    except DeviceSpecError as exc:
        return f"not usable: {exc}"
    got: list[Message] = []
    states: list[str] = []
    done = threading.Event()

    def publish(messages: Sequence[Message]) -> None:
        for m in messages:
            if isinstance(m, DeviceStatus):
                states.append(m.detail or m.state.value)
            elif isinstance(m, Reading | WaveChunk | PumpState):
                got.append(m)
                done.set()

    host = spec.entry.host_class()(spec.name)
    runner = DeviceRunner(spec.port, host, publish, serial_overrides=spec.serial)
    runner.start()
    try:
        done.wait(seconds)
    finally:
        runner.stop()
    if got:
        first = got[0]
        if isinstance(first, Reading):
            what = f"{first.channel.value} {first.value:g}"
        elif isinstance(first, PumpState):
            what = f"pump {first.state.value}" + (
                f" at {first.rate_ml_h:g} mL/h" if first.rate_ml_h is not None else "")
        else:
            what = f"{first.channel.value} wave"
        return f"OK: {spec.entry.title} answers on {spec.port} (first data: {what})"
    why = next((s for s in reversed(states) if s not in ("connecting", "stopped")), "")
    return (f"no data from {spec.port} in {seconds:g} s" + (f" ({why})" if why else "")
            + f": check the cable, the port and that the device speaks {spec.entry.title}")
