"""How many torch threads the generation thread uses for each forward.

Small forwards leave a core to the event loop (HTTP, SSE framing, detokenizing); large ones use every core.
OpenMP thread counts are per thread, so the policy affects only the generation thread that applies it.
"""

from __future__ import annotations

import os

import torch

# A forward pass doing at least this many FLOPs (2 x parameters x tokens) is compute-bound enough to
# use every core. So is a step of a model with at least PARALLEL_PARAMS parameters: its one-token
# steps stream enough weight bytes that more cores stream them faster (oneDNN on the 2-core benchmark
# machine: 350M model, 111 ms per step on one thread, 63 ms on two). Smaller ones (the demo model's
# steps take 2-3 ms, mostly Python and small ops) keep a core free for the event loop, and would only
# expose each short parallel region to scheduling stalls.
PARALLEL_FLOPS = 2e9
PARALLEL_PARAMS = 50_000_000


def thread_counts() -> tuple[int, int] | None:
    """Torch threads for the generation thread: (small forwards, large forwards). Small ones leave a core
    to the event loop (HTTP, SSE framing, detokenizing); large ones use every core. None when
    OMP_NUM_THREADS / MKL_NUM_THREADS is set: then the user's choice stands. On a shared or small
    machine, a parallel region whose threads are not all scheduled waits for the missing one: on the
    2-core benchmark machine two threads made a 350M one-token step 7-10x slower while another
    process kept a core busy (set OMP_NUM_THREADS=1 when the server shares its cores)."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1), cores


class ThreadPolicy:
    """The generation thread's torch thread count, switched only when it changes. `counts` is (small, large),
    or None to leave torch's setting alone; set it on the thread that runs the forwards (`start()`)."""

    def __init__(self) -> None:
        self.counts: tuple[int, int] | None = None
        self.now = 0

    def start(self) -> None:
        self.counts = thread_counts()

    def describe(self) -> str:
        return str(self.counts or torch.get_num_threads())

    def use(self, num_parameters: int, tokens: int) -> None:
        """All cores for a forward over `tokens` positions that is compute-bound, else all but one."""
        if self.counts is None:
            return
        small, large = self.counts
        heavy = num_parameters >= PARALLEL_PARAMS or 2 * num_parameters * tokens >= PARALLEL_FLOPS
        n = large if heavy else small
        if n != self.now:
            torch.set_num_threads(n)
            self.now = n
