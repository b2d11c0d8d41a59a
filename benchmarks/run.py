"""`make bench` / `python -m benchmarks.run`: the server against raw `model.generate`, written to docs/benchmarks.md.

For each model: start `millm serve` (a subprocess) and load the same model in this process, then
- decode: rounds that alternate raw generate with the server, unsteered and in every steering and
  monitoring mode, all batch 1 with the same prompt (ratios are taken within a round, then the median);
- concurrency 1, 4, 8, 16: that many requests at once, each with its own steering vector, and each
  request's text compared with the same request run alone (read and repeated as the sweep's concurrency:
  `sweep.one_level`);
- prefill: server TTFT and a raw forward for 64-, 512- and 2048-token prompts (those that fit);
- hook cost (method a) and a decode profile, in-process after the server has stopped.
Results go to docs/benchmarks-<device>.json; the report (docs/benchmarks.md and its plots) is
rebuilt from every device's JSON, so a GPU run adds its section next to the CPU one.

Then the size and family sweep (benchmarks/sweep.py; `--no-sweep` skips it) and the Batch API benchmark.

Modes: default (full: ~7-9 min on 2 CPU cores for the two models, ~10 more for the sweep), `--quick` (a few
minutes; meant for a GPU), `--smoke` (seconds; CI, on whatever `--model/--sae` it is given; no sweep).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import hooks_bench, profile_bench, raw_bench, report, sweep
from benchmarks.models import BenchModel, get_model
from benchmarks.server_bench import RequestTiming, Server, completion_body, run_one
from millm.engine.threads import TIMED_PREFILL_FLOPS

log = logging.getLogger("benchmarks")

ROOT = Path(__file__).resolve().parent.parent
N_FEATURES = 16


@dataclass(frozen=True)
class Plan:
    max_tokens: int  # new tokens per batch-1 request
    repeats: int  # interleaved rounds of raw + server modes
    concurrency: tuple[int, ...]
    conc_tokens: int
    conc_repeats: int
    solo_checks: int  # requests whose concurrent output is compared with a solo run
    prefill_lens: tuple[int, ...]
    prefill_repeats: int
    hook_tokens: int
    hook_repeats: int
    profile_steps: int
    prompt_len: int = 64


PLANS: dict[str, dict[str, Plan]] = {
    "full": {
        "demo": Plan(128, 9, (1, 4, 8, 16), 128, 5, 16, (64, 512, 2048), 5, 128, 5, 64),
        "350m": Plan(32, 5, (1, 4, 8, 16), 64, 2, 8, (64, 512, 2048), 1, 16, 2, 8),
        "custom": Plan(64, 5, (1, 4, 8, 16), 64, 2, 8, (64, 512, 2048), 3, 64, 3, 32),
    },
    "quick": {
        "demo": Plan(64, 3, (1, 4, 8, 16), 64, 2, 8, (64, 512, 2048), 2, 64, 3, 32),
        "350m": Plan(64, 3, (1, 4, 8, 16), 64, 2, 8, (64, 512, 2048), 2, 64, 3, 32),
        "custom": Plan(32, 2, (1, 4, 8), 32, 1, 4, (64, 512), 1, 32, 2, 16),
    },
    "smoke": {
        name: Plan(6, 1, (1, 2), 6, 1, 2, (16,), 1, 6, 1, 3, prompt_len=16) for name in ("demo", "350m", "custom")
    },
}


# ---------------------------------------------------------------------- helpers


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _ratios(num: list[RequestTiming], den: list[RequestTiming]) -> list[float]:
    """Per-round decode-rate ratios, skipping rounds where either request produced no decode rate (it failed)."""
    return [a.decode_rate / b.decode_rate for a, b in zip(num, den, strict=True) if a.decode_rate and b.decode_rate]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _prompt(tokenizer: Any, n: int, seed: int) -> list[int]:
    """n random non-special token ids (a completions prompt of exactly n tokens)."""
    vocab = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    g = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    while len(ids) < n:
        for t in torch.randint(0, vocab, (n,), generator=g).tolist():
            if t not in special and len(ids) < n:
                ids.append(t)
    return ids


def _features(d_sae: int) -> list[int]:
    return [(i * 97 + 5) % d_sae for i in range(max(N_FEATURES, 32))]


def _steering(kind: str, feats: list[int]) -> dict[str, Any] | None:
    if kind == "additive":
        return {"mode": "add", "features": [{"index": f, "strength": 4.0} for f in feats[:4]]}
    if kind == "clamp":
        return {"mode": "clamp", "features": [{"index": f, "strength": 5.0} for f in feats[:N_FEATURES]]}
    return None


def _distinct_steering(i: int, d_sae: int) -> dict[str, Any]:
    """Request i's own additive steering vector (concurrency runs)."""
    return {"mode": "add", "features": [{"index": (i * 131 + 17) % d_sae, "strength": 4.0}]}


