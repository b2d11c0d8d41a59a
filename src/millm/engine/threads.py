"""How many torch threads the generation thread uses for each forward: decode steps by measurement, prefill by size.

Decode steps: for the loaded model and each batch-size regime (1, 2, 3-4, 5-8, 9-16, ... rows), the policy
times real decode steps (`Worker._step`, forward, sampling and emitting included) with each candidate thread
count in alternating blocks of `BLOCK` steps (`TRIAL_BLOCKS` each; the first step of a block pays
for the switch and is dropped), and keeps the faster by median; within `TIE` it keeps the smaller
count, which leaves a core to the event loop (HTTP, SSE framing, detokenizing). When the step may call more than
one matrix-vector kernel on the weights' layout (MKL or oneDNN; engine/weight_layout.py), each count is timed with
each kernel, and the pair is kept: the product timing made when the model loads ranks the kernels from isolated
products on an otherwise idle worker, while the real steps run beside the event loop, sampling and whatever else
shares the cores, and a oneDNN step on two threads suffered far more from a busy core than an MKL one (350M,
loaded: 1.9-2.1x MKL's step). A regime is decided once and re-checked after `RECHECK_STEPS` further steps in it
(the machine's load may have changed); a new model starts over. Three guards for a changing load: a regime decided
on more than the fewest threads is timed again as soon as the median of its last `WATCH_STEPS` steps reaches
`WATCH_SLOWDOWN` times the decision's (a parallel step collapses when another process takes a core; a prompt regime
likewise after `WATCH_PREFILLS` prefills, per token, which then falls back to the fewest threads until its re-check);
any decided regime is timed again when that median is `WATCH_SPEEDUP` times faster than the decision's (the load it
was decided under has gone); and within a trial a candidate whose timed step takes `DROP_SLOWER` times another's
median is not timed further (a prefill trial whose larger count is that far behind decides for the fewest threads
at once). This replaces a fixed parameter threshold: on the 2-core benchmark machine one thread was best for the 2M
demo and two for a 350M model, with the crossover depending on family, batch size and load.

Prefill: a forward doing at least `TIMED_PREFILL_FLOPS` (2 x parameters x tokens: 1,000 tokens of a 25M model,
about 70 of a 350M one) uses every core: on the idle benchmark machine such prefills ran 1.3-1.8x faster there, and a
trial on the slower count would cost seconds. (Two ways of sometimes keeping it on fewer cores were measured and dropped. Inferred from the decode timing,
which found two threads 1.5x slower than one: on a small model one thread can decode faster with no contention at
all, and Gemma-2 then prefilled 1,000 tokens on one thread, 1.3-1.6x slower. Measured by a compute-bound probe
(a small matrix product timed on each count just before the prefill): on the idle benchmark machine the probe,
run while the event loop was still handling the request, found two threads up to 13x slower than one, and the
1,000-token prefills of the sweep took 1.3-1.8x longer than on every core; see docs/benchmarks-notes.md.)
Smaller prefills are timed like decode steps, compute-bound or not (until the sixth session only those under
`PARALLEL_FLOPS` were: with the cores contended a 32-token prefill on two threads took 16-25x one thread's, 1.2 s
against 48 ms at 25M and 2.8 s against 169 ms at 100M, while idle two threads win from about 25M up), per prompt regime (1-8, 9-64, 65-512, ... tokens in the forward):
after one untimed prefill (a new server's first prefills are slow: the demo's first 64-token requests on the idle
benchmark machine had TTFTs of 29, 27, 18, 10 and 8 ms), the next `PREFILL_TRIALS` prefills per candidate take the
counts in A B B A order, each timed per token, and more threads are kept only when `PREFILL_GAIN` faster by median
and when that saves at least `PREFILL_MIN_SAVING` (1 ms) on the regime's median prefill (re-checked after
`RECHECK_PREFILLS` more). The trial times the forward, not the helper thread's wake-up nor the core it takes from
the event loop, which is answering the same request: the demo's 32-64-token prefills timed 17% faster on two threads
(48 against 58 us a token, 0.3-0.6 ms a prefill), yet served after `settle` a 32-token request's first token took
6.9-10.6 ms with them against 3.7-4.1 ms on one thread, and one 64-token stream ran 5-15% slower. Plain
alternation timed one thread first in every pair, so a warming server favoured two: the demo took two threads for
9-64 tokens (344 against 208 us per token) and one for 65-512 (102 against 198 us) in the same run. With A B B A and
medians of three a steady trend leans, if at all, to the fewer threads, as `PREFILL_GAIN` does. A fixed threshold
got this wrong: on the 2-core machine a 32-token prefill of a 25M model (1.8 GFLOP, under the threshold) ran on one
thread in 27 ms where two took 22 ms, while one thread still decoded it best. Other forwards (`use`) take the decode
choice for one row when it is known, else all but one core, and every core when compute-bound (as a prefill).

OpenMP thread counts are per thread, so the policy affects only the generation thread that applies it.
"""

