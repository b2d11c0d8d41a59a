"""The Files and Batch APIs through the openai SDK: upload, create, poll, download; a bad line fails alone;
each line's steering applies and is echoed; greedy results equal the same requests sent live; cancel; list and
delete; progress in /metrics and the event stream; and a SIGKILL mid-batch resumes with no line lost or doubled."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port

MODEL = "test-org/tiny"


def chat_line(cid: str, content: str, **body) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8,
                     "temperature": 0, **body}}


def jsonl(lines: list) -> bytes:
    return "\n".join(ln if isinstance(ln, str) else json.dumps(ln) for ln in lines).encode() + b"\n"


def wait_done(client, bid: str, timeout: float = 120) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(bid)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {bid} did not end: {batch}")


def read_lines(client, fid: str | None) -> list[dict]:
    if fid is None:
        return []
    return [json.loads(x) for x in client.files.content(fid).text.splitlines() if x.strip()]


def test_upload_create_poll_download_with_the_sdk(client, server):
    steer = {"features": [{"index": 5, "strength": 8.0}]}
    lines = [chat_line("plain", "Hello world"), chat_line("steered", "Hello world", steering=steer),
             chat_line("other", "Once upon a time"),
             "{this is not json",
             chat_line("bad-temp", "x", temperature=5),
             chat_line("plain", "duplicate id"),
             {**chat_line("wrong-url", "x"), "url": "/v1/embeddings"},
             chat_line("no-model", "x", model="nope")]
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0 and f.filename == "in.jsonl"
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "t1"})
    assert batch.status in ("validating", "in_progress")
    batch = wait_done(client, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 8
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 5)
    assert batch.metadata == {"run": "t1"}
    out = {o["custom_id"]: o for o in read_lines(client, batch.output_file_id)}
    assert set(out) == {"plain", "steered", "other"}
    for cid, line in out.items():
        assert line["response"]["status_code"] == 200 and line["error"] is None
        body = dict(next(ln for ln in lines if isinstance(ln, dict) and ln["custom_id"] == cid)["body"])
        extra = {"steering": body.pop("steering")} if "steering" in body else None
        live = client.chat.completions.create(**body, extra_body=extra)
        assert line["response"]["body"]["choices"][0]["message"]["content"] == live.choices[0].message.content
    receipt = out["steered"]["response"]["body"]["millm"]["steering"]
    assert receipt["source"] == "request"
    assert [(f["index"], f["strength"]) for f in receipt["features"]] == [(5, 8.0)]
    assert out["plain"]["response"]["body"]["millm"]["steering"]["source"] != "request"
    assert (out["steered"]["response"]["body"]["choices"][0]["message"]["content"]
            != out["plain"]["response"]["body"]["choices"][0]["message"]["content"])
    errors = read_lines(client, batch.error_file_id)
    assert len(errors) == 5
    by_code = {(e["error"] or {}).get("code") or e["response"]["body"]["error"]["code"]: e for e in errors}
    assert {"invalid_json", "invalid_request", "duplicate_custom_id", "mismatched_url"} <= set(by_code)
    assert "line 5" in by_code["invalid_request"]["error"]["message"]
    assert "temperature" in by_code["invalid_request"]["error"]["message"]
    model_err = next(e for e in errors if e["custom_id"] == "no-model")
    assert model_err["response"]["status_code"] == 404
    # the files are listed, retrievable and deletable
    ids = {x.id for x in client.files.list().data}
    assert {f.id, batch.output_file_id, batch.error_file_id} <= ids
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert batch.id in {x.id for x in client.batches.list().data}
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError) as e:
        client.files.retrieve(f.id)
    assert e.value.body["param"] == "file_id"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'millm_batch_lines_total{outcome="completed"}' in metrics
    assert 'millm_batches{status="completed"}' in metrics


def test_more_lines_than_rows_of_different_lengths_each_equal_their_live_run(client, server):
    # more lines than the rows they may hold and the queue places behind them, finishing at different steps, so
    # rows are refilled one at a time mid-batch; half of them steered
    lines = [{"custom_id": f"m{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": f"Line {i} says", "max_tokens": 3 + (i * 5) % 11, "temperature": 0,
                       "ignore_eos": True, **({"steering": {"features": [{"index": i, "strength": 6.0}]}} if i % 2 else {})}}
             for i in range(3 * server.runtime.worker.max_batch_size)]
    f = client.files.create(file=("m.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = wait_done(client, client.batches.create(input_file_id=f.id, endpoint="/v1/completions",
                                                    completion_window="24h").id)
    assert (batch.status, batch.request_counts.completed, batch.request_counts.failed) == ("completed", len(lines), 0)
    out = {o["custom_id"]: o["response"]["body"] for o in read_lines(client, batch.output_file_id)}
    assert sorted(out) == sorted(ln["custom_id"] for ln in lines)
    for ln in lines:
        live = httpx.post(server.url + "/v1/completions", json=ln["body"], timeout=60).json()
        got = out[ln["custom_id"]]
        assert got["choices"][0]["text"] == live["choices"][0]["text"], ln["custom_id"]
        assert got["usage"]["completion_tokens"] == ln["body"]["max_tokens"]


def test_an_embeddings_batch_equals_live_embeddings(client, server):
    inputs = ["Hello world", "Once upon a time", "The stars"]
    lines = [{"custom_id": f"v{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": text}}
             for i, text in enumerate(inputs)]
    f = client.files.create(file=("v.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = wait_done(client, client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                                                    completion_window="24h").id)
    assert (batch.status, batch.request_counts.completed) == ("completed", 3)
    out = {o["custom_id"]: o["response"]["body"]["data"][0]["embedding"] for o in read_lines(client, batch.output_file_id)}
    for i, text in enumerate(inputs):
        live = client.embeddings.create(model=MODEL, input=text).data[0].embedding
        assert out[f"v{i}"] == pytest.approx(live, abs=1e-6)


def test_cancel_stops_promptly(client):
    lines = [chat_line(f"c{i}", "Hello world", max_tokens=200, ignore_eos=True) for i in range(40)]
    f = client.files.create(file=("c.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    time.sleep(0.3)
    t0 = time.monotonic()
    cancelled = client.batches.cancel(batch.id)
    assert time.monotonic() - t0 < 5
    assert cancelled.status == "cancelled"
    assert cancelled.request_counts.completed + cancelled.request_counts.failed < 40
    done = read_lines(client, cancelled.output_file_id)
    assert len(done) == cancelled.request_counts.completed
    with pytest.raises(openai.ConflictError):  # an ended batch cannot be cancelled
        client.batches.cancel(wait_done(client, _finished(client)).id)


def _finished(client) -> str:
    f = client.files.create(file=("d.jsonl", io.BytesIO(jsonl([chat_line("one", "Hi")]))), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id


def test_bad_uploads_and_ids_are_4xx(server):
    url = server.url + "/v1/files"
    auth = {"Authorization": "Bearer x"}  # (a multipart POST needs it, as SDKs send it: cross-site protection)
    r = httpx.post(url, files={"file": ("x.jsonl", b'{"a": 1}\n')}, data={"purpose": "fine-tune"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(url, files={"file": ("x.jsonl", b"\xff\xfe bad")}, data={"purpose": "batch"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(url, files={"file": ("x.jsonl", b"\n\n")}, data={"purpose": "batch"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    for path in ("/v1/files/file-nope", "/v1/files/..%2F..%2Fetc%2Fpasswd", "/v1/files/file-x/content", "/v1/batches/batch_nope"):
        r = httpx.get(server.url + path)
        assert r.status_code == 404, path
    r = httpx.post(server.url + "/v1/batches", json={"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                                                      "completion_window": "24h"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "file_id"
    r = httpx.post(server.url + "/v1/batches", json={"input_file_id": "file-x", "endpoint": "/v1/moderations",
                                                      "completion_window": "24h"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "endpoint"


def test_event_stream_shows_progress_until_the_end(client, server):
    lines = [chat_line(f"e{i}", "Hello", max_tokens=4) for i in range(6)]
    f = client.files.create(file=("e.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    seen = []
    with httpx.stream("GET", f"{server.url}/v1/batches/{batch.id}/events", timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for ln in r.iter_lines():
            if ln.startswith("data: "):
                seen.append(json.loads(ln[6:]))
    assert seen[-1]["status"] == "completed" and seen[-1]["request_counts"]["completed"] == 6
    counts = [s["request_counts"]["completed"] for s in seen]
    assert counts == sorted(counts)


def _serve(model_dir: Path, data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MILLM_MODEL": str(model_dir), "MILLM_PORT": str(port), "MILLM_DATA_DIR": str(data_dir),
           "MILLM_SERVED_MODEL_NAME": MODEL, "MILLM_MAX_BATCH_SIZE": "4"}
    proc = subprocess.Popen([sys.executable, "-m", "millm", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_resumes_without_duplicates_or_gaps(tiny_model_dir, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    proc = _serve(tiny_model_dir, data, port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
    n = 60
    # 160 tokens a line, 4 rows at a time: a few seconds of work, so the kill lands mid-batch (with 24 tokens the whole
    # batch could finish inside the half second between two saves of its counts, and `before < n` failed)
    lines = [chat_line(f"k{i}", f"Hello {i}", max_tokens=160, ignore_eos=True) for i in range(n)]
    try:
        f = client.files.create(file=("k.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = sum(1 for _ in (data / "batch" / "files" / f"{batch.output_file_id}.jsonl").open())
        assert 0 < before < n
        proc = _serve(tiny_model_dir, data, port)
        done = wait_done(client, batch.id)
        assert done.status == "completed"
        assert done.request_counts.completed == n and done.request_counts.failed == 0
        ids = [o["custom_id"] for o in read_lines(client, done.output_file_id)]
        assert sorted(ids) == sorted(f"k{i}" for i in range(n))  # each line once: none doubled, none missing
    finally:
        proc.kill()
        proc.wait(10)
