"""Wire shapes for steering profiles and the profile export format (version 1).

A profile is a named, saved steering configuration: one SAE on one model, a steering
mode and a list of (feature index, strength) pairs. The models here are used both by
the REST API and by the export/import file format described in docs/profile-format.md.

Profile documents are strict (`extra="forbid"`, no type coercion), so an import names
every unknown or mistyped field instead of silently dropping it. Foreign formats
(Neuronpedia presets, Goodfire variants) are read leniently, since their producers add
fields freely; they are converted to `ProfileDocument` by `millm.services.profiles`.

Run `python -m millm.protocol.profiles` to regenerate `profile.schema.json` after a
change to the export models (a test fails while the committed file is stale).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import models_json_schema

PROFILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
FORMAT_VERSION: Final = 1
PROFILE_FORMAT: Final = "millm.profile"
BUNDLE_FORMAT: Final = "millm.profiles"
SCHEMA_ID = "urn:millm:schema:profile-format:1"
SCHEMA_PATH = Path(__file__).with_name("profile.schema.json")
MAX_INT = 2**31 - 1  # feature indices, layers and SAE widths: far past any real SAE, and within a database integer
MAX_VERSION = 2**63 - 1  # a profile version, as the database stores it
MAX_FEATURES = 4096

SteeringMode = Literal["add", "clamp"]
ProfileName = Annotated[
    str,
    Field(
        pattern=PROFILE_NAME_PATTERN,
        description="Unique, URL-safe: letters, digits, '.', '_' or '-', at most 64 characters, "
        "starting with a letter or digit. No '+' (it separates model and profile in 'model+profile').",
        examples=["yelling-demo"],
    ),
]
# Timestamps are strings in JSON; strict mode would refuse them from a parsed dict.
Timestamp = Annotated[datetime, Field(strict=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _unset(value: object) -> bool:
    return value is None


# ---------------------------------------------------------------------------------------
# Profile parts


class SteeringFeature(_Strict):
    """One steered SAE feature."""

    index: int = Field(ge=0, le=MAX_INT, description="Feature index in the SAE, 0 ≤ index < d_sae.")
    strength: float = Field(
        allow_inf_nan=False,
        description="Coefficient on the feature's decoder direction (mode add) or its pinned activation (mode clamp).",
    )
    label: str | None = Field(None, max_length=512, description="Human-readable feature description.")


class SaeRef(_Strict):
    """Which SAE a profile's feature indices refer to."""

    id: str = Field(min_length=1, max_length=512, description="The SAE's id as miLLM reports it.")
    hook_name: str = Field(min_length=1, max_length=256, description="Hook point, e.g. blocks.3.hook_resid_post.")
    layer: int = Field(ge=0, le=MAX_INT, description="Layer the SAE reads and steers.")
    d_sae: int = Field(ge=1, le=MAX_INT, description="Number of SAE features.")
    repo_id: str | None = Field(None, description="Hub repo the SAE was loaded from.")
    path: str | None = Field(None, description="Folder or file inside repo_id.")
    revision: str | None = Field(None, description="Hub revision of repo_id.")
    release: str | None = Field(None, description="SAELens release name (with sae_id).")
    sae_id: str | None = Field(None, description="SAE id inside the SAELens release.")


class _ProfileFields(_Strict):
    name: ProfileName
    description: str = Field("", max_length=4000, description="Free text shown with the profile.")
    model: str = Field(min_length=1, max_length=512, description="Model id the profile was made for.")
    sae: SaeRef = Field(description="The SAE its feature indices refer to.")
    mode: SteeringMode = Field("add", description="add: h += strength·W_dec[i]; clamp: pin the feature's activation.")
    normalize: bool = Field(False, description="Scale each decoder direction to unit norm before applying strength.")
    features: list[SteeringFeature] = Field(default_factory=list, max_length=MAX_FEATURES,
                                            description="The steered features, each index at most once.")
    # Left out of dumps when unset, so exports of profiles without a dial are what they were before it existed.
    scale: float | None = Field(
        None, ge=0, allow_inf_nan=False, exclude_if=_unset,
        description="Default intensity: multiplies every strength when the profile is applied and the request gives "
        "no steering.scale (absent: 1).")
    scale_min: float | None = Field(None, ge=0, allow_inf_nan=False, exclude_if=_unset,
                                    description="Lowest steering.scale a request may ask of this profile (absent: 0).")
    scale_max: float | None = Field(None, ge=0, allow_inf_nan=False, exclude_if=_unset,
                                    description="Highest steering.scale a request may ask of this profile "
                                    "(absent: the server's MILLM_STEERING_MAX_SCALE).")

    @model_validator(mode="after")
    def _scale_range(self) -> _ProfileFields:
        low = 0.0 if self.scale_min is None else self.scale_min
        if self.scale_max is not None and self.scale_max < low:
            raise ValueError("scale_max must not be below scale_min")
        if self.scale is not None and (self.scale < low or (self.scale_max is not None and self.scale > self.scale_max)):
            raise ValueError("scale must lie within [scale_min, scale_max]")
        return self


# ---------------------------------------------------------------------------------------
# REST shapes


class ProfileCreate(_ProfileFields):
    """Body of POST /api/profiles."""


