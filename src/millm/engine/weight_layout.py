"""Linear weight layout for CPU decoding: input-major storage when matrix-vector products run faster so.

A one-token decode step multiplies a (B, 1, K) activation by every (N, K) weight, so on a CPU its
time is the time to stream the weights. MKL's float32 kernels stream a weight stored (N, K) and
one stored (K, N) at different speeds: on the 2-core AMD EPYC benchmark machine about 14 and 17
GB/s, and the 350M benchmark model decodes 17% faster with (K, N) storage (prefill, a matrix-
matrix product, is 2-7% slower). Which layout wins depends on the CPU and its BLAS, so
`choose_layout` times both on the model's largest weights and switches only on a clear win.

Switching rebinds each Linear weight to a transposed view of a (K, N) copy: same shape, same
values, no extra memory once the old storage is freed. `F.linear` accepts either layout, so
every caller (HF modules, the lean decoder) uses it unchanged. Weights shared with another
parameter (a tied LM head) and quantized layers are left alone.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch
from torch import nn

log = logging.getLogger(__name__)

SAMPLE_BYTES = 96 * 2**20  # time at least this much weight (more than a typical L3 cache)
MIN_GAIN = 0.05


def _candidates(model: nn.Module) -> list[nn.Linear]:
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[p.data_ptr()] = counts.get(p.data_ptr(), 0) + 1
    out = []
    for m in model.modules():
        w = getattr(m, "weight", None)
        if type(m) is nn.Linear and w is not None and w.dim() == 2 and w.is_contiguous() \
                and counts.get(w.data_ptr(), 0) == 1 and w.dtype in (torch.float32, torch.bfloat16, torch.float16):
            out.append(m)
    return out


def _pass_seconds(weights: list[torch.Tensor]) -> float:
    xs = {w.shape[1]: torch.randn(1, w.shape[1], dtype=w.dtype) for w in weights}
    t = time.perf_counter()
    for w in weights:
        torch.nn.functional.linear(xs[w.shape[1]], w)
    return time.perf_counter() - t


def choose_layout(model: nn.Module, *, rounds: int = 3) -> bool:
    """On CPU, store Linear weights input-major if that makes x @ W^T clearly faster. Returns whether it did."""
    linears = _candidates(model)
    if not linears or linears[0].weight.device.type != "cpu":
        return False
    with torch.no_grad(), torch.inference_mode(False):
        sample: list[torch.Tensor] = []
        for lin in sorted(linears, key=lambda m: -m.weight.numel()):
            sample.append(lin.weight)
            if sum(w.numel() * w.element_size() for w in sample) >= SAMPLE_BYTES:
                break
        transposed = [w.t().contiguous().t() for w in sample]
        _pass_seconds(sample), _pass_seconds(transposed)
        now, alt = [], []
        for _ in range(rounds):
            now.append(_pass_seconds(sample))
            alt.append(_pass_seconds(transposed))
        del transposed
        t_now, t_alt = statistics.median(now), statistics.median(alt)
        switch = t_alt < (1 - MIN_GAIN) * t_now
        log.info("linear weights: %s layout (matrix-vector pass over %d weights: %.2f ms as stored, %.2f ms "
                 "input-major)", "input-major" if switch else "stored", len(sample), t_now * 1e3, t_alt * 1e3)
        if switch:
            for lin in linears:
                lin.weight = nn.Parameter(lin.weight.detach().t().contiguous().t(), requires_grad=False)
    return switch
