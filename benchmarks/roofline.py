"""Compute roofline of a batched decode step: how far 8 concurrent streams can scale over one on the CPU.

`python -m benchmarks.roofline [--model 350m] [--rounds 5]`. A decode step multiplies a (B, 1, K) activation by
every (N, K) weight of the model. This times exactly those products, on random weights of the model's shapes
(fused q/k/v and gate/up, as the lean decoder runs them, plus the LM head), for B = 1, 2, 4 and 8 rows, with the
kernels the engine can pick (MKL through `F.linear`, oneDNN, each on the stored and the input-major layout;
engine/weight_layout.py) and 1 or all cores, in
alternating rounds, and reports the median pass time, the weight bytes streamed per second and the FLOP/s reached,
and which kernels the engine's rule (`weight_layout._plan`) picks from these times for each thread count.
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
from millm.engine.weight_layout import _ONEDNN_IM, _onednn_linear, _plan, onednn_available

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
    # the input-major layout (engine/weight_layout.py): a transposed view of a (K, N) copy; a tied head stays as stored
    moved = [w.t().contiguous().t() for w in weights[:-1]] + [weights[-1] if shape.tied else
                                                               weights[-1].t().contiguous().t()]
    layouts = {"stored": weights, "input-major": moved}
    kernels: dict[str, tuple[Callable[..., torch.Tensor], str]] = {"mkl": (F.linear, "stored"),
                                                                   "mkl-im": (F.linear, "input-major")}
    if onednn_available():
        kernels["onednn"] = (_onednn_linear, "stored")
        kernels["onednn-im"] = (_onednn_linear, "input-major")
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
                fn, layout = kernels[k]
                s = _pass(layouts[layout], xs[b], fn)
                if rnd:
                    times[(k, t, b)].append(s)
        roof = {t: _square_gflops(t) for t in thread_counts}
    torch.set_num_threads(cores)
    rows: list[dict[str, Any]] = []
    for (k, t, b), ts in times.items():
        s = statistics.median(ts)
        rows.append({"kernel": k, "threads": t, "rows": b, "ms": s * 1e3, "gb_s": nbytes / s / 1e9,
                     "gflop_s": 2 * params * b / s / 1e9})
    best = {b: min((r for r in rows if r["rows"] == b), key=lambda r: r["ms"]) for b in ROWS}
    # what the engine's rule (weight_layout._plan) picks from these passes, per thread count, and the ceiling then
    names = {"mkl": "stored", "mkl-im": "input-major", "onednn": "onednn", "onednn-im": _ONEDNN_IM}
    choice = {}
    for t in thread_counts:
        med = {names[k]: {b: statistics.median(times[(k, t, b)]) for b in (1, 8)} for k in kernels}
        plan = _plan(med)
        one = med[plan.one if plan.one != "onednn" or plan.layout == "stored" else _ONEDNN_IM][1]
        many = med[_ONEDNN_IM if plan.batched == "onednn" and plan.layout == "input-major" else plan.batched][8]
        choice[str(t)] = {"one": plan.one, "batched": plan.batched, "layout": plan.layout, "ms_1": one * 1e3,
                          "ms_8": many * 1e3, "ceiling_8_vs_1": 8 * one / many}
    return {
        "parameters_in_products": params, "weight_bytes": nbytes, "rounds": rounds, "cores": cores,
        "square_sgemm_gflop_s": roof, "passes": rows,
        "best": {str(b): best[b] for b in ROWS},
        # with the best kernel and threads at each batch size, as the engine can choose per regime
        "ceiling_8_vs_1": 8 * best[1]["ms"] / best[8]["ms"],
        "engine_choice": choice,
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
    for t, c in res["engine_choice"].items():
        print(f"engine's choice with {t} thread(s): {c['one']} for 1 row ({c['ms_1']:.1f} ms), {c['batched']} for 8 "
              f"({c['ms_8']:.1f} ms), {c['layout']} layout: 8 streams against one {c['ceiling_8_vs_1']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
