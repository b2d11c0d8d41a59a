"""Steering receipts: the canonical hash in header and body, the final receipt of streams, the intensity dial."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.conftest import client_post

MODEL = "test-org/tiny"
HOOK = "blocks.1.hook_resid_post"
MSG = [{"role": "user", "content": "Hello world"}]
FEATS = [{"index": 5, "strength": 8.0}, {"index": 9, "strength": -2.5}]


def chat(client, steering=None, **kw):
    extra = {"ignore_eos": True}
    if steering is not None:
        extra["steering"] = steering
    kw.setdefault("max_tokens", 6)
    return client.chat.completions.with_raw_response.create(model=MODEL, messages=MSG, temperature=0,
                                                            extra_body=extra, **kw)


def body_receipt(raw):
    return raw.parse().model_extra["millm"]["steering"]


@pytest.fixture(autouse=True)
def _clean(server):
    httpx.delete(server.url + "/api/steering")
    yield
    httpx.delete(server.url + "/api/steering")
    for p in httpx.get(server.url + "/api/profiles").json()["data"]:
        httpx.delete(f"{server.url}/api/profiles/{p['name']}")


def test_same_steering_from_request_profile_and_server_has_one_hash(server, client):
    by_request = chat(client, {"features": FEATS})
    digest = by_request.headers["X-MiLLM-Steering-Hash"]
    assert len(digest) == 64 and body_receipt(by_request)["hash"] == digest
    r = httpx.post(server.url + "/api/profiles", json={
        "name": "hashy", "model": MODEL, "sae": {"id": "sae", "hook_name": HOOK, "layer": 1, "d_sae": 256},
        "features": [{**f, "label": "a label"} for f in reversed(FEATS)]})
    assert r.status_code == 201, r.text
    by_profile = chat(client, {"profile": "hashy"})
    by_model = client.chat.completions.with_raw_response.create(
        model=MODEL + "+hashy", messages=MSG, temperature=0, max_tokens=6, extra_body={"ignore_eos": True})
    assert httpx.put(server.url + "/api/steering", json={"features": FEATS}).status_code == 200
    by_server = chat(client)
    sources = [body_receipt(x)["source"] for x in (by_request, by_profile, by_model, by_server)]
    assert sources == ["request", "profile", "model", "server"]
    for raw in (by_profile, by_model, by_server):
        assert raw.headers["X-MiLLM-Steering-Hash"] == digest == body_receipt(raw)["hash"]
        assert raw.parse().choices[0].message.content == by_request.parse().choices[0].message.content
    other = chat(client, {"features": [FEATS[0], {"index": 9, "strength": -2.25}]})
    assert other.headers["X-MiLLM-Steering-Hash"] != digest
    plain = chat(client, {"features": []})
    assert "X-MiLLM-Steering-Hash" not in plain.headers and body_receipt(plain)["hash"] is None


def test_receipt_recomputes_from_its_own_fields(client):
    from millm.services.steering_hash import canonical_form, steering_hash

    rec = body_receipt(chat(client, {"features": FEATS, "normalize": True, "steer_special_tokens": False}))
    canonical = canonical_form(sae=rec["sae"], d_sae=rec["d_sae"], hook_name=rec["hook_name"], layer=rec["layer"],
                               mode=rec["mode"], normalize=rec["normalize"],
                               steer_special_tokens=rec["steer_special_tokens"],
                               features=[(f["index"], f["strength"]) for f in rec["features"]])
    assert steering_hash(canonical) == rec["hash"]
    assert (rec["sae"], rec["d_sae"], rec["layer"], rec["hook_name"]) == ("sae", 256, 1, HOOK)


def test_streams_end_with_a_chunk_carrying_the_full_receipt(server):
    for include_usage in (False, True):
        body = {"model": MODEL, "messages": MSG, "max_tokens": 5, "stream": True, "n": 2,
                "stream_options": {"include_usage": include_usage}, "steering": {"features": FEATS}}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
            digest = r.headers["X-MiLLM-Steering-Hash"]
            lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(x) for x in lines[:-1]]
        final = [c for c in chunks if c.get("millm") and c["millm"]["steering"].get("server_steering_changed")
                 is not None]
        assert [chunks.index(c) for c in final] == [len(chunks) - 1]
        assert final[0]["millm"]["steering"]["hash"] == digest
        assert final[0]["millm"]["steering"]["server_steering_changed"] is False
        if include_usage:
            assert final[0]["usage"] is not None and final[0]["choices"] == []
        else:
            assert final[0]["choices"][0]["finish_reason"] == "length"
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "stream": True, "steering": {"features": FEATS}}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        chunks = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
    assert chunks[-1]["millm"]["steering"]["hash"] == r.headers["X-MiLLM-Steering-Hash"]


def test_receipt_says_when_server_steering_changed_during_the_request(server):
    body = {"model": MODEL, "messages": MSG, "max_tokens": 200, "stream": True, "ignore_eos": True}
    httpx.put(server.url + "/api/steering", json={"features": FEATS})
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = next(ln for ln in lines if ln.startswith("data: "))
        assert json.loads(first[6:])["millm"]["steering"]["source"] == "server"
        changed = threading.Event()

        def change() -> None:
            httpx.put(server.url + "/api/steering", json={"features": [{"index": 1, "strength": 1.0}]})
            changed.set()

        threading.Thread(target=change).start()
        assert changed.wait(30)
        rest = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]
    final = rest[-1]["millm"]["steering"]
    assert final["server_steering_changed"] is True
    assert final["features"] == [{"index": 5, "strength": 8.0, "raw_strength": None, "label": None},
                                 {"index": 9, "strength": -2.5, "raw_strength": None, "label": None}]
    r = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
    assert r.json()["millm"]["steering"]["server_steering_changed"] is False


def test_scale_zero_is_bit_identical_to_unsteered(client):
    plain = chat(client, {"features": []}, logprobs=True, top_logprobs=3, max_tokens=8).parse()
    off = chat(client, {"features": FEATS, "scale": 0}, logprobs=True, top_logprobs=3, max_tokens=8).parse()
    assert off.choices[0].message.content == plain.choices[0].message.content
    assert off.choices[0].logprobs.model_dump() == plain.choices[0].logprobs.model_dump()  # every float equal
    rec = off.model_extra["millm"]["steering"]
    assert rec["scale"] == 0 and rec["hash"] is None
    assert [(f["strength"], f["raw_strength"]) for f in rec["features"]] == [(0.0, 8.0), (-0.0, -2.5)]


def test_scale_multiplies_request_profile_and_server_steering(server, client):
    half = [{"index": 5, "strength": 4.0}, {"index": 9, "strength": -1.25}]
    want = chat(client, {"features": half})
    digest = want.headers["X-MiLLM-Steering-Hash"]
    r = httpx.post(server.url + "/api/profiles", json={
        "name": "dial", "model": MODEL, "sae": {"id": "sae", "hook_name": HOOK, "layer": 1, "d_sae": 256},
        "features": FEATS, "scale": 0.5, "scale_min": 0.25, "scale_max": 2})
    assert r.status_code == 201, r.text
    assert r.json()["scale"] == 0.5
    by_request = chat(client, {"features": FEATS, "scale": 0.5})
    by_profile_default = chat(client, {"profile": "dial"})
    httpx.put(server.url + "/api/steering", json={"features": FEATS})
    by_server = chat(client, {"scale": 0.5})
    for raw in (by_request, by_profile_default, by_server):
        rec = body_receipt(raw)
        assert rec["scale"] == 0.5 and rec["hash"] == digest
        assert [f["raw_strength"] for f in rec["features"]] == [8.0, -2.5]
        assert raw.parse().choices[0].message.content == want.parse().choices[0].message.content
    # A request's scale must stay in the profile's range; without a profile, in [0, MILLM_STEERING_MAX_SCALE].
    for steering in ({"profile": "dial", "scale": 3}, {"profile": "dial", "scale": 0.1},
                     {"features": FEATS, "scale": 11}):
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSG, "max_tokens": 2,
                                                                   "steering": steering})
        assert r.status_code == 400 and r.json()["error"]["param"] == "steering.scale", r.text
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSG, "max_tokens": 2,
                                                               "steering": {"features": FEATS, "scale": -1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steering.scale"
    # Activating the profile makes its default scale the server-wide one.
    assert client_post(server.url + "/api/profiles/dial/activate").json()["scale"] == 0.5
    assert httpx.get(server.url + "/api/steering").json()["scale"] == 0.5
    assert chat(client).headers["X-MiLLM-Steering-Hash"] == digest
    r = httpx.post(server.url + "/api/profiles", json={
        "name": "bad", "model": MODEL, "sae": {"id": "sae", "hook_name": HOOK, "layer": 1, "d_sae": 256},
        "features": FEATS, "scale": 3, "scale_max": 2})
    assert r.status_code == 400, r.text
    exported = httpx.get(server.url + "/api/profiles/dial/export").json()
    assert (exported["scale"], exported["scale_min"], exported["scale_max"]) == (0.5, 0.25, 2.0)


def test_ignored_fields_header_and_strict_mode(server, client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MSG, max_tokens=2, user="me", extra_body={"frobnicate": 1, "store": True})
    assert raw.headers["X-MiLLM-Ignored-Fields"] == "user, frobnicate, store"
    assert "X-MiLLM-Ignored-Fields" not in chat(client).headers
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, extra_body={"frobnicate": 1},
                                       extra_headers={"X-MiLLM-Strict": "true"})
    assert (e.value.body["param"], e.value.body["code"]) == ("frobnicate", "unsupported_field")
    ok = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSG, max_tokens=2,
                                                          extra_headers={"X-MiLLM-Strict": "true"})
    assert ok.http_response.status_code == 200
    r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2,
                                                         "stream": True, "bogus": 1})
    assert r.headers["X-MiLLM-Ignored-Fields"] == "bogus"
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "Hi", "user": "me"},
                   headers={"X-MiLLM-Strict": "1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "user"
