"""``kapmonitor record --headless``: record a session from devices, without a window.

Alarms are evaluated and stored by the same core the GUI uses; the record ends after
``--duration`` or on SIGINT/SIGTERM, with a clean close that writes everything queued.
Sessions a crashed recorder left open are recovered first (and reported).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .common import CliError, db_option

NAME = "record"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="record a session without the GUI",
                       description="Record a session from the given devices until --duration "
                       "has passed or SIGINT/SIGTERM. A secondary record, not a primary alarm "
                       "device.")
    p.add_argument("--headless", action="store_true", required=True,
                   help="no window (required: the GUI records by itself)")
    p.add_argument("--device", "-d", action="append", default=[], metavar="PROTOCOL=PORT",
                   help="a device, e.g. intellivue=/dev/ttyUSB0 or "
                   "bbraun-bcc=socket://10.1.2.3:4001,name=pump (repeatable)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds of (simulated) time")
    p.add_argument("--patient", help="pseudonymous patient id")
    p.add_argument("--weight", type=float, metavar="KG")
    p.add_argument("--mg-per-kg", type=float, metavar="D")
    p.add_argument("--minutes", type=float, metavar="M", help="planned infusion duration")
    p.add_argument("--concentration", type=float, metavar="MG_PER_ML")
    p.add_argument("--room", default="")
    p.add_argument("--clinicians", default="")
    p.add_argument("--alarm", action="append", default=[], metavar="CH.SIDE=LIMIT",
                   help="alarm limit override, e.g. hr.high=130 (repeatable)")
    p.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--epoch", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kapmonitor.alarm_limits import AlarmLimits, LimitsError, parse_override_args
    from kapmonitor.drivers.connect import DeviceSpecError, parse_spec, start_device
    from kapmonitor.drivers.sim.clock import ScaledClock
    from kapmonitor.session import LiveSession, SessionConfig
    from kapmonitor.store import Store, recover_all

    if not args.device:
        raise CliError("name at least one --device PROTOCOL=PORT (see `kapmonitor decode "
                       "--list` for protocols, `kapmonitor ports` for ports)")
    specs = []
    try:
        for text in args.device:
            specs.append(parse_spec(text, [s.name for s in specs]))
    except DeviceSpecError as exc:
        raise CliError(str(exc)) from None
    if args.weight is not None and not 30 <= args.weight <= 250:
        raise CliError(f"weight {args.weight:g} kg is outside 30-250 kg (adult bounds, "
                       "clinical.md §1.4)")
    try:
        limits = AlarmLimits.defaults().with_overrides(parse_override_args(args.alarm))
    except LimitsError as exc:
        raise CliError(str(exc)) from None
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be positive")

    clock = ScaledClock(args.speed, args.epoch)
    store = Store.open(db_option(args))
    for a in recover_all(store):
        print(f"recovered session {a.session_id} left open earlier: {a.reason}",
              file=sys.stderr)
    config = SessionConfig(patient=args.patient, room=args.room, clinicians=args.clinicians,
                           weight_kg=args.weight, dose_mg_per_kg=args.mg_per_kg,
                           duration_min=args.minutes, concentration_mg_ml=args.concentration)
    session = LiveSession(store, config, clock=clock, limits=limits).start()
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for spec in specs:
            start_device(spec, session.attach, session.bus.publish, clock=clock)
        print(f"recording session {session.session_id} from "
              + ", ".join(f"{s.name} ({s.protocol} on {s.port})" for s in specs), flush=True)
        wall = None if args.duration is None else clock.seconds(args.duration)
        done.wait(wall)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        session.close()
        stats = session.recorder.stats
        store.close()
    print(f"session {session.session_id} closed: {stats.numerics} numerics, "
          f"{stats.wave_samples} wave samples, {stats.events} events recorded; recorder "
          f"queue max {stats.max_backlog} batches, {stats.errors} write errors", flush=True)
    return 0
