"""The streams' shortcut for plain tokens (services/text_chunks.ChunkStream, api/sse.EventStream._send_now): the
same events, in the same order, as the ordinary path through the async generators, on a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from millm.services import text_chunks

MODEL = "test-org/tiny"


def _events(url: str, path: str, body: dict[str, Any]) -> list[Any]:
    """The stream's events, parsed, without the fields that differ from request to request, by choice."""
    out: list[Any] = []
    with httpx.stream("POST", url + path, json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                out.append(data)
                continue
            chunk = json.loads(data, parse_float=lambda x: round(float(x), 3))  # (logprobs move with the batch)
            chunk.pop("id", None)
            chunk.pop("created", None)
            out.append(chunk)
    # each choice's events in order (how the choices interleave depends on when each prompt joined the batch)
    return sorted(out, key=lambda c: c["choices"][0]["index"] if isinstance(c, dict) and c["choices"] else 1 << 30)


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "Hello", "n": 3, "stream_options": {"include_usage": True}}),
    ("/v1/completions", {"prompt": ["Hello", "The stars"], "logprobs": 1}),  # logprobs: never plain
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 2}),
], ids=["completions-n3", "completions-logprobs", "chat-n2"])
def test_the_shortcut_gives_the_ordinary_path_s_events(server, monkeypatch, path, body):
    body = {"model": MODEL, "max_tokens": 40, "temperature": 0, "ignore_eos": True, "stream": True, **body}
    taken: list[int] = []
    direct = text_chunks.ChunkStream._direct

    def counting(self: Any, emit: Any, items: list[Any]) -> int:
        n = direct(self, emit, items)
        taken.append(n)
        return n

    monkeypatch.setattr(text_chunks.ChunkStream, "_direct", counting)
    shortcut = [_events(server.url, path, body) for _ in range(3)]
    monkeypatch.setattr(text_chunks.ChunkStream, "bypass", lambda self, emit: None)
    ordinary = _events(server.url, path, body)
    assert all(s == ordinary for s in shortcut)
    assert ordinary[-1] == "[DONE]" and len(ordinary) > 40
    if "logprobs" in body:
        assert sum(taken) == 0  # offered, never taken
    else:
        assert sum(taken) > 0  # (the stream waited for a token at least once in three streams of 40 steps)
