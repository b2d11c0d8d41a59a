"""Steering through the openai SDK (extra_body) and the /api/steering, /api/saes endpoints."""

from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import openai
import pytest

from tests.conftest import client_post

MODEL = "test-org/tiny"
MSG = [{"role": "user", "content": "Hello world"}]
STEER_A = {"features": [{"index": 5, "strength": 8.0}]}
STEER_B = {"features": [{"index": 77, "strength": -8.0}, {"index": 9, "strength": 3.0}], "mode": "add"}


def complete(client, steering=None, **kw):
    extra = {"ignore_eos": True}
    if steering is not None:
        extra["steering"] = steering
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MSG, max_tokens=16, temperature=0, extra_body=extra, **kw)


@pytest.fixture(autouse=True)
def _clean(server):
    httpx.delete(server.url + "/api/steering")
    yield
    httpx.delete(server.url + "/api/steering")
    client_post(server.url + "/api/steering/enable")


def test_request_steering_changes_output_and_is_reported(client):
    plain = complete(client)
    steered = complete(client, STEER_A)
    assert steered.parse().choices[0].message.content != plain.parse().choices[0].message.content
    receipt = json.loads(steered.headers["X-MiLLM-Steering"])
    assert receipt["source"] == "request"
    assert receipt["features"] == [{"index": 5, "strength": 8.0}]
    assert steered.parse().model_extra["millm"]["steering"]["hook_name"] == "blocks.1.hook_resid_post"
    assert json.loads(plain.headers["X-MiLLM-Steering"])["source"] == "none"


def test_concurrent_requests_with_different_steering_do_not_leak(client):
    solo_a = complete(client, STEER_A).parse().choices[0].message.content
    solo_b = complete(client, STEER_B).parse().choices[0].message.content
    solo_none = complete(client).parse().choices[0].message.content
    assert len({solo_a, solo_b, solo_none}) == 3
    with cf.ThreadPoolExecutor(6) as pool:
        futs = [pool.submit(complete, client, s) for s in (STEER_A, STEER_B, None, STEER_A, STEER_B, None)]
        outs = [f.result().parse().choices[0].message.content for f in futs]
    assert outs == [solo_a, solo_b, solo_none] * 2


def test_server_wide_steering_set_patch_disable_clear(client, server):
    plain = complete(client).parse().choices[0].message.content
    r = httpx.put(server.url + "/api/steering", json={"features": [{"index": 5, "strength": 8.0}]})
    assert r.status_code == 200 and r.json()["features"][0]["index"] == 5
    server_steered = complete(client)
    assert json.loads(server_steered.headers["X-MiLLM-Steering"])["source"] == "server"
    assert server_steered.parse().choices[0].message.content == complete(client, STEER_A).parse(
    ).choices[0].message.content
    # A request's own steering overrides the server-wide one; [] means none.
    assert complete(client, {"features": []}).parse().choices[0].message.content == plain
    r = httpx.patch(server.url + "/api/steering", json={"features": [{"index": 5, "strength": None},
                                                                     {"index": 9, "strength": 2.0}]})
    assert [f["index"] for f in r.json()["features"]] == [9]
    client_post(server.url + "/api/steering/disable")
    assert complete(client).parse().choices[0].message.content == plain
    client_post(server.url + "/api/steering/enable")
    assert complete(client).parse().choices[0].message.content != plain
    assert httpx.delete(server.url + "/api/steering").json()["features"] == []
    assert complete(client).parse().choices[0].message.content == plain


def test_clamp_mode_through_the_api(client):
    plain = complete(client).parse().choices[0].message.content
    clamped = complete(client, {"features": [{"index": 5, "strength": 30.0}], "mode": "clamp"})
    assert clamped.parse().choices[0].message.content != plain
    assert json.loads(clamped.headers["X-MiLLM-Steering"])["mode"] == "clamp"


