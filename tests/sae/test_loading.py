"""Format detection, dispatch, errors and compatibility checks (per-format round trips live in tests/sae/formats)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from millm.errors import NotFound, SaeError, SaeMismatch
from millm.sae.loading import check_compatible, detect_format, load_sae
from tests.sae.builders import make_sae, write_saelens


def test_load_saelens_round_trip(tmp_path: Path) -> None:
    sae = make_sae("jumprelu")
    write_saelens(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert detect_format(tmp_path / "sae") == "saelens"
    assert detect_format(tmp_path / "sae" / "cfg.json") == "saelens"
    x = torch.randn(3, 16)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))


def test_dtype_and_device_arguments(tmp_path: Path) -> None:
    write_saelens(make_sae("standard"), tmp_path)
    sae = load_sae(tmp_path, dtype="bfloat16", device="cpu")
    assert sae.dtype == torch.bfloat16 and sae.cfg.dtype == "bfloat16"
    assert load_sae(tmp_path, dtype=torch.float16).W_dec.dtype == torch.float16


def test_overrides(tmp_path: Path) -> None:
    write_saelens(make_sae("standard"), tmp_path)
    assert load_sae(tmp_path, overrides={"center_input": True}).cfg.center_input
    with pytest.raises(SaeError, match="overrides"):
        load_sae(tmp_path, overrides={"bogus": 1})


def test_missing_path_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="not found"):
        load_sae(tmp_path / "nope")
    write_saelens(make_sae("standard"), tmp_path)
    (tmp_path / "sae_weights.safetensors").unlink()
    with pytest.raises(SaeError, match=r"no known SAE format.*cfg.json"):
        load_sae(tmp_path)
    with pytest.raises(NotFound, match="sae_weights.safetensors"):
        load_sae(tmp_path, hint={"format": "saelens"})


def test_unknown_folder_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SaeError, match=r"weights\.bin"):
        load_sae(tmp_path)
    with pytest.raises(SaeError, match="unsupported SAE format"):
        load_sae(tmp_path, hint={"format": "mystery"})
    with pytest.raises(SaeError, match="unknown SAE hint fields"):
        load_sae(tmp_path, hint={"repo": "x"})


def test_check_compatible_names_expected_and_found() -> None:
    sae = make_sae("standard", d_in=16)
    check_compatible(sae, 16)
    with pytest.raises(SaeMismatch, match=r"d_in=16.*width 32"):
        check_compatible(sae, 32, hook_name="model.layers.0")


# ------------------------------------------------------------------------------------------ one SAE, every format

from tests.sae.builders import (  # noqa: E402
    write_dictionary_learning,
    write_gemma_scope,
    write_gemma_scope_2,
    write_llama_scope,
    write_saelens_pre_v6,
    write_sparsify,
)

WRITERS = {
    "jumprelu": [
        ("saelens", lambda s, p: write_saelens(s, p, hook_name="blocks.3.hook_resid_post")),
        ("saelens_pre_v6", lambda s, p: write_saelens_pre_v6(s, p, hook_name="blocks.3.hook_resid_post")),
        ("gemma_scope", lambda s, p: write_gemma_scope(s, p / "google--gemma-scope-2b-pt-res", layer=3)),
        ("gemma_scope_2", lambda s, p: write_gemma_scope_2(s, p / "resid_post" / "layer_3_width_4k_l0_medium")),
        ("dictionary_learning", lambda s, p: write_dictionary_learning(s, p / "resid_post_layer_3" / "trainer_0")),
    ],
    "jumprelu_batchtopk": [
        ("saelens", lambda s, p: write_saelens(s, p, hook_name="blocks.3.hook_resid_post")),
        ("dictionary_learning", lambda s, p: write_dictionary_learning(s, p / "t", dict_class="BatchTopKSAE")),
    ],
    "jumprelu_llama_scope": [
        ("saelens", lambda s, p: write_saelens(s, p, hook_name="blocks.3.hook_resid_post")),
        ("llama_scope", lambda s, p: write_llama_scope(s, p / "Llama3_1-8B-Base-L3R-8x")),
    ],
    "standard": [
        ("saelens", lambda s, p: write_saelens(s, p, hook_name="blocks.3.hook_resid_post")),
        ("saelens_pre_v6", lambda s, p: write_saelens_pre_v6(s, p, hook_name="blocks.3.hook_resid_post")),
        ("dictionary_learning", lambda s, p: write_dictionary_learning(s, p / "resid_post_layer_3" / "trainer_0")),
    ],
    "topk": [
        ("saelens", lambda s, p: write_saelens(s, p, hook_name="model.layers.3")),
        ("saelens_pre_v6", lambda s, p: write_saelens_pre_v6(s, p, hook_name="blocks.3.hook_resid_post")),
        ("sparsify", lambda s, p: write_sparsify(s, p, hookpoint="layers.3")),
        ("dictionary_learning", lambda s, p: write_dictionary_learning(s, p / "resid_post_layer_3" / "trainer_0")),
    ],
    "gated": [
        ("saelens", lambda s, p: write_saelens(s, p, hook_name="blocks.3.hook_resid_post")),
        ("saelens_pre_v6", lambda s, p: write_saelens_pre_v6(s, p, hook_name="blocks.3.hook_resid_post")),
        ("dictionary_learning", lambda s, p: write_dictionary_learning(s, p / "resid_post_layer_3" / "trainer_0")),
    ],
}


def _reference(kind: str):  # type: ignore[no-untyped-def]
    if kind == "jumprelu":
        return make_sae("jumprelu", d_sae=4096, seed=11)
    if kind == "jumprelu_batchtopk":
        return make_sae("jumprelu", apply_b_dec_to_input=True, scalar_threshold=True, seed=12)
    if kind == "jumprelu_llama_scope":
        sae = make_sae("jumprelu", scalar_threshold=True, normalize_activations="expected_average_only_in", seed=13)
        sae.fold_norm_scaling_factor(1.7)
        return sae
    return make_sae(kind, apply_b_dec_to_input=True, seed=14)


@pytest.mark.parametrize(("kind", "fmt"), [(k, f) for k, ws in WRITERS.items() for f, _ in ws])
def test_every_format_loads_the_same_sae(tmp_path: Path, kind: str, fmt: str) -> None:
    ref = _reference(kind)
    writer = dict(WRITERS[kind])[fmt]
    written = writer(ref, tmp_path)
    hint = {"norm_scaling_factor": ref.cfg.norm_scaling_factor} if fmt == "saelens" and ref.cfg.norm_scaling_factor else None
    loaded = load_sae(written, hint=hint)
    assert loaded.cfg.source_format == fmt
    assert (loaded.cfg.d_in, loaded.cfg.d_sae, loaded.cfg.layer) == (ref.cfg.d_in, ref.cfg.d_sae, 3)
    assert loaded.cfg.site == "resid_post"
    assert loaded.cfg.architecture == ref.cfg.architecture
    x = 2.0 * torch.randn(3, 5, ref.cfg.d_in, generator=torch.Generator().manual_seed(0))
    f_ref, f = ref.encode(x), loaded.encode(x)
    assert (f_ref > 0).sum() > 0
    torch.testing.assert_close(f, f_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loaded.decode(f), ref.decode(f_ref), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loaded(x), ref(x), atol=1e-5, rtol=1e-4)
