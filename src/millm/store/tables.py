"""SQLAlchemy 2 declarative tables of the profile store (schema version 3).

Only portable column types are used (String, Text, Integer, Boolean, DateTime, JSON), so
the same tables work on SQLite and PostgreSQL. The schema itself is created and
upgraded by the migrations in `millm.store.db`, never by `metadata.create_all`;
a test checks that the migrated database matches these classes.

Features are one JSON column (a list of {"index", "strength", "label"}) rather than a
child table: a profile is always read and written whole, and one row per profile keeps
every write a single-row statement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SchemaVersionRow(Base):
    """One row: the schema version the database was migrated to."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class ProfileRow(Base):
    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    model_id: Mapped[str] = mapped_column(String(512), nullable=False)
    sae_id: Mapped[str] = mapped_column(String(512), nullable=False)
    sae_hook_name: Mapped[str] = mapped_column(String(256), nullable=False)
    sae_layer: Mapped[int] = mapped_column(Integer, nullable=False)
    d_sae: Mapped[int] = mapped_column(Integer, nullable=False)
    sae_repo_id: Mapped[str | None] = mapped_column(String(512))
    sae_path: Mapped[str | None] = mapped_column(String(1024))
    sae_revision: Mapped[str | None] = mapped_column(String(256))
    sae_release: Mapped[str | None] = mapped_column(String(512))
    sae_release_id: Mapped[str | None] = mapped_column(String(512))
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    normalize: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # Schema 3: the profile's default intensity and the range a request's steering.scale must stay in (null: unset).
    scale: Mapped[float | None] = mapped_column(Float)
    scale_min: Mapped[float | None] = mapped_column(Float)
    scale_max: Mapped[float | None] = mapped_column(Float)


class SaeLabelsRow(Base):
    """Feature labels imported for one SAE (schema 3), kept across restarts: one row per (SAE id, d_sae), the
    labels one JSON object {"<index>": {"label": ..., "score": ...}} (an SAE's labels are always read and replaced
    whole)."""

    __tablename__ = "sae_labels"

    sae_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    d_sae: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    labels: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, nullable=False)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SettingRow(Base):
    """Small key/value settings that must survive restarts (e.g. the active profile)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
