"""The lean Llama decode step equals the transformers forward: logits, cache, hooks, padding."""

from __future__ import annotations

import contextlib
import inspect

import pytest
import torch

from millm.engine import hookpoints, kv, llama_decode, weight_layout
from millm.engine.llama_decode import LlamaDecoder, prefill_mask
from millm.engine.model_loading import load_model
from tests.engine.test_weight_layout import force_choice


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def mha_model():
    """A random Llama without grouped-query attention (the tiny test model has GQA)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _cache_kw(model) -> str:
    # transformers renamed past_key_values to cache (5.2x); the GPU image may be older.
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _prefill(model, ids, mask):
    cache = kv.new_cache()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{_cache_kw(model): cache})
    return cache


def _batch():
    # Two rows, the second left-padded by 3.
    ids = torch.tensor([[5, 9, 30, 41, 77, 12], [2, 2, 2, 60, 61, 62]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    return ids, mask


def _hf_step(model, cache, tok, mask, positions):
    with torch.inference_mode():
        return model(input_ids=tok, attention_mask=mask, position_ids=positions, use_cache=True,
                     **{_cache_kw(model): cache}).logits[:, -1, :]


def _lean_step(dec, cache, tok, mask, positions):
    padded = None if bool(mask.all()) else mask[:, None, None, :].bool()
    with torch.inference_mode():
        return dec.step(tok, positions, mask=padded, cache=cache)


def test_only_plain_llama_gets_a_decoder(lm):
    assert LlamaDecoder.for_model(lm.model) is not None
    assert LlamaDecoder.for_model(torch.nn.Linear(2, 2)) is None


KERNELS = ["stored"] + (["onednn"] if weight_layout.onednn_available() else [])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("gqa", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_steps_match_the_transformers_forward(lm, mha_model, padded, gqa, kernel):
    model = lm.model if gqa else mha_model
    ids, mask = _batch()
    if not padded:
        ids, mask = ids[:1], mask[:1]
    dec = LlamaDecoder.for_model(model, linear=weight_layout.linear_fn(kernel))
    c_hf, c_lean = _prefill(model, ids, mask), _prefill(model, ids, mask)
    tok = torch.tensor([[3]] * ids.shape[0])
    for _step in range(5):
        mask = torch.cat([mask, torch.ones(ids.shape[0], 1, dtype=mask.dtype)], 1)
        positions = mask.sum(-1, keepdim=True) - 1
        want = _hf_step(model, c_hf, tok, mask, positions)
        got = _lean_step(dec, c_lean, tok, mask, positions)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        tok = want.argmax(-1, keepdim=True)
    for a, b in zip(c_hf.layers, c_lean.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys)
        torch.testing.assert_close(a.values, b.values)


@pytest.mark.parametrize("gqa", [True, False])
def test_a_padded_step_hands_sdpa_one_float_mask_with_the_bool_masks_bits(lm, mha_model, gqa, monkeypatch):
    model = lm.model if gqa else mha_model
    dec = LlamaDecoder.for_model(model)
    ids, mask = _batch()
    mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
    positions = mask.sum(-1, keepdim=True) - 1
    tok = torch.tensor([[3], [4]])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    masks: list[torch.Tensor] = []

    def spy(*args, **kwargs):
        masks.append(kwargs["attn_mask"])
        return sdpa(*args, **kwargs)

    caches = [_prefill(model, ids, mask[:, :-1]) for _ in range(2)]
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    got = _lean_step(dec, caches[0], tok, mask, positions)
    assert len(masks) == len(dec.layers) and all(m.dtype == torch.float32 for m in masks)
    assert all(m is masks[0] for m in masks)  # made once for the step
    monkeypatch.setattr(llama_decode, "_sdpa_mask", lambda m, dtype: m)  # SDPA converts the bool mask itself
    masks.clear()
    want = _lean_step(dec, caches[1], tok, mask, positions)
    assert all(m.dtype == torch.bool for m in masks)
    assert torch.equal(got, want)


@pytest.mark.parametrize("site", ["blocks.1.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"])
def test_hooks_see_and_replace_the_same_tensors(lm, site):
    ids, mask = _batch()
    dec = LlamaDecoder.for_model(lm.model)
    hp = hookpoints.resolve_hookpoint(lm.model, site)
    shift = torch.randn(hp.d_hook, generator=torch.Generator().manual_seed(0))
    seen: dict[str, list[torch.Tensor]] = {"hf": [], "lean": []}
    where = ["hf"]

    def hook(h):
        seen[where[0]].append(h.clone())
        return h + shift

    c_hf, c_lean = _prefill(lm.model, ids, mask), _prefill(lm.model, ids, mask)
    mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
    positions = mask.sum(-1, keepdim=True) - 1
    tok = torch.tensor([[3], [4]])
    with hookpoints.attached(hp, hook):
        want = _hf_step(lm.model, c_hf, tok, mask, positions)
        where[0] = "lean"
        got = _lean_step(dec, c_lean, tok, mask, positions)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(seen["hf"]) == len(seen["lean"]) == 1
    torch.testing.assert_close(seen["lean"][0], seen["hf"][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("input_major", [False, True])
def test_fused_weights_are_the_modules_weights(monkeypatch, input_major):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([[3, 7, 11, 5]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    if input_major:
        force_choice(monkeypatch, "input-major")
        assert weight_layout.choose_layout(model) == "input-major"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dec = LlamaDecoder.for_model(model)
    assert dec is not None and dec.fresh()
    a = model.model.layers[1].self_attn
    fused = dec.qkv[1][0]
    assert fused.shape == (a.q_proj.out_features + 2 * a.k_proj.out_features, 32)
    assert a.q_proj.weight.data_ptr() == fused.data_ptr()  # a view, not a copy
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
    model.to(torch.float64)  # replaces every parameter's data
    assert not dec.fresh()


# ---------------------------------------------------------------------- Qwen2 and Gemma-2


def _family_model(family: str, *, window: int | None = None):
    """A small random Qwen2 (q/k/v biases, GQA) or Gemma-2 (GQA, soft-capping, a sliding window that binds
    within the test's sequence when `window` is small) model."""
    torch.manual_seed(3)
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)
    if family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**common))
        with torch.no_grad():  # random init leaves the biases at zero; make them count
            for layer in model.model.layers:
                for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    lin.bias.normal_(0, 0.5)
        return model.eval()
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=window or 64,
                       attn_logit_softcapping=2.0, final_logit_softcapping=3.0)  # low caps: the tanh bites
    model = Gemma2ForCausalLM(cfg)
    with torch.no_grad():  # Gemma's norms start at (1 + 0); make their weights count
        for n, p in model.named_parameters():
            if "norm" in n:
                p.normal_(0, 0.3)
    return model.eval()


