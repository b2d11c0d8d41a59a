from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from millm.errors import SaeError
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae, write_dictionary_learning


def test_site_from_submodule_name_and_metadata(tmp_path: Path) -> None:
    sae = make_sae("standard", apply_b_dec_to_input=True)
    folder = write_dictionary_learning(sae, tmp_path / "mlp_out_layer_2" / "trainer_0", layer=2)
    cfg_path = folder / "config.json"
    raw = json.loads(cfg_path.read_text())
    raw["trainer"]["submodule_name"] = "mlp_out_layer_2"
    cfg_path.write_text(json.dumps(raw))
    c = load_sae(folder / "ae.pt").cfg
    assert (c.hook_name, c.site, c.model_name, c.context_size) == ("blocks.2.hook_mlp_out", "mlp_out", "Qwen/Qwen2.5-7B-Instruct", 128)
    assert c.extra["dict_class"] == "AutoEncoder"


def test_batch_topk_without_learned_threshold_is_topk(tmp_path: Path) -> None:
    sae = make_sae("jumprelu", apply_b_dec_to_input=True, scalar_threshold=True)
    folder = write_dictionary_learning(sae, tmp_path, dict_class="BatchTopKSAE")
    state = torch.load(folder / "ae.pt", weights_only=True)
    torch.save({**state, "threshold": torch.tensor(-1.0)}, folder / "ae.pt")
    loaded = load_sae(folder)
    assert (loaded.cfg.architecture, loaded.cfg.k) == ("topk", 8)
    assert ((loaded.encode(torch.randn(3, 16)) > 0).sum(-1) <= 8).all()


def test_unsupported_class_and_pickles_refused(tmp_path: Path) -> None:
    folder = write_dictionary_learning(make_sae("standard", apply_b_dec_to_input=True), tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    raw["trainer"]["dict_class"] = "CrossCoder"
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(SaeError, match="CrossCoder"):
        load_sae(folder)
    raw["trainer"]["dict_class"] = "AutoEncoder"
    (folder / "config.json").write_text(json.dumps(raw))
    torch.save({"encoder.weight": object()}, folder / "ae.pt")  # not loadable with weights_only
    with pytest.raises(SaeError, match="weights_only"):
        load_sae(folder)
