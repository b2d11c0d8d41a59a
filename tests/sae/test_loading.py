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


def test_check_compatible_names_expected_and_found() -> None:
    sae = make_sae("standard", d_in=16)
    check_compatible(sae, 16)
    with pytest.raises(SaeMismatch, match=r"d_in=16.*width 32"):
        check_compatible(sae, 32, hook_name="model.layers.0")
