"""Where an SAE hook attaches inside an HF causal LM, and the one function that attaches it.

Contract:
- `resolve_hookpoint(model, hook)` turns a hook name or HookSpec into a HookPoint: a module, whether its
  input or output is the hooked tensor, and `d_hook` (that tensor's width). The decoder-layer list is found
  by search (the ModuleList whose length is num_hidden_layers), so wrappers such as a multimodal
  `language_model` work. Semantic sites map per layer layout (TransformerLens conventions):

  | site       | Llama / Mistral / Qwen2 / Qwen3  | Gemma-2 / Gemma-3              | GPT-2              |
  |------------|----------------------------------|--------------------------------|--------------------|
  | resid_pre  | input of layers[L]               | same (L=0: scaled embedding)   | input of h[L]      |
  | resid_post | output of layers[L]              | same                           | output of h[L]     |
  | resid_mid  | input of post_attention_layernorm| input of pre_feedforward_layernorm | input of ln_2  |
  | attn_out   | output[0] of self_attn           | output of post_attention_layernorm | output[0] of attn |
  | mlp_out    | output of mlp                    | output of post_feedforward_layernorm | output of mlp |
  | attn_z     | input of self_attn.o_proj        | same                           | input of attn.c_proj |

  A HookSpec with `module` set (parsed from an HF path) hooks that sub-module literally: its output, or its
  input for input sites (resid_pre, attn_z, module_input).
- `attach(hookpoint, fn)` registers a hook that calls `fn(hidden)` on the hooked tensor ([B, T, d_hook]);
  `fn` returns a replacement tensor or None. Tuple outputs, tensor outputs, and positional or keyword
  `hidden_states` inputs are all handled here, so callers never see them. Returns a handle; `handle.remove()`
  detaches. `attached(...)` is the context-manager form.
Imports torch, transformers-free module introspection, millm.sae and millm.errors only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from millm.errors import SaeError
from millm.sae.hooknames import INPUT_SITES, HookSpec, parse_hook_name

HookFn = Callable[[Tensor], Tensor | None]
_INPUT_KWARGS = ("hidden_states", "input", "x", "hidden_state")


@dataclass(frozen=True)
class HookPoint:
    spec: HookSpec
    module: nn.Module
    module_path: str  # dotted path inside the model, for logs and errors
    target: Literal["input", "output"]
    d_hook: int  # width of the hooked tensor

    @property
    def layer(self) -> int:
        return self.spec.layer


# ------------------------------------------------------------------------------------------ layer search


def _text_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise SaeError(f"{type(model).__name__} has no .config; expected a transformers model")
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder-layer ModuleList: the one whose length is num_hidden_layers (shortest path wins, and
    vision/audio towers are skipped)."""
    n_layers = getattr(_text_config(model), "num_hidden_layers", None)
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList)
        and len(mod) == n_layers
        and not any(part in name for part in ("vision", "audio", "encoder"))
    ]
    if not candidates:
        raise SaeError(
            f"cannot find the decoder layers of {type(model).__name__}: no ModuleList of length "
            f"num_hidden_layers={n_layers}"
        )
    return min(candidates, key=lambda c: c[0].count("."))


def _get(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path) if path else module
    except AttributeError:
        return None


def _layout(layer: nn.Module) -> str:
    def has(path: str) -> bool:
        return _get(layer, path) is not None

    if has("pre_feedforward_layernorm") and has("post_feedforward_layernorm"):
        return "gemma"
    if has("ln_2") and has("attn"):
        return "gpt2"
    if has("post_attention_layernorm") and not has("post_feedforward_layernorm"):
        return "llama"
    return "unknown"


_SITE_MODULES: dict[str, dict[str, tuple[str, Literal["input", "output"]]]] = {
    "llama": {
        "resid_mid": ("post_attention_layernorm", "input"),
        "attn_out": ("self_attn", "output"),
        "mlp_out": ("mlp", "output"),
        "attn_z": ("self_attn.o_proj", "input"),
    },
    "gemma": {
        "resid_mid": ("pre_feedforward_layernorm", "input"),
        "attn_out": ("post_attention_layernorm", "output"),
        "mlp_out": ("post_feedforward_layernorm", "output"),
        "attn_z": ("self_attn.o_proj", "input"),
    },
    "gpt2": {
        "resid_mid": ("ln_2", "input"),
        "attn_out": ("attn", "output"),
        "mlp_out": ("mlp", "output"),
        "attn_z": ("attn.c_proj", "input"),
    },
}


