"""Architecture name -> Sae subclass. Add an architecture by adding a file and one `register_sae_class` line."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import Sae, SaeConfig
from millm.sae.gated import GatedSae
from millm.sae.jumprelu import JumpReluSae
from millm.sae.standard import StandardSae
from millm.sae.topk import TopKSae

SAE_CLASSES: dict[str, type[Sae]] = {}

# names other libraries use for the same architectures
ALIASES = {"relu": "standard", "jump_relu": "jumprelu", "jumprelu": "jumprelu", "top_k": "topk"}


def register_sae_class(cls: type[Sae]) -> type[Sae]:
    SAE_CLASSES[cls.architecture] = cls
    return cls


def canonical_architecture(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


def get_sae_class(name: str) -> type[Sae]:
    key = canonical_architecture(name)
    if key not in SAE_CLASSES:
        raise SaeError(f"unsupported SAE architecture {name!r}; supported: {', '.join(sorted(SAE_CLASSES))}")
    return SAE_CLASSES[key]


def build_sae(cfg: SaeConfig, tensors: Mapping[str, Tensor]) -> Sae:
    """Construct the Sae for cfg.architecture from SAELens-oriented tensors (see `Sae.__init__`)."""
    cls = get_sae_class(cfg.architecture)
    cfg.architecture = cls.architecture
    t = dict(tensors)
    if "b_enc" not in t and "b_gate" in t:
        t["b_enc"] = t.pop("b_gate")
    return cls(cfg, t)


for _cls in (StandardSae, JumpReluSae, TopKSae, GatedSae):
    register_sae_class(_cls)
