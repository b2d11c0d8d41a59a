"""The profile store on PostgreSQL: the same code as SQLite, against a real server.

`postgres_url` (tests/store/conftest.py) starts a throwaway PostgreSQL server once per
session; `empty_postgres_url` gives each test an empty database. Both skip where the
PostgreSQL server binaries or psycopg are missing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, text

from millm.errors import Conflict, InternalError, NotFound
from millm.protocol.profiles import ProfileUpdate
from millm.services.profiles import ProfileService
from millm.store import profiles as repo
from millm.store.db import SCHEMA_VERSION, Database, create_db_engine, migrate, open_database, read_schema_version
from millm.store.tables import ProfileRow
from tests.services.test_profiles import assert_concurrent_edits_one_wins, fill, make_create
from tests.store.test_db import assert_tables_match_models
from tests.store.test_profiles import make_data


def test_fresh_database_is_migrated_to_the_current_schema(empty_postgres_url: str, postgres_db: Database) -> None:
    assert postgres_db.engine.dialect.name == "postgresql"
    with postgres_db.engine.connect() as conn:
        assert_tables_match_models(conn)
        inspector = inspect(conn)
        types = {c["name"]: str(c["type"]) for c in inspector.get_columns("profiles")}
        assert types["created_at"] == "TIMESTAMP" and types["features"] == "JSON"
        stamps = [c for c in inspector.get_columns("profiles") if c["name"].endswith("_at")]
        assert {c["name"]: c["type"].timezone for c in stamps} == {"created_at": True, "updated_at": True}
    engine = create_db_engine(empty_postgres_url)
    try:
        assert migrate(engine) == SCHEMA_VERSION  # reopening does not migrate again
    finally:
        engine.dispose()


def test_version_1_database_is_upgraded_and_newer_is_refused(empty_postgres_url: str) -> None:
    engine = create_db_engine(empty_postgres_url)
    try:
        assert migrate(engine, target=1) == 0
        now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(insert(ProfileRow.__table__).values(
                name="calm", description="old", model_id="m", sae_id="s", sae_hook_name="blocks.0.hook_resid_post",
                sae_layer=0, d_sae=16, mode="add", normalize=False, features=[{"index": 3, "strength": -2.0, "label": None}],
                version=4, created_at=now, updated_at=now,
            ))
        assert migrate(engine) == 1
        with engine.begin() as conn:
            assert read_schema_version(conn) == SCHEMA_VERSION and inspect(conn).has_table("settings")
            conn.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    finally:
        engine.dispose()
    with pytest.raises(InternalError) as info:
        open_database(url=empty_postgres_url)
    assert info.value.code == "schema_too_new"


def test_repository_round_trip_keeps_json_and_timestamps(postgres_db: Database) -> None:
    with postgres_db.session_factory.begin() as session:
        first = repo.create_profile(session=session, data=make_data("calm"))
        second = repo.create_profile(session=session, data=make_data("ocean", features=[]))
        assert (first.id, second.id) == (1, 2)  # SERIAL ids, as on SQLite
    with postgres_db.session_factory.begin() as session:
        row = repo.get_profile(session=session, name="calm")
        assert repo.row_data(row) == make_data("calm")
        assert row.created_at.utcoffset() is not None  # timestamptz comes back aware
        assert [r.name for r in repo.list_profiles(session=session)] == ["calm", "ocean"]


def test_service_crud_round_trip(postgres_db: Database) -> None:
    service = ProfileService(postgres_db.session_factory)
    created = service.create(make_create())
    assert (created.name, created.version, created.active) == ("yelling-demo", 1, False)
    assert created.created_at.tzinfo is not None
    assert service.get("yelling-demo") == created

    updated = service.update("yelling-demo", ProfileUpdate(version=1, description="louder", mode="clamp"))
    assert (updated.version, updated.description, updated.mode) == (2, "louder", "clamp")
    assert updated.features == created.features and updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at

    copy = service.duplicate("yelling-demo", new_name="yelling-copy")
    assert [p.name for p in service.list().data] == ["yelling-copy", "yelling-demo"]
    with pytest.raises(Conflict):
        service.create(make_create("yelling-copy"))
    assert service.delete("yelling-copy", version=copy.version) is False
    assert service.delete("yelling-demo") is False
    with pytest.raises(NotFound):
        service.get("yelling-demo")
    assert service.list().count == 0


def test_stale_version_is_a_conflict(postgres_db: Database) -> None:
    service = ProfileService(postgres_db.session_factory)
    service.create(make_create("calm"))
    service.update("calm", ProfileUpdate(version=1, description="first"))
    with pytest.raises(Conflict) as info:
        service.update("calm", ProfileUpdate(version=1, description="second"))
    assert info.value.status == 409 and info.value.param == "version"
    with pytest.raises(Conflict):
        service.delete("calm", version=1)
    assert (service.get("calm").description, service.get("calm").version) == ("first", 2)

    # The WHERE version = ? guard itself: this session read version 2, another writer
    # commits version 3 before our UPDATE, and ours must match no row -> Conflict.
    with postgres_db.session_factory() as session:
        row = repo.get_profile(session=session, name="calm")
        assert row.version == 2
        with postgres_db.engine.begin() as other:
            other.execute(text("UPDATE profiles SET version = 3, description = 'other' WHERE id = :id"),
                          {"id": row.id})
        with pytest.raises(Conflict) as info:
            repo.update_profile(session=session, name="calm", expected_version=2, data=make_data("calm"))
        assert info.value.code == "version_conflict"
        session.rollback()
    assert (service.get("calm").description, service.get("calm").version) == ("other", 3)


def test_concurrent_edits_one_wins_the_rest_conflict(postgres_db: Database) -> None:
    assert_concurrent_edits_one_wins(ProfileService(postgres_db.session_factory))


def test_active_profile_record(postgres_db: Database) -> None:
    service = ProfileService(postgres_db.session_factory)
    service.create(make_create("calm"))
    service.create(make_create("ocean"))
    assert service.get_active() is None
    assert service.activate("calm").active
    assert [p.active for p in service.list().data] == [True, False]
    service.activate("ocean")
    assert service.get_active().name == "ocean"  # type: ignore[union-attr]
    service.deactivate()
    assert service.get_active() is None
    service.activate("calm")
    service.update("calm", ProfileUpdate(version=1, name="still-calm"))
    assert service.get_active().name == "still-calm"  # type: ignore[union-attr]
    assert service.delete("still-calm") is True
    assert service.get_active() is None


def test_export_import_round_trip(postgres_db: Database, tmp_path: Path) -> None:
    service = ProfileService(postgres_db.session_factory)
    fill(service)
    exported = service.export_all().model_dump_json()

    # PostgreSQL -> SQLite gives the same bundle back (same values, timestamps, versions) ...
    sqlite_db = open_database(data_dir=tmp_path)
    try:
        assert ProfileService(sqlite_db.session_factory).import_document(exported).source_format == "millm.profiles"
        assert ProfileService(sqlite_db.session_factory).export_all().model_dump_json() == exported
    finally:
        sqlite_db.close()

    # ... and so does PostgreSQL -> (emptied) PostgreSQL, and replacing in place.
    for name in ("empty", "ocean", "yelling-demo"):
        service.delete(name)
    result = service.import_document(exported.encode())
    assert sorted(p.name for p in result.profiles) == ["empty", "ocean", "yelling-demo"]
    assert service.export_all().model_dump_json() == exported
    assert service.get("ocean").version == 2
    replaced = service.import_document(exported, on_conflict="replace")
    assert sorted(replaced.replaced) == ["empty", "ocean", "yelling-demo"]
    assert service.get("ocean").version == 3
    with pytest.raises(Conflict):
        service.import_document(exported)


def test_reopening_keeps_the_data(empty_postgres_url: str) -> None:
    db = open_database(url=empty_postgres_url)
    service = ProfileService(db.session_factory)
    fill(service)
    service.activate("ocean")
    before = service.export_all().model_dump_json()
    db.close()

    db = open_database(url=empty_postgres_url)
    try:
        service = ProfileService(db.session_factory)
        assert service.export_all().model_dump_json() == before
        active = service.get_active()
        assert active is not None and active.name == "ocean" and active.version == 2
        assert service.create(make_create("after-reopen")).id == 4  # the id sequence continues
    finally:
        db.close()
