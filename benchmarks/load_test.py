"""The load test of docs/reliability.md: `millm serve` (the demo) in a subprocess, driven from outside.

    python -m benchmarks.load_test                 # ~1 minute; writes benchmarks/out/load.json and the figures
                                                   # into docs/reliability.md (between the load-figures markers)
    python -m benchmarks.load_test --seconds 10    # shorter

Phases, each checked:
1. streams: `clients` (32) closed-loop clients stream chat completions for `seconds`: every one must end with
   [DONE] (0 errors). Latency is per request, send to last chunk.
2. burst: `burst` (100) requests at once against a server whose queue holds 32: only 200s and 429s, every 429 with
   Retry-After, none hangs.
3. a 50 MB chat request (with Content-Length, and chunked) while /health is polled every 20 ms: the 413 time and
   the slowest /health answer meanwhile.
The server's RSS is sampled every 20 ms throughout (peak, and growth over the run).
`run_load(url, pid, ...)` is the same code against any server; tests/reliability/test_load.py runs a short one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "load.json"
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- load-figures: written by benchmarks/load_test.py -->", "<!-- end load-figures -->"


class RssSampler:
    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.proc, self.every = psutil.Process(pid), every
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self.proc.memory_info().rss


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def _streams(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "max_tokens": max_tokens, "stream": True}
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as http:
        async def client() -> None:
            while time.monotonic() < end:
                t = time.perf_counter()
                try:
                    async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                        lines = [ln async for ln in r.aiter_lines() if ln]
                    if r.status_code != 200 or not lines or lines[-1] != "data: [DONE]":
                        errors.append(f"{r.status_code} {lines[-1:] if lines else ''}")
                    else:
                        latencies.append(time.perf_counter() - t)
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)

        await asyncio.gather(*(client() for _ in range(clients)))
    return {"clients": clients, "seconds": seconds, "completed": len(latencies), "errors": len(errors),
            "error_samples": errors[:5], "p50_s": _pct(latencies, 0.5), "p99_s": _pct(latencies, 0.99),
            "requests_per_s": len(latencies) / seconds}


async def _burst(url: str, model: str, n: int, max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True}
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n + 4)) as http:
        t = time.perf_counter()
        results = await asyncio.gather(*(http.post(url + "/v1/completions", json=body) for _ in range(n)),
                                       return_exceptions=True)
        took = time.perf_counter() - t
    statuses = [r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in results]
    rejected = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 429]
    return {"requests": n, "completed": statuses.count(200), "rejected_429": len(rejected),
            "other": sorted({str(s) for s in statuses} - {"200", "429"}),
            "all_429_have_retry_after": all("retry-after" in r.headers for r in rejected), "seconds": took}


def _big_request(url: str, model: str, size: int) -> dict[str, Any]:
    """A `size`-byte chat request with Content-Length, then chunked, while /health is polled."""
    health: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                t = time.perf_counter()
                c.get(url + "/health")
                health.append(time.perf_counter() - t)
                time.sleep(0.02)

    content = "x" * size
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()
    poller = threading.Thread(target=poll)
    poller.start()
    out: dict[str, Any] = {"bytes": len(body)}
    try:
        time.sleep(0.2)
        for kind in ("content_length", "chunked"):
            t = time.perf_counter()
            data: Any = body if kind == "content_length" else (body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20))
            r = httpx.post(url + "/v1/chat/completions", content=data, timeout=120,
                           headers={"content-type": "application/json"})
            out[kind] = {"status": r.status_code, "code": r.json()["error"]["code"], "seconds": time.perf_counter() - t}
        time.sleep(0.2)
    finally:
        stop.set()
        poller.join()
    out["health_polls"] = len(health)
    out["health_max_s"] = max(health) if health else None
    return out


def run_load(url: str, pid: int, *, model: str, seconds: float = 40, clients: int = 32, burst: int = 100,
             max_tokens: int = 32, big_bytes: int = 50_000_000) -> dict[str, Any]:
    with RssSampler(pid) as rss:
        streams = asyncio.run(_streams(url, model, clients, seconds, max_tokens))
        burst_out = asyncio.run(_burst(url, model, burst, 64))
        big = _big_request(url, model, big_bytes)
    return {"streams": streams, "burst": burst_out, "big_request": big,
            "rss": {"start_mb": rss.start / 2**20, "peak_mb": rss.peak / 2**20, "end_mb": rss.end / 2**20}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _markdown(res: dict[str, Any]) -> str:
    s, b, g, m = res["streams"], res["burst"], res["big_request"], res["rss"]
    return "\n".join([
        f"Measured {res['date']} on {res['machine']} (load average {res['load_average']:.1f} at the start), "
        f"`millm serve` with the demo model, queue size {res['queue_size']}:",
        "",
        "| phase | figures |",
        "|---|---|",
        f"| {s['clients']} concurrent streams, {s['seconds']:.0f} s closed loop | {s['completed']} completed, "
        f"**{s['errors']} errors**; latency p50 {s['p50_s']:.2f} s, p99 {s['p99_s']:.2f} s; "
        f"{s['requests_per_s']:.1f} requests/s |",
        f"| burst of {b['requests']} at once | {b['completed']} completed, {b['rejected_429']} rejected with 429 "
        f"(Retry-After on all: {'yes' if b['all_429_have_retry_after'] else 'NO'}), other statuses: "
        f"{', '.join(b['other']) or 'none'}; all answered in {b['seconds']:.1f} s |",
        f"| {g['bytes'] / 1e6:.0f} MB chat request | {g['content_length']['status']} in "
        f"{g['content_length']['seconds'] * 1000:.0f} ms with Content-Length, {g['chunked']['status']} in "
        f"{g['chunked']['seconds'] * 1000:.0f} ms chunked; slowest of {g['health_polls']} /health polls meanwhile "
        f"{g['health_max_s'] * 1000:.0f} ms |",
        f"| server RSS | start {m['start_mb']:.0f} MB, peak {m['peak_mb']:.0f} MB, end {m['end_mb']:.0f} MB "
        f"(growth {m['end_mb'] - m['start_mb']:+.0f} MB) |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--queue-size", type=int, default=32)  # 32 streams fit (16 slots + 32); a burst of 100 does not
    ap.add_argument("--no-doc", action="store_true", help="do not write the figures into docs/reliability.md")
    args = ap.parse_args()
    port = _free_port()
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "millm", "serve", "--port", str(port), "--queue-size",
                             str(args.queue_size), "--data-dir", str(ROOT / "benchmarks" / "out" / "load-data"),
                             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            time.sleep(0.05)
        ready = time.monotonic() - t0
        res = run_load(url, proc.pid, model="millm-demo", seconds=args.seconds, clients=args.clients,
                       burst=args.burst)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    res.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} cores",
               load_average=load, queue_size=args.queue_size, startup_to_ready_s=ready)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    if not args.no_doc:
        text = DOC.read_text()
        new = f"{BEGIN}\n{_markdown(res)}\n{END}"
        DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: new, text, flags=re.S))
    ok = (res["streams"]["errors"] == 0 and not res["burst"]["other"] and res["burst"]["all_429_have_retry_after"]
          and res["big_request"]["content_length"]["status"] == 413)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
