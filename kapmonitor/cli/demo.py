"""``kapmonitor demo``: the bedside window on a simulated patient and pump.

The simulated devices are real protocol peers on pseudo-terminals, so the demo runs the
same path as hardware: transport, codecs, bus, alarms, recorder. The session is recorded
and marked DEMO. ``--screenshot PNG --quit-after SEC`` is the smoke test and makes the
README pictures: SEC is session time, so ``--speed 60 --quit-after 2400`` shows the end of
a 40-minute infusion after 40 wall seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from .common import CliError, finite_float, open_store, positive_float
from .replay import check_screenshot
from .simulate import MAX_SPEED, SEED

NAME = "demo"
#: Longest --quit-after, in session and in wall seconds (a Qt timer counts milliseconds
#: in 32 bits).
MAX_QUIT_AFTER_S = 7 * 24 * 3600.0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="the window on simulated devices (DEMO)",
                       description="Open the bedside window on a simulated patient and pump "
                       "(labelled DEMO), connected through real protocol peers on ptys.")
    p.add_argument("--scenario", default="standard", help="see `kapmonitor simulate "
                   "--list-scenarios`")
    p.add_argument("--speed", type=positive_float, default=1.0,
                   help=f"time runs N times faster (at most {MAX_SPEED:g})")
    p.add_argument("--monitor", default="intellivue", metavar="PROTOCOL")
    p.add_argument("--pump", default="bbraun-bcc", metavar="PROTOCOL")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--screenshot", metavar="PNG", help="save the window to PNG before quitting")
    p.add_argument("--quit-after", type=finite_float, metavar="SEC",
                   help="quit after SEC seconds of session time (closing the session)")
    p.add_argument("--data-dir", metavar="DIR", help="recordings for playback scenarios")
    p.set_defaults(func=run)


def config_for(rig: object, *, demo: bool = True) -> object:
    """The session a simulated scenario implies (its patient and programme)."""
    from kapmonitor.session import SessionConfig

    scenario = rig.sim.scenario  # type: ignore[attr-defined]
    prog = scenario.programme
    weight = prog.weight_kg if prog is not None else scenario.profile.weight_kg
    return SessionConfig(
        patient="DEMO-0001", room="Demo", clinicians="Demo nurse, Demo therapist",
        protocol=f"simulated: {scenario.name}", weight_kg=weight,
        dose_mg_per_kg=getattr(prog, "dose_mg_per_kg", None),
        duration_min=getattr(prog, "duration_min", None),
        concentration_mg_ml=getattr(prog, "concentration_mg_ml", None) or (
            scenario.direct[2] if scenario.direct else None),
        bag_ml=getattr(prog, "bag_ml", None), demo=demo)


def start_demo(store: object, *, scenario: str = "standard", speed: float = 1.0,
               monitor: str | None = "intellivue", pump: str | None = "bbraun-bcc",
               seed: int = 0, data_dir: str | None = None) -> tuple[object, object, object]:
    """Simulator rig + live session with its devices connected. Returns (rig, session,
    link directory); the caller closes the session and stops the rig."""
    from kapmonitor.drivers.connect import parse_spec, start_device
    from kapmonitor.drivers.sim.rig import SimulatorRig
    from kapmonitor.session import LiveSession

    links = tempfile.TemporaryDirectory(prefix="kapmonitor-demo-")
    try:
        rig = SimulatorRig(scenario, monitor=monitor, pump=pump, speed=speed, seed=seed,
                           link_dir=links.name, data_dir=data_dir).start()
    except BaseException:  # an unknown scenario, say: leave no folder behind
        links.cleanup()
        raise
    try:
        session = LiveSession(store, config_for(rig), clock=rig.clock).start()  # type: ignore[arg-type]
        taken: list[str] = []
        for dev in rig.devices:
            spec = parse_spec(f"{dev.protocol}={dev.url},name={dev.role}", taken)
            taken.append(spec.name)
            start_device(spec, session.attach, session.bus.publish, clock=rig.clock)
    except Exception:
        rig.stop()
        links.cleanup()
        raise
    return rig, session, links


def pump_start_note(rig: Any, speed: float) -> str:
    """"starts 14:32 (in 10 min)": when the simulated pump starts the scenario's infusion,
    in the wall time a nurse trying the demo waits for."""
    import time

    sim = rig.sim
    wait_s = max(0.0, (sim.t0_us - sim.start_us) / 1e6 / speed)
    at = time.strftime("%H:%M", time.localtime(time.time() + wait_s))
    minutes = f"{wait_s / 60:.0f} min" if wait_s >= 90 else f"{wait_s:.0f} s"
    return f"starts {at} (in {minutes})"


def run(args: argparse.Namespace) -> int:
    from kapmonitor.drivers.sim.scenario import ScenarioError

    if args.speed > MAX_SPEED:
        raise CliError(f"--speed {args.speed:g} is above {MAX_SPEED:g}")
    if args.quit_after is not None and args.quit_after <= 0:
        raise CliError("--quit-after must be positive")
    if args.quit_after is not None and max(args.quit_after, args.quit_after / args.speed) \
            > MAX_QUIT_AFTER_S:
        raise CliError(f"--quit-after {args.quit_after:g} s at --speed {args.speed:g} is "
                       f"longer than {MAX_QUIT_AFTER_S / 86400:g} days")
    check_screenshot(args.screenshot)
    # Qt first: a machine without Qt's system libraries aborts here, before any session is
    # created (issue 13 item 10: failed launches left "open" sessions in every recovery offer)
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["kapmonitor"])
    del app
    store = open_store(args, create=True)
    try:
        from kapmonitor.drivers.sim.scenario import scenario_names
        from kapmonitor.ui.main_window import run_app

        scenario, speed = args.scenario, args.speed
        while True:  # the window's Demo menu restarts with another scenario or speed
            try:
                rig, session, links = start_demo(
                    store, scenario=scenario, speed=speed, monitor=args.monitor,
                    pump=args.pump, seed=args.seed, data_dir=args.data_dir)
            except (ScenarioError, KeyError, ValueError) as exc:
                raise CliError(str(exc)) from None
            restart: list[tuple[str, float]] = []
            try:
                wall = None if args.quit_after is None else args.quit_after / speed
                code = run_app(session, demo=True, screenshot=args.screenshot, quit_after=wall,
                               demo_note=pump_start_note(rig, speed),
                               demo_options=(scenario_names(), scenario, speed),
                               on_restart=restart.append)
            finally:
                if not session.closed:  # type: ignore[attr-defined]
                    session.close()  # type: ignore[attr-defined]
                rig.stop()  # type: ignore[attr-defined]
                links.cleanup()  # type: ignore[attr-defined]
            if not restart:
                return code
            scenario, speed = restart[0]
    finally:
        store.close()
