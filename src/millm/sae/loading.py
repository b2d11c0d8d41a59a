"""Load an SAE from a local folder or file, whatever its format, into one `Sae`.

Contract:
- `load_sae(path, device=, dtype=, hint=, overrides=)` detects the format from the files present (or takes
  `hint.format`), lets the format module read config + tensors (in SAELens orientation), folds an
  expected_average_only_in scaling factor, builds the architecture from the registry and casts.
  `dtype=None` keeps the dtype the source declares (its config, else the stored tensors).
- Errors: a missing path/file -> NotFound naming it; an unrecognised folder -> SaeError listing what was
  found and what each format expects; bad shapes -> SaeMismatch with expected vs found.
- `check_compatible(sae, d_hook)` is the one place that compares an SAE with the tensor it will read.
No network access happens here: downloading is someone else's job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from millm.errors import NotFound, SaeError, SaeMismatch
from millm.sae.base import Sae, SaeConfig, parse_dtype
from millm.sae.formats import dictionary_learning, gemma_scope, llama_scope, saelens, sparsify
from millm.sae.formats.files import SaeHint
from millm.sae.registry import build_sae
from millm.sae.registry_saelens import SUPPORTED_CONVERSIONS

log = logging.getLogger(__name__)


class Format(NamedTuple):
    detect: Callable[[Path], bool]
    load: Callable[[Path, SaeHint], tuple[SaeConfig, dict[str, Tensor]]]
    layout: str  # what the format expects on disk, for error messages


# tried in this order; layouts do not overlap, the order only matters for odd folders holding several
FORMATS: dict[str, Format] = {
    "saelens": Format(saelens.detect, saelens.load, "cfg.json + sae_weights.safetensors"),
    "gemma_scope": Format(gemma_scope.detect_npz, gemma_scope.load_npz, "params.npz (path layer_L/width_W/...)"),
    "gemma_scope_2": Format(gemma_scope.detect_v2, gemma_scope.load_v2, "params.safetensors + config.json"),
    "sparsify": Format(sparsify.detect, sparsify.load, "cfg.json + sae.safetensors (folder named like layers.N)"),
    "dictionary_learning": Format(dictionary_learning.detect, dictionary_learning.load, "ae.pt + config.json"),
    "llama_scope": Format(llama_scope.detect, llama_scope.load, "hyperparams.json + checkpoints/final.safetensors"),
    "llama_scope_r1": Format(llama_scope.detect_r1, llama_scope.load_r1, "config.json + sae_weights.safetensors"),
}
# SAELens registry `conversion_func` -> our format name (None = SAELens format)
CONVERSION_FUNCS = SUPPORTED_CONVERSIONS


def _detect(path: Path) -> str | None:
    for name, fmt in FORMATS.items():
        if fmt.detect(path):
            return name
    return None


def detect_format(path: Path) -> str:
    """Name of the format whose files are at path (a folder, or a file inside one). Raises SaeError."""
    name = _detect(path)
    if name is not None:
        return name
    folder = path.parent if path.is_file() else path
    found = sorted(p.name for p in folder.iterdir())[:20] if folder.is_dir() else []
    inside = [str(p.relative_to(folder)) for p in sorted(folder.glob("*/")) + sorted(folder.glob("*/*/"))
              if p.is_dir() and _detect(p) is not None][:10]
    if inside:
        raise SaeError(f"{path} holds several SAEs; choose one of: {', '.join(inside)}")
    layouts = "; ".join(f"{k}: {v.layout}" for k, v in FORMATS.items())
    raise SaeError(f"no known SAE format at {path} (found {found}); expected one of: {layouts}")


def _as_hint(hint: SaeHint | Mapping[str, Any] | None) -> SaeHint:
    if hint is None:
        return SaeHint()
    if isinstance(hint, SaeHint):
        return hint
    unknown = set(hint) - set(SaeHint.__dataclass_fields__)
    if unknown:
        raise SaeError(f"unknown SAE hint fields {sorted(unknown)}; known: {sorted(SaeHint.__dataclass_fields__)}")
    return SaeHint(**dict(hint))


def load_sae(
    path: Path | str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    hint: SaeHint | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Sae:
    """Local SAE folder/file -> Sae on device. `overrides` replace SaeConfig fields after parsing
    (e.g. {"center_input": True})."""
    p = Path(path)
    if not p.exists():
        raise NotFound(f"SAE path not found: {p}")
    h = _as_hint(hint)
    fmt = h.format or detect_format(p)
    if fmt not in FORMATS:
        fmt = CONVERSION_FUNCS.get(fmt, fmt)
    if fmt not in FORMATS:
        raise SaeError(f"unsupported SAE format {h.format!r}; supported: {', '.join(FORMATS)}",
                       param="format" if h.format else None)
    cfg, tensors = FORMATS[fmt].load(p, h)  # tensors in SAELens orientation
    if overrides:
        unknown = set(overrides) - set(SaeConfig.__dataclass_fields__)
        if unknown:
            raise SaeError(f"unknown SAE config overrides {sorted(unknown)}")
        cfg = replace(cfg, **dict(overrides))
    target = parse_dtype(dtype if dtype is not None else cfg.dtype)
    pending = h.norm_scaling_factor or cfg.norm_scaling_factor
    sae = build_sae(replace(cfg, dtype="float32", norm_scaling_factor=None), tensors)
    if cfg.normalize_activations == "expected_average_only_in":
        if pending is not None:
            sae.fold_norm_scaling_factor(float(pending))
        else:
            log.warning(
                "SAE %s uses expected_average_only_in but no norm_scaling_factor is known; "
                "activations will be off by that factor", p
            )
    log.info("loaded %s SAE from %s (%s)", fmt, p, sae.extra_repr())
    return sae.to(device=device, dtype=target)


def check_compatible(sae: Sae, d_hook: int, *, hook_name: str | None = None, model_name: str | None = None) -> None:
    """Raise SaeMismatch unless the SAE reads tensors of width d_hook (the hooked tensor's width)."""
    if sae.cfg.d_in != d_hook:
        where = f" at {hook_name}" if hook_name else ""
        raise SaeMismatch(
            f"SAE expects d_in={sae.cfg.d_in} (hook {sae.cfg.hook_name or '?'}, model "
            f"{sae.cfg.model_name or '?'}), but the model's hooked tensor{where} has width {d_hook}"
        )
    if model_name and sae.cfg.model_name and _short(sae.cfg.model_name) != _short(model_name):
        log.warning("SAE was trained on %s but is attached to %s", sae.cfg.model_name, model_name)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1].lower()


def list_formats() -> list[str]:
    return list(FORMATS)


__all__ = ["CONVERSION_FUNCS", "FORMATS", "SaeHint", "check_compatible", "detect_format", "list_formats", "load_sae"]
