"""The SAEs a Hub repo holds, from its file list (and, where a format has one, each SAE's small config file).

Pure functions, no I/O: `find_saes(files, repo_id)` finds the SAE folders by their marker files and reads what
their paths say; `read_config(sae, config)` adds what a config says. The formats (see docs/sae-formats.md):

| format | marker files | from the path | from the config |
|---|---|---|---|
| gemma_scope | `params.npz` | `layer_<L>/width_<W>/average_l0_<N>`; site from the repo id (`-res`, `-mlp`, `-att`) | (none) |
| gemma_scope_2 | `params.safetensors` + `config.json` | `<site>/layer_<L>_width_<W>_l0_<small|medium|big>` | hook point |
| saelens | `cfg.json` + `sae_weights.safetensors` | a TransformerLens hook or `layer_<L>` in the folder name | d_in, d_sae, architecture, hook, Neuronpedia id |
| sparsify | `cfg.json` + `sae.safetensors` | `layers.<L>[.mlp|.self_attn]`, `embed_tokens` | d_in, latents, k |
| llama_scope | `hyperparams.json` | `...L<L><R|A|M|TC>-<N>x` | d_model, d_sae, hook |
| llama_scope_r1 | `config.json` + `sae_weights.safetensors` | `layer_<L>`, ... | d_sae, hook |
| dictionary_learning | `ae.pt` + `config.json` | `..._layer_<L>/trainer_<N>` | activation_dim, dict_size, layer |

Widths are numbers of features (d_sae); Gemma Scope's `16k` is 16384, `1m` 1048576.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from millm.errors import SaeError
from millm.sae.hooknames import parse_hook_name

WIDTHS = {"4k": 4096, "16k": 16384, "32k": 32768, "65k": 65536, "131k": 131072, "262k": 262144,
          "524k": 524288, "1m": 1048576}
# (format, files that must all be in the folder, the config file to read or None)
MARKERS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("gemma_scope", ("params.npz",), None),
    ("gemma_scope_2", ("params.safetensors", "config.json"), "config.json"),
    ("saelens", ("cfg.json", "sae_weights.safetensors"), "cfg.json"),
    ("sparsify", ("cfg.json", "sae.safetensors"), "cfg.json"),
    ("llama_scope", ("hyperparams.json",), "hyperparams.json"),
    ("llama_scope_r1", ("config.json", "sae_weights.safetensors"), "config.json"),
    ("dictionary_learning", ("ae.pt", "config.json"), "config.json"),
)
_GEMMA_REPO = re.compile(r"gemma-scope-\w+?-(?:pt|it)-(res|mlp|att|transcoders)")
_GEMMA_REPO_SITES = {"res": "resid_post", "mlp": "mlp_out", "att": "attn_z", "transcoders": "transcoder"}
_GEMMA_PATH = re.compile(r"(?:^|/)(?:layer_(\d+)|(embedding))/width_(\w+)/average_l0_(\d+)$")
_GEMMA2_PATH = re.compile(r"(?:^|/)([a-z_]+)/layer_(\d+)_width_([0-9]+[km]?)_l0_([a-z0-9]+?)(?:_affine)?$")
_LLAMA_PATH = re.compile(r"L(\d+)(R|A|M|TC)-(\d+)x")
_LLAMA_SITES = {"R": "resid_post", "A": "attn_out", "M": "mlp_out", "TC": "transcoder"}
_LAYER = re.compile(r"(?:^|[/_.-])(?:layer|layers|blocks|l)[_.-]?(\d+)(?=$|[/_.-])", re.IGNORECASE)
_SPARSIFY = re.compile(r"^(?:model\.)?layers\.(\d+)(?:\.(mlp|self_attn))?$")


@dataclass(frozen=True)
class RepoSae:
    path: str  # folder inside the repo, '' for the root
    format: str
    config_file: str | None  # path inside the repo of the config to read, if the format has one
    size_bytes: int
    files: int
    layer: int | None = None
    site: str | None = None
    hook_name: str | None = None
    width: int | None = None  # d_sae
    d_in: int | None = None
    l0: float | None = None
    l0_label: str | None = None  # Gemma Scope 2: small, medium, big
    architecture: str | None = None
    neuronpedia_id: str | None = None


def _parent(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def find_saes(files: dict[str, int | None], repo_id: str) -> list[RepoSae]:
    """Every SAE folder in a repo's file list (name -> size), with what its path says, sorted by site, layer,
    width and L0."""
    by_folder: dict[str, set[str]] = {}
    for name in files:
        by_folder.setdefault(_parent(name), set()).add(name.rsplit("/", 1)[-1])
    found: dict[str, tuple[str, str | None]] = {}
    for folder, names in by_folder.items():
        for fmt, needed, config in MARKERS:
            if set(needed) <= names:
                found[folder] = (fmt, f"{folder}/{config}" if folder and config else config)
                break
    # Llama Scope keeps its weights one level down (checkpoints/final.safetensors): a checkpoints folder is not
    # an SAE of its own.
    for folder in list(found):
        if folder.endswith("checkpoints") and _parent(folder) in found:
            del found[folder]
    out = []
    for folder, (fmt, config) in found.items():
        inside = [n for n in files if folder == "" or n.startswith(folder + "/")]
        if folder == "":  # the root: only what no other SAE folder holds
            inside = [n for n in inside if not any(n.startswith(f + "/") for f in found if f)]
        size = sum(files[n] or 0 for n in inside)
        out.append(_from_path(RepoSae(path=folder, format=fmt, config_file=config, size_bytes=size,
                                      files=len(inside)), repo_id))
    return sorted(out, key=lambda s: (s.site or "~", s.layer if s.layer is not None else 1 << 30, s.width or 0,
                                      s.l0 if s.l0 is not None else 0.0, s.l0_label or "", s.path))


def _from_path(sae: RepoSae, repo_id: str) -> RepoSae:
    path, last = sae.path, sae.path.rsplit("/", 1)[-1]
    if sae.format == "gemma_scope":
        m = _GEMMA_PATH.search(path)
        repo = _GEMMA_REPO.search(repo_id.lower())
        site = _GEMMA_REPO_SITES[repo.group(1)] if repo else None
        if m:
            layer = int(m.group(1)) if m.group(1) else None
            return replace(sae, layer=layer, site="embedding" if m.group(2) else site,
                           width=WIDTHS.get(m.group(3).lower()), l0=float(m.group(4)), architecture="jumprelu",
                           hook_name=_tl_hook(layer, site))
        return replace(sae, site=site, architecture="jumprelu")
    if sae.format == "gemma_scope_2":
        m = _GEMMA2_PATH.search(path)
        if m:
            label = m.group(4)
            return replace(sae, site=m.group(1).removesuffix("_all"), layer=int(m.group(2)),
                           width=WIDTHS.get(m.group(3).lower()) or _int(m.group(3)),
                           l0=float(label) if label.isdigit() else None,
                           l0_label=None if label.isdigit() else label, architecture="jumprelu")
        return replace(sae, architecture="jumprelu")
    if sae.format == "llama_scope":
        m = _LLAMA_PATH.search(last)
        if m:
            return replace(sae, layer=int(m.group(1)), site=_LLAMA_SITES[m.group(2)], architecture="jumprelu")
    if sae.format == "sparsify":
        m = _SPARSIFY.match(last)
        if m:
            site = {"mlp": "mlp_out", "self_attn": "attn_out"}.get(m.group(2) or "", "resid_post")
            return replace(sae, layer=int(m.group(1)), site=site, hook_name=last, architecture="topk")
        if last == "embed_tokens":
            return replace(sae, site="embedding", hook_name=last, architecture="topk")
    hook = _hook_from_name(last)
    if hook is not None:
        return replace(sae, layer=hook[0], site=hook[1], hook_name=last)
    m = _LAYER.search(path)
    return replace(sae, layer=int(m.group(1))) if m else sae


def _tl_hook(layer: int | None, site: str | None) -> str | None:
    names = {"resid_post": "hook_resid_post", "mlp_out": "hook_mlp_out", "attn_z": "attn.hook_z"}
    return f"blocks.{layer}.{names[site]}" if layer is not None and site in names else None


def _hook_from_name(name: str) -> tuple[int, str] | None:
    if not name.startswith(("blocks.", "model.layers.", "layers.", "transformer.h.")):
        return None
    try:
        spec = parse_hook_name(name)
    except SaeError:
        return None
    return spec.layer, spec.site


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def read_config(sae: RepoSae, config: dict[str, Any]) -> RepoSae:
    """What an SAE's config adds to what its path said (the config wins where both say something)."""
    changes: dict[str, Any] = {}
    if sae.format in ("saelens", "llama_scope_r1"):
        raw_meta = config.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        hook = meta.get("hook_name") or config.get("hook_name") or config.get("hook_point")
        changes.update(d_in=_int(config.get("d_in")), width=_int(config.get("d_sae")),
                       architecture=config.get("architecture"), hook_name=hook,
                       neuronpedia_id=meta.get("neuronpedia_id") or config.get("neuronpedia_id"))
    elif sae.format == "sparsify":
        d_in = _int(config.get("d_in"))
        latents = _int(config.get("num_latents")) or None
        if not latents and d_in and _int(config.get("expansion_factor")):
            latents = d_in * int(config["expansion_factor"])
        changes.update(d_in=d_in, width=latents)
    elif sae.format == "llama_scope":
        changes.update(d_in=_int(config.get("d_model")), width=_int(config.get("d_sae")),
                       hook_name=config.get("hook_point_in"))
    elif sae.format == "gemma_scope_2":
        changes.update(hook_name=config.get("hf_hook_point_in"))
    elif sae.format == "dictionary_learning":
        raw_trainer = config.get("trainer")
        trainer: dict[str, Any] = raw_trainer if isinstance(raw_trainer, dict) else {}
        changes.update(d_in=_int(trainer.get("activation_dim")), width=_int(trainer.get("dict_size")),
                       layer=_int(trainer.get("layer")), hook_name=trainer.get("submodule_name"))
    changes = {k: v for k, v in changes.items() if v not in (None, "")}
    if isinstance(changes.get("hook_name"), str):
        hook = _hook_from_name(changes["hook_name"])
        if hook is not None:
            changes.setdefault("layer", hook[0])
            changes["site"] = hook[1]
    for key in ("hook_name", "architecture", "neuronpedia_id"):
        if key in changes and not isinstance(changes[key], str):
            del changes[key]
    return replace(sae, **changes)
