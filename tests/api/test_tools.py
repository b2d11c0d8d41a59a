"""Tool calls through the openai SDK against tiny models whose chat templates render tools as Qwen (Hermes),
Llama 3.1 (JSON), Mistral ([TOOL_CALLS]) and Gemma 3 (pythonic) do. The models are random, so calls are
forced with tool_choice required or named (a grammar), and `auto` is checked for shape."""

from __future__ import annotations

import json

import httpx
import jsonschema_rs
import openai
import pytest

from tests.conftest import start_server, tiny_settings
from tests.fixtures.tool_templates import FAMILIES, build_family_model

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 12},
                                      "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": False},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Time in a zone",
                 "parameters": {"type": "object", "properties": {"zone": {"type": "integer", "minimum": -12,
                                                                          "maximum": 14}},
                                "required": ["zone"], "additionalProperties": False}},
}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_server(request, tmp_path_factory):
    d = build_family_model(tmp_path_factory.mktemp(f"tools-{request.param}") / "model", request.param)
    live = start_server(tiny_settings(tmp_path_factory.mktemp("srv"), d, served_model_name="fam"))
    yield request.param, live
    live.stop()


@pytest.fixture()
def fclient(family_server):
    return openai.OpenAI(base_url=family_server[1].url + "/v1", api_key="unused", max_retries=0, timeout=60)


def check_call(call, names=("get_weather", "get_time")):
    assert call.type == "function"
    assert call.function.name in names
    assert call.id
    jsonschema_rs.validate(SCHEMAS[call.function.name], json.loads(call.function.arguments))


def test_named_tool_choice_forces_that_call(fclient, family_server):
    family = family_server[0]
    for seed in (0, 1):
        r = fclient.chat.completions.create(
            model="fam", messages=ASK, tools=TOOLS, max_tokens=80, temperature=1.0, seed=seed,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert len(choice.message.tool_calls) == 1
        check_call(choice.message.tool_calls[0], names=("get_weather",))
        if family == "mistral":  # Mistral templates check 9-character alphanumeric ids
            assert len(choice.message.tool_calls[0].id) == 9 and choice.message.tool_calls[0].id.isalnum()


def test_required_gives_calls_and_parallel_false_gives_one(fclient):
    r = fclient.chat.completions.create(model="fam", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0.8,
                                        seed=3, tool_choice="required", parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    check_call(choice.message.tool_calls[0])
    r = fclient.chat.completions.create(model="fam", messages=ASK, tools=TOOLS, max_tokens=160, temperature=0.8,
                                        seed=4, tool_choice="required")
    assert r.choices[0].finish_reason in ("tool_calls", "length")
    for call in r.choices[0].message.tool_calls or []:
        check_call(call)


def test_streamed_deltas_assemble_to_the_same_call(fclient, family_server):
    kw = dict(model="fam", messages=ASK, tools=TOOLS, max_tokens=80, temperature=0,
              tool_choice={"type": "function", "function": {"name": "get_weather"}})
    full = fclient.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    chunks = list(fclient.chat.completions.create(stream=True, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    calls: dict[int, dict] = {}
    for ch in chunks:
        for d in ch.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": None, "arguments": "", "pieces": 0})
            if d.id:
                assert entry["id"] is None
                entry["id"], entry["name"] = d.id, d.function.name
            entry["arguments"] += d.function.arguments or ""
            entry["pieces"] += bool(d.function.arguments)
    assert list(calls) == [0]
    # incremental: the name goes out first (its own chunk), JSON arguments in pieces as tokens arrive; pythonic
    # (Gemma) keyword arguments are not JSON and come whole at the end
    assert calls[0]["pieces"] > (1 if family_server[0] != "gemma" else 0)
    assert calls[0]["id"] and calls[0]["name"] == full.function.name
    assert json.loads(calls[0]["arguments"]) == json.loads(full.function.arguments)
    # the SDK's stream helper assembles the same call
    with fclient.chat.completions.stream(**kw) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == json.loads(full.function.arguments)


def test_round_trip_call_tool_result_answer(fclient):
    first = fclient.chat.completions.create(model="fam", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
                                            tool_choice="required", parallel_tool_calls=False)
    msg = first.choices[0].message
    call = msg.tool_calls[0]
    history = ASK + [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    answer = fclient.chat.completions.create(model="fam", messages=history, tools=TOOLS, max_tokens=8,
                                             temperature=0, tool_choice="none")
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason in ("stop", "length")
    auto = fclient.chat.completions.create(model="fam", messages=history, tools=TOOLS, max_tokens=8, temperature=0)
    assert auto.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_tool_arguments_that_are_not_json_are_a_400(family_server):
    bad = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "abcdefghi", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]}]
    r = httpx.post(family_server[1].url + "/v1/chat/completions",
                   json={"model": "fam", "messages": bad, "tools": TOOLS, "max_tokens": 4})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[1].tool_calls[0].function.arguments"


def test_a_template_without_tools_is_a_400_naming_tools(server):
    r = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "test-org/tiny", "messages": ASK, "tools": TOOLS, "tool_choice": "auto", "max_tokens": 4})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "tools"
    assert r.json()["error"]["code"] == "tools_unsupported"
    # tool_choice none never needs the template's tool support
    r = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "test-org/tiny", "messages": ASK, "tools": TOOLS, "tool_choice": "none", "max_tokens": 4})
    assert r.status_code == 200


@pytest.mark.parametrize("choice, msg", [
    ({"type": "function", "function": {"name": "nope"}}, "not in tools"),
    ("required", "requires tools"),
    ("sometimes", "tool_choice must be"),
])
def test_bad_tool_choice_is_a_400(server, choice, msg):
    body = {"model": "test-org/tiny", "messages": ASK, "tool_choice": choice, "max_tokens": 4}
    if msg != "requires tools":
        body["tools"] = TOOLS
    r = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tool_choice"
    assert msg in r.json()["error"]["message"]
