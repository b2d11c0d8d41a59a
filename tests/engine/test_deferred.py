"""The worker's deferred work (engine/deferred.py): run at a decode step's end while its measured cost stays within
`WRITE_SHARE` of the worker's time, held for later steps otherwise, never longer than `max_hold`."""

from __future__ import annotations

import logging

import pytest

from millm.engine.deferred import WRITE_SHARE, DeferredWork


class Clock:
    """A fake clock: steps and deferred work advance it by what they would take."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stream:
    """A stream's writes as services `WorkerWrites` defers them: each step's chunk is held, and the stream asks for one
    flush (one socket write of everything held, `write_s` of the clock) when it starts holding."""

    def __init__(self, clock: Clock, write_s: float) -> None:
        self.clock, self.write_s = clock, write_s
        self.held: list[int] = []
        self.writes: list[list[int]] = []

    def token(self, step: int, deferred: list) -> None:
        if not self.held:
            deferred.append(self.flush)
        self.held.append(step)

    def flush(self) -> None:
        if self.held:
            self.writes.append(self.held)
            self.held = []
            self.clock.now += self.write_s


def _run_steps(work: DeferredWork, clock: Clock, streams: list[Stream], *, steps: int, step_s: float) -> list[bool]:
    """`steps` decode steps of `step_s`, each giving every stream a token; whether the work ran at each step's end."""
    ran = []
    for s in range(steps):
        clock.now += step_s
        deferred: list = []
        for st in streams:
            st.token(s, deferred)
        before = work.runs
        work.step_ended(deferred)
        ran.append(work.runs > before)
    return ran


def test_cheap_work_runs_at_every_step_end():
    # one stream of a small model: a 20 us write in a 0.5 ms step is 4% of the time
    clock = Clock()
    work, streams = DeferredWork(0.010, clock=clock), [Stream(clock, 0.00002)]
    ran = _run_steps(work, clock, streams, steps=6, step_s=0.0005)
    assert ran == [True] * 6
    assert streams[0].writes == [[s] for s in range(6)]
    assert work.held == 0


def test_work_costlier_than_its_share_waits_for_later_steps():
    # eight streams: eight 20 us writes (160 us) a 1 ms step; 5% of the time allows them once 3.2 ms have passed
    clock = Clock()
    work, streams = DeferredWork(0.010, clock=clock), [Stream(clock, 0.00002) for _ in range(8)]
    ran = _run_steps(work, clock, streams, steps=9, step_s=0.001)
    # the first step's work runs (its cost is not known yet), then every fourth step's end
    assert 8 * 0.00002 > WRITE_SHARE * 0.003 and 8 * 0.00002 <= WRITE_SHARE * 0.004
    assert ran == [True, False, False, False, True, False, False, False, True]
    for st in streams:  # each stream's tokens in order, four to a write
        assert st.writes == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert work.held == 6 and len(work) == 0


def test_nothing_waits_longer_than_max_hold():
    # writes so costly (2 ms each) that the share alone would hold them 0.3 s: they go out once the oldest has waited
    # max_hold (10 ms: deferred at step 1's end, waiting 3, 6, 9, then 12 ms at the ends of steps 2-5)
    clock = Clock()
    work, streams = DeferredWork(0.010, clock=clock), [Stream(clock, 0.002) for _ in range(8)]
    ran = _run_steps(work, clock, streams, steps=10, step_s=0.003)
    assert ran == [True, False, False, False, False, True, False, False, False, False]
    assert streams[0].writes == [[0], [1, 2, 3, 4, 5]]
    assert len(work) == 8


def test_max_hold_zero_runs_every_step():
    clock = Clock()
    work, streams = DeferredWork(0.0, clock=clock), [Stream(clock, 0.0001) for _ in range(8)]
    assert _run_steps(work, clock, streams, steps=5, step_s=0.001) == [True] * 5


def test_run_takes_everything_waiting_and_a_raising_callable_does_not_stop_the_others(caplog):
    clock = Clock()
    work, streams = DeferredWork(0.010, clock=clock), [Stream(clock, 0.00002) for _ in range(8)]
    _run_steps(work, clock, streams, steps=2, step_s=0.001)
    assert len(work) == 8  # the second step's writes wait

    def broken() -> None:
        raise RuntimeError("the consumer's bug")

    work.step_ended([broken])
    assert len(work) == 9
    with caplog.at_level(logging.ERROR):
        work.run()  # (what the worker does before anything but a decode step)
    assert len(work) == 0
    assert all(st.writes == [[0], [1]] for st in streams)
    assert "work a sink deferred to the end of the step raised" in caplog.text
    work.run()  # nothing waiting: nothing to do
    assert work.runs == 2


@pytest.mark.parametrize("idle_s", [0.0005, 0.05])
def test_the_time_since_the_last_run_counts_idle_time_too(idle_s):
    # after the worker idled (or prefilled) long enough, the next step's work goes out at once, costly or not
    clock = Clock()
    work, streams = DeferredWork(0.010, clock=clock), [Stream(clock, 0.00002) for _ in range(8)]
    _run_steps(work, clock, streams, steps=1, step_s=0.001)
    clock.now += idle_s
    assert _run_steps(work, clock, streams, steps=1, step_s=0.001) == [idle_s > 0.002]
