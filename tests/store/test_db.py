"""Opening the profile database: SQLite set-up, schema versioning and migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, inspect, select, text

from millm.errors import InternalError
from millm.store import db as dbmod
from millm.store.db import SCHEMA_VERSION, create_db_engine, database_url, migrate, open_database, read_schema_version
from millm.store.profiles import get_profile
from millm.store.tables import Base, ProfileRow


def test_database_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    url = database_url(data_dir=data_dir)
    assert url == f"sqlite:///{(data_dir / 'millm.db').resolve()}"
    assert data_dir.is_dir()
    assert database_url(url="postgresql+psycopg://u@h/db", data_dir=data_dir) == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError):
        database_url()


def test_sqlite_connections_use_wal_full_sync_and_busy_timeout(tmp_path: Path) -> None:
    db = open_database(data_dir=tmp_path)
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == dbmod.BUSY_TIMEOUT_MS
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.close()


def assert_tables_match_models(conn: Connection) -> None:
    """The stored schema is the current version, every table's columns and nullability are the models', and
    profile names are unique. Shared with the PostgreSQL tests."""
    assert read_schema_version(conn) == SCHEMA_VERSION
    inspector = inspect(conn)
    for table in Base.metadata.sorted_tables:
        stored = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        declared = {c.name: c.nullable for c in table.columns}
        assert stored == declared, table.name
    unique = inspector.get_unique_constraints("profiles") + [
        i for i in inspector.get_indexes("profiles") if i["unique"]
    ]
    assert any(u["column_names"] == ["name"] for u in unique)


def test_fresh_database_is_at_current_version_and_matches_tables(tmp_path: Path) -> None:
    db = open_database(data_dir=tmp_path)
    try:
        with db.engine.connect() as conn:
            assert_tables_match_models(conn)
    finally:
        db.close()


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    open_database(data_dir=tmp_path).close()
    engine = create_db_engine(database_url(data_dir=tmp_path))
    try:
        assert migrate(engine) == SCHEMA_VERSION
    finally:
        engine.dispose()


def test_version_1_database_is_upgraded_keeping_its_profiles(tmp_path: Path) -> None:
    engine = create_db_engine(database_url(data_dir=tmp_path))
    assert migrate(engine, target=1) == 0
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:
        assert read_schema_version(conn) == 1
        assert not inspect(conn).has_table("settings")
        conn.execute(
            insert(ProfileRow.__table__).values(
                name="calm", description="old", model_id="m", sae_id="s", sae_hook_name="blocks.0.hook_resid_post",
                sae_layer=0, d_sae=16, mode="add", normalize=False, features=[{"index": 3, "strength": -2.0, "label": None}],
                version=4, created_at=now, updated_at=now,
            )
        )
    engine.dispose()

    db = open_database(data_dir=tmp_path)
    try:
        with db.session_factory.begin() as session:
            assert read_schema_version(session.connection()) == SCHEMA_VERSION
            assert inspect(session.connection()).has_table("settings")
            row = get_profile(session=session, name="calm")
            assert (row.version, row.features) == (4, [{"index": 3, "strength": -2.0, "label": None}])
    finally:
        db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    open_database(data_dir=tmp_path).close()
    engine = create_db_engine(database_url(data_dir=tmp_path))
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()
    with pytest.raises(InternalError) as info:
        open_database(data_dir=tmp_path)
    assert info.value.code == "schema_too_new"


def test_migration_failure_rolls_back_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(dbmod, "MIGRATIONS", [dbmod.MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError):
        open_database(data_dir=tmp_path)
    engine = create_db_engine(database_url(data_dir=tmp_path))
    try:
        with engine.connect() as conn:
            assert read_schema_version(conn) == 0
            assert not inspect(conn).has_table("profiles")
            assert conn.execute(select(text("1"))).scalar() == 1
    finally:
        engine.dispose()
