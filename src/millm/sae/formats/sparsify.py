"""EleutherAI sparsify (and its predecessor `sae`): one folder per hookpoint, `cfg.json` + `sae.safetensors`.

Keys: `encoder.weight` [num_latents, d_in] (nn.Linear, so transposed here), `encoder.bias`, `W_dec`
[num_latents, d_in] (already SAELens orientation), `b_dec` [d_in]. Encode = TopK(ReLU(W_e (x - b_dec) + b_e)),
decode = sum a_j W_dec[j] + b_dec, i.e. SAELens topk with apply_b_dec_to_input=True. (SAELens' own sparsify
converter transposes W_dec and ties apply_b_dec_to_input to normalize_decoder; the sparsify source does
neither, and neither do we.) The hookpoint is the folder name, an HF module path relative to
`model.base_model` (`layers.N`, `layers.N.mlp`), hooked on the module output. The optional repo-root
`config.json` (training config) names the model. groupmax activations, transcoders and skip connections are
refused.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import SaeConfig
from millm.sae.formats.files import SaeHint, orient, read_json, read_safetensors, take, tensor_dtype, vector
from millm.sae.hooknames import parse_hook_name

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def detect(path: Path) -> bool:
    folder = path.parent if path.is_file() else path
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def load(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    folder = path.parent if path.is_file() else path
    raw = read_json(folder / CFG_FILE)
    if raw.get("activation", "topk") != "topk":
        raise SaeError(f"{folder / CFG_FILE}: sparsify activation {raw.get('activation')!r} is not supported (topk only)")
    if raw.get("transcode"):
        raise SaeError(f"{folder}: sparsify transcoders are not supported")
    state = read_safetensors(folder / WEIGHTS_FILE)
    if state.get("W_skip") is not None or raw.get("skip_connection"):
        raise SaeError(f"{folder}: sparsify skip connections (W_skip) are not supported")
    enc = take(state, "encoder.weight", folder / WEIGHTS_FILE)
    d_in = raw.get("d_in") or hint.d_in or int(enc.shape[1])
    d_sae = raw.get("num_latents") or d_in * int(raw.get("expansion_factor", 0)) or int(enc.shape[0])
    if not isinstance(raw.get("k"), int):
        raise SaeError(f"{folder / CFG_FILE}: missing integer 'k'")
    hook_name = hint.hook_name or folder.name
    try:
        spec = parse_hook_name(hook_name)
    except SaeError as e:
        raise SaeError(f"{folder}: sparsify folder name {folder.name!r} is not a hookpoint like 'layers.12'; "
                       "pass hint.hook_name") from e
    root_cfg = folder.parent / "config.json"
    root = read_json(root_cfg) if root_cfg.is_file() else {}
    source = folder / WEIGHTS_FILE
    cfg = SaeConfig(
        architecture="topk", d_in=d_in, d_sae=d_sae, dtype=tensor_dtype(state), hook_name=hook_name,
        layer=spec.layer, site=spec.site, model_name=hint.model_name or root.get("model"),
        apply_b_dec_to_input=True, k=raw["k"], prepend_bos=True, context_size=root.get("ctx_len"),
        source_format="sparsify", neuronpedia_id=hint.neuronpedia_id, repo_id=hint.repo_id, subpath=hint.subpath,
        extra={k: v for k, v in raw.items() if isinstance(v, str | int | float | bool)},
    )
    tensors = {
        "W_enc": orient(enc, (d_in, d_sae), "encoder.weight", source),
        "b_enc": vector(take(state, "encoder.bias", source), d_sae, "encoder.bias", source),
        "W_dec": orient(take(state, "W_dec", source), (d_sae, d_in), "W_dec", source),
        "b_dec": vector(take(state, "b_dec", source), d_in, "b_dec", source),
    }
    return cfg, tensors
