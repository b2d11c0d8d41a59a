"""Probe for a benchmark's `millm serve` process (benchmarks/serve_ab.py): imported at start-up when this folder is on
the server's PYTHONPATH, never otherwise (the package code does not import it).

`MILLM_PROBE_OUT=<path>`: record every decode step (end time, rows, torch threads, seconds: the step as the thread
policy times it, forward, sampling and emitting), every prefill (end time, rows, longest prompt, seconds, threads), the
worker's socket sends (`api.sse.Connection.write`: count and seconds) and `sample_and_emit` by row count (count and
seconds); written as JSON to the path on SIGUSR1. `MILLM_PROBE_WORKER_WRITES=0`: the worker never writes a stream's
chunks itself (every chunk goes the event loop's way, as before the eighth session), for an A/B in one run."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

if os.environ.get("MILLM_PROBE_WORKER_WRITES") == "0":
    from millm.api import openai_routes

    openai_routes._Sse.worker_writes = lambda self, conn: None  # type: ignore[method-assign]

if os.environ.get("MILLM_PROBE_OUT"):
    from millm.api import sse
    from millm.engine import threads, worker

    steps: list[tuple[float, int, int, float]] = []
    prefills: list[tuple[float, int, int, float, int]] = []
    counts: dict[str, float] = {}

    def _count(key: str, seconds: float) -> None:
        counts[key + "_n"] = counts.get(key + "_n", 0) + 1
        counts[key + "_s"] = counts.get(key + "_s", 0.0) + seconds

    decode, decoded = threads.ThreadPolicy.decode, threads.ThreadPolicy.decoded

    def _decode(self: Any, model: object, rows: int, kernels: tuple[str, ...] = ("",)) -> int:
        self._probe_rows = rows
        return decode(self, model, rows, kernels)

    def _decoded(self: Any, seconds: float) -> None:
        steps.append((time.time(), self._probe_rows, self.now, seconds))
        decoded(self, seconds)

    threads.ThreadPolicy.decode, threads.ThreadPolicy.decoded = _decode, _decoded  # type: ignore[method-assign]

    prefill = worker.Worker._prefill

    def _prefill(self: Any, handles: list[Any]) -> None:
        t = time.perf_counter()
        prefill(self, handles)
        prefills.append((time.time(), len(handles), max(len(h.request.prompt_ids) for h in handles),
                         time.perf_counter() - t, self.threads.now))

    worker.Worker._prefill = _prefill  # type: ignore[method-assign]

    emit = worker.sample_and_emit

    def _emit(lm: Any, logits: Any, rows: list[Any], **kw: Any) -> None:
        t = time.perf_counter()
        emit(lm, logits, rows, **kw)
        _count(f"emit{len(rows)}", time.perf_counter() - t)

    worker.sample_and_emit = _emit

    write = sse.Connection.write

    def _write(self: Any, data: bytes) -> int:
        t = time.perf_counter()
        try:
            return write(self, data)
        finally:
            _count("send", time.perf_counter() - t)

    sse.Connection.write = _write  # type: ignore[method-assign]

    def _dump(*_: Any) -> None:
        with open(os.environ["MILLM_PROBE_OUT"], "w") as f:
            json.dump({"steps": list(steps), "prefills": list(prefills), "counts": dict(counts)}, f)

    signal.signal(signal.SIGUSR1, _dump)
