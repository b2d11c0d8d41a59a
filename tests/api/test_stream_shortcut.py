"""The streams' shortcuts for plain tokens: the worker thread's own writes to the socket (services/text_chunks
.WorkerWrites, api/sse.Connection) and the relay drain's (services/text_chunks.ChunkStream, api/sse.EventStream
._send_now). The same events, in the same order, as the ordinary path through the async generators, on a real
server."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from millm.api import openai_routes
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

    written: list[int] = []
    write = text_chunks.WorkerWrites._write

    def counted(self: Any, data: bytes) -> bool:
        ok = write(self, data)
        written.append(ok)
        return ok

    monkeypatch.setattr(text_chunks.WorkerWrites, "_write", counted)
    by_worker = [_events(server.url, path, body) for _ in range(2)]
    monkeypatch.setattr(openai_routes._Sse, "worker_writes", lambda self, conn: None)
    monkeypatch.setattr(text_chunks.ChunkStream, "_direct", counting)
    shortcut = [_events(server.url, path, body) for _ in range(3)]
    monkeypatch.setattr(text_chunks.ChunkStream, "bypass", lambda self, emit: None)
    ordinary = _events(server.url, path, body)
    assert all(s == ordinary for s in shortcut + by_worker)
    assert ordinary[-1] == "[DONE]" and len(ordinary) > 40
    if "logprobs" in body:
        assert sum(taken) == 0 and not written  # offered, never taken
    else:
        assert sum(taken) > 0  # (the stream waited for a token at least once in three streams of 40 steps)
        assert sum(written) > 0 and all(written)  # (usually most tokens of the two streams), each written whole


def test_a_client_that_leaves_while_the_worker_writes_ends_its_run(server, monkeypatch):
    made: list[Any] = []
    init = text_chunks.WorkerWrites.__init__

    def keep(self: Any, *args: Any) -> None:
        init(self, *args)
        made.append(self)

    monkeypatch.setattr(text_chunks.WorkerWrites, "__init__", keep)
    worker = server.runtime.worker
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 240, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(200):  # (two lines an event) until the worker writes this stream's tokens
            next(lines)
            if made and made[0].written > 1:
                break
        steps_at_close = worker.steps
        assert made and made[0].written > 1
    deadline = time.monotonic() + 5
    while worker.active_sequences and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.active_sequences == 0  # the run was cancelled (the loop saw the client go)
    assert worker.steps - steps_at_close < 200
    assert made[0].off  # and the response's writes were closed
