"""Store fixtures: a throwaway PostgreSQL server (skipped where PostgreSQL is not installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from millm.store.db import Database, open_database
from tests.store.postgres import postgres_server, skip_reason


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database on a PostgreSQL server started for this test session (stopped at the end)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> str:
    """`postgres_url` with its public schema dropped and recreated: an empty database for one test."""
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()
    return postgres_url


@pytest.fixture
def postgres_db(empty_postgres_url: str) -> Iterator[Database]:
    """The profile store opened (and migrated) on an empty PostgreSQL database; closed after the test."""
    db = open_database(url=empty_postgres_url)
    try:
        yield db
    finally:
        db.close()
