"""Hook names -> HookSpec(layer, site[, module]).

Accepted spellings:
- TransformerLens: `blocks.L.hook_resid_pre`, `blocks.L.hook_resid_mid`, `blocks.L.hook_resid_post`,
  `blocks.L.hook_attn_out`, `blocks.L.hook_mlp_out`, `blocks.L.attn.hook_z` (sites resid_pre, resid_mid,
  resid_post, attn_out, mlp_out, attn_z). These name *semantic* sites; `millm.engine.hookpoints` maps them to
  modules per model family (e.g. Gemma's mlp_out is the post-feedforward norm's output).
- HF module paths, as sparsify / SAELens-on-HF / Gemma Scope 2 write them: `model.layers.12`, `layers.12`,
  `transformer.h.3`, `model.language_model.layers.3.mlp`, ... The part after the layer index is kept in
  `HookSpec.module` and hooked *literally* (its output), because that is what such SAEs were trained on.
  The site is a best guess for display: '' -> resid_post, mlp -> mlp_out, self_attn/attn -> attn_out,
  post_feedforward_layernorm -> mlp_out, anything else -> 'module'. A trailing `.output` is dropped and a
  trailing `.input` selects the module's input (Gemma Scope 2 writes `model.layers.5.output`,
  `model.layers.5.self_attn.o_proj.input`): the layer's input is resid_pre, the attention output
  projection's input (`self_attn.o_proj`, `attn.c_proj`, with or without `.input`) is attn_z, any other
  input is 'module_input'.
Unknown names raise SaeError. This module imports only the standard library and millm.errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from millm.errors import SaeError

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_z", "module", "module_input")
# sites whose tensor is a module's input rather than its output
INPUT_SITES = ("resid_pre", "resid_mid", "attn_z", "module_input")

_TL_SITES = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "attn.hook_z": "attn_z",
    "hook_z": "attn_z",
}
_TL_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
# optional dotted prefix (model., transformer., model.language_model., base_model.model. ...), then the
# decoder-layer list name and index, then an optional sub-module path
_HF_RE = re.compile(r"^(?:[A-Za-z_]\w*\.)*?(?:layers|h|layer|decoder_layers)\.(\d+)(?:\.([\w.]+))?$")
_HF_SITES = {
    "": "resid_post",
    "mlp": "mlp_out",
    "self_attn": "attn_out",
    "attn": "attn_out",
    "post_feedforward_layernorm": "mlp_out",
}
_O_PROJ = ("self_attn.o_proj", "attn.c_proj", "attn.o_proj", "self_attn.c_proj")


@dataclass(frozen=True)
class HookSpec:
    """Where an SAE reads: decoder layer index, semantic site, and for HF paths the literal sub-module
    (relative to the decoder layer; '' = the layer itself). `module is None` means "map the site per family"."""

    layer: int
    site: str
    module: str | None = None

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise SaeError(f"unknown hook site {self.site!r}; expected one of {', '.join(SITES)}")
        if self.layer < 0:
            raise SaeError(f"hook layer must be >= 0, found {self.layer}")

    @property
    def tl_name(self) -> str:
        """The TransformerLens spelling of the semantic site."""
        if self.site == "attn_z":
            return f"blocks.{self.layer}.attn.hook_z"
        if self.site in ("module", "module_input"):
            suffix = ".input" if self.site == "module_input" else ""
            return f"layers.{self.layer}.{self.module}{suffix}"
        return f"blocks.{self.layer}.hook_{self.site}"

    def with_layer(self, layer: int) -> HookSpec:
        return HookSpec(layer=layer, site=self.site, module=self.module)


def parse_hook_name(name: str) -> HookSpec:
    """'blocks.12.hook_resid_post' | 'model.layers.12' | 'layers.3.mlp' | ... -> HookSpec. Raises SaeError."""
    text = name.strip()
    m = _TL_RE.match(text)
    if m:
        rest = m.group(2)
        if rest not in _TL_SITES:
            raise SaeError(
                f"unsupported TransformerLens hook {name!r}: supported sites are "
                f"{', '.join(k for k in _TL_SITES if k != 'hook_z')} (after 'blocks.L.')"
            )
        return HookSpec(layer=int(m.group(1)), site=_TL_SITES[rest])
    m = _HF_RE.match(text)
    if m:
        layer, sub = int(m.group(1)), m.group(2) or ""
        is_input = sub == "input" or sub.endswith(".input")
        if is_input or sub == "output" or sub.endswith(".output"):
            sub = sub.rsplit(".", 1)[0] if "." in sub else ""
        if sub in _O_PROJ:
            return HookSpec(layer=layer, site="attn_z", module=sub)
        if is_input:
            return HookSpec(layer=layer, site="resid_pre" if sub == "" else "module_input", module=sub)
        return HookSpec(layer=layer, site=_HF_SITES.get(sub, "module"), module=sub)
    raise SaeError(
        f"cannot parse hook name {name!r}: expected a TransformerLens name like 'blocks.12.hook_resid_post' "
        "or an HF module path like 'model.layers.12'"
    )
