"""Embedding options: pooling (mean, last, cls) and normalize, checked against the model's own hidden states;
an input over the context is a 400 naming its index, never truncated."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = "test-org/tiny"


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def states(text: str) -> torch.Tensor:
        with torch.no_grad():
            out = model(torch.tensor([tok(text).input_ids]), output_hidden_states=True)
        return out.hidden_states[-1][0].float()

    return states


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
@pytest.mark.parametrize("normalize", [True, False])
def test_pooling_and_normalize_match_the_models_hidden_states(client, reference, pooling, normalize):
    texts = ["Hello world", "Once upon a time there was a boat"]
    r = client.embeddings.create(model=MODEL, input=texts, encoding_format="float",
                                 extra_body={"pooling": pooling, "normalize": normalize})
    for text, item in zip(texts, r.data, strict=True):
        h = reference(text)
        want = {"mean": h.mean(0), "last": h[-1], "cls": h[0]}[pooling]
        if normalize:
            want = torch.nn.functional.normalize(want, dim=0)
        got = np.array(item.embedding)
        np.testing.assert_allclose(got, want.numpy(), atol=2e-4, rtol=1e-3)
        if normalize:
            assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-4)
    # base64 (the SDK default) carries the same vectors
    b = client.embeddings.create(model=MODEL, input=texts, extra_body={"pooling": pooling, "normalize": normalize})
    np.testing.assert_allclose(np.array(b.data[1].embedding), np.array(r.data[1].embedding), atol=1e-6)


def test_pooling_choices_differ(client):
    vecs = {p: np.array(client.embeddings.create(model=MODEL, input="Hello world", encoding_format="float",
                                                 extra_body={"pooling": p}).data[0].embedding)
            for p in ("mean", "last", "cls")}
    assert not np.allclose(vecs["mean"], vecs["last"]) and not np.allclose(vecs["last"], vecs["cls"])


def test_an_input_over_the_context_is_a_400_naming_its_index(server):
    long = "Hello world " * 400  # far past the tiny model's 256 positions
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": ["short", long]}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "input[1]"
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": [long]}, timeout=30)
    assert r.json()["error"]["param"] == "input[0]"
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": long}, timeout=30)
    assert r.json()["error"]["param"] == "input"
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "x", "pooling": "max"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "pooling"
