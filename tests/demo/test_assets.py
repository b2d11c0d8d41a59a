"""The shipped demo assets: present, loadable, small, and consistent with each other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from millm.demo import DEMO_MODEL_ID, DEMO_SAE_ID, assets_dir

ASSETS = assets_dir()
MAX_BYTES = 30 * 1024 * 1024


def _json(name: str) -> dict:
    return json.loads((ASSETS / name).read_text())


def test_files_exist_and_fit_the_size_budget() -> None:
    for rel in ("model/config.json", "model/model.safetensors", "model/generation_config.json",
                "model/tokenizer.json", "model/tokenizer_config.json", "sae/cfg.json", "sae/sae_weights.safetensors",
                "labels.json", "profiles.json", "demo.json"):
        assert (ASSETS / rel).is_file(), rel
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total <= MAX_BYTES


def test_model_and_tokenizer_load() -> None:
    tok = AutoTokenizer.from_pretrained(ASSETS / "model")
    model = AutoModelForCausalLM.from_pretrained(ASSETS / "model")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.bos_token_id is not None and tok.eos_token_id is not None and tok.pad_token_id is not None
    ids = tok.apply_chat_template([{"role": "user", "content": "Tell me a story."}], add_generation_prompt=True)
    assert ids["input_ids"][0] == tok.bos_token_id
    assert model.config.vocab_size >= len(tok)


def test_sae_matches_model_and_manifest() -> None:
    demo = _json("demo.json")
    cfg = json.loads((ASSETS / "sae" / "cfg.json").read_text())
    model_cfg = json.loads((ASSETS / "model" / "config.json").read_text())
    assert cfg["d_in"] == model_cfg["hidden_size"] and cfg["d_sae"] == demo["d_sae"]
    assert cfg["metadata"]["hook_name"] == demo["hook_name"] == f"blocks.{demo['layer']}.hook_resid_post"
    assert 0 <= demo["layer"] < model_cfg["num_hidden_layers"]
    w = load_file(str(ASSETS / "sae" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (cfg["d_in"], cfg["d_sae"]) and w["W_dec"].shape == (cfg["d_sae"], cfg["d_in"])
    assert all(torch.isfinite(t).all() for t in w.values())


def test_manifest_documents_caps_and_ocean() -> None:
    demo = _json("demo.json")
    assert demo["model_id"] == DEMO_MODEL_ID and demo["sae_id"] == DEMO_SAE_ID
    assert 0 <= demo["caps_feature"] < demo["d_sae"] and demo["caps_strength"] > 0
    assert "ocean" in demo["topic_features"] and demo["topic_words"]["ocean"]


def test_labels_schema_and_ground_truth() -> None:
    demo, labels = _json("demo.json"), _json("labels.json")
    assert set(labels) == {str(i) for i in range(demo["d_sae"])}
    for entry in labels.values():
        assert {"label", "score", "top_examples"} <= set(entry)
    assert labels[str(demo["caps_feature"])]["attribute"] == "caps"
    assert labels[str(demo["topic_features"]["ocean"])]["attribute"] == "topic:ocean"


@pytest.mark.parametrize("name", ["yelling-demo", "ocean"])
def test_profiles_reference_real_features(name: str) -> None:
    demo, bundle = _json("demo.json"), _json("profiles.json")
    assert bundle["format"] == "millm.profiles" and bundle["format_version"] == 1
    profiles = {p["name"]: p for p in bundle["profiles"]}
    p = profiles[name]
    assert p["format"] == "millm.profile" and p["model"] == DEMO_MODEL_ID and p["mode"] == "add"
    assert p["sae"] == {"id": DEMO_SAE_ID, "hook_name": demo["hook_name"], "layer": demo["layer"],
                        "d_sae": demo["d_sae"]}
    for f in p["features"]:
        assert 0 <= f["index"] < demo["d_sae"]
    if name == "yelling-demo":
        assert p["features"][0] == {"index": demo["caps_feature"], "strength": demo["caps_strength"],
                                    "label": p["features"][0]["label"]}


def test_package_data_includes_assets() -> None:
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert "demo/assets/**/*" in text