PACKING = weight_layout.onednn_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


@pytest.mark.parametrize("family,window", [("qwen2", None), ("gemma2", None), ("gemma2", 5)],
                         ids=["qwen2", "gemma2", "gemma2-sliding-window-5"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("packed", [False, True] if PACKING else [False], ids=lambda p: "packed" if p else "plain")
def test_qwen2_and_gemma2_steps_match_the_transformers_forward(family, window, padded, packed):
    model = _family_model(family, window=window)
    assert LlamaDecoder.family(model) == ("gemma2" if family == "gemma2" else "llama")
    dec = LlamaDecoder.for_model(model)
    assert dec is not None
    if packed:  # the batch regime's packed oneDNN weights (every product the step runs, the LM head included)
        fn = weight_layout.PackedLinear(dec.product_weights())
        assert fn.nbytes == sum(m.weight.numel() * 4 for m in model.modules() if type(m) is torch.nn.Linear)
        dec.linear = fn
    ids, mask = _batch()
    if not padded:
        ids, mask = ids[:1], mask[:1]
    c_hf, c_lean = _prefill(model, ids, mask), _prefill(model, ids, mask)
    tok = torch.tensor([[3]] * ids.shape[0])
    for _ in range(6):  # the sequence grows past the 5-token window
        mask = torch.cat([mask, torch.ones(ids.shape[0], 1, dtype=mask.dtype)], 1)
        positions = mask.sum(-1, keepdim=True) - 1
        want = _hf_step(model, c_hf, tok, mask, positions)
        got = _lean_step(dec, c_lean, tok, mask, positions)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        tok = want.argmax(-1, keepdim=True)


def test_gemma2_hooks_and_sub_module_hooks_match():
    model = _family_model("gemma2", window=5)
    dec = LlamaDecoder.for_model(model)
    ids, mask = _batch()
    for site in ("blocks.2.hook_resid_post", "blocks.1.hook_mlp_out"):  # a layer hook; a sub-module hook (HF layer)
        hp = hookpoints.resolve_hookpoint(model, site)
        shift = torch.randn(hp.d_hook, generator=torch.Generator().manual_seed(0))
        c_hf, c_lean = _prefill(model, ids, mask), _prefill(model, ids, mask)
        m = mask
        tok = torch.tensor([[3], [4]])
        with hookpoints.attached(hp, lambda h, shift=shift: h + shift):
            for _ in range(3):
                m = torch.cat([m, torch.ones(2, 1, dtype=m.dtype)], 1)
                positions = m.sum(-1, keepdim=True) - 1
                want = _hf_step(model, c_hf, tok, m, positions)
                got = _lean_step(dec, c_lean, tok, m, positions)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=site)
                tok = want.argmax(-1, keepdim=True)


def test_qwen2_with_sliding_window_layers_takes_the_transformers_forward():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, use_sliding_window=True, sliding_window=8, max_window_layers=0)
    model = Qwen2ForCausalLM(cfg).eval()
    assert "sliding_attention" in model.config.layer_types
    assert LlamaDecoder.for_model(model) is None


