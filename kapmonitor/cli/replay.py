"""``kapmonitor replay SESSION``: open the replay window on a recorded session (DESIGN §5).

The window shows the session under a time cursor (trends, tiles, waves, pump, alarms and
entries as they were at that moment) with play/pause at 1x/4x/16x/60x; see
``kapmonitor.ui.replay_window``. ``--screenshot PNG`` saves the window (the smoke test and
the documentation picture), ``--at MM:SS`` puts the cursor at a session time first, and
``--quit-after SEC`` closes the window after SEC seconds of wall time.

Reads only: a missing database is refused, never created.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, finite_float, open_store, session_ref

NAME = "replay"
#: Longest --quit-after (wall seconds): a Qt timer counts milliseconds in 32 bits.
MAX_QUIT_AFTER_S = 7 * 24 * 3600.0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME, parents=[common], help="open the replay window on a recorded session",
        description="Replay a recorded session: trends with every note, cue, alarm and pump "
        "change, the values at a time cursor, wave strips, and play/pause at 1x, 4x, 16x or "
        "60x. Keys: Space play/pause, Left/Right 5 s (Shift: 1 min), Up/Down previous/next "
        "entry, Home/End.")
    p.add_argument("session", metavar="SESSION", help="session id, or uid (or a uid prefix)")
    p.add_argument("--at", metavar="MM:SS", help="start with the cursor at this session "
                   "time since the infusion start (H:MM:SS too; --at=-05:00 in the baseline); "
                   "default: the infusion start")
    p.add_argument("--screenshot", metavar="PNG", help="save the window to PNG (then quit, "
                   "unless --quit-after says when)")
    p.add_argument("--quit-after", type=finite_float, metavar="SEC",
                   help="close the window after SEC seconds (wall time)")
    p.set_defaults(func=run)


def _cursor(args: argparse.Namespace, store: object, session_id: int) -> int | None:
    """The --at time as host microseconds, refused when outside the record."""
    if args.at is None:
        return None
    from kapmonitor.ui.replay_data import RecordedSession, format_session_clock

    from .note import parse_session_time

    try:
        offset = parse_session_time(args.at)
    except CliError as exc:
        raise CliError(str(exc).replace("--at-session-time", "--at")) from None
    rec = RecordedSession.load(store.engine, session_id)  # type: ignore[attr-defined]
    t = rec.ref_us + offset
    if not rec.start_us <= t <= rec.end_us:
        raise CliError(f"--at {args.at} is outside session {session_id}, which runs from "
                       f"{format_session_clock(rec.start_us, rec.ref_us)} to "
                       f"{format_session_clock(rec.end_us, rec.ref_us)}")
    return t


def run(args: argparse.Namespace) -> int:
    ref = session_ref(args.session)
    if args.quit_after is not None and not args.quit_after > 0:
        raise CliError("--quit-after must be positive")
    if args.quit_after is not None and args.quit_after > MAX_QUIT_AFTER_S:
        raise CliError(f"--quit-after {args.quit_after:g} s is longer than "
                       f"{MAX_QUIT_AFTER_S / 86400:g} days")
    check_screenshot(args.screenshot)
    store = open_store(args, create=False)
    try:
        row = store.session_row(ref)
        at_us = _cursor(args, store, row.id)
        from kapmonitor.ui.replay_window import run_replay

        return run_replay(store.engine, row.id, at_us=at_us, screenshot=args.screenshot,
                          quit_after=args.quit_after)
    finally:
        store.close()


def check_screenshot(path: str | None) -> None:
    """A ``--screenshot`` that could not be written is refused before a window opens
    (the window would otherwise run and save nothing)."""
    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise CliError(f"--screenshot {path} is a folder; give a .png file name")
    if not target.parent.is_dir():
        raise CliError(f"--screenshot {path}: the folder {target.parent} does not exist")
