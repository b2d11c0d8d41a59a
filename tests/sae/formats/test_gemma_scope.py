from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from millm.errors import NotFound, SaeError, SaeMismatch
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae, write_gemma_scope, write_gemma_scope_2


@pytest.fixture(scope="module")
def sae():  # type: ignore[no-untyped-def]
    return make_sae("jumprelu", d_sae=4096, seed=3)


@pytest.mark.parametrize(("repo", "hook", "site"), [
    ("google/gemma-scope-2b-pt-res", "blocks.5.hook_resid_post", "resid_post"),
    ("google/gemma-scope-9b-pt-mlp", "blocks.5.hook_mlp_out", "mlp_out"),
    ("google/gemma-scope-2b-pt-att", "blocks.5.attn.hook_z", "attn_z"),
])
def test_site_and_model_from_repo_hint(tmp_path: Path, sae, repo: str, hook: str, site: str) -> None:  # type: ignore[no-untyped-def]
    npz = write_gemma_scope(sae, tmp_path, layer=5)
    cfg = load_sae(npz, hint={"repo_id": repo, "subpath": "layer_5/width_4k/average_l0_82"}).cfg
    assert (cfg.hook_name, cfg.site, cfg.layer, cfg.d_in, cfg.d_sae) == (hook, site, 5, 16, 4096)
    assert cfg.model_name == f"gemma-2-{repo.split('-')[2]}"
    assert not cfg.apply_b_dec_to_input and cfg.normalize_activations == "none"


def test_hub_cache_path_is_enough(tmp_path: Path, sae) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "models--google--gemma-scope-9b-it-res" / "snapshots" / "abc"
    cfg = load_sae(write_gemma_scope(sae, root, layer=20).parent).cfg
    assert (cfg.hook_name, cfg.model_name, cfg.source_format) == ("blocks.20.hook_resid_post", "gemma-2-9b-it", "gemma_scope")


def test_width_mismatch_and_missing_layer(tmp_path: Path, sae) -> None:  # type: ignore[no-untyped-def]
    npz = write_gemma_scope(sae, tmp_path, width="16k")
    with pytest.raises(SaeMismatch, match=r"width 16k \(d_sae=16384\)"):
        load_sae(npz)
    flat = tmp_path / "flat"
    flat.mkdir()
    np.savez(flat / "params.npz", **{k: v.numpy() for k, v in sae.state_dict().items()})
    with pytest.raises(SaeError, match="cannot tell the layer"):
        load_sae(flat)
    assert load_sae(flat, hint={"hook_name": "blocks.2.hook_resid_post"}).cfg.layer == 2


def test_embedding_and_transcoders_refused(tmp_path: Path, sae) -> None:  # type: ignore[no-untyped-def]
    npz = write_gemma_scope(sae, tmp_path / "embedding", layer=0)
    with pytest.raises(SaeError, match="transcoders"):
        load_sae(npz, hint={"repo_id": "google/gemma-scope-2b-pt-transcoders"})
    emb = tmp_path / "e" / "embedding" / "width_4k" / "average_l0_6"
    emb.mkdir(parents=True)
    (emb / "params.npz").write_bytes(npz.read_bytes())
    with pytest.raises(SaeError, match="embedding"):
        load_sae(emb)


def test_corrupt_npz(tmp_path: Path) -> None:
    folder = tmp_path / "layer_1" / "width_4k" / "average_l0_1"
    folder.mkdir(parents=True)
    (folder / "params.npz").write_bytes(b"not a zip")
    with pytest.raises(SaeError, match="cannot read npz"):
        load_sae(folder)


def test_gemma_scope_2_hooks(tmp_path: Path, sae) -> None:  # type: ignore[no-untyped-def]
    for hook, site in [("model.layers.3.output", "resid_post"), ("model.layers.3.self_attn.o_proj.input", "attn_z"),
                       ("model.layers.3.post_feedforward_layernorm.output", "mlp_out")]:
        folder = write_gemma_scope_2(sae, tmp_path / site, hook=hook)
        cfg = load_sae(folder / "params.safetensors").cfg
        assert (cfg.site, cfg.layer, cfg.model_name, cfg.source_format) == (site, 3, "google/gemma-3-1b-pt", "gemma_scope_2")


def test_gemma_scope_2_refuses_transcoders_and_needs_config(tmp_path: Path, sae) -> None:  # type: ignore[no-untyped-def]
    folder = write_gemma_scope_2(sae, tmp_path / "t", hook="model.layers.3.pre_feedforward_layernorm.output")
    cfg = (folder / "config.json").read_text().replace(
        '"hf_hook_point_out": "model.layers.3.pre_feedforward_layernorm.output"',
        '"hf_hook_point_out": "model.layers.3.post_feedforward_layernorm.output"')
    (folder / "config.json").write_text(cfg)
    with pytest.raises(SaeError, match="transcoders"):
        load_sae(folder)
    (folder / "config.json").unlink()
    with pytest.raises(NotFound, match="config.json"):
        load_sae(folder)
