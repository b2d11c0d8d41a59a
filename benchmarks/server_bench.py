"""The real HTTP server, as a client sees it: `millm serve` in a subprocess, streamed completions over http.client.

Every request is a streamed /v1/completions call with a token-id prompt, greedy sampling and
`ignore_eos`, so each one produces exactly `max_tokens` chunks (one per token). A request's
TTFT is first chunk minus send time; its decode rate is (chunks - 1) / (last chunk - first chunk).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)
_LEVEL = re.compile(r" (WARNING|ERROR|CRITICAL) ")
_CHOICE_LOGGERS = ("millm.engine.threads", "millm.engine.weight_layout")  # (`Server.engine_choices`)


@dataclass
class RequestTiming:
    sent: float
    first: float | None = None
    last: float | None = None
    chunks: int = 0
    text: str = ""
    arrivals: list[float] = field(default_factory=list)  # each chunk's arrival (perf_counter), for per-token gaps

    def arrived(self, now: float, chunk: dict[str, Any]) -> None:
        """A completion chunk with choices arrived at `now` (perf_counter)."""
        if self.first is None:
            self.first = now
        self.last = now
        self.chunks += 1
        self.arrivals.append(now)
        self.text += chunk["choices"][0].get("text") or ""

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.sent

    @property
    def latency(self) -> float:
        assert self.last is not None
        return self.last - self.sent

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first token."""
        assert self.first is not None and self.last is not None
        return (self.chunks - 1) / (self.last - self.first) if self.chunks > 1 and self.last > self.first else 0.0


@dataclass
class Server:
    """A `millm serve` subprocess on a free loopback port."""

    model_dir: Path
    sae_dir: Path | None
    data_dir: Path
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    max_batch_size: int = 16
    proc: subprocess.Popen | None = None
    port: int = 0
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    model_arg: str | None = None  # what `--model` names (default: model_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process; `wait_ready` waits for /health."""
        self.port = _free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "millm", "serve", "--model", self.model_arg or str(self.model_dir),
               "--port", str(self.port),
               "--device", self.device, "--dtype", self.dtype, "--data-dir", str(self.data_dir),
               "--max-batch-size", str(self.max_batch_size), "--queue-size", "256",
               # info, for the engine's start-up choices (decode path, kernels, threads) in the kept log; no access
               # records (the request log's one line per request stays, as it is by default)
               "--log-level", "info", "--no-access-log", "--no-restore-state", "--served-model-name", "bench"]
        if self.sae_dir is not None:
            cmd += ["--sae", str(self.sae_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        self.log_path = self.data_dir / "server.log"
        out = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 300.0) -> None:
        assert self.proc is not None and self.log_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def warnings(self) -> list[dict[str, Any]]:
        """The distinct WARNING, ERROR and CRITICAL messages in the server's log so far (time stamps dropped), each
        with its count, in order of first appearance."""
        if self.log_path is None or not self.log_path.exists():
            return []
        counts: dict[str, int] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = _LEVEL.search(line)
            if m:
                msg = line[m.start() + 1 :]
                counts[msg] = counts.get(msg, 0) + 1
        return [{"message": msg, "count": n} for msg, n in counts.items()]

    def engine_choices(self) -> list[str]:
        """The engine's timed choices in the server's log so far, in order, time stamps dropped: the decode kernels
        (engine/weight_layout.py) and each thread decision, re-timing and slowdown of a batch or prompt regime
        (engine/threads.py), so that a report shows which thread counts and kernels served its figures."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return [line.split(": ", 1)[1] for line in self.log_path.read_text(errors="replace").splitlines()
                if any(f" INFO {name}: " in line for name in _CHOICE_LOGGERS)]

    # ------------------------------------------------------------------ admin calls

    def monitor(self, *, enabled: bool, features: list[int] | None = None, top_k: int = 8) -> None:
        body: dict[str, Any] = {"enabled": enabled, "top_k": top_k, "features": features or []}
        r = httpx.put(self.url + "/api/monitor/config", json=body, timeout=30)
        r.raise_for_status()
        httpx.delete(self.url + "/api/monitor/history", timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- requests


def completion_body(prompt_ids: list[int], max_tokens: int, steering: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "bench", "prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0.0,
                            "ignore_eos": True, "stream": True}
    if steering is not None:
        body["steering"] = steering
    return body


def stream_one(port: int, body: dict[str, Any]) -> RequestTiming:
    """One streamed request over the standard library's http.client (chunked SSE, one line at a time)."""
    timing = RequestTiming(sent=time.perf_counter())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read().decode()[:500]}")
        while line := resp.readline():
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = json.loads(line[6:])
            if not chunk.get("choices"):
                continue
            timing.arrived(time.perf_counter(), chunk)
    finally:
        conn.close()
    return timing


