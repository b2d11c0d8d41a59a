"""The size and family sweep: the server against `model.generate` from 2M to 350M parameters, in three families.

`python -m benchmarks.sweep` (also run by `make bench`; `--quick` for a few minutes, `--smoke` for seconds).
Models (random weights, built offline into benchmarks/out/models by benchmarks/models.py; the demo is the
bundled one): Llama-shaped ~2M (the demo), ~25M, ~100M, ~350M; Gemma-2-shaped and Qwen2-shaped ~25M and
~350M. For each model, `millm serve` runs in a subprocess and the same model is loaded here, and in every
round the two alternate (which goes first alternates too):
- decode: one streamed request vs one `generate` (greedy, `ignore_eos` / `min_new_tokens`): decode tok/s
  after the first token;
- end to end: one non-streamed request, send to full response, vs the same `generate` call's wall time:
  tokens / seconds, prefill included;
- TTFT: a short (32-token) and a 1,000-token prompt, `max_tokens` 1, against `generate` with one new token
  (the baseline's prefill + first token); before a prompt whose prefill the server times per thread count (engine/threads.py's
  `prefill_timed`), unmeasured requests let it finish that timing, as the concurrency passes
  below do for batch regimes (the baseline's thread count is chosen with hindsight); the server's TTFT runs from
  sending the request on an open connection to the first chunk's arrival (`first_chunk_one`: `generate`'s clock
  has no client, and http.client's connection set-up and header parsing cost about 0.6 ms);
- `generate` runs with 1 thread and with all cores in every round (for a TTFT, a count more than 25% slower than
  the best in the first round is not run again); for each figure the thread count with the
  better median over the rounds is the baseline (not the better of the two in each round: best-of-two noisy
  samples against the server's one would bias the ratio against the server);
- before every timed side (each `generate` call, each server request or level), `settle` waits until neither this
  process's other threads nor the server's are running: torch's OpenMP workers spin for about 5 ms after `generate`
  on two threads, and the server request timed right after it shared the cores with them (on llama-2m every other
  short-TTFT round, the ones where the server followed `generate`, came out about 5 ms slower);
- concurrency 1, 4, 8: that many streamed requests at once, each with its own additive steering vector,
  every request's text compared with the same request run alone (after unmeasured passes over the levels until
  the server's log shows its thread choice for each regime they reach: batch decode steps, and the batched
  prompts' prefill where it is timed); the streams are read by one lean client thread (`run_concurrent`: raw
  `recv`s, parsed after the streams end), and the one-stream level, which every ratio divides by, runs
  `ONE_STREAM_REPEATS` times per round (six rounds below 50M parameters, two above: `plan_for`); beside it,
  `generate` on the same prompts as one batch (no steering), for scale, in the first round.
The decode, end-to-end and TTFT ratios are taken within a round and the median over rounds is reported; a
concurrency speedup is the level's median aggregate rate over the one-stream level's median (the levels' samples
are not paired: the one-stream level has several per round). Results go to
docs/benchmarks-sweep-<device>.json and the "Size and family sweep" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import raw_bench
from benchmarks.models import OUT, BenchModel, get_model, sweep_model
from benchmarks.server_bench import (
    RequestTiming,
    Server,
    completion_body,
    first_chunk_one,
    run_concurrent,
    run_one,
)
from millm.engine.threads import PREFILL_TRIALS, decode_decided, prefill_decided, prefill_timed

log = logging.getLogger("benchmarks.sweep")
ROOT = Path(__file__).resolve().parent.parent

# (name, family, size label); the demo and the llama 350m reuse the main benchmark's models.
SWEEP: tuple[tuple[str, str, str], ...] = (
    ("llama-2m", "llama", "2M"),
    ("llama-25m", "llama", "25M"),
    ("llama-100m", "llama", "100M"),
    ("llama-350m", "llama", "350M"),
    ("gemma2-25m", "gemma2", "25M"),
    ("gemma2-350m", "gemma2", "350M"),
    ("qwen2-25m", "qwen2", "25M"),
    ("qwen2-350m", "qwen2", "350M"),
)


@dataclass(frozen=True)
class SweepPlan:
    tokens: int  # new tokens per batch-1 request
    rounds: int
    short_prompt: int
    long_prompt: int
    ttft_rounds: int
    concurrency: tuple[int, ...]
    conc_tokens: int
    conc_rounds: int
    prompt_len: int = 64
    short_ttft_rounds: int | None = None  # rounds for the short prompt (None: ttft_rounds); a few ms each


# Under this many parameters a concurrency round takes about a second (llama-2m: 0.5 s, the 25M models 1-2 s; 100M
# 8 s, 350M 25 s), while one burst of eight moves the c=8 figure most there: a burst's admission (the event loop
# reading eight requests beside the first prefill) took 17-24 ms of llama-2m's 85 ms, and two rounds of one run
# gave 2.98x and 3.47x (docs/benchmarks-notes.md, twelfth and thirteenth sessions). So more rounds there.
SMALL_PARAMS = 50e6
SMALL_CONC_ROUNDS = 6


def plan_for(mode: str, params: int) -> SweepPlan:
    big = params >= 200e6
    if mode == "smoke":
        return SweepPlan(6, 1, 8, 40, 1, (1, 2), 4, 1, prompt_len=16)
    if mode == "quick":
        return SweepPlan(16 if big else 32, 2, 32, 1000, 1, (1, 4, 8), 16 if big else 32, 1)
    # ~3 min per 350M model on the idle 2-core machine (a 1,000-token prefill there takes 5-12 s a side); three rounds
    # of the 1,000-token TTFT and at least two of concurrency at every size, so that no verdict rests on one round
    return SweepPlan(32 if big else 64, 3 if big else 5, 32, 1000, 3, (1, 4, 8), 32 if big else 64,
                     SMALL_CONC_ROUNDS if params < SMALL_PARAMS else 2, short_ttft_rounds=3 if big else 9)


# ---------------------------------------------------------------------- requests


def full_one(port: int, body: dict[str, Any]) -> tuple[float, int, str]:
    """One non-streamed request: (wall seconds, completion tokens, text)."""
    body = {**body, "stream": False}
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        wall = time.perf_counter() - t
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data.decode()[:500]}")
    finally:
        conn.close()
    out = json.loads(data)
    return wall, int(out["usage"]["completion_tokens"]), out["choices"][0]["text"]


def _prompt(tokenizer: Any, n: int, seed: int) -> list[int]:
    from benchmarks.run import _prompt as prompt

    return prompt(tokenizer, n, seed)


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def _running_threads(pid: int, skip: int | None = None) -> int | None:
    """How many threads of process `pid` (but `skip`, a native thread id) are running or runnable (state R in
    /proc); None where /proc does not say."""
    running, found = 0, False
    for task in Path(f"/proc/{pid}/task").glob("*"):
        if skip is not None and task.name == str(skip):
            continue
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread has just ended
            continue
        found = True
        running += stat[stat.rindex(")") + 2] == "R"
    return running if found else None


def settle(server: Server, *, poll: float = 0.001, quiet_polls: int = 2, limit: float = 0.25) -> None:
    """Before a timed side: wait until the other side has stopped running, so each side is timed on cores the
    benchmark itself leaves free, as a server's request or a lone `generate` call would find them.

    After a parallel region, torch's OpenMP workers spin before they sleep (libgomp's default GOMP_SPINCOUNT: about
    5 ms of CPU per worker on the 2-core benchmark machine), so right after `generate` on two threads this process
    kept a core busy while the server took the next request (llama-2m, loaded: the worker picked the request up
    several ms late, and the short TTFT after `generate` was about twice the TTFT after another server request; the
    idle sweep's log shows the same alternation). The same holds the other way after a server prefill on two
    threads. Waits until no thread of this process but the caller and no thread of the server is running or
    runnable, `quiet_polls` polls in a row (at most `limit` seconds)."""
    me = threading.get_native_id()
    pids = [(os.getpid(), me)] + ([(server.proc.pid, None)] if server.proc is not None else [])
    deadline = time.perf_counter() + limit
    quiet = 0
    while quiet < quiet_polls and time.perf_counter() < deadline:
        counts = [_running_threads(pid, skip) for pid, skip in pids]
        if any(c is None for c in counts):  # no /proc: a fixed pause, longer than the spin
            time.sleep(0.02)
            return
        quiet = quiet + 1 if not any(counts) else 0
        time.sleep(poll)


def _decided(server: Server, lines: set[str]) -> bool:
    """Whether the server's log shows its thread policy's decision for each regime named (engine/threads.py logs
    "prefill threads for 9-64 tokens: ..." and "decode threads for 5-8-row steps: ...")."""
    if not lines:
        return True
    text = server.log_path.read_text(errors="replace") if server.log_path and server.log_path.exists() else ""
    return all(line in text for line in lines)


def _warm_prefill(server: Server, prompt: list[int], num_parameters: int) -> None:
    """Unmeasured one-token requests on `prompt` until the server's log shows its thread choice for that prompt's
    prefill regime, where the server times it (one cold prefill, then PREFILL_TRIALS per count: engine/threads.py),
    so that no measured request's prefill is a trial on the count being tried."""
    if not prefill_timed(num_parameters, len(prompt)):
        return
    body = completion_body(prompt, 1, None)
    for _ in range(1 + 2 * PREFILL_TRIALS):
        if _decided(server, {prefill_decided(len(prompt))}):
            return
        settle(server)
        run_one(server, body)


def warm_concurrency(server: Server, bodies: list[dict[str, Any]], levels: Iterable[int], *, prompt_len: int,
                     num_parameters: int) -> None:
    """Unmeasured passes over the concurrency levels (each c > 1 sends `bodies[:c]` at once) until the server's log
    shows its thread choice for every regime they reach (engine/threads.py): the decode steps of each batch size, and
    the prefill of c prompts together when it times that prefill (one cold prefill, then PREFILL_TRIALS per count).
    One pass used to be all, and llama-2m's 65-512-token prefill regime was then still being timed in the first
    measured round (idle sweep of 23:33: its decision is logged in the second), so that round's c=4 and c=8 prefills
    ran on the count under trial. Used by the sweep and by the main section's concurrency (benchmarks/run.py)."""
    multi = [c for c in levels if c > 1]  # one row's regimes were timed by the decode rounds
    wanted = {decode_decided(c) for c in multi} | {
        prefill_decided(c * prompt_len) for c in multi if prefill_timed(num_parameters, c * prompt_len)}
    for rnd in range(1 + 2 * PREFILL_TRIALS):
        if rnd and _decided(server, wanted):
            return
        for c in multi:
            settle(server)
            run_concurrent(server, bodies[:c])


# The one-stream level runs this many times per round (the others once), and each run is a sample of its median:
# every ratio of the concurrency figure divides by it, and one request of a small model is short (llama-2m: 64 tokens
# in ~0.1 s), so one sample per round let one lucky or unlucky request move the ratio (the demo's one-stream rate
# ranged 393-733 tok/s over four runs of the main section).
ONE_STREAM_REPEATS = 3


def one_level(server: Server, bodies: list[dict[str, Any]]) -> list[tuple[float, list[RequestTiming]]]:
    """One measured run of a concurrency level (`bodies` sent at once, read by the lean client `run_concurrent`), or
    `ONE_STREAM_REPEATS` of the one-stream level, each after `settle`: [(wall seconds, each request's timing)]."""
    out = []
    for _ in range(ONE_STREAM_REPEATS if len(bodies) == 1 else 1):
        settle(server)
        timings, wall = run_concurrent(server, bodies)
        out.append((wall, timings))
    return out


def _raw_batch(lm: Any, prompts: list[list[int]], tokens: int) -> float:
    """Aggregate tok/s of one greedy `generate` over equal-length prompts as one batch."""
    ids = torch.tensor(prompts, device=lm.device)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        raw_bench.sync(lm.device)
        t = time.perf_counter()
        lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                          do_sample=False, pad_token_id=pad)
        raw_bench.sync(lm.device)
    return len(prompts) * tokens / (time.perf_counter() - t)


