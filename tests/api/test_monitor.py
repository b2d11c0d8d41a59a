"""Activation monitoring: WebSocket frames per token, history, stats, pause, export."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import httpx
import pytest
import websockets

from tests.conftest import client_post

MODEL = "test-org/tiny"


@pytest.fixture(autouse=True)
def _monitor(server):
    httpx.delete(server.url + "/api/monitor/history")
    httpx.put(server.url + "/api/monitor/config", json={"enabled": True, "features": None, "top_k": 4})
    yield
    httpx.put(server.url + "/api/monitor/config", json={"enabled": False})
    client_post(server.url + "/api/monitor/resume")


async def _stream_and_collect(url: str, body: dict) -> tuple[list[dict], list[str]]:
    ws_url = url.replace("http://", "ws://") + "/ws/monitor"
    frames: list[dict] = []
    async with websockets.connect(ws_url) as ws:
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", url + "/v1/completions", json=body) as resp:
                chunks = [ln async for ln in resp.aiter_lines() if ln.startswith("data: {")]
        while True:
            try:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0)))
            except TimeoutError:
                break
    return frames, chunks


def test_websocket_sends_one_frame_per_token(server):
    body = {"model": MODEL, "prompt": "Hello world", "max_tokens": 8, "ignore_eos": True, "stream": True,
            "temperature": 0}
    frames, chunks = asyncio.run(_stream_and_collect(server.url, body))
    prompt = [f for f in frames if f["phase"] == "prompt"]
    generated = [f for f in frames if f["phase"] == "generated"]
    assert len({f["request_id"] for f in frames}) == 1
    # Every prompt token but BOS, and every generated token that was fed back (all but the last).
    assert [f["position"] for f in prompt] == list(range(1, len(prompt) + 1))
    assert len(generated) == 8 - 1
    assert [f["position"] for f in generated] == list(range(len(prompt) + 1, len(prompt) + 8))
    assert all(len(f["activations"]) == 4 for f in frames)
    assert len(chunks) == 8


def test_history_stats_export_and_selected_features(server, client):
    httpx.put(server.url + "/api/monitor/config", json={"features": [3, 17, 200]})
    r = client.completions.with_raw_response.create(model=MODEL, prompt="Hello world", max_tokens=5,
                                                    temperature=0)
    hist = httpx.get(server.url + "/api/monitor/history").json()
    assert hist["count"] == 1
    h = hist["data"][0]
    assert all([a["index"] for a in f["activations"]] == [3, 17, 200] for f in h["frames"])
    by_feature = {s["index"]: s for s in h["stats"]}
    values_3 = [f["activations"][0]["value"] for f in h["frames"]]
    assert by_feature[3]["count"] == len(values_3)
    assert by_feature[3]["max"] == pytest.approx(max(values_3))
    assert by_feature[3]["mean"] == pytest.approx(sum(values_3) / len(values_3))
    stats = httpx.get(server.url + "/api/monitor/stats").json()
    assert stats["tokens"] == len(h["frames"])
    jsonl = httpx.get(server.url + "/api/monitor/export", params={"format": "jsonl"}).text.strip().splitlines()
    assert len(jsonl) == len(h["frames"])
    rows = list(csv.DictReader(io.StringIO(httpx.get(server.url + "/api/monitor/export",
                                                     params={"format": "csv"}).text)))
    assert len(rows) == 3 * len(h["frames"])
    assert r.http_response.status_code == 200


def test_pause_stops_recording_and_bad_config_is_400(server, client):
    client_post(server.url + "/api/monitor/pause")
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=3)
    assert httpx.get(server.url + "/api/monitor/history").json()["count"] == 0
    client_post(server.url + "/api/monitor/resume")
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=3)
    assert httpx.get(server.url + "/api/monitor/history").json()["count"] == 1
    r = httpx.put(server.url + "/api/monitor/config", json={"features": [3, 999999]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "features[1]"
    r = httpx.put(server.url + "/api/monitor/config", json={"features": [3, 4, 3]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "features"
    assert "appear once" in r.json()["error"]["message"]
    r = httpx.put(server.url + "/api/monitor/config", json={"top_k": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_k"


def test_embeddings_are_monitored(server, client):
    client.embeddings.create(model=MODEL, input="Hello world")
    hist = httpx.get(server.url + "/api/monitor/history").json()["data"]
    assert hist and all(f["phase"] == "embedding" for f in hist[0]["frames"])
