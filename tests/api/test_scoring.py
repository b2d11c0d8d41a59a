"""Chat scoring without sampling: prompt logprobs of a rendered conversation (max_tokens 0 scores only), an open
final assistant message (continue_final_message) to score a given answer, and allowed_token_ids to classify."""

from __future__ import annotations

import math

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = "test-org/tiny"
Q = [{"role": "user", "content": "Hello world"}]


def post(server, **body):
    body.setdefault("model", MODEL)
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)


def test_scoring_a_given_answer_equals_the_models_own_logprobs(server, tiny_model_dir):
    answer = "The quick brown fox"
    conv = Q + [{"role": "assistant", "content": answer}]
    scored = post(server, messages=conv, continue_final_message=True, max_tokens=0, prompt_logprobs=2).json()
    plp = scored["prompt_logprobs"]
    assert scored["usage"]["completion_tokens"] == 0
    assert plp[0] is None and len(plp) == scored["usage"]["prompt_tokens"]
    assert all(len(e["top_logprobs"]) == 2 for e in plp[1:])
    # the same numbers from the model itself, over the template's rendering with one BOS and the answer left open
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    text = tok.apply_chat_template(conv, tokenize=False, continue_final_message=True)
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids.count(tok.bos_token_id) == 1 and len(ids) == len(plp)
    assert text.endswith(answer)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    expected = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    assert [e["logprob"] for e in plp[1:]] == pytest.approx(expected, abs=1e-3)
    assert "".join(e["token"] for e in plp[1:]).endswith(answer)


def test_prompt_logprobs_ride_along_with_generation(server):
    r = post(server, messages=Q, max_tokens=3, temperature=0, prompt_logprobs=0).json()
    assert r["choices"][0]["message"]["content"] is not None
    assert len(r["prompt_logprobs"]) == r["usage"]["prompt_tokens"]
    assert "prompt_logprobs" not in post(server, messages=Q, max_tokens=2).json()


def test_allowed_token_ids_classify(server, tiny_model_dir):
    ids = [10, 20, 30]
    r = post(server, messages=Q, max_tokens=1, temperature=1.0, seed=1, allowed_token_ids=ids, logprobs=True,
             top_logprobs=3).json()
    entry = r["choices"][0]["logprobs"]["content"][0]
    assert sum(math.exp(t["logprob"]) for t in entry["top_logprobs"]) == pytest.approx(1.0, abs=1e-4)
    comp = httpx.post(server.url + "/v1/completions", json={
        "model": MODEL, "prompt": "Hello", "max_tokens": 5, "temperature": 1.0, "seed": 2,
        "allowed_token_ids": ids, "logprobs": 0}, timeout=60).json()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    allowed = {tok.decode([i]) for i in ids}
    drawn = comp["choices"][0]["logprobs"]["tokens"]
    assert len(drawn) == 5 and set(drawn) <= allowed
    assert {t["token"] for t in entry["top_logprobs"]} == allowed


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": 0, "prompt_logprobs": 1, "stream": True}, "stream"),
    ({"allowed_token_ids": [10 ** 7]}, "allowed_token_ids[0]"),
    ({"allowed_token_ids": []}, "allowed_token_ids"),
    ({"prompt_logprobs": 21}, "prompt_logprobs"),
    ({"continue_final_message": True}, "messages"),
])
def test_bad_scoring_requests_are_400s(server, body, param):
    r = post(server, messages=Q, **body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
