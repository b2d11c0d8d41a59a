"""Local-server security: the optional API key (HTTP Bearer, ?api_key= on WebSockets), the Host check against DNS
rebinding, no state change from a simple cross-site request, CORS limited to local origins by default, and a
warning when listening beyond loopback without a key."""

from __future__ import annotations

import asyncio
import logging

import httpx
import openai
import pytest
import websockets

from millm.logs import RedactKeys
from tests.conftest import start_server, tiny_settings

KEY = "sk-local-test-key"
MODEL = "tiny"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_model_dir, tiny_sae_dir):
    live = start_server(tiny_settings(tmp_path_factory.mktemp("keyed"), tiny_model_dir, tiny_sae_dir,
                                      served_model_name=MODEL, api_key=KEY))
    yield live
    live.stop()


def _ws(url: str, path: str = "/ws/monitor", **kw):  # noqa: ANN202
    return websockets.connect(url.replace("http://", "ws://") + path, open_timeout=10, **kw)


# ---------------------------------------------------------------------------- API key


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("GET", "/api/status"), ("GET", "/metrics"),
                                              ("POST", "/api/models/unload"), ("DELETE", "/api/profiles/x")])
def test_a_missing_or_wrong_key_is_a_401_in_the_envelope(keyed, headers, method, path):
    r = httpx.request(method, keyed.url + path, headers={"X-MiLLM-Client": "test", **headers}, timeout=10)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert keyed.runtime.worker.loaded is not None  # (the unload was refused)


def test_health_docs_and_the_ui_stay_open(keyed):
    assert httpx.get(keyed.url + "/health", timeout=10).status_code == 200
    assert httpx.get(keyed.url + "/openapi.json", timeout=10).status_code == 200
    assert httpx.get(keyed.url + "/", timeout=10).status_code != 401


def test_the_openai_sdk_works_with_the_key_and_fails_clearly_without(keyed):
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0)
    out = good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert out.choices[0].message.content is not None
    assert [m.id for m in good.models.list().data][0] == MODEL
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.code == "invalid_api_key"


def test_websockets_take_the_key_as_a_query_parameter(keyed):
    async def run() -> None:
        with pytest.raises(websockets.InvalidStatus) as e:
            async with _ws(keyed.url):
                pass
        assert e.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus):
            async with _ws(keyed.url, "/ws/monitor?api_key=wrong"):
                pass
        async with _ws(keyed.url, f"/ws/monitor?api_key={KEY}") as ws:
            await ws.ping()

    asyncio.run(run())


def test_get_requests_may_carry_the_key_in_the_query_for_eventsource(keyed):
    assert httpx.get(keyed.url + f"/api/status?api_key={KEY}", timeout=10).status_code == 200
    r = httpx.post(keyed.url + f"/api/models/unload?api_key={KEY}", headers={"X-MiLLM-Client": "test"}, timeout=10)
    assert r.status_code == 401  # (not for writes)


def test_the_key_is_redacted_from_logged_urls():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", f"/ws/monitor?api_key={KEY}&x=1", "1.1", 101), None)
    RedactKeys().filter(record)
    assert KEY not in record.getMessage() and "api_key=<redacted>&x=1" in record.getMessage()


# ---------------------------------------------------------------------------- cross-site requests


def test_simple_cross_site_posts_change_nothing(server):
    profile = '{"name": "from-a-web-page", "model": "test-org/tiny", "sae": {"id": "x", "d_sae": 256}, "features": []}'
    r = httpx.post(server.url + "/api/profiles", content=profile, headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.json()["error"]["code"] == "cross_site_request", r.text
    assert httpx.get(server.url + "/api/profiles/from-a-web-page", timeout=10).status_code == 404
    for body in ({}, {"content": b"a=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
                 {"content": b"--x--", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}):
        r = httpx.post(server.url + "/api/models/unload", timeout=10, **body)
        assert r.status_code == 415, r.text
    assert server.runtime.worker.loaded is not None
    assert server.runtime.steering.state is not None


def test_json_or_a_client_header_or_authorization_is_accepted(server):
    for headers in ({"X-MiLLM-Client": "web"}, {"Authorization": "Bearer anything"},
                    {"Content-Type": "application/json; charset=utf-8"}):
        r = httpx.post(server.url + "/api/monitor/resume", headers=headers, timeout=10)
        assert r.status_code < 400, (headers, r.text)


# ---------------------------------------------------------------------------- Host check and CORS


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example"])
def test_a_foreign_host_header_is_refused(server, host):
    for path in ("/v1/models", "/health", "/api/status"):
        r = httpx.get(server.url + path, headers={"Host": host}, timeout=10)
        assert r.status_code == 421 and r.json()["error"]["code"] == "invalid_host", r.text


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "app.localhost"])
def test_local_host_names_are_accepted(server, host):
    assert httpx.get(server.url + "/health", headers={"Host": host}, timeout=10).status_code == 200


def test_allowed_hosts_replace_the_default(tmp_path, tiny_model_dir):
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, allowed_hosts=["millm.example", "*.lab.example",
                                                                                 "127.0.0.1"]))
    try:
        ok = [httpx.get(live.url + "/health", headers={"Host": h}, timeout=10).status_code
              for h in ("millm.example", "gpu1.lab.example:8000", "localhost", "evil.example")]
        assert ok[:2] == [200, 200] and ok[2:] == [421, 421]
    finally:
        live.stop()


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url + "/v1/chat/completions", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization,x-millm-client"})


def test_cors_allows_local_origins_only_by_default(server):
    for origin in ("http://localhost:5173", "http://127.0.0.1:8000", "https://localhost"):
        r = _preflight(server.url, origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    for origin in ("https://evil.example", "http://localhost.evil.example", "null"):
        r = _preflight(server.url, origin)
        assert "access-control-allow-origin" not in r.headers
        r = httpx.get(server.url + "/v1/models", headers={"Origin": origin}, timeout=10)
        assert "access-control-allow-origin" not in r.headers


def test_cors_origins_setting_replaces_the_default(tmp_path, tiny_model_dir):
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, cors_origins=["https://ui.example"]))
    try:
        assert _preflight(live.url, "https://ui.example").headers["access-control-allow-origin"] == "https://ui.example"
        assert "access-control-allow-origin" not in _preflight(live.url, "http://localhost:5173").headers
    finally:
        live.stop()


def test_websockets_from_foreign_origins_are_refused(server):
    async def run() -> None:
        with pytest.raises(websockets.InvalidStatus) as e:
            async with _ws(server.url, origin="https://evil.example"):
                pass
        assert e.value.response.status_code == 403
        async with _ws(server.url, origin="http://localhost:5173") as ws:
            await ws.ping()
        async with _ws(server.url) as ws:  # (no Origin: not a browser)
            await ws.ping()

    asyncio.run(run())


def test_listening_beyond_loopback_without_a_key_warns(tmp_path, tiny_model_dir, caplog):
    caplog.set_level(logging.WARNING, logger="millm")
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, host="0.0.0.0"))
    try:
        assert any("without an API key" in r.getMessage() for r in caplog.records)
        # bound beyond loopback, the server is meant to be reached by other names: no Host check by default
        assert httpx.get(live.url + "/health", headers={"Host": "gpu-box:8000"}, timeout=10).status_code == 200
    finally:
        live.stop()
