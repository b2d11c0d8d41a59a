from __future__ import annotations

import pytest

from millm.errors import SaeError
from millm.sae.hooknames import HookSpec, parse_hook_name


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("blocks.12.hook_resid_post", HookSpec(12, "resid_post")),
        ("blocks.0.hook_resid_pre", HookSpec(0, "resid_pre")),
        ("blocks.3.hook_resid_mid", HookSpec(3, "resid_mid")),
        ("blocks.3.hook_mlp_out", HookSpec(3, "mlp_out")),
        ("blocks.3.hook_attn_out", HookSpec(3, "attn_out")),
        ("blocks.5.attn.hook_z", HookSpec(5, "attn_z")),
        ("model.layers.12", HookSpec(12, "resid_post", "")),
        ("layers.12", HookSpec(12, "resid_post", "")),
        ("layers.12.mlp", HookSpec(12, "mlp_out", "mlp")),
        ("transformer.h.3", HookSpec(3, "resid_post", "")),
        ("transformer.h.3.attn", HookSpec(3, "attn_out", "attn")),
        ("model.language_model.layers.4", HookSpec(4, "resid_post", "")),
        ("model.layers.7.post_feedforward_layernorm", HookSpec(7, "mlp_out", "post_feedforward_layernorm")),
        ("model.layers.7.self_attn.o_proj", HookSpec(7, "attn_z", "self_attn.o_proj")),
        ("model.layers.7.self_attn.o_proj.input", HookSpec(7, "attn_z", "self_attn.o_proj")),
        ("model.layers.7.pre_feedforward_layernorm", HookSpec(7, "module", "pre_feedforward_layernorm")),
        ("model.layers.5.output", HookSpec(5, "resid_post", "")),
        ("model.layers.5.input", HookSpec(5, "resid_pre", "")),
        ("model.layers.5.post_feedforward_layernorm.output", HookSpec(5, "mlp_out", "post_feedforward_layernorm")),
        ("model.layers.5.post_attention_layernorm.input", HookSpec(5, "module_input", "post_attention_layernorm")),
    ],
)
def test_parse(name: str, spec: HookSpec) -> None:
    assert parse_hook_name(name) == spec


def test_tl_name_round_trip() -> None:
    assert parse_hook_name("layers.2.mlp.input").tl_name == "layers.2.mlp.input"
    for name in ("blocks.2.hook_resid_pre", "blocks.2.attn.hook_z", "blocks.9.hook_mlp_out"):
        assert parse_hook_name(name).tl_name == name


@pytest.mark.parametrize("name", ["blocks.2.hook_q", "blocks.x.hook_resid_post", "embed", "", "layers.-1"])
def test_bad_names_raise_clear_errors(name: str) -> None:
    with pytest.raises(SaeError, match="hook"):
        parse_hook_name(name)
