"""Memory estimates: header-derived parameter counts match real models; KV cache; the refusal."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi
from safetensors.numpy import save_file

from millm.errors import InsufficientMemory, NotFound
from millm.hub.memory import (
    GIB,
    OVERHEAD_FRACTION,
    ParamCount,
    check_fits,
    count_local_parameters,
    count_remote_parameters,
    estimate_local,
    estimate_memory,
    estimate_remote,
    kv_cache_bytes,
    sae_size_bytes,
)
from millm.placement import Placement, free_bytes
from tests.hub.conftest import save_tiny_llama
from tests.hub.fake_hub import FakeHub

CPU32 = Placement("cpu", "float32")


@pytest.mark.parametrize("tied", [False, True])
def test_local_count_matches_model_parameters(tmp_path: Path, tied: bool) -> None:
    n_params = save_tiny_llama(tmp_path, tie_word_embeddings=tied)
    count = count_local_parameters(tmp_path)
    assert count.total == n_params
    # Quantizable = the Linear weights of the decoder layers: q,k,v,o + gate,up,down per layer.
    h, kv, inter, layers = 64, 2 * 16, 128, 3
    assert count.quantizable == layers * (h * h + 2 * h * kv + h * h + 3 * h * inter)


def test_sharded_checkpoint(tmp_path: Path) -> None:
    n_params = save_tiny_llama(tmp_path, hidden_size=128, intermediate_size=512)
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tmp_path).save_pretrained(sharded, max_shard_size="200KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert count_local_parameters(sharded).total == n_params


def test_remote_count_and_estimate_via_fake_hub(fake_hub: FakeHub, tiny_llama_dir: tuple[Path, int], tmp_path: Path) -> None:
    folder, n_params = tiny_llama_dir
    fake_hub.add_folder("org/tiny-llama", folder)
    assert count_remote_parameters("org/tiny-llama", endpoint=fake_hub.endpoint).total == n_params
    # huggingface_hub's own helper works against the fake Hub too.
    meta = HfApi(endpoint=fake_hub.endpoint).get_safetensors_metadata("org/tiny-llama")
    assert sum(meta.parameter_count.values()) == n_params
    assert HfApi(endpoint=fake_hub.endpoint).model_info("org/tiny-llama").safetensors.total == n_params

    remote = estimate_remote("org/tiny-llama", endpoint=fake_hub.endpoint, cache_dir=tmp_path,
                             placement=Placement("cpu", "bfloat16"))
    local = estimate_local(folder, placement=Placement("cpu", "bfloat16"))
    assert remote == local and remote.weights_bytes == n_params * 2
    with pytest.raises(NotFound):
        count_remote_parameters("org/none", endpoint=fake_hub.endpoint)


def test_estimate_arithmetic() -> None:
    config = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
              "hidden_size": 4096, "max_position_embeddings": 8192}  # fmt: skip
    params = ParamCount(total=8_000_000_000, quantizable=7_000_000_000, stored_bytes=16_000_000_000)
    bf16 = estimate_memory(params=params, config=config, placement=Placement("cuda:0", "bfloat16"), context=4096)
    assert bf16.weights_bytes == 16_000_000_000
    assert bf16.kv_cache_bytes == 2 * 32 * 8 * 128 * 4096 * 2  # 0.5 GiB
    assert bf16.overhead_bytes == int(OVERHEAD_FRACTION * 16e9) + 512 * 1024**2
    fp32 = estimate_memory(params=params, config=config, placement=CPU32, context=4096)
    assert fp32.weights_bytes == 32_000_000_000 and fp32.kv_cache_bytes == 2 * bf16.kv_cache_bytes
    q8 = estimate_memory(params=params, config=config, placement=Placement("cuda", "bfloat16", "8bit"),
                         context=4096)
    assert q8.weights_bytes == 7_000_000_000 + 1_000_000_000 * 2
    q4 = estimate_memory(params=params, config=config, placement=Placement("cuda", "bfloat16", "4bit"), context=4096,
                         batch=2,
                         sae_bytes=GIB)  # fmt: skip
    assert q4.weights_bytes == 3_500_000_000 + 2_000_000_000
    assert q4.kv_cache_bytes == 2 * bf16.kv_cache_bytes and q4.sae_bytes == GIB
    assert q4.total_bytes == q4.weights_bytes + q4.kv_cache_bytes + q4.sae_bytes + q4.overhead_bytes
    default_ctx = estimate_memory(params=params, config=config, placement=Placement("cuda", "bfloat16"))
    assert default_ctx.context == 8192


def test_kv_cache_reads_nested_and_gpt2_style_configs() -> None:
    nested = {"text_config": {"num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16}}
    assert kv_cache_bytes(nested, context=10) == 2 * 2 * 4 * 16 * 10 * 2
    gpt2 = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024}
    assert kv_cache_bytes(gpt2, context=1024, bytes_per_value=4) == 2 * 12 * 12 * 64 * 1024 * 4


def test_check_fits_refuses_unless_forced(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path)
    estimate = estimate_local(tmp_path, placement=CPU32)
    assert check_fits(estimate, available=10 * GIB) == 10 * GIB
    with pytest.raises(InsufficientMemory) as info:
        check_fits(estimate, available=1000)
    assert "force" in info.value.message and "GiB" in info.value.message
    assert info.value.code == "insufficient_memory"
    check_fits(estimate, available=1000, force=True)
    assert free_bytes("cpu") > 0


def test_sae_size_from_headers(tmp_path: Path) -> None:
    saelens = tmp_path / "saelens"
    saelens.mkdir()
    save_file({"W_enc": np.zeros((16, 64), np.float32), "b_enc": np.zeros(64, np.float32)}, saelens / "sae_weights.safetensors")
    assert sae_size_bytes(saelens) == (16 * 64 + 64) * 4
    assert sae_size_bytes(saelens, dtype="bfloat16") == (16 * 64 + 64) * 2
    scope = tmp_path / "scope"
    scope.mkdir()
    buf = io.BytesIO()
    np.savez(buf, W_enc=np.zeros((8, 32), np.float32), threshold=np.zeros(32, np.float32))
    (scope / "params.npz").write_bytes(buf.getvalue())
    assert zipfile.is_zipfile(scope / "params.npz")
    assert sae_size_bytes(scope) == (8 * 32 + 32) * 4
