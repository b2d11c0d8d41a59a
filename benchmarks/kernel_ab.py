"""In-process A/B of the decode kernels on whole lean decode steps: which kernel and layout is really fastest.

`python -m benchmarks.kernel_ab [--model 350m] [--rows 1,8] [--threads 1,2] [--rounds 8] [--block 4]`. The engine
picks its matrix-vector kernels from timings of a decode step's products (`engine/weight_layout.py`). This times
what those choices are for: whole lean decode steps (`LlamaDecoder.step`, norms, attention over the KV cache,
greedy argmax) of the benchmark model, with each kernel and weight layout forced (MKL or oneDNN, each on the stored
and the input-major layout: two copies of the model; `--kernels stored/onednn-packed` adds oneDNN on a packed copy of
the weights, engine/weight_layout.PackedLinear), at each row count and thread count, in alternated blocks of
`--block` steps (the first step of a block is dropped: it pays for the switch), the order reversed every round, and
reports the median step per configuration. It also prints what `choose_kernels` picks on this model, so the two can
be compared in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.models import get_model
from benchmarks.sweep import get_sweep_model
from millm.engine import kv
from millm.engine.llama_decode import LlamaDecoder
from millm.engine.model_loading import load_model
from millm.engine.weight_layout import PackedLinear, _candidates, _onednn_linear, _plan, time_candidates


def _relayout(model: torch.nn.Module) -> None:
    """The input-major layout, as `choose_kernels` lays the weights out for it."""
    with torch.no_grad(), torch.inference_mode(False):
        for lin in _candidates(model):
            lin.weight = torch.nn.Parameter(lin.weight.detach().t().contiguous().t(), requires_grad=False)


class _Stream:
    """One configuration's decoder, rows and KV cache; `steps(n)` runs n greedy decode steps and returns their
    wall times."""

    def __init__(self, dec: LlamaDecoder, linear: Any, prompts: torch.Tensor, context: int) -> None:
        self.dec, self.linear, self.prompts, self.context = dec, linear, prompts, context
        self._reset()

    def _reset(self) -> None:
        self.dec.linear = F.linear
        self.cache = kv.new_cache()
        t = self.prompts.shape[1]
        positions = torch.arange(t)[None].expand(self.prompts.shape[0], -1)
        logits = self.dec.step(self.prompts, positions, mask=None, cache=self.cache)
        self.ids = logits.argmax(-1, keepdim=True)
        self.pos = t

    def products(self, n: int) -> list[float]:
        """n passes over the step's matrix products alone (the decoder's own weights, as a step multiplies them)."""
        d = self.dec
        ws = d.product_weights()
        b = self.ids.shape[0]
        xs = {k: torch.randn(b, 1, k) for k in {w.shape[1] for w in ws}}
        times = []
        for _ in range(n):
            t = time.perf_counter()
            for w in ws:
                self.linear(xs[w.shape[1]], w, None)
            times.append(time.perf_counter() - t)
        return times

    def steps(self, n: int) -> list[float]:
        if self.pos + n > self.context:
            self._reset()
        self.dec.linear = self.linear
        times = []
        b = self.ids.shape[0]
        for _ in range(n):
            t = time.perf_counter()
            logits = self.dec.step(self.ids, torch.full((b, 1), self.pos), mask=None, cache=self.cache)
            self.ids = logits.argmax(-1, keepdim=True)
            times.append(time.perf_counter() - t)
            self.pos += 1
        return times


def measure(name: str, *, rows: tuple[int, ...], threads: tuple[int, ...], rounds: int, block: int,
            prompt_len: int = 32, context: int = 160, kernels: tuple[str, ...] = ("stored/mkl", "stored/onednn",
            "input-major/mkl", "input-major/onednn"), products: bool = False, engine: bool = True) -> dict[str, Any]:
    bm = get_sweep_model(name) if name not in ("350m", "demo") else get_model(name)
    stored = load_model(str(bm.model_dir), device="cpu", dtype="float32").model
    moved = load_model(str(bm.model_dir), device="cpu", dtype="float32").model
    _relayout(moved)
    torch.set_num_threads(max(threads))
    with torch.inference_mode():
        decs = {"stored": LlamaDecoder.for_model(stored), "input-major": LlamaDecoder.for_model(moved)}
        assert all(d is not None for d in decs.values()), f"{name}: no lean decode step"
        g = torch.Generator().manual_seed(0)
        vocab = stored.config.vocab_size
        streams: dict[tuple[str, str, int, int], _Stream] = {}
        packed: dict[str, PackedLinear] = {}
        for r in rows:
            prompts = torch.randint(4, vocab, (r, prompt_len), generator=g)
            for layout, dec in decs.items():
                for kernel in ("mkl", "onednn", "onednn-packed"):
                    if f"{layout}/{kernel}" not in kernels:
                        continue
                    if kernel == "onednn-packed" and layout not in packed:  # one packed copy per layout
                        packed[layout] = PackedLinear(dec.product_weights())  # type: ignore[union-attr]
                    fn = {"mkl": F.linear, "onednn": _onednn_linear}.get(kernel) or packed[layout]
                    for n in threads:
                        streams[(layout, kernel, r, n)] = _Stream(dec, fn, prompts, context)  # type: ignore[arg-type]
        modes = ("step", "products") if products else ("step",)
        times: dict[tuple[str, str, int, int, str], list[float]] = {k + (m,): [] for k in streams for m in modes}
        per_round: dict[tuple[str, str, int, int, str], list[float]] = {k: [] for k in times}
        order = [(k, s, m) for k, s in streams.items() for m in modes]
        for i in range(rounds + 1):
            for key, s, m in (order if i % 2 == 0 else order[::-1]):
                torch.set_num_threads(key[3])
                t = (s.steps(block) if m == "step" else s.products(block))[1:]
                if i:
                    times[key + (m,)] += t
                    per_round[key + (m,)].append(statistics.median(t))
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (sorted(v)[len(v) // 4], sorted(v)[3 * len(v) // 4]) for k, v in times.items()}
    # paired: each configuration against the first one of its row count, thread count and mode, round by round
    paired: dict[str, float] = {}
    for k, v in per_round.items():
        ref = next(r for r in per_round if r[2:] == k[2:])
        paired[f"{k[4]} {k[0]}/{k[1]} rows={k[2]} threads={k[3]} vs {ref[0]}/{ref[1]}"] = round(
            statistics.median(a / b for a, b in zip(v, per_round[ref], strict=True)), 3)
    torch.set_num_threads(max(threads))
    # what the engine's timing says and picks, on the stored copy (as a freshly loaded model)
    picks = {}
    for n in threads if engine else ():
        torch.set_num_threads(n)
        est = time_candidates(stored, packed=True)
        picks[n] = {"kernels": _plan(est).__dict__, "estimates_ms": {c: {r: round(t * 1e3, 2) for r, t in v.items()}
                                                                      for c, v in est.items()}}
    return {"model": name, "rows": rows, "threads": threads, "rounds": rounds, "block": block,
            "median_ms": {f"{m} {layout}/{kernel} rows={r} threads={n}": [round(t * 1e3, 2)] + [
                round(q * 1e3, 1) for q in spread[(layout, kernel, r, n, m)]]
                          for (layout, kernel, r, n, m), t in sorted(med.items(), key=lambda kv_: kv_[0][2:])},
            "paired_ratio": paired, "engine": picks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="350m")
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--kernels", default="stored/mkl,stored/onednn,input-major/mkl,input-major/onednn")
    ap.add_argument("--products", action="store_true", help="also time the step's products alone")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine's own timing")
    args = ap.parse_args(argv)
    out = measure(args.model, rows=tuple(int(x) for x in args.rows.split(",")),
                  threads=tuple(int(x) for x in args.threads.split(",")), rounds=args.rounds, block=args.block,
                  kernels=tuple(args.kernels.split(",")), products=args.products, engine=not args.no_engine)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
