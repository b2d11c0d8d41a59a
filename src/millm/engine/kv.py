"""Batch KV-cache surgery for continuous batching.

Rows of a decode batch share one DynamicCache whose sequences are left-padded to a common
length; the 2-D attention mask marks real positions. A request joins by left-padding its
own prefilled cache (or the batch's) to the longer length and concatenating along the batch
axis; finished rows are dropped with an index select, and columns that are padding in every
remaining row are trimmed away.

Layers are `GrowableLayer`s: keys and values live in buffers with spare sequence capacity,
so a decode step writes one column in place instead of concatenating (and so copying) the
whole cache, as `DynamicLayer.update` does. `layer.keys` / `layer.values` are views of the
filled part; assigning them adopts the tensor as the new buffer (capacity = its length).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Spare columns allocated when a buffer grows: at least this many, or a quarter of the length.
GROW_MIN = 64


class GrowableLayer(DynamicLayer):  # type: ignore[misc]  # transformers is Any to mypy (pyproject)
    """A DynamicLayer whose update writes into preallocated capacity. Buffers: (B, H, capacity, D)."""

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._klen = self._vlen = 0
        super().__init__()

    # keys and values are set one after the other (merge, select), so each keeps its own length.
    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self._klen]

    @keys.setter
    def keys(self, t: torch.Tensor | None) -> None:
        self._k, self._klen = t, _length(t)

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self._vlen]

    @values.setter
    def values(self, t: torch.Tensor | None) -> None:
        self._v, self._vlen = t, _length(t)

    def _grow(self, need: int) -> None:
        assert self._k is not None and self._v is not None
        cap = need + max(GROW_MIN, need // 4)
        n = self._klen
        for name in ("_k", "_v"):
            old = getattr(self, name)
            buf = old.new_empty((old.shape[0], old.shape[1], cap, old.shape[3]))
            buf[:, :, :n] = old[:, :, :n]
            setattr(self, name, buf)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
               ) -> tuple[torch.Tensor, torch.Tensor]:
        # key_states, value_states: (B, H, T, D)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._klen == 0:
            self.keys, self.values = key_states, value_states
            return key_states, value_states
        assert self._k is not None and self._v is not None and self._klen == self._vlen
        end = self._klen + key_states.shape[-2]
        if end > self._k.shape[-2]:
            self._grow(end)
        self._k[:, :, self._klen : end] = key_states
        self._v[:, :, self._klen : end] = value_states
        self._klen = self._vlen = end
        return self._k[:, :, :end], self._v[:, :, :end]

    def get_seq_length(self) -> int:
        return self._klen


def _length(t: torch.Tensor | None) -> int:
    return 0 if t is None or t.dim() < 4 else t.shape[-2]


def new_cache() -> DynamicCache:
    # No config: every layer is a full-length GrowableLayer, which can be padded and merged.
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowableLayer
    return cache


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = list(cache.layers)
    assert all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in layers), (
        "only full dynamic layers can be merged"
    )
    return layers


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    # t: (B, H, S, D) -> (B, H, n + S, D)
    return F.pad(t, (0, 0, n, 0)) if n else t


def merge(
    cache: DynamicCache | None, mask: torch.Tensor | None, new: DynamicCache, new_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Append the rows of `new` to `cache`. masks: (B, S) long. Returns the merged cache and mask."""
    if cache is None or mask is None or mask.shape[0] == 0:
        return new, new_mask
    s_old, s_new = mask.shape[1], new_mask.shape[1]
    length = max(s_old, s_new)
    for old_layer, new_layer in zip(_layers(cache), _layers(new), strict=True):
        old_layer.keys = torch.cat([_left_pad(old_layer.keys, length - s_old), _left_pad(new_layer.keys, length - s_new)])
        old_layer.values = torch.cat(
            [_left_pad(old_layer.values, length - s_old), _left_pad(new_layer.values, length - s_new)]
        )
    merged_mask = torch.cat([F.pad(mask, (length - s_old, 0)), F.pad(new_mask, (length - s_new, 0))])
    return cache, merged_mask


def select(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """Keep only rows `keep` (an index may repeat: the n choices of one prompt) and trim leading columns that are
    padding in all of them."""
    idx = torch.tensor(keep, device=mask.device)
    mask = mask.index_select(0, idx)
    real = mask.any(dim=0).nonzero()
    start = int(real[0].item()) if real.numel() else mask.shape[1]
    mask = mask[:, start:]
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, idx.to(layer.keys.device))[:, :, start:]
        layer.values = layer.values.index_select(0, idx.to(layer.values.device))[:, :, start:]
    return cache, mask
