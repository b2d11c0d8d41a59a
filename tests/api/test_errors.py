"""Errors: the OpenAI envelope, statuses and `param`; a user's mistake is never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "test-org/tiny"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["param"] == "model"
    assert e.value.body["code"] == "model_not_found"


def test_over_long_prompt_is_400_naming_the_field(client, server):
    ctx = server.runtime.worker.loaded.context_length
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * ctx}])
    assert e.value.body["param"] == "messages"
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=[1] * (ctx + 5))
    assert e.value.body["param"] == "prompt"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"n": 0}, "n"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"top_logprobs": 3}, None),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"99999999": 1}}, "logit_bias"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": 2**64}, "seed"),
        # the tiny model's chat template does not render tools
        ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"steering": {"features": [{"index": 1, "strength": 1, "bogus": 2}]}}, "steering.features[0].bogus"),
        ({"steering": {"features": [{"index": 100000, "strength": 1.0}]}}, "steering.features[0].index"),
        ({"steering": {"features": [{"index": 1, "strength": "NaN"}]}}, "steering.features[0].strength"),
        ({"steering": {"profile": "no-such-profile"}}, "steering.profile"),
    ],
)
def test_bad_parameters_are_400_with_param(server, body, param):
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **body}
    r = httpx.post(server.url + "/v1/chat/completions", json=payload, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["message"]


def test_invalid_json_is_400(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_server_keeps_working_after_errors(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.choices[0].message.content is not None


def test_openapi_documents_the_400_envelope_and_no_422(server):
    # Validation errors are 400s with the OpenAI envelope, so the schema must not promise FastAPI's 422 body, and
    # every operation that validates input documents the 400 it can send.
    schema = httpx.get(server.url + "/openapi.json", timeout=10).json()
    ops = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert not [(p, m) for p, m, op in ops if "422" in op["responses"]]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    takes_input = [(p, m, op) for p, m, op in ops if op.get("parameters") or op.get("requestBody")]
    assert len(takes_input) > 30
    for path, method, op in takes_input:
        ref = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorResponse", (path, method)
    # the non-JSON answers say what they are
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    export = schema["paths"]["/api/monitor/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/x-ndjson", "text/csv"}
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert set(schema["paths"][path]["post"]["responses"]["200"]["content"]) == {"application/json",
                                                                                       "text/event-stream"}
    assert httpx.get(server.url + "/metrics", timeout=10).headers["content-type"].startswith("text/plain")
    # and what a bad request gets is that shape
    r = httpx.put(server.url + "/api/monitor/config", json={"top_k": 0}, timeout=10)
    assert r.status_code == 400 and set(r.json()) == {"error"} and r.json()["error"]["param"] == "top_k"
