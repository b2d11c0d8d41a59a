"""Queue bound (429 with Retry-After) and client disconnects, on a server with a one-slot batch."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import start_server, tiny_settings

MODEL = "test-org/tiny"


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, tiny_model_dir):
    live = start_server(tiny_settings(tmp_path_factory.mktemp("q"), tiny_model_dir, served_model_name=MODEL,
                                      queue_size=1, max_batch_size=1))
    yield live
    live.stop()


def _long_request(url: str, results: list, max_tokens: int = 60) -> None:
    r = httpx.post(url + "/v1/completions", timeout=120, json={
        "model": MODEL, "prompt": "Hello", "max_tokens": max_tokens, "ignore_eos": True})
    results.append(r)


def test_full_queue_gets_429_with_retry_after(small_server):
    # Each request decodes 240 tokens (the tiny model's context is 256), far longer than the 5 ms between
    # submissions, so while the first runs and the second waits, the rest find the one-place queue full.
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=_long_request, args=(small_server.url, results, 240)) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join(120)
    codes = sorted(r.status_code for r in results)
    assert 200 in codes
    rejected = [r for r in results if r.status_code == 429]
    assert rejected, codes
    assert rejected[0].headers["Retry-After"] == "1"
    assert rejected[0].json()["error"]["code"] == "queue_full"
    assert set(codes) <= {200, 429}


def test_disconnect_mid_stream_frees_the_worker(small_server):
    worker = small_server.runtime.worker
    with httpx.stream("POST", small_server.url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": "Hello", "max_tokens": 5000 // 20, "ignore_eos": True,
            "stream": True}) as resp:
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
        steps_at_close = worker.steps
    # The worker drops the cancelled row within a step or two and is idle again.
    deadline = time.monotonic() + 5
    while worker.active_sequences and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.active_sequences == 0
    assert worker.steps - steps_at_close < 200
    start = time.monotonic()
    r = httpx.post(small_server.url + "/v1/completions", timeout=30,
                   json={"model": MODEL, "prompt": "Hi", "max_tokens": 3})
    assert r.status_code == 200
    assert time.monotonic() - start < 5


def test_error_after_the_stream_started_is_an_sse_error_event(small_server, monkeypatch):
    import millm.engine.rows as worker_module  # sample_and_emit draws through rows.sample

    real = worker_module.sample
    calls = [0]

    def fails_after_two_tokens(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 2:
            raise RuntimeError("simulated device failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "sample", fails_after_two_tokens)
    with httpx.stream("POST", small_server.url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": "Hello", "max_tokens": 50, "ignore_eos": True, "stream": True}) as resp:
        assert resp.status_code == 200
        lines = [ln for ln in resp.iter_lines() if ln]
    monkeypatch.setattr(worker_module, "sample", real)
    assert lines[0].startswith('data: {"id"')
    errors = [ln for ln in lines if ln.startswith('data: {"error"')]
    assert len(errors) == 1
    assert errors[0] == lines[-1]  # the stream ends with it (no [DONE] after an error)
    err = json.loads(errors[0][len("data: "):])["error"]
    assert err["type"] == "server_error" and err["message"]
    r = httpx.post(small_server.url + "/v1/completions", timeout=30, json={"model": MODEL, "prompt": "Hi",
                                                                           "max_tokens": 2})
    assert r.status_code == 200


def test_health_is_503_while_the_model_loads(tmp_path, tiny_model_dir, monkeypatch):
    import millm.services.models as models_module

    real = models_module.load_model

    def slow_load(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(models_module, "load_model", slow_load)
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, served_model_name=MODEL), wait_ready=False)
    try:
        r = httpx.get(live.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["Retry-After"]
        r = httpx.post(live.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
        deadline = time.monotonic() + 30
        while httpx.get(live.url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(live.url + "/health").json() == {"status": "ok"}
    finally:
        live.stop()