class ProfileUpdate(_Strict):
    """Body of PATCH /api/profiles/{name}: fields left out keep their value."""

    version: int = Field(ge=1, le=MAX_VERSION, description="The version being edited; a stale version is refused with 409.")
    name: ProfileName | None = Field(None, description="New name (renames the profile).")
    description: str | None = Field(None, max_length=4000, description="New description.")
    model: str | None = Field(None, min_length=1, max_length=512, description="Model id the profile is for.")
    sae: SaeRef | None = Field(None, description="The SAE its feature indices refer to.")
    mode: SteeringMode | None = Field(None, description="add or clamp.")
    normalize: bool | None = Field(None, description="Unit-norm decoder directions for add.")
    features: list[SteeringFeature] | None = Field(None, max_length=MAX_FEATURES,
                                                   description="The new feature list (replaces the old one).")
    scale: float | None = Field(None, ge=0, allow_inf_nan=False, description="Default intensity (see ProfileCreate.scale).")
    scale_min: float | None = Field(None, ge=0, allow_inf_nan=False, description="Lowest steering.scale a request may ask.")
    scale_max: float | None = Field(None, ge=0, allow_inf_nan=False, description="Highest steering.scale a request may ask.")


class ProfileDuplicate(_Strict):
    """Body of POST /api/profiles/{name}/duplicate."""

    name: ProfileName
    description: str | None = Field(None, max_length=4000, description="Default: the source's description.")


class ProfilePublic(_ProfileFields):
    """A stored profile as the API returns it."""

    id: int
    version: int = Field(description="Incremented on every edit; send it back to edit (or use the ETag).")
    created_at: datetime
    updated_at: datetime
    active: bool = Field(description="Whether this is the server-wide steering now.")


class ProfileList(BaseModel):
    data: list[ProfilePublic]
    count: int


# ---------------------------------------------------------------------------------------
# Export format, version 1


class _DocumentHeader(_Strict):
    format: Literal["millm.profile"] = PROFILE_FORMAT
    format_version: Literal[1] = FORMAT_VERSION


class ProfileDocument(_ProfileFields, _DocumentHeader):
    """One exported profile (format millm.profile, version 1)."""

    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    version: int | None = Field(None, ge=1, le=MAX_VERSION)


class ProfileBundle(_Strict):
    """Several exported profiles (format millm.profiles, version 1)."""

    format: Literal["millm.profiles"] = BUNDLE_FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    profiles: list[ProfileDocument]


class ImportResult(BaseModel):
    """What an import did. Nothing is written unless every profile is valid."""

    source_format: Literal["millm.profile", "millm.profiles", "neuronpedia", "goodfire"]
    profiles: list[ProfilePublic]
    renamed: dict[str, str] = Field(default_factory=dict, description="Original name → stored name.")
    replaced: list[str] = Field(default_factory=list, description="Names of existing profiles overwritten.")


# ---------------------------------------------------------------------------------------
# Foreign formats, read leniently


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class NeuronpediaFeature(_Lenient):
    model_id: str = Field(alias="modelId", min_length=1)
    layer: str = Field(min_length=1, description='Neuronpedia source id, e.g. "20-gemmascope-res-16k".')
    index: int = Field(ge=0, le=MAX_INT)
    strength: float = Field(allow_inf_nan=False)
    explanation: str | None = None


class NeuronpediaFeaturePreset(_Lenient):
    name: str = Field(min_length=1)
    features: list[NeuronpediaFeature] = Field(min_length=1)
    steer_method: str | None = Field(None, alias="steerMethod")


class GoodfireEdit(_Lenient):
    feature_id: str | None = None
    feature_label: str | None = None
    index_in_sae: int = Field(ge=0, le=MAX_INT)
    value: float = Field(allow_inf_nan=False)


class GoodfireVariant(_Lenient):
    base_model: str = Field(min_length=1)
    edits: list[GoodfireEdit]
    scopes: list[Any] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------
# ETag and JSON Schema


def etag_for(version: int) -> str:
    """Strong ETag for a profile version (the HTTP layer sends it and reads If-Match)."""
    return f'"{version}"'


def version_from_etag(etag: str) -> int | None:
    """The version in an If-Match value written by `etag_for`; None when it is not one."""
    value = etag.strip().removeprefix("W/")
    if len(value) >= 2 and value[0] == value[-1] == '"' and value[1:-1].isdigit() and int(value[1:-1]) <= MAX_VERSION:
        return int(value[1:-1])
    return None


def profile_format_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of export format version 1: a profile or a bundle."""
    refs, schema = models_json_schema(
        [(ProfileDocument, "validation"), (ProfileBundle, "validation")],
        ref_template="#/$defs/{model}",
    )
    for model in ("ProfileDocument", "ProfileBundle"):
        # Defaults make these optional in Python; a file must still say what it is.
        definition = schema["$defs"][model]
        definition["required"] = ["format", "format_version", *definition.get("required", [])]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "miLLM steering profile export, format_version 1",
        "description": "Either one profile (format millm.profile) or a bundle (format millm.profiles). "
        "See docs/profile-format.md.",
        "oneOf": [refs[(ProfileDocument, "validation")], refs[(ProfileBundle, "validation")]],
        "$defs": schema["$defs"],
    }


def profile_format_schema_text() -> str:
    return json.dumps(profile_format_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_profile_schema(path: Path = SCHEMA_PATH) -> None:
    path.write_text(profile_format_schema_text(), encoding="utf-8")


if __name__ == "__main__":
    write_profile_schema()
