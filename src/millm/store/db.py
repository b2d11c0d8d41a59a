"""Open the profile database: engine, session factory and automatic schema upgrades.

`open_database(url=..., data_dir=...)` returns a `Database` whose schema is current:
it creates a fresh database or applies every forward migration from the version stored
in the `schema_version` table, all in one transaction. A database newer than this code
is refused rather than guessed at.

SQLite (the default, ``<data_dir>/millm.db``) is configured on every connection:

- ``journal_mode=WAL``: readers never block the writer, and a commit is one append to
  the write-ahead log, so a process killed mid-write leaves the last committed state.
- ``synchronous=FULL``: every commit is fsynced before it returns. ``NORMAL`` would
  already keep acknowledged writes through a process kill (SIGKILL) — committed WAL
  frames are in the OS page cache — but not through a power loss or OS crash; profile
  writes are rare, so the extra fsync is cheap insurance.
- ``busy_timeout``: wait for another writer instead of failing with "database is locked".
- ``foreign_keys=ON``.
- Transactions start with ``BEGIN IMMEDIATE`` (the SQLAlchemy recipe of taking BEGIN away
  from the sqlite3 driver), so a read-then-write transaction cannot fail half-way on a
  lock upgrade; writers queue on busy_timeout instead.

PostgreSQL (``MILLM_DATABASE_URL=postgresql+psycopg://...``) goes through the same code:
outside the SQLite connection hooks only portable SQLAlchemy constructs are used, and
migrations are Core DDL, which PostgreSQL runs transactionally too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from millm.errors import InternalError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
DB_FILENAME = "millm.db"
BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Database:
    engine: Engine
    session_factory: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def database_url(*, url: str | None = None, data_dir: Path | None = None) -> str:
    """`url` when given, else SQLite in `data_dir` (created if missing)."""
    if url:
        return url
    if data_dir is None:
        raise ValueError("either a database url or a data dir is needed")
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / DB_FILENAME).resolve()}"


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for `url`, with the SQLite connection set-up described above."""
    engine = create_engine(url, echo=echo)
    if make_url(url).get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def open_database(*, url: str | None = None, data_dir: Path | None = None, echo: bool = False) -> Database:
    """Engine + session factory for an up-to-date schema (migrating if needed)."""
    engine = create_db_engine(database_url(url=url, data_dir=data_dir), echo=echo)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return Database(engine=engine, session_factory=sessionmaker(engine, expire_on_commit=False))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver; we emit BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# ---------------------------------------------------------------------------------------
# Migrations. Each step gets the connection of the single migration transaction and
# defines the tables it creates itself (a frozen copy), so later edits to
# millm.store.tables never change what an old step does.

_version_meta = MetaData()
_schema_version = Table(
    "schema_version", _version_meta, Column("version", Integer, primary_key=True, autoincrement=False)
)


def _v1_profiles(conn: Connection) -> None:
    meta = MetaData()
    Table(
        "profiles",
        meta,
        Column("id", Integer, primary_key=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("description", Text, nullable=False),
        Column("model_id", String(512), nullable=False),
        Column("sae_id", String(512), nullable=False),
        Column("sae_hook_name", String(256), nullable=False),
        Column("sae_layer", Integer, nullable=False),
        Column("d_sae", Integer, nullable=False),
        Column("sae_repo_id", String(512)),
        Column("sae_path", String(1024)),
        Column("sae_revision", String(256)),
        Column("sae_release", String(512)),
        Column("sae_release_id", String(512)),
        Column("mode", String(16), nullable=False),
        Column("normalize", Boolean, nullable=False),
        Column("features", JSON, nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    meta.create_all(conn)


def _v2_settings(conn: Connection) -> None:
    """Key/value settings, used to remember the active profile across restarts."""
    meta = MetaData()
    Table("settings", meta, Column("key", String(64), primary_key=True), Column("value", Text))
    meta.create_all(conn)


def _v3_scale_and_labels(conn: Connection) -> None:
    """Profiles gain a default steering scale and its range (nullable: stored profiles keep behaving as before);
    imported feature labels get a table, one row per SAE."""
    for column in ("scale", "scale_min", "scale_max"):
        conn.execute(text(f"ALTER TABLE profiles ADD COLUMN {column} FLOAT"))
    meta = MetaData()
    Table(
        "sae_labels",
        meta,
        Column("sae_id", String(512), primary_key=True),
        Column("d_sae", Integer, primary_key=True, autoincrement=False),
        Column("labels", JSON, nullable=False),
        Column("source", String(64), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    meta.create_all(conn)


# MIGRATIONS[n - 1] upgrades a version n - 1 database to version n (0: empty database).
MIGRATIONS: list[Callable[[Connection], None]] = [_v1_profiles, _v2_settings, _v3_scale_and_labels]
assert len(MIGRATIONS) == SCHEMA_VERSION


def read_schema_version(conn: Connection) -> int:
    """The stored schema version; 0 for a database without one."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    version = conn.execute(select(_schema_version.c.version)).scalar()
    return int(version) if version is not None else 0


def migrate(engine: Engine, *, target: int = SCHEMA_VERSION) -> int:
    """Upgrade the schema to `target` in one transaction; returns the version found."""
    with engine.begin() as conn:
        found = read_schema_version(conn)
        if found > SCHEMA_VERSION:
            raise InternalError(
                f"the profile database has schema version {found}, newer than this miLLM "
                f"understands ({SCHEMA_VERSION}); upgrade miLLM or point MILLM_DATABASE_URL elsewhere",
                code="schema_too_new",
            )
        if found >= target:
            return found
        if found == 0:
            _version_meta.create_all(conn)
        for version in range(found + 1, target + 1):
            MIGRATIONS[version - 1](conn)
        conn.execute(_schema_version.delete())
        conn.execute(_schema_version.insert().values(version=target))
    logger.info("profile database migrated from schema version %d to %d", found, target)
    return found
