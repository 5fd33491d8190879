"""What the store refuses, as exceptions whose message is one line in a user's words.

They live apart from ``store.py`` and ``engine.py`` so both (and the command line) can
raise and catch them without importing each other.
"""

from __future__ import annotations

__all__ = ["DatabaseDamaged", "DatabaseMissing", "DatabaseUnusable", "StoreError",
           "describe_db_error"]


class StoreError(ValueError):
    """A write or a lookup the store refuses, with the reason."""


class DatabaseMissing(StoreError):
    """A command that only reads was pointed at a database that does not exist: creating
    an empty one would make a typo look like a lost record ("no sessions") or a verified
    one ("ok")."""


class DatabaseDamaged(StoreError):
    """The file fails SQLite's quick check: commands refuse it and say to run ``verify``,
    which prints the integrity findings."""


class DatabaseUnusable(StoreError):
    """A database URL the app cannot record to (e.g. an in-memory SQLite that would vanish
    with the process)."""


def describe_db_error(exc: BaseException) -> str:
    """One line, in a user's words, for a database fault: what a nurse reads in the
    technical alarm and what the command line prints. Never the SQL, its parameters or an
    exception class name (SQLAlchemy's own message carries all three)."""
    if isinstance(exc, StoreError):
        return str(exc)
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's exception
    text = str(orig).splitlines()[0].strip() if str(orig) else ""
    low = text.lower()
    if "locked" in low or "busy" in low:
        return "the database is busy (another program holds it)"
    if "disk is full" in low or "no space" in low or "disk full" in low:
        return "the disk is full"
    if "readonly" in low or "read-only" in low or "read only" in low:
        return "the database is read-only"
    if "unable to open" in low or "no such file" in low:
        return "the database file cannot be opened"
    if "disk i/o" in low or "i/o error" in low:
        return "the disk reported an input/output error"
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return "the database file is damaged"
    if isinstance(orig, OSError) and orig.strerror:
        where = f" ({orig.filename})" if orig.filename else ""
        return f"{orig.strerror.lower()}{where}"
    return text[:200] if text else "an unknown database fault"
