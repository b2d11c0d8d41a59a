"""When the configured model cannot load, /v1 says why and does not ask to be retried; with exit_on_load_failure
the server refuses to start instead (for scripted use)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.conftest import free_port, start_server, tiny_settings


def test_v1_names_the_cause_and_asks_for_no_retry(tmp_path, tiny_model_dir):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    live = start_server(tiny_settings(tmp_path, tmp_path / "broken"), wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while live.runtime.status == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        for path, body in (("/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
                           ("/v1/completions", {"model": "x", "prompt": "hi"}),
                           ("/v1/embeddings", {"model": "x", "input": "hi"})):
            r = httpx.post(live.url + path, json=body, timeout=10)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "model_load_failed"
            assert "config.json" in err["message"] and "/api/models/load" in err["message"]
            assert r.headers["x-should-retry"] == "false" and "retry-after" not in r.headers
        # the SDK gives up at once instead of retrying a load that will never happen
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=3, timeout=10)
        t = time.monotonic()
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model="x", prompt="hi")
        assert time.monotonic() - t < 2
        # loading a model through the API recovers
        r = httpx.post(live.url + "/api/models/load", json={"model": str(tiny_model_dir)}, timeout=60)
        assert r.status_code == 200, r.text
        name = r.json()["model"]["id"]
        assert httpx.post(live.url + "/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 1},
                          timeout=30).status_code == 200
    finally:
        live.stop()


def test_exit_on_load_failure_refuses_to_start(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "millm", "serve", "--model", str(tmp_path / "no-such-model"), "--exit-on-load-failure",
         "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode != 0
    assert "start-up load failed" in proc.stderr and "no-such-model" in proc.stderr
