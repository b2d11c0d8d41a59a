"""Work that sinks defer to the end of decode steps (`Worker.defer`): their streams' socket writes.

A streamed token's chunk costs the worker one socket write (15-25 us on loopback, measured in `serve_ab`), however
small the chunk, while the step it came from is shared by every row of the batch. So the writes weigh more the more
rows there are and the faster the step: eight streams of the 2M demo model write eight times in a 1.3 ms step (about
12% of it), one stream once in a 0.5 ms step (about 4%), eight streams of a 350M model eight times in a 50 ms step.

`DeferredWork` keeps the worker's share of time in that work bounded. The work deferred during a step runs at the
step's end when its cost (the last runs' cost per callable, measured, times the callables waiting) is at most
`WRITE_SHARE` of the time since the work last ran; otherwise it waits for a later step's end, where the deferrers'
own bookkeeping (services `WorkerWrites`) adds the next chunks to the same write. Nothing waits longer than `max_hold`
(`Settings.stream_hold_ms`; 0: every step's work runs at its end), and the worker runs what waits before anything but
a decode step (`run`): admitting requests, calls, going idle. A stream's other events (its finish, an error) never
wait: they write what is held first.

Measured on the demo model (twelfth session, docs/benchmarks-notes.md; servers with `--stream-hold-ms 0` and the
default alternated, three runs of five or six starts each): eight streams 5-11% more tokens a second, one stream
1-10% more, concurrency 8 against one 3.73x/3.71x/3.47x against 3.55x/3.47x/3.35x."""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger(__name__)

WRITE_SHARE = 0.05  # the share of the worker's time its deferred work may take before it waits for later steps
MAX_HOLD = 0.010  # seconds, the default longest wait (Settings.stream_hold_ms)
COST_WEIGHT = 0.25  # weight of the latest run in the per-callable cost (an exponential average)


class DeferredWork:
    """The worker thread's deferred work (one instance per worker, used on its thread only). `clock`: seconds, for
    tests (time.perf_counter)."""

    def __init__(self, max_hold: float, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_hold = max_hold  # seconds the oldest work may wait; 0: run at every step's end
        self._clock = clock
        self._work: list[Callable[[], None]] = []
        self._since = 0.0  # when the oldest waiting work was deferred (its step's end)
        self._last = 0.0  # when the work last ran (its end)
        self._cost = 0.0  # seconds per callable over the last runs (none yet: the first work runs at once)
        self.runs = 0
        self.held = 0  # step ends at which work waited

    def __len__(self) -> int:
        return len(self._work)

    def step_ended(self, work: list[Callable[[], None]]) -> float:
        """A decode step's events are all out: add the work deferred during it and run everything waiting if due.
        Returns the seconds spent running it (0.0 when it waits)."""
        if not work and not self._work:
            return 0.0
        now = self._clock()
        if not self._work:
            self._since = now
        self._work.extend(work)
        if (self.max_hold <= 0 or now - self._since >= self.max_hold
                or len(self._work) * self._cost <= WRITE_SHARE * (now - self._last)):
            return self.run()
        self.held += 1
        return 0.0

    def run(self) -> float:
        """Run everything waiting, in the order deferred (a callable that raises is logged, and the others still run);
        the seconds it took."""
        work, self._work = self._work, []
        if not work:
            return 0.0
        start = self._clock()
        for fn in work:
            try:
                fn()
            except Exception:  # noqa: BLE001 - the consumer's bug: the other rows' work still goes out
                log.exception("work a sink deferred to the end of the step raised")
        self._last = self._clock()
        cost = (self._last - start) / len(work)
        self._cost = cost if not self.runs else self._cost + COST_WEIGHT * (cost - self._cost)
        self.runs += 1
        return self._last - start
