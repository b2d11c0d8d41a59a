"""The committed frontend/openapi.json and frontend/frames.schema.json are what `make openapi` writes now:
the web UI's client is generated from them, so a route or frame changed without a new dump fails here."""

from __future__ import annotations

import json

import jsonschema_rs  # (schemathesis' validator, pinned in requirements.lock)
import pytest

from millm import schema_dump
from millm.protocol.hub import DownloadEvent
from millm.protocol.monitor import ActivationFrame


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    return schema_dump.outputs()


@pytest.mark.parametrize("name", ["openapi.json", "frames.schema.json"])
def test_committed_schema_is_current(fresh: dict[str, str], name: str) -> None:
    committed = schema_dump.FRONTEND / name
    assert committed.exists(), f"frontend/{name} is missing: run `make openapi` and commit it"
    assert committed.read_text(encoding="utf-8") == fresh[name], (
        f"frontend/{name} is stale (the API or its frames changed): run `make openapi` and commit the result")


def test_dump_is_stable_sorted_and_ends_with_a_newline(fresh: dict[str, str]) -> None:
    assert schema_dump.outputs() == fresh
    for text in fresh.values():
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_dump_ignores_the_shells_settings(monkeypatch: pytest.MonkeyPatch, fresh: dict[str, str]) -> None:
    monkeypatch.setenv("MILLM_PORT", "9999")
    monkeypatch.setenv("MILLM_CORS_ORIGINS", '["http://example.com"]')
    assert schema_dump.outputs()["openapi.json"] == fresh["openapi.json"]


def test_frames_validate_what_the_server_sends(fresh: dict[str, str]) -> None:
    schema = json.loads(fresh["frames.schema.json"])
    frame = ActivationFrame(request_id="chatcmpl-1", choice=0, position=3, token_id=42, token=" HELLO",
                            phase="generated", activations=[{"index": 16, "value": 7.25, "label": "capitals"}])
    job = {"id": "j1", "kind": "model", "repo_id": "org/m", "name": "m", "revision": "main", "path": "",
           "state": "running", "commit": None, "bytes_done": 5, "bytes_total": 10, "files_done": 0, "files_total": 2,
           "progress": 0.5, "current_file": "model.safetensors", "speed_bps": 2.5, "eta_s": 2.0, "error": None, "attempts": 1,
           "created_at": "2026-12-06T09:00:00Z", "updated_at": "2026-12-06T09:00:01Z", "finished_at": None}
    event = DownloadEvent.model_validate({"type": "progress", "job": job})

    def check(channel: str, message: str) -> None:
        jsonschema_rs.validate(schema, {channel: json.loads(message)})

    check("ws_monitor", frame.model_dump_json())
    check("ws_downloads", event.model_dump_json())
    check("ws_downloads", json.dumps({"error": {"message": "no job", "type": "not_found_error", "param": "job_id",
                                               "code": "not_found"}}))
    with pytest.raises(jsonschema_rs.ValidationError):
        check("ws_monitor", json.dumps({**frame.model_dump(), "phase": "later"}))
