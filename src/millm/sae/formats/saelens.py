"""SAELens folders: `cfg.json` + `sae_weights.safetensors` (v6 nested `metadata`, and pre-v6 flat configs).

Version: a config is pre-v6 when `sae_lens_version` (top level or in `metadata`) is absent or below 6.
Pre-v6 renames: hook_point -> hook_name, hook_point_head_index -> hook_head_index, activation_fn_str ->
activation_fn; defaults apply_b_dec_to_input=True, architecture=standard; activation_fn 'topk' with
activation_fn_kwargs.k -> topk; boolean normalize_activations True -> expected_average_only_in.
A legacy `scaling_factor` tensor is folded into W_dec rows when `finetuning_scaling_factor` is set (dropped
when all ones). `center_input` is set when the SAE was trained with TransformerLens'
center_writing_weights on a LayerNorm model (GPT-2 style), where TL's residual is HF's minus its mean.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import SaeConfig
from millm.sae.formats.files import SaeHint, orient, read_json, read_safetensors, take, vector
from millm.sae.hooknames import parse_hook_name
from millm.sae.registry import canonical_architecture

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# TransformerLens applies center_writing_weights only to LayerNorm models
_LAYERNORM_MODELS = ("gpt2", "gpt-2", "pythia", "gpt-neo", "gpt-j", "opt-", "bloom", "tiny-stories", "solu", "gelu-")


def detect(path: Path) -> bool:
    folder = path.parent if path.is_file() else path
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def is_v6(cfg: dict[str, Any]) -> bool:
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    if not version:
        return False
    try:
        return int(str(version).split(".")[0]) >= 6
    except ValueError:
        return False


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """v6 -> one flat dict (metadata merged under the top level); pre-v6 -> renamed to v6 names."""
    if is_v6(raw):
        flat = {k: v for k, v in raw.items() if k != "metadata"}
        flat.update({k: v for k, v in (raw.get("metadata") or {}).items() if v is not None or k not in flat})
        return flat
    flat = dict(raw)
    for old, new in (
        ("hook_point", "hook_name"),
        ("hook_point_head_index", "hook_head_index"),
        ("activation_fn_str", "activation_fn"),
        ("hook_point_layer", "hook_layer"),
    ):
        if old in flat and new not in flat:
            flat[new] = flat.pop(old)
    flat.setdefault("apply_b_dec_to_input", True)
    flat.setdefault("prepend_bos", True)
    arch = flat.get("architecture") or "standard"
    kwargs = flat.get("activation_fn_kwargs") or {}
    if flat.get("activation_fn") == "topk" and "k" in kwargs:
        arch, flat["k"] = "topk", kwargs["k"]
    elif flat.get("activation_fn") not in (None, "relu", "topk") and arch == "standard":
        raise SaeError(f"unsupported pre-v6 activation_fn {flat.get('activation_fn')!r}")
    flat["architecture"] = arch
    norm = flat.get("normalize_activations")
    if norm is True:
        flat["normalize_activations"] = "expected_average_only_in"
    elif norm in (None, False):
        flat["normalize_activations"] = "none"
    return flat


def center_input_from(flat: dict[str, Any]) -> bool:
    """True when TransformerLens centred the residual stream this SAE was trained on."""
    kwargs = flat.get("model_from_pretrained_kwargs") or {}
    model = str(flat.get("model_name") or "").lower()
    return bool(kwargs.get("center_writing_weights")) and any(m in model for m in _LAYERNORM_MODELS)


def config_from_dict(raw: dict[str, Any], *, source_format: str, hint: SaeHint) -> SaeConfig:
    flat = _flatten(raw)
    for key in ("d_in", "d_sae"):
        if not isinstance(flat.get(key), int):
            raise SaeError(f"SAELens config lacks integer {key!r}; found keys {sorted(flat)}")
    hook_name = hint.hook_name or flat.get("hook_name") or ""
    layer, site = None, None
    if hook_name:
        try:
            spec = parse_hook_name(hook_name)
            layer, site = spec.layer, spec.site
        except SaeError:
            log.warning("SAE hook %r is not a supported hook name; set a hook explicitly", hook_name)
    if layer is None and isinstance(flat.get("hook_layer"), int):
        layer = flat["hook_layer"]
    known = set(SaeConfig.__dataclass_fields__)
    return SaeConfig(
        architecture=canonical_architecture(str(flat["architecture"])),
        d_in=flat["d_in"],
        d_sae=flat["d_sae"],
        dtype=str(flat.get("dtype") or "float32"),
        hook_name=hook_name,
        layer=layer,
        site=site,
        model_name=hint.model_name or flat.get("model_name"),
        apply_b_dec_to_input=bool(flat.get("apply_b_dec_to_input", False)),
        normalize_activations=str(flat.get("normalize_activations") or "none"),
        center_input=center_input_from(flat),
        k=flat.get("k"),
        rescale_acts_by_decoder_norm=bool(flat.get("rescale_acts_by_decoder_norm", False)),
        prepend_bos=bool(flat.get("prepend_bos", True)),
        context_size=flat.get("context_size"),
        hook_head_index=flat.get("hook_head_index"),
        source_format=source_format,
        neuronpedia_id=hint.neuronpedia_id or flat.get("neuronpedia_id"),
        repo_id=hint.repo_id,
        subpath=hint.subpath,
        extra={k: v for k, v in flat.items() if k not in known and isinstance(v, str | int | float | bool)},
    )


def tensors_from_state(state: dict[str, Tensor], cfg: SaeConfig, source: Path, raw: dict[str, Any]) -> dict[str, Tensor]:
    """SAELens state dict -> Sae tensors, checking orientation and folding a legacy scaling_factor."""
    d_in, d_sae = cfg.d_in, cfg.d_sae
    out: dict[str, Tensor] = {
        "W_enc": orient(take(state, "W_enc", source), (d_in, d_sae), "W_enc", source),
        "W_dec": orient(take(state, "W_dec", source), (d_sae, d_in), "W_dec", source),
        "b_dec": vector(take(state, "b_dec", source), d_in, "b_dec", source),
    }
    if cfg.architecture == "gated":
        out["b_enc"] = vector(take(state, "b_gate", source), d_sae, "b_gate", source)
        out["b_mag"] = vector(take(state, "b_mag", source), d_sae, "b_mag", source)
        out["r_mag"] = vector(take(state, "r_mag", source), d_sae, "r_mag", source)
    else:
        out["b_enc"] = vector(take(state, "b_enc", source), d_sae, "b_enc", source)
    if cfg.architecture == "jumprelu":
        if "threshold" in state:
            out["threshold"] = vector(state["threshold"], d_sae, "threshold", source)
        elif "log_threshold" in state:
            out["threshold"] = torch.exp(vector(state["log_threshold"], d_sae, "log_threshold", source))
        else:
            raise SaeError(f"{source}: jumprelu SAE has no 'threshold' tensor; found {sorted(state)}")
    scaling = state.get("scaling_factor")
    if scaling is not None and not torch.all(scaling == 1):
        if not raw.get("finetuning_scaling_factor"):
            raise SaeError(f"{source}: scaling_factor is not all ones but finetuning_scaling_factor is not set")
        out["W_dec"] = out["W_dec"] * vector(scaling, d_sae, "scaling_factor", source)[:, None]
    return out


def load(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    folder = path.parent if path.is_file() else path
    raw = read_json(folder / CFG_FILE)
    fmt = "saelens" if is_v6(raw) else "saelens_pre_v6"
    cfg = config_from_dict(raw, source_format=fmt, hint=hint)
    state = read_safetensors(folder / WEIGHTS_FILE)
    return cfg, tensors_from_state(state, cfg, folder / WEIGHTS_FILE, raw)
