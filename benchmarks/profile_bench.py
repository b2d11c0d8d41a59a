"""Where a decode step's time goes: the torch profiler over a few synchronous worker steps, with the
worker's own thread policy (engine/worker.py) as the server runs them.

The wall time of the profiled steps is split into matrix products (reading the weights),
attention, other tensor ops (norms, rotary, elementwise, cache writes) and the rest: Python,
module dispatch and framework overhead between ops, counted as wall time minus op time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.raw_bench import sync
from millm.engine import threads
from millm.engine.types import GenerationRequest, SamplingParams
from millm.engine.worker import Worker

_MATMUL = ("aten::addmm", "aten::mm", "aten::bmm", "aten::mv", "aten::matmul", "aten::linear", "aten::baddbmm",
           "mkldnn::_linear_pointwise")  # the oneDNN kernel the lean step may use on CPU (engine/weight_layout.py)
_ATTENTION = ("scaled_dot_product", "flash_attention", "efficient_attention", "aten::_softmax")


@dataclass
class Profile:
    steps: int
    wall_ms_per_step: float
    split_ms: dict[str, float] = field(default_factory=dict)  # per step
    top_ops: list[tuple[str, float, int]] = field(default_factory=list)  # (name, self ms per step, calls per step)


def _category(name: str) -> str:
    if any(name.startswith(m) for m in _MATMUL):
        return "matrix products"
    if any(a in name for a in _ATTENTION):
        return "attention"
    return "other tensor ops"


def profile_decode(lm: Any, *, prompt_ids: list[int], steps: int, batch: int = 1) -> Profile:
    """Profile `steps` decode steps of `batch` rows through the worker (no SAE attached)."""
    worker = Worker(max_batch_size=batch)
    worker.loaded = lm
    worker.threads.start()  # the server's thread policy (set by the worker thread's loop otherwise)
    threads_before = torch.get_num_threads()
    # the policy times its thread counts with each kernel the layout allows (two of each at most) before the profile
    trial = threads.BLOCK * threads.TRIAL_BLOCKS * 4
    params = SamplingParams(max_tokens=steps + trial + 2, temperature=0.0, ignore_eos=True)
    for b in range(batch):
        worker.submit(GenerationRequest(request_id=f"p{b}", prompt_ids=tuple(prompt_ids), params=params),
                      lambda ev: None)
    dev = lm.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.inference_mode():
        worker._admit()
        worker._step()  # warm-up step outside the profile
        while worker.threads.counts is not None and worker.threads.choices().get(threads.regime(batch)) is None:
            worker._step()  # the thread policy times its candidates first (engine/threads.py)
        sync(dev)
        with profile(activities=activities) as prof:
            t = time.perf_counter()
            for _ in range(steps):
                worker._step()
            sync(dev)
            wall = time.perf_counter() - t
    torch.set_num_threads(threads_before)
    events = [e for e in prof.key_averages()
              if e.key.startswith(("aten::", "mkldnn::")) or "attention" in e.key]
    use_cuda = dev.type == "cuda"

    def self_ms(e: Any) -> float:
        if use_cuda:
            return float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0)) / 1e3
        return float(e.self_cpu_time_total) / 1e3

    split: dict[str, float] = {"matrix products": 0.0, "attention": 0.0, "other tensor ops": 0.0}
    for e in events:
        split[_category(e.key)] += self_ms(e) / steps
    wall_ms = wall * 1e3 / steps
    ops_ms = sum(split.values())
    split["Python, dispatch and framework overhead" if not use_cuda else "host overhead / GPU idle"] = max(
        0.0, wall_ms - ops_ms)
    top = sorted(events, key=self_ms, reverse=True)[:10]
    return Profile(steps=steps, wall_ms_per_step=wall_ms, split_ms=split,
                   top_ops=[(e.key, self_ms(e) / steps, round(e.count / steps)) for e in top])
