"""The bad-input catalogue of docs/reliability.md, table-driven against one live server: every entry is a 4xx in
the OpenAI envelope with a `code` (and `param` when one field is to blame), no server path, listing or library
internals in the message, and the server is healthy and serving afterwards. Deeper tests per area are named in
docs/reliability.md."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

MODEL = "test-org/tiny"
CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}


def chat(**over: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **over}


PROFILE = {"name": "p", "model": MODEL, "sae": {"id": "sae", "hook_name": "blocks.1.hook_resid_post", "layer": 1,
                                                 "d_sae": 256}, "features": [{"index": 1, "strength": 1.0}]}

# (id, method, path, json body or raw bytes, expected status, expected param or None, expected code or None)
CASES = [
    ("invalid-json", "POST", CHAT, b"{not json", 400, None, "invalid_json"),
    ("invalid-utf8", "POST", CHAT, b'{"model": "\xff"}', 400, None, "invalid_json"),
    ("deep-nesting", "POST", "/api/profiles/import", b"[" * 100_000 + b"]" * 100_000, 400, None, "invalid_json"),
    ("wrong-type", "POST", CHAT, chat(temperature="hot"), 400, "temperature", "invalid_value"),
    ("nan", "POST", CHAT, b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'
     % MODEL.encode(), 400, "temperature", None),
    ("infinity", "PUT", "/api/steering", b'{"features": [{"index": 1, "strength": Infinity}]}', 400, None, None),
    ("out-of-range", "POST", CHAT, chat(n=0), 400, "n", "invalid_value"),
    ("max-tokens-negative", "POST", CHAT, chat(max_tokens=-1), 400, "max_tokens", None),
    ("lone-surrogate", "POST", CHAT, b'{"model": "%s", "messages": [{"role": "user", "content": "\\ud800"}]}'
     % MODEL.encode(), 400, "messages", "invalid_text"),
    ("over-context", "POST", CHAT, chat(messages=[{"role": "user", "content": "word " * 2000}]), 400, "messages",
     "context_length_exceeded"),
    ("over-context-ids", "POST", "/v1/completions", {"model": MODEL, "prompt": [1] * 300}, 400, "prompt",
     "context_length_exceeded"),
    ("oversized-body", "POST", CHAT, b" " * (17 * 1024 * 1024), 413, None, "request_too_large"),
    ("unknown-model", "POST", CHAT, chat(model="nope"), 404, "model", "model_not_found"),
    ("unknown-profile", "GET", "/api/profiles/nope", None, 404, None, "profile_not_found"),
    ("unknown-profile-model-id", "POST", CHAT, chat(model=MODEL + "+nope"), 404, "model", "model_not_found"),
    ("unknown-feature", "POST", CHAT, chat(steering={"features": [{"index": 99999, "strength": 1}]}), 400, None, None),
    ("bad-layer", "POST", "/api/saes/attach", {"source": "SAE", "layer": 99}, 400, "layer", None),
    ("mismatched-sae", "PUT", "/api/steering", {"features": [{"index": 256, "strength": 1}]}, 400, None, None),
    ("malformed-import", "POST", "/api/profiles/import", {"hello": "world"}, 400, "format", None),
    ("import-bad-field", "POST", "/api/profiles/import",
     {**PROFILE, "format": "millm.profile", "format_version": 1, "features": [{"index": "x", "strength": 1}]},
     400, None, None),
    ("profile-name-path", "POST", "/api/profiles", {**PROFILE, "name": "../../etc/passwd"}, 400, "name", None),
    ("profile-name-slash", "POST", "/api/profiles", {**PROFILE, "name": "a/b"}, 400, "name", None),
    ("repo-id-traversal", "POST", "/api/models/load", {"model": "../../../../etc"}, 403, "model", "path_not_allowed"),
    ("home-folder", "POST", "/api/saes/attach", {"source": "~"}, 403, "source", "path_not_allowed"),
    ("etc-passwd", "POST", "/api/saes/attach", {"source": "/etc/passwd"}, 403, "source", "path_not_allowed"),
    ("hub-path-traversal", "POST", "/api/saes/attach", {"source": "org/repo:.."}, 400, "source", "invalid_path"),
    ("bad-repo-id", "POST", "/api/models/load", {"model": "a b"}, 400, "model", "invalid_repo_id"),
    ("long-name", "POST", "/api/models/load", {"model": "a" * 300}, 400, "model", None),
    ("text-plain-post", "POST", "/api/profiles", None, 415, None, "cross_site_request"),
]


@pytest.fixture()
def sae_source(server):
    # the attached SAE's own folder is allowed (it was named at start-up)
    return str(server.runtime.settings.sae)


@pytest.mark.parametrize(("method", "path", "body", "status", "param", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_and_the_server_stays_healthy(server, sae_source, method, path, body, status,
                                                                 param, code):
    if isinstance(body, dict) and body.get("source") == "SAE":
        body = {**body, "source": sae_source}
    kw: dict = {"content": body, "headers": JSON} if isinstance(body, bytes) else (
        {"json": body} if body is not None else {"content": b"x", "headers": {"content-type": "text/plain"}})
    if body is None and method == "GET":
        kw = {}
    r = httpx.request(method, server.url + path, timeout=60, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"], err  # a code everywhere
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    for leak in ("/root", "/home", "/tmp", "/etc/", "site-packages", "Traceback", ".bashrc", ".ssh", "TextEncodeInput",
                 str(server.runtime.settings.data_dir)):
        assert leak not in err["message"], (leak, err["message"])
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_invalid_websocket_messages_are_ignored_and_the_socket_keeps_working(server):
    async def run() -> None:
        ws_url = server.url.replace("http://", "ws://")
        async with websockets.connect(ws_url + "/ws/monitor", max_size=None) as ws:
            for junk in ("not json", "{\"type\": 12}", b"\x00\xff" * 1000, "x" * 1_000_000):
                await ws.send(junk)
            await ws.ping()
        async with websockets.connect(ws_url + "/ws/downloads?job_id=../../etc") as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["error"]["code"] and "/etc" not in frame["error"]["message"].replace("../../etc", "")

    asyncio.run(run())
    r = httpx.post(server.url + CHAT, json=chat(), timeout=60)
    assert r.status_code == 200