def first_chunk_one(port: int, body: dict[str, Any]) -> RequestTiming:
    """One streamed request, timed from sending it on an open connection to the arrival of its first chunk: for
    TTFT, as `generate`'s own clock (from the call to the first token) has no client at all.

    `stream_one` connects, formats the request with `http.client` and parses the response headers with
    `email.parser` inside its timing (about 0.2 ms of client CPU before the request is sent and 0.3 ms after the
    first chunk arrives, measured on the 2-core machine); a client with a kept-alive connection (the OpenAI SDK's)
    pays the connection set-up once. Here the connection is made before the clock starts, the request is written
    raw, and the clock stops when the bytes of the first event are in; they are then parsed and checked, and the
    rest of the response is read untimed."""
    data = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=3600) as sock:
        buf = b""
        sent = time.perf_counter()
        sock.sendall(head + data)
        while (at := buf.find(b"data: ")) < 0 or buf.find(b"\n\n", at) < 0:
            more = sock.recv(65536)
            if not more:
                break
            buf += more
        first = time.perf_counter()
        while more := sock.recv(65536):
            buf += more
    status = buf.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"{status.decode(errors='replace')}: {buf[:500].decode(errors='replace')}")
    at = buf.find(b"data: ")
    chunk = json.loads(buf[at + 6 : buf.find(b"\n\n", at)])
    text = chunk["choices"][0].get("text") or ""
    return RequestTiming(sent=sent, first=first, last=first, chunks=1, text=text)


def _dechunk(body: bytes) -> tuple[bytes, list[int]]:
    """An HTTP/1.1 chunked body's data, and for each byte of it the offset in `body` just past it."""
    data = bytearray()
    ends: list[int] = []
    at = 0
    while True:
        eol = body.find(b"\r\n", at)
        if eol < 0:
            break
        size = int(body[at:eol].split(b";", 1)[0] or b"0", 16)
        if size == 0:
            break
        start = eol + 2
        data += body[start : start + size]
        ends.extend(range(start + 1, start + size + 1))
        at = start + size + 2
    return bytes(data), ends


def _request_bytes(port: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


def _parse_stream(sent: float, parts: list[bytes], times: list[float]) -> RequestTiming:
    """A streamed completion's timing from the raw response `parts`, each received at `times[i]`: each chunk's arrival
    is the time of the `recv` that completed it."""
    timing = RequestTiming(sent=sent)
    raw = b"".join(parts)
    status = raw.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"{status.decode(errors='replace')}: {raw[:500].decode(errors='replace')}")
    body_at = raw.find(b"\r\n\r\n") + 4
    if b"transfer-encoding: chunked" in raw[:body_at].lower():
        payload, ends = _dechunk(raw[body_at:])
        ends = [body_at + e for e in ends]
    else:
        payload, ends = raw[body_at:], list(range(body_at + 1, len(raw) + 1))
    bounds, total = [], 0  # the end offset in `raw` of each part
    for part in parts:
        total += len(part)
        bounds.append(total)
    k = at = 0
    while (start := payload.find(b"data: ", at)) >= 0 and (end := payload.find(b"\n\n", start)) >= 0:
        at = end + 2
        line = payload[start + 6 : end]
        if line.startswith(b"[DONE]"):
            continue
        chunk = json.loads(line)
        if not chunk.get("choices"):
            continue
        while bounds[k] < ends[end + 1]:
            k += 1
        timing.arrived(times[k], chunk)
    return timing


def run_concurrent(server: Server, bodies: list[dict[str, Any]]) -> tuple[list[RequestTiming], float]:
    """`run_requests` with almost no client work while the streams run: one thread sends every request on its own
    connection and reads them all with `selectors` and plain `recv` calls, keeping each call's bytes and arrival
    time; the responses are parsed only once every connection is closed. The wall time runs from the first send to
    the last chunk's arrival. For the concurrency levels (every level, one stream included): there 8 streams share
    the 2 benchmark cores with the server, and `run_requests` (a thread per stream, http.client's chunked `readline`
    in Python and a `json.loads` per chunk, eight threads taking turns at the GIL) costs the client several times
    more CPU per token (docs/benchmarks-notes.md, "seventh session: conc5")."""
    sel = selectors.DefaultSelector()
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=3600) for _ in bodies]
    parts: list[list[bytes]] = [[] for _ in bodies]
    times: list[list[float]] = [[] for _ in bodies]
    try:
        for i, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, i)
        requests = [_request_bytes(server.port, b) for b in bodies]
        start = time.perf_counter()
        for sock, req in zip(socks, requests, strict=True):
            sock.sendall(req)
        open_ = len(socks)
        while open_:
            for key, _ in sel.select():
                more = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if more:
                    parts[key.data].append(more)
                    times[key.data].append(time.perf_counter())
                else:
                    sel.unregister(key.fileobj)
                    open_ -= 1
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    timings = [_parse_stream(start, p, t) for p, t in zip(parts, times, strict=True)]
    return timings, max(t.last if t.last is not None else start for t in timings) - start


def run_requests(server: Server, bodies: list[dict[str, Any]]) -> tuple[list[RequestTiming], float]:
    """Send all bodies at once, one thread each; returns each request's timing and the wall time until the last
    finished. The client is deliberately lean (http.client, not an async HTTP library): on the 2-core benchmark
    machine it shares the cores with the server, and httpx's async streaming used 240 us of CPU per token at
    concurrency 8, against about 95 us for this."""
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        start = time.perf_counter()
        timings = list(pool.map(lambda b: stream_one(server.port, b), bodies))
        return timings, time.perf_counter() - start


def run_one(server: Server, body: dict[str, Any]) -> RequestTiming:
    return run_requests(server, [body])[0][0]
