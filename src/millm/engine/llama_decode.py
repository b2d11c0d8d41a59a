"""A lean decode step for Llama, Qwen2 and Gemma-2 models: the same arithmetic as transformers, fewer Python layers.

A one-token decode step of a small model spends most of its time in Python: each HF decoder
layer goes through a dozen module calls, decorators and output dataclasses around a handful of
tensor ops. `LlamaDecoder.step` runs the identical ops (RMSNorm, rotary embedding, the cache
update, transformers' own SDPA attention function, the MLP) straight on the layers' weights.

Contract:
- `LlamaDecoder.for_model(model)` returns a decoder only for a plain `LlamaForCausalLM` or
  `Qwen2ForCausalLM` with SDPA attention and no sliding-window layers, or a `Gemma2ForCausalLM`
  with eager attention (its only one: SDPA has no logit soft-capping), each with unquantized
  `nn.Linear` projections; anything else (other architectures, bitsandbytes layers) returns None
  and the caller uses `model(...)`. `family(model)` says which, without building anything.
- Gemma-2's layer is its own: (1 + w) RMSNorms in float32 before and after attention and the MLP,
  a tanh-GELU MLP, eager attention with tanh soft-capping of the scores and, on its sliding
  layers, only the last `sliding_window` positions (left padding keeps each row's real positions
  at the end of the cache, so that is the last `sliding_window` columns), and soft-capped logits. A prefill adds
  HF's causal additive mask (windowed on the sliding layers, over the real keys when padded), with the same bits as
  HF's forward.
- Hooks keep working. Forward hooks and pre-hooks on a decoder layer itself (the SAE's
  resid_post / resid_pre sites) are called as `Module.__call__` would call them, with the
  layer's input as the only positional argument. A layer with a hook on any of its sub-modules
  (attn_out, mlp_out, attn_z, ...) runs through the HF module, and so does the whole model when
  global module hooks are registered. Embedding, final norm and LM head are called as modules.
- `step` takes and returns tensors only, never syncs with the device, and reads the KV cache
  through `Cache.update`, so HF layers and lean layers can share one cache.
- Fewer, larger ops: each layer's q/k/v and gate/up projections are fused into one weight, and
  the HF modules' own weights are rebound to views of it (same values, no extra memory; F.linear
  takes either layout), so one matrix product replaces three in a decode step, and the rotary embedding runs
  once over the query and key heads. A prefill (T > 1) runs the modules' own products on those views instead
  (at 16-200 rows MKL ran the fused ones 5-15% slower on the 2-core benchmark machine), or the fused ones with
  `fused_prefill`, which the worker sets when the prefill kernel is oneDNN. cos/sin come from a table built once with HF's own rotary module
  for static RoPE types (default, linear, llama3, yarn), else from the module every step.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

try:  # present since transformers 4.48; the function HF's own attention calls
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
except ImportError:  # pragma: no cover - older transformers
    sdpa_attention_forward = None


def _rms_norm(x: Tensor, norm: Any) -> Tensor:
    # LlamaRMSNorm.forward. x: (B, T, D). In float32 the fused op gives the same bits; in half precision
    # HF rounds to the input dtype before scaling by the weight, so the ops are spelled out.
    weight: Tensor = norm.weight
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, norm.variance_epsilon)
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return weight * h.to(x.dtype)


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

    def __init__(self, model: nn.Module, *, linear: Callable[[Tensor, Tensor, Tensor | None], Tensor] = F.linear,
                 gemma: bool = False) -> None:
        self.model = model
        self.linear = linear
        self.gemma = gemma
        inner: Any = model.model  # transformers modules: attributes mypy cannot see
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head: Any = model.lm_head
        self.layers = list(inner.layers)
        # The hook dicts of every sub-module of each layer, to check cheaply whether any holds a hook
        # (torch adds and removes hooks in these dicts in place).
        self.sub_hooks = [
            [d for m in layer.modules() if m is not layer
             for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]
            for layer in self.layers
        ]
        cfg: Any = model.config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        params = inspect.signature(type(self.layers[0]).forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        types = getattr(cfg, "layer_types", None) or ["full_attention"] * len(self.layers)
        window = getattr(cfg, "sliding_window", None) if gemma else None
        self.windows = [window if t == "sliding_attention" and window else None for t in types]
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None) if gemma else None
        with torch.no_grad(), torch.inference_mode(False):
            self.qkv = [_fuse([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
                        for layer in self.layers]
            self.gate_up = [_fuse([layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in self.layers]
            self.rope_table = self._rope_table(int(getattr(cfg, "max_position_embeddings", 0) or 0))
        # A prefill's q/k/v and gate/up products: the fused weights (True) or the modules' own (False, as HF). The
        # worker fuses them when the prefill kernel is oneDNN: oneDNN takes a weight contiguous in either layout, and
        # on input-major weights the modules' are column slices of the fused (K, N) buffer, contiguous in neither, so
        # five of a layer's seven products fell back to MKL (the demo's 32-token prefill 1.9-2.0 against 1.4-1.5 ms
        # fused, one or two threads; tenth session, docs/benchmarks-notes.md).
        self.fused_prefill = False
        # (fresh: the first q_proj's parameter dict, which torch never replaces, and the fused weight's address)
        self._q_params: dict[str, Any] = self.layers[0].self_attn.q_proj._parameters
        self._fused_ptr = self.qkv[0][0].data_ptr()

    def _rope_table(self, n: int) -> tuple[Tensor, Tensor] | None:
        """cos and sign-folded sin for positions 0..n-1, (n, Dh) each, from HF's rotary module itself
        (so each entry has the bits the module would compute for that position)."""
        if not 0 < n <= ROPE_TABLE_MAX or getattr(self.rotary, "rope_type", None) not in _STATIC_ROPE:
            return None
        w = self.embed.weight
        positions = torch.arange(n, device=w.device)[None]
        cos, sin = _rotary_tables(*self.rotary(w[:1], position_ids=positions))
        return cos[0, 0], sin[0, 0]

    def fresh(self) -> bool:
        """Whether the fused weights are still the modules' weights (a device move or reload replaces
        them; then build a new decoder)."""
        # (the worker asks before every decode step, right after the last one's forward, when each lookup is a cache
        # miss: one dict read and one data_ptr, not nn.Module.__getattr__ and two data_ptr calls, ~10 -> ~4 us)
        w = self._q_params.get("weight")
        return w is not None and w.data_ptr() == self._fused_ptr

    def product_weights(self) -> list[Tensor]:
        """The weights a decode step passes to `linear`: each layer's fused q/k/v, o, fused gate/up and down, and the LM
        head's when it is a plain Linear (engine/weight_layout.py's `PackedLinear` packs these)."""
        ws = [w for i, layer in enumerate(self.layers)
              for w in (self.qkv[i][0], layer.self_attn.o_proj.weight, self.gate_up[i][0], layer.mlp.down_proj.weight)]
        if type(self.lm_head) is nn.Linear:
            ws.append(self.lm_head.weight)
        return ws

    @staticmethod
    def family(model: nn.Module) -> str | None:
        """"llama" (Llama, Qwen2) or "gemma2" when the lean step serves this model, else None."""
        family = _FAMILIES.get(type(model).__name__)
        if family is None or sdpa_attention_forward is None:
            return None
        fam, layer_name = family
        cfg: Any = model.config
        attn_impl = getattr(cfg, "_attn_implementation", None)
        if fam == "llama":
            if attn_impl != "sdpa" or getattr(cfg, "hidden_act", None) != "silu":
                return None
            if getattr(cfg, "pretraining_tp", 1) != 1:
                return None
            if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ())):
                return None  # Qwen2's optional sliding-window layers
        else:
            if attn_impl != "eager" or getattr(cfg, "hidden_activation", None) != "gelu_pytorch_tanh":
                return None
            if any(t not in ("full_attention", "sliding_attention") for t in (getattr(cfg, "layer_types", None) or ())):
                return None
        inner = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None or any(type(layer).__name__ != layer_name for layer in layers):
            return None
        for layer in layers:
            a, m = layer.self_attn, layer.mlp
            linears = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
            if any(type(lin) is not nn.Linear for lin in linears):
                return None  # quantized or otherwise wrapped projections
        return fam

    @classmethod
    def for_model(cls, model: nn.Module, *, linear: Callable[[Tensor, Tensor, Tensor | None], Tensor] = F.linear,
                  ) -> LlamaDecoder | None:
        fam = cls.family(model)
        if fam is None:
            return None
        return cls(model, linear=linear, gemma=fam == "gemma2")

    # ------------------------------------------------------------------ step

    def step(self, ids: Tensor, positions: Tensor, *, mask: Tensor | None, cache: Any,
             every_position: bool = False) -> Tensor:
        """One decode step. ids, positions: (B, 1); mask: (B, 1, 1, S) bool over the cache plus this
        token (None when no row is padded). Returns logits (B, V) in the model dtype, of the last position.

        Also a prefill: ids, positions (B, T) into an empty cache. Unpadded (mask None) they attend causally, as HF's
        SDPA path does without padding (Llama, Qwen2), or with the causal (and, on sliding layers, windowed)
        additive mask HF's eager path builds (Gemma-2). Left-padded, mask is (B, 1, T, T) bool, query by key: causal
        and over each row's real keys (`prefill_mask`), as HF builds it; a pad query sees no key (SDPA gives it
        zeros, torch 2.5 and later; Gemma-2's additive mask a uniform softmax: finite either way, and no real query
        attends to a pad). With `every_position` a prefill returns the logits (B, T, V) of every position (a prompt
        logprobs request's), the last position's computed as without it (the same bits: a kernel's bits can depend
        on the rows multiplied). The worker runs every prefill through it, without CUDA graphs."""
        h = self.embed(ids)  # (B, 1, D)
        pos_emb: tuple[Tensor, Tensor] | None = None
        if self.rope_table is not None:
            cos_t, sin_t = self.rope_table
            rot = cos_t[positions].unsqueeze(1), sin_t[positions].unsqueeze(1)  # (B, 1, 1, Dh)
        else:
            pos_emb = self.rotary(h, position_ids=positions)
            rot = _rotary_tables(*pos_emb)
        global_hooks = _global_hooks()
        if mask is not None and not self.gemma and ids.shape[1] == 1 and mask.dtype == torch.bool:
            mask = _sdpa_mask(mask, h.dtype)  # (once a step, not in each layer's SDPA call)
        masks: dict[int | None, Tensor | None] = {}
        scratch: dict[Any, Tensor] = {}  # attention buffers the layers reuse (Gemma-2)
        for i, layer in enumerate(self.layers):
            layer_mask = mask
            if self.gemma:  # eager attention takes an additive float mask, per window size
                window = self.windows[i]
                if window not in masks:
                    masks[window] = _additive_mask(mask, cache.get_seq_length(i) + 1, window, h) \
                        if ids.shape[1] == 1 else _causal_mask(ids.shape[1], window, h, mask)
                layer_mask = masks[window]
            if global_hooks or any(self.sub_hooks[i]):
                if pos_emb is None:
                    pos_emb = self.rotary(h, position_ids=positions)
                h = layer(h, attention_mask=layer_mask, position_ids=positions, position_embeddings=pos_emb,
                          use_cache=True, **{self.cache_kwarg: cache})
                continue
            if layer._forward_pre_hooks:
                h = _run_pre_hooks(layer, h)
            if self.gemma:
                out = self._gemma_layer(i, layer, h, rot, layer_mask, cache, scratch)
            else:
                out = self._layer(i, layer, h, rot, layer_mask, cache)
            if layer._forward_hooks:
                out = _run_hooks(layer, h, out)
            h = out
        last = self._logits(self.norm(h[:, -1:]))[:, -1, :]  # (the norm is per position)
        if not every_position:
            return last
        logits = self._logits(self.norm(h))  # (one (B, T, V) tensor: a long prompt's logits take the most memory)
        logits[:, -1] = last
        return logits

    def _logits(self, h: Tensor) -> Tensor:
        """The LM head (soft-capped on Gemma-2) on normed hidden states h (B, T, D): (B, T, V)."""
        head = self.lm_head
        if head._forward_hooks or head._forward_pre_hooks or type(head) is not nn.Linear:
            logits: Tensor = head(h)
        else:
            logits = self.linear(h, head.weight, head.bias)
        if self.final_softcap is not None:  # Gemma2ForCausalLM.forward
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def _layer(self, i: int, layer: Any, x: Tensor, rot: tuple[Tensor, Tensor], mask: Tensor | None,
               cache: Any) -> Tensor:
        # LlamaDecoderLayer.forward for one query position. x: (B, 1, D)
        attn, mlp = layer.self_attn, layer.mlp
        b, t = x.shape[0], x.shape[1]
        hs = _rms_norm(x, layer.input_layernorm)
        q, k, v = self._attention_inputs(i, attn, hs, rot)
        k, v = cache.update(k, v, i)
        if self.n_kv == self.n_heads:  # what sdpa_attention_forward does without GQA (causal: a prefill, no mask)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=attn.scaling,
                                               is_causal=t > 1 and mask is None)
            o = o.transpose(1, 2)
        else:
            o, _ = sdpa_attention_forward(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        o = self.linear(o.reshape(b, t, -1), attn.o_proj.weight, attn.o_proj.bias)
        x = x + o
        hs = _rms_norm(x, layer.post_attention_layernorm)
        g, u = self._gate_up(i, mlp, hs)
        return x + self.linear(F.silu(g) * u, mlp.down_proj.weight, mlp.down_proj.bias)

    def _attention_inputs(self, i: int, attn: Any, hs: Tensor, rot: tuple[Tensor, Tensor]
                          ) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries and keys and the values, (B, H, T, Dh) each, from the normed input hs (B, T, D).

        A decode step (T = 1) runs one fused q/k/v product and rotates queries and keys in one op. A prefill runs the
        three products as the HF modules do (on the 2-core benchmark machine MKL ran the fused one 5-15% slower at
        16-200 rows), or with `fused_prefill` the fused one, whose values it copies out, and rotates queries and keys
        apart, so that the keys the cache keeps are a tensor of their own and
        the values a view of the v product alone, as HF's attention leaves them: views of a fused buffer would keep the
        whole of it alive in the cache (at 1,000 tokens of a 350M model, 20 MB a layer instead of 8; the extra memory
        came fresh from the kernel, page by page, at every prefill)."""
        b, t = hs.shape[0], hs.shape[1]
        nq, nk, dh = self.n_heads, self.n_kv, self.head_dim
        cos, sin = rot
        if t == 1:
            w, bias = self.qkv[i]
            qkv = self.linear(hs, w, bias).view(b, t, nq + 2 * nk, dh).transpose(1, 2)  # (B, Hq+2Hkv, T, Dh)
            qk = qkv[:, : nq + nk]
            qk = qk * cos + qk.roll(dh // 2, -1) * sin
            return qk[:, :nq], qk[:, nq:], qkv[:, nq + nk :]
        if self.fused_prefill:  # the values copied out, so that the cache does not keep the fused product alive
            w, bias = self.qkv[i]
            q, k, v = self.linear(hs, w, bias).split([nq * dh, nk * dh, nk * dh], dim=-1)
            q, k, v = (x.view(b, t, -1, dh).transpose(1, 2) for x in (q, k, v.contiguous()))
        else:
            q, k, v = (self.linear(hs, p.weight, p.bias).view(b, t, -1, dh).transpose(1, 2)
                       for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        return q * cos + q.roll(dh // 2, -1) * sin, k * cos + k.roll(dh // 2, -1) * sin, v

    def _gate_up(self, i: int, mlp: Any, hs: Tensor) -> tuple[Tensor, Tensor]:
        """The gate and up projections: fused for a decode step, two products for a prefill unless `fused_prefill`
        (see `_attention_inputs`)."""
        if hs.shape[1] == 1 or self.fused_prefill:
            w, bias = self.gate_up[i]
            g, u = self.linear(hs, w, bias).chunk(2, dim=-1)
            return g, u
        return (self.linear(hs, mlp.gate_proj.weight, mlp.gate_proj.bias),
                self.linear(hs, mlp.up_proj.weight, mlp.up_proj.bias))


    def _gemma_layer(self, i: int, layer: Any, x: Tensor, rot: tuple[Tensor, Tensor], mask: Tensor | None,
                     cache: Any, scratch: dict[Any, Tensor]) -> Tensor:
        # Gemma2DecoderLayer.forward with eager_attention_forward. x: (B, T, D): one query position, or a prefill
        attn = layer.self_attn
        b, t = x.shape[0], x.shape[1]
        nq, nk = self.n_heads, self.n_kv
        hs = _gemma_norm(x, layer.input_layernorm)
        q, k, v = self._attention_inputs(i, attn, hs, rot)
        k, v = cache.update(k, v, i)
        if nq != nk:
            k = k.repeat_interleave(nq // nk, dim=1)  # repeat_kv
            v = v.repeat_interleave(nq // nk, dim=1)
        # HF's eager_attention_forward op for op, but in place and into buffers the step's layers share: the same
        # kernels give the same bits, without a fresh (H, T, S) tensor per op (a 1,000-token prefill's scores are
        # 64 MB per layer at 16 heads, which the allocator maps and the kernel zero-fills page by page each time:
        # a fresh output made `x / cap` 4x and `tanh` 2x slower than the same op in place, one thread)
        shape = (*q.shape[:-1], k.shape[-2])
        scores = torch.matmul(q, k.transpose(2, 3), out=_scratch(scratch, "scores", shape, q.dtype, q.device))
        scores.mul_(attn.scaling)
        cap = attn.attn_logit_softcapping
        if cap is not None:
            scores.div_(cap).tanh_().mul_(cap)
        if mask is not None:
            scores.add_(mask)
        probs = torch.softmax(scores, -1, dtype=torch.float32,
                              out=_scratch(scratch, "probs", shape, torch.float32, q.device)).to(q.dtype)
        o = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
        o = self.linear(o, attn.o_proj.weight, attn.o_proj.bias)
        x = x + _gemma_norm(o, layer.post_attention_layernorm)
        hs = _gemma_norm(x, layer.pre_feedforward_layernorm)
        mlp = layer.mlp
        g, u = self._gate_up(i, mlp, hs)
        m = self.linear(F.gelu(g, approximate="tanh") * u, mlp.down_proj.weight, mlp.down_proj.bias)
        return x + _gemma_norm(m, layer.post_feedforward_layernorm)


_FAMILIES = {
    "LlamaForCausalLM": ("llama", "LlamaDecoderLayer"),
    "Qwen2ForCausalLM": ("llama", "Qwen2DecoderLayer"),  # Llama's layer with q/k/v biases
    "Gemma2ForCausalLM": ("gemma2", "Gemma2DecoderLayer"),
}


def _scratch(scratch: dict[Any, Tensor], name: str, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> Tensor:
    """The step's buffer `name` of this shape and dtype, made on first use (a sliding layer's cache may be shorter
    than a full one's, so a step can hold one per shape)."""
    key = (name, shape, dtype)
    buf = scratch.get(key)
    if buf is None:
        buf = scratch[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def _gemma_norm(x: Tensor, norm: Any) -> Tensor:
    # Gemma2RMSNorm.forward: in float32, scaled by (1 + weight), then back to the input dtype.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.eps)
    out: Tensor = (h * (1.0 + norm.weight.float())).type_as(x)
    return out


def _additive_mask(mask: Tensor | None, length: int, window: int | None, like: Tensor) -> Tensor | None:
    """The additive (B or 1, 1, 1, S) float mask eager attention adds to its scores for one query over S = length
    cache columns: 0 where allowed, the dtype's minimum where not. `mask` (B, 1, 1, S) bool marks real columns
    (None: all real); a sliding window allows only the last `window` columns (each row's real positions end
    at the last column). None when everything is allowed."""
    allowed = mask
    if window is not None and length > window:
        recent = torch.arange(length, device=like.device) >= length - window
        allowed = recent.view(1, 1, 1, -1) if allowed is None else allowed & recent
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(
        ~allowed, torch.finfo(like.dtype).min)


def _sdpa_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive float mask SDPA makes of a bool one (0 where True, -inf where False: aten's
    `convert_boolean_attn_mask`, so the same bits), made once for every layer of a decode step. Given the float mask,
    SDPA skips that conversion in each layer; on the 2-core benchmark machine an 8-row step's attention call then took
    36 instead of 40 us (two threads; tenth session, docs/benchmarks-notes.md)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _causal_mask(length: int, window: int | None, like: Tensor, mask: Tensor | None = None) -> Tensor:
    """The additive (1 or B, 1, T, T) float mask HF's eager attention adds for a prefill of T positions into an
    empty cache (masking_utils: causal, on a sliding layer kv > q - window, and where `mask` (B, 1, T, T) bool, a
    padded prefill's, allows; 0 where allowed, else the dtype's minimum)."""
    q = torch.arange(length, device=like.device).view(-1, 1)
    k = torch.arange(length, device=like.device).view(1, -1)
    allowed = (k <= q).view(1, 1, length, length)
    if window is not None:
        allowed = allowed & (k > q - window)
    if mask is not None:
        allowed = allowed & mask
    return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(
        ~allowed, torch.finfo(like.dtype).min)


def prefill_mask(mask: Tensor) -> Tensor:
    """The (B, 1, T, T) bool attention mask of a left-padded prefill from its (B, T) padding mask (1 on real tokens):
    query t attends to key s when s <= t and s is a real token, as HF's `sdpa_mask` builds it."""
    t = mask.shape[-1]
    causal = torch.ones((t, t), dtype=torch.bool, device=mask.device).tril()
    return causal & mask.bool()[:, None, None, :]


# ---------------------------------------------------------------------- fused weights

_STATIC_ROPE = ("default", "linear", "llama3", "yarn")
ROPE_TABLE_MAX = 16384  # positions; longer contexts compute cos/sin per step instead of holding a big table


def _fuse(linears: list[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """One (sum N, K) weight (and bias) for Linear layers sharing their input; each layer's weight and bias
    become views of it. Keeps the layout: a weight stored input-major (a transposed view, see
    weight_layout) is fused input-major too."""
    ws = [lin.weight for lin in linears]
    if all(w.is_contiguous() for w in ws):
        fused = torch.cat([w.detach() for w in ws], dim=0)  # (N, K)
        views = list(fused.split([w.shape[0] for w in ws], dim=0))
    else:
        fused_t = torch.cat([w.detach().t() for w in ws], dim=1)  # (K, N)
        fused = fused_t.t()
        views = [v.t() for v in fused_t.split([w.shape[0] for w in ws], dim=1)]
    for lin, view in zip(linears, views, strict=True):
        lin.weight = nn.Parameter(view, requires_grad=False)
    bias = None
    if all(lin.bias is not None for lin in linears):
        bias = torch.cat([lin.bias.detach() for lin in linears])
        for lin, view in zip(linears, bias.split([lin.bias.shape[0] for lin in linears]), strict=True):
            lin.bias = nn.Parameter(view, requires_grad=False)
    elif any(lin.bias is not None for lin in linears):
        bias = torch.cat([lin.bias.detach() if lin.bias is not None else lin.weight.new_zeros(lin.weight.shape[0])
                          for lin in linears])
    return fused, bias


# ---------------------------------------------------------------------- hooks, as Module.__call__ runs them


def _run_pre_hooks(layer: Any, h: Tensor) -> Tensor:
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
    first: Tensor = args[0]
    return first


def _run_hooks(layer: Any, h: Tensor, out: Tensor) -> Tensor:
    args: tuple[Any, ...] = (h,)
    for hook_id, hook in list(layer._forward_hooks.items()):
        if hook_id in layer._forward_hooks_with_kwargs:
            res = hook(layer, args, {}, out)
        else:
            res = hook(layer, args, out)
        if res is not None:
            out = res
    return out
