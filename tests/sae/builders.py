"""Test builders: random SAEs of any architecture, and writers that save one in each on-disk format's real
layout (key names, orientation, config fields), so loader tests can round-trip the same weights.

Other test packages import `make_sae` and `write_saelens` from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from millm.sae.base import Sae, SaeConfig
from millm.sae.hooknames import parse_hook_name
from millm.sae.registry import build_sae


def make_sae(
    arch: str = "standard",
    *,
    d_in: int = 16,
    d_sae: int = 64,
    seed: int = 0,
    hook_name: str = "blocks.0.hook_resid_post",
    k: int = 8,
    apply_b_dec_to_input: bool = False,
    normalize_activations: str = "none",
    center_input: bool = False,
    rescale_acts_by_decoder_norm: bool = False,
    scalar_threshold: bool = False,
    dtype: torch.dtype = torch.float32,
    model_name: str = "tiny-model",
) -> Sae:
    """A random SAE whose features fire on N(0, 1) inputs (pre-activations are roughly N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    spec = parse_hook_name(hook_name)
    tensors: dict[str, Tensor] = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae**0.5,
        "b_enc": 0.1 * torch.randn(d_sae, generator=g),
        "b_dec": 0.1 * torch.randn(d_in, generator=g),
    }
    if arch == "jumprelu":
        th = 0.5 * torch.rand(d_sae, generator=g)
        tensors["threshold"] = th.fill_(0.25) if scalar_threshold else th
    if arch == "gated":
        tensors["b_mag"] = 0.1 * torch.randn(d_sae, generator=g)
        tensors["r_mag"] = 0.2 * torch.randn(d_sae, generator=g)
    cfg = SaeConfig(
        architecture=arch,
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        layer=spec.layer,
        site=spec.site,
        model_name=model_name,
        apply_b_dec_to_input=apply_b_dec_to_input,
        normalize_activations=normalize_activations,
        center_input=center_input,
        k=k if arch == "topk" else None,
        rescale_acts_by_decoder_norm=rescale_acts_by_decoder_norm,
        source_format="test",
    )
    return build_sae(cfg, tensors).to(dtype=dtype)


def raw_tensors(sae: Sae) -> dict[str, Tensor]:
    """The SAE's tensors as a file would hold them: an expected_average_only_in factor un-folded."""
    t = {name: buf.detach().clone().float() for name, buf in sae.named_buffers()}
    s = sae.cfg.norm_scaling_factor
    if s is not None:
        t["W_enc"], t["W_dec"], t["b_dec"] = t["W_enc"] / s, t["W_dec"] * s, t["b_dec"] * s
    return t


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


# ---------------------------------------------------------------------------------------------- SAELens


def write_saelens(sae: Sae, folder: Path, hook_name: str | None = None, *, version: str = "6.5.0") -> Path:
    """SAELens v6: cfg.json (nested metadata) + sae_weights.safetensors (W_enc [d_in, d_sae] ...)."""
    c = sae.cfg
    t = raw_tensors(sae)
    if c.architecture == "gated":
        t["b_gate"] = t.pop("b_enc")
    cfg: dict[str, Any] = {
        "architecture": c.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
        "reshape_activations": "none",
        "metadata": {
            "model_name": c.model_name,
            "hook_name": hook_name or c.hook_name,
            "hook_head_index": None,
            "context_size": 128,
            "prepend_bos": True,
            "model_class_name": "HookedTransformer",
            "model_from_pretrained_kwargs": {"center_writing_weights": c.center_input},
            "sae_lens_version": version,
            "sae_lens_training_version": version,
            "neuronpedia_id": None,
        },
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "cfg.json", cfg)
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def write_saelens_pre_v6(sae: Sae, folder: Path, hook_name: str | None = None) -> Path:
    """SAELens < 6: flat cfg.json with hook_point / activation_fn_str / boolean normalize_activations."""
    c = sae.cfg
    assert c.architecture in ("standard", "topk", "jumprelu", "gated")
    t = raw_tensors(sae)
    if c.architecture == "gated":
        t["b_gate"] = t.pop("b_enc")
    t["scaling_factor"] = torch.ones(c.d_sae)  # legacy tensor, all ones -> dropped
    norm: Any = {"none": None, "expected_average_only_in": True}.get(c.normalize_activations, c.normalize_activations)
    spec = parse_hook_name(hook_name or c.hook_name)
    cfg = {
        "architecture": "standard" if c.architecture == "topk" else c.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": f"torch.{c.dtype}",
        "device": "cpu",
        "model_name": c.model_name,
        "hook_point": hook_name or c.hook_name,
        "hook_point_layer": spec.layer,
        "hook_point_head_index": None,
        "activation_fn_str": "topk" if c.architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": c.k} if c.architecture == "topk" else {},
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "finetuning_scaling_factor": False,
        "context_size": 128,
        "normalize_activations": norm,
        "model_from_pretrained_kwargs": {"center_writing_weights": c.center_input},
        "sae_lens_training_version": "3.13.0",
    }
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "cfg.json", cfg)
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "sae_weights.safetensors"))
    return folder


__all__ = ["make_sae", "np", "raw_tensors", "write_saelens", "write_saelens_pre_v6"]
