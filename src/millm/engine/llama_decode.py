"""A lean decode step for Llama models: the same arithmetic as transformers, fewer Python layers.

A one-token decode step of a small model spends most of its time in Python: each HF decoder
layer goes through a dozen module calls, decorators and output dataclasses around a handful of
tensor ops. `LlamaDecoder.step` runs the identical ops (RMSNorm, rotary embedding, the cache
update, transformers' own SDPA attention function, the MLP) straight on the layers' weights.

Contract:
- `LlamaDecoder.for_model(model)` returns a decoder only for a plain `LlamaForCausalLM` with SDPA
  attention and unquantized `nn.Linear` projections; anything else (other architectures,
  bitsandbytes layers) returns None and the caller uses `model(...)`.
- Hooks keep working. Forward hooks and pre-hooks on a decoder layer itself (the SAE's
  resid_post / resid_pre sites) are called as `Module.__call__` would call them, with the
  layer's input as the only positional argument. A layer with a hook on any of its sub-modules
  (attn_out, mlp_out, attn_z, ...) runs through the HF module, and so does the whole model when
  global module hooks are registered. Embedding, final norm and LM head are called as modules.
- `step` takes and returns tensors only, never syncs with the device, and reads the KV cache
  through `Cache.update`, so HF layers and lean layers can share one cache.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

try:  # present since transformers 4.48; the function HF's own attention calls
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
except ImportError:  # pragma: no cover - older transformers
    sdpa_attention_forward = None


def _rms_norm(x: Tensor, norm: nn.Module) -> Tensor:
    # LlamaRMSNorm.forward. x: (B, T, D). In float32 the fused op gives the same bits; in half precision
    # HF rounds to the input dtype before scaling by the weight, so the ops are spelled out.
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotary_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, Dh) cos/sin -> (B, 1, T, Dh) cos and sign-folded sin, so that for x (B, H, T, Dh)
    x * cos + x.roll(Dh/2) * sin' equals HF's x * cos + rotate_half(x) * sin bit for bit
    (rotate_half(x) * sin = cat(-x2 * s1, x1 * s2) = cat(x2, x1) * cat(-s1, s2))."""
    half = sin.shape[-1] // 2
    return cos.unsqueeze(1), torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(1)


def _global_hooks() -> bool:
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks)


class LlamaDecoder:
    """One-token decode steps for a LlamaForCausalLM, sharing its weights."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        inner = model.model
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head = model.lm_head
        self.layers = list(inner.layers)
        # The hook dicts of every sub-module of each layer, to check cheaply whether any holds a hook
        # (torch adds and removes hooks in these dicts in place).
        self.sub_hooks = [
            [d for m in layer.modules() if m is not layer
             for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]
            for layer in self.layers
        ]
        cfg = model.config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        params = inspect.signature(type(self.layers[0]).forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def for_model(cls, model: nn.Module) -> LlamaDecoder | None:
        if type(model).__name__ != "LlamaForCausalLM" or sdpa_attention_forward is None:
            return None
        cfg = model.config
        if getattr(cfg, "_attn_implementation", None) != "sdpa" or getattr(cfg, "hidden_act", None) != "silu":
            return None
        if getattr(cfg, "pretraining_tp", 1) != 1:
            return None
        inner = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None or any(type(layer).__name__ != "LlamaDecoderLayer" for layer in layers):
            return None
        for layer in layers:
            a, m = layer.self_attn, layer.mlp
            linears = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
            if any(type(lin) is not nn.Linear for lin in linears):
                return None  # quantized or otherwise wrapped projections
        return cls(model)

    # ------------------------------------------------------------------ step

    def step(self, ids: Tensor, positions: Tensor, *, mask: Tensor | None, cache: Any) -> Tensor:
        """One decode step. ids, positions: (B, 1); mask: (B, 1, 1, S) bool over the cache plus this
        token (None when no row is padded). Returns logits (B, V) in the model dtype."""
        h = self.embed(ids)  # (B, 1, D)
        pos_emb = self.rotary(h, position_ids=positions)
        rot = _rotary_tables(*pos_emb)
        global_hooks = _global_hooks()
        for i, layer in enumerate(self.layers):
            if global_hooks or any(self.sub_hooks[i]):
                h = layer(h, attention_mask=mask, position_ids=positions, position_embeddings=pos_emb,
                          use_cache=True, **{self.cache_kwarg: cache})
                continue
            if layer._forward_pre_hooks:
                h = _run_pre_hooks(layer, h)
            out = self._layer(i, layer, h, rot, mask, cache)
            if layer._forward_hooks:
                out = _run_hooks(layer, h, out)
            h = out
        h = self.norm(h)
        return self.lm_head(h)[:, -1, :]

    def _layer(self, i: int, layer: nn.Module, x: Tensor, rot: tuple[Tensor, Tensor], mask: Tensor | None,
               cache: Any) -> Tensor:
        # LlamaDecoderLayer.forward for one query position. x: (B, 1, D)
        attn, mlp = layer.self_attn, layer.mlp
        b, t = x.shape[0], x.shape[1]
        hs = _rms_norm(x, layer.input_layernorm)
        q = F.linear(hs, attn.q_proj.weight, attn.q_proj.bias).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = F.linear(hs, attn.k_proj.weight, attn.k_proj.bias).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = F.linear(hs, attn.v_proj.weight, attn.v_proj.bias).view(b, t, -1, self.head_dim).transpose(1, 2)
        cos, sin = rot
        half = self.head_dim // 2
        q = q * cos + q.roll(half, -1) * sin
        k = k * cos + k.roll(half, -1) * sin
        k, v = cache.update(k, v, i)
        if self.n_kv == self.n_heads:  # what sdpa_attention_forward does for one query without GQA
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=attn.scaling)
            o = o.transpose(1, 2)
        else:
            o, _ = sdpa_attention_forward(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        o = F.linear(o.reshape(b, t, -1), attn.o_proj.weight, attn.o_proj.bias)
        x = x + o
        hs = _rms_norm(x, layer.post_attention_layernorm)
        g = F.silu(F.linear(hs, mlp.gate_proj.weight, mlp.gate_proj.bias))
        u = F.linear(hs, mlp.up_proj.weight, mlp.up_proj.bias)
        return x + F.linear(g * u, mlp.down_proj.weight, mlp.down_proj.bias)


# ---------------------------------------------------------------------- hooks, as Module.__call__ runs them


def _run_pre_hooks(layer: nn.Module, h: Tensor) -> Tensor:
    args: tuple[Any, ...] = (h,)
    kwargs: dict[str, Any] = {}
    for hook_id, hook in list(layer._forward_pre_hooks.items()):
        if hook_id in layer._forward_pre_hooks_with_kwargs:
            res = hook(layer, args, kwargs)
            if res is not None:
                args, kwargs = res
        else:
            res = hook(layer, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
    return args[0]


def _run_hooks(layer: nn.Module, h: Tensor, out: Tensor) -> Tensor:
    args: tuple[Any, ...] = (h,)
    for hook_id, hook in list(layer._forward_hooks.items()):
        if hook_id in layer._forward_hooks_with_kwargs:
            res = hook(layer, args, {}, out)
        else:
            res = hook(layer, args, out)
        if res is not None:
            out = res
    return out