def _prefill_case(lm, mha_model, model_name: str, site: str | None):
    """The prefill tests' model (by name), its lean decoder, and the hook point at `site` with a fixed random shift to
    add there (None, None without a site)."""
    model = {"gqa": lm.model, "mha": mha_model}.get(model_name) or _family_model(
        model_name[:6], window=3 if model_name.endswith("3") else None)
    hp = hookpoints.resolve_hookpoint(model, site) if site else None
    shift = torch.randn(hp.d_hook, generator=torch.Generator().manual_seed(0)) if hp else None
    return model, LlamaDecoder.for_model(model), hp, shift


@pytest.mark.parametrize("model_name", ["gqa", "mha", "qwen2", "gemma2", "gemma2-sliding-window-3"])
@pytest.mark.parametrize("site", [None, "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"])
def test_an_unpadded_prefill_through_the_step_equals_the_transformers_forward(lm, mha_model, model_name, site):
    # The worker prefills unpadded prompts with `step` over all positions: causal attention
    # without a mask, as HF's SDPA path runs it (Gemma-2: HF's eager causal mask, windowed on its sliding layers,
    # soft-capped scores and logits). Same last logits and KV cache; hooks see the same (B, T, D) tensors.
    model, dec, hp, shift = _prefill_case(lm, mha_model, model_name, site)
    ids = torch.tensor([[5, 9, 30, 41, 77, 12, 3], [2, 8, 1, 60, 61, 62, 7]])
    positions = torch.arange(ids.shape[1]).expand(2, -1)
    seen: dict[str, list[torch.Tensor]] = {"hf": [], "lean": []}
    where = ["hf"]

    def hook(h):
        seen[where[0]].append(h.clone())
        return h + shift

    c_hf, c_lean = kv.new_cache(), kv.new_cache()
    with torch.inference_mode(), (hookpoints.attached(hp, hook) if hp else contextlib.nullcontext()):
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions, use_cache=True,
                     logits_to_keep=1, **{_cache_kw(model): c_hf}).logits[:, -1, :]
        where[0] = "lean"
        got = dec.step(ids, positions, mask=None, cache=c_lean)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for a, b in zip(c_hf.layers, c_lean.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a.values, b.values, atol=1e-6, rtol=1e-6)
    if dec.gemma:  # the same ops in the same order: the same bits (a cap left out moves the logits by about 5e-6)
        assert torch.equal(got, want)
        assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
                   for a, b in zip(c_hf.layers, c_lean.layers, strict=True))
    assert len(seen["hf"]) == len(seen["lean"]) == (1 if hp else 0)
    for a, b in zip(seen["hf"], seen["lean"], strict=True):
        assert a.shape == b.shape == (2, ids.shape[1], a.shape[-1])
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model_name", ["gqa", "mha", "qwen2", "gemma2", "gemma2-sliding-window-3"])
@pytest.mark.parametrize("site", [None, "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"])
def test_a_padded_prefill_through_the_step_equals_the_transformers_forward(lm, mha_model, model_name, site):
    # The worker prefills left-padded prompts with `step` too, with `prefill_mask` (causal over each row's real keys,
    # as HF builds it; a pad query sees no key): with F.linear the same bits as HF's padded forward, logits and cache
    model, dec, hp, shift = _prefill_case(lm, mha_model, model_name, site)
    ids, mask = _batch()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    c_hf, c_lean = kv.new_cache(), kv.new_cache()
    with torch.inference_mode(), (hookpoints.attached(hp, lambda h: h + shift) if hp else contextlib.nullcontext()):
        want = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                     **{_cache_kw(model): c_hf}).logits[:, -1, :]
        got = dec.step(ids, positions, mask=prefill_mask(mask), cache=c_lean)
    assert not got.isnan().any()
    assert torch.equal(got, want)
    assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
               for a, b in zip(c_hf.layers, c_lean.layers, strict=True))


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("model_name", ["gqa", "qwen2", "gemma2"])
@pytest.mark.parametrize("fused", [False, True])
def test_a_onednn_prefill_is_close_to_the_forward_and_gives_a_row_its_bits_alone(lm, model_name, fused):
    # Kernels.prefill "onednn" (weight_layout.prefill_fn): the lean step's prefill on oneDNN is within float32
    # rounding of HF's forward (MKL), padded or not, and a row's products get the same bits alone as with others,
    # one-token prompts included (a lone row runs as two), so an unpadded prompt gets the same logits and cache
    # prefilled alone as in a batch of unpadded prompts
    model = lm.model if model_name == "gqa" else _family_model(model_name)
    dec = LlamaDecoder.for_model(model, linear=weight_layout.prefill_fn("onednn"))
    dec.fused_prefill = fused
    ids, mask = _batch()
    for rows in (ids, ids[:, -1:]):  # six positions, one
        for m in (mask[:, -rows.shape[1]:], torch.ones_like(rows)):
            positions = (m.cumsum(-1) - 1).clamp_min(0)
            c_hf, c_lean = kv.new_cache(), kv.new_cache()
            with torch.inference_mode():
                want = model(input_ids=rows, attention_mask=m, position_ids=positions, use_cache=True,
                             logits_to_keep=1, **{_cache_kw(model): c_hf}).logits[:, -1, :]
                got = dec.step(rows, positions, mask=None if m.all() else prefill_mask(m), cache=c_lean)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        positions = torch.arange(rows.shape[1]).expand(2, -1)
        with torch.inference_mode():
            together, alone = kv.new_cache(), kv.new_cache()
            both = dec.step(rows, positions, mask=None, cache=together)
            first = dec.step(rows[:1], positions[:1], mask=None, cache=alone)
        assert torch.equal(first[0], both[0])
        assert all(torch.equal(a.keys[:1], b.keys) and torch.equal(a.values[:1], b.values)
                   for a, b in zip(together.layers, alone.layers, strict=True))


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
@pytest.mark.parametrize("input_major", [False, True])
def test_a_fused_prefill_runs_every_product_on_onednn_and_keeps_no_fused_buffer(family, input_major, monkeypatch):
    # On input-major weights the modules' q/k/v and gate/up weights are column slices of the fused (K, N) buffer,
    # which oneDNN does not take (weight_layout._onednn_linear falls back to MKL); the fused weights it takes in
    # either layout. The cache keeps keys and values of their own, not views of the fused product.
    model = _family_model(family)
    if input_major:
        force_choice(monkeypatch, "input-major")
        assert weight_layout.choose_layout(model) == "input-major"
    dec = LlamaDecoder.for_model(model, linear=weight_layout.prefill_fn("onednn"))
    ids, mask = _batch()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1, :]
    linear = torch.nn.functional.linear
    mkl: list[tuple[int, ...]] = []
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, w, b=None: mkl.append(tuple(w.shape)) or linear(x, w, b))
    for fused in (False, True):
        dec.fused_prefill = fused
        mkl.clear()
        cache = kv.new_cache()
        with torch.inference_mode():
            got = dec.step(ids, positions, mask=prefill_mask(mask), cache=cache)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # unfused on input-major weights: q, k, v, gate and up fall back to MKL in every layer
        assert len(mkl) == (5 * len(dec.layers) if input_major and not fused else 0)
        for layer in cache.layers:
            for t in (layer.keys, layer.values):
                assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