SERVER_MODES = ("unsteered", "additive", f"clamp {N_FEATURES}", f"monitor {N_FEATURES} selected", "monitor top-8",
                "additive + evidence", "activations top-8")


def _run_mode(server: Server, mode: str, prompt: list[int], tokens: int, feats: list[int]) -> RequestTiming:
    if mode.startswith("monitor"):
        selected = feats[:N_FEATURES] if "selected" in mode else []
        server.monitor(enabled=True, features=selected, top_k=8)
        try:
            return run_one(server, completion_body(prompt, tokens, None))
        finally:
            server.monitor(enabled=False)
    if mode == "additive + evidence":
        return run_one(server, completion_body(prompt, tokens, {**_steering("additive", feats), "evidence": True}))
    if mode == "activations top-8":
        body = completion_body(prompt, tokens, None)
        return run_one(server, {**body, "activations": {"top_k": 8, "positions": "completion"}})
    kind = "clamp" if mode.startswith("clamp") else mode
    return run_one(server, completion_body(prompt, tokens, _steering(kind, feats)))


# ---------------------------------------------------------------------- one model


def bench_model(bm: BenchModel, plan: Plan, *, device: str, dtype: str, threads: int | None,
                raw_threads: tuple[int, ...], work: Path, cuda_graphs: bool = False,
                server_only: bool = False, logs: Path | None = None) -> dict[str, Any]:
    from millm.engine.model_loading import load_model
    from millm.sae.loading import load_sae

    t_model = time.perf_counter()
    # The server boots while this process loads its own copy; bandwidth is measured once it is idle.
    server = Server(bm.model_dir, bm.sae_dir, work / f"server-{bm.name}", device=device, dtype=dtype,
                    threads=threads, max_batch_size=max(plan.concurrency),
                    extra_env={"MILLM_CUDA_GRAPHS": "1"} if cuda_graphs else {}, model_arg=bm.serve_as)
    server.launch()
    try:
        lm = load_model(str(bm.model_dir), device=device, dtype=dtype)
        sae = load_sae(bm.sae_dir)
        server.wait_ready()
        result = _describe(bm, lm, sae, plan)
        result["server_start_s"] = time.perf_counter() - t_model
        feats = _features(sae.cfg.d_sae)
        prompt = _prompt(lm.tokenizer, plan.prompt_len, seed=0)
        # Warm-up: one request each way (allocator, first-call paths, HTTP connection setup).
        run_one(server, completion_body(prompt, plan.max_tokens, None))
        raw_bench.generate_timed(lm, prompt, min(plan.max_tokens, 8))
        result["decode"] = _decode_rounds(server, lm, plan, prompt, feats, raw_threads)
        result["concurrency"] = _concurrency(server, lm, plan, sae.cfg.d_sae)
        result["prefill"] = _prefill(server, lm, plan, raw_threads)
    finally:
        server.stop()
        if logs is not None and server.log_path is not None and server.log_path.exists():
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.log_path, logs / f"server-{device}{'-graphs' if cuda_graphs else ''}-{bm.name}.log")
    result["server_warnings"] = server.warnings()
    result["engine_choices"] = server.engine_choices()
    if server_only:
        result["server_only"] = True
        result["seconds"] = time.perf_counter() - t_model
        return result

    log.info("%s: hook cost (method a)", bm.name)
    hooks = hooks_bench.measure(lm, sae, prompt_ids=prompt, max_tokens=plan.hook_tokens, repeats=plan.hook_repeats)
    result["hooks"] = [asdict(h) | {"share": h.share} for h in hooks]
    log.info("%s: decode profile", bm.name)
    prof = profile_bench.profile_decode(lm, prompt_ids=prompt, steps=plan.profile_steps)
    result["profile"] = asdict(prof)
    result["seconds"] = time.perf_counter() - t_model
    return result


