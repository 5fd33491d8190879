"""``kapmonitor record --headless``: record a session from devices, without a window.

Alarms are evaluated and stored by the same core the GUI uses; the record ends after
``--duration`` or on SIGINT/SIGTERM, with a clean close that writes everything queued.
Sessions a crashed recorder left open are recovered first (and reported).

Everything given is checked before anything is written, so a refused command leaves no
session behind: the programme (weight, dose, duration, concentration) by the same
``dosing.check_programme`` as ``kapmonitor dose`` and the setup dialog (refusals exit 2;
a value outside the usual range is recorded with a warning on standard error, as there is
no one to confirm it here), text fields by their database columns, and every device: its
specification, then its port, opened once exclusively, so a port another recorder holds
is refused instead of splitting its bytes between two records.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .common import (
    CliError,
    bounded_int,
    finite_float,
    open_store,
    positive_float,
    session_ref,
    text_field,
    text_limit,
)

NAME = "record"
#: Longest --duration: a KAP session lasts hours; without --duration the record runs until
#: stopped, so a longer one is a typo (and beyond a timer's range at some point).
MAX_DURATION_S = 7 * 24 * 3600.0
#: Longest simulated speed-up (the simulator keeps up to a few hundred times).
MAX_SPEED = 1000.0
#: --epoch: microseconds since 1970, up to the last day of year 9999.
MAX_EPOCH_US = 253_402_300_799_999_999
#: The clinicians column is free text; a room's list of names fits in this.
CLINICIANS_MAX = 256


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
    p.add_argument("--resume", type=session_ref, metavar="SESSION",
                   help="carry on a session a closed window or a crash left open: same "
                   "session, t0, programme and alarm limits, a gap marker over the outage, "
                   "the delivered dose continued from the pump's counter; devices default "
                   "to the ones it had")
    p.add_argument("--duration", type=positive_float, metavar="SECONDS",
                   help="stop after this many seconds of (simulated) time (at most "
                   f"{MAX_DURATION_S / 86400:g} days)")
    p.add_argument("--patient", help="pseudonymous patient id (no names)")
    p.add_argument("--weight", type=finite_float, metavar="KG",
                   help="patient weight; checked like `kapmonitor dose` (clinical.md §1.4)")
    p.add_argument("--mg-per-kg", type=finite_float, metavar="D", help="planned dose")
    p.add_argument("--minutes", type=finite_float, metavar="M",
                   help="planned infusion duration")
    p.add_argument("--concentration", type=finite_float, metavar="MG_PER_ML")
    p.add_argument("--room", default="")
    p.add_argument("--clinicians", default="")
    p.add_argument("--alarm", action="append", default=[], metavar="CH.SIDE=LIMIT",
                   help="alarm limit override, e.g. hr.high=130 (repeatable)")
    p.add_argument("--speed", type=positive_float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--epoch", type=bounded_int(0, MAX_EPOCH_US, "microseconds since 1970"),
                   default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kapmonitor.alarm_limits import AlarmLimits, LimitsError, parse_override_args
    from kapmonitor.drivers.sim.clock import ScaledClock
    from kapmonitor.session import LiveSession
    from kapmonitor.store import recover_all

    if args.resume is not None:
        given = [o for o, v in (("--patient", args.patient), ("--weight", args.weight),
                                ("--mg-per-kg", args.mg_per_kg), ("--minutes", args.minutes),
                                ("--concentration", args.concentration), ("--room", args.room),
                                ("--clinicians", args.clinicians), ("--alarm", args.alarm))
                 if v]
        if given:
            raise CliError(f"{', '.join(given)} cannot be changed on --resume: the programme "
                           "and limits come from the session being resumed")
        return _resume(args)
    if not args.device:
        raise CliError("name at least one --device PROTOCOL=PORT (see `kapmonitor decode "
                       "--list` for protocols, `kapmonitor ports` for ports)")
    specs = _specs(args.device)
    config, warnings = _config(args)
    try:
        limits = AlarmLimits.defaults().with_overrides(parse_override_args(args.alarm))
    except LimitsError as exc:
        raise CliError(str(exc)) from None
    if args.duration is not None and args.duration > MAX_DURATION_S:
        raise CliError(f"--duration {args.duration:g} s is longer than "
                       f"{MAX_DURATION_S / 86400:g} days; leave it out to record until "
                       "stopped")
    if args.speed > MAX_SPEED:
        raise CliError(f"--speed {args.speed:g} is above {MAX_SPEED:g}")
    _probe(specs)

    for warning in warnings:
        print(f"kapmonitor: warning: {warning} (recorded as given)", file=sys.stderr)
    clock = ScaledClock(args.speed, args.epoch)
    store = open_store(args, create=True)
    try:
        for a in recover_all(store):
            print(f"recovered session {a.session_id} left open earlier: {a.reason}",
                  file=sys.stderr)
        session = LiveSession(store, config, clock=clock, limits=limits).start()
    except BaseException:
        store.close()
        raise
    return _record(args, store, session, specs, clock)


def _specs(texts: list[str]) -> list[Any]:
    from kapmonitor.drivers.connect import DeviceSpecError, parse_spec

    specs: list[Any] = []
    try:
        for text in texts:
            specs.append(parse_spec(text, [s.name for s in specs]))
    except DeviceSpecError as exc:
        raise CliError(str(exc)) from None
    return specs


def _probe(specs: list[Any]) -> None:
    from kapmonitor.drivers.connect import DeviceSpecError, probe

    try:
        for spec in specs:
            probe(spec)
    except DeviceSpecError as exc:
        raise CliError(str(exc)) from None


def _resume(args: argparse.Namespace) -> int:
    """``--resume``: the session must be open and its recorder gone (a live recorder is
    never taken over); the other abandoned sessions are recovered as usual."""
    from kapmonitor.drivers.sim.clock import ScaledClock
    from kapmonitor.session import LiveSession
    from kapmonitor.store import find_abandoned, recover
    from kapmonitor.store.recovery import owner_alive

    store = open_store(args, create=False)
    try:
        row = store.session_row(args.resume)
        if row.status != "open":
            raise CliError(f"session {row.id} is {row.status}: only an open session can be "
                           "resumed")
        alive = owner_alive(row)
        if alive:
            raise CliError(f"session {row.id} is still being recorded ({alive})")
        specs = _specs(args.device or [
            f"{protocol}={port},name={source}" for source, protocol, port in
            store.devices(row.id)])
        if not specs:
            raise CliError(f"session {row.id} had no devices; name them with --device")
        _probe(specs)
        for a in find_abandoned(store):
            if a.session_id != row.id:
                recover(store, a)
                print(f"recovered session {a.session_id} left open earlier: {a.reason}",
                      file=sys.stderr)
        clock = ScaledClock(args.speed, args.epoch)
        session = LiveSession.resume(store, row.id, clock=clock).start()
    except BaseException:
        store.close()
        raise
    print(f"resumed session {row.id} (t0 "
          f"{'not set' if session.t0_us is None else 'kept'}, phase {session.phase.value})",
          flush=True)
    return _record(args, store, session, specs, clock)


def _record(args: argparse.Namespace, store: Any, session: Any, specs: list[Any],
            clock: Any) -> int:
    from kapmonitor.drivers.connect import start_device

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
        unwritten = session.close()
        stats = session.recorder.stats
        store.close()
    lost = ""
    if stats.dropped_wave_samples or stats.dropped_numerics:
        lost = (f"; {stats.dropped_wave_samples} wave samples and {stats.dropped_numerics} "
                "numerics dropped while the database was unavailable (counted in the record)")
    if unwritten:  # the database refused to the end: say what is missing, exit 1
        print(f"session {session.session_id} NOT closed: {unwritten}; it stays open and "
              f"`kapmonitor recover` closes it with a gap marker{lost}", file=sys.stderr,
              flush=True)
        return 1
    print(f"session {session.session_id} closed: {stats.numerics} numerics, "
          f"{stats.wave_samples} wave samples, {stats.events} events recorded; recorder "
          f"queue max {stats.max_backlog} batches, {stats.errors} write errors{lost}",
          flush=True)
    return 0


def _config(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The session configuration, every field checked, and the warnings to print: the
    programme by ``dosing.check_programme`` (the same check as ``kapmonitor dose`` and
    the setup dialog, on the fields given), the text by its database column."""
    from kapmonitor.dosing import DoseProgramme, check_programme
    from kapmonitor.session import SessionConfig
    from kapmonitor.store.schema import PatientRow, SessionRow

    patient = text_field(args.patient, "--patient", text_limit(PatientRow.__table__.c.pseudonym))
    room = text_field(args.room, "--room", text_limit(SessionRow.__table__.c.room))
    clinicians = text_field(args.clinicians, "--clinicians", CLINICIANS_MAX)
    check = check_programme(DoseProgramme(
        weight_kg=args.weight, dose_mg_per_kg=args.mg_per_kg, duration_min=args.minutes,
        concentration_mg_ml=args.concentration), partial=True)
    if not check.ok:
        raise CliError(check.reason())
    config = SessionConfig(patient=patient or None, room=room, clinicians=clinicians,
                           weight_kg=args.weight, dose_mg_per_kg=args.mg_per_kg,
                           duration_min=args.minutes, concentration_mg_ml=args.concentration)
    return config, [w.message for w in check.warnings]
