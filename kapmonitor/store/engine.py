"""Where the database lives and how it is opened (DESIGN §3).

One SQLite file per installation by default, in the user data directory (platformdirs);
``--db`` or ``KAPMONITOR_DB`` override it with a path or any SQLAlchemy URL, so a clinic
can later point several rooms at one server. SQLite is opened in WAL mode with
``synchronous=NORMAL`` (a committed batch survives a killed process; only a power cut can
lose the last commits), foreign keys on, and a busy timeout so a second process (a
``kapmonitor note`` from a shell) waits for the recorder's short transactions instead of
failing. The schema is brought to the newest Alembic revision on every open.

Before a file is used, ``open_engine`` refuses what would silently mislead:

- a missing file when the caller only reads (``create=False``): an empty database made on
  the spot would turn a typo into "no sessions", or into a verified "ok";
- a damaged file (``check=True``): SQLite's ``quick_check`` runs on the raw file before
  any migration writes to it, and a finding stops the command with one line that points
  at ``kapmonitor verify`` (which prints them all), instead of exports and notes working
  from a corrupt b-tree or failing later with an unrelated error;
- an in-memory SQLite: the record would vanish with the process.

SQLite specifics live here (DESIGN §3: dialect-specific code in one place); on another
backend these checks are the server's business and are skipped.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import platformdirs
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from .errors import DatabaseDamaged, DatabaseMissing, DatabaseUnusable

__all__ = ["DB_ENV", "alembic_config", "create_db_engine", "default_db_path",
           "integrity_findings", "migrate", "open_engine", "resolve_db_url", "sqlite_file"]

DB_ENV = "KAPMONITOR_DB"
BUSY_TIMEOUT_MS = 10_000

MEMORY_REFUSED = ("an in-memory database would lose the record when the program ends; "
                  "give a file path")


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("kapmonitor", appauthor=False)) / "kapmonitor.sqlite"


def resolve_db_url(value: str | None = None) -> URL:
    """``value`` (from ``--db``), else ``$KAPMONITOR_DB``, else the default file. A value
    with ``://`` is a SQLAlchemy URL; anything else is a file path."""
    value = value or os.environ.get(DB_ENV) or str(default_db_path())
    if "://" in value:
        return make_url(value)
    path = Path(value).expanduser().resolve()
    return URL.create("sqlite", database=str(path))


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names, or None when it names an in-memory database
    (``sqlite://``, ``sqlite:///:memory:``, or a ``file:`` URI with ``mode=memory``).
    Only meaningful for SQLite URLs."""
    database = url.database or ""
    if database in ("", ":memory:"):
        return None
    uri = str(url.query.get("uri", "")).lower() in ("true", "1")
    if uri and database.startswith("file:"):
        # SQLAlchemy moves the URI's query (``mode=memory``) into url.query
        parts = urlsplit(database)
        modes = [*parse_qs(parts.query).get("mode", []), url.query.get("mode")]
        if "memory" in modes:
            return None
        database = unquote(parts.path)
        if database in ("", ":memory:"):
            return None
    return Path(database)


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


def create_db_engine(url: URL) -> Engine:
    """An engine with the pragmas above; the file's folder is created if missing.

    An in-memory SQLite gets one shared connection (``StaticPool``): otherwise each
    thread (the recorder's writer, the GUI) would see its own empty database."""
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            engine = create_engine(url, connect_args={"check_same_thread": False},
                                   poolclass=StaticPool)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("kapmonitor.store") / "migrations"))
    if engine is not None:
        cfg.attributes["engine"] = engine
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _one_line(finding: str) -> str:
    """An integrity finding on one line: SQLite prefixes the first with
    ``*** in database main ***`` and a newline."""
    lines = [ln.strip() for ln in finding.splitlines()]
    lines = [ln for ln in lines if ln and ln != "*** in database main ***"]
    return "; ".join(lines) or finding.strip()


