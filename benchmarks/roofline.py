"""Compute roofline of a batched decode step: how far 8 concurrent streams can scale over one on the CPU.

`python -m benchmarks.roofline [--model 350m] [--rounds 5]`. A decode step multiplies a (B, 1, K) activation by
every (N, K) weight of the model. This times exactly those products, on random weights of the model's shapes
(fused q/k/v and gate/up, as the lean decoder runs them, plus the LM head), for B = 1, 2, 4 and 8 rows, with the
two kernels the engine can pick (MKL through `F.linear`, oneDNN; engine/weight_layout.py) and 1 or all cores, in
alternating rounds, and reports the median pass time, the weight bytes streamed per second and the FLOP/s reached.
A large square matrix product gives the machine's compute roof for comparison.

The concurrency target compares 8 streams' tokens per second with one stream's. With the weights streamed once per
step whatever B is, the best case is 8x; once the step becomes compute-bound, the ceiling is
8 x t(1 row) / t(8 rows) of these products alone, before attention, norms, sampling and the server's own work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.models import SHAPES, SWEEP_SHAPES, ModelShape
from millm.engine.weight_layout import _onednn_linear, onednn_available

ROWS = (1, 2, 4, 8)


def decode_weights(shape: ModelShape) -> list[torch.Tensor]:
    """The (N, K) weights one decode step multiplies by, as the lean decoder holds them."""
    d, heads = shape.d_model, shape.n_heads
    head_dim = d // heads
    kv = (shape.n_kv_heads or heads) * head_dim
    per_layer = [(d + 2 * kv, d), (d, d), (2 * shape.d_ff, d), (d, shape.d_ff)]
    shapes = per_layer * shape.n_layers + [(shape.vocab, d)]
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, k, generator=g) * 0.02 for n, k in shapes]


def _pass(weights: list[torch.Tensor], xs: dict[int, torch.Tensor],
          fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]) -> float:
    t = time.perf_counter()
    for w in weights:
        fn(xs[w.shape[1]], w, None)
    return time.perf_counter() - t


def _square_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def measure(shape: ModelShape, *, rounds: int = 5) -> dict[str, Any]:
    weights = decode_weights(shape)
    params = sum(w.numel() for w in weights)
    nbytes = params * 4
    kernels: dict[str, Callable[..., torch.Tensor]] = {"mkl": F.linear}
    if onednn_available():
        kernels["onednn"] = _onednn_linear
    cores = torch.get_num_threads()
    thread_counts = sorted({1, cores})
    configs = [(k, t, b) for k in kernels for t in thread_counts for b in ROWS]
    times: dict[tuple[str, int, int], list[float]] = {c: [] for c in configs}
    with torch.inference_mode():
        xs = {b: {k: torch.randn(b, 1, k) for k in {w.shape[1] for w in weights}} for b in ROWS}
        for rnd in range(rounds + 1):  # the first round warms up and is dropped
            order = configs if rnd % 2 == 0 else configs[::-1]
            for k, t, b in order:
                torch.set_num_threads(t)
                s = _pass(weights, xs[b], kernels[k])
                if rnd:
                    times[(k, t, b)].append(s)
        roof = {t: _square_gflops(t) for t in thread_counts}
    torch.set_num_threads(cores)
    rows = []
    for (k, t, b), ts in times.items():
        s = statistics.median(ts)
        rows.append({"kernel": k, "threads": t, "rows": b, "ms": s * 1e3, "gb_s": nbytes / s / 1e9,
                     "gflop_s": 2 * params * b / s / 1e9})
    best = {b: min((r for r in rows if r["rows"] == b), key=lambda r: r["ms"]) for b in ROWS}
    return {
        "parameters_in_products": params, "weight_bytes": nbytes, "rounds": rounds, "cores": cores,
        "square_sgemm_gflop_s": roof, "passes": rows,
        "best": {str(b): best[b] for b in ROWS},
        # with the best kernel and threads at each batch size, as the engine can choose per regime
        "ceiling_8_vs_1": 8 * best[1]["ms"] / best[8]["ms"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.roofline", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="350m", help=f"one of {', '.join([*SHAPES, *SWEEP_SHAPES])}")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the result here too")
    args = ap.parse_args(argv)
    shape = {**SHAPES, **SWEEP_SHAPES}[args.model]
    res = measure(shape, rounds=args.rounds)
    res["model"] = args.model
    with open("/proc/loadavg") as f:
        res["load_average"] = f.read().split()[:3]
    print(f"{args.model}: {res['parameters_in_products'] / 1e6:.0f}M weights in the decode products "
          f"({res['weight_bytes'] / 2**20:.0f} MiB fp32); load average {' '.join(res['load_average'])}")
    print("square 2048 sgemm: " + ", ".join(f"{t} thread(s) {g:.0f} GFLOP/s"
                                             for t, g in res["square_sgemm_gflop_s"].items()))
    print(f"{'kernel':8} {'threads':>7} {'rows':>4} {'ms/pass':>8} {'GB/s':>6} {'GFLOP/s':>8}")
    for r in res["passes"]:
        print(f"{r['kernel']:8} {r['threads']:>7} {r['rows']:>4} {r['ms']:>8.1f} {r['gb_s']:>6.1f} "
              f"{r['gflop_s']:>8.1f}")
    print(f"best 1 row {res['best']['1']['ms']:.1f} ms, best 8 rows {res['best']['8']['ms']:.1f} ms: "
          f"ceiling for 8 streams against one {res['ceiling_8_vs_1']:.2f}x (products alone)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
