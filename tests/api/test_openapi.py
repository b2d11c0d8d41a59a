"""/openapi.json as a generated client and a person read it: every operation has an explicit, unique,
well-formed id and one known tag, a summary and a description; tags are described; the event streams
are `text/event-stream`; times are ISO 8601 date-times. Built from the app without starting it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.routing import APIRoute

from millm.api.openapi import OPERATION_ID, TAGS
from millm.app import create_app
from millm.config import Settings

OPENAI_IDS = {("GET", "/v1/models"): "listModels", ("GET", "/v1/models/{model_id}"): "retrieveModel",
              ("POST", "/v1/chat/completions"): "createChatCompletion", ("POST", "/v1/completions"): "createCompletion",
              ("POST", "/v1/embeddings"): "createEmbedding"}
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, ops in schema["paths"].items() for m, op in ops.items() if m in METHODS]


def api_routes(router: Any) -> list[APIRoute]:
    """The APIRoutes of the app's routers (FastAPI keeps included routers lazily)."""
    out = []
    for route in getattr(router, "routes", []):
        if isinstance(route, APIRoute):
            if route.include_in_schema:  # (not /docs, /redoc and their assets)
                out.append(route)
        elif hasattr(route, "original_router"):
            out += api_routes(route.original_router)
    return out


def test_every_route_sets_an_explicit_operation_id_and_one_known_tag() -> None:
    routes = api_routes(create_app(Settings()))
    assert len(routes) >= 50
    known = {t["name"] for t in TAGS}
    for route in routes:
        assert route.operation_id, f"{route.path} {route.methods}: set operation_id= explicitly"
        assert len(route.tags) == 1 and route.tags[0] in known, f"{route.path}: tags {route.tags}"


def test_operation_ids_are_unique_camel_case_verb_noun(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for method, path, op in operations(schema):
        oid = op["operationId"]
        assert OPERATION_ID.fullmatch(oid), f"{method} {path}: {oid!r} is not camelCase"
        if path.startswith("/v1"):
            assert op["tags"] == ["openai"]
            if (method, path) in OPENAI_IDS:
                assert oid == OPENAI_IDS[(method, path)]
        else:
            assert re.fullmatch(r"(get|list|search|create|set|update|replace|delete|clear|load|unload|estimate|attach|"
                                r"detach|enable|disable|pause|resume|start|cancel|stream|export|import|duplicate|"
                                r"activate|deactivate|compare|shutdown|preview)[A-Z][A-Za-z0-9]*", oid), f"{method} {path}: {oid!r} not verbNoun"


def test_the_ids_the_web_ui_uses(schema: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (method, path) for method, path, op in operations(schema)}
    assert by_id["getStatus"] == ("GET", "/api/status")
    assert by_id["loadModel"] == ("POST", "/api/models/load")
    assert by_id["attachSae"] == ("POST", "/api/saes/attach")
    assert by_id["setSteering"] == ("PUT", "/api/steering")
    assert by_id["updateSteering"] == ("PATCH", "/api/steering")
    assert by_id["replaceProfile"] == ("PUT", "/api/profiles/{name}")
    assert by_id["updateProfile"] == ("PATCH", "/api/profiles/{name}")
    assert by_id["streamDownloadEvents"] == ("GET", "/api/downloads/events")
    assert by_id["deleteCacheEntry"] == ("DELETE", "/api/cache/{repo_id}")


def test_tags_are_described_and_every_operation_is_summarised_and_described(schema: dict[str, Any]) -> None:
    assert [t["name"] for t in schema["tags"]] == [t["name"] for t in TAGS]
    assert all(len(t["description"]) > 30 for t in schema["tags"])
    for method, path, op in operations(schema):
        assert op.get("summary") and len(op["summary"]) <= 60, f"{method} {path}: summary {op.get('summary')!r}"
        assert len(op.get("description", "")) > 20, f"{method} {path}: no description"


def test_fields_users_set_are_described(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name in ("ModelLoadIn", "SaeAttachIn", "SteeringSetIn", "SteeringPatchIn", "SteeringIn", "SteeringFeatureIn",
                 "MonitorConfigIn", "DownloadIn", "ProfileCreate", "ProfileDuplicate",
                 "SaveSteeringIn"):
        for field, prop in components[name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_event_streams_and_websockets_are_documented(schema: dict[str, Any]) -> None:
    for path in ("/api/downloads/events", "/api/downloads/{job_id}/events"):
        content = schema["paths"][path]["get"]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
        data = content["text/event-stream"]["itemSchema"]["properties"]["data"]
        assert data["contentSchema"]["title"] == "DownloadEvent"
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert "text/event-stream" in schema["paths"][path]["post"]["responses"]["200"]["content"]
    assert "/ws/monitor" in schema["info"]["description"] and "/ws/downloads" in schema["info"]["description"]


def test_times_are_iso_8601_date_times(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for model, fields in {"JobOut": ("created_at", "updated_at", "finished_at"),
                          "CachedRepoOut": ("last_modified", "last_used"),
                          "ProfilePublic": ("created_at", "updated_at")}.items():
        for field in fields:
            prop = components[model]["properties"][field]
            formats = [prop.get("format")] + [alt.get("format") for alt in prop.get("anyOf", [])]
            assert "date-time" in formats, f"{model}.{field}: {prop}"


def test_every_reference_resolves(schema: dict[str, Any]) -> None:
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["components"]["schemas"])


def test_the_profile_update_body_is_documented_as_profile_update(schema: dict[str, Any]) -> None:
    for method in ("put", "patch"):
        ref = schema["paths"]["/api/profiles/{name}"][method]["requestBody"]["content"]["application/json"]["schema"]
        assert ref == {"$ref": "#/components/schemas/ProfileUpdate"}  # a typed body, not a hand-read dict
        body = schema["components"]["schemas"]["ProfileUpdate"]
        assert {"version", "features", "mode"} <= set(body["properties"])
        assert body.get("required", []) == []  # the version may come as If-Match
        assert all(prop.get("description") for prop in body["properties"].values())


def test_every_error_response_is_the_json_envelope(schema: dict[str, Any]) -> None:
    for method, path, op in operations(schema):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and path != "/health":  # (its 503 is a HealthOut)
                content = response["content"]
                assert list(content) == ["application/json"], (method, path, status)
                assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}


def test_every_parameter_is_described(schema: dict[str, Any]) -> None:
    for method, path, op in operations(schema):
        for param in op.get("parameters", []):
            assert param.get("description"), f"{method} {path}: {param['in']} parameter {param['name']}"
