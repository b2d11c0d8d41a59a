"""Bounded requests: a body over max_body_bytes is a 413 before it is read, text that cannot fit the context is
refused before it is tokenised, and long text is tokenised off the event loop, so other clients are served."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from millm.services import prompts
from tests.conftest import start_server, tiny_settings

MODEL = "test-org/tiny"
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory, tiny_model_dir):
    live = start_server(tiny_settings(tmp_path_factory.mktemp("limits"), tiny_model_dir,
                                      served_model_name=MODEL, max_body_bytes=LIMIT))
    yield live
    live.stop()


def _chat_body(content: str) -> bytes:
    import json

    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2}).encode()


def _assert_413(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "request_too_large"
    assert str(LIMIT) in err["message"]


def test_a_50_mb_body_with_content_length_is_a_413_before_it_is_read(small_limit):
    body = _chat_body("x" * 50_000_000)
    t = time.perf_counter()
    r = httpx.post(small_limit.url + "/v1/chat/completions", content=body, timeout=60,
                   headers={"content-type": "application/json"})
    _assert_413(r)
    assert time.perf_counter() - t < 10  # (the figure is in docs/reliability.md; this only catches a hang)
    assert httpx.get(small_limit.url + "/health", timeout=5).status_code == 200


def test_a_chunked_body_is_counted_as_it_streams_and_refused_past_the_limit(small_limit):
    def chunks():  # no Content-Length: only counting the bytes can refuse it
        for _ in range(64):
            yield b"x" * (1024 * 1024)

    r = httpx.post(small_limit.url + "/api/profiles/import", content=chunks(), timeout=60,
                   headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    _assert_413(r)


def test_health_is_served_while_a_huge_upload_trickles_in(small_limit):
    done = threading.Event()

    def slow_chunks():
        for _ in range(40):
            if done.is_set():
                return
            time.sleep(0.05)
            yield b" " * 20_000

    def upload():
        try:
            httpx.post(small_limit.url + "/v1/chat/completions", content=slow_chunks(), timeout=30,
                       headers={"content-type": "application/json"})
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=upload)
    t.start()
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        assert httpx.get(small_limit.url + "/health", timeout=5).status_code == 200
        assert time.perf_counter() - started < 2
    finally:
        done.set()
        t.join(timeout=30)


@pytest.fixture()
def tokenised(small_limit, monkeypatch) -> list[int]:
    """Lengths of the texts the served tokenizer is called on."""
    seen: list[int] = []
    cls = type(small_limit.runtime.worker.loaded.tokenizer)
    original = cls.__call__

    def spy(self, text=None, *a, **kw):
        if isinstance(text, str):
            seen.append(len(text))
        return original(self, text, *a, **kw)

    monkeypatch.setattr(cls, "__call__", spy)
    return seen


def test_text_too_long_for_the_context_is_refused_without_tokenising_it(small_limit, tokenised):
    lm = small_limit.runtime.worker.loaded
    seen = tokenised
    limit_chars = lm.context_length * prompts.max_token_chars(lm.tokenizer)
    for path, body in [
        ("/v1/chat/completions", _chat_body("word " * 180_000)),
        ("/v1/completions", f'{{"model": "{MODEL}", "prompt": "{"word " * 180_000}"}}'.encode()),
        ("/v1/embeddings", f'{{"model": "{MODEL}", "input": "{"word " * 180_000}"}}'.encode()),
    ]:
        r = httpx.post(small_limit.url + path, content=body, timeout=30, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert r.json()["error"]["param"] in ("messages", "prompt", "input")
    assert 180_000 * 5 > limit_chars
    assert all(n <= limit_chars for n in seen), seen


def test_text_just_inside_the_character_bound_is_checked_on_a_prefix(small_limit, tokenised):
    lm = small_limit.runtime.worker.loaded
    ctx = lm.context_length
    text = "ab " * ((ctx * prompts.max_token_chars(lm.tokenizer) - 10) // 3)
    assert len(text) > ctx * prompts.PREFIX_CHARS_PER_TOKEN  # (the prefix path applies)
    r = httpx.post(small_limit.url + "/v1/completions", timeout=30,
                   json={"model": MODEL, "prompt": text, "max_tokens": 1})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert tokenised and max(tokenised) <= ctx * prompts.PREFIX_CHARS_PER_TOKEN


def test_invalid_utf8_is_an_invalid_json_400(small_limit):
    r = httpx.post(small_limit.url + "/v1/chat/completions", content=b'{"model": "\xff\xfe"}', timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages"),
    ("/v1/completions", '{"model": "%s", "prompt": "a\\udfffb"}', "prompt"),
    ("/v1/completions", '{"model": "%s", "prompt": ["ok", "a\\udfffb"]}', "prompt[1]"),
    ("/v1/embeddings", '{"model": "%s", "input": "\\ud800"}', "input"),
])
def test_a_lone_surrogate_is_a_400_in_our_words(small_limit, path, body, param):
    r = httpx.post(small_limit.url + path, content=(body % MODEL).encode(), timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, "invalid_text")
    assert "TextEncodeInput" not in err["message"] and "Union" not in err["message"]


def test_long_text_is_tokenised_off_the_event_loop():
    import asyncio

    async def run() -> tuple[int, int, int]:
        return (threading.get_ident(), await prompts.off_loop(10, threading.get_ident),
                await prompts.off_loop(prompts.OFF_LOOP_CHARS, threading.get_ident))

    loop_thread, short, long = asyncio.run(run())
    assert short == loop_thread and long != loop_thread
