"""The Open WebUI filter (integrations/openwebui/millm_steering.py) without Open WebUI: its contract with
Open WebUI's loader (frontmatter, class Filter, Valves, UserValves, toggle, icon), the `steering` object
its inlet writes for each valve setting, and that object's effect on a live demo miLLM server."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import sys
import types
from typing import Any

import httpx
import pytest

from millm import demo
from millm.config import Settings
from tests.conftest import LiveServer, free_port, start_server
from tests.integrations.openwebui import FILTER_FILE, frontmatter, load_filter_module

META = json.loads((demo.assets_dir() / "demo.json").read_text())
CAPS, STRENGTH = META["caps_feature"], META["caps_strength"]
mod = load_filter_module()


def make(**valves: Any) -> Any:
    f = mod.Filter()
    f.valves = f.Valves(**valves)
    return f


def inlet(f: Any, body: dict | None = None, user_valves: dict | None = None, **kw: Any) -> dict:
    user = {"id": "u1", "valves": f.UserValves(**user_valves)} if user_valves is not None else {"id": "u1"}
    body = body if body is not None else {"model": "millm-demo", "messages": [{"role": "user", "content": "hi"}]}
    return asyncio.run(f.inlet(body, __user__=user, **kw))


def upper_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    assert len(letters) > 20, text
    return sum(c.isupper() for c in letters) / len(letters)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(Settings(port=free_port(), data_dir=tmp_path_factory.mktemp("owui-filter")))
    yield server
    server.stop()


# ---------------------------------------------------------------------------- Open WebUI's contract


def test_the_file_is_an_open_webui_filter_function() -> None:
    text = FILTER_FILE.read_text()
    meta = frontmatter(text)
    assert meta["title"] == "miLLM Steering" and meta["version"] and "steering" in meta["description"]
    assert meta.get("requirements") is None  # nothing for Open WebUI to pip install
    f = mod.Filter()
    assert f.toggle is True
    assert f.icon.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(f.icon.split(",", 1)[1]).decode().startswith("<svg")
    assert set(f.Valves.model_fields) >= {"priority", "profile", "features", "intensity", "mode"}
    assert set(f.UserValves.model_fields) == {"profile", "features", "intensity"}
    params = inspect.signature(f.inlet).parameters
    assert list(params)[0] == "body" and "__user__" in params and inspect.iscoroutinefunction(f.inlet)
    # only the standard library and pydantic: nothing else is imported at the top level
    imports = {line.split()[1].split(".")[0] for line in text.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"asyncio", "json", "math", "re", "urllib", "typing", "pydantic"}


# ---------------------------------------------------------------------------- the steering object


def test_profile_from_the_admin_valves() -> None:
    body = inlet(make(profile="yelling-demo"))
    assert body["steering"] == {"profile": "yelling-demo"}
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["model"] == "millm-demo"


def test_features_scaled_by_intensity_with_the_mode() -> None:
    body = inlet(make(features="16:8, 102:-2.5", intensity=1.5, mode="clamp"))
    assert body["steering"] == {"features": [{"index": 16, "strength": 12.0}, {"index": 102, "strength": -3.75}],
                                "mode": "clamp"}


def test_user_valves_override_the_admin_defaults() -> None:
    f = make(profile="yelling-demo", intensity=1.0)
    assert inlet(f, user_valves={"profile": "ocean"})["steering"] == {"profile": "ocean"}
    assert inlet(f, user_valves={"features": "5:2"})["steering"] == {"features": [{"index": 5, "strength": 2.0}],
                                                                     "mode": "add"}
    assert inlet(make(features="5:2"), user_valves={"intensity": -1})["steering"]["features"] == [
        {"index": 5, "strength": -2.0}]
    assert inlet(f, user_valves={})["steering"] == {"profile": "yelling-demo"}  # empty user valves: defaults


def test_intensity_zero_turns_steering_off() -> None:
    assert inlet(make(profile="yelling-demo", intensity=0))["steering"] == {"features": []}
    assert inlet(make(profile="yelling-demo"), user_valves={"intensity": 0})["steering"] == {"features": []}


def test_background_tasks_are_left_alone_unless_asked() -> None:
    task = {"task": "title_generation"}
    assert "steering" not in inlet(make(profile="yelling-demo"), __metadata__=task)
    assert inlet(make(profile="yelling-demo", steer_tasks=True), __metadata__=task)["steering"] == {
        "profile": "yelling-demo"}


def test_status_event_says_what_was_sent() -> None:
    events: list[dict] = []

    async def emit(event: dict) -> None:
        events.append(event)

    inlet(make(features="16:8", intensity=2), __event_emitter__=emit)
    inlet(make(profile="yelling-demo"), __event_emitter__=emit)
    inlet(make(profile="yelling-demo", show_status=False), __event_emitter__=emit)
    assert [e["data"]["description"] for e in events] == ["miLLM steering: 16:8 x2",
                                                          "miLLM steering: profile yelling-demo"]
    assert all(e["type"] == "status" and e["data"]["done"] for e in events)


@pytest.mark.parametrize("valves, message", [
    ({}, "nothing to steer with"),
    ({"features": "16"}, "'16' is not INDEX:STRENGTH"),
    ({"features": "16:8 16:2"}, "feature 16 is given twice"),
    ({"profile": "yelling-demo", "intensity": 2}, "set the millm_url valve"),
])
def test_configuration_errors_are_clear(valves, message) -> None:
    with pytest.raises(mod.SteeringError, match=message):
        inlet(make(**valves))


def test_valves_refuse_out_of_range_intensity() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        mod.Filter.Valves(intensity=11)
    with pytest.raises(ValidationError):
        mod.Filter.UserValves(intensity=float("nan"))


# ---------------------------------------------------------------------------- against a live miLLM


def test_scaling_a_profile_reads_it_from_millm(live: LiveServer) -> None:
    body = inlet(make(profile="yelling-demo", intensity=0.5, millm_url=live.url + "/"))
    assert body["steering"] == {"features": [{"index": CAPS, "strength": STRENGTH * 0.5}], "mode": "add",
                                "normalize": False}
    with pytest.raises(mod.SteeringError, match="profile 'nope'.*does not exist"):
        inlet(make(profile="nope", intensity=2, millm_url=live.url))
    with pytest.raises(mod.SteeringError, match="cannot read profile"):
        inlet(make(profile="yelling-demo", intensity=2, millm_url=f"http://127.0.0.1:{free_port()}"))


def test_the_connection_url_comes_from_open_webui_when_the_valve_is_empty(live: LiveServer, monkeypatch) -> None:
    """Open WebUI's `get_openai_connection(urlIdx)` gives the connection's base URL (with /v1) and key."""
    seen = []

    async def get_openai_connection(idx: int) -> tuple[str, str, dict]:
        seen.append(idx)
        return live.url + "/v1", "sk-from-connection", {}

    fake = types.ModuleType("open_webui.routers.openai")
    fake.get_openai_connection = get_openai_connection  # type: ignore[attr-defined]
    for name in ("open_webui", "open_webui.routers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "open_webui.routers.openai", fake)
    f = make(profile="yelling-demo", intensity=2)
    assert asyncio.run(f.connection({"id": "millm-demo", "urlIdx": 3})) == (live.url, "sk-from-connection")
    body = inlet(f, __model__={"id": "millm-demo", "urlIdx": 3})
    assert body["steering"]["features"] == [{"index": CAPS, "strength": STRENGTH * 2}] and seen == [3, 3]


def test_the_body_it_writes_steers_the_demo_model(live: LiveServer) -> None:
    """What Open WebUI forwards after the inlet: the toggle on makes the demo yell, intensity 0 does not."""
    def answer(f: Any) -> dict:
        body = inlet(f, {"model": demo.DEMO_MODEL_ID, "messages": [{"role": "user", "content": "Tell me a story."}],
                         "max_tokens": 60, "temperature": 0, "stream": False})
        r = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    by_profile = answer(make(profile="yelling-demo"))
    assert by_profile["millm"]["steering"]["source"] == "profile"
    assert upper_fraction(by_profile["choices"][0]["message"]["content"]) >= 0.8
    by_features = answer(make(features=f"{CAPS}:{STRENGTH}"))
    assert by_features["millm"]["steering"]["source"] == "request"
    assert upper_fraction(by_features["choices"][0]["message"]["content"]) >= 0.8
    off = answer(make(profile="yelling-demo", intensity=0))
    assert off["millm"]["steering"]["source"] == "none"
    assert upper_fraction(off["choices"][0]["message"]["content"]) < 0.1