@pytest.mark.parametrize("model_name", ["gqa", "gemma2"])
@pytest.mark.parametrize("kernel", ["stored", "onednn"])
def test_a_prefill_with_every_positions_logits_keeps_the_last_ones_bits(lm, model_name, kernel):
    # Prompt logprobs requests prefill through the step with every_position (the worker): every position's logits,
    # close to HF's forward, and the last position's the same bits as a prefill keeping only them; one-token prompts
    if kernel == "onednn" and not weight_layout.onednn_available():
        pytest.skip("torch built without oneDNN")
    model = lm.model if model_name == "gqa" else _family_model(model_name)
    dec = LlamaDecoder.for_model(model, linear=weight_layout.prefill_fn(kernel))
    ids, mask = _batch()
    for rows, m in ((ids, mask), (ids[:, -1:], mask[:, -1:])):
        positions = (m.cumsum(-1) - 1).clamp_min(0)
        pm = None if m.all() else prefill_mask(m)
        with torch.inference_mode():
            want = model(input_ids=rows, attention_mask=m, position_ids=positions, use_cache=True,
                         **{_cache_kw(model): kv.new_cache()}).logits
            every = dec.step(rows, positions, mask=pm, cache=kv.new_cache(), every_position=True)
            last = dec.step(rows, positions, mask=pm, cache=kv.new_cache())
        assert every.shape == want.shape
        assert torch.equal(every[:, -1], last)
        real = m.bool()
        torch.testing.assert_close(every[real], want[real], atol=1e-5, rtol=1e-5)
