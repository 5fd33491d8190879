"""``kapmonitor note``: add an entry to a session from a shell (DESIGN §5).

For the moments the bedside screen is not at hand: a nurse's observation typed at another
terminal, a cue given, a rating scored (clinical.md §7, §8), a phase marked, or a
correction written after the session closed. Entries go through ``Store.add_annotation``,
so each one is audited; nothing is ever overwritten: ``--amends ID`` writes a new version
that points at the entry it corrects, and the original stays in the record.

TEXT is optional: omitted (or empty), it is filled from the library: a cue or tag's label
(``--code IMG-SAFE`` -> "Safe place"), an assessment's summary ("Nausea NRS 3/10"), a
phase's name. Given, it is the entry's free text (for a cue: "Safe place: <TEXT>"; for an
assessment: "<summary>; <TEXT>"). ``-`` reads TEXT from standard input.

Refusals exit 2 with one line and write nothing: unknown session, unknown cue or scale, a
score out of range, an ``--amends`` that names an entry of another session, a time more
than 24 h away from the session (``--at 2126-...`` for 2026 is a typo, not a note for next
century, and a time nothing can draw or export), text longer than the record keeps. The
database must exist: a note never creates one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .common import (
    MAX_ID,
    CliError,
    bounded_int,
    finite_float,
    open_store,
    session_ref,
    text_field,
    text_limit,
)

if TYPE_CHECKING:
    from kapmonitor.store import Store

NAME = "note"
KINDS = ("observation", "cue", "assessment", "phase")
_SESSION_TIME = re.compile(r"^([+-])?(?:(\d+):)?(\d+):(\d{1,2}(?:\.\d+)?)$")
#: An entry's time may lie this far before its session began or after it ended (a note
#: written up the next morning); beyond it, it is a mistyped date.
WINDOW_US = 24 * 3600 * 1_000_000
#: Longest note text: the room's notes are sentences, not documents; the limit keeps a
#: pasted file out of the record and every table that shows the entry.
TEXT_MAX = 4000


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME, parents=[common], help="add an observation, cue, assessment or phase marker "
        "to a session",
        description="Add an entry to an open or closed session. Entries are append-only: "
        "--amends writes a corrected version and keeps the original. TEXT may be omitted "
        "(or empty) when --code says what the entry is: the text is then filled from the cue "
        "library (the cue's label), the scale (a summary of the scores) or the phase name; "
        "'-' reads TEXT from standard input. Prints the new entry's id and its session time "
        "(relative to the infusion start, or 'baseline' before one is set). Cues: clinical.md "
        "§8 (resources/cues.toml); scales: §7 and §4.4 (resources/scales.toml).")
    p.add_argument("session", metavar="SESSION", help="session id, or uid (or a uid prefix)")
    p.add_argument("text", metavar="TEXT", nargs="?", default="",
                   help="the note, or free text added to a cue or assessment; '-' reads "
                   "standard input")
    p.add_argument("--kind", choices=KINDS, default=None,
                   help="kind of entry (default: from --code: a cue id gives cue or "
                   "observation, a scale id assessment, a phase name phase; without --code, "
                   "observation)")
    p.add_argument("--code", metavar="CODE",
                   help="cue or tag id (IMG-SAFE, OBS-TEARFUL), scale id (nausea-nrs, "
                   "moaa-s, aldrete, ...) or phase (infusion, emergence, recovery, ...)")
    p.add_argument("--value", type=finite_float, metavar="V",
                   help="assessment score: the level of a one-item scale, or the total of a "
                   "questionnaire scored on paper (scales that allow a total alone)")
    p.add_argument("--item", action="append", default=[], metavar="KEY=SCORE",
                   help="one item score of a multi-item scale, repeated for every item "
                   "(e.g. --item activity=2 ... for aldrete; numbered items: --item 1=0)")
    p.add_argument("--variant", metavar="ID",
                   help="scale variant (aldrete: modified-1995 (default), modified-1995-mmhg, "
                   "8-with-resp-spo2); stored with the score")
    p.add_argument("--author", default=None, metavar="NAME",
                   help="who wrote or delivered it (default: the login name)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="ISO-TIME",
                      help="when it happened, e.g. 2026-05-09T14:35:10 (local time unless an "
                      "offset is given); default: now")
    when.add_argument("--at-session-time", metavar="MM:SS",
                      help="when it happened, as session time since the infusion start "
                      "(MM:SS or H:MM:SS; before the start write --at-session-time=-05:00)")
    p.add_argument("--amends", type=bounded_int(1, MAX_ID, "an entry id"), metavar="ID",
                   help="correct entry ID of this session: a new version pointing at it; "
                   "kind, code and time are taken from it unless given")
    p.add_argument("--cues", metavar="PATH",
                   help="clinic cue file merged over the packaged library (default: "
                   "$KAPMONITOR_CUES, else cues.toml in the user config directory)")
    p.add_argument("--json", action="store_true", help="print the new entry as one JSON "
                   "object")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------ helpers


def parse_session_time(text: str) -> int:
    """``"05:30"`` -> 330 000 000 µs; ``"-2:00"`` (baseline) and ``"1:05:30"`` too."""
    m = _SESSION_TIME.match(text.strip()) if len(text) <= 32 else None
    if not m:
        raise CliError(f"--at-session-time must look like MM:SS or H:MM:SS, got {text!r}")
    sign, hours, minutes, seconds = m.groups()
    if float(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
        raise CliError(f"--at-session-time {text!r}: minutes and seconds go up to 59")
    total = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    us = round(total * 1e6)
    return -us if sign == "-" else us


def format_session_time(t_us: int, t0_us: int | None) -> str:
    """``+05:30`` after the infusion start, ``-02:00 (baseline)`` before it, ``baseline``
    when no infusion start is set. Minutes run past 59 (``+95:00``), as on the screen."""
    if t0_us is None:
        return "baseline (no infusion start yet)"
    d = t_us - t0_us
    m, s = divmod(abs(d) // 1_000_000, 60)
    sign = "-" if d < 0 else "+"
    return f"{sign}{m:02d}:{s:02d}" + (" (baseline)" if d < 0 else "")


def _parse_at(text: str) -> int:
    try:
        t = datetime.fromisoformat(text.strip())
        if t.tzinfo is None:
            t = t.astimezone()  # naive means local wall-clock time
        return round(t.timestamp() * 1e6)
    except (ValueError, OverflowError, OSError):  # not a time, or one no clock can hold
        raise CliError(f"--at must be an ISO time like 2026-05-09T14:35:10, got {text!r}"
                       ) from None


def _check_time(t_us: int, session: Any, option: str, now: int) -> None:
    """Refuse a time more than ``WINDOW_US`` before the session began or after it ended
    (or after now, for a session still open)."""
    begin = session.created_us if session.t0_us is None else min(session.created_us,
                                                                   session.t0_us)
    end = session.closed_us if session.closed_us is not None else max(now, begin)
    if begin - WINDOW_US <= t_us <= end + WINDOW_US:
        return
    span = (f"ran from {_local(begin)} to {_local(end)}" if session.closed_us is not None
            else f"began {_local(begin)} and is still open")
    raise CliError(f"{option} is outside session {session.id}, which {span}: an entry may "
                   "be at most 24 h before or after its session (check the date)")


def _local(t_us: int) -> str:
    return datetime.fromtimestamp(t_us / 1e6, UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _parse_items(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for it in items:
        key, sep, raw = it.partition("=")
        key = key.strip().lower()
        if not sep or not key or not raw.strip():
            raise CliError(f"--item must look like KEY=SCORE (e.g. activity=2), got {it!r}")
        if key in out:
            raise CliError(f"--item {key} is given twice")
        try:
            out[key] = float(raw)
        except ValueError:
            out[key] = math.nan
        if not math.isfinite(out[key]):
            raise CliError(f"--item {key}: {raw.strip()!r} is not a number") from None
    return out


def _original(store: Store, annotation_id: int, session_id: int) -> dict[str, Any]:
    from sqlalchemy import select

    from kapmonitor.store.schema import AnnotationRow

    with store.engine.connect() as conn:
        row = conn.execute(select(AnnotationRow.__table__).where(
            AnnotationRow.id == annotation_id)).mappings().first()
    if row is None:
        raise CliError(f"--amends {annotation_id}: no such entry")
    if row["session_id"] != session_id:
        raise CliError(f"--amends {annotation_id}: that entry belongs to session "
                       f"{row['session_id']}, not session {session_id}")
    if row["kind"] == "gap":
        raise CliError(f"--amends {annotation_id}: gap markers are written by the app; add "
                       "an observation that explains the gap instead")
    return dict(row)


def _infer_kind(code: str, args: argparse.Namespace) -> str:
    from kapmonitor.scales import load_scales
    from kapmonitor.session import Phase

    cue = _library(args).get(code)
    if cue is not None:
        return cue.kind
    if code.lower() in load_scales():
        return "assessment"
    if code.lower() in {p.value for p in Phase}:
        return "phase"
    raise CliError(f"unknown code {code!r}: not a cue, tag, scale or phase (give --kind, "
                   "or see resources/cues.toml and resources/scales.toml)")


def _library(args: argparse.Namespace) -> Any:
    from kapmonitor.cues import CueLibrary, CueLibraryError

    lib = getattr(args, "_cue_library", None)
    if lib is None:
        try:
            lib = CueLibrary.load(args.cues)
        except CueLibraryError as exc:
            raise CliError(str(exc).replace("\n  ", "; ")) from None
        args._cue_library = lib
    return lib


def _content(kind: str, code: str, text: str, args: argparse.Namespace) -> dict[str, Any]:
    """kind, code, text and value of the entry, checked against the library or scale."""
    if kind != "assessment" and (args.value is not None or args.item or args.variant):
        raise CliError("--value, --item and --variant are for --kind assessment")
    if kind in ("cue", "observation"):
        if not code:
            if kind == "cue":
                raise CliError("--kind cue needs --code with a cue id (e.g. IMG-SAFE); for "
                               "free text use --kind observation")
            if not text.strip():
                raise CliError("an observation needs TEXT or --code with a tag "
                               "(e.g. OBS-TEARFUL)")
            return {"kind": "observation", "code": "", "text": text.strip(), "value": None}
        cue = _library(args).get(code)
        if cue is None:
            raise CliError(f"unknown cue {code!r} (not in the cue library)")
        if cue.kind != kind:
            what = {"cue": "a cue", "observation": "an observation tag"}
            raise CliError(f"{cue.id} is {what[cue.kind]}, not {what[kind]}; use "
                           f"--kind {cue.kind}")
        return {**cue.annotation_fields(text), "value": None}
    if kind == "assessment":
        from kapmonitor.scales import ScaleError, get_scale

        if not code:
            raise CliError("--kind assessment needs --code with a scale id (e.g. nausea-nrs)")
        try:
            scale = get_scale(code)
            if args.item:
                a = scale.score(_parse_items(args.item), variant=args.variant)
                if args.value is not None and args.value != a.total:
                    raise CliError(f"--value {args.value:g} does not match the total of the "
                                   f"items ({a.total:g})")
            elif args.value is not None:
                a = scale.score_total(args.value, variant=args.variant)
            else:
                how = "--value V" if scale.item_count == 1 else \
                    "--item KEY=SCORE for each item" + (" (or --value TOTAL)"
                                                        if scale.total_only else "")
                raise CliError(f"{scale.short} needs a score: {how}")
        except ScaleError as exc:
            raise CliError(str(exc)) from None
        return a.annotation_fields(text)
    # phase: the session timeline's phases (kapmonitor.session.Phase)
    from kapmonitor.session import PHASE_LABELS, Phase

    if not code:
        if not text.strip():
            raise CliError("a phase entry needs --code with the phase (e.g. emergence) or TEXT")
        return {"kind": "phase", "code": "", "text": text.strip(), "value": None}
    try:
        phase = Phase(code.lower())
    except ValueError:
        names = ", ".join(p.value for p in Phase if p is not Phase.CLOSED)
        raise CliError(f"unknown phase {code!r} (one of {names})") from None
    if phase is Phase.CLOSED:
        raise CliError("a session is closed by the app or `kapmonitor recover`, not by a "
                       "phase note")
    label = PHASE_LABELS[phase]
    return {"kind": "phase", "code": phase.value,
            "text": f"{label}: {text.strip()}" if text.strip() else label, "value": None}


# ------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    from kapmonitor.model import now_us
    from kapmonitor.store.schema import AnnotationRow

    ref = session_ref(args.session)
    text = args.text
    if text == "-":
        text = sys.stdin.read()
    text = text_field(text, "TEXT", TEXT_MAX, one_line=False)
    code = (args.code or "").strip()
    author = text_field(args.author if args.author is not None else _login(), "--author",
                        text_limit(AnnotationRow.__table__.c.author))
    # times are parsed before the database is opened: a typo is refused without touching it
    at_us = None if args.at is None else _parse_at(args.at)
    offset_us = (None if args.at_session_time is None
                 else parse_session_time(args.at_session_time))
    if args.cues is not None:
        _library(args)  # a clinic file named on the command line must be readable

    store = open_store(args, create=False)
    try:
        session = store.session_row(ref)
        kind = args.kind
        t_us: int | None = None
        if args.amends is not None:
            orig = _original(store, args.amends, session.id)
            if kind is not None and kind != orig["kind"]:
                raise CliError(f"--amends {args.amends}: an amendment keeps the kind of the "
                               f"entry it corrects ({orig['kind']}), not {kind}")
            kind = orig["kind"]
            code = code or orig["code"]
            t_us = orig["t_us"]
            if kind == "assessment" and args.value is None and not args.item:
                raise CliError(f"--amends {args.amends}: give the corrected scores again "
                               "(--value or --item)")
        if kind is None:
            kind = _infer_kind(code, args) if code else "observation"
        content = _content(kind, code, text, args)

        now = now_us()
        if at_us is not None:
            t_us = at_us
            _check_time(t_us, session, f"--at {args.at}", now)
        elif offset_us is not None:
            if session.t0_us is None:
                raise CliError(f"session {session.id} has no infusion start yet, so there is "
                               "no session time; use --at ISO-TIME")
            t_us = session.t0_us + offset_us
            _check_time(t_us, session, f"--at-session-time {args.at_session_time}", now)
        if t_us is None:
            t_us = now
        new_id = store.add_annotation(
            session.id, content["kind"], content["text"], t_us=t_us, author=author,
            code=content["code"], value=content["value"], amends_id=args.amends)
    finally:
        store.close()

    when = format_session_time(t_us, session.t0_us)
    late = session.status != "open"
    if args.json:
        print(json.dumps({
            "id": new_id, "session_id": session.id, "session_uid": session.uid,
            "kind": content["kind"], "code": content["code"], "text": content["text"],
            "value": content["value"], "author": author, "t_us": t_us,
            "time": datetime.fromtimestamp(t_us / 1e6, UTC).isoformat(),
            "session_time_s": None if session.t0_us is None else (t_us - session.t0_us) / 1e6,
            "session_time": when, "amends_id": args.amends, "session_status": session.status,
        }))
        return 0
    what = content["kind"] + (f" {content['code']}" if content["code"] else "")
    line = f"annotation {new_id} added to session {session.id} at {when}: {what} " \
           f"{json.dumps(content['text'], ensure_ascii=False)}"
    if args.amends is not None:
        line += f" (amends {args.amends})"
    if late:
        line += f" [session {session.status}: written now as a late entry]"
    print(line)
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""
