"""Server overhead per token: CPU time the server spends per streamed token beyond the forward pass.

`python -m benchmarks.overhead [--model llama-25m]` (part of the sweep's report). Wall-clock rates on a shared
machine move with everyone else's load; CPU time per token moves much less, so this measures CPU time:
- the server (`millm serve`, one torch thread so no OpenMP thread spins) streams a short and a long greedy
  request in turn; each of its threads' CPU time (/proc/<pid>/task/<tid>/schedstat, nanoseconds) is read
  before and after. The difference between the long and the short request over the difference in tokens is
  the marginal CPU time per token, so per-request costs (HTTP set-up, prefill) cancel out;
- in this process, on the same model with one thread, the same two requests go through an engine `Worker`
  driven synchronously (no HTTP, no event loop), timing its decode forward (the lean step or the transformers
  forward) separately.
Also a one-token request (TTFT's work): the server's whole CPU time for it against the engine's and the
prefill forward's. So per token: forward = the forward alone; engine = everything the worker does (forward, sampling,
detokenizing, and what the server's worker thread does with a streamed plain token's event: it writes the chunk to
the client's socket itself, `_StreamSink`); server = the whole process (engine, the event loop's relay for the other
events, SSE framing, the socket). Overhead = (engine - forward) + the server's threads other than the generation
thread; the generation thread's own extra in the server (server worker - engine) is reported beside it. Rounds
alternate server and engine; the medians are reported. Beside them: each thread's voluntary context switches per
token, and the server's CPU per second with no request, with what the long-minus-short difference charges per token
for it (the rate times the long request's extra duration, over its extra tokens).
Wall clock beside it (what a client waits per token), in paired segments after the CPU rounds: a streamed request
of `wall_tokens` tokens, then the same request through the in-process engine (the order alternates pair by pair, a
second or so apart). Each segment gives its median per-token time (the gaps between the client's chunk arrivals;
the engine's decode steps and their forwards), so a load burst inside a segment moves it little; each pair gives
the stream's median minus the in-process forward's (wall beyond the forward) and minus the in-process step's
(beyond the engine: the serving path's share). Reported: the median of those paired differences over the pairs,
with their quartiles and range. The event loop runs on the other core, so this counts only what delays the next
forward or a chunk's delivery, not all CPU spent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import tempfile
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.server_bench import Server, completion_body, run_one

log = logging.getLogger("benchmarks.overhead")


def _per_task(pid: int, read: Callable[[Path], int]) -> dict[str, int]:
    """read(/proc/<pid>/task/<tid>) for each thread of process pid, by thread id; a thread that ended or lacks the
    figure is left out."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[task.name] = read(task)
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return out


def _task_cpu_ns(pid: int) -> dict[str, int]:
    """CPU nanoseconds so far of each thread of process pid, by thread id (Python 3.11 does not name OS threads)."""
    return _per_task(pid, lambda task: int((task / "schedstat").read_text().split()[0]))


def _task_switches(pid: int) -> dict[str, int]:
    """Voluntary context switches so far of each thread of process pid (a wait: epoll, a lock, the GIL), by thread id."""
    return _per_task(pid, lambda task: next(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                                            if line.startswith("voluntary_ctxt_switches:")))


def _idle_cpu(server: Server, seconds: float = 2.0) -> float:
    """The server's CPU microseconds per second with no request (timers, periodic tasks, polling threads): what the
    long-minus-short method charges to tokens in proportion to the long request's extra duration."""
    assert server.proc is not None
    before = _task_cpu_ns(server.proc.pid)
    time.sleep(seconds)
    after = _task_cpu_ns(server.proc.pid)
    return sum(after.get(k, 0) - before.get(k, 0) for k in after) / seconds / 1e3


def _server_cpu(server: Server, body: dict[str, Any]) -> tuple[dict[str, int], int, float, dict[str, int]]:
    """Each server thread's CPU ns during one request: the generation thread (the busiest) as "millm-worker",
    the process's first thread (the event loop) as "event loop", the rest by thread id; the chunks streamed,
    the wall-clock seconds from the first chunk to the last (as the client read them), and each thread's voluntary
    context switches (by the same names)."""
    assert server.proc is not None
    pid = server.proc.pid
    before, switched = _task_cpu_ns(pid), _task_switches(pid)
    timing = run_one(server, body)
    time.sleep(0.05)  # the response's last writes
    after, switches = _task_cpu_ns(pid), _task_switches(pid)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    busiest = max((k for k in delta if k != str(pid)), key=delta.__getitem__, default=None)
    names = {str(pid): "event loop", **({busiest: "millm-worker"} if busiest else {})}
    span = (timing.last - timing.first) if timing.first is not None and timing.last is not None else 0.0
    return ({names.get(k, f"thread {k}"): v for k, v in delta.items()}, timing.chunks, span,
            {names.get(k, f"thread {k}"): v - switched.get(k, 0) for k, v in switches.items()})


