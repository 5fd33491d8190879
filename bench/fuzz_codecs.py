"""Coverage-guided fuzzing of every registered protocol's codec and host (issue 12).

    .venv/bin/python bench/fuzz_codecs.py [--seconds 30] [--protocol NAME ...]
                                          [--target codec|host|message] [--corpus DIR]

For each protocol three targets run, one after the other, each for ``--seconds``:

``codec``
    The input's first byte is a chunk size (0: all at once), the rest is fed in pieces
    of that size to a fresh codec in each role (host: what a device sends; device: what a
    host sends). ``feed`` must not raise, nor count an ``internal`` error (a codec's own
    safety net catching a bug), and every message it returns must survive
    ``decode(encode(m)) == m`` unless ``encode`` refuses it with ``ValueError`` (a
    decoder may accept more than the encoder writes).
``host``
    The input is a host script (tests/protocols/test_fuzz_regressions.py,
    ``run_host_script``): ``connection_made``, then records of "advance the clock, tick,
    deliver these bytes", so a mutation can reach states that need a handshake and time.
    ``connection_made``, ``tick`` and ``data_received`` must not raise.
``message``
    Checksums keep mutated bytes from reaching a host's handling of odd *values*, so
    this target replays a recorded session to a fresh host with some of its messages
    changed as the input says (a field set to 0, -1, 0xFFFF, NaN, "", a tuple emptied,
    ...) and re-encoded by the codec. The host must not raise, and every changed message
    the codec encodes must round-trip.

Seeds: the byte strings of the protocol's own tests (the document's example frames) and a
1 s and a 3 s session of the host against the simulator's peer on a ``MemoryLink`` (both
directions for the codec, the host's side as a script for the host).

Engines: ``atheris`` (libFuzzer, coverage-guided on the protocol's codec and host modules
and the kapmonitor modules they import, all instrumented; ``pip install atheris``,
optional) runs each target in a child process for the time given; ``python`` (used when
atheris is not installed) is a small coverage-guided loop on ``sys.settrace`` line pairs,
slower, with no extra dependency.

Per protocol and target it prints executions, executions/s, libFuzzer's edge and feature
counts (atheris; the python engine's line pairs), the function lines of the protocol's
modules the final corpus reaches, and the distinct failures found. A failing input is
written to tests/protocols/fuzz_cases/ as ``<protocol>-<target>-<exception>-in-<function>
.bin`` (host and message scripts start with ``HOST_SCRIPT_MAGIC``) for triage: fix it,
rename the file after the problem (keeping ``-roundtrip-``/``-message-`` in the name),
and test_fuzz_regressions.py replays it from then on. A message that does not round-trip
is only reported (its bytes do not hold it): add it to ``ROUND_TRIP_MESSAGES`` there.
A hang or out-of-memory is libFuzzer's (``-timeout=10``) and saved the same way. Exit
status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.protocols.test_fuzz_regressions: seeds and scripts

CASES_DIR = REPO / "tests" / "protocols" / "fuzz_cases"
TARGETS = ("codec", "host", "message")
CODEC_MAX_LEN = 4096
HOST_MAX_LEN = 16384
MESSAGE_MAX_LEN = 256
MAX_LEN = {"codec": CODEC_MAX_LEN, "host": HOST_MAX_LEN, "message": MESSAGE_MAX_LEN}
#: Length of the recorded session the message target changes.
SESSION_S = 2.0


# --- which modules belong to a protocol ------------------------------------------------------


def protocol_modules(stem: str) -> list[str]:
    """The codec and host modules of a protocol (IntelliVue's codec is five modules)."""
    drivers = REPO / "drivers"
    mods = [f"kapmonitor.drivers.codecs.{p.stem}"
            for p in sorted((drivers / "codecs").glob(f"{stem}*.py"))
            if p.stem == stem or p.stem.startswith(stem + "_")]
    if (drivers / "devices" / f"{stem}.py").exists():
        mods.append(f"kapmonitor.drivers.devices.{stem}")
    return mods


def module_file(module: str) -> Path:
    parts = module.split(".")
    assert parts[:2] == ["kapmonitor", "drivers"]
    return REPO / "drivers" / Path(*parts[2:]).with_suffix(".py")


def executable_lines(path: Path) -> set[int]:
    """Line numbers that carry bytecode in the file's functions (module and class bodies
    run at import, so they are left out of the count)."""
    lines: set[int] = set()
    todo = [compile(path.read_text(encoding="utf-8"), str(path), "exec")]
    while todo:
        code = todo.pop()
        if code.co_flags & inspect.CO_OPTIMIZED:  # a function, not a module or class body
            lines.update(ln for _, _, ln in code.co_lines() if ln is not None)
        todo.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return lines


# --- the targets (run in the fuzzing process, after any instrumentation) ---------------------


class Finding(Exception):
    """A target failed in a way that is not an exception from the code under test."""


class RoundTripError(Finding):
    """``decode(encode(m)) != m``; ``args[0]`` is the message's type."""


#: Exceptions a codec's safety net caught (counted as "internal") in this execution.
_MASKED: list[BaseException] = []


@dataclass
class Target:
    protocol: str
    target: str
    cases: Path
    log: Path | None = None
    save: bool = True
    found: set[tuple[str, ...]] = field(default_factory=set)
    failures: int = 0
    unencodable: int = 0
    _entry: Any = None
    _masked: list[BaseException] = field(default_factory=list)
    _timeline: list[tuple[int, Any, bytes]] | None = None
    _script: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        from kapmonitor.drivers import registry
        from kapmonitor.drivers.codecs.base import CodecStats, Role

        self._entry = registry.get(self.protocol)
        self._codec_cls = self._entry.codec_class()
        self._host_cls = self._entry.host_class()
        self._roles = (Role.HOST, Role.DEVICE)
        # A codec's own safety net counts a bug as "internal" and carries on; keep the
        # exception it caught so the failure report can say where it was.
        if not getattr(CodecStats.error, "_fuzz_wrapped", False):
            error = CodecStats.error

            def error_keeping_exception(stats: Any, reason: str, n: int = 1) -> None:
                if reason == "internal":
                    exc = sys.exc_info()[1]
                    _MASKED.append(exc if exc is not None else Finding("internal error"))
                error(stats, reason, n)

            error_keeping_exception._fuzz_wrapped = True  # type: ignore[attr-defined]
            CodecStats.error = error_keeping_exception  # type: ignore[method-assign]

    def __call__(self, data: bytes) -> None:
        """One execution; never raises (failures are recorded and saved)."""
        self._masked = _MASKED
        _MASKED.clear()
        try:
            if self.target == "codec":
                self._codec(data)
            elif self.target == "host":
                self._host(data)
            else:
                self._message(data)
        except Exception as e:  # the point of the exercise
            self._record(data, e, "raised")
            return
        if self._masked:
            self._record(data, self._masked[0], "internal")

    def _codec(self, data: bytes) -> None:
        chunk = data[0] if data else 0
        payload = data[1:]
        size = chunk or len(payload) or 1
        for role in self._roles:
            codec = self._codec_cls(role)
            msgs: list[Any] = []
            for i in range(0, len(payload), size):
                msgs.extend(codec.feed(payload[i : i + size]))
            for m in msgs:
                self._round_trip(codec, role, m)

    def _round_trip(self, codec: Any, role: Any, m: Any) -> None:
        try:
            wire = codec.encode(m)
        except ValueError:
            self.unencodable += 1
            return
        back = self._codec_cls(role).feed(wire)
        if not _same(back, [m]):
            raise RoundTripError(type(m).__name__,
                                 f"({role.value} role) {m!r} -> {wire!r} -> {back!r}")

    def _host(self, data: bytes) -> None:
        from tests.protocols.test_fuzz_regressions import run_host_script

        run_host_script(self._host_cls(self._entry.kind), data)

    def _message(self, data: bytes) -> None:
        """Replay a recorded session to the host with its messages changed as ``data``
        says, each re-encoded by the codec (so checksums are right and the change reaches
        the host), and round-trip every changed message."""
        from tests.protocols.test_fuzz_regressions import T0_US

        if self._timeline is None:
            self._timeline = session_timeline(self.protocol)
        timeline = self._timeline
        msg_at = [i for i, (_, m, _) in enumerate(timeline) if m is not None]
        changes: dict[int, Any] = {}
        r = _Bytes(data)
        while msg_at and r.left() >= 3:
            i = msg_at[r.u16() % len(msg_at)]
            changed = mutate_message(changes.get(i, timeline[i][1]), r)
            if changed is not None:
                changes[i] = changed
        codec = self._codec_cls(self._roles[0])
        host = self._host_cls(self._entry.kind)
        script = self._script = bytearray()
        last = T0_US
        host.connection_made(T0_US)
        for i, (now, m, wire) in enumerate(timeline):
            if i in changes:
                m = changes[i]
                try:
                    wire = codec.encode(m)
                except Exception:  # the change made no valid message (wrong type, range)
                    self.unencodable += 1
                    continue
                self._round_trip(codec, self._roles[0], m)
            dt_ms = (now - last) // 1000
            last = now
            script += b"".join(bytes((min(255, dt_ms - k), 0)) for k in range(0, dt_ms, 255))
            if dt_ms:
                host.tick(now)
            for k in range(0, len(wire), 255):
                script += bytes((0, len(wire[k : k + 255]))) + wire[k : k + 255]
                host.data_received(wire[k : k + 255], now)
            host.take_outgoing()

    def _record(self, data: bytes, exc: BaseException, how: str) -> None:
        self.failures += 1
        where = _innermost(exc)
        kind = "roundtrip" if isinstance(exc, RoundTripError) else how
        if kind == "roundtrip":
            where = (str(exc.args[0]),)  # the message type
        sig = (self.target, kind, type(exc).__name__, *where)
        if sig in self.found:
            return
        self.found.add(sig)
        func = where[0] if where else "unknown"
        name = _slug(f"{self.protocol}-{self.target}-{type(exc).__name__}-in-{func}")
        if kind == "internal":
            name = _slug(f"{self.protocol}-{self.target}-internal-{type(exc).__name__}-in-{func}")
        elif kind == "roundtrip":
            name = _slug(f"{self.protocol}-roundtrip-{func}")
        from tests.protocols.test_fuzz_regressions import HOST_SCRIPT_MAGIC

        if self.target == "message" and kind == "roundtrip":
            # The bytes of a changed message do not hold the message (its encoding is
            # what went wrong): report it for ROUND_TRIP_MESSAGES in the regression tests.
            self._report(data, exc, kind, where, None)
            return
        if self.target == "codec":
            content = data[1:]
        elif self.target == "host":
            content = HOST_SCRIPT_MAGIC + data
        else:  # what the host was given up to the failure, as a host script
            content = HOST_SCRIPT_MAGIC + bytes(self._script)
        path = self.cases / f"{name}.bin"
        if self.save and not path.exists():
            self.cases.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        self._report(data, exc, kind, where, path)

    def _report(self, data: bytes, exc: BaseException, kind: str, where: tuple[str, ...],
                path: Path | None) -> None:
        report = {
            "protocol": self.protocol, "target": self.target, "kind": kind,
            "exception": f"{type(exc).__name__}: {exc}"[:2000], "where": list(where),
            "file": str(path) if path else None, "input": data.hex(),
            "traceback": "".join(traceback.format_exception(exc))[-3000:],
        }
        if not self.save:
            return
        print(f"\n!!! {self.protocol} {self.target}: {kind} {report['exception'][:1000]}"
              f" -> {path.name if path else 'no file'}", file=sys.stderr, flush=True)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(json.dumps(report) + "\n")


def session_timeline(protocol: str) -> list[tuple[int, Any, bytes]]:
    """A recorded session as the host saw it: (time, message the host codec completed
    then, its bytes), or (time, None, b"") for a tick without data."""
    from kapmonitor.drivers import registry
    from kapmonitor.drivers.codecs.base import Role
    from tests.protocols.test_fuzz_regressions import T0_US, record_session

    entry = registry.get(protocol)
    script = record_session(entry, SESSION_S).host_script
    codec = entry.codec_class()(Role.HOST)
    now, out, i = T0_US, [], 0
    while i + 1 < len(script):
        dt, size = script[i], script[i + 1]
        data = script[i + 2 : i + 2 + size]
        i += 2 + size
        now += dt * 1000
        msgs = codec.feed(data) if data else []
        if dt and not msgs:
            out.append((now, None, b""))
        out.extend((now, m, codec.encode(m)) for m in msgs)
    return out


class _Bytes:
    """Reads the fuzz input as the choices of a message mutation."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


_INTS = (0, 1, -1, 2, 3, 7, 8, 9, 10, 15, 16, 99, 100, 127, 128, 255, 256, 999, 1000, 0x7FFF,
         0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, -0x8000, 10**6)
_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-9, 1e9, -1e9, 99.99, 1e300, float("nan"),
           float("inf"), float("-inf"))
_STRS = ("", " ", "-", "--", "0", "00", "-1", "A", "ZZ", "?", "^", "|", ";", ":", ".",
         "\x00", "\x7f", "\u00e9", "9" * 12, "ACTIV", "STOP", "AL_OCCLU", "ml", "ml/h")


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, value) of every field, nested dataclasses and tuples included."""
    out = [(path, obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out += _leaves(getattr(obj, f.name), (*path, f.name))
    elif isinstance(obj, tuple):
        for i, v in enumerate(obj):
            out += _leaves(v, (*path, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, tuple):
        return (*obj[:head], _replace(obj[head], rest, value), *obj[head + 1 :])
    return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value)})


def _new_value(old: Any, r: _Bytes) -> Any:
    op = r.u8()
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        if op < 128:
            new = _INTS[op % len(_INTS)]
        elif op < 192:
            new = old ^ (1 << (op % 32))
        else:
            new = old + (op % 5) - 2
        try:
            return type(old)(new)  # an enum keeps its type if the value is a member
        except (ValueError, TypeError):
            return new
    if isinstance(old, float):
        return _FLOATS[op % len(_FLOATS)] if op < 200 else old * (op - 210)
    if isinstance(old, str):
        if op < 128:
            return _STRS[op % len(_STRS)]
        if op < 160:
            return old[:-1]
        if op < 192:
            return old * 2 if len(old) < 64 else old  # repeated doubling would not end
        return old + r.take(op % 8).decode("latin-1")
    if isinstance(old, bytes):
        if op < 64:
            return old[: op % (len(old) + 1)]
        if op < 128 and old:
            i = r.u16() % len(old)
            return old[:i] + bytes((r.u8(),)) + old[i + 1 :]
        return old + r.take(op % 16)
    if isinstance(old, tuple):
        if not old or op < 64:
            return ()
        i = r.u8() % len(old)
        if op < 128:
            return old[:i] + old[i + 1 :]
        if op < 192:
            return old[: i + 1] + old[i:]
        return old[::-1]
    return None  # None (its type is unknown) or a dataclass (change its fields instead)


def mutate_message(m: Any, r: _Bytes) -> Any | None:
    """``m`` with one field (picked by ``r``) changed, or None if that gave no valid
    message (the dataclass refused it)."""
    leaves = _leaves(m)
    path, old = leaves[r.u8() % len(leaves)]
    new = _new_value(old, r)
    if new is None:
        return None
    try:
        return _replace(m, path, new)
    except (ValueError, TypeError):
        return None


def _same(a: list[Any], b: list[Any]) -> bool:
    try:
        if a == b:
            return True
    except (ValueError, TypeError):  # numpy arrays inside
        pass
    return repr(a) == repr(b)  # NaN != NaN, but prints the same


def _innermost(exc: BaseException) -> tuple[str, ...]:
    """(function, file:line) of the innermost frame in the project's code."""
    tb = exc.__traceback__
    best: tuple[str, ...] = ()
    for fs in traceback.extract_tb(tb) if tb else []:
        if str(REPO / "drivers") in fs.filename or "kapmonitor" in fs.filename:
            best = (fs.name, f"{Path(fs.filename).name}:{fs.lineno}")
    return best


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


# --- seeds --------------------------------------------------------------------------------------


def seeds(protocol: str) -> dict[str, list[bytes]]:
    """Initial corpus per target."""
    from kapmonitor.drivers import registry
    from tests.protocols.test_fuzz_regressions import (
        document_frames,
        raw_script,
        record_session,
    )

    entry = registry.get(protocol)
    codec: list[bytes] = []
    host: list[bytes] = []
    for frame in document_frames(entry):
        codec += [b"\x00" + frame, b"\x01" + frame]
        host.append(raw_script(frame, chunk=255, dt_ms=20))
    for secs in (1.0, 3.0):
        s = record_session(entry, secs)
        for wire in (s.peer_sent, s.host_sent):
            if wire:
                codec += [b"\x00" + wire[: CODEC_MAX_LEN - 1], b"\x07" + wire[: CODEC_MAX_LEN - 1]]
        host.append(s.host_script[:HOST_MAX_LEN])
    rng = random.Random(1)
    message = [b"", *(rng.randbytes(n) for n in (3, 6, 12, 24, 48, 96))]
    return {"codec": codec, "host": host, "message": message}


def write_seeds(corpus: Path, inputs: Iterable[bytes]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(inputs):
        (corpus / f"seed-{i:03d}").write_bytes(data)


# --- line coverage of a corpus ---------------------------------------------------------------


def line_coverage(protocol: str, target: str, inputs: Iterable[bytes]) -> tuple[int, int]:
    """Lines of the target's modules (codec: the codec's; host: the codec's and the
    host's) that ``inputs`` reach, and how many there are."""
    from kapmonitor.drivers import registry
    from tests.protocols.test_fuzz_regressions import module_stem

    mods = protocol_modules(module_stem(registry.get(protocol)))
    if target == "codec":
        mods = [m for m in mods if ".codecs." in m]
    files = {str(module_file(m)) for m in mods}
    total = sum(len(executable_lines(Path(f))) for f in files)
    hit: set[tuple[str, int]] = set()

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            hit.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def glob(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename in files:
            hit.add((frame.f_code.co_filename, frame.f_lineno))
            return local
        return None

    run = Target(protocol, target, cases=CASES_DIR, save=False)
    if target == "message":  # record the session before tracing: it runs the host too
        run._timeline = session_timeline(protocol)
    sys.settrace(glob)
    try:
        for data in inputs:
            run(data)
    finally:
        sys.settrace(None)
    return len(hit), total


# --- the pure-Python engine ------------------------------------------------------------------

INTERESTING = (b"\x00", b"\xff", b"\r", b"\n", b"\r\n", b"\x01", b"\x02", b"\x03", b"\x7e",
               b"\x7d", b"\xc0", b"\xc1", b"\x7f", b"0", b"9", b"-", b"^", b"|", b";", b"!")


def mutate(rng: random.Random, data: bytes, corpus: list[bytes], max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 2:
            b[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 4 and b:
            start = rng.randrange(len(b))
            b[pos:pos] = b[start : start + rng.randint(1, 64)]
        elif op == 5:
            b[pos:pos] = rng.choice(INTERESTING)
        elif op == 6 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            b = b[:pos] + other[cut:]
        elif op == 7 and b:
            b[0] = rng.choice((0, 1, 2, 3, 7, 16, 64, 255))
    return bytes(b[:max_len])


def python_engine(protocol: str, target: str, corpus_dir: Path, seconds: float,
                  cases: Path, max_len: int) -> dict[str, Any]:
    """A small coverage-guided loop: keep a mutant when it reaches a new (line, line)
    pair in the protocol's modules."""
    from kapmonitor.drivers import registry
    from tests.protocols.test_fuzz_regressions import module_stem

    files = {str(module_file(m)) for m in protocol_modules(module_stem(registry.get(protocol)))}
    run = Target(protocol, target, cases=cases)
    edges: set[tuple[int, int, int]] = set()
    new: list[tuple[int, int, int]] = []
    last: dict[int, int] = {}

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            key = id(frame)
            e = (id(frame.f_code), last.get(key, 0), frame.f_lineno)
            last[key] = frame.f_lineno
            if e not in edges:
                new.append(e)
        return local

    def glob(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename in files else None

    corpus = [p.read_bytes() for p in sorted(corpus_dir.iterdir())]
    rng = random.Random(1)
    execs = 0
    t0 = time.monotonic()

    def execute(data: bytes) -> bool:
        nonlocal execs
        new.clear()
        last.clear()
        sys.settrace(glob)
        try:
            run(data)
        finally:
            sys.settrace(None)
        execs += 1
        if new:
            edges.update(new)
            return True
        return False

    for data in corpus:
        execute(data)
    while time.monotonic() - t0 < seconds:
        data = mutate(rng, rng.choice(corpus), corpus, max_len)
        if execute(data):
            corpus.append(data)
            (corpus_dir / f"py-{len(corpus):06d}").write_bytes(data)
    dt = time.monotonic() - t0
    return {"execs": execs, "seconds": dt, "edges": len(edges), "features": None,
            "failures": len(run.found)}


# --- the atheris engine -------------------------------------------------------------------------


def atheris_worker(args: argparse.Namespace) -> None:
    """Child process: instrument the protocol's modules, then hand over to libFuzzer."""
    import atheris

    from kapmonitor.drivers import registry

    protocol, target = args.worker
    entry = registry.get(protocol)
    stem = entry.codec.partition(":")[0].rsplit(".", 1)[-1]
    with atheris.instrument_imports(include=protocol_modules(stem)):
        entry.codec_class()
        entry.host_class()
    run = Target(protocol, target, cases=args.cases, log=args.log)
    max_len = MAX_LEN[target]
    libfuzzer = [
        sys.argv[0], str(args.corpus_dir),
        f"-max_total_time={max(1, round(args.seconds))}", "-print_final_stats=1",
        f"-max_len={max_len}", "-timeout=10", "-rss_limit_mb=2048",
        f"-artifact_prefix={args.artifacts}/", "-seed=1",
    ]
    atheris.Setup(libfuzzer, run)
    atheris.Fuzz()


_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_DONE = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")  # last: DONE


def atheris_engine(protocol: str, target: str, corpus_dir: Path, seconds: float,
                   cases: Path, work: Path) -> dict[str, Any]:
    log = work / f"{protocol}-{target}.failures.jsonl"
    artifacts = work / f"{protocol}-{target}-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    execs, cov, ft, crashes_outside = 0, 0, 0, 0
    t0 = time.monotonic()
    for _attempt in range(5):  # a libFuzzer-level failure (hang, OOM) ends a child early
        left = seconds - (time.monotonic() - t0)
        if left < 1:
            break
        cmd = [sys.executable, __file__, "--worker", protocol, target,
               "--corpus-dir", str(corpus_dir), "--seconds", f"{left:.0f}",
               "--cases", str(cases), "--log", str(log), "--artifacts", str(artifacts)]
        out = work / f"{protocol}-{target}.libfuzzer-{_attempt}.log"
        with out.open("w") as f:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False, cwd=REPO)
        text = out.read_text(errors="replace")
        stats = {k: int(v) for k, v in _STAT.findall(text)}
        execs += stats.get("number_of_executed_units", 0)
        done = _DONE.findall(text)
        if done:
            _, c, f_, _ = done[-1]
            cov, ft = max(cov, int(c)), max(ft, int(f_))
        if "stat::number_of_executed_units" in text and not list(artifacts.iterdir()):
            break
        for art in sorted(artifacts.iterdir()):  # timeout-*, oom-*, crash-*
            kind = art.name.split("-")[0]
            crashes_outside += 1
            if target == "message":  # mutation choices, not bytes a device sent
                dest = work / f"{protocol}-message-{kind}.input"
                art.replace(dest)
            else:
                dest = cases / f"{protocol}-{target}-{kind}.bin"
                data = art.read_bytes()
                if not dest.exists():
                    from tests.protocols.test_fuzz_regressions import HOST_SCRIPT_MAGIC

                    cases.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data[1:] if target == "codec" else HOST_SCRIPT_MAGIC + data)
                art.unlink()
            print(f"\n!!! {protocol} {target}: libFuzzer {kind} -> {dest} (log: {out})",
                  file=sys.stderr)
        if not done and "stat::" not in text:
            print(text[-2000:], file=sys.stderr)
            break
    reports = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {"execs": execs, "seconds": time.monotonic() - t0, "edges": cov, "features": ft,
            "failures": len({(r["kind"], r["exception"].split(":")[0], *r["where"])
                             for r in reports}) + crashes_outside}


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0,
                   help="fuzzing time per protocol and target (default 30: 60 s a protocol)")
    p.add_argument("--protocol", action="append", help="only these protocols (repeatable)")
    p.add_argument("--target", action="append", choices=TARGETS, help="only these targets")
    p.add_argument("--engine", choices=("auto", "atheris", "python"), default="auto")
    p.add_argument("--corpus", type=Path, help="keep the corpora here (default: a temp dir)")
    p.add_argument("--cases", type=Path, default=CASES_DIR,
                   help="where failing inputs are written (default tests/protocols/fuzz_cases)")
    # internal: the atheris child process
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--corpus-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        atheris_worker(args)
        return 0

    from kapmonitor.drivers import registry

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "python"
        else:
            engine = "atheris"
    protocols = args.protocol or registry.available()
    targets = args.target or list(TARGETS)
    with contextlib.ExitStack() as stack:
        root = args.corpus or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="kap-fuzz-")))
        print(f"engine {engine}, {args.seconds:g} s per protocol and target, corpora in {root}")
        print(f"{'protocol':11} {'target':7} {'execs':>9} {'execs/s':>8} {'edges':>6} "
              f"{'feat':>6} {'lines':>14} {'corpus':>6} {'crashes':>7}")
        failed = 0
        for name in protocols:
            seed = seeds(name)
            for target in targets:
                corpus = root / name / target
                write_seeds(corpus, seed[target])
                if engine == "atheris":
                    r = atheris_engine(name, target, corpus, args.seconds, args.cases, root)
                else:
                    max_len = MAX_LEN[target]
                    r = python_engine(name, target, corpus, args.seconds, args.cases, max_len)
                inputs = [f.read_bytes() for f in sorted(corpus.iterdir())]
                lines, total = line_coverage(name, target, inputs)
                failed += r["failures"]
                feat = "-" if r["features"] is None else str(r["features"])
                print(f"{name:11} {target:7} {r['execs']:9d} {r['execs'] / r['seconds']:8.0f} "
                      f"{r['edges']:6d} {feat:>6} {lines:5d}/{total:<4d}{100 * lines / total:4.0f}%"
                      f" {len(inputs):6d} {r['failures']:7d}", flush=True)
        where = args.cases.relative_to(REPO) if args.cases.is_relative_to(REPO) else args.cases
        print(f"(edges/feat: libFuzzer's cov/ft over the instrumented modules (python engine: "
              f"line pairs); lines: function lines of the codec's modules (codec) or the "
              f"codec's and host's (host, message) the final corpus reaches; crashes: "
              f"distinct failures, saved under {where})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
