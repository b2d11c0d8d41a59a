"""/v1/completions and /v1/embeddings and /v1/models through the openai SDK."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest

MODEL = "test-org/tiny"


def test_prompt_shapes(client):
    one = client.completions.create(model=MODEL, prompt="Hello world", temperature=0, max_tokens=5)
    assert len(one.choices) == 1
    many = client.completions.create(model=MODEL, prompt=["Hello world", "The stars"], temperature=0, max_tokens=5)
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == one.choices[0].text
    ids = client.completions.create(model=MODEL, prompt=[0, 263, 285, 85], temperature=0, max_tokens=5)
    assert ids.usage.prompt_tokens == 4
    nested = client.completions.create(model=MODEL, prompt=[[0, 263], [0, 285, 85]], temperature=0, max_tokens=5)
    assert len(nested.choices) == 2
    assert nested.usage.prompt_tokens == 5


def test_max_tokens_defaults_to_16(client):
    r = client.completions.create(model=MODEL, prompt="Hello", temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16
    assert r.choices[0].finish_reason == "length"


def test_echo_and_integer_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="Hello world", temperature=0, max_tokens=4, echo=True,
                                  logprobs=2, extra_body={"ignore_eos": True})
    plain = client.completions.create(model=MODEL, prompt="Hello world", temperature=0, max_tokens=4,
                                      extra_body={"ignore_eos": True})
    assert r.choices[0].text == "Hello world" + plain.choices[0].text
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.prompt_tokens + 4
    assert lp.token_logprobs[0] is None  # the first prompt token has no context
    assert all(len(t) <= 2 for t in lp.top_logprobs if t)
    assert lp.text_offset == sorted(lp.text_offset)


def test_streamed_completion(client):
    full = client.completions.create(model=MODEL, prompt="Hello", temperature=0, max_tokens=8).choices[0].text
    parts = list(client.completions.create(model=MODEL, prompt="Hello", temperature=0, max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in parts) == full
    assert parts[-1].choices[0].finish_reason in ("stop", "length")


def _stream_chunks(url: str, seed: int, max_tokens: int, stop_after: int | None = None) -> list[dict]:
    chunks: list[dict] = []
    with httpx.stream("POST", url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": "Hello", "max_tokens": max_tokens, "seed": seed, "ignore_eos": True,
            "stream": True}) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]) if line != "data: [DONE]" else {"done": True})
            if stop_after is not None and len(chunks) >= stop_after:
                break  # leaving the block closes the connection mid-stream
    return chunks


def test_concurrent_streams_arrive_whole_and_a_disconnect_cancels_only_its_own(server):
    # Several rows per decode step: their events reach the loop together, each stream still in order.
    worker = server.runtime.worker
    seeds = (1, 2, 3)
    solo = {s: _stream_chunks(server.url, s, 24) for s in seeds}
    results: dict[int, list[dict]] = {}

    def run(seed: int) -> None:
        results[seed] = _stream_chunks(server.url, seed, 24)

    steps_before = worker.steps
    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    dropped = _stream_chunks(server.url, 9, 240, stop_after=3)
    for t in threads:
        t.join(60)
    deadline = time.monotonic() + 5
    while worker.active_sequences and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.active_sequences == 0
    assert worker.steps - steps_before < 150  # the dropped request's 240 steps did not all run
    assert len(dropped) == 3
    for s in seeds:
        got = results[s]
        assert got[-1] == {"done": True}
        assert len(got) == 24 + 1  # one chunk per token, then [DONE]
        assert [c["choices"][0]["finish_reason"] for c in got[:-1]] == [None] * 23 + ["length"]
        assert "".join(c["choices"][0]["text"] for c in got[:-1]) == "".join(
            c["choices"][0]["text"] for c in solo[s][:-1])


def test_embeddings_float_and_base64(client, server):
    f = client.embeddings.create(model=MODEL, input=["hello", "world"], encoding_format="float")
    vec = np.array(f.data[0].embedding)
    assert vec.shape == (64,)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    # The SDK asks for base64 by default and decodes it as little-endian float32.
    b = client.embeddings.create(model=MODEL, input=["hello", "world"])
    assert np.allclose(np.array(b.data[0].embedding), vec, atol=1e-6)
    raw = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "hello",
                                                          "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vec, atol=1e-6)
    assert not np.allclose(np.array(f.data[1].embedding), vec)


def test_embeddings_dimensions_and_empty_input_rejected(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input="hello", dimensions=8)
    assert e.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input="")
    assert e.value.body["param"] == "input"


def test_models_list_and_retrieve_with_slash(client, server):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).id == MODEL  # the SDK percent-encodes '/'
    raw = httpx.get(server.url + "/v1/models/" + MODEL)  # older clients send it raw
    assert raw.status_code == 200 and raw.json()["id"] == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("org/none")


def test_health_and_metrics(client, server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=2)
    text = httpx.get(server.url + "/metrics").text
    assert f'millm_requests_total{{endpoint="completions",model="{MODEL}",outcome="ok"}}' in text
    assert "millm_queue_depth" in text
    assert f'millm_completion_tokens_total{{model="{MODEL}"}}' in text
    assert "millm_time_to_first_token_seconds_bucket" in text
    # steering source, inter-token latency, downloads, the standard collectors, no _created series
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=3,
                              extra_body={"steering": {"features": [{"index": 1, "strength": 1.0}]}})
    text = httpx.get(server.url + "/metrics").text
    assert f'millm_steered_requests_total{{model="{MODEL}",source="request"}} 1.0' in text
    assert f'millm_steered_requests_total{{model="{MODEL}",source="none"}}' in text
    assert f'millm_inter_token_latency_seconds_count{{endpoint="completions",model="{MODEL}"}}' in text
    assert "# TYPE millm_download_jobs gauge" in text
    for standard in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info",
                     "python_gc_collections_total"):
        assert standard in text, standard
    assert "_created" not in text


def test_event_stream_still_fits_sse_starlettes_response():
    from sse_starlette import EventSourceResponse

    from millm.api.sse import EventStream

    # EventStream serves streams itself but reads these attributes of sse-starlette's response; if an upgrade renames
    # one, the lean path must fail loudly here rather than mis-serve.
    stream = EventStream(iter(()), sep="\n", ping=15)
    assert isinstance(stream, EventSourceResponse)
    for name in ("_ping_interval", "active", "send_timeout", "ping_message_factory", "data_sender_callable",
                 "client_close_handler_callable", "_shutdown_event", "raw_headers", "sep"):
        assert hasattr(stream, name), name