# ---------------------------------------------------------------------- one model


def bench_one(bm: BenchModel, family: str, size: str, mode: str, *, device: str, dtype: str, work: Path,
              raw_threads: tuple[int, ...], logs: Path | None) -> dict[str, Any]:
    from millm.engine.llama_decode import LlamaDecoder
    from millm.engine.model_loading import load_model

    t0 = time.perf_counter()
    server = Server(bm.model_dir, bm.sae_dir, work / f"sweep-{bm.name}", device=device, dtype=dtype,
                    max_batch_size=8, model_arg=bm.serve_as)
    server.launch()
    try:
        lm = load_model(str(bm.model_dir), device=device, dtype=dtype)
        server.wait_ready()
        plan = plan_for(mode, lm.num_parameters)
        d_sae = json.loads((bm.sae_dir / "cfg.json").read_text())["d_sae"]
        res: dict[str, Any] = {
            "model": bm.name, "family": family, "size": size, "description": bm.description,
            "architecture": type(lm.model).__name__, "parameters": lm.num_parameters,
            "layers": lm.model.config.num_hidden_layers, "d_model": lm.d_model, "plan": plan.__dict__,
            "load_s": time.perf_counter() - t0,
            # the worker's own test (engine/llama_decode.py), as it logs "decode path" at start-up
            "decode_path": f"lean {fam} step" if (fam := LlamaDecoder.family(lm.model)) else "transformers forward",
        }
        log.info("%s: %s, %.1fM parameters", bm.name, res["architecture"], lm.num_parameters / 1e6)
        prompt = _prompt(lm.tokenizer, plan.prompt_len, seed=0)
        body = completion_body(prompt, plan.tokens, None)
        # warm-up both sides (first-call paths, the kernel choice, HTTP connection set-up)
        run_one(server, body)
        full_one(server.port, body)
        raw_bench.generate_timed(lm, prompt, min(plan.tokens, 8))
        _warm_prefill(server, prompt, lm.num_parameters)  # the decode rounds' end-to-end figures include a prefill
        res["decode"] = _decode(server, lm, plan, prompt, raw_threads)
        res["ttft"] = _ttft(server, lm, plan, raw_threads)
        res["concurrency"] = _concurrency(server, lm, plan, d_sae)
    finally:
        server.stop()
        if logs is not None and server.log_path is not None and server.log_path.exists():
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"sweep-{device}-{bm.name}.log").write_text(server.log_path.read_text(errors="replace"))
    res["server_warnings"] = server.warnings()
    res["engine_choices"] = server.engine_choices()
    res["seconds"] = time.perf_counter() - t0
    return res


