"""Batch KV-cache surgery for continuous batching.

Rows of a decode batch share one DynamicCache whose sequences are left-padded to a common
length; the 2-D attention mask marks real positions. A request joins by left-padding its
own prefilled cache (or the batch's) to the longer length and concatenating along the batch
axis; finished rows are dropped with an index select, and columns that are padding in every
remaining row are trimmed away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def new_cache() -> DynamicCache:
    # No config: every layer is a plain full-length DynamicLayer, which can be padded and merged.
    return DynamicCache()


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = list(cache.layers)
    assert all(type(layer) is DynamicLayer for layer in layers), "only full dynamic layers can be merged"
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
    """Keep only rows `keep` and trim leading columns that are padding in all of them."""
    idx = torch.tensor(keep, device=mask.device)
    mask = mask.index_select(0, idx)
    real = mask.any(dim=0).nonzero()
    start = int(real[0].item()) if real.numel() else mask.shape[1]
    mask = mask[:, start:]
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, idx.to(layer.keys.device))[:, :, start:]
        layer.values = layer.values.index_select(0, idx.to(layer.values.device))[:, :, start:]
    return cache, mask


def repeat_rows(cache: DynamicCache, mask: torch.Tensor, n: int) -> tuple[DynamicCache, torch.Tensor]:
    """Each row repeated n times in place (for n > 1 choices sharing one prefill)."""
    if n == 1:
        return cache, mask
    for layer in _layers(cache):
        layer.keys = layer.keys.repeat_interleave(n, dim=0)
        layer.values = layer.values.repeat_interleave(n, dim=0)
    return cache, mask.repeat_interleave(n, dim=0)
