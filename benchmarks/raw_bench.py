"""The reference: raw `model.generate` on the same model, plus the machine's memory bandwidth.

`generate` runs greedy with `min_new_tokens = max_new_tokens`, so it produces exactly as many tokens
as the server's `ignore_eos` requests; a streamer timestamps every token, giving TTFT and decode
rate measured the same way as the server's. The memory-bandwidth bound is the bytes one decode
step must read (every weight once; of an untied input embedding only one row) over the best
read bandwidth measured on the device.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.server_bench import RequestTiming


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """A generate() streamer that only records when each put() happened (the first put is the prompt)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        sync(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate_timed(lm: Any, prompt_ids: list[int], max_tokens: int) -> RequestTiming:
    """One greedy HF generate call, timed per token."""
    dev = lm.device
    ids = torch.tensor([prompt_ids], device=dev)
    clock = _Clock(dev)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        sync(dev)
        sent = time.perf_counter()
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                min_new_tokens=max_tokens, do_sample=False, streamer=clock, pad_token_id=pad)
    times = clock.times[1:]
    text = lm.tokenizer.decode(out[0, len(prompt_ids):].tolist())
    return RequestTiming(sent=sent, first=times[0], last=times[-1], chunks=len(times), text=text)


def prefill_seconds(lm: Any, prompt_ids: list[int]) -> float:
    """One forward pass over the prompt (logits of the last position only), as generate's prefill."""
    dev = lm.device
    ids = torch.tensor([prompt_ids], device=dev)
    with torch.inference_mode():
        sync(dev)
        t = time.perf_counter()
        lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
        sync(dev)
        return time.perf_counter() - t


# ---------------------------------------------------------------------- memory bandwidth


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_second: float
    method: str


def weight_bytes_per_step(model: Any) -> int:
    """Bytes a one-token decode step reads: every parameter once, except an untied input embedding
    (only one row of it is read)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    if not tied:
        total -= (emb.shape[0] - 1) * emb.shape[1] * emb.element_size()
    return total


def measure_bandwidth(device: torch.device, *, mib: int = 512, repeats: int = 7,
                      thread_counts: tuple[int, ...] = ()) -> Bandwidth:
    """Read bandwidth of a `mib` buffer: for each way of reading it (a sum, and on CPU a matrix-vector product too)
    and each of `thread_counts` (CPU; empty = the current setting), the median of `repeats` full reads; the best
    of those medians. (The median, not the fastest read: on this shared machine the fastest of 7 reads once came
    to 52 GB/s where runs before and after measured 30-35, and the bound moved with it.)"""
    n = mib * 1024 * 1024 // 4
    x = torch.ones(n, device=device)
    w = x.view(-1, 4096)
    v = torch.ones(4096, device=device)
    best, how = 0.0, ""
    before = torch.get_num_threads()
    counts = thread_counts if device.type == "cpu" and thread_counts else (before,)
    try:
        for threads in counts:
            if device.type == "cpu":
                torch.set_num_threads(threads)
            for name, fn in (("sum", lambda: x.sum()), ("matrix-vector", lambda: torch.mv(w, v))):
                fn()
                rates = []
                for _ in range(repeats):
                    sync(device)
                    t = time.perf_counter()
                    fn()
                    sync(device)
                    rates.append(n * 4 / (time.perf_counter() - t))
                rate = statistics.median(rates)
                if rate > best:
                    best = rate
                    how = f"{name}, {threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else name
    finally:
        torch.set_num_threads(before)
    return Bandwidth(best, how)


def with_threads(n: int, fn: Any, *args: Any) -> Any:
    """`fn(*args)` with torch on `n` threads, the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)
