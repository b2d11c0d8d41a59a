"""How many torch threads the generation thread uses for each forward: decode steps by measurement, prefill by size.

Decode steps: for the loaded model and each batch-size regime (1, 2, 3-4, 5-8, 9-16, ... rows), the policy
times real decode steps (`Worker._step`, forward, sampling and emitting included) with each candidate thread
count in alternating blocks of `BLOCK` steps (`TRIAL_BLOCKS` each; the first step of a block pays
for the switch and is dropped), and keeps the faster by median; within `TIE` it keeps the smaller
count, which leaves a core to the event loop (HTTP, SSE framing, detokenizing). A regime is decided once and
re-checked after `RECHECK_STEPS` further steps in it (the machine's load may have changed); a new model starts
over. This replaces a fixed parameter threshold: on the 2-core benchmark machine one thread was best for the
2M demo and two for a 350M model, with the crossover depending on family, batch size and load.

Prefill: a forward doing at least `PARALLEL_FLOPS` (2 x parameters x tokens) is compute-bound and uses every
core, unless the cores are contended now: another process holds a core, and a parallel region waits for its
descheduled thread. Whether they are is measured, not inferred: a compute-bound probe (a matrix product costing,
all calls together, about `PROBE_SHARE` of the prefill's FLOPs, within `PROBE_ROWS`) is timed with each candidate
count, alternating, `PROBE_ROUNDS` times, and every core is kept unless that is not `PREFILL_GAIN` faster by
median; the verdict holds for `PROBE_TTL` seconds.
(It used to be inferred from the decode timing, which found two threads 1.5x slower than one; but on a small model
one thread can decode faster with no contention at all, and the decode timing may have run while a client kept
a core busy that is idle at the next prompt: Gemma-2 prefilled 1,000 tokens on one thread, 1.3-1.6x slower.)
Smaller prefills are timed like decode steps, per prompt regime (1-8, 9-64, 65-512, ... tokens in the forward):
the first `PREFILL_TRIALS` prefills per candidate alternate the counts, each timed per token, and more threads
are kept only when `PREFILL_GAIN` faster by median (re-checked after `RECHECK_PREFILLS` more; fewer threads
meanwhile while a fresh probe verdict finds the cores contended). A fixed threshold got this wrong: on the
2-core machine a 32-token prefill of a 25M model (1.8 GFLOP, under the threshold) ran on one thread in 27 ms
where two took 22 ms, while one thread still decoded it best. Other forwards (`use`) take the decode choice
for one row when it is known, else all but one core, and every core when compute-bound (as a prefill).

OpenMP thread counts are per thread, so the policy affects only the generation thread that applies it.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

log = logging.getLogger(__name__)

PARALLEL_FLOPS = 2e9
BLOCK = 3  # a candidate is timed over this many steps in a row; the first of each block is dropped (switch cost)
TRIAL_BLOCKS = 2  # blocks per candidate, alternating, before deciding a regime
RECHECK_STEPS = 4096  # steps in a regime after which it is timed again
TIE = 0.03  # within this fraction, the smaller thread count wins
PROBE_K = 512  # the probe multiplies an (M, PROBE_K) by a (PROBE_K, PROBE_K) matrix
PROBE_SHARE = 0.02  # the probe's FLOPs, all calls together, against the prefill's
PROBE_ROWS = (16, 256)  # bounds of M: 8-134 MFLOP a call, about 0.1-2 ms on one core of the benchmark machine
PROBE_ROUNDS = 3  # timed probes per candidate count (after one untimed each)
PROBE_TTL = 1.0  # seconds a probe's verdict holds
PREFILL_TRIALS = 3  # timed prefills per candidate in a prompt regime before deciding it
RECHECK_PREFILLS = 64  # prefills in a prompt regime after which it is timed again
PREFILL_GAIN = 0.1  # more threads for a small prefill only when this much faster per token than fewer


def thread_counts() -> tuple[int, int] | None:
    """Torch threads for the generation thread: (all but one core, all cores). None when OMP_NUM_THREADS /
    MKL_NUM_THREADS is set: then the user's choice stands. On a shared or small machine, a parallel region whose
    threads are not all scheduled waits for the missing one (on the 2-core benchmark machine two threads made a
    350M one-token step 7-10x slower while another process kept a core busy); the timing sees that."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1), cores


def regime(rows: int) -> int:
    """The batch-size regime of `rows` rows: the power of two at or above it."""
    return 1 << max(0, rows - 1).bit_length()


def prompt_regime(tokens: int) -> int:
    """The prefill regime of a forward over `tokens` positions (all rows): the power of eight at or above it."""
    r = 1
    while r < tokens:
        r *= 8
    return r


