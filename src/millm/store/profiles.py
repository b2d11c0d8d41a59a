"""Keyword-only repository functions for steering profiles.

Every function works inside the caller's session and never commits: the caller (the
profile service) owns the transaction, so an import of many profiles is all-or-nothing.
Values come in and go out as plain Python (`ProfileData`, `ProfileRow`); this module
knows nothing of the wire format.

Edits use optimistic concurrency: `update_profile` and `delete_profile` take the version
the caller read and run ``UPDATE/DELETE ... WHERE id = ? AND version = ?``. A stale
version — including one that another writer bumped between our read and our write —
raises `Conflict` instead of overwriting someone else's edit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from millm.errors import Conflict, NotFound
from millm.store.tables import ProfileRow, SettingRow

ACTIVE_PROFILE_KEY = "active_profile_id"


@dataclass(frozen=True, kw_only=True)
class ProfileData:
    """The editable content of a profile (everything but id, version and timestamps)."""

    name: str
    description: str
    model_id: str
    sae_id: str
    sae_hook_name: str
    sae_layer: int
    d_sae: int
    mode: str
    normalize: bool
    features: list[dict[str, Any]] = field(default_factory=list)
    sae_repo_id: str | None = None
    sae_path: str | None = None
    sae_revision: str | None = None
    sae_release: str | None = None
    sae_release_id: str | None = None
    scale: float | None = None
    scale_min: float | None = None
    scale_max: float | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---------------------------------------------------------------------------------------
# Reads


def find_profile(*, session: Session, name: str) -> ProfileRow | None:
    return session.execute(select(ProfileRow).where(ProfileRow.name == name)).scalar_one_or_none()


def get_profile(*, session: Session, name: str) -> ProfileRow:
    row = find_profile(session=session, name=name)
    if row is None:
        raise NotFound(f"profile '{name}' does not exist", param="name", code="profile_not_found")
    return row


def list_profiles(*, session: Session, model_id: str | None = None) -> list[ProfileRow]:
    query = select(ProfileRow).order_by(ProfileRow.name)
    if model_id is not None:
        query = query.where(ProfileRow.model_id == model_id)
    return list(session.execute(query).scalars())


def count_profiles(*, session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(ProfileRow)).scalar_one())


# ---------------------------------------------------------------------------------------
# Writes


def create_profile(
    *,
    session: Session,
    data: ProfileData,
    version: int = 1,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
) -> ProfileRow:
    """Insert a profile; `Conflict` when the name is taken."""
    _ensure_name_free(session=session, name=data.name)
    now = utcnow()
    row = ProfileRow(
        **asdict(data),
        version=version,
        created_at=as_utc(created_at or now),
        updated_at=as_utc(updated_at or created_at or now),
    )
    session.add(row)
    _flush_or_conflict(session=session, name=data.name)
    return row


def update_profile(*, session: Session, name: str, expected_version: int, data: ProfileData) -> ProfileRow:
    """Replace a profile's content if it is still at `expected_version`; bumps the version."""
    row = get_profile(session=session, name=name)
    check_version(row=row, expected_version=expected_version)
    if data.name != name:
        _ensure_name_free(session=session, name=data.name)
    result = session.execute(
        update(ProfileRow)
        .where(ProfileRow.id == row.id, ProfileRow.version == expected_version)
        .values(**asdict(data), version=ProfileRow.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _stale(name=name, expected_version=expected_version)
    _flush_or_conflict(session=session, name=data.name)
    session.refresh(row)
    return row


def delete_profile(*, session: Session, name: str, expected_version: int | None = None) -> bool:
    """Delete a profile; returns whether it was the active one (which is then cleared)."""
    row = get_profile(session=session, name=name)
    query = delete(ProfileRow).where(ProfileRow.id == row.id)
    if expected_version is not None:
        check_version(row=row, expected_version=expected_version)
        query = query.where(ProfileRow.version == expected_version)
    was_active = _active_id(session=session) == row.id
    result = session.execute(query.execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _stale(name=name, expected_version=expected_version or row.version)
    session.expunge(row)
    if was_active:
        set_active(session=session, name=None)
    return was_active


def duplicate_profile(*, session: Session, name: str, new_name: str, description: str | None = None) -> ProfileRow:
    source = get_profile(session=session, name=name)
    data = row_data(source)
    changes: dict[str, Any] = {"name": new_name}
    if description is not None:
        changes["description"] = description
    return create_profile(session=session, data=ProfileData(**{**asdict(data), **changes}))


def row_data(row: ProfileRow) -> ProfileData:
    """The editable content of a stored row."""
    return ProfileData(**{name: getattr(row, name) for name in ProfileData.__dataclass_fields__})


# ---------------------------------------------------------------------------------------
# Active profile


def set_active(*, session: Session, name: str | None) -> ProfileRow | None:
    """Make `name` the active profile (None: no active profile)."""
    row = get_profile(session=session, name=name) if name is not None else None
    setting = session.get(SettingRow, ACTIVE_PROFILE_KEY)
    value = str(row.id) if row is not None else None
    if setting is None:
        session.add(SettingRow(key=ACTIVE_PROFILE_KEY, value=value))
    else:
        setting.value = value
    session.flush()
    return row


def get_active(*, session: Session) -> ProfileRow | None:
    """The active profile, or None (also when it was deleted by other means)."""
    profile_id = _active_id(session=session)
    return session.get(ProfileRow, profile_id) if profile_id is not None else None


def _active_id(*, session: Session) -> int | None:
    setting = session.get(SettingRow, ACTIVE_PROFILE_KEY)
    if setting is None or setting.value is None or not setting.value.isdigit():
        return None
    return int(setting.value)


# ---------------------------------------------------------------------------------------
# Helpers


def _ensure_name_free(*, session: Session, name: str) -> None:
    if find_profile(session=session, name=name) is not None:
        raise Conflict(f"a profile named '{name}' already exists", param="name", code="profile_exists")


def _flush_or_conflict(*, session: Session, name: str) -> None:
    # The unique index is the real guard against a concurrent insert of the same name;
    # the session is unusable afterwards and the caller's transaction rolls back.
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a profile named '{name}' already exists", param="name", code="profile_exists") from exc


def check_version(*, row: ProfileRow, expected_version: int) -> None:
    """`Conflict` unless `row` is still at the version the caller read."""
    if row.version != expected_version:
        raise _stale(name=row.name, expected_version=expected_version, current=row.version)


def _stale(*, name: str, expected_version: int, current: int | None = None) -> Conflict:
    now = f"; it is now at version {current}" if current is not None else ""
    return Conflict(
        f"profile '{name}' was changed by someone else: you edited version {expected_version}{now}. "
        "Reload it and apply your change again.",
        param="version",
        code="version_conflict",
    )
