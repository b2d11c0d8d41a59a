"""Admission: free batch slots admit before the queue limit applies; what is refused is a 429 with Retry-After,
and every refusal is counted in millm_rejected_requests_total."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.conftest import start_server, tiny_settings
from tests.reliability.test_shutdown import slow_steps  # noqa: F401 - fixture

MODEL = "tiny"


def _rejected(url: str, status: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("millm_rejected_requests_total{") and f'status="{status}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.usefixtures("slow_steps")
def test_a_burst_fills_every_free_slot_and_the_queue_before_429s(tmp_path, tiny_model_dir):
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, served_model_name=MODEL, queue_size=4,
                                      max_batch_size=16))
    try:
        results: list[httpx.Response] = []
        lock = threading.Lock()
        go = threading.Event()

        def one() -> None:
            go.wait()
            r = httpx.post(live.url + "/v1/completions", timeout=120, json={
                "model": MODEL, "prompt": "Hello", "max_tokens": 40, "ignore_eos": True})
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one) for _ in range(40)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(120)
        codes = [r.status_code for r in results]
        assert len(codes) == 40 and set(codes) <= {200, 429}, codes
        # 16 free slots + 4 queue places: at least 20 admitted (more when some finished during the burst)
        assert codes.count(200) >= 20, codes
        refused = [r for r in results if r.status_code == 429]
        assert all(r.headers["Retry-After"] == "1" and r.json()["error"]["code"] == "queue_full" for r in refused)
        assert _rejected(live.url, "429") == len(refused)
    finally:
        live.stop()


def test_rejections_of_every_kind_are_counted(server):
    before = {s: _rejected(server.url, s) for s in ("400", "404", "413")}
    httpx.post(server.url + "/v1/chat/completions", json={"model": "test-org/tiny", "messages": []}, timeout=10)
    httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", "messages": [
        {"role": "user", "content": "x"}]}, timeout=10)
    httpx.post(server.url + "/v1/chat/completions", content=b"x" * (17 * 1024 * 1024), timeout=30,
               headers={"content-type": "application/json"})
    assert _rejected(server.url, "400") == before["400"] + 1
    assert _rejected(server.url, "404") == before["404"] + 1
    assert _rejected(server.url, "413") == before["413"] + 1
