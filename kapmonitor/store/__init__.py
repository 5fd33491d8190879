"""The session store (DESIGN §3): SQLite (or any SQLAlchemy URL) behind an audited API.

- ``Store``: sessions, annotations and amendments, each write audited in its transaction.
- ``Recorder``: the batched writer thread that bus messages and alarm events go through.
- ``SessionReader``: one session's trends, waves, entries and events, for replay and export.
- ``recovery``: closing sessions a crashed process left open, with a gap marker.
- ``audit.verify``: the hash-chain and row check behind ``kapmonitor verify``.
"""

from .engine import DB_ENV, default_db_path, open_engine, resolve_db_url
from .errors import DatabaseDamaged, DatabaseMissing, DatabaseUnusable, StoreError
from .reader import Entry, NumericSeries, SessionReader, WaveSeries
from .recorder import Recorder, RecorderStats
from .recovery import Abandoned, find_abandoned, recover, recover_all
from .store import ANNOTATION_KINDS, SessionInfo, Store

__all__ = [
    "ANNOTATION_KINDS",
    "DB_ENV",
    "Abandoned",
    "DatabaseDamaged",
    "DatabaseMissing",
    "DatabaseUnusable",
    "Entry",
    "NumericSeries",
    "Recorder",
    "RecorderStats",
    "SessionInfo",
    "SessionReader",
    "Store",
    "StoreError",
    "WaveSeries",
    "default_db_path",
    "find_abandoned",
    "open_engine",
    "recover",
    "recover_all",
    "resolve_db_url",
]
