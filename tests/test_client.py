"""millm.client: the steering helpers, with the openai SDK against a live server."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from millm.client import AppliedSteering, Feature, no_steering, profile, steer, steering_of, virtual_model

MODEL = "test-org/tiny"
MSG = [{"role": "user", "content": "hi"}]


def test_builders_make_the_wire_object() -> None:
    assert steer({16: 8}).extra_body() == {"steering": {"features": [{"index": 16, "strength": 8.0}]}}
    assert steer([(3, -2), Feature(5, 1)], mode="clamp", normalize=True).to_dict() == {
        "features": [{"index": 3, "strength": -2.0}, {"index": 5, "strength": 1.0}], "mode": "clamp",
        "normalize": True}
    assert profile("calm").extra_body(top_k=4) == {"top_k": 4, "steering": {"profile": "calm"}}
    assert no_steering().to_dict() == {"features": []}
    assert virtual_model("millm-demo", "yelling-demo") == "millm-demo+yelling-demo"
    for bad in (lambda: steer({-1: 2}), lambda: steer({1: float("nan")}), lambda: steer([(1, 2), (1, 3)]),
                lambda: steer({1: 2}, mode="mul"), lambda: profile("")):  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            bad()


def test_with_the_sdk_against_a_live_server(client, server) -> None:
    httpx.delete(server.url + "/api/steering")
    r = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3,
                                       extra_body=steer({5: 8.0, 9: -2}).extra_body())
    applied = steering_of(r)
    assert applied == AppliedSteering(source="request", mode="add", sae="sae", hook_name=applied.hook_name,
                                      features=(Feature(5, 8.0), Feature(9, -2.0)))
    assert applied.steered and applied.hook_name

    plain = steering_of(client.completions.create(model=MODEL, prompt="hi", max_tokens=2))
    assert plain is not None and plain.source == "none" and not plain.steered

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSG, max_tokens=2,
                                                           extra_body=steer({7: 1}, mode="clamp").extra_body())
    from_header = steering_of(raw)
    assert from_header is not None and from_header.mode == "clamp" and from_header.features == (Feature(7, 1.0),)

    chunks = list(client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3, stream=True,
                                                 extra_body=steer({5: 2}).extra_body()))
    assert steering_of(chunks[0]).features == (Feature(5, 2.0),)
    assert all(steering_of(c) is None for c in chunks[1:-1])  # the first chunk carries it (and maybe the last)

    httpx.put(server.url + "/api/steering", json={"features": [{"index": 4, "strength": 3}]})
    try:
        assert steering_of(client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)).source == "server"
        off = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2,
                                             extra_body=no_steering().extra_body())
        assert not steering_of(off).steered
    finally:
        httpx.delete(server.url + "/api/steering")


def test_neither_the_server_nor_the_helper_imports_openai() -> None:
    code = "import sys, millm.app, millm.client, millm.__main__; print('openai' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