def _raw(server: Server, lm: Any, prompt: list[int], tokens: int,
         raw_threads: tuple[int, ...]) -> dict[int, RequestTiming]:
    """generate with each thread count, by thread count (each after `settle`)."""
    out = {}
    for n in raw_threads:
        settle(server)
        out[n] = raw_bench.with_threads(n, raw_bench.generate_timed, lm, prompt, tokens)
    return out


def _contenders(first: dict[int, float], margin: float = 1.25) -> tuple[int, ...]:
    """The thread counts whose first-round TTFT is within `margin` of the best: the ones worth running again. A
    1,000-token `generate` of a 350M model takes 7-15 s on one thread, about 1.5x two on the idle benchmark machine,
    and a count that far behind after one round does not win a median of three."""
    best = min(first.values())
    return tuple(n for n, t in first.items() if t <= margin * best)


def _best_threads(runs: list[dict[int, float]], *, lower: bool) -> int:
    """The baseline's thread count: the one with the best median over the rounds (`lower`: lower is better), among
    the counts run in every round.

    Not the better of the thread counts in each round: that would give the baseline the best of two noisy samples
    per round against the server's one, a bias of its own on a shared machine."""
    counts = [n for n in runs[0] if all(n in r for r in runs)]
    medians = {n: _median([r[n] for r in runs]) for n in counts}
    return (min if lower else max)(counts, key=medians.__getitem__)


