"""Structured outputs (response_format json_object / json_schema) by constrained decoding, through the openai SDK:
the grammar makes even a random tiny model's output valid JSON for the schema."""

from __future__ import annotations

import json

import httpx
import jsonschema_rs
import pytest
from pydantic import BaseModel, Field

MODEL = "test-org/tiny"
HI = [{"role": "user", "content": "Describe a person as JSON."}]

NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "kind": {"enum": ["cat", "dog", "fox"]},
    },
    "required": ["name", "age", "address", "kind"],
    "additionalProperties": False,
}


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_output_is_valid_for_a_nested_schema(client, seed):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=200, temperature=1.0, seed=seed,
                                       response_format=schema_format(NESTED))
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema_rs.validate(NESTED, json.loads(choice.message.content))


def test_json_object_gives_a_json_object_on_chat_and_completions(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=120, temperature=0,
                                       response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # a random model may keep writing one long string
        assert r.choices[0].finish_reason == "length"
        assert r.choices[0].message.content.startswith("{")
    c = client.completions.create(model=MODEL, prompt="Hello", max_tokens=120, temperature=0.7, seed=3,
                                  extra_body={"response_format": schema_format(NESTED)})
    assert c.choices[0].finish_reason == "stop"
    jsonschema_rs.validate(NESTED, json.loads(c.choices[0].text))


def test_max_tokens_cut_says_length(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=3, temperature=0,
                                       response_format=schema_format(NESTED))
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.startswith("{")


def test_streamed_constrained_output_equals_non_streamed(client):
    kw = dict(model=MODEL, messages=HI, max_tokens=200, temperature=0, response_format=schema_format(NESTED))
    full = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full
    assert chunks[-1].choices[0].finish_reason == "stop"


class Address(BaseModel):
    city: str = Field(max_length=10)
    zip: str = Field(pattern="^[0-9]{5}$")


class Person(BaseModel):
    # bounded strings: a random model keeps writing one string until max_tokens otherwise
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=150)
    address: Address


def test_sdk_parse_with_a_pydantic_model(client):
    r = client.chat.completions.parse(model=MODEL, messages=HI, max_tokens=300, temperature=0.5, seed=7,
                                      response_format=Person)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert isinstance(parsed.address, Address)


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(unclosed"}}},
    {"type": "json_schema"},
    {"type": "yaml"},
])
def test_a_schema_that_cannot_compile_is_a_400_naming_response_format(server, fmt):
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"model": MODEL, "messages": HI, "max_tokens": 5, "response_format": fmt})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"].startswith("response_format"), err
    assert "/" not in err["message"] or "tmp" not in err["message"]
