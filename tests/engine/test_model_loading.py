"""Loading models: local folders, .bin weights, Gemma-2's eager attention, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM

from millm.engine.model_loading import load_model
from millm.errors import ModelNotFound
from tests.fixtures.tiny_model import build_tokenizer


def test_local_folder_is_served_under_its_name(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    assert lm.model_id == tiny_model_dir.name
    assert (lm.device.type, lm.dtype) == ("cpu", torch.float32)
    assert lm.tokenizer.eos_token_id in lm.eos_ids
    assert lm.context_length == 256
    assert lm.num_parameters == sum(p.numel() for p in lm.model.parameters())


def test_bin_only_weights_load(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    out = tmp_path / "bin-model"
    out.mkdir()
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    build_tokenizer().save_pretrained(out)
    assert list(out.glob("*.bin")) and not list(out.glob("*.safetensors"))
    lm = load_model(str(out))
    ids = torch.tensor([[0, 5, 6]])
    assert torch.allclose(lm.model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_gemma2_loads_with_eager_attention(tmp_path):
    tok = build_tokenizer()
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    Gemma2ForCausalLM(cfg).save_pretrained(tmp_path / "g2")
    tok.save_pretrained(tmp_path / "g2")
    lm = load_model(str(tmp_path / "g2"))
    assert lm.model.config._attn_implementation == "eager"


def test_dtype_override(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound) as e:
        load_model(str(tmp_path / "nope"))
    assert "does not exist" in e.value.message and e.value.param == "model"
