from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from millm.errors import SaeError, SaeMismatch
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae, write_saelens, write_saelens_pre_v6

ARCHS = ["standard", "jumprelu", "topk", "gated"]


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    x = 2.0 * torch.randn(4, a.cfg.d_in, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.encode(x), b.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("writer", [write_saelens, write_saelens_pre_v6])
def test_round_trip(tmp_path: Path, arch: str, writer) -> None:  # type: ignore[no-untyped-def]
    sae = make_sae(arch, apply_b_dec_to_input=True, rescale_acts_by_decoder_norm=False)
    writer(sae, tmp_path, hook_name="blocks.3.hook_mlp_out")
    loaded = load_sae(tmp_path)
    assert loaded.cfg.architecture == arch
    assert (loaded.cfg.layer, loaded.cfg.site) == (3, "mlp_out")
    assert loaded.cfg.source_format == ("saelens" if writer is write_saelens else "saelens_pre_v6")
    assert loaded.cfg.k == (8 if arch == "topk" else None)
    _same(sae, loaded)


def test_v6_topk_rescale_and_layer_norm(tmp_path: Path) -> None:
    sae = make_sae("topk", normalize_activations="layer_norm", rescale_acts_by_decoder_norm=True)
    write_saelens(sae, tmp_path)
    loaded = load_sae(tmp_path)
    assert loaded.cfg.rescale_acts_by_decoder_norm and loaded.cfg.normalize_activations == "layer_norm"
    _same(sae, loaded)


def test_expected_average_only_in_is_folded_from_the_hint(tmp_path: Path) -> None:
    sae = make_sae("jumprelu", normalize_activations="expected_average_only_in")
    sae.fold_norm_scaling_factor(3.0)
    write_saelens_pre_v6(sae, tmp_path)  # boolean normalize_activations: True
    loaded = load_sae(tmp_path, hint={"norm_scaling_factor": 3.0})
    assert loaded.cfg.normalize_activations == "expected_average_only_in"
    assert loaded.cfg.norm_scaling_factor == 3.0
    _same(sae, loaded)


def test_center_writing_weights_sets_center_input_for_gpt2_only(tmp_path: Path) -> None:
    gpt2 = make_sae("standard", center_input=True, model_name="gpt2-small", hook_name="blocks.8.hook_resid_pre")
    write_saelens_pre_v6(gpt2, tmp_path / "a")
    assert load_sae(tmp_path / "a").cfg.center_input
    llama = make_sae("standard", center_input=True, model_name="meta-llama/Llama-3.1-8B")
    write_saelens(llama, tmp_path / "b")
    assert not load_sae(tmp_path / "b").cfg.center_input  # TL only centres LayerNorm models


def test_hf_hook_name_and_metadata(tmp_path: Path) -> None:
    write_saelens(make_sae("standard"), tmp_path, hook_name="model.layers.28")
    cfg = load_sae(tmp_path).cfg
    assert (cfg.hook_name, cfg.layer, cfg.site, cfg.context_size, cfg.prepend_bos) == ("model.layers.28", 28, "resid_post", 128, True)
    assert cfg.model_name == "tiny-model"


def test_transposed_weights_are_fixed_and_wrong_shapes_named(tmp_path: Path) -> None:
    write_saelens(make_sae("standard"), tmp_path)
    path = tmp_path / "sae_weights.safetensors"
    state = load_file(str(path))
    save_file({**state, "W_enc": state["W_enc"].T.contiguous()}, str(path))
    load_sae(tmp_path)  # [d_sae, d_in] is unambiguous when d_in != d_sae
    save_file({**state, "W_dec": torch.zeros(5, 7)}, str(path))
    with pytest.raises(SaeMismatch, match=r"W_dec should be \[64, 16\].*found \[5, 7\]"):
        load_sae(tmp_path)
    save_file({k: v for k, v in state.items() if k != "b_enc"}, str(path))
    with pytest.raises(SaeError, match="missing tensor 'b_enc'"):
        load_sae(tmp_path)


def test_legacy_scaling_factor_is_folded(tmp_path: Path) -> None:
    sae = make_sae("standard")
    write_saelens_pre_v6(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    path = tmp_path / "sae_weights.safetensors"
    state = load_file(str(path))
    scale = torch.linspace(0.5, 2.0, 64)
    save_file({**state, "scaling_factor": scale, "W_dec": state["W_dec"] / scale[:, None]}, str(path))
    with pytest.raises(SaeError, match="finetuning_scaling_factor"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "finetuning_scaling_factor": True}))
    _same(sae, load_sae(tmp_path))
