"""Method (a): the SAE hook's own time per decode token, against the whole decode step's time.

The worker runs in-process and synchronously (admit, then step until done) with its
`SaeIntervention` attached through a timing wrapper, so each mode's hook time and total decode
time come from the same run and share its noise. On CUDA the hook is timed with CUDA events
(no synchronisation inside the hook); on CPU with `perf_counter`. The reference mode
`full SAE` runs a whole encode + decode of the SAE in the hook, as a naive implementation would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from benchmarks.raw_bench import sync
from millm.engine import hookpoints
from millm.engine.intervention import MonitorConfig, SaeIntervention
from millm.engine.types import ActivationRead, FeatureStrength, GenerationRequest, SamplingParams, SteeringSpec
from millm.engine.worker import Worker


@dataclass(frozen=True)
class HookMode:
    name: str
    steering: SteeringSpec | None = None
    monitor: MonitorConfig | None = None
    full_sae: bool = False
    activations: ActivationRead | None = None  # the request's own activations (`activations` object)


def modes(d_sae: int, n_features: int = 16) -> list[HookMode]:
    feats = [(i * 97 + 5) % d_sae for i in range(n_features)]
    add = SteeringSpec(tuple(FeatureStrength(f, 4.0) for f in feats[:4]), mode="add")
    add_evidence = SteeringSpec(add.features, mode="add", evidence=True)
    clamp = SteeringSpec(tuple(FeatureStrength(f, 5.0) for f in feats), mode="clamp")
    return [
        HookMode("unsteered"),
        HookMode("additive", steering=add),
        HookMode(f"clamp {n_features}", steering=clamp),
        HookMode(f"monitor {n_features} selected", monitor=MonitorConfig(enabled=True, features=tuple(feats))),
        HookMode("monitor top-8", monitor=MonitorConfig(enabled=True, features=None, top_k=8)),
        # Receipt evidence (sliced encoder before and after the steering, plus the worker's per-token bookkeeping)
        # and a request's own activations: their cost is the decode step's time over the mode without them.
        HookMode("additive + evidence", steering=add_evidence),
        HookMode(f"activations {n_features} selected", activations=ActivationRead(features=tuple(feats))),
        HookMode("activations top-8", activations=ActivationRead(top_k=8)),
        HookMode("full SAE encode+decode", full_sae=True),
    ]


class _Timer:
    """Wraps the hook function; accumulates its time (decode steps only, when `on`)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.on = False
        self.cpu_seconds = 0.0
        self.calls = 0
        self.events: list[tuple[Any, Any]] = []

    def wrap(self, fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        def timed(h: torch.Tensor) -> Any:
            if not self.on:
                return fn(h)
            self.calls += 1
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(h)
                end.record()
                self.events.append((start, end))
                return out
            t = time.perf_counter()
            out = fn(h)
            self.cpu_seconds += time.perf_counter() - t
            return out

        return timed

    def seconds(self) -> float:
        if self.device.type == "cuda":
            sync(self.device)
            return sum(s.elapsed_time(e) for s, e in self.events) / 1000
        return self.cpu_seconds


@dataclass
class HookResult:
    mode: str
    hook_ms_per_token: float
    step_ms_per_token: float

    @property
    def share(self) -> float:
        return self.hook_ms_per_token / self.step_ms_per_token if self.step_ms_per_token else 0.0


def measure(lm: Any, sae: Any, *, prompt_ids: list[int], max_tokens: int, repeats: int) -> list[HookResult]:
    """Hook time / decode time per token for every mode, modes interleaved, median over repeats."""
    hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name)
    sae = sae.to(device=lm.device, dtype=lm.dtype)
    worker = Worker(max_batch_size=1)
    worker.loaded = lm
    timer = _Timer(lm.device)
    full_sae = [False]

    def hook_fn(iv_hook: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        def fn(h: torch.Tensor) -> Any:
            if full_sae[0]:
                return sae(h)  # the reconstruction replaces h: every feature encoded and decoded
            return iv_hook(h)

        return timer.wrap(fn)

    iv = SaeIntervention(sae=sae, hookpoint=hp, device=lm.device, dtype=lm.dtype,
                         attach_fn=lambda point, fn: hookpoints.attach(point, hook_fn(fn)))
    worker.intervention = iv
    worker.monitor_sink = lambda records: None
    all_modes = modes(sae.cfg.d_sae)
    samples: dict[str, list[tuple[float, float]]] = {m.name: [] for m in all_modes}
    try:
        for rep in range(repeats + 1):  # the first round warms up
            for mode in all_modes:
                iv.set_monitor(mode.monitor or MonitorConfig())
                full_sae[0] = mode.full_sae
                hook_s, step_s, tokens = _decode(worker, timer, mode, prompt_ids, max_tokens)
                if rep:
                    samples[mode.name].append((hook_s / tokens * 1e3, step_s / tokens * 1e3))
    finally:
        iv.detach()
    out = []
    for mode in all_modes:
        ratios = sorted(h / s for h, s in samples[mode.name])
        hook = sorted(h for h, _ in samples[mode.name])
        step = sorted(s for _, s in samples[mode.name])
        mid = len(ratios) // 2
        out.append(HookResult(mode.name, hook[mid], step[mid]))
    return out


def _decode(worker: Worker, timer: _Timer, mode: HookMode, prompt_ids: list[int], max_tokens: int
            ) -> tuple[float, float, int]:
    req = GenerationRequest(request_id=mode.name, prompt_ids=tuple(prompt_ids), steering=mode.steering,
                            params=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
                            activations=mode.activations)
    worker.submit(req, lambda ev: None)
    dev = worker.loaded.device  # type: ignore[union-attr]
    timer.cpu_seconds, timer.calls, timer.events = 0.0, 0, []
    with torch.inference_mode():
        worker._admit()  # prefill: not timed
        sync(dev)
        timer.on = True
        t = time.perf_counter()
        steps = 0
        while worker._rows:
            worker._step()
            steps += 1
        sync(dev)
        total = time.perf_counter() - t
        timer.on = False
    return timer.seconds(), total, max(steps, 1)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.hooks_bench`: only the hook cost (method a), printed, nothing written."""
    import argparse
    import os

    from benchmarks.models import get_model
    from benchmarks.run import PLANS, _prompt
    from millm.engine.model_loading import load_model
    from millm.sae.loading import load_sae

    ap = argparse.ArgumentParser(prog="python -m benchmarks.hooks_bench", description=main.__doc__)
    ap.add_argument("--model", default="demo", choices=["demo", "350m"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--threads", type=int, default=None, help="default: cores - 1, as benchmarks.run")
    ap.add_argument("--tokens", type=int, default=None, help="decode tokens per mode (default: the full plan's)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds after warm-up (default: the full plan's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - 1))
    bm = get_model(args.model)
    plan = PLANS["full"][bm.name]
    lm = load_model(str(bm.model_dir), device=args.device,
                    dtype=args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    sae = load_sae(bm.sae_dir)
    prompt = _prompt(lm.tokenizer, plan.prompt_len, seed=0)
    results = measure(lm, sae, prompt_ids=prompt, max_tokens=args.tokens or plan.hook_tokens,
                      repeats=args.repeats or plan.hook_repeats)
    step = {r.mode: r.step_ms_per_token for r in results}
    hook = {r.mode: r.hook_ms_per_token for r in results}
    for r in results:
        print(f"{r.mode:<26} hook {r.hook_ms_per_token * 1e3:7.1f} us  step {r.step_ms_per_token:6.3f} ms  "
              f"{100 * r.share:5.2f}%")
    for mode, ref in (("additive + evidence", "additive"), ("activations 16 selected", "unsteered"),
                      ("activations top-8", "unsteered")):
        if mode in step and ref in step:
            print(f"{mode}: hook +{(hook[mode] - hook[ref]) * 1e3:.1f} us/token = "
                  f"{100 * (hook[mode] - hook[ref]) / step[ref]:.2f}% of {ref}'s decode step; "
                  f"decode step {100 * (step[mode] / step[ref] - 1):+.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
