"""GPU tests: everything marked `gpu` (here or anywhere else) is skipped when CUDA is not available,
so `make test` on a CPU-only machine passes; run them alone with ``pytest -m gpu``."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