def _decode(server: Server, lm: Any, plan: SweepPlan, prompt: list[int],
            raw_threads: tuple[int, ...]) -> dict[str, Any]:
    body = completion_body(prompt, plan.tokens, None)
    rows: list[dict[str, float]] = []
    raws: list[dict[int, RequestTiming]] = []
    same_text = True
    for rnd in range(plan.rounds):
        log.info("decode round %d/%d", rnd + 1, plan.rounds)
        order = ("raw", "server") if rnd % 2 == 0 else ("server", "raw")
        row: dict[str, float] = {}
        for side in order:
            if side == "raw":
                raws.append(_raw(server, lm, prompt, plan.tokens, raw_threads))
            else:
                settle(server)
                s = run_one(server, body)
                settle(server)
                wall, n, text = full_one(server.port, body)
                row["server_decode"] = s.decode_rate
                row["server_e2e"] = n / wall
                same_text = same_text and text == s.text
        same_text = same_text and all(r.text == s.text for r in raws[-1].values())
        rows.append(row)
    threads = _best_threads([{n: r.decode_rate for n, r in runs.items()} for runs in raws], lower=False)
    for row, runs in zip(rows, raws, strict=True):
        r = runs[threads]
        row["raw_decode"] = r.decode_rate
        row["raw_e2e"] = r.chunks / (r.last - r.sent)
    return {
        "rounds": rows,
        "raw_tok_s": _median([r["raw_decode"] for r in rows]),
        "server_tok_s": _median([r["server_decode"] for r in rows]),
        "raw_e2e_tok_s": _median([r["raw_e2e"] for r in rows]),
        "server_e2e_tok_s": _median([r["server_e2e"] for r in rows]),
        "stream_ratio": _median([r["server_decode"] / r["raw_decode"] for r in rows]),
        "e2e_ratio": _median([r["server_e2e"] / r["raw_e2e"] for r in rows]),
        "same_text": same_text,
        "raw_threads": threads,
    }


