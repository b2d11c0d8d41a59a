"""On a GPU: SAE maps keep devices and dtypes straight, the hot-path methods never sync with the host, and
hooks on a CUDA bf16 model steer and detach cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from millm.engine.hookpoints import attached, resolve_hookpoint
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae, write_saelens

ARCHS = ["standard", "jumprelu", "topk", "gated"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", ["none", "layer_norm"])
def test_cuda_maps_without_host_sync(tmp_path: Path, arch: str, norm: str) -> None:
    ref = make_sae(arch, d_in=64, d_sae=512, normalize_activations=norm, apply_b_dec_to_input=arch != "jumprelu")
    write_saelens(ref, tmp_path)
    sae = load_sae(tmp_path, device="cuda", dtype="float32")
    assert sae.device.type == "cuda"
    x = torch.randn(2, 9, 64, device="cuda", dtype=torch.bfloat16)
    idx = sae.check_features([3, 7, 100])
    values = torch.tensor([5.0, 0.0, 2.0], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            delta = sae.clamp_delta(x, idx, values)
            sel = sae.encode_selected(x, idx)
            full = sae.encode(x)
            vec = sae.steering_vector(idx, values, normalize=True)
            recon = sae(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert delta.dtype == torch.bfloat16 and recon.dtype == torch.bfloat16 and delta.device.type == "cuda"
    assert sel.dtype == torch.float32 and vec.shape == (64,)
    torch.testing.assert_close(sel, full[..., idx], atol=1e-5, rtol=0)
    with torch.inference_mode():
        xf = x.float()
        torch.testing.assert_close(xf + sae.clamp_delta(xf, idx, values), sae.clamp_full(xf, idx, values), atol=1e-4, rtol=1e-4)
        cpu = ref.encode(x.float().cpu())
    torch.testing.assert_close(full.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_clamp_hook_on_a_cuda_bf16_model(family: str) -> None:
    from transformers import AutoModelForCausalLM

    from tests.engine.test_hookpoints import CONFIGS, D

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[family], attn_implementation="eager").to("cuda", torch.bfloat16).eval()
    sae = make_sae("jumprelu", d_in=D, d_sae=128).to("cuda")
    hp = resolve_hookpoint(model, "blocks.1.hook_resid_post")
    idx = torch.tensor([1, 2], device="cuda")
    vals = torch.tensor([8.0, 3.0], device="cuda")
    x = torch.randint(0, 101, (2, 6), device="cuda")
    seen: list[torch.Tensor] = []

    def steer(h: torch.Tensor) -> torch.Tensor:
        out = h + sae.clamp_delta(h, idx, vals)
        seen.append(out)
        return out

    with torch.inference_mode():
        before = model(x).logits
        with attached(hp, steer):
            during = model(x).logits
        after = model(x).logits
    assert seen and seen[0].dtype == torch.bfloat16 and seen[0].device.type == "cuda"
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
