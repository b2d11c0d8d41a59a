"""Steering evidence in receipts and a request's own activations, checked against a direct encode at the hook.

The server runs the tiny model with an orthonormal SAE (encoder = decoder transpose, orthonormal rows, a large
encoder bias so every feature is active), so adding s * W_dec[i] raises feature i by exactly s and leaves the
others alone; the test recomputes every reported value from a plain transformers forward of the same tokens.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from tests.conftest import start_server, tiny_settings

D_SAE = 48
HOOK = "blocks.1.hook_resid_post"


def orthonormal_sae(d_in: int = 64, d_sae: int = D_SAE):
    from millm.sae.base import SaeConfig
    from millm.sae.registry import build_sae

    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=torch.Generator().manual_seed(0)))
    w_dec = q[:d_sae].contiguous()
    cfg = SaeConfig(architecture="standard", d_in=d_in, d_sae=d_sae, hook_name=HOOK, layer=1, site="resid_post")
    return build_sae(cfg, {"W_enc": w_dec.T.contiguous(), "W_dec": w_dec, "b_enc": torch.full((d_sae,), 10.0),
                           "b_dec": torch.zeros(d_in)})


@pytest.fixture(scope="module")
def ortho(tmp_path_factory, tiny_model_dir):
    from tests.sae.builders import write_saelens

    sae = orthonormal_sae()
    folder = write_saelens(sae, tmp_path_factory.mktemp("ortho") / "sae", HOOK)
    live = start_server(tiny_settings(tmp_path_factory.mktemp("srv"), tiny_model_dir, folder,
                                      served_model_name="tiny"))
    yield live, sae
    live.stop()


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def hook_residual(model, ids: list[int]) -> torch.Tensor:
    """The unsteered residual at the SAE's hook (output of layer 1) for every position: (T, d)."""
    seen = {}

    def spy(_m, _i, out):
        seen["h"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    handle = model.model.layers[1].register_forward_hook(spy)
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return seen["h"][0]


def compare_one(url: str, prompt: list[int], steering: dict, max_tokens: int = 6) -> dict:
    r = httpx.post(url + "/api/compare", json={"prompt": prompt, "variants": [{"steering": steering}],
                                               "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                                               "stream": False}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["variants"][0]


def test_evidence_equals_a_direct_encode_and_counts_skipped_special_tokens(ortho, hf):
    live, sae = ortho
    model, tok = hf
    special = [tok.convert_tokens_to_ids(t) for t in ("<|user|>", "<|end|>")]
    words = tok("Hello world", add_special_tokens=False).input_ids
    prompt = [tok.bos_token_id, special[0], *words, special[1]]
    feats = [(3, 2.5), (17, -1.5)]
    steering = {"features": [{"index": i, "strength": s} for i, s in feats], "evidence": True,
                "steer_special_tokens": False}
    v = compare_one(live.url, prompt, steering)
    rec = v["steering"]
    assert rec["evidence_value"].startswith("the feature's activation")
    [choice] = rec["evidence"]
    generated = v["token_ids"]
    seq = prompt + generated[:-1]  # every token the model read (the last generated one is never fed back)
    h = hook_residual(model, seq)
    add = sum(s * sae.W_dec[i] for i, s in feats)
    steerable = torch.tensor([t not in set(tok.all_special_ids) for t in seq])
    h_after = h + steerable[:, None] * add
    producing = slice(len(prompt) - 1, len(seq))  # positions that produced a generated token
    before, after = sae.encode(h)[producing], sae.encode(h_after)[producing]
    n_special = sum(t in set(tok.all_special_ids) for t in seq)
    assert n_special >= 3
    by_index = {f["index"]: f for f in choice["features"]}
    for i, s in feats:
        f = by_index[i]
        assert f["tokens"] == len(generated) == 6
        assert f["positions_skipped"] == n_special and f["positions_steered"] == len(seq) - n_special
        for got, want in ((f["before"], before[:, i]), (f["after"], after[:, i])):
            assert got["mean"] == pytest.approx(want.mean().item(), abs=1e-4)
            assert got["max"] == pytest.approx(want.max().item(), abs=1e-4)
        # Orthonormal decoder rows: where a position was steered, the feature moved by exactly its strength.
        moved = (after[:, i] - before[:, i])[steerable[producing]]
        assert torch.allclose(moved, torch.full_like(moved, s), atol=1e-4)
    assert [(p["position"], p["reason"]) for p in choice["skipped"]] == [
        (p, "special_token") for p, t in enumerate(seq) if t in set(tok.all_special_ids)]
    assert choice["skipped"][0]["token"] == "<s>"


def test_evidence_is_opt_in_and_kept_in_the_monitor_history(ortho):
    live, _ = ortho
    steer = {"features": [{"index": 3, "strength": 2.5}]}
    plain = httpx.post(live.url + "/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "steering": steer}).json()
    [ev] = plain["millm"]["steering"]["evidence"]  # positions are always counted ...
    assert ev["features"][0]["before"] is None and ev["features"][0]["positions_steered"] > 0  # ... values opt-in
    httpx.put(live.url + "/api/monitor/config", json={"enabled": True, "features": [3]})
    try:
        r = httpx.post(live.url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
            "steering": {**steer, "evidence": True}}).json()
        hist = httpx.get(live.url + "/api/monitor/history", params={"request_id": r["id"]}).json()["data"][0]
        assert hist["steering"] == r["millm"]["steering"]
        assert hist["steering"]["evidence"][0]["features"][0]["after"]["max"] > 0
    finally:
        httpx.put(live.url + "/api/monitor/config", json={"enabled": False, "features": None})


# ---------------------------------------------------------------------------------------------- activations


def _ws_and_request(url: str, body: dict) -> tuple[list[dict], list[dict]]:
    import asyncio
    import json

    import websockets

    async def run() -> tuple[list[dict], list[dict]]:
        frames: list[dict] = []
        async with websockets.connect(url.replace("http://", "ws://") + "/ws/monitor") as ws:
            async with httpx.AsyncClient(timeout=60) as http:
                async with http.stream("POST", url + "/v1/completions", json=body) as resp:
                    chunks = [json.loads(ln[6:]) async for ln in resp.aiter_lines() if ln.startswith("data: {")]
            while True:
                try:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0)))
                except TimeoutError:
                    break
        return frames, chunks

    return asyncio.run(run())