def _in_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, Tensor):
        return int(weight.shape[0])  # transformers Conv1D stores weight [in, out]
    return None


def resolve_hookpoint(
    model: nn.Module, hook: str | HookSpec, layer_override: int | None = None
) -> HookPoint:
    """Hook name (TransformerLens or HF path) or HookSpec -> HookPoint. Raises SaeError."""
    if isinstance(hook, str) and not hook.strip():
        raise SaeError("the SAE does not say where it reads (empty hook name); pass a hook name explicitly")
    spec = parse_hook_name(hook) if isinstance(hook, str) else hook
    if layer_override is not None:
        spec = spec.with_layer(layer_override)
    list_path, layers = find_layer_list(model)
    if not 0 <= spec.layer < len(layers):
        raise SaeError(
            f"hook {spec.tl_name!r} needs layer {spec.layer}, but the model has {len(layers)} layers "
            f"(0..{len(layers) - 1})", param="layer" if layer_override is not None else None
        )
    layer = layers[spec.layer]
    layer_path = f"{list_path}.{spec.layer}"
    hidden = int(_text_config(model).hidden_size)
    target: Literal["input", "output"]

    if spec.module is not None:
        sub, target = spec.module, ("input" if spec.site in INPUT_SITES else "output")
    elif spec.site in ("resid_pre", "resid_post"):
        sub, target = "", ("input" if spec.site == "resid_pre" else "output")
    else:
        layout = _layout(layer)
        if layout not in _SITE_MODULES:
            raise SaeError(
                f"site {spec.site!r} is not mapped for decoder layer {type(layer).__name__}; only resid_pre "
                "and resid_post (or a literal HF module path) are supported for this model"
            )
        sub, target = _SITE_MODULES[layout][spec.site]

    module = _get(layer, sub)
    if module is None:
        raise SaeError(f"hook {spec.tl_name!r}: module {layer_path}.{sub} not found in {type(model).__name__}")
    d_hook = hidden
    if target == "input" and sub:
        d_hook = _in_features(module) or hidden
    elif isinstance(module, nn.Linear):
        d_hook = module.out_features
    path = f"{layer_path}.{sub}" if sub else layer_path
    return HookPoint(spec=spec, module=module, module_path=path, target=target, d_hook=d_hook)


# ------------------------------------------------------------------------------------------ attaching


def attach(hookpoint: HookPoint, fn: HookFn) -> RemovableHandle:
    """Call fn(hidden [B, T, d_hook]) at the hook point; a returned tensor replaces hidden. -> handle."""
    if hookpoint.target == "output":

        def out_hook(_m: nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, Tensor):
                return fn(output)
            if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
                new = fn(output[0])
                return None if new is None else (new, *output[1:])
            raise SaeError(f"cannot hook {hookpoint.module_path}: unexpected output type {type(output).__name__}")

        return hookpoint.module.register_forward_hook(out_hook)

    def in_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and isinstance(args[0], Tensor):
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        for key in _INPUT_KWARGS:
            if isinstance(kwargs.get(key), Tensor):
                new = fn(kwargs[key])
                return None if new is None else (args, {**kwargs, key: new})
        raise SaeError(f"cannot hook the input of {hookpoint.module_path}: no tensor argument found")

    return hookpoint.module.register_forward_pre_hook(in_hook, with_kwargs=True)


@contextmanager
def attached(hookpoint: HookPoint, fn: HookFn) -> Iterator[RemovableHandle]:
    """`with attached(hp, fn): model(...)` -- the hook is removed on exit, even on error."""
    handle = attach(hookpoint, fn)
    try:
        yield handle
    finally:
        handle.remove()
