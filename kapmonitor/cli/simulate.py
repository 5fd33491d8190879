"""``kapmonitor simulate``: simulated devices that speak the real protocols.

Opens a pseudo-terminal (or, with ``--tcp PORT``, a loopback TCP listener like a serial
device server) per device and prints one ``PROTOCOL PORT`` line for each, flushed at once,
so a script or ``kapmonitor record`` can connect exactly as to hardware. Runs until the
scenario ends or SIGINT/SIGTERM. Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .common import CliError, bounded_int, positive_float

NAME = "simulate"
#: Fastest simulated time; the peers keep up to a few hundred times real time.
MAX_SPEED = 1000.0
#: Seeds are 32-bit (numpy's generators take no more).
SEED = bounded_int(0, 2**32 - 1, "a 32-bit seed")
#: Microseconds since 1970, to the last day of year 9999.
EPOCH = bounded_int(0, 253_402_300_799_999_999, "microseconds since 1970")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="run simulated monitor and pump",
                       description="Serve a simulated patient monitor and infusion pump on "
                       "pseudo-terminals (or TCP), speaking the chosen protocols byte for byte. "
                       "Prints one 'PROTOCOL PORT' line per device. SIMULATED: never a patient.")
    p.add_argument("--monitor", default="intellivue", metavar="PROTOCOL",
                   help="monitor protocol, or 'none' (default: intellivue)")
    p.add_argument("--pump", default="bbraun-bcc", metavar="PROTOCOL",
                   help="pump protocol, or 'none' (default: bbraun-bcc)")
    p.add_argument("--scenario", default="standard",
                   help="scenario name or TOML file (see --list-scenarios)")
    p.add_argument("--list-scenarios", action="store_true", help="list shipped scenarios")
    p.add_argument("--speed", type=positive_float, default=1.0,
                   help=f"time runs N times faster (at most {MAX_SPEED:g})")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--tcp", type=bounded_int(1, 65534, "the pump listens on PORT+1"),
                   metavar="PORT",
                   help="listen on 127.0.0.1:PORT (pump on PORT+1) instead of ptys")
    p.add_argument("--link-dir", metavar="DIR",
                   help="also name the ptys DIR/monitor and DIR/pump (stable across a "
                   "simulated cable pull)")
    p.add_argument("--epoch", type=EPOCH, metavar="US",
                   help="anchor of the simulated clock in us since 1970 (share it with "
                   "`record --speed N --epoch US` to line records up with the truth log)")
    p.add_argument("--truth", metavar="FILE", help="write the ground truth as JSON lines")
    p.add_argument("--data-dir", metavar="DIR",
                   help="recordings for playback scenarios (default: $KAPMONITOR_DATA)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kapmonitor.drivers import registry
    from kapmonitor.drivers.sim.rig import SimulatorRig, serve_forever
    from kapmonitor.drivers.sim.scenario import ScenarioError, scenario_names

    if args.list_scenarios:
        for name in scenario_names():
            print(name)
        return 0
    if args.speed > MAX_SPEED:
        raise CliError(f"--speed {args.speed:g} is above {MAX_SPEED:g}")
    monitor = None if args.monitor == "none" else args.monitor
    pump = None if args.pump == "none" else args.pump
    for role, name in (("monitor", monitor), ("pump", pump)):
        if name is None:
            continue
        try:
            kind = registry.get(name).kind
        except registry.UnknownProtocolError as exc:
            raise CliError(str(exc)) from None
        if kind != role:
            raise CliError(f"{name} is a {kind} protocol; --{role} needs one of "
                           + ", ".join(registry.available(role)))
    try:
        rig = SimulatorRig(args.scenario, monitor=monitor, pump=pump, speed=args.speed,
                           seed=args.seed, tcp_port=args.tcp, link_dir=args.link_dir,
                           epoch_us=args.epoch, data_dir=args.data_dir, truth_path=args.truth)
    except (ScenarioError, OSError) as exc:
        raise CliError(str(exc)) from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)

    def ready(r: SimulatorRig) -> None:
        for protocol, port in r.ports():
            print(f"{protocol} {port}", flush=True)
        print(f"simulating scenario {r.sim.scenario.name!r} at {r.speed:g}x for "
              f"{r.sim.duration_s / 60:.0f} min (epoch {r.clock.epoch_us}); SIMULATED DEVICES",
              file=sys.stderr, flush=True)

    try:
        serve_forever(rig, ready, stop)
    except BrokenPipeError:
        raise  # the reader of the port lines went away: main() ends quietly
    except OSError as exc:
        raise CliError(f"cannot open the simulated ports: {exc}") from None
    return 0
