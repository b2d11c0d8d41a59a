from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from millm.errors import SaeError
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae, raw_tensors, write_llama_scope


def _folded(s: float = 2.0):  # type: ignore[no-untyped-def]
    sae = make_sae("jumprelu", scalar_threshold=True, normalize_activations="expected_average_only_in", seed=4)
    sae.fold_norm_scaling_factor(s)
    return sae


def test_threshold_scaled_and_factor_folded_like_saelens(tmp_path: Path) -> None:
    folder = write_llama_scope(_folded(2.0), tmp_path / "L3R", hook="blocks.3.hook_mlp_out")
    raw = json.loads((folder / "hyperparams.json").read_text())
    loaded = load_sae(folder / "checkpoints" / "final.safetensors")
    s = math.sqrt(16) / raw["dataset_average_activation_norm"]["in"]
    assert loaded.cfg.norm_scaling_factor == pytest.approx(s) == pytest.approx(2.0)
    torch.testing.assert_close(loaded.threshold, torch.full((64,), raw["jump_relu_threshold"] * s))
    assert (loaded.cfg.site, loaded.cfg.normalize_activations, loaded.cfg.source_format) == ("mlp_out", "expected_average_only_in", "llama_scope")


def test_transcoder_refused(tmp_path: Path) -> None:
    folder = write_llama_scope(_folded(), tmp_path)
    raw = json.loads((folder / "hyperparams.json").read_text())
    raw["hook_point_in"] = "blocks.3.ln2.hook_normalized"
    (folder / "hyperparams.json").write_text(json.dumps(raw))
    with pytest.raises(SaeError, match="transcoders"):
        load_sae(folder)


def test_r1_distill_layout(tmp_path: Path) -> None:
    sae = make_sae("jumprelu", seed=6)
    t = raw_tensors(sae)
    folder = tmp_path / "L3R"
    folder.mkdir()
    save_file({"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": t["b_enc"], "decoder.weight": t["W_dec"].T.contiguous(),
               "decoder.bias": t["b_dec"], "log_jumprelu_threshold": t["threshold"].log()}, str(folder / "sae_weights.safetensors"))
    (folder / "config.json").write_text(json.dumps({"d_model": 16, "expansion_factor": 4, "hook_point_in": "blocks.3.hook_resid_post",
                                                     "hook_point_out": "blocks.3.hook_resid_post"}))
    loaded = load_sae(folder, hint={"norm_scaling_factor": 1.0})
    assert loaded.cfg.source_format == "llama_scope_r1"
    x = torch.randn(4, 16)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