def test_steering_bad_inputs(server):
    r = httpx.put(server.url + "/api/steering", json={"features": [{"index": 10_000, "strength": 1.0}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "features[0].index"
    r = httpx.put(server.url + "/api/steering", json={"features": [{"index": 1, "strength": 1.0}], "typo": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "typo"


@pytest.mark.parametrize("mode", ["add", "clamp"])
def test_steering_that_overflows_the_activations_is_a_400_naming_steering(client, server, mode):
    # 1e300 is a finite strength, but it drives the residual stream to inf, so the logits are NaN: the request fails
    # with a 400 naming `steering` (before, sampling raised and the client got a 500), streamed or not.
    steer = {"features": [{"index": 5, "strength": 1e300}], "mode": mode}
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, steer)
    assert (e.value.body["param"], e.value.body["code"]) == ("steering", "non_finite_logits")
    assert "too strong for float32" in e.value.body["message"]
    body = {"model": MODEL, "messages": MSG, "max_tokens": 4, "stream": True, "steering": steer}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        text = r.read().decode()
    assert r.status_code == 200  # the role chunk went out first, so the error is an event in the stream
    errors = [json.loads(line[6:])["error"] for line in text.splitlines() if line.startswith('data: {"error"')]
    assert [(e["param"], e["code"]) for e in errors] == [("steering", "non_finite_logits")], text
    assert complete(client, STEER_A).parse().choices[0].message.content  # the server goes on serving


def test_embeddings_accept_steering(client):
    a = client.embeddings.create(model=MODEL, input="hello", encoding_format="float")
    b = client.embeddings.create(model=MODEL, input="hello", encoding_format="float",
                                 extra_body={"steering": STEER_A})
    assert a.data[0].embedding != b.data[0].embedding


def test_sae_detach_attach_and_errors(client, server, tiny_sae_dir, tmp_path):
    from tests.sae.builders import make_sae, write_saelens

    plain = complete(client).parse().choices[0].message.content
    assert client_post(server.url + "/api/saes/detach").json() == {"attached": None}
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, STEER_A)
    assert e.value.body["code"] == "no_sae"
    assert complete(client).parse().choices[0].message.content == plain
    # Wrong width, missing folder, bad hook name: clear errors, server keeps working.
    wrong = write_saelens(make_sae(d_in=32, d_sae=64, hook_name="blocks.1.hook_resid_post"), tmp_path / "w")
    r = httpx.post(server.url + "/api/saes/attach", json={"source": str(wrong)})
    assert r.status_code == 400 and "d_in=32" in r.json()["error"]["message"] and "64" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "source"
    r = httpx.post(server.url + "/api/saes/attach", json={"source": str(tmp_path / "missing")})
    assert r.status_code == 404
    bad_hook = write_saelens(make_sae(d_in=64, d_sae=64, hook_name="blocks.99.hook_resid_post"), tmp_path / "b")
    r = httpx.post(server.url + "/api/saes/attach", json={"source": str(bad_hook)})
    assert r.status_code == 400 and "layer 99" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "source"
    for extra, param in (({"layer": 99}, "layer"), ({"format": "nope"}, "format")):
        r = httpx.post(server.url + "/api/saes/attach", json={"source": str(tiny_sae_dir), **extra})
        assert (r.status_code, r.json()["error"]["param"]) == (400, param), r.text
    r = httpx.post(server.url + "/api/saes/attach", json={"source": str(tiny_sae_dir), "sae_id": "sae"})
    assert r.status_code == 200
    out = r.json()["attached"]
    assert (out["id"], out["d_sae"], out["layer"], out["module"]) == ("sae", 256, 1, "model.layers.1")
    assert complete(client, STEER_A).parse().choices[0].message.content != plain
    # Layer override at attach time.
    r = httpx.post(server.url + "/api/saes/attach", json={"source": str(tiny_sae_dir), "sae_id": "sae", "layer": 2})
    assert r.json()["attached"]["module"] == "model.layers.2"
    httpx.post(server.url + "/api/saes/attach", json={"source": str(tiny_sae_dir), "sae_id": "sae"})


def test_setting_steering_directly_ends_the_active_profile(server, tiny_sae_dir):
    status = httpx.get(server.url + "/api/status").json()
    sae = status["sae"]
    body = {"name": "direct-override", "model": status["model"]["id"], "mode": "add",
            "features": [{"index": 5, "strength": 8.0}],
            "sae": {"id": sae["id"], "hook_name": sae["hook_name"], "layer": sae["layer"], "d_sae": sae["d_sae"]}}
    assert httpx.post(server.url + "/api/profiles", json=body).status_code == 201
    try:
        assert client_post(server.url + "/api/profiles/direct-override/activate").json()["active"] is True
        httpx.put(server.url + "/api/steering", json={"features": [{"index": 9, "strength": 1.0}]})
        assert httpx.get(server.url + "/api/status").json()["active_profile"] is None
        assert httpx.get(server.url + "/api/profiles/direct-override").json()["active"] is False
        client_post(server.url + "/api/profiles/direct-override/activate")
        client_post(server.url + "/api/saes/detach")
        assert httpx.get(server.url + "/api/profiles/direct-override").json()["active"] is False
    finally:
        httpx.post(server.url + "/api/saes/attach", json={"source": str(tiny_sae_dir), "sae_id": "sae"})
        httpx.delete(server.url + "/api/profiles/direct-override")


def test_the_steering_header_and_body_say_the_same_thing(client, server):
    """X-MiLLM-Steering is the body's millm.steering without its nulls (and without what only the final receipt
    can know: server_steering_changed, evidence), for chat, completions, streamed chat and embeddings."""
    only_final = {"server_steering_changed", "evidence", "evidence_value"}

    def strip(value):  # the header leaves nulls out, at every level
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        return [strip(v) for v in value] if isinstance(value, list) else value

    def same(header: str, body: dict) -> None:
        receipt = strip({k: v for k, v in body.items() if k not in only_final})
        assert json.loads(header) == receipt and receipt["source"] in ("request", "server")

    httpx.put(server.url + "/api/steering", json={"features": [{"index": 9, "strength": 3.0}]})
    for steering in (STEER_B, None):
        chat = complete(client, steering)
        same(chat.headers["X-MiLLM-Steering"], chat.parse().model_extra["millm"]["steering"])
        extra = {"steering": steering} if steering else {}
        comp = client.completions.with_raw_response.create(model=MODEL, prompt="Hi", max_tokens=3, extra_body=extra)
        same(comp.headers["X-MiLLM-Steering"], comp.parse().model_extra["millm"]["steering"])
        emb = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "Hi", **extra})
        same(emb.headers["X-MiLLM-Steering"], emb.json()["millm"]["steering"])
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60, json={
                "model": MODEL, "messages": MSG, "max_tokens": 3, "stream": True, **extra}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: {")]
        final = [c["millm"]["steering"] for c in chunks if c.get("millm")]
        assert final, "the last chunk carries the final receipt"
        same(r.headers["X-MiLLM-Steering"], final[-1])
