"""/v1/completions and /v1/embeddings and /v1/models through the openai SDK."""

from __future__ import annotations

import base64

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
    assert 'millm_requests_total{endpoint="completions",outcome="ok"}' in text
    assert "millm_queue_depth" in text
    assert "millm_completion_tokens_total" in text
    assert "millm_time_to_first_token_seconds_bucket" in text
