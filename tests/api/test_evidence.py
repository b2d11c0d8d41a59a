"""Steering evidence in receipts and a request's own activations, checked against a direct encode at the hook.

The server runs the tiny model with an orthonormal SAE (encoder = decoder transpose, orthonormal rows, a large
encoder bias so every feature is active), so adding s * W_dec[i] raises feature i by exactly s and leaves the
others alone; the test recomputes every reported value from a plain transformers forward of the same tokens.
"""

from __future__ import annotations

from pathlib import Path

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
    for j, (i, s) in enumerate(feats):
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
