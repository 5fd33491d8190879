"""``kapmonitor decode``: a raw capture in, one JSON object per decoded message out.

For looking at what a device actually sent (a capture from ``spy://``, a serial sniffer or
a device server log) without the app: messages go to stdout as JSON lines, and the count
of frames and of errors by reason goes to stderr. Bad bytes are counted, never fatal, so
the exit status is 0 for any input that could be read.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
from typing import Any

from .common import CliError

NAME = "decode"
CHUNK = 65536


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="decode a raw device capture to JSON",
                       description="Decode a raw capture with a protocol's codec: one JSON "
                       "object per message on stdout, frame and error counts on stderr.")
    p.add_argument("file", nargs="?", help="capture file, or - for standard input")
    p.add_argument("--protocol", "-p", help="protocol name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered protocol names")
    p.add_argument("--from", dest="direction", choices=("device", "host"), default="device",
                   help="which side sent the capture (default: the device)")
    p.set_defaults(func=run)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {"type": type(obj).__name__}
        out.update({f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
        return out
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def run(args: argparse.Namespace) -> int:
    from kapmonitor.drivers import registry
    from kapmonitor.drivers.codecs.base import Role

    if args.list:
        for name in registry.available():
            print(name)
        return 0
    if not args.protocol:
        raise CliError("--protocol is required (see `kapmonitor decode --list`)")
    if not args.file:
        raise CliError("name a capture file, or - for standard input")
    try:
        entry = registry.get(args.protocol)
    except registry.UnknownProtocolError as exc:
        raise CliError(str(exc)) from None
    role = Role.HOST if args.direction == "device" else Role.DEVICE
    codec = entry.codec_class()(role)
    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    n = 0
    out = sys.stdout
    with stream:
        while chunk := stream.read(CHUNK):
            for message in codec.feed(chunk):
                out.write(json.dumps(_jsonable(message), allow_nan=False) + "\n")
                n += 1
    stats = codec.stats
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items())) or "none"
    print(f"{entry.name}: {n} messages from {stats.bytes_in} bytes, {stats.error_count} "
          f"errors ({reasons})", file=sys.stderr)
    return 0
