"""The schema is owned by Alembic from the first version: upgrading an empty file must give
exactly the ORM metadata, or a later migration would start from a lie."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from kapmonitor.store.engine import alembic_config, create_db_engine, open_engine, resolve_db_url
from kapmonitor.store.schema import Base


def test_upgrade_head_on_empty_file_equals_orm_metadata(db_path: Path) -> None:
    engine = create_db_engine(resolve_db_url(str(db_path)))
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert set(inspect(conn).get_table_names()) >= {
            "patient", "session", "device", "annotation", "alarm_event", "pump_event",
            "device_event", "audit", "numeric", "wave", "alembic_version"}
    engine.dispose()


def test_open_applies_pragmas_and_is_idempotent(db_path: Path) -> None:
    for _ in range(2):  # second open finds the schema at head and changes nothing
        engine = open_engine(str(db_path))
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        engine.dispose()


def test_db_location_env_and_url(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAPMONITOR_DB", str(tmp_path / "env.sqlite"))
    assert resolve_db_url().database == str(tmp_path / "env.sqlite")
    assert resolve_db_url(str(tmp_path / "arg.sqlite")).database == str(tmp_path / "arg.sqlite")
    url = resolve_db_url("postgresql+psycopg://kap@db.example/kap")
    assert url.get_backend_name() == "postgresql"
    monkeypatch.delenv("KAPMONITOR_DB")
    assert resolve_db_url().database.endswith("kapmonitor.sqlite")
