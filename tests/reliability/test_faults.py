"""Faults: running out of memory fails the request it happened to and no other, and the server goes on; a
database that refuses writes is a clean 503 with nothing half-saved. (SIGKILL during writes:
tests/store/test_profiles.py; SIGTERM: test_shutdown.py.)"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch
from sqlalchemy import event

from millm.engine.worker import Worker
from tests.conftest import client_post, start_server, tiny_settings

MODEL = "tiny"


@pytest.fixture()
def live(tmp_path, tiny_model_dir, tiny_sae_dir):
    server = start_server(tiny_settings(tmp_path, tiny_model_dir, tiny_sae_dir, served_model_name=MODEL))
    yield server
    server.stop()


def _stream(url: str, out: list, max_tokens: int = 120) -> None:
    with httpx.stream("POST", url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": "Hi", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}) as r:
        out.append([ln for ln in r.iter_lines() if ln])


def test_oom_in_one_requests_prefill_fails_that_request_only(live, monkeypatch):
    real = Worker.forward

    def forward(self, ids, **kw):
        if ids.shape[1] >= 40:  # the long prompt's prefill
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        time.sleep(0.01)  # (keeps the other stream running meanwhile)
        return real(self, ids, **kw)

    monkeypatch.setattr(Worker, "forward", forward)
    monkeypatch.setattr(Worker, "_lean_decoder", lambda self, lm: None)  # (decode through forward too)
    running: list = []
    t = threading.Thread(target=_stream, args=(live.url, running))
    t.start()
    while live.runtime.worker.active_sequences == 0:
        time.sleep(0.01)
    r = httpx.post(live.url + "/v1/completions", timeout=30,
                   json={"model": MODEL, "prompt": "word " * 60, "max_tokens": 5})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "out_of_memory" and "20.00 GiB" not in r.json()["error"]["message"]
    ok = httpx.post(live.url + "/v1/completions", timeout=30, json={"model": MODEL, "prompt": "Hi", "max_tokens": 3})
    assert ok.status_code == 200
    t.join(60)
    assert running[0][-1] == "data: [DONE]"  # the stream that was running finished untouched
    assert httpx.get(live.url + "/health", timeout=10).status_code == 200


def test_oom_in_a_decode_step_ends_that_batch_and_serving_goes_on(live, monkeypatch):
    real = Worker.forward
    state = {"armed": True}

    def forward(self, ids, **kw):
        if ids.shape[1] == 1 and self.steps >= 5 and state["armed"]:
            state["armed"] = False
            raise torch.OutOfMemoryError("out of memory")
        return real(self, ids, **kw)

    monkeypatch.setattr(Worker, "forward", forward)
    monkeypatch.setattr(Worker, "_lean_decoder", lambda self, lm: None)
    out: list = []
    _stream(live.url, out)
    last = json.loads(out[0][-1][len("data: "):])
    assert last["error"]["code"] == "out_of_memory"
    worker = live.runtime.worker
    assert worker.active_sequences == 0 and worker._cache is None  # the batch's KV cache was let go
    r = httpx.post(live.url + "/v1/completions", timeout=30, json={"model": MODEL, "prompt": "Hi", "max_tokens": 3})
    assert r.status_code == 200


def _doc(*names: str) -> dict:
    return {"format": "millm.profiles", "format_version": 1, "profiles": [
        {"name": n, "model": MODEL, "sae": {"id": "x", "hook_name": "blocks.1.hook_resid_post", "layer": 1, "d_sae": 256},
         "features": [{"index": 1, "strength": 2.0}]}
        for n in names]}


def test_a_database_that_refuses_writes_fails_cleanly_and_saves_nothing(live):
    engine = live.runtime.db.engine

    def read_only(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(engine, "connect", read_only)
    engine.dispose()  # (new connections get the pragma)
    try:
        r = httpx.post(live.url + "/api/profiles", timeout=10, json=_doc("one")["profiles"][0])
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "storage_error" and "INSERT" not in err["message"] and "/" not in err["message"]
        r = client_post(live.url + "/api/profiles/import", content=json.dumps(_doc("a", "b", "c")), timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_error"
        # (the store reads in BEGIN IMMEDIATE transactions too, so reads are refused the same clean way)
        assert httpx.get(live.url + "/api/profiles", timeout=10).status_code in (200, 503)
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()
    names = [p["name"] for p in httpx.get(live.url + "/api/profiles", timeout=10).json()["data"]]
    assert not {"one", "a", "b", "c"} & set(names)  # nothing half-saved
    r = client_post(live.url + "/api/profiles/import", content=json.dumps(_doc("a", "b")), timeout=10)
    assert r.status_code == 201, r.text
