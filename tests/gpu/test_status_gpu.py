"""The status bar's GPU figures on a CUDA machine (skipped without CUDA)."""

from __future__ import annotations

import torch

from millm.services.system import SystemMonitor


def test_every_cuda_device_is_listed_with_its_memory() -> None:
    x = torch.ones(64 << 20, device="cuda:0", dtype=torch.uint8)  # 64 MiB, and a context on cuda:0
    gpus = SystemMonitor().gpus()
    assert [g.index for g in gpus] == list(range(torch.cuda.device_count()))
    first = gpus[0]
    assert first.name == torch.cuda.get_device_name(0) and first.memory_total_bytes > 1 << 30
    assert first.memory_used_bytes is not None and first.memory_used_bytes >= x.numel()
    assert first.utilization_percent is None or 0 <= first.utilization_percent <= 100
