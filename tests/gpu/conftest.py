"""All GPU-only tests live in this folder (scripts/gpu_bench.sh runs it on the GPU machine). Every test here
is marked `gpu` and skipped when CUDA is not available, so `make test` on a CPU-only machine collects and
skips them; run them alone with ``pytest tests/gpu`` (or ``pytest -m gpu``). A test elsewhere marked `gpu`
is skipped the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.gpu)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
