"""The matrix kernels for CPU decoding and prefill: which library computes x @ W^T, and in which weight layout.

A one-token decode step multiplies a (B, 1, K) activation by every (N, K) weight, so on a CPU its
time is the time to stream the weights. How fast that streams depends on the CPU and the kernel.
On the 2-core AMD EPYC benchmark machine, MKL (torch's `F.linear` on CPU) streams a weight stored
(N, K) at about 13 GB/s and one stored (K, N) at about 16 GB/s for one row, and falls to 5-7 GB/s
for 2 to 16 rows. oneDNN (`torch.ops.mkldnn._linear_pointwise`) on the same plain (N, K) weights
streams 14-24 GB/s for one row and 8-18 GB/s for eight, so it makes batched decoding scale. Which
wins depends on the machine, the batch size and the weights' shapes, so `choose_kernels` times the candidates
on the products a decode step runs, for one row and for eight, and picks a kernel for one-row steps and one for
steps of two or more rows (the lean decoder switches per step), switching away from the stored MKL path only on a
clear win:
- `stored`: MKL, weights as loaded;
- `input-major`: MKL, each Linear weight rebound to a transposed view of a (K, N) copy: same shape,
  same values, no extra memory once the old storage is freed; `F.linear` accepts either layout, so
  every caller (HF modules, the lean decoder) uses it unchanged;
- `onednn`: oneDNN on the weights in either layout; the lean decoder (`engine/llama_decode.py`) calls
  `linear_fn(choice)` (no packed copy, no extra memory).
- `onednn-packed` (steps of two or more rows only): oneDNN on a copy of each weight the decode step multiplies,
  reordered once into oneDNN's blocked layout for 8-row products (`PackedLinear`; the same bits as `onednn` for two
  rows or more). Plain weights make oneDNN reorder them on every call: on the 2-core benchmark machine (one thread)
  eight rows of a 350M-sized sample took 25.6 ms packed against 49.8 plain and 59.5 with MKL, about the one-row
  time (22.5-26.5 ms). It costs a second copy of those weights, so it is a candidate only while that copy takes at
  most `PACKED_MEMORY_SHARE` of the memory available.

What is timed (`_decode_sample`): one decode step's products, each shape as often as the model multiplies it. The
first layers (fused q/k/v and gate/up as the lean decoder fuses them, then o and down) up to `LAYER_SAMPLE_BYTES`
stand for all layers, and the first rows of the LM head (and any other weight outside the layers) up to
`HEAD_SAMPLE_BYTES` for the whole head; each product's time is scaled by how many of the model's it stands for, so
a pass estimates a step's matrix products. Streaming real consecutive weights past the cache keeps the bandwidth
honest; a single small weight timed again and again would be read from the cache.

The plan (`_plan`): one layout for every batch size, so the one-row regime, judged on its one-row times alone,
chooses it: input-major when MKL on it is clearly faster than the best kernel on the stored layout, unless that
costs the batch regime a larger factor than it gains. The batch regime then takes, on its 8-row times alone, MKL
or oneDNN in that layout. (Comparing summed seconds let oneDNN's 8-row time, the larger number, decide the one-row
regime's layout, and it then ran about 14% slower than it could.)

The prefill kernel (`Kernels.prefill`, `time_prefill`, `_prefill_plan`): a prefill multiplies (T, K) activations by
every weight, compute-bound. On the AMD EPYC benchmark machine MKL runs its float32 GEMM at about 100 GFLOP/s a core
(it seems to take its AVX2 path there) and oneDNN about 240 (AVX-512): a 4096 x 1024 weight at 64 and 512 rows took
5.4 and 38 ms with MKL, 2.5 and 17 with oneDNN on one thread. So the lean step's prefill (`prefill_fn`) is timed too,
for the models the lean step runs: MKL (`F.linear`) and oneDNN on the first layers' unfused products (as a prefill
runs them, up to `PREFILL_SAMPLE_BYTES`: the modules' own products for MKL, the fused q/k/v and gate/up for
oneDNN, as the worker then runs them, `LlamaDecoder.fused_prefill`; the LM head, one position a prompt, is left out), at 32 and 512 positions
(`PREFILL_ROWS`), in the layout the decode plan chose, with every core, as the decode kernels. oneDNN is taken when clearly faster
(`MIN_GAIN`) at 512 positions and not clearly slower at 32: one kernel for every prompt size, because the worker
prefills a prompt alone or left-padded with others (the lean step takes both), and the same prompt must get the same
products either way; oneDNN's bits for a row do not depend on the other rows (nor on the thread count) from two rows
up, and `prefill_fn` runs a lone row as two. (Attention over a left-padded row can still differ from its solo run in
the last bits: SDPA's and the eager path's reductions over the longer, padded key axis are blocked differently.) A packed copy for prefill is not a candidate: on one 4096 x 1024 weight it
won 5-12% over plain oneDNN, for a second copy of every weight.

Weights shared with another parameter (a tied LM head) and quantized layers are left alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

Choice = Literal["stored", "input-major", "onednn", "onednn-packed"]
LinearFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]

LAYER_SAMPLE_BYTES = 48 * 2**20  # the first layers up to about this much weight stand for all layers
HEAD_SAMPLE_BYTES = 32 * 2**20  # the first rows of the LM head (and any other weight outside the layers) up to this
MIN_GAIN = 0.05
ROWS = (1, 8)  # batch sizes timed: one request, and a batch of concurrent ones
_FUSED = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj"))
_ONEDNN_IM = "onednn/input-major"  # oneDNN on the input-major layout: timed for the batch regime only
PACKED: Final = "onednn-packed"  # oneDNN on weights reordered for it once (either layout): timed for the batch regime only
PACKED_MEMORY_SHARE = 0.25  # the packed copy of the decode weights may take at most this share of available memory
PREFILL_ROWS = (32, 512)  # prompt positions a prefill's products are timed at: a short prompt, eight 64-token ones
PREFILL_ROUNDS = 3  # timed rounds of the prefill sample (after one warm-up round)
PREFILL_SAMPLE_BYTES = 16 * 2**20  # the prefill's products are compute-bound: a smaller sample of the first layers


def _onednn_linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    if not (w.is_contiguous() or w.t().is_contiguous()):  # oneDNN takes plain weights in either layout
        return F.linear(x, w, b)
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return out


def _pack(w: Tensor, rows: int) -> Tensor:
    """w (N, K), either layout, reordered into oneDNN's blocked layout for `rows`-row products (an opaque tensor)."""
    packed: Tensor = torch.ops.mkldnn._reorder_linear_weight(w.detach(), rows)
    return packed


