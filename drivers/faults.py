"""Fault injection for device links: scripted port failures, for tests and plugin authors.

A device thread must survive whatever a port throws at it (issue 12; ``transport.py``
says how it does). Proving that needs failures on demand, at exact moments, through the
same code path a clinic runs. This module gives two tools:

``fault://`` - a pyserial URL handler that wraps a real port and fails on cue::

    plan = FaultPlan()
    runner = DeviceRunner(plan.url("/dev/pts/3"), host, publish)   # or socket://..., loop://
    plan.add(Op.READ, Fault.EIO, after=50)      # the 51st read raises OSError(EIO)
    plan.add(Op.OPEN, Fault.TERMIOS, times=2)   # the next two opens raise termios.error
    assert plan.wait_done(timeout=10)

    # or with no plan object, from a command line (counts live as long as the process):
    kapmonitor record --headless --device ne1000='fault:///dev/pts/3#read=vanish@200'

  URL: ``fault://<inner-url>#<options>``; the inner URL is anything ``serial_for_url``
  opens (a pty path, ``socket://``, ``loop://``, ``spy://``), its own ``?query`` included.
  Options, joined by ``&``: ``plan=<name>`` (a ``FaultPlan`` by name) or
  ``<op>=<fault>[@<after>][*<times>]`` (ops: open, read, write, close; faults: see
  ``Fault``). With no ``#`` the wrapper only passes bytes through.

``FlappingPty`` - a pseudo-terminal that is closed and recreated under one path every few
hundred microseconds, as a loose USB plug or a restarting device server does: every
kind of half-open port a reconnect can meet (a symlink to a closed pty, a pty closed
between open and tcsetattr, reads that fail a moment later).

Why a URL handler and not a wrapper around ``serial_for_url``: the code under test stays
exactly the production code. ``DeviceRunner``, ``connect.start_device`` and the command
line open the URL as they open any port, so the faults go through the real open/read/
write/close calls and the real exception handling, no hook or monkeypatch is needed,
and a URL is text: it passes through a device spec, a settings dialog or a subprocess's
argument list. pyserial finds handlers by importing ``<package>.protocol_<scheme>`` for
each name in ``serial.protocol_handler_packages``; this single module registers itself as
that package and module on import (``register()``), and ``transport.py`` imports it, so
``fault://`` is known wherever devices are opened, with no further package.

Why a plan object: tests must wait on conditions, not sleep. A ``FaultPlan`` is
thread-safe (the device thread consumes it while the test adds steps), counts every
operation, records every fault it fired, and lets the test wait until a fault fired or
the script is used up. Steps for one operation run in order: "skip ``after`` calls, then
fail ``times`` calls", counted from when the step becomes the next one.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import itertools
import os
import struct
import sys
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException, to_bytes

try:
    from termios import error as TermiosError
except ImportError:  # Windows: no termios; the fault still raises a look-alike
    class TermiosError(Exception):  # type: ignore[no-redef]
        pass

__all__ = [
    "Fault",
    "FaultPlan",
    "FaultSerial",
    "Fired",
    "FlappingPty",
    "InjectedDeath",
    "Op",
    "make_error",
    "plan_for",
    "register",
    "serial_class_for_url",
    "split_url",
]

SCHEME = "fault"


class Op(enum.StrEnum):
    """The port operations a fault can hit."""

    OPEN = "open"
    READ = "read"
    WRITE = "write"
    CLOSE = "close"


class Fault(enum.StrEnum):
    """What goes wrong. Each raises what real ports raise in that situation."""

    #: ``serial.SerialException``, pyserial's own error.
    SERIAL = "serial"
    #: ``OSError(EIO)``: the driver lost the device (a USB adapter unplugged mid-call).
    EIO = "eio"
    #: ``OSError(EAGAIN)``: a non-blocking call that would block, leaking out of a handler.
    EAGAIN = "eagain"
    #: ``termios.error``: EINVAL on open (tcsetattr refused the settings), EIO elsewhere
    #: (tcflush on a vanished pty). pyserial 3.5 lets these out of ``open()`` unwrapped.
    TERMIOS = "termios"
    #: The write takes only the first half of the bytes and says so (a legal short count).
    SHORT_WRITE = "short"
    #: The port is gone: opens fail with ENOENT; a read raises what pyserial raises when a
    #: USB adapter vanishes ("device reports readiness to read but returned no data");
    #: a write fails with EIO; after a vanish every call on that open port fails.
    VANISH = "vanish"
    #: ``struct.error``: an exception no one expects from a port (a plugin handler's bug).
    STRUCT = "struct"
    #: ``InjectedDeath``, a ``BaseException``: kills the device thread, to test its last
    #: words and the supervisor's ``restart()``.
    DEATH = "death"


class InjectedDeath(BaseException):
    """Raised by ``Fault.DEATH``; a ``BaseException`` so that only a thread's outermost
    guard sees it, as with ``SystemExit``."""


_VANISHED_READ = ("device reports readiness to read but returned no data "
                  "(device disconnected or multiple access on port?)")


def make_error(fault: Fault, op: Op, port: str = "") -> BaseException:
    """The exception ``fault`` raises on ``op`` of ``port`` (not for SHORT_WRITE)."""
    if fault is Fault.SERIAL:
        return SerialException(f"{op} failed: injected serial port error")
    if fault is Fault.EIO:
        return OSError(errno.EIO, os.strerror(errno.EIO))
    if fault is Fault.EAGAIN:
        return OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    if fault is Fault.TERMIOS:
        code = errno.EINVAL if op is Op.OPEN else errno.EIO
        return TermiosError(code, os.strerror(code))
    if fault is Fault.VANISH:
        if op is Op.OPEN:
            return SerialException(errno.ENOENT, f"could not open port {port}: [Errno 2] "
                                   f"No such file or directory: {port!r}")
        if op is Op.READ:
            return SerialException(_VANISHED_READ)
        if op is Op.WRITE:
            return SerialException(f"write failed: [Errno {errno.EIO}] "
                                   f"{os.strerror(errno.EIO)}")
        return OSError(errno.EIO, os.strerror(errno.EIO))
    if fault is Fault.STRUCT:
        return struct.error("unpack requires a buffer of 4 bytes")
    if fault is Fault.DEATH:
        return InjectedDeath(f"injected thread death on {op}")
    raise ValueError(f"{fault} is not an exception (SHORT_WRITE shortens a write)")


@dataclass(frozen=True, slots=True)
class Fired:
    """One fault that happened: on which operation, and that operation's call number
    (1-based, counted over the plan's life, across reopens)."""

    op: Op
    fault: Fault
    call: int


@dataclass(slots=True)
class _Step:
    fault: Fault
    skip: int
    times: int


_ids = itertools.count(1)
_named: weakref.WeakValueDictionary[str, FaultPlan] = weakref.WeakValueDictionary()
_from_urls: dict[str, FaultPlan] = {}
_registry_lock = threading.RLock()


class FaultPlan:
    """A thread-safe script of port failures (see the module docstring).

    ``name`` makes the plan reachable from a URL (``fault://<inner>#plan=<name>``) while
    the plan object lives; ``url(inner)`` builds that URL.
    """

    def __init__(self, name: str | None = None) -> None:
        name = name or f"plan{next(_ids)}"
        if any(c in name for c in "#&=") or not name.strip():
            raise ValueError(f"a plan name cannot contain '#', '&' or '=': {name!r}")
        self.name = name
        self._cond = threading.Condition()
        self._steps: dict[Op, deque[_Step]] = {op: deque() for op in Op}
        self._counts: dict[Op, int] = dict.fromkeys(Op, 0)
        self._fired: list[Fired] = []
        with _registry_lock:
            if name in _named:
                raise ValueError(f"a fault plan named {name!r} exists already")
            _named[name] = self

    # -- scripting (any thread) --------------------------------------------------------

    def add(self, op: Op | str, fault: Fault | str, *, after: int = 0,
            times: int = 1) -> FaultPlan:
        """After the steps already queued for ``op``: let ``after`` calls of ``op`` pass,
        then fail the next ``times`` calls with ``fault``. Returns the plan (chainable)."""
        op, fault = Op(op), Fault(fault)
        if fault is Fault.SHORT_WRITE and op is not Op.WRITE:
            raise ValueError("a short write can only happen on write")
        if after < 0 or times < 1:
            raise ValueError(f"after must be >= 0 and times >= 1 (got {after}, {times})")
        with self._cond:
            self._steps[op].append(_Step(fault, after, times))
            self._cond.notify_all()
        return self

    def clear(self) -> None:
        """Drop every step not yet used."""
        with self._cond:
            for steps in self._steps.values():
                steps.clear()
            self._cond.notify_all()

    def url(self, inner: str) -> str:
        """``fault://<inner>#plan=<name>``: ``inner`` opened with this plan's faults."""
        return f"{SCHEME}://{inner}#plan={self.name}"

    # -- observing (any thread) --------------------------------------------------------

    @property
    def fired(self) -> list[Fired]:
        with self._cond:
            return list(self._fired)

    def count(self, op: Op | str) -> int:
        """How many times ``op`` was called on ports using this plan."""
        with self._cond:
            return self._counts[Op(op)]

    @property
    def pending(self) -> int:
        """Faults still to fire."""
        with self._cond:
            return sum(s.times for steps in self._steps.values() for s in steps)

    def wait_fired(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` faults fired in all; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._fired) >= n, timeout)

    def wait_done(self, timeout: float = 10.0) -> bool:
        """Wait until every scripted fault fired; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not any(self._steps.values()), timeout)

    def wait_calls(self, op: Op | str, n: int, timeout: float = 10.0) -> bool:
        """Wait until ``op`` was called at least ``n`` times in all; False on timeout."""
        op = Op(op)
        with self._cond:
            return self._cond.wait_for(lambda: self._counts[op] >= n, timeout)

    # -- used by the port (the device thread) ------------------------------------------

    def take(self, op: Op) -> Fault | None:
        """Count one call of ``op``; return the fault it must suffer, if any."""
        with self._cond:
            self._counts[op] += 1
            steps = self._steps[op]
            fault = None
            if steps:
                step = steps[0]
                if step.skip > 0:
                    step.skip -= 1
                else:
                    fault = step.fault
                    step.times -= 1
                    if step.times == 0:
                        steps.popleft()
                    self._fired.append(Fired(op, fault, self._counts[op]))
            self._cond.notify_all()
            return fault

    def __repr__(self) -> str:
        return f"<FaultPlan {self.name}: {len(self.fired)} fired, {self.pending} pending>"


def _parse_rule(text: str) -> tuple[Op, Fault, int, int]:
    key, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"fault option {text!r} is not key=value")
    times, after = 1, 0
    value, star, times_text = value.partition("*")
    value, at, after_text = value.partition("@")
    try:
        op, fault = Op(key.strip()), Fault(value.strip())
        if star:
            times = int(times_text)
        if at:
            after = int(after_text)
    except ValueError:
        raise ValueError(
            f"bad fault option {text!r}: want <op>=<fault>[@<after>][*<times>], ops "
            f"{', '.join(Op)}, faults {', '.join(Fault)}") from None
    if (fault is Fault.SHORT_WRITE and op is not Op.WRITE) or after < 0 or times < 1:
        raise ValueError(f"bad fault option {text!r}: a short write happens only on write; "
                         "after must be >= 0 and times >= 1")
    return op, fault, after, times


def split_url(url: str) -> tuple[str, FaultPlan | None]:
    """``fault://<inner>#<options>`` -> (inner URL, its plan or None)."""
    prefix = f"{SCHEME}://"
    if not url.lower().startswith(prefix):
        raise SerialException(f"expected a URL like {prefix}<port>#<options>, got {url!r}")
    inner, hash_, options = url[len(prefix):].rpartition("#")
    if not hash_:
        inner, options = options, ""
    if not inner:
        raise SerialException(f"{url!r} names no port to wrap")
    if not options:
        return inner, None
    parts = [p for p in options.split("&") if p]
    names = [p.partition("=")[2] for p in parts if p.startswith("plan=")]
    rules = [p for p in parts if not p.startswith("plan=")]
    if (names and rules) or len(names) > 1:
        raise SerialException(f"{url!r}: give either one plan=<name> or fault rules")
    if names:
        plan = _named.get(names[0])
        if plan is None:
            raise SerialException(f"{url!r}: no fault plan named {names[0]!r} exists "
                                  "(a FaultPlan lives as long as its object)")
        return inner, plan
    return inner, plan_for(url)


def plan_for(url: str) -> FaultPlan:
    """The plan of a ``fault://...#<rules>`` URL: one per distinct rule text, kept for the
    whole process, so counts and one-shot faults survive reopening the port."""
    _, _, options = url.rpartition("#")
    with _registry_lock:
        plan = _from_urls.get(options)
    if plan is not None:
        return plan
    rules = [_parse_rule(p) for p in options.split("&") if p]
    with _registry_lock:
        plan = _from_urls.get(options)
        if plan is None:
            plan = FaultPlan(f"url{next(_ids)}")
            for op, fault, after, times in rules:
                plan.add(op, fault, after=after, times=times)
            _from_urls[options] = plan
    return plan


class FaultSerial(SerialBase):
    """A port that forwards to the port of its inner URL and fails as its plan says."""

    #: The transport sets ``exclusive`` on this port; it is handed on to the inner port
    #: where it means something there (pyserial's native class and subclasses).
    forwards_exclusive: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._inner: SerialBase | None = None
        self._plan: FaultPlan | None = None
        self._inner_url = ""
        self._vanished = False
        super().__init__(*args, **kwargs)

    @property
    def inner(self) -> SerialBase | None:
        """The wrapped port while open."""
        return self._inner

    def _take(self, op: Op) -> Fault | None:
        fault = self._plan.take(op) if self._plan is not None else None
        if fault is Fault.VANISH and op is not Op.OPEN:
            self._vanished = True
        if fault is not None and fault is not Fault.SHORT_WRITE:
            raise make_error(fault, op, self._inner_url)
        if self._vanished and op in (Op.READ, Op.WRITE):
            raise make_error(Fault.VANISH, op, self._inner_url)
        return fault

    def _open_inner(self) -> SerialBase:
        if self._inner is None:
            raise PortNotOpenError()
        return self._inner

    # -- SerialBase --------------------------------------------------------------------

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        self._inner_url, self._plan = split_url(self._port)
        self._vanished = False
        self._take(Op.OPEN)
        inner = serial.serial_for_url(self._inner_url, do_not_open=True, **self.get_settings())
        if self._exclusive and (isinstance(inner, serial.Serial)
                                or getattr(inner, "forwards_exclusive", False)):
            inner.exclusive = True
        inner.open()
        self._inner = inner
        self.is_open = True

    def close(self) -> None:
        if not self.is_open:
            return
        inner, self._inner = self._inner, None
        self.is_open = False
        if inner is not None:
            inner.close()  # a failing close still lets go of the port, as close(2) does
        self._take(Op.CLOSE)

    def _reconfigure_port(self, force_update: bool = False) -> None:
        if self._inner is not None:
            self._inner.apply_settings(self.get_settings())

    @property
    def in_waiting(self) -> int:
        inner = self._open_inner()
        if self._vanished:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return inner.in_waiting

    def read(self, size: int = 1) -> bytes:
        inner = self._open_inner()
        self._take(Op.READ)
        return inner.read(size)

    def write(self, data: Any) -> int:
        inner = self._open_inner()
        data = to_bytes(data)
        if self._take(Op.WRITE) is Fault.SHORT_WRITE:
            n = len(data) // 2
            if n:
                inner.write(data[:n])
            return n
        written = inner.write(data)
        return len(data) if written is None else written

    def flush(self) -> None:
        self._open_inner().flush()

    def reset_input_buffer(self) -> None:
        self._open_inner().reset_input_buffer()

    def reset_output_buffer(self) -> None:
        self._open_inner().reset_output_buffer()

    @property
    def out_waiting(self) -> int:
        return self._open_inner().out_waiting

    def cancel_read(self) -> None:
        if self._inner is not None:
            self._inner.cancel_read()

    def cancel_write(self) -> None:
        if self._inner is not None:
            self._inner.cancel_write()

    def send_break(self, duration: float = 0.25) -> None:
        self._open_inner().send_break(duration)

    def _update_break_state(self) -> None:
        if self._inner is not None:
            self._inner.break_condition = self._break_state

    def _update_rts_state(self) -> None:
        if self._inner is not None:
            self._inner.rts = self._rts_state

    def _update_dtr_state(self) -> None:
        if self._inner is not None:
            self._inner.dtr = self._dtr_state

    @property
    def cts(self) -> bool:
        return self._open_inner().cts

    @property
    def dsr(self) -> bool:
        return self._open_inner().dsr

    @property
    def ri(self) -> bool:
        return self._open_inner().ri

    @property
    def cd(self) -> bool:
        return self._open_inner().cd


def serial_class_for_url(url: str) -> tuple[str, type[FaultSerial]]:
    """pyserial's handler hook: ``serial_for_url`` calls it for ``fault://`` URLs."""
    return url, FaultSerial


def register() -> None:
    """Make ``fault://`` known to ``serial.serial_for_url`` (idempotent; run on import).

    pyserial imports ``<package>.protocol_fault`` for each name in
    ``serial.protocol_handler_packages``; this module answers to both names."""
    sys.modules.setdefault(f"{__name__}.protocol_{SCHEME}", sys.modules[__name__])
    if __name__ not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(__name__)


register()


class FlappingPty:
    """A pty under ``link`` that is replaced by a new one every ``period_s``.

    Each cycle opens a new pty, points ``link`` at it (atomically, as ``PtyServer`` does)
    and closes the previous one, so whoever opens ``link`` meets ptys vanishing between
    its open and its tcsetattr, reads failing with EIO a moment later, and symlinks that
    point at a pty closed a microsecond ago. ``cycles`` counts the ptys made.

    Hand over to a real server in three steps: ``stop()`` ends the flapping (the last pty
    stays open and named), start the server on the same ``link``, then ``close()``. The
    link then never names a pty that was closed, whose number another process could
    have been given since.
    """

    def __init__(self, link: str | os.PathLike[str], period_s: float = 0.0003) -> None:
        self.link = Path(link)
        self.period_s = period_s
        self.cycles = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        return str(self.link)

    def _new(self) -> tuple[int, int]:
        import tty  # POSIX only, like ptys

        master, slave = os.openpty()
        tty.setraw(slave)
        tmp = self.link.with_name(self.link.name + ".flap")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        return master, slave

    @staticmethod
    def _close(fds: tuple[int, int] | None) -> None:
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        while not self._stop.is_set():
            fresh = self._new()
            with self._cond:
                old, self._fds = self._fds, fresh
                self.cycles += 1
                self._cond.notify_all()
            self._close(old)
            self._stop.wait(self.period_s)

    def start(self) -> FlappingPty:
        self._stop.clear()
        with self._cond:
            self._fds = self._new()
        self._thread = threading.Thread(target=self._run, name="flapping-pty", daemon=True)
        self._thread.start()
        return self

    def wait_cycles(self, n: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.cycles >= n, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop flapping; the last pty stays open under ``link`` until ``close()``."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"flapping pty did not stop in {timeout} s")

    def close(self) -> None:
        """Stop flapping and close the last pty."""
        self.stop()
        with self._cond:
            fds, self._fds = self._fds, None
        self._close(fds)

    def __enter__(self) -> FlappingPty:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

