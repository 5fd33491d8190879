"""What the store refuses, as exceptions whose message is one line in a user's words.

They live apart from ``store.py`` and ``engine.py`` so both (and the command line) can
raise and catch them without importing each other.
"""

from __future__ import annotations

__all__ = ["DatabaseDamaged", "DatabaseMissing", "DatabaseUnusable", "StoreError"]


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
