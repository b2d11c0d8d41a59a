"""On a GPU: the SAE hook never syncs with the host, and the lean decode step matches the HF forward in bf16.

Skipped without CUDA (tests/gpu/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from millm.engine import hookpoints, kv
from millm.engine.intervention import BatchPlan, MonitorConfig, SaeIntervention
from millm.engine.llama_decode import LlamaDecoder
from millm.engine.model_loading import load_model
from millm.engine.types import FeatureStrength, SteeringSpec
from millm.sae.loading import load_sae


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cuda", dtype="bfloat16")


@pytest.mark.parametrize("monitor", [None, (3, 9, 40), ()])
def test_hook_runs_without_host_sync(lm, tiny_sae_dir, monitor):
    sae = load_sae(tiny_sae_dir).to(device=lm.device, dtype=lm.dtype)
    hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name)
    seen = {}
    iv = SaeIntervention(sae=sae, hookpoint=hp, device=lm.device, dtype=lm.dtype,
                         attach_fn=lambda point, fn: seen.setdefault("fn", fn) and None)
    if monitor is not None:
        iv.set_monitor(MonitorConfig(enabled=True, features=monitor or None, top_k=4))
    add = iv.compile(SteeringSpec((FeatureStrength(7, 4.0),)))
    clamp = iv.compile(SteeringSpec((FeatureStrength(5, 3.0), FeatureStrength(11, 0.0)), mode="clamp"))
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [1, 2, 3]], device="cuda")
    plan = iv.prepare(BatchPlan(steering=[add, clamp, None], steer_mask=ids != 0, monitor=monitor is not None))
    iv.set_plan(plan)
    h = torch.randn(3, 3, hp.d_hook, device="cuda", dtype=lm.dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            out = seen["fn"](h)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out is not None and out.shape == h.shape and out.dtype == h.dtype
    assert len(iv.captures) == (monitor is not None)


def test_lean_step_matches_the_hf_forward_in_bf16(lm):
    dec = LlamaDecoder.for_model(lm.model)
    assert dec is not None
    ids = torch.tensor([[5, 9, 30, 41, 77, 12], [2, 2, 2, 60, 61, 62]], device="cuda")
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]], device="cuda")
    caches = [kv.new_cache(), kv.new_cache()]
    with torch.inference_mode():
        for c in caches:
            lm.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                     use_cache=True, **{dec.cache_kwarg: c})
        mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype, device="cuda")], 1)
        pos = mask.sum(-1, keepdim=True) - 1
        tok = torch.tensor([[3], [4]], device="cuda")
        want = lm.model(input_ids=tok, attention_mask=mask, position_ids=pos, use_cache=True,
                        **{dec.cache_kwarg: caches[0]}).logits[:, -1]
        got = dec.step(tok, pos, mask=mask[:, None, None, :].bool(), cache=caches[1])
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)
