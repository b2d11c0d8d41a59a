"""The MCP server through the official SDK's own client: Streamable HTTP against `/mcp` on a live demo
server (tools call the services in-process), and stdio against `millm mcp` (a subprocess that talks to
the same server over HTTP). Both must give the same answers; steering set through MCP shows in REST."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from mcp import Client, StdioServerParameters
from millm import demo
from millm.config import Settings
from millm.mcp_server.tools import search_labels
from tests.conftest import LiveServer, free_port, serve_demo, start_server, upper_fraction

META = json.loads((demo.assets_dir() / "demo.json").read_text())
CAPS, STRENGTH = META["caps_feature"], META["caps_strength"]
TOOLS = {"get_status", "list_features", "search_features", "list_profiles", "activate_profile",
         "deactivate_profile", "set_steering", "clear_steering", "generate", "compare_steering",
         "set_monitoring", "get_activations"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    yield from serve_demo(tmp_path_factory, "mcp-data")


@pytest.fixture(autouse=True)
def _unsteered(live: LiveServer):
    httpx.delete(live.url + "/api/steering")
    httpx.put(live.url + "/api/monitor/config", json={"enabled": False})
    yield
    httpx.delete(live.url + "/api/steering")


def stdio_params(url: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "millm", "mcp"],
                                 env={"MILLM_URL": url, **env}, cwd=os.getcwd())


Connect = Callable[[], Any]


@asynccontextmanager
async def http_client(live: LiveServer) -> AsyncIterator[Client]:
    async with Client(live.url + "/mcp") as c:
        yield c


@asynccontextmanager
async def stdio_client(live: LiveServer) -> AsyncIterator[Client]:
    async with Client(stdio_params(live.url)) as c:
        yield c


TRANSPORTS = {"http": http_client, "stdio": stdio_client}


async def call(c: Client, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await c.call_tool(tool, args or {})
    assert not r.is_error, r.content
    assert r.structured_content is not None
    assert json.loads(r.content[0].text) == r.structured_content  # the text block says the same
    return r.structured_content


async def error(c: Client, tool: str, args: dict[str, Any]) -> str:
    r = await c.call_tool(tool, args)
    assert r.is_error
    return r.content[0].text


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tools_are_listed_with_schemas(live, transport) -> None:
    async def go() -> None:
        async with TRANSPORTS[transport](live) as c:
            assert c.server_info.name == "millm"
            assert "search_features" in (c.instructions or "")
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == TOOLS
            gen = tools["generate"]
            assert gen.input_schema["required"] == ["prompt"]
            assert {"features", "profile", "unsteered", "max_tokens", "seed"} <= set(gen.input_schema["properties"])
            assert {"text", "steering", "request_id"} <= set(gen.output_schema["properties"])
            assert tools["get_status"].annotations.read_only_hint is True
            assert tools["set_steering"].annotations.read_only_hint is False

    run(go())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_status_features_and_profiles(live, transport) -> None:
    async def go() -> None:
        async with TRANSPORTS[transport](live) as c:
            status = await call(c, "get_status")
            assert status["status"] == "ok" and status["model"]["id"] == demo.DEMO_MODEL_ID
            assert (status["sae"]["id"], status["sae"]["d_sae"]) == (demo.DEMO_SAE_ID, META["d_sae"])
            assert status["steering"]["features"] == []

            page = await call(c, "list_features", {"offset": 10, "limit": 5})
            assert page["total"] == META["d_sae"] and [f["index"] for f in page["features"]] == [10, 11, 12, 13, 14]

            found = await call(c, "search_features", {"query": "caps", "limit": 200})
            assert CAPS in [f["index"] for f in found["features"]]
            assert all("caps" in f["label"].lower() for f in found["features"]) and found["total"] == len(
                found["features"])
            ocean = await call(c, "search_features", {"query": "topic ocean"})
            assert ocean["features"] and all(f["label"] == "topic: ocean" for f in ocean["features"])
            assert (await call(c, "search_features", {"query": "no-such-label-xyz"}))["features"] == []

            profiles = {p["name"]: p for p in (await call(c, "list_profiles"))["profiles"]}
            yell = profiles["yelling-demo"]
            assert yell["features"] == [{"index": CAPS, "strength": STRENGTH}] and yell["usable"]
            assert yell["model_id"] == f"{demo.DEMO_MODEL_ID}+yelling-demo" and not yell["active"]

    run(go())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_steering_set_clear_and_profiles_change_the_server(live, transport) -> None:
    async def go() -> None:
        async with TRANSPORTS[transport](live) as c:
            state = await call(c, "set_steering", {"features": [{"index": CAPS, "strength": STRENGTH}]})
            assert state["features"][0]["index"] == CAPS and state["features"][0]["label"] == "ALL CAPS (yelling)"
            rest = httpx.get(live.url + "/api/steering").json()
            assert [(f["index"], f["strength"]) for f in rest["features"]] == [(CAPS, STRENGTH)]

            # the server-wide steering applies to a plain generate; unsteered=true turns it off
            steered = await call(c, "generate", {"prompt": "Tell me a story.", "max_tokens": 60})
            assert steered["steering"]["source"] == "server" and upper_fraction(steered["text"]) >= 0.8
            plain = await call(c, "generate", {"prompt": "Tell me a story.", "max_tokens": 60, "unsteered": True})
            assert plain["steering"]["source"] == "none" and upper_fraction(plain["text"]) < 0.1

            assert (await call(c, "clear_steering"))["features"] == []
            assert httpx.get(live.url + "/api/steering").json()["features"] == []

            active = await call(c, "activate_profile", {"name": "yelling-demo"})
            assert active["profile"] == "yelling-demo" and active["features"][0]["index"] == CAPS
            assert httpx.get(live.url + "/api/status").json()["active_profile"] == "yelling-demo"
            listed = {p["name"]: p for p in (await call(c, "list_profiles"))["profiles"]}
            assert listed["yelling-demo"]["active"]
            assert (await call(c, "deactivate_profile"))["profile"] is None
            assert httpx.get(live.url + "/api/status").json()["active_profile"] is None

    run(go())


def applied(steering: dict) -> list[tuple[int, float]]:
    return [(f["index"], f["strength"]) for f in steering["features"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_generate_and_compare_per_request_steering(live, transport) -> None:
    async def go() -> None:
        async with TRANSPORTS[transport](live) as c:
            by_profile = await call(c, "generate", {"prompt": "Tell me a story.", "profile": "yelling-demo",
                                                    "max_tokens": 60})
            assert by_profile["steering"]["source"] == "profile" and upper_fraction(by_profile["text"]) >= 0.8
            assert by_profile["request_id"].startswith("chatcmpl-") and by_profile["usage"]["completion_tokens"] > 0
            half = await call(c, "generate", {"prompt": "Tell me a story.", "profile": "yelling-demo", "scale": 0.5,
                                              "max_tokens": 10})
            assert applied(half["steering"]) == [(CAPS, pytest.approx(STRENGTH * 0.5))]
            assert half["steering"]["scale"] == 0.5

            cmp = await call(c, "compare_steering", {"prompt": "Tell me a story.", "max_tokens": 60, "seed": 7,
                                                     "features": [{"index": CAPS, "strength": STRENGTH}]})
            plain, loud = cmp["variants"]
            assert cmp["seed"] == 7 and (plain["label"], loud["label"]) == ("unsteered", "steered")
            assert plain["steering"]["source"] == "none" and plain["diverges_at"] is None
            assert loud["steering"]["source"] == "request" and applied(loud["steering"]) == [(CAPS, STRENGTH)]
            assert upper_fraction(loud["text"]) >= 0.8 and upper_fraction(plain["text"]) < 0.1
            # the demo's yelling starts a few words in ("Once upon A AN OLD CHEF ...")
            assert loud["diverges_at"] is not None and 0 <= loud["diverges_at"] < 10 and loud["tokens"] == 60

            sweep = await call(c, "compare_steering", {"prompt": "Tell me a story.", "profile": "yelling-demo",
                                                       "scales": [0, 1], "max_tokens": 30})
            assert [v["label"] for v in sweep["variants"]] == ["unsteered", "scale 0", "scale 1"]
            off, on = sweep["variants"][1:]
            assert off["text"] == sweep["variants"][0]["text"] and off["diverges_at"] is None  # scale 0 is off
            assert on["steering"]["profile"] == "yelling-demo" and upper_fraction(on["text"]) >= 0.8

            # with neither features nor profile, the server-wide steering is what gets compared
            assert "nothing to compare" in await error(c, "compare_steering", {"prompt": "hi"})
            await call(c, "set_steering", {"features": [{"index": CAPS, "strength": STRENGTH / 2}], "scale": 2})
            server = await call(c, "compare_steering", {"prompt": "Tell me a story.", "max_tokens": 30})
            assert applied(server["variants"][1]["steering"]) == [(CAPS, pytest.approx(STRENGTH))]
            assert upper_fraction(server["variants"][1]["text"]) >= 0.8
            # per-request steering left the server-wide steering alone
            state = httpx.get(live.url + "/api/steering").json()
            assert [(f["index"], f["strength"]) for f in state["features"]] == [(CAPS, STRENGTH / 2)] and state["scale"] == 2

    run(go())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_errors_are_tool_errors_naming_the_field(live, transport) -> None:
    async def go() -> None:
        async with TRANSPORTS[transport](live) as c:
            msg = await error(c, "set_steering", {"features": [{"index": 99999, "strength": 1.0}]})
            assert "out of range" in msg and "(param: features[0].index)" in msg
            msg = await error(c, "activate_profile", {"name": "no-such-profile"})
            assert "no-such-profile" in msg
            msg = await error(c, "generate", {"prompt": "hi", "profile": "yelling-demo", "unsteered": True})
            assert "unsteered" in msg
            msg = await error(c, "generate", {"prompt": "hi", "profile": "yelling-demo", "scale": 1000})
            assert "scale" in msg
            msg = await error(c, "generate", {"prompt": "hi", "profile": "nope"})
            assert "nope" in msg and "param: steering.profile" in msg
            # arguments are checked against the input schema before any call
            msg = await error(c, "list_features", {"limit": 0})
            assert "limit" in msg
            assert httpx.get(live.url + "/api/steering").json()["features"] == []

    run(go())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_activations_of_recent_requests(live, transport) -> None:
    async def go() -> None:
        async with TRANSPORTS[transport](live) as c:
            httpx.delete(live.url + "/api/monitor/history")
            off = await call(c, "get_activations")
            assert off["monitoring"]["enabled"] is False and "set_monitoring" in off["note"]

            cfg = await call(c, "set_monitoring", {"enabled": True, "top_k": 8})
            assert cfg["enabled"] and cfg["top_k"] == 8
            gen = await call(c, "generate", {"prompt": "Tell me a story.", "max_tokens": 12,
                                             "features": [{"index": CAPS, "strength": STRENGTH}]})
            acts = await call(c, "get_activations", {"top": 3})
            assert acts["note"] is None and len(acts["requests"]) == 1
            req = acts["requests"][0]
            assert req["request_id"] == gen["request_id"] and not req["truncated"]
            tokens = req["token_activations"]
            # each generated token that went back through the model (all but the last one sampled)
            assert len(tokens) in (11, 12) and {t["phase"] for t in tokens} == {"generated"}
            assert all(len(t["features"]) == 3 for t in tokens)
            assert all(f["value"] == round(f["value"], 2) for t in tokens for f in t["features"])
            # while yelling, the CAPS feature fires on most generated tokens
            firing = sum(any(f["index"] == CAPS for f in t["features"]) for t in tokens)
            assert firing >= 6, tokens
            seen = "".join(t["token"] for t in tokens).strip()
            assert seen and gen["text"].strip().startswith(seen)

            by_id = await call(c, "get_activations", {"request_id": gen["request_id"], "phase": "prompt",
                                                      "max_tokens": 2})
            assert by_id["requests"][0]["truncated"] and len(by_id["requests"][0]["token_activations"]) == 2
            msg = await error(c, "get_activations", {"request_id": "chatcmpl-nope"})
            assert "param: request_id" in msg

    run(go())


def test_stdio_without_a_server_says_so() -> None:
    async def go() -> None:
        url = f"http://127.0.0.1:{free_port()}"
        async with Client(stdio_params(url)) as c:
            assert {t.name for t in (await c.list_tools()).tools} == TOOLS  # starts without a server
            msg = await error(c, "get_status", {})
            assert url in msg and "is `millm serve` running?" in msg

    run(go())


def test_stdio_finds_the_server_from_host_and_port(live) -> None:
    async def go() -> None:
        port = live.url.rsplit(":", 1)[1]
        params = StdioServerParameters(command=sys.executable, args=["-m", "millm", "mcp"],
                                       env={"MILLM_HOST": "0.0.0.0", "MILLM_PORT": port}, cwd=os.getcwd())
        async with Client(params) as c:
            assert (await call(c, "get_status"))["model"]["id"] == demo.DEMO_MODEL_ID

    run(go())


def test_http_transport_rejects_a_foreign_host_header(live) -> None:
    """DNS rebinding: on a loopback-bound server the app's Host check guards /mcp as it guards /api."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "set_steering", "arguments": {"features": [{"index": CAPS, "strength": 1}]}}}
    r = httpx.post(live.url + "/mcp", json=body, headers={"Host": "evil.example:80",
                                                          "Accept": "application/json, text/event-stream"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "invalid_host"
    assert httpx.get(live.url + "/api/steering").json()["features"] == []


def test_search_ranks_whole_words_and_label_scores() -> None:
    labels = [{"index": 1, "label": "capsule shapes", "score": 0.9},
              {"index": 2, "label": "ALL CAPS (yelling)", "score": 0.5},
              {"index": 3, "label": "ALL CAPS (yelling)", "score": 0.7},
              {"index": 4, "label": "topic: ocean", "score": 0.9}]
    assert [x["index"] for x in search_labels(labels, "caps")] == [3, 2, 1]
    assert [x["index"] for x in search_labels(labels, "all caps (yelling)")] == [3, 2]
    assert [x["index"] for x in search_labels(labels, "ocean 4")] == [4]
    assert search_labels(labels, "  ") == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_handshake_era_clients_work_too(live, transport) -> None:
    """Hosts that still use the initialize handshake (protocol 2025-xx) get the same tools."""
    target = live.url + "/mcp" if transport == "http" else stdio_params(live.url)

    async def go() -> None:
        async with Client(target, mode="legacy") as c:
            assert c.protocol_version.startswith("2025-")
            assert {t.name for t in (await c.list_tools()).tools} == TOOLS
            assert (await call(c, "get_status"))["sae"]["id"] == demo.DEMO_SAE_ID

    run(go())


def test_http_transport_refuses_a_cross_site_form_post(live) -> None:
    """A page on another site can POST text/plain without a CORS preflight: refused before any tool runs."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "set_steering", "arguments": {"features": [{"index": CAPS, "strength": 1}]}}})
    headers = {"Content-Type": "text/plain", "Origin": "http://evil.example",
               "Accept": "application/json, text/event-stream"}
    r = httpx.post(live.url + "/mcp", content=body, headers=headers)
    assert r.status_code == 415 and r.json()["error"]["code"] == "cross_site_request"
    assert httpx.get(live.url + "/api/steering").json()["features"] == []


def test_the_api_key_guards_the_mcp_endpoint(tmp_path) -> None:
    server = start_server(Settings(port=free_port(), data_dir=tmp_path, api_key="s3cret"))
    try:
        assert httpx.get(server.url + "/api/status").status_code == 401
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
        assert httpx.post(server.url + "/mcp", json=body, headers=accept).status_code == 401

        async def go() -> None:
            import httpx2

            authed = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"})
            from mcp.client.streamable_http import streamable_http_client

            async with Client(streamable_http_client(server.url + "/mcp", http_client=authed)) as c:
                assert (await call(c, "get_status"))["status"] == "ok"
            async with Client(stdio_params(server.url, MILLM_API_KEY="s3cret")) as c:
                assert (await call(c, "get_status"))["status"] == "ok"
            async with Client(stdio_params(server.url)) as c:  # no MILLM_API_KEY: the server's refusal, as said
                assert "key" in (await error(c, "get_status", {})).lower()

        run(go())
    finally:
        server.stop()