from __future__ import annotations

import collections
import logging
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

PARALLEL_FLOPS = 2e9  # other forwards (`use`) at or above this take every core
TIMED_PREFILL_FLOPS = 5e10  # prefills under this are timed per thread count; larger ones take every core
BLOCK = 3  # a candidate is timed over this many steps in a row; the first of each block is dropped (switch cost)
TRIAL_BLOCKS = 2  # blocks per candidate, alternating, before deciding a regime
RECHECK_STEPS = 4096  # steps in a regime after which it is timed again
TIE = 0.03  # within this fraction, the smaller thread count wins
PREFILL_TRIALS = 3  # timed prefills per candidate in a prompt regime before deciding it
RECHECK_PREFILLS = 64  # prefills in a prompt regime after which it is timed again
PREFILL_GAIN = 0.1  # more threads for a small prefill only when this much faster per token than fewer
PREFILL_MIN_SAVING = 1e-3  # ... and when that saves at least this many seconds on the regime's median prefill
WATCH_STEPS = 16  # a decided regime's last this many steps are watched (their median checked every this many steps)
WATCH_SLOWDOWN = 2.0  # decided on more than the fewest threads: when that median is this many times the decision's
WATCH_SPEEDUP = 1.4  # any decided regime: when the decision's median is this many times that median
WATCH_PREFILLS = 3  # a prompt regime decided on more than the fewest threads: its last this many prefills are watched
DROP_SLOWER = 4.0  # a decode candidate whose timed step takes this many times another's median is not timed further


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


def prefill_decided(tokens: int) -> str:
    """How the log opens the thread decision for the prefill regime of `tokens` positions ("prefill threads for 9-64
    tokens:"); benchmarks/sweep.py waits for this line before measuring."""
    r = prompt_regime(tokens)
    return f"prefill threads for {r // 8 + 1 if r > 1 else 1}-{r} tokens:"


def decode_decided(rows: int) -> str:
    """How the log opens the thread decision for the decode regime of `rows` rows ("decode threads for 5-8-row
    steps:"); benchmarks/sweep.py waits for this line before measuring."""
    r = regime(rows)
    return f"decode threads for {'1' if r == 1 else f'{r // 2 + 1}-{r}'}-row steps:"


def prefill_timed(num_parameters: int, tokens: int) -> bool:
    """Whether the policy times a prefill over `tokens` positions per thread count (else it takes every core)."""
    return 2 * num_parameters * tokens < TIMED_PREFILL_FLOPS


@dataclass
class _Regime:
    times: dict[Any, list[float]] = field(default_factory=dict)  # per candidate: a thread count, or (count, kernel)
    timed: int = 0  # trial steps so far
    chosen: int | None = None  # thread count
    steps: int = 0  # steps since decided
    warmed: bool = False  # (prompt regimes) its first, untimed prefill ran
    tokens: list[int] = field(default_factory=list)  # (prompt regimes) the timed prefills' positions
    kernels: tuple[str, ...] = ("",)  # decode: the kernels timed (engine/weight_layout.py), and the one chosen
    kernel: int = 0
    decided_s: float = 0.0  # the chosen candidate's median when decided: a decode step, or a prefill per token
    dropped: set[Any] = field(default_factory=set)  # decode: candidates left out of the rest of this trial
    recent: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=WATCH_STEPS))  # (watched: see `decoded`, `prefilled`)
    forced: bool = False  # decode: timed again by the watch, before `RECHECK_STEPS`
    faster_once: bool = False  # decode: timed again once already because its steps ran faster (until its re-check)


