"""Where a served concurrency run's time goes, and an A/B of server variants in one run.

`python -m benchmarks.serve_ab [--model demo] [--levels 1,4,8,16] [--rounds 6] [--variants writes,loop]
[--tokens 128] [--prompt 64]`. Starts one `millm serve` per variant, all at once, with the probe in
benchmarks/serve_probe on its PYTHONPATH: `writes` is the server as it is, `loop` the same with the worker's own
writes of streamed chunks off (every chunk the event loop's way), `nohold` the server with `--stream-hold-ms 0` (every
chunk written at its step's end; engine/deferred.py). Each level runs the main section's requests (64-token
prompts, each its own additive steering vector, read by the lean client `run_concurrent`; the one-stream level
`ONE_STREAM_REPEATS` times, after `settle`), the variants and the levels alternated round by round, every output
checked against its solo run. Per variant and level (medians over the rounds): aggregate tokens per second and its
ratio to one stream; the wall time split into the worker's decode steps, its prefills and the rest (the worker
waiting: request set-up, the last chunks' trip); the median step at the level's row count; the prefills a burst
took; each server thread's CPU per token (event loop, generation thread, the rest: OpenMP workers) and the client's;
and, over the whole run, the server's kernel and thread choices (`Server.engine_choices`), the worker's
`sample_and_emit` by row count and its socket sends (microseconds per call).
CPU times come from /proc/<pid>/task; the probe's records come from the server (SIGUSR1)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import sweep
from benchmarks.models import get_model
from benchmarks.overhead import _task_cpu_ns
from benchmarks.run import _distinct_steering, _prompt
from benchmarks.server_bench import Server, completion_body, run_concurrent, run_one

PROBE = Path(__file__).resolve().parent / "serve_probe"
VARIANTS = {"writes": {}, "loop": {"MILLM_PROBE_WORKER_WRITES": "0"}, "nohold": {"MILLM_STREAM_HOLD_MS": "0"}}


def _window(records: list[list[Any]], start: float, end: float) -> list[list[Any]]:
    """The probe's records (end time first) that ended within [start, end] (plus 5 ms: the last step's own end)."""
    return [r for r in records if start <= r[0] <= end + 0.005]


def summarize(levels: dict[int, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Medians over a variant's runs of each level (the mismatches summed, each run's prefill sizes listed); the ratio
    to the fewest streams' aggregate."""
    out: dict[int, dict[str, Any]] = {}
    for c, runs in levels.items():
        keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
        out[c] = {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
        out[c]["mismatches"] = sum(r["mismatches"] for r in runs)
        out[c]["prefills"] = [r["prefills"] for r in runs]
        out[c]["runs"] = len(runs)
    one = out[min(out)]["aggregate_tok_s"]
    for c in out:
        out[c]["ratio"] = round(out[c]["aggregate_tok_s"] / one, 3)
    return out


def measure(name: str, *, levels: tuple[int, ...], rounds: int, variants: tuple[str, ...], tokens: int,
            prompt_len: int, work: Path) -> dict[str, Any]:
    from millm.engine.model_loading import load_model
    from millm.sae.loading import load_sae

    bm = get_model(name)
    lm = load_model(str(bm.model_dir), device="cpu", dtype="float32")
    d_sae = load_sae(bm.sae_dir).cfg.d_sae
    bodies = [completion_body(_prompt(lm.tokenizer, prompt_len, seed=100 + i), tokens, _distinct_steering(i, d_sae))
              for i in range(max(levels))]
    servers: dict[str, Server] = {}
    try:
        for v in variants:
            path = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))  # (ahead of the caller's)
            env = {"PYTHONPATH": path, "MILLM_PROBE_OUT": str(work / f"probe-{v}.json"), **VARIANTS[v]}
            servers[v] = Server(bm.model_dir, bm.sae_dir, work / f"server-{v}", max_batch_size=max(levels),
                                extra_env=env, model_arg=bm.serve_as)
            servers[v].launch()
        solo: list[str] | None = None
        for s in servers.values():
            s.wait_ready()
            run_one(s, bodies[0])
            texts = [run_one(s, b).text for b in bodies]
            assert solo is None or texts == solo, "the variants' solo outputs differ"
            solo = texts
            sweep.warm_concurrency(s, bodies, levels, prompt_len=prompt_len, num_parameters=lm.num_parameters)
        assert solo is not None
        raw: dict[str, dict[int, list[dict[str, Any]]]] = {v: {c: [] for c in levels} for v in servers}
        windows: dict[str, dict[int, list[tuple[float, float]]]] = {v: {c: [] for c in levels} for v in servers}
        for rnd in range(rounds):
            for c in (levels if rnd % 2 == 0 else levels[::-1]):
                for v in (variants if rnd % 2 == 0 else variants[::-1]):
                    s = servers[v]
                    assert s.proc is not None
                    for _ in range(sweep.ONE_STREAM_REPEATS if c == 1 else 1):
                        sweep.settle(s)
                        before, client = _task_cpu_ns(s.proc.pid), time.thread_time()
                        start = time.time()
                        timings, wall = run_concurrent(s, bodies[:c])
                        end = time.time()
                        client = time.thread_time() - client
                        time.sleep(0.02)  # (the response's last writes)
                        after = _task_cpu_ns(s.proc.pid)
                        cpu = {k: after[k] - before.get(k, 0) for k in after}
                        loop = str(s.proc.pid)
                        gen = max((k for k in cpu if k != loop), key=cpu.__getitem__)
                        n = c * tokens
                        raw[v][c].append({
                            "aggregate_tok_s": n / wall, "wall_ms": wall * 1e3,
                            "ttft_p50_ms": statistics.median(t.ttft for t in timings) * 1e3,
                            "loop_us": cpu[loop] / 1e3 / n, "worker_us": cpu[gen] / 1e3 / n,
                            "other_us": sum(x for k, x in cpu.items() if k not in (loop, gen)) / 1e3 / n,
                            "client_us": client * 1e6 / n,
                            "mismatches": sum(1 for i, t in enumerate(timings) if t.text != solo[i])})
                        windows[v][c].append((start, end))
        for s in servers.values():
            assert s.proc is not None
            s.proc.send_signal(signal.SIGUSR1)
        time.sleep(2.0)  # (the server's main thread runs the handler at its next tick)
        out: dict[str, Any] = {"model": name, "tokens": tokens, "prompt": prompt_len, "rounds": rounds, "variants": {}}
        for v in servers:
            probe = json.loads((work / f"probe-{v}.json").read_text())
            for c in levels:
                for r, (start, end) in zip(raw[v][c], windows[v][c], strict=True):
                    steps, pre = _window(probe["steps"], start, end), _window(probe["prefills"], start, end)
                    full = [x[3] for x in steps if x[1] == c]
                    r["steps_ms"] = sum(x[3] for x in steps) * 1e3
                    r["prefill_ms"] = sum(x[3] for x in pre) * 1e3
                    r["rest_ms"] = r["wall_ms"] - r["steps_ms"] - r["prefill_ms"]
                    r["step_ms"] = statistics.median(full) * 1e3 if full else float("nan")
                    r["two_thread_steps"] = sum(1 for x in steps if x[2] > 1) / max(1, len(steps))
                    r["prefills"] = [x[1] for x in pre]
            counts = probe["counts"]
            out["variants"][v] = {
                "levels": summarize(raw[v]),
                "us_per_call": {k[:-2]: round(counts[k[:-2] + "_s"] / counts[k] * 1e6, 1)
                                for k in sorted(counts) if k.endswith("_n") and counts[k]},
                "engine_choices": servers[v].engine_choices()}
        return out
    finally:
        for s in servers.values():
            s.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--variants", default="writes,loop")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=64)
    args = ap.parse_args(argv)
    variants = tuple(args.variants.split(","))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="serve-ab-") as work:
        out = measure(args.model, levels=tuple(int(x) for x in args.levels.split(",")), rounds=args.rounds,
                      variants=variants, tokens=args.tokens, prompt_len=args.prompt, work=Path(work))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
