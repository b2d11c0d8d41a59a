"""SIGTERM drains: new requests get a 503 `shutting_down`, running ones finish up to shutdown_timeout, the rest
end with an error event, then the server exits. A non-streamed request whose client left stops generating."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import free_port, start_server, tiny_settings

MODEL = "tiny"


@pytest.fixture()
def slow_steps(monkeypatch):
    """Each decode step takes >= 20 ms, so a request of n tokens runs for n x 20 ms."""
    import millm.engine.rows as worker_module  # sample_and_emit draws through rows.sample

    real = worker_module.sample

    def slow(*args, **kwargs):
        time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "sample", slow)


def _stream(url: str, max_tokens: int, out: list) -> None:
    with httpx.stream("POST", url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": "Hello", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}) as r:
        out.append([ln for ln in r.iter_lines() if ln])


def _full(url: str, max_tokens: int, out: list) -> None:
    out.append(httpx.post(url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": "Hello", "max_tokens": max_tokens, "ignore_eos": True}))


def test_sigterm_lets_running_requests_finish_and_ends_the_rest_with_an_error_event(tmp_path, tiny_model_dir,
                                                                                    slow_steps):
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, served_model_name=MODEL, shutdown_timeout=1.5))
    short_stream: list = []
    full: list = []
    long_stream: list = []
    threads = [threading.Thread(target=_stream, args=(live.url, 30, short_stream)),
               threading.Thread(target=_full, args=(live.url, 30, full)),
               threading.Thread(target=_stream, args=(live.url, 240, long_stream))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while live.runtime.worker.active_sequences < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live.runtime.worker.active_sequences == 3
    signalled = time.monotonic()
    live.server.handle_exit(signal.SIGTERM, None)  # what the signal handler runs
    time.sleep(0.1)
    r = httpx.post(live.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down", r.text
    assert r.headers["Retry-After"]
    h = httpx.get(live.url + "/health", timeout=10)
    assert h.status_code == 503 and h.json()["status"] == "draining"
    for t in threads:
        t.join(60)
    # the short ones finished normally
    assert short_stream[0][-1] == "data: [DONE]"
    assert full[0].status_code == 200 and full[0].json()["choices"][0]["finish_reason"] == "length"
    # the long one was ended at the timeout with an error event (and no [DONE])
    last = long_stream[0][-1]
    assert last.startswith('data: {"error"'), long_stream[0][-3:]
    assert json.loads(last[len("data: "):])["error"]["code"] == "shutting_down"
    assert len(long_stream[0]) > 10  # it was streaming until then
    live.thread.join(timeout=30)
    assert not live.thread.is_alive()
    assert time.monotonic() - signalled < 1.5 + 10


def test_a_non_streamed_request_whose_client_left_stops_generating(tmp_path, tiny_model_dir, slow_steps):
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, served_model_name=MODEL))
    try:
        worker = live.runtime.worker
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(live.url + "/v1/completions", timeout=httpx.Timeout(60, read=0.5),
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 240, "ignore_eos": True})
        deadline = time.monotonic() + 5
        while worker.active_sequences and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.active_sequences == 0  # 240 tokens would take ~5 s; it stopped within a few steps
        steps = worker.steps
        time.sleep(0.3)
        assert worker.steps == steps
    finally:
        live.stop()


def test_sigterm_to_the_millm_process_drains_and_exits_cleanly(tmp_path, tiny_model_dir):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "millm", "serve", "--model", str(tiny_model_dir), "--served-model-name", MODEL,
         "--port", str(port), "--data-dir", str(tmp_path / "data"), "--shutdown-timeout", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "MILLM_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        lines = []
        with httpx.stream("POST", url + "/v1/completions", timeout=60, json={
                "model": MODEL, "prompt": "Hello", "max_tokens": 200, "ignore_eos": True, "stream": True}) as r:
            it = r.iter_lines()
            lines.append(next(it))
            proc.send_signal(signal.SIGTERM)
            lines += [ln for ln in it if ln]
        assert lines[-1] == "data: [DONE]"  # the running stream finished
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "draining" in proc.stdout.read()


def test_the_idle_server_ticks_once_a_second_and_stops_at_once_when_told(tmp_path, tiny_model_dir, monkeypatch):
    from millm.server import DrainingServer

    ticks: list[tuple[float, int]] = []
    on_tick = DrainingServer.on_tick

    async def counted(self, counter: int) -> bool:
        ticks.append((time.monotonic(), counter))
        return await on_tick(self, counter)

    monkeypatch.setattr(DrainingServer, "on_tick", counted)
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, served_model_name=MODEL))
    time.sleep(2.5)
    seen = [t for t in ticks if t[0] > ticks[0][0] + 0.5]  # (after start-up)
    # uvicorn's own loop ticks ten times a second; each of these updates the Date header (every 10th of uvicorn's)
    assert 1 <= len(seen) <= 3 and all(c % 10 == 0 for _, c in seen)
    date = httpx.get(live.url + "/health").headers["date"]
    assert date.endswith(" GMT")
    asked = time.monotonic()
    live.stop()  # should_exit from another thread
    assert not live.thread.is_alive()
    assert ticks[-1][0] - asked < 0.5  # woken at once, not at the next tick