class _StreamSink:
    """The generation thread's share of serving a stream, in this process: where the server's worker thread writes a
    streamed plain token's chunk to the client's socket itself (`services.text_chunks.WorkerWrites`, on a server
    with `api.sse.Connection`), the in-process engine's sink does the same (the same code: the chunk's JSON, its SSE
    and HTTP framing, the non-blocking write) to a loopback TCP connection that a thread here reads (as the client
    would, in another process), so that `engine_us` counts that work as the server's worker pays it (`defer`: the
    worker's, which holds a decode step's chunk for the step's end or a later one's, as on the server). On a tree
    without worker writes (`put` None) the sink appends to a list, as before."""

    def __init__(self, events: list[Any], defer: Any = None) -> None:
        self.put: Any = None
        self._socks: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            from millm.api.openai_routes import _Sse
            from millm.api.sse import Connection
            from millm.services.engine_client import Inbox, Relay, Run
            from millm.services.text_chunks import ChunkStream, TextChunks
        except ImportError:
            return
        from millm.protocol import openai as p

        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        server.close()
        conn.setblocking(False)
        client.settimeout(30)
        self._socks = [conn, client]
        self._reader = threading.Thread(target=self._read, args=(client,), daemon=True)
        self._reader.start()
        self._loop = asyncio.new_event_loop()  # (not running: only an event the worker does not write is put on it)
        run = Run(handles=[], queue=Inbox(), n=1, relay=Relay(self._loop),
                  **({"defer": defer} if defer is not None else {}))  # (a tree before `Worker.defer` has neither)
        chunks = TextChunks(lambda c, text: p.Completion(id="cmpl-0123456789abcdef01234567", created=int(time.time()),
                                                          model="llama-25m", choices=[p.CompletionChoice(
                                                              index=c, text=text, finish_reason=None)]))

        def plain(c: int, ev: Any) -> str | None:
            return chunks(c, ev.text) if not ev.logprobs else None

        idle = types.SimpleNamespace(is_closing=lambda: False, get_write_buffer_size=lambda: 0)
        cycle = types.SimpleNamespace(transport=idle, disconnected=False, response_complete=False,
                                      flow=types.SimpleNamespace(write_paused=False))
        out = Connection(cycle, conn, types.SimpleNamespace(idle=lambda: True))  # type: ignore[arg-type]
        writes = _Sse(ChunkStream(None, run, plain)).worker_writes(out)  # type: ignore[arg-type]
        writes.arm()  # (what the loop does once the response has started)

        def put(ev: Any) -> None:
            events.append(ev)
            writes.put(0, ev, True)

        self.put = put

    @staticmethod
    def _read(sock: socket.socket) -> None:
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        if self._loop is not None:
            self._loop.close()


