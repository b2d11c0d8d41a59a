"""POST /api/compare: variants as rows of one batch, equal to solo runs, streamed frames and errors."""

from __future__ import annotations

import json

import httpx
import pytest

from millm.protocol.compare import diverges_at

MODEL = "test-org/tiny"
MSG = [{"role": "user", "content": "Hello world"}]
STEER_A = {"features": [{"index": 5, "strength": 8.0}]}
STEER_B = {"features": [{"index": 77, "strength": -8.0}, {"index": 9, "strength": 3.0}]}


def solo(client, steering):
    extra = {"ignore_eos": True, "steering": steering if steering is not None else {"features": []}}
    r = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=12, temperature=0, logprobs=True,
                                       extra_body=extra)
    return r.choices[0].message.content, r.choices[0].logprobs.content


def frames(server, body):
    with httpx.stream("POST", server.url + "/api/compare", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_greedy_variants_equal_their_solo_runs_token_for_token(server, client):
    body = {"messages": MSG, "variants": [{"label": "plain"}, {"steering": STEER_A}, {"steering": STEER_B}],
            "max_tokens": 12, "temperature": 0, "ignore_eos": True, "stream": False}
    prefills = server.runtime.worker.prefills
    r = httpx.post(server.url + "/api/compare", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert server.runtime.worker.prefills == prefills + 1  # the variants were prefilled together, as one batch
    out = r.json()
    assert [v["index"] for v in out["variants"]] == [0, 1, 2]
    for v, steering in zip(out["variants"], (None, STEER_A, STEER_B), strict=True):
        text, _ = solo(client, steering)
        assert v["text"] == text
        assert v["tokens"] == len(v["token_ids"]) == 12
        assert v["finish_reason"] == "length"
    assert out["variants"][0]["steering"]["source"] == "none"
    assert out["variants"][1]["steering"]["features"][0]["index"] == 5
    assert out["variants"][0]["diverges_at"] is None
    assert out["variants"][1]["diverges_at"] == diverges_at(out["variants"][0]["token_ids"],
                                                            out["variants"][1]["token_ids"])
    assert out["usage"]["completion_tokens"] == 36 and out["usage"]["prompt_tokens"] == 3 * out["prompt_tokens"]


def test_streamed_frames_are_tagged_and_end_with_done_per_variant(server):
    body = {"messages": MSG, "variants": [{}, {"steering": STEER_A}, {}], "max_tokens": 8, "temperature": 0,
            "ignore_eos": True}
    fs = frames(server, body)
    assert fs[0]["type"] == "start" and len(fs[0]["variants"]) == 3
    assert fs[-1]["type"] == "end" and fs[-1]["usage"]["completion_tokens"] == 24
    done = {f["index"]: f for f in fs if f["type"] == "done"}
    assert sorted(done) == [0, 1, 2]
    for i in range(3):
        deltas = [f for f in fs if f["type"] == "delta" and f["variant"] == i]
        assert "".join(d["text"] for d in deltas) == done[i]["text"]
        assert [t for d in deltas for t in d["token_ids"]] == done[i]["token_ids"]
    # A variant identical to variant 0 never diverges; done frames come only after variant 0's.
    assert done[2]["diverges_at"] is None and done[2]["text"] == done[0]["text"]
    order = [f["index"] for f in fs if f["type"] == "done"]
    assert order[0] == 0


def test_same_seed_for_every_variant_when_sampling(server):
    body = {"prompt": "Once upon a time", "variants": [{}, {}], "max_tokens": 10, "temperature": 1.0,
            "ignore_eos": True, "stream": False}
    a = httpx.post(server.url + "/api/compare", json=body, timeout=60).json()
    assert a["variants"][0]["token_ids"] == a["variants"][1]["token_ids"]  # one seed, same steering: same text
    b = httpx.post(server.url + "/api/compare", json={**body, "seed": a["seed"]}, timeout=60).json()
    assert b["variants"][0]["token_ids"] == a["variants"][0]["token_ids"]


def test_divergence_index_on_a_constructed_case():
    assert diverges_at([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert diverges_at([1, 2, 3], [1, 2, 3]) is None
    assert diverges_at([1, 2, 3], [1, 2]) == 2
    assert diverges_at([5], [6]) == 0


def test_divergence_index_through_the_api(server):
    # Steering applied from the start makes a strongly steered variant differ at some token k; the reported index
    # must be exactly the first k where the token ids differ.
    body = {"messages": MSG, "variants": [{}, {"steering": {"features": [{"index": 5, "strength": 2.0}]}},
                                          {"steering": STEER_A}],
            "max_tokens": 12, "temperature": 0, "ignore_eos": True, "stream": False}
    out = httpx.post(server.url + "/api/compare", json=body, timeout=60).json()
    base = out["variants"][0]["token_ids"]
    for v in out["variants"][1:]:
        k = v["diverges_at"]
        if k is None:
            assert v["token_ids"] == base
        else:
            assert v["token_ids"][:k] == base[:k] and v["token_ids"][k] != base[k]
    assert out["variants"][2]["diverges_at"] is not None


@pytest.mark.parametrize(("body", "param"), [
    ({"variants": [{}, {"steering": {"features": [{"index": 10_000, "strength": 1.0}]}}]},
     "variants[1].steering.features[0].index"),
    ({"variants": [{"steering": {"features": [{"index": 1, "strength": 1.0}], "typo": 1}}]},
     "variants[0].steering.typo"),
    ({"variants": [{"steering": {"profile": "no-such-profile"}}]}, "variants[0].steering.profile"),
    ({"variants": [{}] * 9}, "variants[8]"),
    ({"variants": []}, "variants"),
])
def test_bad_variants_are_400s_naming_the_variant(server, body, param):
    r = httpx.post(server.url + "/api/compare", json={"messages": MSG, **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_prompt_or_messages_exactly_one(server):
    r = httpx.post(server.url + "/api/compare", json={"variants": [{}]}, timeout=30)
    assert r.status_code == 400
    r = httpx.post(server.url + "/api/compare", json={"variants": [{}], "prompt": ["a", "b"]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_openapi_declares_compare(server):
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    op = spec["paths"]["/api/compare"]["post"]
    assert op["operationId"] == "compareSteering" and op["tags"] == ["steering"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
