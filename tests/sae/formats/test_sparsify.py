from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from millm.errors import SaeError
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae, write_sparsify


def test_bf16_file_hookpoint_and_model(tmp_path: Path) -> None:
    sae = make_sae("topk", apply_b_dec_to_input=True)
    folder = write_sparsify(sae, tmp_path, hookpoint="layers.7.mlp", dtype=torch.bfloat16)
    loaded = load_sae(folder)
    c = loaded.cfg
    assert (c.hook_name, c.layer, c.site, c.k, c.dtype) == ("layers.7.mlp", 7, "mlp_out", 8, "bfloat16")
    assert (c.model_name, c.context_size, c.apply_b_dec_to_input) == ("EleutherAI/pythia-70m", 2048, True)
    assert loaded.dtype == torch.bfloat16
    assert load_sae(folder, dtype="float32").encode(torch.randn(2, 16)).dtype == torch.float32


def test_repo_root_lists_hookpoints(tmp_path: Path) -> None:
    sae = make_sae("topk", apply_b_dec_to_input=True)
    write_sparsify(sae, tmp_path, hookpoint="layers.0")
    write_sparsify(sae, tmp_path, hookpoint="layers.1")
    with pytest.raises(SaeError, match=r"choose one of: layers\.0, layers\.1"):
        load_sae(tmp_path)


@pytest.mark.parametrize(("key", "value", "msg"), [("activation", "groupmax", "groupmax"), ("transcode", True, "transcoders"),
                                                    ("skip_connection", True, "skip")])
def test_unsupported_variants(tmp_path: Path, key: str, value: object, msg: str) -> None:
    folder = write_sparsify(make_sae("topk", apply_b_dec_to_input=True), tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, key: value}))
    with pytest.raises(SaeError, match=msg):
        load_sae(folder)


def test_odd_folder_name_needs_hint(tmp_path: Path) -> None:
    folder = write_sparsify(make_sae("topk", apply_b_dec_to_input=True), tmp_path, hookpoint="embed_tokens")
    with pytest.raises(SaeError, match="hint.hook_name"):
        load_sae(folder)
    assert load_sae(folder, hint={"hook_name": "blocks.0.hook_resid_pre"}).cfg.site == "resid_pre"
