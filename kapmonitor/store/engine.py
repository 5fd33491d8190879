"""Where the database lives and how it is opened (DESIGN §3).

One SQLite file per installation by default, in the user data directory (platformdirs);
``--db`` or ``KAPMONITOR_DB`` override it with a path or any SQLAlchemy URL, so a clinic
can later point several rooms at one server. SQLite is opened in WAL mode with
``synchronous=NORMAL`` (a committed batch survives a killed process; only a power cut can
lose the last commits), foreign keys on, and a busy timeout so a second process (a
``kapmonitor note`` from a shell) waits for the recorder's short transactions instead of
failing. The schema is brought to the newest Alembic revision on every open.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import platformdirs
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL

__all__ = ["DB_ENV", "alembic_config", "create_db_engine", "default_db_path", "migrate",
           "open_engine", "resolve_db_url"]

DB_ENV = "KAPMONITOR_DB"
BUSY_TIMEOUT_MS = 10_000


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


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


def create_db_engine(url: URL) -> Engine:
    """An engine with the pragmas above; the file's folder is created if missing."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
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


def open_engine(value: str | URL | None = None, *, create: bool = True,
                check: bool = True) -> Engine:
    """The engine for ``value``, migrated. ``create``/``check``: see ``Store.open``
    (the checks themselves are still to come)."""
    url = value if isinstance(value, URL) else resolve_db_url(value)
    engine = create_db_engine(url)
    migrate(engine)
    return engine