def _describe(bm: BenchModel, lm: Any, sae: Any, plan: Plan) -> dict[str, Any]:
    """Model facts, and the memory-bandwidth bound (measured while the server is idle)."""
    weights = raw_bench.weight_bytes_per_step(lm.model)
    cores = os.cpu_count() or 1
    small = plan.repeats == 1
    bw = raw_bench.measure_bandwidth(lm.device, thread_counts=tuple(sorted({1, cores})), mib=64 if small else 512,
                                     repeats=2 if small else 7)
    log.info("%s: %.1fM parameters, %.0f MB read per step, bandwidth %.1f GB/s (%s)", bm.name,
             lm.num_parameters / 1e6, weights / 1e6, bw.bytes_per_second / 1e9, bw.method)
    return {
        "model": bm.name, "description": bm.description,
        "parameters": lm.num_parameters, "layers": lm.model.config.num_hidden_layers,
        "d_model": lm.d_model, "context": lm.context_length, "dtype": str(lm.dtype).removeprefix("torch."),
        "sae": f"{sae.cfg.architecture}, d_sae {sae.cfg.d_sae} ({sae.cfg.d_sae // sae.cfg.d_in}x), "
               f"hook {sae.cfg.hook_name}",
        "weight_bytes": weights, "bandwidth": bw.bytes_per_second, "bandwidth_method": bw.method,
        "bound_tok_s": bw.bytes_per_second / weights, "plan": asdict(plan),
    }


def _raw_generate(lm: Any, prompt: list[int], tokens: int, raw_threads: tuple[int, ...]) -> tuple[RequestTiming, int]:
    """Raw generate with each thread count; the faster run is the reference (and its thread count)."""
    runs = [(raw_bench.with_threads(n, raw_bench.generate_timed, lm, prompt, tokens), n) for n in raw_threads]
    return max(runs, key=lambda r: r[0].decode_rate)


def _decode_rounds(server: Server, lm: Any, plan: Plan, prompt: list[int], feats: list[int],
                   raw_threads: tuple[int, ...]) -> dict[str, Any]:
    raw: list[RequestTiming] = []
    raw_won: list[int] = []
    per_mode: dict[str, list[RequestTiming]] = {m: [] for m in SERVER_MODES}
    for rnd in range(plan.repeats):
        log.info("decode round %d/%d", rnd + 1, plan.repeats)
        timing, n = _raw_generate(lm, prompt, plan.max_tokens, raw_threads)
        raw.append(timing)
        raw_won.append(n)
        # Rotate the order each round, so no mode always runs right after another.
        for i in range(len(SERVER_MODES)):
            mode = SERVER_MODES[(i + rnd) % len(SERVER_MODES)]
            per_mode[mode].append(_run_mode(server, mode, prompt, plan.max_tokens, feats))
    base = per_mode["unsteered"]
    out: dict[str, Any] = {
        "raw": _summary(raw) | {"threads": raw_won},
        "server_vs_raw": _median(_ratios(base, raw)),
        "modes": {},
        "same_text_as_raw": base[0].text == raw[0].text,
    }
    for mode, timings in per_mode.items():
        out["modes"][mode] = _summary(timings) | {
            "vs_unsteered": _median(_ratios(timings, base)),
        }
    return out


