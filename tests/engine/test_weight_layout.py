"""Input-major Linear weights: same shapes and values, tied weights left alone, outputs unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from millm.engine import weight_layout


def _model(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_switch_keeps_values_and_leaves_tied_weights(monkeypatch, tied):
    monkeypatch.setattr(weight_layout, "MIN_GAIN", -1e9)  # always switch
    model = _model(tied)
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        want = model(input_ids=ids).logits
    assert weight_layout.choose_layout(model)
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
    assert not weight_layout.choose_layout(model)  # nothing left to switch


def test_no_switch_without_a_clear_gain(monkeypatch):
    monkeypatch.setattr(weight_layout, "MIN_GAIN", 1.0)  # never switch
    model = _model(False)
    assert not weight_layout.choose_layout(model)
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Linear))
