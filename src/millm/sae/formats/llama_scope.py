"""Llama Scope (OpenMOSS / fnlp): `hyperparams.json` + `checkpoints/final.safetensors`.

Keys are nn.Linear style: `encoder.weight` [d_sae, d_model], `encoder.bias`, `decoder.weight` [d_model, d_sae],
`decoder.bias` (transposed here). `hyperparams.json`: `d_model`, `d_sae`, `hook_point_in` / `hook_point_out`
(TransformerLens names), scalar `jump_relu_threshold`, `dataset_average_activation_norm.{in,out}`.
Training normalised inputs by s = sqrt(d_model) / avg_norm_in. Following SAELens we fold s into the weights
(expected_average_only_in) and use threshold = jump_relu_threshold * s for every feature. SAELens does not
explain that x s on the threshold and the SAE-formats reference marks it unverified; the registry lists
L0 ~ 50 for these SAEs, which is the check to run on real weights. `fnlp/Llama-Scope-R1-Distill` style folders
(`config.json` + `sae_weights.safetensors` with `log_jumprelu_threshold`) are read too.
Transcoders (hook_point_in != hook_point_out) are refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import SaeConfig
from millm.sae.formats.files import SaeHint, orient, read_json, read_safetensors, take, tensor_dtype, vector
from millm.sae.hooknames import parse_hook_name

HYPERPARAMS_FILE = "hyperparams.json"
WEIGHTS_FILE = "checkpoints/final.safetensors"
R1_CONFIG_FILE = "config.json"
R1_WEIGHTS_FILE = "sae_weights.safetensors"


def detect(path: Path) -> bool:
    folder = path.parent.parent if path.name == "final.safetensors" else (path.parent if path.is_file() else path)
    return (folder / HYPERPARAMS_FILE).is_file()


def detect_r1(path: Path) -> bool:
    folder = path.parent if path.is_file() else path
    if not ((folder / R1_CONFIG_FILE).is_file() and (folder / R1_WEIGHTS_FILE).is_file()):
        return False
    try:
        return "hook_point_in" in read_json(folder / R1_CONFIG_FILE)
    except SaeError:
        return False


def _config(raw: dict, folder: Path, hint: SaeHint, *, d_sae: int, fmt: str) -> SaeConfig:  # type: ignore[type-arg]
    hook_in, hook_out = raw.get("hook_point_in"), raw.get("hook_point_out")
    if hook_out and hook_in != hook_out:
        raise SaeError(f"{folder}: Llama Scope transcoders ({hook_in} -> {hook_out}) are not supported")
    hook_name = hint.hook_name or hook_in
    if not isinstance(hook_name, str) or not isinstance(raw.get("d_model"), int):
        raise SaeError(f"{folder}: Llama Scope config needs 'd_model' and 'hook_point_in'")
    spec = parse_hook_name(hook_name)
    return SaeConfig(
        architecture="jumprelu", d_in=raw["d_model"], d_sae=d_sae, hook_name=hook_name,
        layer=spec.layer, site=spec.site, model_name=hint.model_name or "meta-llama/Llama-3.1-8B",
        apply_b_dec_to_input=False, normalize_activations="expected_average_only_in", prepend_bos=True,
        context_size=1024, source_format=fmt, neuronpedia_id=hint.neuronpedia_id, repo_id=hint.repo_id,
        subpath=hint.subpath,
    )


def _linear_tensors(state: dict[str, Tensor], cfg: SaeConfig, source: Path) -> dict[str, Tensor]:
    return {
        "W_enc": orient(take(state, "encoder.weight", source), (cfg.d_in, cfg.d_sae), "encoder.weight", source),
        "b_enc": vector(take(state, "encoder.bias", source), cfg.d_sae, "encoder.bias", source),
        "W_dec": orient(take(state, "decoder.weight", source), (cfg.d_sae, cfg.d_in), "decoder.weight", source),
        "b_dec": vector(take(state, "decoder.bias", source), cfg.d_in, "decoder.bias", source),
    }


def load(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    folder = path.parent.parent if path.name == "final.safetensors" else (path.parent if path.is_file() else path)
    raw = read_json(folder / HYPERPARAMS_FILE)
    if not isinstance(raw.get("d_sae"), int):
        raise SaeError(f"{folder / HYPERPARAMS_FILE}: missing integer 'd_sae'")
    cfg = _config(raw, folder, hint, d_sae=raw["d_sae"], fmt="llama_scope")
    avg = (raw.get("dataset_average_activation_norm") or {}).get("in")
    threshold = raw.get("jump_relu_threshold")
    if not isinstance(avg, int | float) or avg <= 0 or not isinstance(threshold, int | float):
        raise SaeError(f"{folder / HYPERPARAMS_FILE}: needs jump_relu_threshold and dataset_average_activation_norm.in")
    s = math.sqrt(cfg.d_in) / avg
    source = folder / WEIGHTS_FILE
    state = read_safetensors(source)
    cfg.dtype = tensor_dtype(state)
    tensors = _linear_tensors(state, cfg, source)
    tensors["threshold"] = torch.full((cfg.d_sae,), float(threshold) * s)
    cfg.norm_scaling_factor = hint.norm_scaling_factor or s
    cfg.extra = {"jump_relu_threshold": threshold, "average_activation_norm_in": avg}
    return cfg, tensors


def load_r1(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    folder = path.parent if path.is_file() else path
    raw = read_json(folder / R1_CONFIG_FILE)
    d_sae = raw.get("d_sae") or int(raw.get("d_model", 0)) * int(raw.get("expansion_factor", 0))
    cfg = _config(raw, folder, hint, d_sae=d_sae, fmt="llama_scope_r1")
    source = folder / R1_WEIGHTS_FILE
    state = read_safetensors(source)
    cfg.dtype = tensor_dtype(state)
    tensors = _linear_tensors(state, cfg, source)
    tensors["threshold"] = torch.exp(vector(take(state, "log_jumprelu_threshold", source), d_sae, "log_jumprelu_threshold", source))
    avg = (raw.get("dataset_average_activation_norm") or {}).get("in")
    if hint.norm_scaling_factor is None and isinstance(avg, int | float) and avg > 0:
        cfg.norm_scaling_factor = math.sqrt(cfg.d_in) / avg
    return cfg, tensors
