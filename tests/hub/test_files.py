"""Which repo files a pull fetches."""

from __future__ import annotations

import pytest

from millm.errors import InvalidRequest, NotFound
from millm.hub.files import (
    looks_like_sae,
    normalize_sae_path,
    select_model_files,
    select_sae_files,
    select_weight_files,
)


def test_prefers_transformers_safetensors_shards() -> None:
    names = [
        "consolidated.safetensors", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "pytorch_model.bin", "original/model.safetensors",
    ]  # fmt: skip
    assert select_weight_files(names) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    ]  # fmt: skip


def test_other_safetensors_names_and_bin_fallback() -> None:
    assert select_weight_files(["weights.safetensors", "x.bin"]) == ["weights.safetensors"]
    bins = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
            "training_args.bin", "optimizer.bin"]  # fmt: skip
    assert select_weight_files(bins) == bins[:3]
    assert select_weight_files(["README.md"]) == []


def test_model_files_include_config_tokenizer_and_code() -> None:
    names = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer.model",
             "special_tokens_map.json", "chat_template.jinja", "modeling_custom.py", "README.md", ".gitattributes",
             "onnx/model.onnx", "qwen.tiktoken"]  # fmt: skip
    assert select_model_files(names) == sorted(set(names) - {"README.md", ".gitattributes", "onnx/model.onnx"})
    with pytest.raises(NotFound):
        select_model_files(["config.json"])
    with pytest.raises(NotFound):
        select_model_files(["model.safetensors"])


def test_sae_folder_selection() -> None:
    names = ["a/b/cfg.json", "a/b/sae_weights.safetensors", "a/bc/cfg.json", "a/cfg.json", "README.md"]
    assert select_sae_files(names, "/a/b/") == ["a/b/cfg.json", "a/b/sae_weights.safetensors"]
    assert select_sae_files(["x/params.npz", ".gitattributes"], None) == ["x/params.npz"]
    with pytest.raises(NotFound):
        select_sae_files(names, "zzz")
    with pytest.raises(InvalidRequest):
        normalize_sae_path("a/../../etc")
    assert looks_like_sae(["l/params.npz"]) and looks_like_sae(["cfg.json", "sae_weights.safetensors"])
    assert not looks_like_sae(["config.json", "model.safetensors"])