class ThreadPolicy:
    """The generation thread's torch thread count, switched only when it changes. `counts` is (small, large),
    or None to leave torch's setting alone; set it on the thread that runs the forwards (`start()`).

    Per decode step: `decode(model, rows)` before, `decoded(seconds)` after (the step's wall time)."""

    def __init__(self) -> None:
        self.counts: tuple[int, int] | None = None
        self.now = 0
        self._model: object | None = None
        self._regimes: dict[int, _Regime] = {}
        self._trial: tuple[_Regime, tuple[int, int]] | None = None  # the regime, count and kernel the step is timing
        self._watch: _Regime | None = None  # the decided regime on more than the fewest threads the step runs in
        self._prefills: dict[int, _Regime] = {}  # prompt regime -> its timing (per token) and choice
        self._prefill_trial: tuple[_Regime, int, int] | None = None  # regime, count, tokens of the current prefill
        self._prefill_watch: tuple[_Regime, int] | None = None  # the decided regime (on more threads) and tokens

    def start(self) -> None:
        self.counts = thread_counts()

    def describe(self) -> str:
        if self.counts is None:
            return str(torch.get_num_threads())
        return (f"{self.candidates()} (decode: timed per batch regime; prefill: timed per prompt regime, "
                f"all cores from {TIMED_PREFILL_FLOPS:.0e} FLOP)")

    def candidates(self) -> tuple[int, ...]:
        assert self.counts is not None
        return tuple(sorted(set(self.counts)))

    def choices(self) -> dict[int, int | None]:
        """Each batch regime's decided thread count so far (None: still timing)."""
        return {r: st.chosen for r, st in sorted(self._regimes.items())}

    def kernel_choices(self) -> dict[int, str | None]:
        """Each batch regime's decided decode kernel so far (None: still timing; "" when there was one candidate)."""
        return {r: st.kernels[st.kernel] if st.chosen is not None else None for r, st in sorted(self._regimes.items())}

    def prefill_choices(self) -> dict[int, int | None]:
        """Each prompt regime's decided thread count so far (None: still timing)."""
        return {r: st.chosen for r, st in sorted(self._prefills.items())}

    def _for_model(self, model: object) -> None:
        if model is not self._model:
            self._model, self._regimes, self._prefills = model, {}, {}

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
            self._set(large)
            return
        one = self._regimes.get(1)
        self._set(one.chosen if one is not None and one.chosen is not None else small)

    def for_kernel_timing(self) -> None:
        """Before `choose_kernels` times the decode and prefill kernels of a newly loaded model: every core. The kernels rank
        differently with one thread and with two (350M on 2 cores: stored MKL 8.3 ms a pass with one thread,
        8.8 with two, where oneDNN took 6.3), and one-row decoding of the models whose kernel matters runs on
        every core, while the one-row regime has not been timed yet when the kernels are chosen."""
        if self.counts is not None:
            self._set(self.counts[1])

    def prefill(self, model: object, num_parameters: int, tokens: int) -> None:
        """Before a prefill forward over `tokens` positions of `model`: every core when compute-bound, else its
        prompt regime's choice, or the next count to time (`prefilled` records the time)."""
        self._prefill_trial = self._prefill_watch = None
        if self.counts is None:
            return
        self._for_model(model)
        if not prefill_timed(num_parameters, tokens):
            self._set(self.counts[1])
            return
        st = self._prefills.setdefault(prompt_regime(tokens), _Regime())
        if st.chosen is not None and st.steps < RECHECK_PREFILLS:
            st.steps += 1
            self._set(st.chosen)
            if st.chosen > min(self.candidates()):
                self._prefill_watch = (st, max(1, tokens))
            return
        if st.chosen is not None:
            st.times, st.timed, st.chosen, st.steps, st.tokens = {}, 0, None, 0, []
            st.recent.clear()
        cands = self.candidates()
        if not st.warmed:  # cold: not timed
            st.warmed = True
            self._set(cands[0])
            return
        k = st.timed % len(cands)
        n = cands[k if (st.timed // len(cands)) % 2 == 0 else len(cands) - 1 - k]  # A B B A ...
        self._prefill_trial = (st, n, max(1, tokens))
        self._set(n)

    def prefilled(self, seconds: float) -> None:
        """After the prefill forward `prefill` prepared: record its time per token while its regime is timed. A regime
        decided on more than the fewest threads is watched as a decode regime is (`decoded`): its choice was timed on
        the prefills of that moment (a lone request's, with the event loop idle), and a parallel prefill collapses when
        another thread takes a core (the demo's 9-64-token regime, decided on two threads at 99 against 127 us a token:
        the first request of a burst of eight, prefilled while the event loop handled the other seven, took 13-84 ms
        instead of about 5). When the median per token of its last `WATCH_PREFILLS` prefills reaches
        `WATCH_SLOWDOWN` times the decision's, the regime falls back to the fewest threads until its next re-check
        (`RECHECK_PREFILLS` prefills later). Timing it again at once, as a decode regime is, chose two threads again
        on the next lone prompts and slowed again at the next burst: the idle run after the ninth session's merges
        logged four such rounds for the demo's 9-64-token regime in one section, each a six-prefill trial."""
        watched = self._prefill_watch
        if watched is not None:
            self._prefill_watch = None
            st, tokens = watched
            st.recent.append(seconds / tokens)
            recent = list(st.recent)[-WATCH_PREFILLS:]
            if len(recent) == WATCH_PREFILLS and statistics.median(recent) >= WATCH_SLOWDOWN * st.decided_s:
                r = next(k for k, v in self._prefills.items() if v is st)
                fewest = min(self.candidates())
                log.info("%s slowed: %d threads now take %.0f us a token (median of the last %d; %.0f us when "
                         "decided); %d until the next re-check", prefill_decided(r).removesuffix(":"), st.chosen,
                         statistics.median(recent) * 1e6, WATCH_PREFILLS, st.decided_s * 1e6, fewest)
                st.chosen, st.steps = fewest, 0
                st.recent.clear()
            return
        if self._prefill_trial is None:
            return
        st, n, tokens = self._prefill_trial
        self._prefill_trial = None
        st.times.setdefault(n, []).append(seconds / tokens)
        st.tokens.append(tokens)
        st.timed += 1
        cands = self.candidates()
        # more threads far behind the fewest decide for the fewest at once (as a decode candidate is dropped): under
        # load a two-thread prefill of llama-2m's eight 64-token prompts took 18 ms a token against 0.5 on one thread,
        # 9 s a trial. (Not the other way round: one slow serial prefill does not buy more threads before the median.)
        meds = {c: statistics.median(t) for c, t in st.times.items() if t}
        fewest = min(cands)
        behind = fewest in meds and any(m >= DROP_SLOWER * meds[fewest] for c, m in meds.items() if c != fewest)
        if behind or st.timed >= PREFILL_TRIALS * len(cands):
            med = {c: statistics.median(st.times[c]) for c in cands if st.times.get(c)}
            fewest = min(med)
            best = min(med, key=med.__getitem__)
            # more threads only on a clear win: three prefills per count are a small sample, and a parallel prefill
            # that loses a core to another process loses far more than a serial one; and only when the win is worth
            # what the trial does not see (`PREFILL_MIN_SAVING`: the helper thread's wake-up and the core it takes
            # from the event loop, which is answering the same request)
            saving = (med[fewest] - med[best]) * statistics.median(st.tokens)
            clear = med[best] < (1 - PREFILL_GAIN) * med[fewest] and saving >= PREFILL_MIN_SAVING
            st.chosen = best if clear else fewest
            st.decided_s = med[st.chosen]
            st.recent.clear()
            r = next(k for k, v in self._prefills.items() if v is st)
            gain = f"; {best} threads save {saving * 1e3:.2f} ms a prefill" if best != fewest else ""
            log.info("%s %d (median per token %s%s)", prefill_decided(r), st.chosen,
                     ", ".join(f"{c} threads {t * 1e6:.0f} us" for c, t in med.items()), gain)

    def decode(self, model: object, rows: int, kernels: tuple[str, ...] = ("",)) -> int:
        """Before a decode step of `rows` rows of `model`: its regime's choice, or the next candidate to time. With
        several `kernels` (the matrix-vector kernels the step may call, the product timing's pick first; see
        engine/weight_layout.py) each thread count is timed with each kernel; returns the index of the kernel to
        use."""
        self._trial = self._watch = None
        if self.counts is None:
            return 0
        self._for_model(model)
        st = self._regimes.setdefault(regime(rows), _Regime())
        if st.chosen is not None and st.steps < RECHECK_STEPS:
            st.steps += 1
            self._set(st.chosen)
            self._watch = st
            return st.kernel
        if st.chosen is not None:  # re-check: time the candidates again
            st.times, st.timed, st.chosen, st.steps = {}, 0, None, 0
            st.recent.clear()
            st.dropped = set()
            if not st.forced:
                st.faster_once = False
            st.forced = False
        st.kernels = kernels
        cands = self._options(kernels)
        while cands[(st.timed // BLOCK) % len(cands)] in st.dropped:  # skip a dropped candidate's block
            st.timed = (st.timed // BLOCK + 1) * BLOCK
        n, k = cands[(st.timed // BLOCK) % len(cands)]
        self._trial = (st, (n, k))
        self._set(n)
        return k

    def _options(self, kernels: tuple[str, ...]) -> list[tuple[int, int]]:
        """(thread count, kernel index) candidates, in the order they are timed: each count with the product timing's
        kernel, then with the next kernel. (On a near tie the fewer threads win, then the earlier kernel.)"""
        return [(n, k) for k in range(len(kernels)) for n in self.candidates()]

    def decoded(self, seconds: float) -> None:
        """After the step `decode` prepared: record its time while its regime is being timed. A regime decided on more
        than the fewest threads is watched: a parallel step whose threads are not all scheduled waits for the missing
        one, so when another process takes a core after the decision, its steps can take many times the timed ones
        (llama-2m's 5-8-row steps on two threads went from 3.3 ms in the trial to tens of ms a step, under load,
        while one thread would have taken about 4); when the median of its last `WATCH_STEPS` steps reaches
        `WATCH_SLOWDOWN` times the decision's median, the regime is timed again at its next step, instead of after
        `RECHECK_STEPS` more steps.

        Any decided regime is also timed again when its steps run `WATCH_SPEEDUP` times faster than the decision's
        median: the load it was decided under has gone, and what it chose there may be the slower choice now. (Seen
        on the idle benchmark machine: a burst of host load slowed the demo's 5-8-row steps on two threads from 1.07 to
        2.43 ms; timed again, the slow steps chose the other kernel, whose steps then ran at 1.35 ms against 1.07, for
        the rest of the run: concurrency 8 2.77x one stream against 3.37-3.46x in the next runs.) The median is
        checked every `WATCH_STEPS` steps; a regime is timed again for this once until its next re-check (should the
        trial's steps run slower than the steady ones for a reason of their own, they would not start trial after
        trial)."""
        watched = self._watch
        if watched is not None:
            self._watch = None
            watched.recent.append(seconds)
            if len(watched.recent) < WATCH_STEPS or watched.steps % WATCH_STEPS:
                return
            median = statistics.median(watched.recent)
            if watched.chosen is not None and watched.chosen > min(self.candidates()) and (
                    median >= WATCH_SLOWDOWN * watched.decided_s):
                change = "slowed"
            elif median * WATCH_SPEEDUP <= watched.decided_s and not watched.faster_once:
                change, watched.faster_once = "sped up", True
            else:
                return
            r = next(k for k, v in self._regimes.items() if v is watched)
            log.info("%s %s: %d threads now take %.2f ms a step (median of the last %d; %.2f ms when decided); "
                     "timing again", decode_decided(r).removesuffix(":"), change, watched.chosen, median * 1e3,
                     WATCH_STEPS, watched.decided_s * 1e3)
            watched.steps, watched.forced = RECHECK_STEPS, True
            return
        if self._trial is None:
            return
        st, cand = self._trial
        self._trial = None
        if st.timed % BLOCK:  # not the first step of its block
            st.times.setdefault(cand, []).append(seconds)
            # A candidate far behind another is not timed further: under load a two-thread step can take 100x a
            # one-thread one (llama-2m, 5-8 rows: 954 and 1,778 ms against 30 ms), and the trial's remaining blocks
            # on it would stall every running request for seconds; one such step already decides against it. (Only
            # against a candidate on as few threads or fewer: one slow serial step does not buy more threads.)
            others = [statistics.median(t) for c, t in st.times.items()
                      if c != cand and c not in st.dropped and c[0] <= cand[0]]
            if others and seconds >= DROP_SLOWER * min(others):
                st.dropped.add(cand)
        st.timed += 1
        cands = self._options(st.kernels)
        while st.timed < BLOCK * TRIAL_BLOCKS * len(cands) and st.timed % BLOCK == 0 and (
                cands[(st.timed // BLOCK) % len(cands)] in st.dropped):
            st.timed += BLOCK  # (so that a trial whose last blocks are all dropped ends here)
        if st.timed >= BLOCK * TRIAL_BLOCKS * len(cands):
            med = {c: statistics.median(st.times[c]) for c in cands}
            kept = [c for c in sorted(cands) if c not in st.dropped]  # (never empty: the last one is never dropped)
            best = min(med[c] for c in kept)
            st.chosen, st.kernel = next(c for c in kept if med[c] <= best * (1 + TIE))
            st.decided_s = med[(st.chosen, st.kernel)]
            st.recent.clear()
            names = len(st.kernels) > 1
            r = next(k for k, v in self._regimes.items() if v is st)
            log.info("%s %d%s (median step %s)", decode_decided(r),
                     st.chosen, f", kernel {st.kernels[st.kernel]}" if names else "",
                     ", ".join(f"{n} threads{' ' + st.kernels[k] if names else ''} {t * 1e3:.2f} ms"
                               for (n, k), t in med.items()))

