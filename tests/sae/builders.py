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


# ---------------------------------------------------------------------------------------------- Gemma Scope


def write_gemma_scope(sae: Sae, root: Path, *, layer: int = 3, width: str = "4k", l0: int = 82) -> Path:
    """Gemma Scope 1: <root>/layer_L/width_W/average_l0_N/params.npz, keys W_enc [d_in, d_sae] ... threshold.
    Returns the params.npz path. The width segment must name d_sae (4k = 4096, 16k = 16384, ...)."""
    assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
    t = raw_tensors(sae)
    folder = root / f"layer_{layer}" / f"width_{width}" / f"average_l0_{l0}"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in t.items()})
    return folder / "params.npz"


def write_gemma_scope_2(sae: Sae, folder: Path, *, hook: str = "model.layers.3.output") -> Path:
    """Gemma Scope 2: params.safetensors (lower-case w_enc/w_dec) + config.json (hf_hook_point_in ...)."""
    assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
    t = raw_tensors(sae)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {"w_enc": t["W_enc"], "w_dec": t["W_dec"], "b_enc": t["b_enc"], "b_dec": t["b_dec"], "threshold": t["threshold"]}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "params.safetensors"))
    _write_json(folder / "config.json", {
        "hf_hook_point_in": hook, "hf_hook_point_out": hook, "width": sae.cfg.d_sae,
        "model_name": "google/gemma-3-1b-pt", "architecture": "jump_relu", "l0": 20, "affine_connection": False,
        "type": "sae",
    })
    return folder


# ---------------------------------------------------------------------------------------------- sparsify


def write_sparsify(sae: Sae, root: Path, *, hookpoint: str = "layers.3", dtype: torch.dtype = torch.float32) -> Path:
    """sparsify: <root>/<hookpoint>/{cfg.json, sae.safetensors}; encoder.weight [d_sae, d_in], W_dec [d_sae, d_in]."""
    c = sae.cfg
    assert c.architecture == "topk" and c.apply_b_dec_to_input and not c.rescale_acts_by_decoder_norm
    t = raw_tensors(sae)
    folder = root / hookpoint
    folder.mkdir(parents=True, exist_ok=True)
    weights = {"encoder.weight": t["W_enc"].T, "encoder.bias": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, str(folder / "sae.safetensors"))
    _write_json(folder / "cfg.json", {
        "activation": "topk", "expansion_factor": c.d_sae // c.d_in, "normalize_decoder": True,
        "num_latents": c.d_sae, "k": c.k, "multi_topk": False, "skip_connection": False, "transcode": False,
        "d_in": c.d_in,
    })
    _write_json(root / "config.json", {"model": "EleutherAI/pythia-70m", "dataset": "x", "ctx_len": 2048})
    return folder


# ---------------------------------------------------------------------------------------------- dictionary_learning

DICT_CLASSES = {
    "standard": "AutoEncoder",
    "gated": "GatedAutoEncoder",
    "jumprelu": "JumpReluAutoEncoder",
    "topk": "AutoEncoderTopK",
}


def write_dictionary_learning(sae: Sae, folder: Path, *, dict_class: str | None = None, layer: int = 3) -> Path:
    """dictionary_learning: ae.pt (torch state_dict, nn.Linear keys) + config.json {"trainer", "buffer"}.
    `dict_class="BatchTopKSAE"` writes a jumprelu SAE with one global threshold (make it with scalar_threshold)."""
    c = sae.cfg
    t = raw_tensors(sae)
    dict_class = dict_class or DICT_CLASSES[c.architecture]
    linear = {"encoder.weight": t["W_enc"].T.contiguous(), "decoder.weight": t["W_dec"].T.contiguous()}
    if dict_class == "AutoEncoder":
        assert c.apply_b_dec_to_input
        state = {**linear, "encoder.bias": t["b_enc"], "bias": t["b_dec"]}
    elif dict_class == "GatedAutoEncoder":
        assert c.apply_b_dec_to_input
        state = {"encoder.weight": linear["encoder.weight"], "decoder.weight": linear["decoder.weight"],
                 "decoder_bias": t["b_dec"], "r_mag": t["r_mag"], "gate_bias": t["b_enc"], "mag_bias": t["b_mag"]}
    elif dict_class == "JumpReluAutoEncoder":
        assert not c.apply_b_dec_to_input
        state = {k: t[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    elif dict_class == "AutoEncoderTopK":
        assert c.apply_b_dec_to_input
        state = {**linear, "encoder.bias": t["b_enc"], "b_dec": t["b_dec"],
                 "k": torch.tensor(c.k, dtype=torch.int), "threshold": torch.tensor(0.3)}
    elif dict_class == "BatchTopKSAE":
        assert c.apply_b_dec_to_input and c.architecture == "jumprelu"
        assert torch.all(t["threshold"] == t["threshold"][0])
        state = {**linear, "encoder.bias": t["b_enc"], "b_dec": t["b_dec"],
                 "k": torch.tensor(8, dtype=torch.int), "threshold": t["threshold"][0].clone()}
    else:
        raise ValueError(dict_class)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "ae.pt")
    _write_json(folder / "config.json", {
        "trainer": {"dict_class": dict_class, "trainer_class": "SomeTrainer", "activation_dim": c.d_in,
                    "dict_size": c.d_sae, "k": c.k, "layer": layer, "lm_name": "Qwen/Qwen2.5-7B-Instruct",
                    "submodule_name": f"resid_post_layer_{layer}"},
        "buffer": {"ctx_len": 128, "d_submodule": c.d_in},
    })
    return folder


# ---------------------------------------------------------------------------------------------- Llama Scope


def write_llama_scope(sae: Sae, folder: Path, *, hook: str = "blocks.3.hook_resid_post") -> Path:
    """Llama Scope: hyperparams.json + checkpoints/final.safetensors (nn.Linear keys). The SAE must be a
    jumprelu with one threshold value and a folded expected_average_only_in factor s; the file stores the
    un-folded weights, avg_norm_in = sqrt(d_in) / s, and jump_relu_threshold = threshold / s (SAELens' x s)."""
    c = sae.cfg
    assert c.architecture == "jumprelu" and not c.apply_b_dec_to_input and c.norm_scaling_factor is not None
    s = c.norm_scaling_factor
    t = raw_tensors(sae)
    assert torch.all(t["threshold"] == t["threshold"][0])
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    weights = {"encoder.weight": t["W_enc"].T, "encoder.bias": t["b_enc"], "decoder.weight": t["W_dec"].T,
               "decoder.bias": t["b_dec"]}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "checkpoints" / "final.safetensors"))
    _write_json(folder / "hyperparams.json", {
        "d_model": c.d_in, "d_sae": c.d_sae, "hook_point_in": hook, "hook_point_out": hook,
        "jump_relu_threshold": float(t["threshold"][0]) / s, "act_fn": "jumprelu",
        "dataset_average_activation_norm": {"in": c.d_in**0.5 / s, "out": c.d_in**0.5 / s},
    })
    return folder


__all__ = [
    "make_sae",
    "raw_tensors",
    "write_dictionary_learning",
    "write_gemma_scope",
    "write_gemma_scope_2",
    "write_llama_scope",
    "write_saelens",
    "write_saelens_pre_v6",
    "write_sparsify",
]
