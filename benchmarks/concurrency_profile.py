"""Where a concurrency run's time goes, in process: prefills and decode steps of the worker, by batch size.

`python -m benchmarks.concurrency_profile [--model 350m] [--levels 1,8] [--rounds 2] [--tokens 32] [--prompt 64]`.
The sweep's concurrency figure (`benchmarks/sweep.py`) is c requests at once (distinct additive steering each, the
same prompt length and token count) against one. This runs the same requests on a started `Worker` (its own
thread, thread policy and kernel choice, as the server runs it), without HTTP, alternating the levels, and
records every prefill (rows, tokens, seconds, threads) and every decode step (rows, seconds, threads). It reports
per level the wall time, the aggregate tokens per second and the ratio to one stream, the time in prefills and in
decode steps, the median step by row count, and the ceiling the steps alone would give.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import defaultdict
from typing import Any

import torch

from benchmarks.models import get_model
from benchmarks.sweep import get_sweep_model
from millm.engine.model_loading import load_model
from millm.engine.types import FeatureStrength, GenerationEvent, GenerationRequest, SamplingParams, SteeringSpec
from millm.engine.worker import Worker
from millm.sae.loading import load_sae


class _Recorder:
    def __init__(self, worker: Worker) -> None:
        self.events: list[tuple[str, int, int, float, int]] = []  # kind, rows, tokens, seconds, threads
        self.idle = threading.Event()  # set between the worker's recorded calls (a request ends inside one)
        self.idle.set()
        step, prefill = worker._step, worker._prefill

        def timed_step() -> None:
            self.idle.clear()
            rows = len(worker._rows)
            t = time.perf_counter()
            step()
            self.events.append(("step", rows, rows, time.perf_counter() - t, torch.get_num_threads()))
            self.idle.set()

        def timed_prefill(handles: list[Any]) -> None:
            self.idle.clear()
            t = time.perf_counter()
            prefill(handles)
            tokens = max(len(h.request.prompt_ids) for h in handles) * len(handles)
            self.events.append(("prefill", len(handles), tokens, time.perf_counter() - t, torch.get_num_threads()))
            self.idle.set()

        worker._step = timed_step  # type: ignore[method-assign]
        worker._prefill = timed_prefill  # type: ignore[method-assign]


def _run(worker: Worker, reqs: list[GenerationRequest], rec: _Recorder | None = None) -> tuple[float, list[list[int]]]:
    done = threading.Semaphore(0)
    tokens: list[list[int]] = [[] for _ in reqs]

    def sink_for(i: int) -> Any:
        def sink(ev: Any) -> None:
            if isinstance(ev, BaseException):
                raise ev
            if isinstance(ev, GenerationEvent):
                tokens[i].extend(ev.token_ids)
                if ev.finish_reason is not None:
                    done.release()
        return sink

    t = time.perf_counter()
    for i, r in enumerate(reqs):
        worker.submit(r, sink_for(i))
    for _ in reqs:
        done.acquire()
    wall = time.perf_counter() - t
    if rec is not None:
        rec.idle.wait()  # the call that ended the last request has recorded itself
    return wall, tokens


def measure(name: str, *, levels: tuple[int, ...], rounds: int, tokens: int, prompt: int) -> dict[str, Any]:
    bm = get_sweep_model(name) if name not in ("350m", "demo") else get_model(name)
    lm = load_model(str(bm.model_dir), device="cpu", dtype="float32")
    sae = load_sae(str(bm.sae_dir))
    worker = Worker(max_batch_size=max(levels))
    worker.start()
    worker.swap_model(lm).result()
    worker.attach_sae(sae).result()
    d_sae = sae.d_sae
    vocab = lm.model.config.vocab_size
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    def requests(c: int, tag: str) -> list[GenerationRequest]:
        return [GenerationRequest(
            request_id=f"{tag}-{i}", params=params,
            prompt_ids=tuple(torch.randint(4, vocab, (prompt,), generator=torch.Generator().manual_seed(100 + i))
                             .tolist()),
            steering=SteeringSpec(features=(FeatureStrength((i * 131 + 17) % d_sae, 4.0),)))
            for i in range(c)]

    rec = _Recorder(worker)
    solo = [_run(worker, [r])[1][0] for r in requests(max(levels), "solo")]
    for c in levels:  # unmeasured: the thread policy times each batch regime once
        _run(worker, requests(c, f"warm{c}"), rec)
    out: dict[int, dict[str, Any]] = {c: {"walls": [], "prefill_s": [], "step_s": [], "mismatches": 0} for c in levels}
    steps_by_rows: dict[int, list[float]] = defaultdict(list)
    prefills: list[tuple[int, int, float, int]] = []
    threads_by_rows: dict[int, set[int]] = defaultdict(set)
    for rnd in range(rounds):
        for c in (levels if rnd % 2 == 0 else levels[::-1]):
            rec.events.clear()
            wall, toks = _run(worker, requests(c, f"r{rnd}c{c}"), rec)
            out[c]["walls"].append(wall)
            out[c]["prefill_s"].append(sum(e[3] for e in rec.events if e[0] == "prefill"))
            out[c]["step_s"].append(sum(e[3] for e in rec.events if e[0] == "step"))
            out[c]["mismatches"] += sum(1 for i, t in enumerate(toks) if t != solo[i])
            for kind, rows, ntok, sec, th in rec.events:
                if kind == "step":
                    steps_by_rows[rows].append(sec)
                    threads_by_rows[rows].add(th)
                else:
                    prefills.append((rows, ntok, sec, th))
    worker.stop()
    res: dict[str, Any] = {"model": name, "tokens": tokens, "prompt": prompt, "rounds": rounds, "levels": {}}
    one = None
    for c in levels:
        o = out[c]
        wall = statistics.median(o["walls"])
        pre, steps = statistics.median(o["prefill_s"]), statistics.median(o["step_s"])
        agg = c * tokens / wall
        one = agg if one is None else one
        res["levels"][c] = {"wall_s": round(wall, 3), "aggregate_tok_s": round(agg, 2), "ratio": round(agg / one, 2),
                            "prefill_s": round(pre, 3), "steps_s": round(steps, 3),
                            "other_s": round(wall - pre - steps, 3), "mismatches": o["mismatches"]}
    res["median_step_ms_by_rows"] = {r: [round(statistics.median(v) * 1e3, 1), len(v), sorted(threads_by_rows[r])]
                                     for r, v in sorted(steps_by_rows.items())}
    res["prefills"] = [{"rows": r, "tokens": n, "ms": round(s * 1e3, 1), "threads": th} for r, n, s, th in prefills]
    res["thread_choices"] = worker.threads.choices()
    res["kernel_choices"] = worker.threads.kernel_choices()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="350m")
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=64)
    args = ap.parse_args(argv)
    out = measure(args.model, levels=tuple(int(x) for x in args.levels.split(",")), rounds=args.rounds,
                  tokens=args.tokens, prompt=args.prompt)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