def _ttft(server: Server, lm: Any, plan: SweepPlan, raw_threads: tuple[int, ...]) -> dict[str, Any]:
    """Time to first token of a short and a long prompt, the server's against `generate`'s (prefill + first token).

    Every timed request follows one of the other side's, so that both sides meet the caches the other left: per round,
    for each of the baseline's thread counts, a server request and then `generate` on that count (the counts' order
    alternating by round); the round's server figure is the median of its requests. Until the eleventh session each
    round ran `generate` on each count back to back, then the server: the baseline's second count then found its
    own weights and code in the caches, the server those of `generate`. On the idle benchmark machine, the demo, a
    32-token prompt, medians of 15: `generate` on two threads 3.87 ms right after its one-thread run, 4.73 ms right
    after a server request; the server 5.03 ms right after `generate`, 4.37 ms right after a server request
    (docs/benchmarks-notes.md)."""
    out: dict[str, Any] = {}
    for label, n in (("short", plan.short_prompt), ("long", plan.long_prompt)):
        if n + 2 > lm.context_length:
            out[label] = {"skipped": f"{n} tokens is longer than the model's context ({lm.context_length})"}
            continue
        prompt = _prompt(lm.tokenizer, n, seed=1000 + n)
        body = completion_body(prompt, 1, None)
        if prefill_timed(lm.num_parameters, n):
            # the server times its prefill thread counts for this prompt regime (an earlier figure's prompts may have
            # decided it already)
            _warm_prefill(server, prompt, lm.num_parameters)
        else:
            # one unmeasured request all the same: a server's first prompt of a new length allocates for it (in the
            # idle run of the seventh session llama-25m's first two 1,000-token TTFTs took 606 and 509 ms, the third
            # 332, against 330 for `generate`, whose first round runs each thread count and so warms itself)
            settle(server)
            run_one(server, body)
        raw_bench.generate_timed(lm, prompt, 1)  # the baseline's warm-up call
        raws: list[dict[int, float]] = []
        srv: list[float] = []
        counts = raw_threads
        rounds = (plan.short_ttft_rounds or plan.ttft_rounds) if label == "short" else plan.ttft_rounds
        for rnd in range(rounds):
            log.info("TTFT %s (%d tokens) round %d/%d", label, n, rnd + 1, rounds)
            taken: dict[int, float] = {}
            served: list[float] = []
            for t in counts if rnd % 2 == 0 else counts[::-1]:  # each timed request after one of the other side's
                settle(server)
                served.append(first_chunk_one(server.port, body).ttft)
                settle(server)
                taken[t] = raw_bench.with_threads(t, raw_bench.generate_timed, lm, prompt, 1).ttft
            raws.append(taken)
            srv.append(_median(served))
            if rnd == 0:  # a count far behind in the first round is not run again (see below)
                counts = _contenders(taken)
        threads = _best_threads(raws, lower=True)
        raw = [r[threads] for r in raws]
        out[label] = {"prompt_tokens": n, "raw_ms": _median(raw) * 1e3, "server_ms": _median(srv) * 1e3,
                      "ratio": _median([s / r for s, r in zip(srv, raw, strict=True)]), "raw_threads": threads,
                      "rounds": rounds}
    return out


