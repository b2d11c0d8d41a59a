"""The Open WebUI filter (integrations/openwebui/millm_steering.py) without Open WebUI: its contract with
Open WebUI's loader (frontmatter, class Filter, Valves, UserValves, toggle, icon), the `steering` object
its inlet writes for each valve setting, and that object's effect on a live demo miLLM server (what Open
WebUI forwards after the inlet)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
from typing import Any

import httpx
import pytest

from millm import demo
from tests.conftest import LiveServer, serve_demo, upper_fraction
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


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    yield from serve_demo(tmp_path_factory, "owui-filter")


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
    assert set(f.Valves.model_fields) == {"priority", "profile", "features", "mode", "intensity", "steer_tasks",
                                          "show_status"}
    assert set(f.UserValves.model_fields) == {"profile", "features", "intensity"}
    params = inspect.signature(f.inlet).parameters
    assert list(params)[0] == "body" and "__user__" in params and inspect.iscoroutinefunction(f.inlet)
    # only the standard library and pydantic: nothing else is imported at the top level
    imports = {line.split()[1].split(".")[0] for line in text.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"math", "re", "typing", "pydantic"}


# ---------------------------------------------------------------------------- the steering object


def test_profile_from_the_admin_valves() -> None:
    body = inlet(make(profile="yelling-demo"))
    assert body["steering"] == {"profile": "yelling-demo"}
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["model"] == "millm-demo"


def test_features_with_the_mode_and_intensity_as_scale() -> None:
    body = inlet(make(features="16:8, 102:-2.5", intensity=1.5, mode="clamp"))
    assert body["steering"] == {"features": [{"index": 16, "strength": 8.0}, {"index": 102, "strength": -2.5}],
                                "mode": "clamp", "scale": 1.5}
    assert inlet(make(profile="ocean", intensity=2))["steering"] == {"profile": "ocean", "scale": 2.0}
    # no intensity anywhere: no scale, so a profile's own default scale applies


def test_user_valves_override_the_admin_defaults() -> None:
    f = make(profile="yelling-demo", intensity=1.5)
    assert inlet(f, user_valves={"profile": "ocean"})["steering"] == {"profile": "ocean", "scale": 1.5}
    assert inlet(f, user_valves={"features": "5:2"})["steering"] == {"features": [{"index": 5, "strength": 2.0}],
                                                                     "mode": "add", "scale": 1.5}
    assert inlet(make(features="5:2"), user_valves={"intensity": 3})["steering"]["scale"] == 3.0
    assert inlet(f, user_valves={"intensity": 0.5})["steering"] == {"profile": "yelling-demo", "scale": 0.5}
    assert inlet(f, user_valves={})["steering"] == {"profile": "yelling-demo", "scale": 1.5}  # empty: defaults
    g = make(features="5:2")
    assert inlet(g, user_valves={"profile": "ocean"})["steering"] == {"profile": "ocean"}


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
])
def test_configuration_errors_are_clear(valves, message) -> None:
    with pytest.raises(mod.SteeringError, match=message):
        inlet(make(**valves))


def test_valves_refuse_out_of_range_intensity() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        mod.Filter.Valves(intensity=11)
    with pytest.raises(ValidationError):
        mod.Filter.UserValves(intensity=-1)
    with pytest.raises(ValidationError):
        mod.Filter.UserValves(intensity=float("nan"))


# ---------------------------------------------------------------------------- against a live miLLM


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
    # intensity scales the profile's strengths on the server (steering.scale)
    scaled = answer(make(profile="yelling-demo", intensity=1.2))["millm"]["steering"]
    assert (scaled["scale"], scaled["features"][0]["strength"]) == (1.2, pytest.approx(STRENGTH * 1.2))
    quiet = answer(make(profile="yelling-demo", intensity=0.1))
    assert upper_fraction(quiet["choices"][0]["message"]["content"]) < 0.5
    off = answer(make(profile="yelling-demo", intensity=0))
    assert off["millm"]["steering"]["source"] == "none"
    assert upper_fraction(off["choices"][0]["message"]["content"]) < 0.1