@pytest.mark.parametrize("monitor", [{"features": [3, 17, 40]}, {"features": None, "top_k": 5}], ids=["selected",
                                                                                                   "top-k"])
def test_activations_equal_the_websocket_frames(ortho, monitor):
    live, _ = ortho
    httpx.put(live.url + "/api/monitor/config", json={"enabled": True, **monitor})
    try:
        wanted = {"features": monitor["features"]} if monitor["features"] else {"top_k": monitor["top_k"]}
        body = {"model": "tiny", "prompt": "Hello world", "max_tokens": 6, "temperature": 0, "ignore_eos": True,
                "stream": True, "steering": {"features": [{"index": 3, "strength": 2.0}]},
                "activations": {**wanted, "positions": "all"}}
        frames, chunks = _ws_and_request(live.url, body)
    finally:
        httpx.put(live.url + "/api/monitor/config", json={"enabled": False, "features": None, "top_k": 8})
    rid = chunks[0]["id"]
    ws = [{k: f[k] for k in ("position", "token_id", "token", "phase", "activations")}
          for f in frames if f["request_id"] == rid]
    [acts] = chunks[-1]["millm"]["activations"]
    assert acts["choice"] == 0 and acts["read"] == "after"
    assert acts["tokens"] == ws and len(ws) == 6 - 1 + len([f for f in ws if f["phase"] == "prompt"])


def test_activations_equal_a_direct_encode_and_before_is_the_unsteered_model(ortho, hf):
    live, sae = ortho
    model, tok = hf
    feats = [3, 17, 40]

    def ask(read: str, steering: dict) -> list[dict]:
        r = httpx.post(live.url + "/v1/completions", json={
            "model": "tiny", "prompt": "Hello world", "max_tokens": 5, "temperature": 0, "ignore_eos": True,
            "steering": steering, "activations": {"features": feats, "positions": "all", "read": read}})
        assert r.status_code == 200, r.text
        return r.json()["millm"]["activations"][0]["tokens"]

    steer = {"features": [{"index": 3, "strength": 2.0}, {"index": 40, "strength": -1.0}]}
    for read, steering in (("after", {"features": []}), ("before", steer), ("after", steer)):
        tokens = ask(read, steering)
        seq = [tok.bos_token_id] + [t["token_id"] for t in tokens]
        assert [t["position"] for t in tokens] == list(range(1, len(seq)))
        h = hook_residual(model, seq)  # the unsteered model's residual at the hook
        if read == "after" and steering is steer:
            h = h + (2.0 * sae.W_dec[3] - 1.0 * sae.W_dec[40])
        direct = sae.encode(h)[1:, feats]
        got = torch.tensor([[a["value"] for a in t["activations"]] for t in tokens])
        assert [a["index"] for a in tokens[0]["activations"]] == feats
        assert torch.allclose(got, direct, atol=1e-4), (read, steering)


def test_activations_positions_and_validation(ortho):
    live, _ = ortho

    def ask(activations: dict, **kw) -> httpx.Response:
        return httpx.post(live.url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0,
            "ignore_eos": True, "activations": activations, **kw})

    for positions, phases in (("prompt", {"prompt"}), ("completion", {"generated"}), ("last", {"generated"})):
        out = ask({"top_k": 3, "positions": positions}).json()["millm"]["activations"][0]["tokens"]
        assert {t["phase"] for t in out} == phases and all(len(t["activations"]) == 3 for t in out)
        assert len(out) == {"prompt": len(out), "completion": 3, "last": 1}[positions]
    two = ask({"top_k": 2}, n=2).json()["millm"]["activations"]
    assert [c["choice"] for c in two] == [0, 1]
    plain = ask({"top_k": 2}).json()
    assert "activations" in plain["millm"]
    assert "activations" not in httpx.post(live.url + "/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).json()["millm"]
    for bad, param in (({"features": [1], "top_k": 2}, "activations"), ({}, "activations"),
                       ({"features": [D_SAE]}, "activations.features[0]"), ({"features": [1, 1]}, "activations"),
                       ({"top_k": 65}, "activations.top_k"), ({"top_k": 2, "typo": 1}, "activations.typo"),
                       ({"top_k": 2, "read": "during"}, "activations.read"),
                       ({"top_k": 64, "positions": "all"}, "activations")):
        # (the last: up to 256 positions x 64 features x 20 choices is past the 200,000-value bound)
        r = ask(bad, max_tokens=None, n=20) if bad.get("top_k") == 64 else ask(bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)