def _concurrency(server: Server, lm: Any, plan: SweepPlan, d_sae: int) -> dict[str, Any]:
    from benchmarks.run import _distinct_steering

    top = max(plan.concurrency)
    prompts = [_prompt(lm.tokenizer, plan.prompt_len, seed=100 + i) for i in range(top)]
    bodies = [completion_body(prompts[i], plan.conc_tokens, _distinct_steering(i, d_sae)) for i in range(top)]
    log.info("concurrency: %d solo runs", top)
    solo = [run_one(server, b).text for b in bodies]
    levels: dict[str, Any] = {}
    walls: dict[int, list[float]] = {c: [] for c in plan.concurrency}
    raw: dict[int, list[float]] = {c: [] for c in plan.concurrency}
    mismatches = {c: 0 for c in plan.concurrency}
    if plan.rounds > 1:  # not in smoke mode
        warm_concurrency(server, bodies, plan.concurrency, prompt_len=plan.prompt_len,
                         num_parameters=lm.num_parameters)
    checked = {c: 0 for c in plan.concurrency}
    for rnd in range(plan.conc_rounds):
        for c in plan.concurrency:
            log.info("concurrency %d (round %d/%d)", c, rnd + 1, plan.conc_rounds)
            for wall, timings in one_level(server, bodies[:c]):
                walls[c].append(wall)
                checked[c] += len(timings)
                mismatches[c] += sum(1 for i, t in enumerate(timings) if t.text != solo[i])
            if rnd == 0:  # the batch `generate` is for scale, not a target: once (8 rows of 350M take ~10 s)
                settle(server)
                raw[c].append(_raw_batch(lm, prompts[:c], plan.conc_tokens))
    agg1 = None
    for c in plan.concurrency:
        agg = _median([c * plan.conc_tokens / w for w in walls[c]])
        agg1 = agg if agg1 is None else agg1
        raw_agg = _median(raw[c])
        levels[str(c)] = {"aggregate_tok_s": agg, "speedup": agg / agg1, "raw_batch_tok_s": raw_agg,
                          "vs_raw_batch": agg / raw_agg, "checked": checked[c], "mismatches": mismatches[c]}
    return {"levels": levels, "tokens_per_request": plan.conc_tokens}


# ---------------------------------------------------------------------- entry point


def get_sweep_model(name: str, root: Path = OUT / "models") -> BenchModel:
    if name == "llama-2m":
        return get_model("demo", root=root)
    if name == "llama-350m":
        return get_model("350m", root=root)
    return sweep_model(name, root=root)


def run(mode: str, *, device: str = "cpu", dtype: str | None = None, only: list[str] | None = None,
        out: Path = ROOT / "docs", logs: Path | None = ROOT / "benchmarks" / "out" / "logs") -> Path:
    from benchmarks import report
    from benchmarks.run import environment

    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    cores = os.cpu_count() or 1
    raw_threads = tuple(sorted({1, cores})) if device == "cpu" else (cores,)
    torch.set_num_threads(cores)
    env = environment(device, None, mode)
    env["torch_threads"] = ("server: chosen by timing on the loaded model (engine/thread_policy); raw generate: "
                            "1 thread or all cores, whichever has the better median over a figure's rounds")
    results: dict[str, Any] = {"environment": env, "models": {}}
    path = out / f"benchmarks-sweep-{device}.json"
    previous = json.loads(path.read_text()) if only and path.exists() else None
    if previous is not None:  # a partial rerun keeps the other models' last figures
        results["models"] = previous.get("models", {})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="millm-sweep-") as tmp:
        for name, family, size in SWEEP:
            if only and name not in only:
                continue
            bm = get_sweep_model(name)
            log.info("=== sweep: %s (%s)", name, bm.description)
            results["models"][name] = bench_one(bm, family, size, mode, device=device, dtype=dtype, work=Path(tmp),
                                                raw_threads=raw_threads, logs=logs)
    if mode != "smoke" and (not only or "llama-25m" in only):
        from benchmarks import overhead

        log.info("=== server overhead per token (llama-25m)")
        with tempfile.TemporaryDirectory(prefix="millm-overhead-") as tmp:
            results["overhead"] = overhead.measure(get_sweep_model("llama-25m"), rounds=3 if mode == "quick" else 5,
                                                   work=Path(tmp))
    elif only and path.exists():
        results["overhead"] = json.loads(path.read_text()).get("overhead")
    env["total_seconds"] = time.perf_counter() - t0
    if previous is not None and previous.get("environment"):
        results["environment"] = rerun_environment(previous["environment"], env, sorted(only or []))
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float))
    md = report.write(out)
    log.info("sweep written to %s and %s in %.0f s", path, md, env["total_seconds"])
    return path


def rerun_environment(full: dict[str, Any], rerun: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """The environment of a sweep file after a partial rerun (`--only`): the full run's, which describes the other
    models' rows, plus the rerun (its models, date, commit and seconds) under `reruns`, which the report names."""
    entry = {"models": models, "date": rerun["date"], "commit": rerun["commit"], "dirty": rerun.get("dirty", False),
             "seconds": rerun.get("total_seconds", 0.0)}
    return {**full, "reruns": [*full.get("reruns", []), entry]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(n for n, _, _ in SWEEP)}")
    speed = ap.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer rounds and tokens")
    speed.add_argument("--smoke", action="store_true", help="seconds per model; checks the sweep works")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    run(mode, device=args.device, dtype=args.dtype, only=only, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
