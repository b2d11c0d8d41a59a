"""saprmarks/dictionary_learning: `ae.pt` (a torch state_dict, read with weights_only=True) + `config.json`.

`config.json` = {"trainer": {dict_class, activation_dim, dict_size, k, layer, lm_name, submodule_name, ...},
"buffer": {ctx_len, ...}}. State-dict keys per dict_class (nn.Linear weights are transposed here):
- AutoEncoder: encoder.weight/bias, decoder.weight, `bias` (pre-bias subtracted on encode) -> standard,
  apply_b_dec_to_input=True.
- AutoEncoderNew: encoder.weight/bias, decoder.weight/bias, no pre-bias -> standard, apply_b_dec_to_input=False.
- GatedAutoEncoder: encoder.weight (no bias), decoder_bias, r_mag, gate_bias, mag_bias -> gated.
- JumpReluAutoEncoder: W_enc, b_enc, W_dec, b_dec, threshold (no b_dec subtraction) -> jumprelu.
- AutoEncoderTopK: encoder.*, decoder.weight, b_dec, buffers k, threshold -> topk (encode uses top-k).
- BatchTopKSAE / MatryoshkaBatchTopKSAE: same keys; encode uses the learned global threshold by default
  -> jumprelu with that threshold on every feature (topk k when the threshold was never set, i.e. < 0).
Training-time activation normalisation is folded into the weights before saving, so these read raw
activations. Residual dictionaries read "the output of the ith layer" (resid_post); `submodule_name` or the
folder name may say mlp_out / attn_out / resid_pre instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import SaeConfig
from millm.sae.formats.files import SaeHint, orient, read_json, read_torch, take, tensor_dtype, vector
from millm.sae.hooknames import parse_hook_name

WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"
_ARCH = {
    "AutoEncoder": "standard",
    "AutoEncoderNew": "standard",
    "GatedAutoEncoder": "gated",
    "JumpReluAutoEncoder": "jumprelu",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "jumprelu",
    "MatryoshkaBatchTopKSAE": "jumprelu",
}
_SITES = ("resid_post", "resid_pre", "mlp_out", "attn_out")


def detect(path: Path) -> bool:
    folder = path.parent if path.is_file() else path
    return (folder / WEIGHTS_FILE).is_file()


def _hook_name(trainer: dict[str, Any], folder: Path, hint: SaeHint) -> str:
    if hint.hook_name:
        return hint.hook_name
    if not isinstance(trainer.get("layer"), int):
        raise SaeError(f"{folder / CONFIG_FILE}: trainer.layer is missing; pass hint.hook_name")
    where = f"{trainer.get('submodule_name') or ''} {folder.parent.name} {folder.name}".lower()
    site = next((s for s in _SITES if s in where), "resid_post")
    return f"blocks.{trainer['layer']}.hook_{site}"


def load(path: Path, hint: SaeHint) -> tuple[SaeConfig, dict[str, Tensor]]:
    folder = path.parent if path.is_file() else path
    raw = read_json(folder / CONFIG_FILE)
    trainer = raw.get("trainer") or {}
    dict_class = str(trainer.get("dict_class", ""))
    if dict_class not in _ARCH:
        raise SaeError(
            f"{folder / CONFIG_FILE}: unsupported dictionary_learning dict_class {dict_class!r}; "
            f"supported: {', '.join(_ARCH)}"
        )
    source = folder / WEIGHTS_FILE
    state = {k: v for k, v in read_torch(source).items() if isinstance(v, Tensor)}
    d_in, d_sae = trainer.get("activation_dim"), trainer.get("dict_size")
    if not isinstance(d_in, int) or not isinstance(d_sae, int):
        raise SaeError(f"{folder / CONFIG_FILE}: trainer.activation_dim and trainer.dict_size must be integers")
    arch = _ARCH[dict_class]
    tensors = _tensors(dict_class, state, d_in, d_sae, source)
    k: int | None = None
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        k = int(state["k"]) if "k" in state else trainer.get("k")
        threshold = state.get("threshold")
        if arch == "jumprelu" and (threshold is None or float(threshold.reshape(-1)[0]) < 0):
            arch = "topk"  # threshold never learned: fall back to per-token top-k
        elif arch == "jumprelu" and threshold is not None:
            tensors["threshold"] = vector(threshold, d_sae, "threshold", source)
    hook_name = _hook_name(trainer, folder, hint)
    spec = parse_hook_name(hook_name)
    cfg = SaeConfig(
        architecture=arch, d_in=d_in, d_sae=d_sae, dtype=tensor_dtype(state), hook_name=hook_name,
        layer=spec.layer, site=spec.site, model_name=hint.model_name or trainer.get("lm_name"),
        apply_b_dec_to_input=dict_class not in ("JumpReluAutoEncoder", "AutoEncoderNew"),
        k=k if arch == "topk" else None, prepend_bos=True, context_size=(raw.get("buffer") or {}).get("ctx_len"),
        source_format="dictionary_learning", neuronpedia_id=hint.neuronpedia_id, repo_id=hint.repo_id,
        subpath=hint.subpath, extra={"dict_class": dict_class, "trainer_class": str(trainer.get("trainer_class"))},
    )
    return cfg, tensors


def _tensors(dict_class: str, state: dict[str, Tensor], d_in: int, d_sae: int, source: Path) -> dict[str, Tensor]:
    def get(name: str) -> Tensor:
        return take(state, name, source)

    if dict_class == "JumpReluAutoEncoder":
        return {
            "W_enc": orient(get("W_enc"), (d_in, d_sae), "W_enc", source),
            "b_enc": vector(get("b_enc"), d_sae, "b_enc", source),
            "W_dec": orient(get("W_dec"), (d_sae, d_in), "W_dec", source),
            "b_dec": vector(get("b_dec"), d_in, "b_dec", source),
            "threshold": vector(get("threshold"), d_sae, "threshold", source),
        }
    out = {
        "W_enc": orient(get("encoder.weight"), (d_in, d_sae), "encoder.weight", source),
        "W_dec": orient(get("decoder.weight"), (d_sae, d_in), "decoder.weight", source),
    }
    if dict_class == "GatedAutoEncoder":
        out["b_dec"] = vector(get("decoder_bias"), d_in, "decoder_bias", source)
        out["b_enc"] = vector(get("gate_bias"), d_sae, "gate_bias", source)
        out["b_mag"] = vector(get("mag_bias"), d_sae, "mag_bias", source)
        out["r_mag"] = vector(get("r_mag"), d_sae, "r_mag", source)
        return out
    out["b_enc"] = vector(get("encoder.bias"), d_sae, "encoder.bias", source)
    b_dec = {"AutoEncoder": "bias", "AutoEncoderNew": "decoder.bias"}.get(dict_class, "b_dec")
    out["b_dec"] = vector(get(b_dec), d_in, b_dec, source)
    return out

