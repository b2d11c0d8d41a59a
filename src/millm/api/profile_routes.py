"""/api/profiles: CRUD, duplicate, activate/deactivate, save current steering, import/export, schema.

HTTP framing only. Reads call `ProfileService` (in a thread: SQLAlchemy is synchronous); every change
that can touch the server-wide steering (create, edit, delete, import, activate, deactivate, save the
steering) calls `ControlService`. Edits take the version being edited (in the body, or as an
`If-Match` ETag) so a stale edit is a 409, never a lost update.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from millm.api.state import RuntimeDep
from millm.protocol import profiles as pp
from millm.protocol.openai import ErrorResponse

router = APIRouter(prefix="/api/profiles", tags=["profiles"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409)}


class SaveSteeringIn(BaseModel):
    name: pp.ProfileName
    description: str = Field("", max_length=4000, description="Free text shown with the profile.")


NamePath = Annotated[str, Path(description="The profile's name.")]
IfMatch = Annotated[str | None, Header(
    description="The profile's ETag as GET gave it: refused with 409 if the profile changed since.")]


def _etag(response: Response, profile: pp.ProfilePublic) -> pp.ProfilePublic:
    response.headers["ETag"] = pp.etag_for(profile.version)
    return profile


@router.get("", operation_id="listProfiles", response_model=pp.ProfileList)
async def list_profiles(
    rt: RuntimeDep,
    model: Annotated[str | None, Query(description="Only the profiles made for this model id.")] = None,
) -> pp.ProfileList:
    """List profiles.

    Every saved profile (`model=` keeps those for one model), the active one marked, each with its virtual model
    id."""
    return await asyncio.to_thread(rt.profiles.list, model_id=model)


@router.post("", operation_id="createProfile", response_model=pp.ProfilePublic, status_code=201, responses=ERRORS)
async def create_profile(body: pp.ProfileCreate, rt: RuntimeDep, response: Response) -> pp.ProfilePublic:
    """Create a profile.

    Save a steering configuration (model, SAE, features, mode) under a new name."""
    return _etag(response, await rt.control.create_profile(body))


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
                          name: Annotated[str | None, Query(
                              description="Store a single imported profile under this name.")] = None,
                          ) -> pp.ImportResult:
    """Import profiles.

    Import a miLLM profile or bundle, a Neuronpedia preset or a Goodfire variant (the raw JSON file as the
    body). `on_conflict` decides what a name already in use does: fail, get a new name, or replace."""
    return await rt.control.import_profiles(await request.body(), on_conflict=on_conflict,  # type: ignore[arg-type]
                                            name=name)


@router.post("/deactivate", operation_id="deactivateProfile", status_code=204)
async def deactivate(rt: RuntimeDep) -> Response:
    """Deactivate the active profile.

    Stop steering with the active profile; the server-wide steering is cleared."""
    await rt.control.deactivate_profile()
    return Response(status_code=204)


@router.post("/from-steering", operation_id="createProfileFromSteering",
             response_model=pp.ProfilePublic, status_code=201, responses=ERRORS)
async def save_current(body: SaveSteeringIn, rt: RuntimeDep, response: Response) -> pp.ProfilePublic:
    """Save the steering as a profile.

    Save the current server-wide steering (with the loaded model and attached SAE) as a new profile."""
    return _etag(response, await rt.control.save_steering(body.name, body.description))


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
                         body: pp.ProfileUpdate, if_match: IfMatch = None) -> pp.ProfilePublic:
    """Update a profile.

    PUT and PATCH take the same body and change the fields it gives. Give the version being edited (in the
    body or as `If-Match`), so that a stale edit is a 409 instead of a lost update. An edited active profile
    steers with its new content at once."""
    return _etag(response, await rt.control.update_profile(name, body, if_match=if_match))


@router.delete("/{name}", operation_id="deleteProfile", status_code=204, responses=ERRORS)
async def delete_profile(name: NamePath, rt: RuntimeDep, version: int | None = Query(None, ge=1, le=pp.MAX_VERSION,
                                                                         description="Delete only at this version."),
                         if_match: IfMatch = None) -> Response:
    """Delete a profile.

    Delete a profile (optionally only at `version` / `If-Match`); deleting the active one stops its steering."""
    await rt.control.delete_profile(name, version=version, if_match=if_match)
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
    return _etag(response, await rt.control.activate_profile(name))


@router.get("/{name}/export", operation_id="exportProfile", response_model=pp.ProfileDocument, responses=ERRORS)
async def export_one(name: NamePath, rt: RuntimeDep) -> pp.ProfileDocument:
    """Export a profile.

    One profile as a document ready to import elsewhere."""
    return await asyncio.to_thread(rt.profiles.export_one, name)