def integrity_findings(path: Path, *, full: bool = False, limit: int = 100) -> list[str]:
    """SQLite's own check of the file at ``path``: ``[]`` when it is sound, else its
    findings, one line each (at most ``limit``).

    ``quick_check`` (the default) verifies every b-tree page, cell and record format in
    one pass over the file; ``full`` runs ``integrity_check``, which also matches every
    index against its table (slower: it is what ``verify`` runs). The file is opened
    read-write without create (``mode=rw``), so a missing file is never made and a WAL
    left by a killed writer is recovered as any connection would. A file that is not a
    SQLite database at all raises ``DatabaseDamaged``; one that cannot be opened (a
    folder, no permission, locked past the busy timeout) raises ``DatabaseUnusable``."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise DatabaseUnusable(f"cannot open the database {path} ({exc})") from exc
    with contextlib.closing(conn):
        try:
            rows = _pragma(conn, "integrity_check" if full else "quick_check", limit)
        except sqlite3.DatabaseError as exc:
            _raise_unless_corrupt(path, exc)
            if not full:
                return [_one_line(str(exc))]
            # integrity_check stops at the first page its index checks cannot read;
            # quick_check still walks every tree and names the pages
            try:
                rows = [*_pragma(conn, "quick_check", limit), str(exc)]
            except sqlite3.DatabaseError as exc2:
                _raise_unless_corrupt(path, exc2)
                rows = [str(exc)]
    if rows == ["ok"]:
        return []
    return [_one_line(r) for r in rows if r != "ok"]


def _pragma(conn: sqlite3.Connection, name: str, limit: int) -> list[str]:
    return [r for (r,) in conn.execute(f"PRAGMA {name}({int(limit)})")]


def _raise_unless_corrupt(path: Path, exc: sqlite3.DatabaseError) -> None:
    """Damage is a finding; a file that is no database at all, or that cannot be read
    for another reason (locked, I/O error), is a refusal with its reason."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        raise DatabaseDamaged(f"{path} is not a SQLite database ({exc}): not a KAP "
                              "Monitor record, or damaged beyond reading") from exc
    if not name.startswith("SQLITE_CORRUPT"):
        raise DatabaseUnusable(f"cannot read the database {path} ({exc})") from exc


def _check_sqlite(url: URL, *, create: bool, check: bool, allow_memory: bool) -> None:
    """The refusals described in the module docstring, before anything touches the file."""
    path = sqlite_file(url)
    if path is None:
        if not allow_memory:
            raise DatabaseUnusable(MEMORY_REFUSED)
        if not create:  # a fresh in-memory database is as empty as a missing file
            raise DatabaseMissing("no database at :memory: (an in-memory database is empty)")
        return
    if path.is_dir():
        raise DatabaseUnusable(f"{path} is a folder, not a database file")
    if not path.exists():
        if not create:
            raise DatabaseMissing(f"no database at {path}")
        return  # a new file: nothing to check
    if not create and path.stat().st_size == 0:
        raise DatabaseMissing(f"no database at {path} (the file is empty)")
    if check:
        findings = integrity_findings(path)
        if findings:
            raise DatabaseDamaged(f"the database {path} is damaged ({findings[0]}); run "
                                  f"`kapmonitor verify --db {path}` for details")


def open_engine(value: str | URL | None = None, *, create: bool = True, check: bool = True,
                allow_memory: bool = False, migrate_schema: bool = True) -> Engine:
    """The engine for ``value``, migrated.

    ``create=False`` (commands that only read): a SQLite file that does not exist raises
    ``DatabaseMissing``, and no folder or file is made. ``check=True``: SQLite's
    ``quick_check`` runs on an existing file before migrations do, and a finding raises
    ``DatabaseDamaged``. An in-memory SQLite raises ``DatabaseUnusable`` unless
    ``allow_memory`` (tests). ``migrate_schema=False`` opens without migrating, for
    ``verify`` reading a file it must not write to."""
    url = value if isinstance(value, URL) else resolve_db_url(value)
    if url.get_backend_name() == "sqlite":
        _check_sqlite(url, create=create, check=check, allow_memory=allow_memory)
    engine = create_db_engine(url)
    if migrate_schema:
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
    return engine
