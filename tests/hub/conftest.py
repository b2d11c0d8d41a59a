"""Fixtures for offline Hub tests: a running `FakeHub`, an isolated HF environment, tiny models.

Reuse from other test packages with ``from tests.hub.fake_hub import FakeHub`` or by
importing these fixtures (``pytest_plugins = ["tests.hub.conftest"]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from tests.hub.fake_hub import FakeHub


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A started FakeHub; pass ``fake_hub.endpoint`` as ``endpoint=``."""
    with FakeHub() as hub:
        yield hub


@pytest.fixture(autouse=True)
def isolated_hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real token, no real cache, no progress bars: nothing can leak to or from the host."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """huggingface_hub reads 10 MB per chunk; 64 KB makes progress and resume visible on small files."""
    size = 64 * 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", size)
    return size


def save_tiny_llama(out_dir: Path, *, tie_word_embeddings: bool = False, **overrides: int) -> int:
    """Save a random tiny Llama (safetensors) to `out_dir`; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    kwargs = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie_word_embeddings,
    )
    kwargs.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**kwargs))
    model.save_pretrained(out_dir, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    return folder, save_tiny_llama(folder)
