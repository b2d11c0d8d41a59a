"""/api/profiles: CRUD, duplicate, activate/deactivate, save current steering, import/export, schema.

Store calls are synchronous SQLAlchemy work and run in a thread. Edits take the version being
edited (in the body, or as an `If-Match` ETag) so a stale edit is a 409, never a lost update.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError, WithJsonSchema

from millm.api.state import RuntimeDep
from millm.errors import InvalidRequest, MillmError
from millm.protocol import profiles as pp
from millm.protocol.openai import ErrorResponse
from millm.services.profile_formats import DSaeResolver, invalid, validation_errors
from millm.services.runtime import Runtime, named_steering

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/profiles", tags=["profiles"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409)}


class SaveSteeringIn(BaseModel):
    name: pp.ProfileName
    description: str = Field("", max_length=4000, description="Free text shown with the profile.")


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # (its nested models are components that other routes use)
    return schema


# The update body is validated here, not by FastAPI (the version may come from If-Match, and every bad field is
# listed at once), but documented as the ProfileUpdate it is.
def _update_schema() -> dict[str, Any]:
    schema = _inline_schema(pp.ProfileUpdate)
    schema["required"] = []  # the version may come as If-Match instead
    return schema


UpdateBody = Annotated[dict[str, Any], WithJsonSchema(_update_schema()),
                       Body(description="The fields to change, and the version being edited (or send If-Match).")]


NamePath = Annotated[str, Path(description="The profile's name.")]
IfMatch = Annotated[str | None, Header(
    description="The profile's ETag as GET gave it: refused with 409 if the profile changed since.")]


def _etag(response: Response, profile: pp.ProfilePublic) -> pp.ProfilePublic:
    response.headers["ETag"] = pp.etag_for(profile.version)
    return profile


def _live_d_sae(rt: Runtime) -> DSaeResolver:
    """d_sae of the attached SAE for a profile naming the loaded model and that SAE, else None."""
    info, models = rt.saes.info(), rt.model_names()

    def resolve(model: str | None, sae: str | None) -> int | None:
        return info.d_sae if info is not None and model in models and sae == info.sae_id else None

    return resolve


def _version_from_if_match(if_match: str) -> int:
    version = pp.version_from_etag(if_match)
    if version is None:
        raise InvalidRequest(f"If-Match {if_match!r} is not an ETag of this API", param="If-Match")
    return version


async def _apply_if_active(rt: Runtime, profile: pp.ProfilePublic) -> pp.ProfilePublic:
    """Re-apply an edited active profile; one edited to fit another model or SAE stops steering."""
    if not profile.active:
        return profile
    try:
        rt.steering.activate(named_steering(profile))
    except MillmError as exc:
        log.warning("active profile %s no longer fits and was deactivated: %s", profile.name, exc.message)
        await asyncio.to_thread(rt.profiles.deactivate)
        rt.steering.deactivate()
        return profile.model_copy(update={"active": False})
    return profile


@router.get("", operation_id="listProfiles", response_model=pp.ProfileList)
async def list_profiles(rt: RuntimeDep, model: str | None = Query(
        None, description="Only the profiles made for this model id.")) -> pp.ProfileList:
    """List profiles.

    Every saved profile (`model=` keeps those for one model), the active one marked, each with its virtual model
    id."""
    return await asyncio.to_thread(rt.profiles.list, model_id=model)


@router.post("", operation_id="createProfile", response_model=pp.ProfilePublic, status_code=201, responses=ERRORS)
async def create_profile(body: pp.ProfileCreate, rt: RuntimeDep, response: Response) -> pp.ProfilePublic:
    """Create a profile.

    Save a steering configuration (model, SAE, features, mode) under a new name."""
    created = await asyncio.to_thread(rt.profiles.create, body, d_sae_resolver=_live_d_sae(rt))
    return _etag(response, created)


@router.get("/schema", operation_id="getProfileSchema", response_model=dict[str, Any])
async def profile_schema() -> dict[str, Any]:
    """Get the profile format schema.

    JSON Schema of the profile export format (see docs/profile-format.md)."""
    return pp.profile_format_schema()


@router.get("/export", operation_id="exportProfiles", response_model=pp.ProfileBundle, responses=ERRORS)
async def export_all(rt: RuntimeDep, names: list[str] | None = Query(
        None, description="Profiles to export (repeat the parameter); none: all.")) -> pp.ProfileBundle:
    """Export profiles.

    A bundle of every profile (or those named in `names`), ready to import elsewhere."""
    return await asyncio.to_thread(rt.profiles.export_all, names=names)


@router.post("/import", operation_id="importProfiles",
             response_model=pp.ImportResult, status_code=201, responses=ERRORS)
async def import_profiles(request: Request, rt: RuntimeDep,
                          on_conflict: str = Query("error", pattern="^(error|rename|replace)$", description=(
                              "A name already in use: error (409, nothing imported), rename (a free name), "
                              "or replace the existing profile.")),
                          name: str | None = Query(None, description="Store a single imported profile under "
                                                                     "this name.")) -> pp.ImportResult:
    """Import profiles.

    Import a miLLM profile or bundle, a Neuronpedia preset or a Goodfire variant (the raw JSON file as the
    body). `on_conflict` decides what a name already in use does: fail, get a new name, or replace."""
    raw = await request.body()
    result = await asyncio.to_thread(rt.profiles.import_document, raw,
                                     on_conflict=on_conflict,  # type: ignore[arg-type]
                                     name=name, d_sae_resolver=_live_d_sae(rt))
    # on_conflict=replace may have overwritten the active profile: steer with the new content.
    result.profiles = [await _apply_if_active(rt, profile) for profile in result.profiles]
    return result


@router.post("/deactivate", operation_id="deactivateProfile", status_code=204)
async def deactivate(rt: RuntimeDep) -> Response:
    """Deactivate the active profile.

    Stop steering with the active profile; the server-wide steering is cleared."""
    await asyncio.to_thread(rt.profiles.deactivate)
    rt.steering.deactivate()
    return Response(status_code=204)


@router.post("/from-steering", operation_id="createProfileFromSteering",
             response_model=pp.ProfilePublic, status_code=201, responses=ERRORS)
async def save_current(body: SaveSteeringIn, rt: RuntimeDep, response: Response) -> pp.ProfilePublic:
    """Save the steering as a profile.

    Save the current server-wide steering (with the loaded model and attached SAE) as a new profile."""
    att, model = rt.saes.attached, rt.models.served_name()
    if att is None or model is None:
        raise InvalidRequest("attach an SAE and set steering before saving it as a profile", param="name")
    s = rt.steering.state
    create = pp.ProfileCreate(
        name=body.name, description=body.description, model=model,
        sae=pp.SaeRef(id=att.sae_id, hook_name=att.hook_name, layer=att.hookpoint.layer, d_sae=att.sae.cfg.d_sae,
                      repo_id=att.source.get("repo_id"), path=att.source.get("path"),
                      revision=att.source.get("revision")),
        mode=s.mode, normalize=s.normalize,
        features=[pp.SteeringFeature(index=i, strength=v, label=s.labels.get(i) or rt.monitor.labels.get(i))
                  for i, v in sorted(s.features.items())],
        scale=None if s.scale == 1 else s.scale,
    )
    return _etag(response, await asyncio.to_thread(rt.profiles.create, create))


@router.get("/{name}", operation_id="getProfile", response_model=pp.ProfilePublic, responses=ERRORS)
async def get_profile(name: NamePath, rt: RuntimeDep, response: Response) -> pp.ProfilePublic:
    """Get a profile.

    One profile, with its version in the body and as an `ETag`."""
    return _etag(response, await asyncio.to_thread(rt.profiles.get, name))


@router.put("/{name}", operation_id="replaceProfile", summary="Replace a profile's fields",
            response_model=pp.ProfilePublic, responses=ERRORS)
@router.patch("/{name}", operation_id="updateProfile", summary="Update a profile",
              response_model=pp.ProfilePublic, responses=ERRORS)
async def update_profile(name: NamePath, rt: RuntimeDep, response: Response,
                         body: UpdateBody,
                         if_match: IfMatch = None) -> pp.ProfilePublic:
    """Update a profile.

    PUT and PATCH take the same body and change the fields it gives. Give the version being edited (in the
    body or as `If-Match`), so that a stale edit is a 409 instead of a lost update. An edited active profile
    steers with its new content at once."""
    if if_match is not None and "version" not in body:
        body = {**body, "version": _version_from_if_match(if_match)}
    try:
        update = pp.ProfileUpdate.model_validate(body)
    except ValidationError as exc:
        raise invalid(validation_errors(exc)) from exc
    profile = await asyncio.to_thread(rt.profiles.update, name, update, d_sae_resolver=_live_d_sae(rt))
    return _etag(response, await _apply_if_active(rt, profile))


@router.delete("/{name}", operation_id="deleteProfile", status_code=204, responses=ERRORS)
async def delete_profile(name: NamePath, rt: RuntimeDep, version: int | None = Query(None, ge=1, le=pp.MAX_VERSION,
                                                                         description="Delete only at this version."),
                         if_match: IfMatch = None) -> Response:
    """Delete a profile.

    Delete a profile (optionally only at `version` / `If-Match`); deleting the active one stops its steering."""
    if version is None and if_match is not None:
        version = _version_from_if_match(if_match)
    if await asyncio.to_thread(rt.profiles.delete, name, version=version):
        rt.steering.deactivate()
    return Response(status_code=204)


@router.post("/{name}/duplicate", operation_id="duplicateProfile",
             response_model=pp.ProfilePublic, status_code=201, responses=ERRORS)
async def duplicate_profile(name: NamePath, body: pp.ProfileDuplicate, rt: RuntimeDep,
                            response: Response) -> pp.ProfilePublic:
    """Duplicate a profile.

    Copy a profile under a new name (inactive)."""
    profile = await asyncio.to_thread(rt.profiles.duplicate, name, new_name=body.name, description=body.description)
    return _etag(response, profile)


@router.post("/{name}/activate", operation_id="activateProfile", response_model=pp.ProfilePublic, responses=ERRORS)
async def activate_profile(name: NamePath, rt: RuntimeDep, response: Response) -> pp.ProfilePublic:
    """Activate a profile.

    Steer every request that brings no steering of its own with this profile. Refused when it does not fit the
    loaded model or the attached SAE."""
    profile = await asyncio.to_thread(rt.profiles.get, name)
    info, models = rt.saes.info(), rt.model_names()
    # validate_against compares one model id: the one the profile names when it is one of ours.
    model_id = profile.model if profile.model in models else (models[0] if models else None)
    rt.profiles.validate_against(profile, model_id=model_id, sae_id=info.sae_id if info else None,
                                 d_sae=info.d_sae if info else None)
    rt.steering.activate(named_steering(profile))
    return _etag(response, await asyncio.to_thread(rt.profiles.activate, name))


@router.get("/{name}/export", operation_id="exportProfile", response_model=pp.ProfileDocument, responses=ERRORS)
async def export_one(name: NamePath, rt: RuntimeDep) -> pp.ProfileDocument:
    """Export a profile.

    One profile as a document ready to import elsewhere."""
    return await asyncio.to_thread(rt.profiles.export_one, name)