def _packed_product(x: Tensor, packed: Tensor, b: Tensor | None) -> Tensor:
    out: Tensor = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
    return out


class PackedLinear:
    """The `onednn-packed` kernel: x @ W^T + b by oneDNN on a copy of W packed once for `rows`-row products, for each
    of the given weights (the tensors the lean decoder passes, looked up by identity: the decoder's fused q/k/v and
    gate/up weights and the modules' own Parameters, which stay the same objects while the decoder is fresh); any
    other weight goes to plain oneDNN. The same bits as `onednn` for two or more rows."""

    def __init__(self, weights: list[Tensor], rows: int = ROWS[-1]) -> None:
        with torch.no_grad(), torch.inference_mode(False):
            self._packed = {id(w): (w, _pack(w, rows)) for w in weights}  # (the weight is kept: its id stays its own)

    @property
    def nbytes(self) -> int:
        return sum(w.numel() * w.element_size() for w, _ in self._packed.values())

    def __call__(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        hit = self._packed.get(id(w))
        if hit is None:
            return _onednn_linear(x, w, b)
        return _packed_product(x, hit[1], b)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def packing_fits(model: nn.Module) -> bool:
    """Whether a packed copy of the weights a decode step multiplies (every plain Linear's) fits in
    `PACKED_MEMORY_SHARE` of the available memory."""
    if not onednn_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    avail = available_memory()
    need = sum(w.numel() * w.element_size() for m in model.modules() if (w := _plain(m)) is not None)
    return avail is not None and need <= PACKED_MEMORY_SHARE * avail


def onednn_available() -> bool:
    available = bool(torch.backends.mkldnn.is_available())
    return available and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear_fn(choice: Choice) -> LinearFn:
    """The function the lean decoder calls for x @ W^T + b under a choice (not `onednn-packed`: that one holds the
    packed weights, `PackedLinear`)."""
    return _onednn_linear if choice == "onednn" else F.linear


def _onednn_rows(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """oneDNN for a prefill, whose rows must get the same bits whether multiplied alone or with others: oneDNN's bits
    for a row do not depend on the other rows from two rows up, but one row takes another path, so a product of one
    row runs as two (the row twice) and keeps the first."""
    if x.numel() != x.shape[-1]:
        return _onednn_linear(x, w, b)
    return _onednn_linear(torch.cat([x, x], -2), w, b)[..., :1, :]


def prefill_fn(choice: Choice) -> LinearFn:
    """The function the lean step calls for a prefill's products under `Kernels.prefill`: MKL (`F.linear`, as the
    transformers modules) or oneDNN, one kernel for every prompt size (see the module doc)."""
    return _onednn_rows if choice == "onednn" else F.linear


def _shared(model: nn.Module) -> set[int]:
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[p.data_ptr()] = counts.get(p.data_ptr(), 0) + 1
    return {ptr for ptr, n in counts.items() if n > 1}


def _plain(m: nn.Module) -> Tensor | None:
    """The weight of a plain nn.Linear (2-D, contiguous, floating point), else None."""
    if type(m) is not nn.Linear:
        return None
    w = m.weight
    ok = w.dim() == 2 and w.is_contiguous() and w.dtype in (torch.float32, torch.bfloat16, torch.float16)
    return w if ok else None


def _candidates(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers whose weights may be laid out again: plain, and not shared with another parameter."""
    shared = _shared(model)
    return [m for m in model.modules()
            if isinstance(m, nn.Linear) and _plain(m) is not None and m.weight.data_ptr() not in shared]


@dataclass(frozen=True)
class _Product:
    """One matrix product of the timed sample: the (N, K) weight, how many of the model's products it stands for,
    and whether the input-major layout applies to it (not to a tied LM head)."""

    weight: Tensor
    scale: float
    movable: bool


def _layers(model: nn.Module) -> nn.ModuleList | None:
    """The decoder layers: the module list holding the most Linear layers."""
    best, most = None, 0
    for m in model.modules():
        if isinstance(m, nn.ModuleList):
            n = sum(1 for sub in m.modules() if type(sub) is nn.Linear)
            if n > most:
                best, most = m, n
    return best


def _decode_sample(model: nn.Module, movable: set[int], *, fused: bool, head: bool = True,
                   layer_bytes: int | None = None) -> list[_Product]:
    """The products of one decode step to time (see the module doc): the first layers' weights up to `layer_bytes`
    (None: `LAYER_SAMPLE_BYTES`), fused as the lean decoder fuses them when `fused`, and (with `head`) the first rows
    of each weight outside the layers (the LM head), each scaled to the model's count."""
    layer_bytes = LAYER_SAMPLE_BYTES if layer_bytes is None else layer_bytes
    layers = _layers(model)
    inside: set[int] = set()
    sample: list[_Product] = []
    if layers is not None and len(layers):
        for layer in layers:
            inside.update(id(m) for m in layer.modules())
        # a layer larger than layer_bytes (a 7B model's is about 800 MB in float32) is timed on the first
        # rows of each of its weights, so the copies the timing makes stay small
        first = sum(w.numel() * w.element_size() for m in layers[0].modules() if (w := _plain(m)) is not None)
        frac = min(1.0, layer_bytes / max(first, 1))

        def cut(w: Tensor) -> Tensor:
            return w[: max(1, math.ceil(w.shape[0] * frac))]

        per_layer: list[list[tuple[Tensor, float]]] = []  # each product, and how many rows of it each row stands for
        nbytes = 0
        for layer in layers:
            named = {n: w for n, m in layer.named_modules() if (w := _plain(m)) is not None}
            products: dict[str, tuple[Tensor, float]] = {n: (cut(w), w.shape[0] / cut(w).shape[0])
                                                          for n, w in named.items()}
            if fused:
                for group in _FUSED:
                    if all(n in named for n in group):  # one (sum N, K) product, as llama_decode._fuse makes it
                        part = torch.cat([products[n][0] for n in group])
                        products[group[0]] = part, sum(named[n].shape[0] for n in group) / part.shape[0]
                        for n in group[1:]:
                            del products[n]
            per_layer.append(list(products.values()))
            nbytes += sum(w.numel() * w.element_size() for w, _ in products.values())
            if nbytes >= layer_bytes:
                break
        scale = len(layers) / len(per_layer)
        sample += [_Product(w, scale * rows, True) for ps in per_layer for w, rows in ps]
    for m in model.modules() if head else ():
        w = _plain(m)
        if id(m) in inside or w is None:
            continue
        rows = max(1, min(w.shape[0], HEAD_SAMPLE_BYTES // (w.shape[1] * w.element_size())))
        sample.append(_Product(w[:rows], w.shape[0] / rows, w.data_ptr() in movable))
    return sample


def _product_seconds(w: Tensor, x: Tensor, fn: LinearFn) -> float:
    """Wall time of one product x @ w^T."""
    t = time.perf_counter()
    fn(x, w, None)
    return time.perf_counter() - t


@dataclass(frozen=True)
class Kernels:
    """The decode kernel for one-row steps and for steps of two or more rows (one weight layout for both: input-major
    when either is `input-major`, or `onednn` or `onednn-packed` on it)."""

    one: Choice = "stored"
    batched: Choice = "stored"
    onednn: bool = False  # whether oneDNN was a candidate (then the other kernel on the layout is an option too)
    packed: bool = False  # whether `onednn-packed` was a candidate (then the batch regime's real steps time it too)
    prefill: Choice = "stored"  # the lean step's prefill products: "stored" (MKL on the weights as laid out) or "onednn"

    @property
    def layout(self) -> Literal["stored", "input-major"]:
        return "input-major" if "input-major" in (self.one, self.batched) else "stored"

    def options(self, batched: bool) -> tuple[Choice, ...]:
        """The kernels a step of one row (or of more, `batched`) may call on this layout, the timing's pick first:
        with oneDNN a candidate, MKL and oneDNN, except oneDNN for one row on input-major weights (which streamed
        them about 2x slower than MKL on the 2-core benchmark machine), and for more rows `onednn-packed` too when it
        was a candidate, whatever the product timing picked. The worker's thread policy times real steps with each
        (engine/threads.py) and keeps the faster. (Packed weights took the demo's 8-row step to 0.82-0.85x MKL's and
        plain oneDNN's to 1.02-1.08x, loaded; a product timing disturbed by load picked plain oneDNN in 2 of 7
        worker starts, and the real steps then never tried packed weights, for the model's life; ninth session,
        step7, in docs/benchmarks-notes.md.)"""
        first = self.batched if batched else self.one
        if not self.onednn or (self.layout == "input-major" and not batched):
            return (first,)
        mkl: Choice = "input-major" if self.layout == "input-major" else "stored"
        options: tuple[Choice, ...] = (first, mkl if first in ("onednn", PACKED) else "onednn")
        return tuple(dict.fromkeys((*options, PACKED))) if batched and self.packed else options


def choose_layout(model: nn.Module, *, rounds: int = 5) -> Choice:
    """The one-row choice of `choose_kernels` (which lays the weights out for it)."""
    return choose_kernels(model, rounds=rounds).one


def _plan(med: dict[str, dict[int, float]]) -> Kernels:
    """The kernels from median step estimates per candidate and row count (see the module doc): the one-row regime
    judged on one-row times and the batch regime on batch times, never on their sum; a change from the stored MKL
    path needs a clear win (`MIN_GAIN`)."""
    one, many = ROWS[0], ROWS[-1]

    def clear(a: str, b: str, rows: int) -> bool:  # a clearly faster than b
        return a in med and med[a][rows] < (1 - MIN_GAIN) * med[b][rows]

    def batch_kernel(mkl: str, dnn: str) -> str:
        best = dnn if clear(dnn, mkl, many) else mkl
        return PACKED if clear(PACKED, best, many) else best  # (packed from either layout: one timing for both)

    stored_one = "onednn" if clear("onednn", "stored", one) else "stored"
    stored_many = batch_kernel("stored", "onednn")
    if "input-major" in med and clear("input-major", stored_one, one):
        im_many = batch_kernel("input-major", _ONEDNN_IM)
        gain = med[stored_one][one] / med["input-major"][one]
        cost = med[im_many][many] / med[stored_many][many]
        if cost < gain:  # the batch regime loses less than the one-row regime gains
            return Kernels("input-major", {_ONEDNN_IM: "onednn", PACKED: PACKED}.get(im_many, "input-major"))  # type: ignore[arg-type]
    return Kernels(stored_one, stored_many)  # type: ignore[arg-type]


def time_candidates(model: nn.Module, *, rounds: int = 5, fused: bool = True, packed: bool = False
                    ) -> dict[str, dict[int, float]]:
    """Median estimated step-product seconds per candidate and row count (see the module doc); {} when there is
    nothing to lay out (no plain CPU weights). Candidates: "stored", "input-major", and with `fused` and float32
    weights "onednn" and, for the batch regime, "onednn/input-major" and (with `packed`) "onednn-packed"."""
    linears = _candidates(model)
    if not linears or linears[0].weight.device.type != "cpu":
        return {}
    with torch.no_grad(), torch.inference_mode(False):
        sample = _decode_sample(model, {lin.weight.data_ptr() for lin in linears}, fused=fused)
        stored = [p.weight for p in sample]
        scales = [p.scale for p in sample]
        transposed = [p.weight.t().contiguous().t() if p.movable else p.weight for p in sample]
        runs: dict[str, tuple[list[Tensor], LinearFn, tuple[int, ...]]] = {
            "stored": (stored, F.linear, ROWS), "input-major": (transposed, F.linear, ROWS),
        }
        if fused and onednn_available() and stored[0].dtype == torch.float32:  # on copies of their own (see below)
            runs["onednn"] = ([w.clone() for w in stored], _onednn_linear, ROWS)
            runs[_ONEDNN_IM] = ([w.t().clone().t() for w in transposed], _onednn_linear, ROWS[1:])
            if packed:
                runs[PACKED] = ([_pack(w, ROWS[-1]) for w in stored], _packed_product, ROWS[1:])
        xs = {(r, k): torch.randn(r, 1, k, dtype=stored[0].dtype) for r in ROWS for k in {w.shape[1] for w in stored}}
        # Product by product, each candidate in turn on its own copy of the weight (the order reversed every round),
        # so that a burst of load from elsewhere hits every candidate alike; between two visits of one copy the
        # whole sample streams by, so no product is read from the cache, as in a decode step of a model larger than
        # the cache. The first round warms up and is dropped.
        times: dict[str, dict[int, list[list[float]]]] = {c: {r: [[] for _ in sample] for r in rs}
                                                         for c, (_, _, rs) in runs.items()}
        order = list(runs.items())
        for i in range(rounds + 1):
            for r in ROWS:
                for j in range(len(sample)):
                    for c, (ws, fn, rs) in (order if i % 2 == 0 else order[::-1]):
                        if r in rs:
                            t = _product_seconds(ws[j], xs[(r, ws[j].shape[1])], fn)
                            if i:
                                times[c][r][j].append(t)
    return {c: {r: sum(statistics.median(t) * scale for t, scale in zip(per, scales, strict=True))
                for r, per in by_rows.items()} for c, by_rows in times.items()}


def time_prefill(model: nn.Module, *, rounds: int = PREFILL_ROUNDS, input_major: bool = False
                 ) -> dict[str, dict[int, float]]:
    """Median estimated seconds of a prefill's layer products at each of `PREFILL_ROWS` prompt positions, for MKL
    ("stored") and oneDNN ("onednn") on the model's stored weights, or on input-major copies of them when
    `input_major` (the layout `choose_kernels` is about to apply); the first layers' products as the lean step runs a
    prefill with each (MKL the modules' own, oneDNN the fused q/k/v and gate/up: `LlamaDecoder.fused_prefill`),
    scaled to the model's count; not the LM head, which a prefill runs on one position per
    prompt. {} when oneDNN is no candidate (not available, weights not float32 on the CPU)."""
    linears = _candidates(model)
    if not linears or linears[0].weight.device.type != "cpu" or linears[0].weight.dtype != torch.float32 or (
            not onednn_available()):
        return {}

    def sample(fused: bool) -> list[_Product]:
        products = _decode_sample(model, set(), fused=fused, head=False, layer_bytes=PREFILL_SAMPLE_BYTES)
        if not input_major:
            return products
        return [dataclasses.replace(p, weight=p.weight.t().contiguous().t()) for p in products]

    fns: list[tuple[str, LinearFn]] = [("stored", F.linear), ("onednn", _onednn_linear)]
    with torch.no_grad(), torch.inference_mode(False):
        # MKL on the modules' own products, oneDNN on the fused ones (as the lean step's prefill runs each kernel)
        samples = {"stored": sample(False), "onednn": sample(True)}
        xs = {(r, p.weight.shape[1]): torch.randn(1, r, p.weight.shape[1]) for r in PREFILL_ROWS
              for products in samples.values() for p in products}
        times: dict[str, dict[int, list[list[float]]]] = {c: {r: [[] for _ in samples[c]] for r in PREFILL_ROWS}
                                                         for c, _ in fns}
        for i in range(rounds + 1):  # (alternated and reversed every round as in `time_candidates`; round 0 warms up)
            for r in PREFILL_ROWS:
                for j in range(max(len(products) for products in samples.values())):
                    for c, fn in (fns if i % 2 == 0 else fns[::-1]):
                        if j < len(samples[c]):
                            w = samples[c][j].weight
                            t = _product_seconds(w, xs[(r, w.shape[1])], fn)
                            if i:
                                times[c][r][j].append(t)
    return {c: {r: sum(statistics.median(t) * p.scale for t, p in zip(per, samples[c], strict=True))
                for r, per in by_rows.items()} for c, by_rows in times.items()}


def _prefill_plan(med: dict[str, dict[int, float]]) -> Choice:
    """The prefill kernel from `time_prefill`'s estimates: oneDNN when it is clearly faster (`MIN_GAIN`) on the
    largest prompt timed and not clearly slower on the smallest (one kernel serves every prompt size, so that a
    prompt prefilled alone and the same prompt prefilled with others get the same products)."""
    if "onednn" not in med:
        return "stored"
    small, large = min(PREFILL_ROWS), max(PREFILL_ROWS)
    dnn, mkl = med["onednn"], med["stored"]
    return "onednn" if dnn[large] < (1 - MIN_GAIN) * mkl[large] and dnn[small] <= (1 + MIN_GAIN) * mkl[small] \
        else "stored"


def choose_kernels(model: nn.Module, *, rounds: int = 5, fused: bool = True) -> Kernels:
    """On CPU, pick the fastest matrix-vector kernels (see the module doc) and lay the weights out for them.
    `fused`: the lean decoder runs this model, with q/k/v and gate/up fused (and may call oneDNN); otherwise only
    the layout matters (the transformers modules call `F.linear`)."""
    started = time.perf_counter()
    med = time_candidates(model, rounds=rounds, fused=fused, packed=fused and packing_fits(model))
    if not med:
        return Kernels()
    kernels = dataclasses.replace(_plan(med), onednn="onednn" in med, packed=PACKED in med)
    pre: dict[str, dict[int, float]] = {}
    if fused:
        try:  # (an optional kernel: its timing failing must not fail the first request, which sets the model up)
            pre = time_prefill(model, input_major=kernels.layout == "input-major")
        except Exception:  # noqa: BLE001
            log.warning("prefill kernel timing failed; prefilling with MKL (stored)", exc_info=True)
    kernels = dataclasses.replace(kernels, prefill=_prefill_plan(pre))
    log.info("linear kernels for decoding: %s for one row, %s for more, %s layout; for prefills: %s (timed in %.2f s; "
             "estimated step products: %s; estimated prefill products: %s)", kernels.one, kernels.batched,
             kernels.layout, kernels.prefill, time.perf_counter() - started,
             "; ".join(f"{c} " + ", ".join(f"{t * 1e3:.2f} ms at {r} rows" for r, t in by_rows.items())
                       for c, by_rows in med.items()),
             "; ".join(f"{c} " + ", ".join(f"{t * 1e3:.1f} ms at {r} positions" for r, t in by_rows.items())
                       for c, by_rows in pre.items()) or "not timed")
    if kernels.layout == "input-major":
        with torch.no_grad(), torch.inference_mode(False):
            for lin in _candidates(model):
                lin.weight = nn.Parameter(lin.weight.detach().t().contiguous().t(), requires_grad=False)
    return kernels