@dataclass
class _Regime:
    times: dict[int, list[float]] = field(default_factory=dict)
    timed: int = 0  # trial steps so far
    chosen: int | None = None
    steps: int = 0  # steps since decided


class ThreadPolicy:
    """The generation thread's torch thread count, switched only when it changes. `counts` is (small, large),
    or None to leave torch's setting alone; set it on the thread that runs the forwards (`start()`).

    Per decode step: `decode(model, rows)` before, `decoded(seconds)` after (the step's wall time)."""

    def __init__(self) -> None:
        self.counts: tuple[int, int] | None = None
        self.now = 0
        self._model: object | None = None
        self._regimes: dict[int, _Regime] = {}
        self._trial: tuple[_Regime, int] | None = None  # the regime and count the current step is timing
        self._prefills: dict[int, _Regime] = {}  # prompt regime -> its timing (per token) and choice
        self._prefill_trial: tuple[_Regime, int, int] | None = None  # regime, count, tokens of the current prefill
        self.clock: Callable[[], float] = time.monotonic
        self._probe: tuple[float, bool] | None = None  # when the probe ran, and whether every core was faster
        self._probe_args: tuple[torch.Tensor, torch.Tensor] | None = None

    def start(self) -> None:
        self.counts = thread_counts()

    def describe(self) -> str:
        if self.counts is None:
            return str(torch.get_num_threads())
        return (f"{self.candidates()} (decode: timed per batch regime; prefill: timed per prompt regime, "
                f"all cores from {PARALLEL_FLOPS:.0e} FLOP)")

    def candidates(self) -> tuple[int, ...]:
        assert self.counts is not None
        return tuple(sorted(set(self.counts)))

    def choices(self) -> dict[int, int | None]:
        """Each batch regime's decided thread count so far (None: still timing)."""
        return {r: st.chosen for r, st in sorted(self._regimes.items())}

    def prefill_choices(self) -> dict[int, int | None]:
        """Each prompt regime's decided thread count so far (None: still timing)."""
        return {r: st.chosen for r, st in sorted(self._prefills.items())}

    def _for_model(self, model: object) -> None:
        if model is not self._model:
            self._model, self._regimes, self._prefills = model, {}, {}

    def _probe_seconds(self, n: int, rows: int) -> float:
        """Wall time of the probe product with `rows` rows on `n` threads."""
        if self._probe_args is None:
            g = torch.Generator().manual_seed(0)
            self._probe_args = (torch.randn(PROBE_ROWS[1], PROBE_K, generator=g),
                                torch.randn(PROBE_K, PROBE_K, generator=g))
        a, b = self._probe_args
        self._set(n)
        t = time.perf_counter()
        torch.mm(a[:rows], b)
        return time.perf_counter() - t

    def parallel_ok(self, flops: float) -> bool:
        """Whether every core runs compute-bound work `PREFILL_GAIN` faster than fewer right now, before a forward of
        `flops`: the probe's verdict, measured again once `PROBE_TTL` seconds old."""
        assert self.counts is not None
        now = self.clock()
        if self._probe is not None and now - self._probe[0] < PROBE_TTL:
            return self._probe[1]
        cands = self.candidates()
        if len(cands) == 1:
            return True
        calls = (PROBE_ROUNDS + 1) * len(cands)
        rows = int(min(max(PROBE_SHARE * flops / calls / (2 * PROBE_K * PROBE_K), PROBE_ROWS[0]), PROBE_ROWS[1]))
        times: dict[int, list[float]] = {c: [] for c in cands}
        for i in range(PROBE_ROUNDS + 1):
            for c in (cands if i % 2 == 0 else cands[::-1]):
                t = self._probe_seconds(c, rows)
                if i:  # the first round wakes the threads up
                    times[c].append(t)
        med = {c: statistics.median(t) for c, t in times.items()}
        ok = med[max(cands)] < (1 - PREFILL_GAIN) * min(med[c] for c in cands if c != max(cands))
        if self._probe is None or self._probe[1] != ok:
            log.info("compute-bound work on %d threads: %s (probe of %d rows, median %s)", max(cands),
                     "faster" if ok else "not faster: the cores are contended", rows,
                     ", ".join(f"{c} threads {t * 1e6:.0f} us" for c, t in med.items()))
        self._probe = (self.clock(), ok)
        return ok

    def _contended(self) -> bool:
        """A fresh probe verdict (none measured: not known to be contended) found every core no faster."""
        return self._probe is not None and self.clock() - self._probe[0] < PROBE_TTL and not self._probe[1]

    def _set(self, n: int) -> None:
        if n != self.now:
            torch.set_num_threads(n)
            self.now = n

    def use(self, num_parameters: int, tokens: int) -> None:
        """A forward other than a decode step or a timed prefill (the kernel timing) over `tokens` positions: every
        core when compute-bound, else the one-row decode choice when known, else all but one core."""
        if self.counts is None:
            return
        small, large = self.counts
        if 2 * num_parameters * tokens >= PARALLEL_FLOPS:
            self._set(large if self.parallel_ok(2 * num_parameters * tokens) else small)
            return
        one = self._regimes.get(1)
        self._set(one.chosen if one is not None and one.chosen is not None else small)

    def for_kernel_timing(self) -> None:
        """Before `choose_kernels` times the decode kernels of a newly loaded model: every core. The kernels rank
        differently with one thread and with two (350M on 2 cores: stored MKL 8.3 ms a pass with one thread,
        8.8 with two, where oneDNN took 6.3), and one-row decoding of the models whose kernel matters runs on
        every core, while the one-row regime has not been timed yet when the kernels are chosen."""
        if self.counts is not None:
            self._set(self.counts[1])

    def prefill(self, model: object, num_parameters: int, tokens: int) -> None:
        """Before a prefill forward over `tokens` positions of `model`: every core when compute-bound, else its
        prompt regime's choice, or the next count to time (`prefilled` records the time)."""
        self._prefill_trial = None
        if self.counts is None:
            return
        self._for_model(model)
        small, large = self.counts
        if 2 * num_parameters * tokens >= PARALLEL_FLOPS:
            self._set(large if self.parallel_ok(2 * num_parameters * tokens) else small)
            return
        st = self._prefills.setdefault(prompt_regime(tokens), _Regime())
        if st.chosen is not None and st.steps < RECHECK_PREFILLS:
            st.steps += 1
            self._set(small if self._contended() else st.chosen)
            return
        if st.chosen is not None:
            st.times, st.timed, st.chosen, st.steps = {}, 0, None, 0
        cands = self.candidates()
        n = cands[st.timed % len(cands)]
        self._prefill_trial = (st, n, max(1, tokens))
        self._set(n)

    def prefilled(self, seconds: float) -> None:
        """After the prefill forward `prefill` prepared: record its time per token while its regime is timed."""
        if self._prefill_trial is None:
            return
        st, n, tokens = self._prefill_trial
        self._prefill_trial = None
        st.times.setdefault(n, []).append(seconds / tokens)
        st.timed += 1
        cands = self.candidates()
        if st.timed >= PREFILL_TRIALS * len(cands):
            med = {c: statistics.median(st.times[c]) for c in cands}
            fewest = min(cands)
            best = min(cands, key=med.__getitem__)
            # more threads only on a clear win: three prefills per count are a small sample, and a parallel prefill
            # that loses a core to another process loses far more than a serial one
            st.chosen = best if med[best] < (1 - PREFILL_GAIN) * med[fewest] else fewest
            r = next(k for k, v in self._prefills.items() if v is st)
            log.info("prefill threads for %d-%d tokens: %d (median per token %s)", r // 8 + 1 if r > 1 else 1, r,
                     st.chosen, ", ".join(f"{c} threads {t * 1e6:.0f} us" for c, t in med.items()))

    def decode(self, model: object, rows: int) -> None:
        """Before a decode step of `rows` rows of `model`: its regime's choice, or the next count to time."""
        self._trial = None
        if self.counts is None:
            return
        self._for_model(model)
        st = self._regimes.setdefault(regime(rows), _Regime())
        if st.chosen is not None and st.steps < RECHECK_STEPS:
            st.steps += 1
            self._set(st.chosen)
            return
        if st.chosen is not None:  # re-check: time the candidates again
            st.times, st.timed, st.chosen, st.steps = {}, 0, None, 0
        cands = self.candidates()
        n = cands[(st.timed // BLOCK) % len(cands)]
        self._trial = (st, n)
        self._set(n)

    def decoded(self, seconds: float) -> None:
        """After the step `decode` prepared: record its time while its regime is being timed."""
        if self._trial is None:
            return
        st, n = self._trial
        self._trial = None
        if st.timed % BLOCK:  # not the first step of its block
            st.times.setdefault(n, []).append(seconds)
        st.timed += 1
        cands = self.candidates()
        if st.timed >= BLOCK * TRIAL_BLOCKS * len(cands):
            med = {c: statistics.median(st.times[c]) for c in cands}
            best = min(med.values())
            st.chosen = min(c for c in cands if med[c] <= best * (1 + TIE))
            log.info("decode threads for %s-row steps: %d (median step %s)", _regime_name(st, self._regimes),
                     st.chosen, ", ".join(f"{c} threads {t * 1e3:.2f} ms" for c, t in med.items()))


def _regime_name(st: _Regime, regimes: dict[int, _Regime]) -> str:
    r = next(k for k, v in regimes.items() if v is st)
    return "1" if r == 1 else f"{r // 2 + 1}-{r}"
