"""The matrix-vector kernel for CPU decoding: which library computes x @ W^T, and in which weight layout.

A one-token decode step multiplies a (B, 1, K) activation by every (N, K) weight, so on a CPU its
time is the time to stream the weights. How fast that streams depends on the CPU and the kernel.
On the 2-core AMD EPYC benchmark machine, MKL (torch's `F.linear` on CPU) streams a weight stored
(N, K) at about 13 GB/s and one stored (K, N) at about 16 GB/s for one row, and falls to 5-7 GB/s
for 2 to 16 rows. oneDNN (`torch.ops.mkldnn._linear_pointwise`) on the same plain (N, K) weights
streams 14-24 GB/s for one row and 8-18 GB/s for eight, so it makes batched decoding scale. Which
wins depends on the machine and the batch size, so `choose_kernels` times the candidates on the model's
largest weights, for one row and for eight, and picks a kernel for one-row steps and one for steps of two or more
rows (the lean decoder switches per step), switching away from the stored MKL path only on a clear win:
- `stored`: MKL, weights as loaded;
- `input-major`: MKL, each Linear weight rebound to a transposed view of a (K, N) copy: same shape,
  same values, no extra memory once the old storage is freed; `F.linear` accepts either layout, so
  every caller (HF modules, the lean decoder) uses it unchanged;
- `onednn`: weights as loaded; the lean decoder (`engine/llama_decode.py`) calls `linear_fn(choice)`,
  oneDNN on plain weights (no packed copy, no extra memory). Prefill still runs through the HF
  modules (or the lean step, with `F.linear`) and MKL, whose large-M products are fast.

The layout is one for every batch size: either input-major for all (MKL), or the stored layout with, per regime,
MKL or oneDNN, whichever is faster there; the plan with the smaller summed time wins. On the 2-core machine oneDNN
streamed 8-row products about twice as fast as MKL, while one-row products were close.

Weights shared with another parameter (a tied LM head) and quantized layers are left alone.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

Choice = Literal["stored", "input-major", "onednn"]
LinearFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]

SAMPLE_BYTES = 96 * 2**20  # time at least this much weight (more than a typical L3 cache)
MIN_GAIN = 0.05
ROWS = (1, 8)  # batch sizes timed: one request, and a batch of concurrent ones


def _onednn_linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    if not w.is_contiguous():  # oneDNN takes plain (N, K) weights; anything else goes to MKL
        return F.linear(x, w, b)
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return out


def onednn_available() -> bool:
    available = bool(torch.backends.mkldnn.is_available())
    return available and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear_fn(choice: Choice) -> LinearFn:
    """The function the lean decoder calls for x @ W^T + b under a choice."""
    return _onednn_linear if choice == "onednn" else F.linear


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


def _pass_seconds(weights: list[Tensor], fn: LinearFn, rows: int) -> float:
    """Time of one pass over the weights with `rows` rows."""
    xs = {w.shape[1]: torch.randn(rows, 1, w.shape[1], dtype=w.dtype) for w in weights}
    t = time.perf_counter()
    for w in weights:
        fn(xs[w.shape[1]], w, None)
    return time.perf_counter() - t


@dataclass(frozen=True)
class Kernels:
    """The decode kernel for one-row steps and for steps of two or more rows (one weight layout for both)."""

    one: Choice = "stored"
    batched: Choice = "stored"


def choose_layout(model: nn.Module, *, rounds: int = 5) -> Choice:
    """The one-row choice of `choose_kernels` (which lays the weights out for it)."""
    return choose_kernels(model, rounds=rounds).one


def _plan(med: dict[Choice, dict[int, float]]) -> Kernels:
    """The kernels from median pass times per candidate and row count: input-major for both regimes, or the stored
    layout with MKL or oneDNN per regime (oneDNN only where it clearly beats MKL); the smaller summed time wins, and
    a change of layout needs a clear win too."""
    one, many = ROWS[0], ROWS[-1]

    def pick(rows: int) -> Choice:
        if "onednn" in med and med["onednn"][rows] < (1 - MIN_GAIN) * med["stored"][rows]:
            return "onednn"
        return "stored"

    plain = Kernels(pick(one), pick(many))
    plain_s = med[plain.one][one] + med[plain.batched][many]
    if med["input-major"][one] + med["input-major"][many] < (1 - MIN_GAIN) * plain_s:
        return Kernels("input-major", "input-major")
    return plain


def choose_kernels(model: nn.Module, *, rounds: int = 5) -> Kernels:
    """On CPU, pick the fastest matrix-vector kernels (see the module doc) and lay the weights out for them."""
    linears = _candidates(model)
    if not linears or linears[0].weight.device.type != "cpu":
        return Kernels()
    with torch.no_grad(), torch.inference_mode(False):
        sample: list[Tensor] = []
        for lin in sorted(linears, key=lambda m: -m.weight.numel()):
            sample.append(lin.weight)
            if sum(w.numel() * w.element_size() for w in sample) >= SAMPLE_BYTES:
                break
        transposed = [w.t().contiguous().t() for w in sample]
        runs: dict[Choice, tuple[list[Tensor], LinearFn]] = {
            "stored": (sample, F.linear), "input-major": (transposed, F.linear),
        }
        if onednn_available() and sample[0].dtype == torch.float32:
            runs["onednn"] = (sample, _onednn_linear)
        times: dict[Choice, dict[int, list[float]]] = {c: {r: [] for r in ROWS} for c in runs}
        for ws, fn in runs.values():  # warm-up
            for r in ROWS:
                _pass_seconds(ws, fn, r)
        for i in range(rounds):
            for c, (ws, fn) in (runs.items() if i % 2 == 0 else reversed(runs.items())):
                for r in ROWS:
                    times[c][r].append(_pass_seconds(ws, fn, r))
        del transposed, runs
        med = {c: {r: statistics.median(t) for r, t in by_rows.items()} for c, by_rows in times.items()}
        kernels = _plan(med)
        log.info("linear kernels for decoding: %s for one row, %s for more (pass over %d weights: %s)", kernels.one,
                 kernels.batched, len(sample), "; ".join(
                     f"{c} " + ", ".join(f"{t * 1e3:.2f} ms at {r} rows" for r, t in by_rows.items())
                     for c, by_rows in med.items()))
        if kernels.one == "input-major":
            for lin in linears:
                lin.weight = nn.Parameter(lin.weight.detach().t().contiguous().t(), requires_grad=False)
    return kernels
