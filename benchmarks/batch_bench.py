"""Batch API and constrained-decoding benchmarks against a real `millm serve` (part of `make bench`; alone:
`python -m benchmarks.batch_bench [--models demo,350m]`).

For each model:
- batch throughput: the same N completion lines (random token-id prompts, greedy, `ignore_eos`, every other
  line steered with its own feature) sent one at a time over HTTP, then as one batch (upload, create, wait on
  the batch's event stream until it ended); the ratio of wall times, and how many batch outputs equal their solo run token for token;
- live latency: short live requests one after another with no batch running, then while a batch runs, after two
  warm-up requests into the full batch (p50/p99);
- constrained decoding (models whose tokenizer can write JSON): per-token time of a batch-1 request under a
  JSON schema vs the same request unconstrained, alternating rounds, median of the per-round ratios; and on CPU
  the in-process decode loop with the grammar's own time per token (benchmarks/grammar_cost.py).

Results go to docs/benchmarks-batch-<device>.json and docs/benchmarks-batch.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from transformers import AutoTokenizer

from benchmarks.models import get_model
from benchmarks.server_bench import Server

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}}, "required": ["story"]}


def _prompt(tokenizer: Any, n: int, seed: int) -> list[int]:
    special = set(tokenizer.all_special_ids)
    g = torch.Generator().manual_seed(seed)
    ids = [t for t in torch.randint(0, len(tokenizer), (4 * n,), generator=g).tolist() if t not in special]
    return ids[:n]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _lines(tokenizer: Any, n: int, tokens: int, prompt_len: int, d_sae: int) -> list[dict[str, Any]]:
    lines = []
    for i in range(n):
        body: dict[str, Any] = {"model": "bench", "prompt": _prompt(tokenizer, prompt_len, 100 + i),
                                "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
        if i % 2:
            body["steering"] = {"features": [{"index": (i * 37) % d_sae, "strength": 6.0}]}
        lines.append({"custom_id": f"l{i}", "method": "POST", "url": "/v1/completions", "body": body})
    return lines


def _solo(http: httpx.Client, lines: list[dict[str, Any]]) -> tuple[float, dict[str, str]]:
    out = {}
    t0 = time.perf_counter()
    for ln in lines:
        r = http.post("/v1/completions", json=ln["body"])
        r.raise_for_status()
        out[ln["custom_id"]] = r.json()["choices"][0]["text"]
    return time.perf_counter() - t0, out


def _start_batch(http: httpx.Client, lines: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(ln) + "\n" for ln in lines).encode()
    f = http.post("/v1/files", files={"file": ("bench.jsonl", io.BytesIO(data))}, data={"purpose": "batch"},
                  headers={"Authorization": "Bearer bench"}).json()
    return http.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/completions",
                                          "completion_window": "24h"}).json()["id"]


def _wait(http: httpx.Client, bid: str) -> dict[str, Any]:
    """The batch once it ended, from its event stream (`GET /v1/batches/{id}/events`, as the UI follows a batch):
    the end arrives as it happens, where polling would add up to its interval and load the shared cores."""
    with http.stream("GET", f"/v1/batches/{bid}/events") as r:
        r.raise_for_status()
        for ln in r.iter_lines():
            if ln.startswith("data: "):
                b: dict[str, Any] = json.loads(ln[6:])
                if b["status"] in ("completed", "failed", "cancelled", "expired"):
                    return b
    raise RuntimeError(f"the event stream of batch {bid} ended before the batch did")


def _batch(http: httpx.Client, lines: list[dict[str, Any]]) -> tuple[float, dict[str, str], dict[str, Any]]:
    t0 = time.perf_counter()
    b = _wait(http, _start_batch(http, lines))
    wall = time.perf_counter() - t0
    text = http.get(f"/v1/files/{b['output_file_id']}/content").text
    out = {}
    for raw in text.splitlines():
        o = json.loads(raw)
        out[o["custom_id"]] = o["response"]["body"]["choices"][0]["text"]
    return wall, out, b


def _live(http: httpx.Client, tokenizer: Any, n: int, tokens: int) -> list[float]:
    lat = []
    for i in range(n):
        body = {"model": "bench", "prompt": _prompt(tokenizer, 16, 9000 + i), "max_tokens": tokens,
                "temperature": 0, "ignore_eos": True}
        t0 = time.perf_counter()
        http.post("/v1/completions", json=body).raise_for_status()
        lat.append(time.perf_counter() - t0)
    return lat


def _per_token(http: httpx.Client, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    r = http.post("/v1/completions", json=body)
    r.raise_for_status()
    return (time.perf_counter() - t0) / r.json()["usage"]["completion_tokens"]


def _constrained(http: httpx.Client, rounds: int, tokens: int) -> dict[str, Any] | None:
    base = {"model": "bench", "prompt": "Tell me a story about a fox.", "max_tokens": tokens, "temperature": 0}
    free = {**base, "ignore_eos": True}
    json_body = {**base, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}}
    r = http.post("/v1/completions", json=json_body)
    if r.status_code != 200 or r.json()["usage"]["completion_tokens"] < tokens:
        return None  # this tokenizer cannot write the schema (e.g. a word-level vocabulary)
    _per_token(http, free), _per_token(http, json_body)  # warm-up
    ratios, f_times, c_times = [], [], []
    for _ in range(rounds):
        f, c = _per_token(http, free), _per_token(http, json_body)
        f_times.append(f)
        c_times.append(c)
        ratios.append(c / f)
    return {"tokens": tokens, "rounds": rounds, "free_ms_per_token": statistics.median(f_times) * 1000,
            "constrained_ms_per_token": statistics.median(c_times) * 1000,
            "overhead_pct": (statistics.median(ratios) - 1) * 100}


def bench_model(name: str, *, n_lines: int, tokens: int, rows: int, device: str, rounds: int = 3,
                threads: int | None = None) -> dict[str, Any]:
    bm = get_model(name)
    tokenizer = AutoTokenizer.from_pretrained(bm.model_dir)
    d_sae = json.loads((bm.sae_dir / "cfg.json").read_text()).get("d_sae", 1024)
    server = Server(bm.model_dir, bm.sae_dir, Path(tempfile.mkdtemp(prefix=f"batch-{name}-")), device=device,
                    dtype="float32", max_batch_size=rows + 1,  # the batch leaves one row to live requests
                    model_arg=bm.serve_as, threads=threads)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            lines = _lines(tokenizer, n_lines, tokens, 32, d_sae)
            _solo(http, lines[:2])  # warm-up
            solo_times, batch_times, ratios = [], [], []
            equal = n_lines
            for _ in range(rounds):  # alternating, ratio per round, median (the machine may be shared)
                solo_s, solo = _solo(http, lines)
                batch_s, batched, b = _batch(http, lines)
                solo_times.append(solo_s)
                batch_times.append(batch_s)
                ratios.append(solo_s / batch_s)
                equal = min(equal, sum(batched.get(k) == v for k, v in solo.items()))
            solo_s, batch_s = statistics.median(solo_times), statistics.median(batch_times)
            live_tokens = 8
            idle = _live(http, tokenizer, 20, live_tokens)
            # a batch long enough to outlast the live requests (cancelled after them); the first live requests
            # into a full batch are a warm-up, as the solo ones were (the worker times its thread count once for
            # each batch-size regime: engine/threads.py)
            bid = _start_batch(http, _lines(tokenizer, 8 * n_lines, tokens, 32, d_sae))
            _live(http, tokenizer, 2, live_tokens)
            busy = _live(http, tokenizer, 20, live_tokens)
            still_running = http.get(f"/v1/batches/{bid}").json()["status"] == "in_progress"
            http.post(f"/v1/batches/{bid}/cancel")
            constrained = _constrained(http, 5, 48)
    finally:
        server.stop()
    return {
        "model": name, "lines": n_lines, "tokens_per_line": tokens, "batch_rows": rows,
        "rounds": rounds, "threads": threads, "solo_seconds": solo_s, "batch_seconds": batch_s,
        "speedup": statistics.median(ratios), "speedups": ratios,
        "solo_lines_per_s": n_lines / solo_s, "batch_lines_per_s": n_lines / batch_s,
        "batch_tokens_per_s": n_lines * tokens / batch_s,
        "greedy_equal": equal, "greedy_equal_pct": 100 * equal / n_lines,
        "batch_failed": b["request_counts"]["failed"],
        "live": {"tokens": live_tokens, "idle_p50_ms": _pct(idle, 0.5) * 1000, "idle_p99_ms": _pct(idle, 0.99) * 1000,
                 "busy_p50_ms": _pct(busy, 0.5) * 1000, "busy_p99_ms": _pct(busy, 0.99) * 1000,
                 "batch_ran_throughout": still_running},
        "constrained": constrained,
        "warnings": server.warnings(),
    }


def report(results: list[dict[str, Any]], env: dict[str, Any]) -> str:
    out = ["# Batch API and constrained decoding benchmarks", "",
           f"`python -m benchmarks.batch_bench` on {env['device']} ({env['cpu']}), commit {env['commit']}, "
           f"{env['date']}, load average at the start {env['load_average']} (a shared machine makes the wall "
           "times noisy; ratios are medians of alternating rounds). Each figure and ratio comes from the same run.",
           "",
           "## Batch throughput (one batch vs the same lines one at a time)", "",
           "| model | lines x tokens | rows | one at a time | batch | speedup | greedy equal to solo |",
           "|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r['model']} | {r['lines']} x {r['tokens_per_line']} | {r['batch_rows']} | "  # median round
                   f"{r['solo_seconds']:.2f} s ({r['solo_lines_per_s']:.2f} lines/s) | "
                   f"{r['batch_seconds']:.2f} s ({r['batch_lines_per_s']:.2f} lines/s) | {r['speedup']:.2f}x | "
                   f"{r['greedy_equal']}/{r['lines']} ({r['greedy_equal_pct']:.0f}%) |")
    out += ["", "Every other line is steered (its own feature at strength 6); the rest run unsteered in the "
            "same batch. One at a time: each line is a `/v1/completions` request over HTTP, sent when the previous "
            "one returned. Batch: upload, create, then the batch's event stream until it says completed (the "
            "server's rows: one more than the batch's, which keeps one free for live requests).", "",
            "## Live latency while a batch runs", "",
            "Twenty live completions one after another, with no batch running, then while a batch fills every row "
            "it may (after two warm-up requests into the full batch):", "",
            "| model | live request | idle p50 / p99 | during a batch p50 / p99 |", "|---|---|---|---|"]
    for r in results:
        lv = r["live"]
        out.append(f"| {r['model']} | {lv['tokens']} tokens | {lv['idle_p50_ms']:.0f} / {lv['idle_p99_ms']:.0f} ms | "
                   f"{lv['busy_p50_ms']:.0f} / {lv['busy_p99_ms']:.0f} ms"
                   f"{'' if lv['batch_ran_throughout'] else ' (the batch ended early)'} |")
    out += ["", "## Constrained decoding cost (batch 1, JSON schema vs unconstrained)", "",
            "| model | tokens | unconstrained | constrained | overhead |", "|---|---|---|---|---|"]
    for r in results:
        c = r["constrained"]
        if c is None:
            out.append(f"| {r['model']} | - | - | - | not measured: its tokenizer cannot write JSON |")
        else:
            out.append(f"| {r['model']} | {c['tokens']} | {c['free_ms_per_token']:.2f} ms/token | "
                       f"{c['constrained_ms_per_token']:.2f} ms/token | {c['overhead_pct']:+.1f}% |")
    out += ["", "In-process, the decode loop itself (`benchmarks/grammar_cost.py`: batch 1, greedy, the model's forward, "
            "`process_logits` and the matcher's advance, free and constrained loops alternating); the grammar's share "
            "is its own time per token (bitmask fill, expansion, masking, advancing the matcher) over a free token's "
            "time, which stays put when the machine is shared:", "",
            "| model | vocabulary | free token | constrained token | loop ratio (median of rounds) | grammar's own time "
            "| its share of a free token, in-process | of a free token served over HTTP (above) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        g = r.get("grammar")
        if g is None and "grammar" in r:
            out.append(f"| {r['model']} | - | - | - | - | - | - | not measured: its tokenizer cannot drive a grammar |")
        elif g is not None:
            out.append(f"| {r['model']} | {g['vocab']} | {g['free_ms_per_token']:.2f} ms | "
                       f"{g['constrained_ms_per_token']:.2f} ms | {g['overhead_pct']:+.1f}% | "
                       f"{g['grammar_ms_per_token']:.3f} ms/token | {g['grammar_share_pct']:.1f}% | "
                       + (f"**{g['grammar_ms_per_token'] / r['constrained']['free_ms_per_token'] * 100:.1f}%** |"
                          if r.get("constrained") else "- |"))
    warnings = [(r["model"], w) for r in results for w in r["warnings"]]
    out += ["", "Server warnings: " + ("none" if not warnings else
                                       "; ".join(f"{m}: {w['message']} (x{w['count']})" for m, w in warnings)), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.batch_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo", help="comma-separated: demo, 350m")
    ap.add_argument("--lines", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=3, help="alternating solo/batch rounds (median ratio)")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads for the server (default: its choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args(argv)
    import subprocess

    env = {"device": args.device, "cpu": platform.processor() or platform.machine(),
           "load_average": [round(x, 1) for x in os.getloadavg()],
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=ROOT).stdout.strip(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results = []
    for name in args.models.split(","):
        lines, tokens = (args.lines, args.tokens) if name == "demo" else (max(16, args.lines // 3), 16)
        results.append(bench_model(name, n_lines=lines, tokens=tokens, rows=args.rows, device=args.device,
                                   rounds=args.rounds, threads=args.threads))
        if args.device == "cpu":
            from benchmarks import grammar_cost

            results[-1]["grammar"] = grammar_cost.measure(name, tokens=64 if name == "demo" else 24,
                                                          rounds=7 if name == "demo" else 3)
        print(json.dumps(results[-1], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"benchmarks-batch-{args.device}.json").write_text(json.dumps({"env": env, "results": results},
                                                                               indent=1) + "\n")
    (args.out / "benchmarks-batch.md").write_text(report(results, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