def _summary(timings: list[RequestTiming]) -> dict[str, Any]:
    most = max((t.chunks for t in timings), default=0)
    return {
        "incomplete": sum(1 for t in timings if t.chunks < most),  # streams that ended early (an error event)
        "ttft_ms": _median([t.ttft * 1e3 for t in timings]),
        "tok_s": _median([t.decode_rate for t in timings]),
        "tok_s_all": [round(t.decode_rate, 2) for t in timings],
        "tokens": timings[0].chunks if timings else 0,
    }


def _concurrency(server: Server, lm: Any, plan: Plan, d_sae: int) -> dict[str, Any]:
    levels = plan.concurrency
    top = max(levels)
    prompts = [_prompt(lm.tokenizer, plan.prompt_len, seed=100 + i) for i in range(top)]
    bodies = [completion_body(prompts[i], plan.conc_tokens, _distinct_steering(i, d_sae)) for i in range(top)]
    n_solo = min(plan.solo_checks, top)
    log.info("concurrency: %d solo runs", n_solo)
    solo = [run_one(server, bodies[i]).text for i in range(n_solo)]
    if plan.conc_repeats > 1:  # not in smoke mode: no measured round runs while a regime is still being timed
        sweep.warm_concurrency(server, bodies, levels, prompt_len=plan.prompt_len,
                               num_parameters=lm.num_parameters)
    walls: dict[int, list[float]] = {c: [] for c in levels}
    runs: dict[int, list[RequestTiming]] = {c: [] for c in levels}
    mismatches: dict[int, int] = {c: 0 for c in levels}
    checked: dict[int, int] = {c: 0 for c in levels}
    for rep in range(plan.conc_repeats):
        for c in levels:
            log.info("concurrency %d (round %d/%d)", c, rep + 1, plan.conc_repeats)
            for wall, timings in sweep.one_level(server, bodies[:c]):
                walls[c].append(wall)
                runs[c].extend(timings)
                checked[c] += len(timings[:n_solo])
                mismatches[c] += sum(1 for i, t in enumerate(timings[:n_solo]) if t.text != solo[i])
    out: dict[str, Any] = {"levels": {}, "solo_checked": n_solo, "tokens_per_request": plan.conc_tokens}
    agg1 = None
    for c in levels:
        agg = _median([c * plan.conc_tokens / w for w in walls[c]])
        agg1 = agg if c == 1 else agg1
        lat = [t.latency * 1e3 for t in runs[c]]
        out["levels"][str(c)] = {
            "aggregate_tok_s": agg, "speedup": agg / agg1 if agg1 else float("nan"),
            "latency_p50_ms": _pct(lat, 0.5), "latency_p99_ms": _pct(lat, 0.99),
            "ttft_p50_ms": _pct([t.ttft * 1e3 for t in runs[c]], 0.5),
            "checked": checked[c], "mismatches": mismatches[c],
        }
    return out


