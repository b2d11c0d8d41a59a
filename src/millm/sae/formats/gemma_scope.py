"""Gemma Scope (Gemma 2, `params.npz`) and Gemma Scope 2 (Gemma 3, `params.safetensors` + `config.json`).

Both are JumpReLU SAEs that read raw activations (no normalisation, no b_dec subtraction), with W_enc
[d_in, d_sae] and W_dec [d_sae, d_in] already in SAELens orientation.

Gemma Scope 1 has no config. Layer, width and site come from the path segments
(`layer_<L>/width_<W>/average_l0_<N>`) and the repo id (`google/gemma-scope-2b-pt-res` -> resid_post; `-mlp`
-> mlp_out; `-att` -> attn_z), taken from `hint.repo_id`/`hint.subpath` or, failing that, from the local path
itself (a Hub cache path contains `models--google--gemma-scope-...`). d_in comes from the tensors.
Embedding SAEs and transcoders are refused.

Gemma Scope 2: lower-case keys `w_enc`, `w_dec`, `b_enc`, `b_dec`, `threshold`; `config.json` gives
`architecture` (must be jump_relu), `model_name`, `hf_hook_point_in` (e.g. `model.layers.5.output`) and
`hf_hook_point_out`. Transcoders (in != out, or `affine_skip_connection`) are refused.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from millm.errors import SaeError, SaeMismatch
from millm.sae.base import SaeConfig
from millm.sae.formats.files import SaeHint, orient, read_json, read_safetensors, require_file, take, vector
from millm.sae.hooknames import parse_hook_name

NPZ_FILE = "params.npz"
ST_FILE = "params.safetensors"
CONFIG_FILE = "config.json"
_WIDTHS = {"4k": 4096, "16k": 16384, "32k": 32768, "65k": 65536, "131k": 131072, "262k": 262144,
           "524k": 524288, "1m": 1048576}
_REPO_RE = re.compile(r"gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att|transcoders)")
_SITE_HOOKS = {"res": "blocks.{L}.hook_resid_post", "mlp": "blocks.{L}.hook_mlp_out", "att": "blocks.{L}.attn.hook_z"}


# ------------------------------------------------------------------------------------------ Gemma Scope 1


def detect_npz(path: Path) -> bool:
    return (path.name == NPZ_FILE and path.is_file()) or (path / NPZ_FILE).is_file()


def _read_npz(path: Path) -> dict[str, Tensor]:
    require_file(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            # SAELens also renames w_* keys to W_*
            return {re.sub(r"^w_", "W_", k): torch.from_numpy(np.asarray(data[k]).copy()) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SaeError(f"cannot read npz file {path}: {e}") from e


def load_npz(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    file = path if path.is_file() else path / NPZ_FILE
    state = _read_npz(file)
    w_enc = take(state, "W_enc", file)
    if w_enc.ndim != 2:
        raise SaeMismatch(f"{file}: W_enc should be 2-D [d_in, d_sae], found {list(w_enc.shape)}")
    where = "/".join(filter(None, [hint.repo_id, hint.subpath, str(file.parent)]))
    if re.search(r"(^|/)embedding(/|$)", hint.subpath or str(file.parent)):
        raise SaeError(f"{file}: Gemma Scope embedding SAEs are not supported (they read hook_embed)")
    width = re.search(r"width_(\d+[km])", where)
    d_sae = _WIDTHS.get(width.group(1)) if width else None
    d_in, n = w_enc.shape
    if d_sae is not None and d_sae != n and d_sae == d_in:
        d_in, n = n, d_in  # stored transposed
    if d_sae is not None and d_sae != n:
        raise SaeMismatch(f"{file}: path says width {width.group(1) if width else '?'} (d_sae={d_sae}), "
                          f"but W_enc is {list(w_enc.shape)}")
    layer_m = re.search(r"layer_(\d+)", where)
    repo_m = _REPO_RE.search(where.replace("--", "/"))
    if repo_m and repo_m.group(3) == "transcoders":
        raise SaeError(f"{file}: Gemma Scope transcoders are not supported")
    if hint.hook_name:
        hook_name = hint.hook_name
    elif layer_m is None:
        raise SaeError(f"{file}: cannot tell the layer; pass a hint with subpath 'layer_<L>/...' or hook_name")
    else:
        site = repo_m.group(3) if repo_m else "res"
        hook_name = _SITE_HOOKS[site].format(L=layer_m.group(1))
    spec = parse_hook_name(hook_name)
    model = f"gemma-2-{repo_m.group(1)}{'-it' if repo_m.group(2) == 'it' else ''}" if repo_m else None
    cfg = SaeConfig(
        architecture="jumprelu", d_in=d_in, d_sae=n, dtype="float32", hook_name=hook_name,
        layer=spec.layer, site=spec.site, model_name=hint.model_name or model, apply_b_dec_to_input=False,
        prepend_bos=True, context_size=1024, source_format="gemma_scope", neuronpedia_id=hint.neuronpedia_id,
        repo_id=hint.repo_id, subpath=hint.subpath,
    )
    return cfg, _jumprelu_tensors(state, cfg, file, upper=True)


def _jumprelu_tensors(state: dict[str, Tensor], cfg: SaeConfig, source: Path, *, upper: bool) -> dict[str, Tensor]:
    w = "W" if upper else "w"
    return {
        "W_enc": orient(take(state, f"{w}_enc", source), (cfg.d_in, cfg.d_sae), f"{w}_enc", source),
        "W_dec": orient(take(state, f"{w}_dec", source), (cfg.d_sae, cfg.d_in), f"{w}_dec", source),
        "b_enc": vector(take(state, "b_enc", source), cfg.d_sae, "b_enc", source),
        "b_dec": vector(take(state, "b_dec", source), cfg.d_in, "b_dec", source),
        "threshold": vector(take(state, "threshold", source), cfg.d_sae, "threshold", source),
    }


# ------------------------------------------------------------------------------------------ Gemma Scope 2


def detect_v2(path: Path) -> bool:
    folder = path.parent if path.is_file() else path
    return (folder / ST_FILE).is_file()


def load_v2(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    folder = path.parent if path.is_file() else path
    raw = read_json(folder / CONFIG_FILE)
    arch = str(raw.get("architecture", "jump_relu"))
    if arch not in ("jump_relu", "jumprelu"):
        raise SaeError(f"{folder / CONFIG_FILE}: Gemma Scope 2 architecture must be jump_relu, found {arch!r}")
    hook_in, hook_out = raw.get("hf_hook_point_in"), raw.get("hf_hook_point_out")
    if raw.get("affine_connection") or (hook_out and hook_in and hook_out != hook_in):
        raise SaeError(f"{folder}: Gemma Scope 2 transcoders ({hook_in} -> {hook_out}) are not supported")
    state = read_safetensors(folder / ST_FILE)
    if "affine_skip_connection" in state:
        raise SaeError(f"{folder / ST_FILE}: affine_skip_connection (transcoder) is not supported")
    hook_name = hint.hook_name or hook_in
    if not hook_name:
        layer_m = re.search(r"layer_(\d+)", str(folder))
        if layer_m is None:
            raise SaeError(f"{folder / CONFIG_FILE}: no hf_hook_point_in and no layer_<L> in the path")
        hook_name = f"model.layers.{layer_m.group(1)}.output"
    spec = parse_hook_name(hook_name)
    d_in, d_sae = take(state, "w_enc", folder / ST_FILE).shape
    if raw.get("width") == d_in != d_sae:
        d_in, d_sae = d_sae, d_in  # stored transposed
    cfg = SaeConfig(
        architecture="jumprelu", d_in=int(d_in), d_sae=int(d_sae), dtype="float32", hook_name=hook_name,
        layer=spec.layer, site=spec.site, model_name=hint.model_name or raw.get("model_name"),
        apply_b_dec_to_input=False, prepend_bos=True, source_format="gemma_scope_2",
        neuronpedia_id=hint.neuronpedia_id, repo_id=hint.repo_id, subpath=hint.subpath,
        extra={k: v for k, v in raw.items() if isinstance(v, str | int | float | bool)},
    )
    if isinstance(raw.get("width"), int) and raw["width"] != cfg.d_sae:  # noqa: SIM102
        raise SaeMismatch(f"{folder / CONFIG_FILE}: width {raw['width']} but w_enc is {[d_in, d_sae]}")
    return cfg, _jumprelu_tensors(state, cfg, folder / ST_FILE, upper=False)
