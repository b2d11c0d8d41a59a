"""Profile service: CRUD, activation, validation against the loaded model/SAE, export and import.

`ProfileService(session_factory)` is what the HTTP layer calls. Each method runs in one
transaction of its own and raises typed errors only: `InvalidRequest` naming the bad
field (``features[2].index``), `NotFound`, and `Conflict` for a taken name or a stale
version. Methods are synchronous (SQLAlchemy sessions); async callers run them in a
thread pool.

This service only *records* which profile is active. Applying a profile to the model
(and clearing steering when the active profile is deactivated or deleted) belongs to
`millm.services.control`, which checks that it fits the loaded model and SAE with
`SteeringService.check_fits` (the one compatibility check) first.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from millm.errors import Conflict, InvalidRequest
from millm.protocol.profiles import (
    ImportResult,
    ProfileBundle,
    ProfileCreate,
    ProfileDocument,
    ProfileList,
    ProfileName,
    ProfilePublic,
    ProfileUpdate,
    SaeRef,
    SteeringFeature,
)
from millm.services.profile_formats import (
    DSaeResolver,
    check_document,
    invalid,
    numbered_name,
    raise_if_errors,
    read_documents,
    validation_errors,
)
from millm.store import profiles as repo
from millm.store.profiles import ProfileData, as_utc
from millm.store.tables import ProfileRow

logger = logging.getLogger(__name__)

OnConflict = Literal["error", "rename", "replace"]
_NAME: TypeAdapter[str] = TypeAdapter(ProfileName)


class ProfileService:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    # -----------------------------------------------------------------------------------
    # CRUD

    def list(self, *, model_id: str | None = None) -> ProfileList:
        with self._sessions.begin() as session:
            active = repo.get_active(session=session)
            rows = repo.list_profiles(session=session, model_id=model_id)
            data = [_public(row, active=active is not None and row.id == active.id) for row in rows]
        return ProfileList(data=data, count=len(data))

    def get(self, name: str) -> ProfilePublic:
        with self._sessions.begin() as session:
            return self._public(session, repo.get_profile(session=session, name=name))

    def create(self, body: ProfileCreate, *, d_sae_resolver: DSaeResolver | None = None) -> ProfilePublic:
        """Store a new profile (also how the current steering is saved as one).

        `d_sae_resolver(model_id, sae_id)` gives the live SAE's d_sae where known, so a profile
        naming the attached SAE with another size is refused on `sae.d_sae`.
        """
        _check_profile(body, d_sae_resolver)
        with self._sessions.begin() as session:
            row = repo.create_profile(session=session, data=_data(body))
            return self._public(session, row)

    def update(self, name: str, body: ProfileUpdate, *, d_sae_resolver: DSaeResolver | None = None) -> ProfilePublic:
        """Apply the fields set in `body` if the profile is still at `body.version`."""
        if body.version is None:
            raise InvalidRequest("give the version being edited (in the body, or as If-Match)", param="version")
        with self._sessions.begin() as session:
            row = repo.get_profile(session=session, name=name)
            repo.check_version(row=row, expected_version=body.version)
            changes = {key: getattr(body, key) for key in body.model_fields_set - {"version"}}
            try:
                merged = ProfileCreate.model_validate({**_fields(row), **changes})
            except ValidationError as exc:  # e.g. an explicit null for a required field
                raise invalid(validation_errors(exc)) from exc
            _check_profile(merged, d_sae_resolver)
            row = repo.update_profile(session=session, name=name, expected_version=body.version, data=_data(merged))
            return self._public(session, row)

    def delete(self, name: str, *, version: int | None = None) -> bool:
        """Delete; returns True when it was the active profile (now cleared)."""
        with self._sessions.begin() as session:
            return repo.delete_profile(session=session, name=name, expected_version=version)

    def duplicate(self, name: str, *, new_name: str, description: str | None = None) -> ProfilePublic:
        _check_name(new_name)
        with self._sessions.begin() as session:
            row = repo.duplicate_profile(session=session, name=name, new_name=new_name, description=description)
            return self._public(session, row)

    # -----------------------------------------------------------------------------------
    # Active profile

    def activate(self, name: str) -> ProfilePublic:
        """Record `name` as the server-wide profile (restored at start-up)."""
        with self._sessions.begin() as session:
            row = repo.set_active(session=session, name=name)
            assert row is not None
            return _public(row, active=True)

    def deactivate(self) -> None:
        with self._sessions.begin() as session:
            repo.set_active(session=session, name=None)

    def get_active(self) -> ProfilePublic | None:
        with self._sessions.begin() as session:
            row = repo.get_active(session=session)
            return _public(row, active=True) if row is not None else None

    # -----------------------------------------------------------------------------------
    # Export / import

    def export_one(self, name: str) -> ProfileDocument:
        with self._sessions.begin() as session:
            return _document(repo.get_profile(session=session, name=name))

    def export_all(self, *, names: Iterable[str] | None = None) -> ProfileBundle:
        """All profiles (or the named ones, in that order) as one bundle."""
        with self._sessions.begin() as session:
            if names is None:
                rows = repo.list_profiles(session=session)
            else:
                rows = [repo.get_profile(session=session, name=name) for name in names]
            return ProfileBundle(profiles=[_document(row) for row in rows])

    def import_document(
        self,
        data: bytes | str | dict[str, Any] | builtins.list[Any],
        *,
        on_conflict: OnConflict = "error",
        name: str | None = None,
        d_sae_resolver: DSaeResolver | None = None,
    ) -> ImportResult:
        """Import a miLLM export, a Neuronpedia preset or a Goodfire variant, all or nothing.

        `name` renames a single-profile document. `on_conflict` decides what happens to a
        name that is already stored: "error" (409 listing them), "rename" ("calm-2") or
        "replace" (overwrite, keeping the stored profile's id and bumping its version).
        `d_sae_resolver(model_id, sae_id)` gives the live SAE's d_sae where known.
        """
        if on_conflict not in ("error", "rename", "replace"):
            raise InvalidRequest(
                f"on_conflict must be error, rename or replace, not {on_conflict!r}", param="on_conflict"
            )
        read = read_documents(data, d_sae_resolver=d_sae_resolver)
        docs = read.documents
        if name is not None:
            _check_name(name)
            if len(docs) != 1:
                raise InvalidRequest(f"name applies to one profile, but the document holds {len(docs)}", param="name")
            docs = [docs[0].model_copy(update={"name": name})]
        _check_unique_names(docs, read.paths, renaming=on_conflict == "rename")

        renamed: dict[str, str] = {}
        replaced: list[str] = []
        rows: list[ProfileRow] = []
        with self._sessions.begin() as session:
            taken = {row.name for row in repo.list_profiles(session=session)}
            if on_conflict == "error":
                clashes = [doc.name for doc in docs if doc.name in taken]
                if clashes:
                    raise Conflict(
                        f"profiles already exist: {', '.join(clashes)} (import with on_conflict=rename or replace)",
                        param="name", code="profile_exists",
                    )
            for doc in docs:
                if on_conflict == "replace" and doc.name in taken:
                    current = repo.get_profile(session=session, name=doc.name)
                    rows.append(repo.update_profile(
                        session=session, name=doc.name, expected_version=current.version, data=_data(doc)
                    ))
                    replaced.append(doc.name)
                    continue
                stored = doc.name
                if stored in taken:
                    stored = _free_name(doc.name, taken)
                    renamed[doc.name] = stored
                taken.add(stored)
                rows.append(repo.create_profile(
                    session=session,
                    data=_data(doc.model_copy(update={"name": stored})),
                    version=doc.version or 1,
                    created_at=doc.created_at,
                    updated_at=doc.updated_at,
                ))
            public = [self._public(session, row) for row in rows]
        logger.info("imported %d profile(s) from a %s document", len(public), read.source_format)
        return ImportResult(source_format=read.source_format, profiles=public, renamed=renamed, replaced=replaced)

    # -----------------------------------------------------------------------------------

    @staticmethod
    def _public(session: Session, row: ProfileRow) -> ProfilePublic:
        active = repo.get_active(session=session)
        return _public(row, active=active is not None and active.id == row.id)


# ---------------------------------------------------------------------------------------
# Conversions between wire models and store rows


def _data(profile: ProfileCreate | ProfileDocument) -> ProfileData:
    sae = profile.sae
    return ProfileData(
        name=profile.name,
        description=profile.description,
        model_id=profile.model,
        sae_id=sae.id,
        sae_hook_name=sae.hook_name,
        sae_layer=sae.layer,
        d_sae=sae.d_sae,
        sae_repo_id=sae.repo_id,
        sae_path=sae.path,
        sae_revision=sae.revision,
        sae_release=sae.release,
        sae_release_id=sae.sae_id,
        mode=profile.mode,
        normalize=profile.normalize,
        features=[feature.model_dump() for feature in profile.features],
        scale=profile.scale,
        scale_min=profile.scale_min,
        scale_max=profile.scale_max,
    )


def _fields(row: ProfileRow) -> dict[str, Any]:
    """The shared profile fields of a row, as wire-model values."""
    return {
        "name": row.name,
        "description": row.description,
        "model": row.model_id,
        "sae": SaeRef(
            id=row.sae_id,
            hook_name=row.sae_hook_name,
            layer=row.sae_layer,
            d_sae=row.d_sae,
            repo_id=row.sae_repo_id,
            path=row.sae_path,
            revision=row.sae_revision,
            release=row.sae_release,
            sae_id=row.sae_release_id,
        ),
        "mode": row.mode,
        "normalize": row.normalize,
        "features": [SteeringFeature.model_validate(feature) for feature in row.features],
        "scale": row.scale,
        "scale_min": row.scale_min,
        "scale_max": row.scale_max,
    }


def _public(row: ProfileRow, *, active: bool) -> ProfilePublic:
    return ProfilePublic(
        **_fields(row),
        id=row.id,
        version=row.version,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        active=active,
    )


def _document(row: ProfileRow) -> ProfileDocument:
    return ProfileDocument(
        **_fields(row), created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at), version=row.version
    )


# ---------------------------------------------------------------------------------------
# Checks


def _check_profile(profile: ProfileCreate, resolver: DSaeResolver | None) -> None:
    raise_if_errors(check_document(
        profile, prefix="", d_sae_resolver=resolver, feature_path=lambda i, name: f"features[{i}].{name}"
    ))


def _check_name(name: str) -> None:
    try:
        _NAME.validate_python(name)
    except ValidationError as exc:
        raise InvalidRequest(
            f"invalid profile name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
            "starting with a letter or digit)",
            param="name",
        ) from exc


def _free_name(name: str, taken: set[str]) -> str:
    """The first of name-2, name-3, ... not in `taken`."""
    n = 2
    while numbered_name(name, n) in taken:
        n += 1
    return numbered_name(name, n)


def _check_unique_names(docs: list[ProfileDocument], paths: list[str], *, renaming: bool) -> None:
    if renaming:
        return
    seen: dict[str, str] = {}
    errors = []
    for doc, path in zip(docs, paths, strict=True):
        where = f"{path}.name" if path else "name"
        if doc.name in seen:
            errors.append((where, f"duplicate name '{doc.name}' in this document (also at {seen[doc.name]})"))
        seen.setdefault(doc.name, where)
    raise_if_errors(errors)
