"""On a GPU: free memory comes from CUDA, and the weight estimate matches what torch allocates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from millm.hub.memory import check_fits, estimate_local
from millm.placement import free_bytes, resolve_placement
from tests.hub.conftest import save_tiny_llama


def test_free_memory_and_weights_match_cuda_allocation(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    save_tiny_llama(tmp_path, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, vocab_size=4096)
    free, _total = torch.cuda.mem_get_info()
    measured = free_bytes("cuda")
    assert abs(measured - free) < 256 * 1024**2
    assert free_bytes("auto") == pytest.approx(measured, abs=256 * 1024**2)

    estimate = estimate_local(tmp_path, placement=resolve_placement("auto", "bfloat16"), context=128)
    assert estimate.device == "cuda"
    check_fits(estimate)

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).to("cuda")
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated() - before
    assert abs(allocated - estimate.weights_bytes) <= 0.01 * estimate.weights_bytes + 64 * 1024
    del model