def _engine_cpu(lm: Any, prompt: list[int], tokens: int,
                steps: list[tuple[int, int]] | None = None) -> tuple[int, int, int, int, int]:
    """(engine thread CPU ns, decode forward CPU ns, tokens, prefill forward CPU ns, decode forward wall-clock ns) of
    one greedy request through a synchronous Worker; `steps`, when given, receives each decode step's (wall-clock ns,
    its forward's wall-clock ns)."""
    from millm.engine.types import GenerationRequest, SamplingParams
    from millm.engine.worker import Worker

    worker = Worker(max_batch_size=1)
    worker.loaded = lm
    events: list[Any] = []
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    stream = _StreamSink(events, getattr(worker, "defer", None))
    worker.submit(GenerationRequest(request_id="o", prompt_ids=tuple(prompt), params=params),
                  events.append if stream.put is None else stream.put)
    spent = [0, 0]  # the forwards' CPU ns and wall-clock ns

    def timed(fn: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            t, w = time.thread_time_ns(), time.perf_counter_ns()
            try:
                return fn(*a, **kw)
            finally:
                spent[0] += time.thread_time_ns() - t
                spent[1] += time.perf_counter_ns() - w
        return call

    with torch.inference_mode():
        # every forward, prefill or decode, runs through the lean step or the transformers forward (neither calls
        # the other), so timing both counts each once
        dec = worker._lean_decoder(lm)
        if dec is not None:
            dec.step = timed(dec.step)  # type: ignore[method-assign]
        worker.forward = timed(worker.forward)  # type: ignore[method-assign]
        t = time.thread_time_ns()
        worker._admit()
        prefill_fwd, spent[1] = spent[0], 0
        while worker._rows:
            if steps is None:
                worker._step()
                continue
            w0, f0 = time.perf_counter_ns(), spent[1]
            worker._step()
            steps.append((time.perf_counter_ns() - w0, spent[1] - f0))
        total = time.thread_time_ns() - t
    stream.close()
    n = sum(len(getattr(e, "token_ids", ())) for e in events)
    return total, spent[0] - prefill_fwd, n, prefill_fwd, spent[1]


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def _wall_pairs(server: Server, lm: Any, prompt: list[int], tokens: int, pairs: int) -> dict[str, Any]:
    """Paired wall-clock segments (module docstring): per pair, the stream's median gap between chunks and the
    in-process engine's median step and forward (microseconds), and the differences."""
    body = completion_body(prompt, tokens, None)
    rows: list[dict[str, float]] = []
    for i in range(pairs):
        seg: dict[str, float] = {}
        for side in (("server", "engine") if i % 2 == 0 else ("engine", "server")):
            if side == "server":
                arrivals = run_one(server, body).arrivals
                gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]  # (one fewer than arrivals)
                seg["stream_us"] = statistics.median(gaps) * 1e6
            else:
                steps: list[tuple[int, int]] = []
                _engine_cpu(lm, prompt, tokens, steps)
                seg["step_us"] = statistics.median(w for w, _ in steps) / 1e3
                seg["forward_us"] = statistics.median(f for _, f in steps) / 1e3
        seg["beyond_forward_us"] = seg["stream_us"] - seg["forward_us"]
        seg["beyond_engine_us"] = seg["stream_us"] - seg["step_us"]
        rows.append(seg)
    beyond = [r["beyond_forward_us"] for r in rows]
    serving = [r["beyond_engine_us"] for r in rows]
    q1, med, q3 = _quartiles(beyond)
    return {
        "wall_pairs": rows, "wall_tokens": tokens,
        "wall_overhead_us": med, "wall_quartiles_us": [q1, q3], "wall_range_us": [min(beyond), max(beyond)],
        "wall_serving_us": statistics.median(serving), "wall_serving_quartiles_us": list(_quartiles(serving)[::2]),
        "stream_ms_token": statistics.median(r["stream_us"] for r in rows) / 1e3,
        "forward_wall_ms": statistics.median(r["forward_us"] for r in rows) / 1e3,
        "step_wall_ms": statistics.median(r["step_us"] for r in rows) / 1e3,
    }


