"""The SAELens registry resolver, against a fake installed sae_lens whose __init__ must never run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from millm.errors import NotFound, SaeError
from millm.sae.registry_saelens import find_registry_file, list_releases, resolve_pretrained

YAML = """
gemma-scope-2b-pt-res-canonical:
  repo_id: google/gemma-scope-2b-pt-res
  model: gemma-2-2b
  conversion_func: gemma_2
  saes:
  - id: layer_12/width_16k/canonical
    path: layer_12/width_16k/average_l0_82
    l0: 82
    neuronpedia: gemma-2-2b/12-gemmascope-res-16k
llama_scope_lxr_8x:
  repo_id: fnlp/Llama3_1-8B-Base-LXR-8x
  model: meta-llama/Llama-3.1-8B
  conversion_func: llama_scope
  saes:
  - id: l3r_8x
    path: Llama3_1-8B-Base-L3R-8x
    l0: 50
    norm_scaling_factor: 0.37
gpt2-small-res-jb:
  repo_id: jbloom/GPT2-Small-SAEs-Reformatted
  model: gpt2-small
  conversion_func: null
  config_overrides:
    model_from_pretrained_kwargs:
      center_writing_weights: true
  saes:
  - id: blocks.8.hook_resid_pre
    path: blocks.8.hook_resid_pre
    l0: 50
mistral-7b-res-wg:
  repo_id: JoshEngels/Mistral-7B-Residual-Stream-SAEs
  model: mistral-7b
  conversion_func: null
  config_overrides:
    normalize_activations: constant_norm_rescale
  saes:
  - id: blocks.8.hook_resid_pre
    path: mistral_7b_layer_8
goodfire-llama-3.1-8b-instruct:
  repo_id: Goodfire/Llama-3.1-8B-Instruct-SAE-l19
  model: meta-llama/Llama-3.1-8B-Instruct
  conversion_func: goodfire
  saes:
  - id: layer_19
    path: Llama-3.1-8B-Instruct-SAE-l19.pth
"""


@pytest.fixture
def fake_sae_lens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "site" / "sae_lens"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('sae_lens must not be imported')\n")
    (pkg / "pretrained_saes.yaml").write_text(YAML)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return pkg


def test_finds_the_yaml_without_importing(fake_sae_lens: Path) -> None:
    assert find_registry_file() == fake_sae_lens / "pretrained_saes.yaml"
    assert "sae_lens" not in sys.modules
    assert "gpt2-small-res-jb" in list_releases()


def test_resolves_gemma_scope_canonical(fake_sae_lens: Path) -> None:
    r = resolve_pretrained("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
    assert (r.repo_id, r.path, r.format, r.conversion_func) == (
        "google/gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82", "gemma_scope", "gemma_2")
    assert r.neuronpedia_id == "gemma-2-2b/12-gemmascope-res-16k" and r.l0 == 82
    hint = r.hint()
    assert (hint.repo_id, hint.subpath, hint.format, hint.model_name) == (
        "google/gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82", "gemma_scope", "gemma-2-2b")


def test_norm_scaling_factor_and_overrides(fake_sae_lens: Path) -> None:
    r = resolve_pretrained("llama_scope_lxr_8x", "l3r_8x")
    assert r.format == "llama_scope" and r.hint().norm_scaling_factor == 0.37
    m = resolve_pretrained("mistral-7b-res-wg", "blocks.8.hook_resid_pre")
    assert m.format == "saelens" and m.overrides() == {"normalize_activations": "constant_norm_rescale"}
    assert resolve_pretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre").overrides() == {"center_input": True}


def test_unknown_and_unsupported(fake_sae_lens: Path) -> None:
    with pytest.raises(NotFound, match="release 'nope'"):
        resolve_pretrained("nope", "x")
    with pytest.raises(NotFound, match=r"ids look like: blocks\.8\.hook_resid_pre"):
        resolve_pretrained("gpt2-small-res-jb", "blocks.99.hook_resid_pre")
    with pytest.raises(SaeError, match="goodfire"):
        resolve_pretrained("goodfire-llama-3.1-8b-instruct", "layer_19")


def test_hub_repo_release_falls_back_to_saelens_format(fake_sae_lens: Path) -> None:
    r = resolve_pretrained("someone/my-saes", "layer_3")
    assert (r.repo_id, r.path, r.format) == ("someone/my-saes", "layer_3", "saelens")


def test_not_installed_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SaeError, match="sae_lens package installed"):
        resolve_pretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre")


def test_explicit_registry_path(tmp_path: Path) -> None:
    path = tmp_path / "pretrained_saes.yaml"
    path.write_text(YAML)
    assert resolve_pretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre", registry_path=path).model == "gpt2-small"
    with pytest.raises(NotFound):
        resolve_pretrained("x", "y", registry_path=tmp_path / "missing.yaml")
