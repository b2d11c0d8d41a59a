"""SAELens' pretrained-SAE registry: (release, sae_id) -> where the files are and how to read them.

The registry is `pretrained_saes.yaml` inside the installed `sae_lens` package. Importing sae_lens pulls in
TransformerLens, datasets and more, so we never import it: `importlib.util.find_spec("sae_lens")` locates
the package directory without running its `__init__`, and we parse the yaml ourselves (PyYAML). Without
sae_lens installed, `resolve_pretrained` raises SaeError (pass `registry_path` to use a vendored copy).

Resolution follows SAELens (`loading/pretrained_saes_directory.py`): release -> repo_id, conversion_func,
model, config_overrides; sae_id -> path (a folder, or a file for .pt/.npz formats), neuronpedia id,
norm_scaling_factor, l0. A release not in the registry but containing '/' is taken as a Hub repo id with
sae_id as the folder (SAELens format). Registry data has known errors, so loaders still validate shapes.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from millm.errors import NotFound, SaeError
from millm.sae.formats.files import SaeHint
from millm.sae.formats.saelens import center_input_from

REGISTRY_FILE = "pretrained_saes.yaml"
# SAELens conversion_func -> miLLM format name (None = SAELens format); millm.sae.loading uses it too.
SUPPORTED_CONVERSIONS: dict[str | None, str] = {
    None: "saelens",
    "sae_lens": "saelens",
    "gemma_2": "gemma_scope",
    "gemma_3": "gemma_scope_2",
    "sparsify": "sparsify",
    "dictionary_learning_1": "dictionary_learning",
    "llama_scope": "llama_scope",
    "llama_scope_r1_distill": "llama_scope_r1",
}
# SAELens config_overrides keys that map onto SaeConfig fields
_OVERRIDE_KEYS = ("normalize_activations", "apply_b_dec_to_input", "prepend_bos", "context_size", "model_name")


@dataclass(frozen=True)
class PretrainedSae:
    release: str
    sae_id: str
    repo_id: str
    path: str  # inside the repo: a folder, or a file (params.npz, ae.pt ...)
    format: str  # miLLM format name, see millm.sae.loading.FORMATS
    conversion_func: str | None = None
    model: str | None = None
    neuronpedia_id: str | None = None
    norm_scaling_factor: float | None = None
    l0: float | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def hint(self) -> SaeHint:
        """What `load_sae` needs to know beyond the files."""
        hook = self.config_overrides.get("hook_name")
        return SaeHint(
            repo_id=self.repo_id,
            subpath=self.path,
            format=self.format,
            norm_scaling_factor=self.norm_scaling_factor,
            neuronpedia_id=self.neuronpedia_id,
            model_name=self.model,
            hook_name=hook if isinstance(hook, str) else None,
        )

    def overrides(self) -> dict[str, Any]:
        """The registry's config_overrides that `load_sae(overrides=...)` understands."""
        out = {k: v for k, v in self.config_overrides.items() if k in _OVERRIDE_KEYS}
        if center_input_from({**self.config_overrides, "model_name": self.model}):
            out["center_input"] = True
        return out


def find_registry_file() -> Path:
    """Path of sae_lens' pretrained_saes.yaml, found without importing sae_lens. Raises SaeError."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        raise SaeError(
            "SAELens release names need the sae_lens package installed (its pretrained_saes.yaml is the registry); "
            "install sae-lens or load the SAE from a local folder or Hub repo id instead"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / REGISTRY_FILE
    if not path.is_file():
        raise SaeError(f"sae_lens is installed but {path} is missing")
    return path


@lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader)  # noqa: S506 -- a safe loader
    except (OSError, yaml.YAMLError) as e:
        raise SaeError(f"cannot read SAELens registry {path}: {e}") from e
    if isinstance(data, dict) and "SAE_LOOKUP" in data:  # very old layout
        data = data["SAE_LOOKUP"]
    if not isinstance(data, dict):
        raise SaeError(f"SAELens registry {path}: expected a mapping of releases")
    return data


def load_registry(registry_path: Path | None = None) -> dict[str, Any]:
    """release name -> raw release dict (cached per file version)."""
    path = registry_path or find_registry_file()
    if not path.is_file():
        raise NotFound(f"SAELens registry not found: {path}")
    return _parse(str(path), path.stat().st_mtime_ns)


def list_releases(registry_path: Path | None = None) -> list[str]:
    return sorted(load_registry(registry_path))


def resolve_pretrained(release: str, sae_id: str, *, registry_path: Path | None = None) -> PretrainedSae:
    """(release, sae_id) -> PretrainedSae. Raises NotFound for unknown ids, SaeError for unsupported formats."""
    registry = load_registry(registry_path)
    if release not in registry:
        if "/" in release:
            return PretrainedSae(release=release, sae_id=sae_id, repo_id=release, path=sae_id, format="saelens")
        raise NotFound(f"SAELens release {release!r} not found in the registry ({len(registry)} releases)")
    info = registry[release] or {}
    entries = {str(e.get("id")): e for e in info.get("saes") or [] if isinstance(e, dict)}
    if sae_id not in entries:
        some = ", ".join(list(entries)[:5])
        raise NotFound(f"SAE id {sae_id!r} not found in release {release!r}; ids look like: {some}")
    entry = entries[sae_id]
    conversion = info.get("conversion_func")
    if conversion not in SUPPORTED_CONVERSIONS:
        raise SaeError(
            f"release {release!r} uses SAELens loader {conversion!r}, which miLLM does not read; supported: "
            f"{', '.join(str(k) for k in SUPPORTED_CONVERSIONS if k)} and SAELens-format repos"
        )
    overrides = dict(info.get("config_overrides") or {})
    overrides.update(entry.get("config_overrides") or {})
    nsf = entry.get("norm_scaling_factor")
    l0 = entry.get("l0")
    return PretrainedSae(
        release=release,
        sae_id=sae_id,
        repo_id=str(info.get("repo_id") or ""),
        path=str(entry.get("path") or sae_id),
        format=SUPPORTED_CONVERSIONS[conversion],
        conversion_func=conversion,
        model=info.get("model"),
        neuronpedia_id=entry.get("neuronpedia"),
        norm_scaling_factor=float(nsf) if isinstance(nsf, int | float) else None,
        l0=float(l0) if isinstance(l0, int | float) else None,
        config_overrides=overrides,
    )