def measure(bm: Any, *, short: int = 16, long: int = 144, rounds: int = 5, work: Path, wall_tokens: int = 96,
            wall_pairs: int = 12) -> dict[str, Any]:
    from benchmarks.run import _prompt
    from millm.engine.model_loading import load_model

    server = Server(bm.model_dir, bm.sae_dir, work / f"overhead-{bm.name}", threads=1, max_batch_size=1,
                    model_arg=bm.serve_as)
    server.launch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm = load_model(str(bm.model_dir))
        server.wait_ready()
        prompt = _prompt(lm.tokenizer, 32, seed=7)
        bodies = {n: completion_body(prompt, n, None) for n in (1, short, long)}
        for n in (short, long):  # warm-up
            run_one(server, bodies[n])
            _engine_cpu(lm, prompt, n)
        idle = _idle_cpu(server)
        rows: list[dict[str, float]] = []
        for rnd in range(rounds):
            log.info("overhead round %d/%d", rnd + 1, rounds)
            srv: dict[int, tuple[dict[str, int], int, float, dict[str, int]]] = {}
            eng: dict[int, tuple[int, int, int, int, int]] = {}
            for side in (("server", "engine") if rnd % 2 == 0 else ("engine", "server")):
                for n in (1, short, long):
                    if side == "server":
                        srv[n] = _server_cpu(server, bodies[n])
                    else:
                        eng[n] = _engine_cpu(lm, prompt, n)
            dn = srv[long][1] - srv[short][1]
            threads = set(srv[long][0]) | set(srv[short][0])
            per = {k: (srv[long][0].get(k, 0) - srv[short][0].get(k, 0)) / dn / 1e3 for k in threads}
            de = eng[long][2] - eng[short][2]
            rows.append({
                "server_us": sum(per.values()),
                "server_worker_us": per.get("millm-worker", 0.0),
                "server_other_us": sum(v for k, v in per.items() if k != "millm-worker"),
                "engine_us": (eng[long][0] - eng[short][0]) / de / 1e3,
                "forward_us": (eng[long][1] - eng[short][1]) / de / 1e3,
                # (the two named threads always; the event loop's share can now be well under 1 us)
                "threads": {k: round(v, 1) for k, v in per.items()  # type: ignore[dict-item]
                            if abs(v) >= 1 or k in ("event loop", "millm-worker")},
                # voluntary context switches per token (long minus short), by thread
                "switches": {k: round((srv[long][3].get(k, 0) - srv[short][3].get(k, 0)) / dn, 2)  # type: ignore[dict-item]
                             for k in set(srv[long][3]) | set(srv[short][3])
                             if abs(srv[long][3].get(k, 0) - srv[short][3].get(k, 0)) >= dn / 20},
                # what the server's CPU with no request (idle_us_s) charges per token over the long request's extra
                # duration
                "idle_share_us": idle * (srv[long][2] - srv[short][2]) / dn,
                # one request with one new token: everything the server spends on it, against the prefill forward
                "request_1_us": sum(srv[1][0].values()) / 1e3,
                "engine_1_us": eng[1][0] / 1e3,
                "prefill_us": eng[1][3] / 1e3,
            })
        log.info("overhead: %d paired wall-clock segments of %d tokens", wall_pairs, wall_tokens)
        wall = _wall_pairs(server, lm, prompt, wall_tokens, wall_pairs) if wall_pairs > 0 else {}
    finally:
        server.stop()
        torch.set_num_threads(before)
    med = {k: statistics.median(r[k] for r in rows) for k in ("server_us", "server_worker_us", "server_other_us",
                                                             "engine_us", "forward_us")}
    return {
        "model": bm.name, "parameters": lm.num_parameters, "tokens": [short, long], "rounds": rows, **med,
        # (engine - forward) comes from one in-process run, the other threads' time straight from the server: both
        # are differences within one measurement, so other processes' load moves them far less than it moves
        # server - forward (two runs, each ~10 ms of forward). The generation thread's extra work in the server
        # (handing events to the event loop instead of a list) is server worker - engine, kept apart (noisier).
        "worker_overhead_us": statistics.median(r["engine_us"] - r["forward_us"] for r in rows),
        "serving_overhead_us": med["server_other_us"],
        "overhead_us": statistics.median(r["engine_us"] - r["forward_us"] + r["server_other_us"] for r in rows),
        "handoff_us": statistics.median(r["server_worker_us"] - r["engine_us"] for r in rows),
        "idle_us_s": idle, "idle_share_us": statistics.median(r["idle_share_us"] for r in rows),
        "loop_us": statistics.median(r["threads"].get("event loop", 0.0) for r in rows),  # type: ignore[attr-defined]
        "loop_switches": statistics.median(r["switches"].get("event loop", 0.0) for r in rows),  # type: ignore[attr-defined]
        **wall,
        "prompt_tokens": len(prompt),
        "request_1_us": statistics.median(r["request_1_us"] for r in rows),
        "engine_1_us": statistics.median(r["engine_1_us"] for r in rows),
        "prefill_us": statistics.median(r["prefill_us"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.sweep import get_sweep_model

    ap = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-25m", help="a sweep model name (default llama-25m)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--wall-pairs", type=int, default=12, help="paired wall-clock segments (0: none)")
    ap.add_argument("--wall-tokens", type=int, default=96, help="tokens per wall-clock segment")
    ap.add_argument("--json", type=Path, help="write the result here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="millm-overhead-") as tmp:
        res = measure(get_sweep_model(args.model), rounds=args.rounds, work=Path(tmp), wall_tokens=args.wall_tokens,
                      wall_pairs=args.wall_pairs)
    print(f"{res['model']}: CPU per token: server {res['server_us']:.0f} us (worker thread "
          f"{res['server_worker_us']:.0f}, other threads {res['server_other_us']:.0f}); in-process engine "
          f"{res['engine_us']:.0f} us, of which forward {res['forward_us']:.0f} us. Overhead beyond the forward "
          f"{res['overhead_us']:.0f} us (worker {res['worker_overhead_us']:.0f}, serving "
          f"{res['serving_overhead_us']:.0f}); hand-off on the generation thread {res['handoff_us']:.0f} us")
    print(f"event loop per token: {res['loop_us']:.0f} us, {res['loop_switches']:.2f} voluntary context switches; "
          f"the server idle: {res['idle_us_s']:.0f} us CPU per second, {res['idle_share_us']:.1f} us of it charged per "
          f"token")
    if "wall_overhead_us" in res:
        q1, q3 = res["wall_quartiles_us"]
        lo, hi = res["wall_range_us"]
        print(f"wall clock per token ({len(res['wall_pairs'])} pairs of {res['wall_tokens']}-token segments, medians): "
              f"streamed {res['stream_ms_token'] * 1e3:.0f} us, in-process step {res['step_wall_ms'] * 1e3:.0f} us, "
              f"forward {res['forward_wall_ms'] * 1e3:.0f} us; beyond the forward {res['wall_overhead_us']:.0f} us "
              f"(paired quartiles {q1:.0f} to {q3:.0f}, range {lo:.0f} to {hi:.0f}), of which beyond the in-process "
              f"engine {res['wall_serving_us']:.0f} us")
    print(f"one {res['prompt_tokens']}-token prompt, one new token: server CPU {res['request_1_us']:.0f} us, in-process "
          f"engine {res['engine_1_us']:.0f} us, of which the prefill forward {res['prefill_us']:.0f} us")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
