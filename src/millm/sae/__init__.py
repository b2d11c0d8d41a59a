"""Sparse autoencoders: one in-memory type (`Sae`), one loader for every supported on-disk format, and hook
names. Pure torch (+ safetensors/numpy/yaml for files); imports nothing from millm except `millm.errors`."""

from millm.sae.base import NormStats, Sae, SaeConfig
from millm.sae.formats.files import SaeHint
from millm.sae.hooknames import HookSpec, parse_hook_name
from millm.sae.loading import check_compatible, detect_format, load_sae
from millm.sae.registry import build_sae, get_sae_class, register_sae_class

__all__ = [
    "HookSpec",
    "NormStats",
    "Sae",
    "SaeConfig",
    "SaeHint",
    "build_sae",
    "check_compatible",
    "detect_format",
    "get_sae_class",
    "load_sae",
    "parse_hook_name",
    "register_sae_class",
]
