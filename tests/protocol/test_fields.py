"""The table of OpenAI request fields against the request models: every declared field is in it, and every field
it says miLLM acts on is declared."""

from __future__ import annotations

import pytest

from millm.protocol import openai as p
from millm.protocol.fields import FIELDS, ignored_fields

MODELS = {"chat": p.ChatCompletionRequest, "completions": p.CompletionRequest, "embeddings": p.EmbeddingRequest}


@pytest.mark.parametrize("endpoint", sorted(MODELS))
def test_table_matches_the_request_model(endpoint):
    declared = set(MODELS[endpoint].model_fields)
    table = FIELDS[endpoint]
    assert declared - set(table) == set(), "declared fields missing from the table"
    acted_on = {name for name, (status, _) in table.items() if status != "ignored"}
    assert acted_on - declared == set(), "the table says miLLM acts on fields the request model does not declare"
    assert all(status in ("honoured", "extension", "refused", "ignored") for status, _ in table.values())


def test_openai_fields_the_server_does_not_act_on_are_listed_as_ignored():
    chat = FIELDS["chat"]
    for name in ("store", "metadata", "service_tier", "reasoning_effort", "user"):
        assert chat[name][0] == "ignored"
    for name in ("tools", "tool_choice", "response_format", "parallel_tool_calls"):
        assert chat[name][0] == "honoured"


def test_ignored_fields_of_a_request():
    body = p.ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0, "user": "u", "store": True,
        "zeta": 1, "steering": {"features": []}})
    assert ignored_fields(body, "chat") == ["user", "store", "zeta"]
    assert ignored_fields(p.CompletionRequest.model_validate({"model": "m", "prompt": "x"}), "completions") == []


def test_names_go_into_the_header_as_printable_ascii():
    from millm.protocol.fields import header_safe

    assert header_safe("store") == "store"
    assert header_safe("a\r\nb") == "a\\u000d\\u000ab"  # no header injection
    assert header_safe("caf\u00e9\ud83d") == "caf\\u00e9\\ud83d"
