"""/v1/chat/completions through the official openai SDK against a live server."""

from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "test-org/tiny"
HI = [{"role": "user", "content": "Hello world"}]


def chat(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", HI)
    kw.setdefault("max_tokens", 12)
    return client.chat.completions.create(**kw)


def test_non_streamed_chat_has_choices_and_usage(client):
    r = chat(client, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_chat_matches_non_streamed_and_frames_correctly(client, server):
    full = chat(client, temperature=0).choices[0].message.content
    chunks = list(chat(client, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full
    assert len({c.id for c in chunks}) == 1
    # Raw framing: data lines only, no event: lines, [DONE] last, no usage chunk unless asked.
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={
        "model": MODEL, "messages": HI, "max_tokens": 4, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert '"role"' in lines[0] and not any('"role"' in ln for ln in lines[1:-1])
    assert lines[-1] == "data: [DONE]"
    assert '"choices":[]' not in "".join(lines)


def test_include_usage_sends_one_final_usage_chunk(client):
    chunks = list(chat(client, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_n_choices_each_have_role_and_finish_reason(client):
    r = chat(client, n=3, temperature=1.0, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    chunks = list(chat(client, n=2, temperature=1.0, seed=5, stream=True))
    for i in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert mine[0].delta.role == "assistant"
        assert mine[-1].finish_reason is not None


def test_same_seed_same_output_and_different_seed_differs(client):
    a = chat(client, temperature=1.0, seed=123, max_tokens=20).choices[0].message.content
    b = chat(client, temperature=1.0, seed=123, max_tokens=20).choices[0].message.content
    outs = {chat(client, temperature=1.0, seed=s, max_tokens=20).choices[0].message.content for s in range(4)}
    assert a == b
    assert len(outs) > 1
    # the ends of the 64-bit range work, with n > 1 too (choice i draws with seed + i)
    for seed in (2**63 - 1, -(2**63)):
        r = chat(client, temperature=1.0, seed=seed, n=3, max_tokens=4)
        assert [c.index for c in r.choices] == [0, 1, 2]


def test_stop_string_is_excluded(client):
    full = chat(client, temperature=0, max_tokens=20).choices[0].message.content
    assert len(full) > 6
    stop = full[4:7]
    cut = full[: full.index(stop)]
    r = chat(client, temperature=0, max_tokens=20, stop=[stop, "zzzz-never"])
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(client, temperature=0, max_tokens=20,
                                                                      stop=stop, stream=True))
    assert streamed == cut


def test_logprobs_and_top_logprobs(client):
    r = chat(client, temperature=0, logprobs=True, top_logprobs=3, max_tokens=6)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or r.choices[0].finish_reason == "stop"
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0
        # Greedy: the chosen token is the most likely one.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-5)
        assert entry.bytes is not None


def test_lone_system_message_and_non_alternating_roles(client):
    r = chat(client, messages=[{"role": "system", "content": "Title this chat."}], temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    r = chat(client, messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                               {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"}])
    assert r.usage.prompt_tokens > 0


def test_text_parts_accepted_and_images_rejected(client):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]
    a = chat(client, messages=[{"role": "user", "content": parts}], temperature=0)
    b = chat(client, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert e.value.body["param"] == "messages[0].content[1]"


def test_max_completion_tokens_wins_and_is_clamped(client, server):
    r = chat(client, max_tokens=3, max_completion_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5
    ctx = server.runtime.worker.loaded.context_length
    r = client.completions.create(model=MODEL, prompt=[5] * (ctx - 6), max_tokens=10 * ctx, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ctx - 6, 6)
    assert r.choices[0].finish_reason == "length"


def test_unknown_top_level_fields_are_ignored(client):
    r = chat(client, extra_body={"not_a_real_field": {"x": 1}, "repeat_penalty": 1.1}, temperature=0)
    assert r.choices


def test_tools_on_a_template_without_tool_support(client):
    # tool_choice none gets a text answer; auto is a 400 naming tools (tests/api/test_tools.py has the real thing)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = chat(client, temperature=0, max_tokens=4, tools=tools, tool_choice="none")
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, temperature=0, max_tokens=4, tools=tools, tool_choice="auto")
    assert e.value.body["param"] == "tools"