def _prefill(server: Server, lm: Any, plan: Plan, raw_threads: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in plan.prefill_lens:
        if n + 2 > lm.context_length:
            out[str(n)] = {"skipped": f"longer than the model's context ({lm.context_length})"}
            continue
        prompt = _prompt(lm.tokenizer, n, seed=n)
        ttft, raw = [], []
        for rnd in range(plan.prefill_repeats):
            log.info("prefill %d (round %d/%d)", n, rnd + 1, plan.prefill_repeats)
            raw.append(min(raw_bench.with_threads(t, raw_bench.prefill_seconds, lm, prompt) for t in raw_threads))
            ttft.append(run_one(server, completion_body(prompt, 1, None)).ttft)
        out[str(n)] = {"server_ttft_ms": _median(ttft) * 1e3, "server_tok_s": n / _median(ttft),
                       "raw_forward_ms": _median(raw) * 1e3, "raw_tok_s": n / _median(raw)}
    return out


# ---------------------------------------------------------------------- environment and entry point


def environment(device: str, threads: int | None, mode: str) -> dict[str, Any]:
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "mode": mode, "device": device, "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": f"fixed at {threads}" if threads else "server: worker's choice (decode: timed per batch regime, engine/threads.py; "
                         f"prefill of >= {TIMED_PREFILL_FLOPS / 1e9:.0f} GFLOP: all cores, smaller ones timed per prompt regime); "
                         "raw generate: faster of 1 thread and all cores",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--", "src")),
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    return env


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,350m", help="comma-separated: demo, 350m (default both)")
    ap.add_argument("--model", type=Path, help="benchmark this model folder instead (named 'custom')")
    ap.add_argument("--sae", type=Path, help="SAE folder for --model")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--threads", type=int, default=None,
                    help="fix torch threads for the server and raw generate (default: the worker's own "
                    "choice; raw generate takes the faster of 1 thread and all cores)")
    speed = ap.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer rounds and tokens (a few minutes on a GPU)")
    speed.add_argument("--smoke", action="store_true", help="seconds-long run that only checks the suite works")
    ap.add_argument("--no-batch", action="store_true", help="skip the Batch API benchmark (benchmarks/batch_bench.py)")
    ap.add_argument("--no-startup", action="store_true",
                    help="skip the start-up benchmark (benchmarks/startup_bench.py, into docs/reliability.md)")
    ap.add_argument("--no-sweep", action="store_true",
                    help="skip the size and family sweep (benchmarks/sweep.py; alone: python -m benchmarks.sweep)")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="serve with MILLM_CUDA_GRAPHS=1; results go to benchmarks-cuda-graphs.json")
    ap.add_argument("--server-only", action="store_true",
                    help="skip the in-process hook timing and decode profile")
    ap.add_argument("--logs", type=Path, default=ROOT / "benchmarks" / "out" / "logs",
                    help="where each server's log is kept (default benchmarks/out/logs, outside git)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for benchmarks.md, its JSON and plots")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    # The server's worker picks its thread counts itself unless --threads fixes them. Raw generate runs
    # with 1 thread and with all cores each round, and the faster run is the reference.
    cores = os.cpu_count() or 1
    raw_threads = (args.threads,) if args.threads else tuple(sorted({1, cores})) if args.device == "cpu" else (cores,)
    torch.set_num_threads(args.threads or max(1, cores - 1))  # in-process hook cost and profile
    if args.model is not None:
        if args.sae is None:
            ap.error("--model needs --sae")
        models = [BenchModel("custom", args.model, args.sae, f"{args.model}")]
    else:
        models = [get_model(name.strip()) for name in args.models.split(",") if name.strip()]
    if args.cuda_graphs and args.device != "cuda":
        ap.error("--cuda-graphs needs --device cuda")
    label = args.device + ("-graphs" if args.cuda_graphs else "")
    env = environment(args.device, args.threads, mode)
    env["cuda_graphs"] = args.cuda_graphs
    results: dict[str, Any] = {"environment": env, "models": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="millm-bench-") as tmp:
        for bm in models:
            log.info("=== %s (%s)", bm.name, bm.description)
            results["models"][bm.name] = bench_model(bm, PLANS[mode][bm.name], device=args.device, dtype=dtype,
                                                     threads=args.threads, raw_threads=raw_threads,
                                                     work=Path(tmp), cuda_graphs=args.cuda_graphs,
                                                     server_only=args.server_only, logs=args.logs)
    env["total_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"benchmarks-{label}.json").write_text(json.dumps(results, indent=1, default=float))
    path = report.write(args.out)
    log.info("report written to %s in %.0f s", path, env["total_seconds"])
    if not args.smoke and args.model is None and not args.no_sweep and not args.cuda_graphs:
        # the size and family sweep against model.generate (its section of docs/benchmarks.md)
        from benchmarks import sweep

        sweep.run(mode, device=args.device, dtype=args.dtype, out=args.out, logs=args.logs)
    if not args.smoke and args.model is None and not args.no_batch:
        # the Batch API and constrained decoding (docs/benchmarks-batch.md; alone: python -m benchmarks.batch_bench)
        from benchmarks import batch_bench

        batch_bench.main(["--models", args.models, "--device", args.device, "--out", str(args.out)])
    if not args.smoke and args.model is None and not args.no_startup and args.device == "cpu":
        # start-up to ready on the demo against a from_pretrained floor (docs/reliability.md)
        from benchmarks import startup_bench

        startup_bench.main(["--rounds", "5"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
