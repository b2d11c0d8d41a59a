"""Hook points on tiny random models of every supported family (built offline from configs)."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from millm.engine.hookpoints import HookPoint, attach, attached, find_layer_list, resolve_hookpoint
from millm.errors import SaeError
from millm.sae.hooknames import HookSpec

N_LAYERS, D, HEADS, HEAD_DIM = 3, 32, 4, 8
COMMON = {"vocab_size": 101, "hidden_size": D, "intermediate_size": 64, "num_hidden_layers": N_LAYERS,
          "num_attention_heads": HEADS, "num_key_value_heads": 2}
CONFIGS: dict[str, PretrainedConfig] = {
    "llama": LlamaConfig(**COMMON),
    "mistral": MistralConfig(**COMMON),
    "qwen2": Qwen2Config(**COMMON),
    "qwen3": Qwen3Config(**COMMON, head_dim=HEAD_DIM),
    "gemma2": Gemma2Config(**COMMON, head_dim=HEAD_DIM),
    "gemma3": Gemma3TextConfig(**COMMON, head_dim=HEAD_DIM, sliding_window=4),
    "gpt2": GPT2Config(vocab_size=101, n_embd=D, n_layer=N_LAYERS, n_head=HEADS, n_positions=64, bos_token_id=0, eos_token_id=0),
}
FAMILIES = list(CONFIGS)
SITES = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_z"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models: one intra-op thread is faster, and far faster on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@cache
def tiny(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[family], attn_implementation="eager")
    return model.eval()


def ids() -> torch.Tensor:
    return torch.randint(0, 101, (2, 7), generator=torch.Generator().manual_seed(1))


def capture(model: nn.Module, hook: str, input_ids: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    with attached(resolve_hookpoint(model, hook), lambda h: seen.append(h.clone())), torch.inference_mode():
        model(input_ids)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("site", SITES)
def test_resolution(family: str, site: str) -> None:
    model = tiny(family)
    hp = resolve_hookpoint(model, HookSpec(1, site))
    assert isinstance(hp, HookPoint) and hp.layer == 1
    assert hp.target == ("input" if site in ("resid_pre", "resid_mid", "attn_z") else "output")
    assert hp.d_hook == (HEADS * (HEAD_DIM if family in ("qwen3", "gemma2", "gemma3") else D // HEADS) if site == "attn_z" else D)
    assert hp.d_hook == capture(model, f"blocks.1.{'attn.hook_z' if site == 'attn_z' else 'hook_' + site}", ids()).shape[-1]
    gemma_post = {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm"}
    if family.startswith("gemma") and site in gemma_post:
        assert hp.module_path.endswith(gemma_post[site])


@pytest.mark.parametrize("family", FAMILIES)
def test_resid_pre_and_post_match_output_hidden_states(family: str) -> None:
    model, x = tiny(family), ids()
    with torch.inference_mode():
        hidden = model(x, output_hidden_states=True).hidden_states
    assert len(hidden) == N_LAYERS + 1
    for layer in range(N_LAYERS):
        torch.testing.assert_close(capture(model, f"blocks.{layer}.hook_resid_pre", x), hidden[layer], rtol=0, atol=0)
    for layer in range(N_LAYERS - 1):  # the last entry of hidden_states is the final-norm output
        torch.testing.assert_close(capture(model, f"blocks.{layer}.hook_resid_post", x), hidden[layer + 1], rtol=0, atol=0)
        torch.testing.assert_close(capture(model, f"model.layers.{layer}", x), hidden[layer + 1], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_compose_into_the_residual_stream(family: str) -> None:
    model, x = tiny(family), ids()
    got = {s: capture(model, f"blocks.1.hook_{s}", x) for s in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")}
    torch.testing.assert_close(got["resid_mid"], got["resid_pre"] + got["attn_out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["resid_post"], got["resid_mid"] + got["mlp_out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_adding_a_vector_at_resid_post_shifts_next_layer_input_exactly(family: str) -> None:
    model, x = tiny(family), ids()
    v = torch.randn(D, generator=torch.Generator().manual_seed(2))
    clean = capture(model, "blocks.2.hook_resid_pre", x)
    with attached(resolve_hookpoint(model, "blocks.1.hook_resid_post"), lambda h: h + v):
        steered = capture(model, "blocks.2.hook_resid_pre", x)
    torch.testing.assert_close(steered, clean + v, rtol=0, atol=0)
    with attached(resolve_hookpoint(model, "blocks.1.hook_mlp_out"), lambda h: h + v):
        via_mlp = capture(model, "blocks.1.hook_resid_post", x)
    torch.testing.assert_close(via_mlp, clean + v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.attn.hook_z", "blocks.2.hook_resid_mid"])
def test_attach_then_remove_restores_logits_bit_for_bit(family: str, hook: str) -> None:
    model, x = tiny(family), ids()
    with torch.inference_mode():
        before = model(x).logits
        handle = attach(resolve_hookpoint(model, hook), lambda h: h * 1.5 + 0.25)
        during = model(x).logits
        handle.remove()
        after = model(x).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)


def test_fn_returning_none_leaves_the_tensor() -> None:
    model, x = tiny("llama"), ids()
    with torch.inference_mode():
        before = model(x).logits
        with attached(resolve_hookpoint(model, "blocks.1.hook_attn_out"), lambda h: None):
            assert torch.equal(model(x).logits, before)


def test_layer_override_and_errors() -> None:
    model = tiny("gemma2")
    assert resolve_hookpoint(model, "blocks.0.hook_resid_post", layer_override=2).layer == 2
    with pytest.raises(SaeError, match=r"needs layer 3, but the model has 3 layers"):
        resolve_hookpoint(model, "blocks.3.hook_resid_post")
    with pytest.raises(SaeError, match="cannot parse hook name"):
        resolve_hookpoint(model, "encoder.block.1")
    with pytest.raises(SaeError, match="not found"):
        resolve_hookpoint(model, "model.layers.1.nonexistent")
    with pytest.raises(SaeError, match="empty hook name"):
        resolve_hookpoint(model, "")


def test_find_layer_list_searches_and_skips_vision_towers() -> None:
    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.config = inner.config
            self.vision_tower = nn.ModuleList([nn.Linear(2, 2) for _ in range(N_LAYERS)])
            self.language_model = inner

    path, layers = find_layer_list(Wrapper(tiny("llama")))
    assert path == "language_model.model.layers" and len(layers) == N_LAYERS


def test_pre_hook_sees_keyword_hidden_states() -> None:
    class Block(nn.Module):
        def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return hidden_states * scale

    block = Block()
    hp = HookPoint(spec=HookSpec(0, "resid_pre"), module=block, module_path="block", target="input", d_hook=4)
    with attached(hp, lambda h: h + 1):
        assert torch.equal(block(hidden_states=torch.zeros(1, 1, 4), scale=2.0), torch.full((1, 1, 4), 2.0))
        assert torch.equal(block(torch.zeros(1, 1, 4)), torch.ones(1, 1, 4))


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_hf_module_paths_as_gemma_scope_2_writes_them(family: str) -> None:
    model, x = tiny(family), ids()
    z = resolve_hookpoint(model, "model.layers.1.self_attn.o_proj.input")
    assert (z.target, z.d_hook, z.spec.site) == ("input", resolve_hookpoint(model, "blocks.1.attn.hook_z").d_hook, "attn_z")
    torch.testing.assert_close(capture(model, "model.layers.1.output", x), capture(model, "blocks.1.hook_resid_post", x), rtol=0, atol=0)
    torch.testing.assert_close(capture(model, "model.layers.1.input", x), capture(model, "blocks.1.hook_resid_pre", x), rtol=0, atol=0)
    torch.testing.assert_close(capture(model, "model.layers.1.self_attn.o_proj.input", x),
                               capture(model, "blocks.1.attn.hook_z", x), rtol=0, atol=0)
    mid = capture(model, "blocks.1.hook_resid_mid", x)
    norm = "pre_feedforward_layernorm" if family == "gemma3" else "post_attention_layernorm"
    torch.testing.assert_close(capture(model, f"model.layers.1.{norm}.input", x), mid, rtol=0, atol=0)
