"""Profile wire models and the committed JSON Schema of export format v1."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from millm.protocol.profiles import (
    SCHEMA_ID,
    SCHEMA_PATH,
    ProfileBundle,
    ProfileDocument,
    ProfilePublic,
    ProfileUpdate,
    SteeringFeature,
    etag_for,
    profile_format_schema,
    profile_format_schema_text,
    version_from_etag,
)

SPEC_EXAMPLE: dict[str, Any] = {
    "format": "millm.profile",
    "format_version": 1,
    "name": "yelling-demo",
    "description": "...",
    "model": "millm-demo",
    "sae": {
        "id": "millm-demo-sae", "hook_name": "blocks.3.hook_resid_post", "layer": 3, "d_sae": 2048,
        "repo_id": None, "path": None, "revision": None, "release": None, "sae_id": None,
    },
    "mode": "add",
    "normalize": False,
    "features": [{"index": 12, "strength": 8.0, "label": "CAPS"}],
    "created_at": "2025-01-02T03:04:05Z",
    "updated_at": "2025-01-02T03:04:05Z",
    "version": 3,
}


def test_committed_schema_file_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == profile_format_schema_text(), (
        "run `python -m millm.protocol.profiles` to regenerate profile.schema.json"
    )


def test_schema_identifies_itself_and_requires_format() -> None:
    schema = profile_format_schema()
    assert schema["$id"] == SCHEMA_ID and "format_version 1" in schema["title"]
    assert schema["oneOf"] == [{"$ref": "#/$defs/ProfileDocument"}, {"$ref": "#/$defs/ProfileBundle"}]
    document = schema["$defs"]["ProfileDocument"]
    assert {"format", "format_version", "name", "model", "sae"} <= set(document["required"])
    assert document["additionalProperties"] is False
    assert schema["$defs"]["SaeRef"]["required"] == ["id", "hook_name", "layer", "d_sae"]
    json.dumps(schema, allow_nan=False)


def test_spec_example_round_trips_exactly() -> None:
    doc = ProfileDocument.model_validate(SPEC_EXAMPLE)
    assert doc.model_dump(mode="json") == SPEC_EXAMPLE
    assert list(doc.model_dump())[:2] == ["format", "format_version"]
    bundle = ProfileBundle.model_validate({"format": "millm.profiles", "format_version": 1, "profiles": [SPEC_EXAMPLE]})
    assert bundle.profiles == [doc]


@pytest.mark.parametrize(
    "feature",
    [
        {"index": -1, "strength": 1.0},
        {"index": "3", "strength": 1.0},
        {"index": True, "strength": 1.0},
        {"index": 1.5, "strength": 1.0},
        {"index": 1, "strength": math.nan},
        {"index": 1, "strength": math.inf},
        {"index": 1, "strength": "1.0"},
        {"index": 1, "strength": 1.0, "weight": 2},
        {"strength": 1.0},
    ],
)
def test_steering_feature_is_strict(feature: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SteeringFeature.model_validate(feature)


def test_integer_strength_is_accepted() -> None:
    assert SteeringFeature.model_validate({"index": 0, "strength": 2}).strength == 2.0


@pytest.mark.parametrize("name", ["calm", "yelling-demo", "v1.2_x", "A", "9" * 64])
def test_valid_names(name: str) -> None:
    ProfileDocument.model_validate({**SPEC_EXAMPLE, "name": name})


@pytest.mark.parametrize("name", ["", "-calm", ".hidden", "millm-demo+calm", "a b", "a/b", "é", "9" * 65])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        ProfileDocument.model_validate({**SPEC_EXAMPLE, "name": name})
    assert info.value.errors()[0]["loc"] == ("name",)


def test_document_rejects_unknown_format_version_and_fields() -> None:
    with pytest.raises(ValidationError):
        ProfileDocument.model_validate({**SPEC_EXAMPLE, "format_version": 2})
    with pytest.raises(ValidationError) as info:
        ProfileDocument.model_validate({**SPEC_EXAMPLE, "sae": {**SPEC_EXAMPLE["sae"], "width": 1}})
    assert info.value.errors()[0]["loc"] == ("sae", "width")


def test_update_version_is_optional_and_set_fields_are_tracked() -> None:
    # The version may come as If-Match instead; ControlService/ProfileService refuse an edit with neither.
    assert ProfileUpdate.model_validate({"description": "x"}).version is None
    with pytest.raises(ValidationError):
        ProfileUpdate.model_validate({"version": 0})
    update = ProfileUpdate.model_validate({"version": 3, "mode": "clamp"})
    assert update.model_fields_set == {"version", "mode"}


def test_public_shape_has_identity_and_active() -> None:
    assert {"id", "name", "version", "created_at", "updated_at", "active", "features", "sae"} <= set(ProfilePublic.model_fields)


def test_etag_round_trip() -> None:
    assert etag_for(7) == '"7"'
    assert version_from_etag('"7"') == 7
    assert version_from_etag('W/"7"') == 7
    assert version_from_etag("*") is None
    assert version_from_etag('"abc"') is None
