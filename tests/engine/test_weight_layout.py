"""The CPU decode kernel choice: the fastest candidate wins only by a clear margin; input-major weights keep
shapes and values, tied weights are left alone, and outputs are unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from millm.engine import weight_layout


def force_choice(monkeypatch, winner: str, *, gain: float = 0.5) -> None:
    """Make the timed pass of `winner` take (1 - gain) of the others' time."""

    def fake_seconds(weights, fn, rows):
        if fn is weight_layout._onednn_linear:
            name = "onednn"
        else:
            name = "stored" if weights[0].is_contiguous() else "input-major"
        return 1.0 - gain if name == winner else 1.0

    monkeypatch.setattr(weight_layout, "_pass_seconds", fake_seconds)


def _model(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_input_major_keeps_values_and_leaves_tied_weights(monkeypatch, tied):
    force_choice(monkeypatch, "input-major")
    model = _model(tied)
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        want = model(input_ids=ids).logits
    assert weight_layout.choose_layout(model) == "input-major"
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.shape == before["model.layers.0.self_attn.q_proj.weight"].shape and not q.is_contiguous()
    assert q.t().is_contiguous()
    assert model.lm_head.weight.is_contiguous() == tied
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
    assert weight_layout.choose_layout(model) == "stored"  # nothing left to switch


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_onednn_leaves_the_weights_and_matches_f_linear(monkeypatch):
    force_choice(monkeypatch, "onednn")
    model = _model(False)
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    assert weight_layout.choose_layout(model) == "onednn"
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == ptrs
    fn = weight_layout.linear_fn("onednn")
    w, b = torch.randn(48, 32), torch.randn(48)
    for rows in (1, 3, 8):
        x = torch.randn(rows, 1, 32)
        torch.testing.assert_close(fn(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 1, 32)
    torch.testing.assert_close(fn(x, w.t().contiguous().t(), None), x @ w.t(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("winner", ["input-major", "onednn"])
def test_no_switch_without_a_clear_gain(monkeypatch, winner):
    force_choice(monkeypatch, winner, gain=weight_layout.MIN_GAIN / 2)
    model = _model(False)
    assert weight_layout.choose_layout(model) == "stored"
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_real_timing_picks_a_candidate():
    # Unforced: whatever this machine's timings say, the choice is one of the candidates and the model still
    # computes the same logits.
    model = _model(False)
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    assert weight_layout.choose_layout(model, rounds=1) in ("stored", "input-major", "onednn")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_each_batch_regime_gets_its_own_kernel(monkeypatch):
    # oneDNN clearly faster for 8 rows only: one-row steps keep MKL on the stored weights, batched steps use oneDNN
    def fake_seconds(weights, fn, rows):
        if fn is weight_layout._onednn_linear:
            return 0.5 if rows > 1 else 1.0
        return 1.0 if weights[0].is_contiguous() else 0.9

    monkeypatch.setattr(weight_layout, "_pass_seconds", fake_seconds)
    model = _model(False)
    kernels = weight_layout.choose_kernels(model)
    assert kernels == weight_layout.Kernels(one="stored", batched="onednn")
    assert model.model.layers[0].self_attn.q_proj.weight.is_contiguous()  # the layout stays as stored


def test_input_major_is_one_layout_for_every_regime():
    ms = {"stored": {1: 1.0, 8: 2.0}, "input-major": {1: 0.5, 8: 1.5}, "onednn": {1: 1.0, 8: 1.5}}
    # input-major 2.0 s in all against stored (1 row) + oneDNN (8 rows) 2.5 s: one layout, for both regimes
    assert weight_layout._plan(ms) == weight_layout.Kernels("input-major", "input-major")
    ms["input-major"] = {1: 0.9, 8: 1.5}  # 2.4: not a clear win over 2.5, so the stored layout stays
    assert weight_layout._plan(ms) == weight_layout.Kernels("stored", "onednn")
