"""The decode thread count is chosen by timing steps per batch regime (engine/threads.py), not by model size."""

from __future__ import annotations

import pytest
import torch

from millm.engine import threads
from millm.engine.threads import (
    BLOCK,
    PREFILL_TRIALS,
    RECHECK_PREFILLS,
    RECHECK_STEPS,
    TRIAL_BLOCKS,
    ThreadPolicy,
    prompt_regime,
    regime,
)


@pytest.fixture
def policy(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(threads.torch, "set_num_threads", calls.append)
    p = ThreadPolicy()
    p.counts = (1, 2)
    p.calls = calls  # type: ignore[attr-defined]
    yield p


def _run(p: ThreadPolicy, model: object, rows: int, step_ms: dict[int, float], steps: int) -> list[int]:
    """`steps` decode steps, each taking step_ms[thread count]; returns the counts they ran with."""
    used = []
    for _ in range(steps):
        p.decode(model, rows)
        used.append(p.now)
        p.decoded(step_ms[p.now] / 1e3)
    return used


TRIAL = BLOCK * TRIAL_BLOCKS * 2


def test_regimes_are_powers_of_two():
    assert [regime(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 32]


@pytest.mark.parametrize("fast,want", [(1, 1), (2, 2)])
def test_the_faster_count_wins_after_alternating_blocks(policy, fast, want):
    ms = {1: 10.0, 2: 10.0}
    ms[3 - fast] = 14.0
    used = _run(policy, "m", 1, ms, TRIAL + 20)
    trial = used[:TRIAL]
    assert trial.count(1) == trial.count(2) == TRIAL // 2
    assert trial[:BLOCK] == [1] * BLOCK and trial[BLOCK:2 * BLOCK] == [2] * BLOCK  # blocks alternate
    assert set(used[TRIAL:]) == {want}
    assert policy.choices() == {1: want}


def test_a_near_tie_keeps_the_smaller_count(policy):
    used = _run(policy, "m", 1, {1: 10.0, 2: 9.9}, TRIAL + 5)
    assert set(used[TRIAL:]) == {1}


def test_the_first_step_of_a_block_is_not_counted(policy):
    # a step right after a switch is slow for either count; only the later steps of a block decide
    p, used = policy, []
    for _ in range(TRIAL):
        p.decode("m", 1)
        first = p._regimes[1].timed % BLOCK == 0
        used.append(p.now)
        p.decoded(1.0 if first else {1: 0.010, 2: 0.020}[p.now])
    assert p.choices() == {1: 1}


def test_each_batch_regime_is_timed_on_its_own_and_kept(policy):
    _run(policy, "m", 1, {1: 10.0, 2: 20.0}, TRIAL)
    used = _run(policy, "m", 8, {1: 30.0, 2: 18.0}, TRIAL + 3)
    assert set(used[TRIAL:]) == {2}
    assert policy.choices() == {1: 1, 8: 2}
    assert set(_run(policy, "m", 1, {1: 10.0, 2: 20.0}, 5)) == {1}  # back to one row: no new trial
    assert set(_run(policy, "m", 6, {1: 99.0, 2: 1.0}, 3)) == {2}  # 5-8 rows share a regime


def test_a_regime_is_rechecked_and_a_new_model_starts_over(policy):
    _run(policy, "m", 1, {1: 10.0, 2: 20.0}, TRIAL)
    used = _run(policy, "m", 1, {1: 30.0, 2: 10.0}, RECHECK_STEPS + TRIAL + 2)
    assert set(used[:RECHECK_STEPS]) == {1}
    assert set(used[-2:]) == {2}  # the load changed; the re-check saw it
    _run(policy, "other", 1, {1: 10.0, 2: 20.0}, 1)
    assert policy.choices() == {1: None}


def test_prefill_uses_all_cores_when_compute_bound_else_the_one_row_choice(policy):
    policy.use(100_000_000, 64)  # 12.8 GFLOP
    assert policy.now == 2
    policy.use(1_000_000, 8)
    assert policy.now == 1  # nothing decided yet: all but one core
    _run(policy, "m", 1, {1: 20.0, 2: 10.0}, TRIAL)
    policy.use(1_000_000, 8)
    assert policy.now == 2


def test_a_users_thread_setting_stands(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    p = ThreadPolicy()
    p.start()
    before = torch.get_num_threads()
    p.decode("m", 1)
    p.decoded(0.01)
    p.use(10**9, 1000)
    assert p.counts is None and torch.get_num_threads() == before


def test_a_slow_parallel_decode_does_not_keep_a_large_prefill_off_the_cores(policy):
    # a small model decodes 4x faster on one thread with no contention at all (issue #18: Gemma-2 then prefilled
    # 1,000 tokens on one thread): a compute-bound prefill takes every core
    _run(policy, "m", 1, {1: 10.0, 2: 40.0}, TRIAL)
    assert policy.choices() == {1: 1}
    policy.prefill("m", 25_000_000, 1000)
    assert policy.now == 2


def _prefills(p: ThreadPolicy, model: object, params: int, tokens: int, us_per_token: dict[int, float],
              n: int) -> list[int]:
    """`n` prefills of `tokens` positions, each taking us_per_token[thread count] per token; the counts used."""
    used = []
    for _ in range(n):
        p.prefill(model, params, tokens)
        used.append(p.now)
        p.prefilled(us_per_token[p.now] * tokens / 1e6)
    return used


def test_prompt_regimes_are_powers_of_eight():
    assert [prompt_regime(n) for n in (1, 2, 8, 9, 32, 64, 65, 512, 513)] == [1, 8, 8, 64, 64, 64, 512, 512, 4096]


@pytest.mark.parametrize("fast", [1, 2])
def test_small_prefills_are_timed_per_prompt_regime_not_by_a_threshold(policy, fast):
    # a 32-token prefill of a 25M model is under PARALLEL_FLOPS; which count is faster is measured
    us = {1: 800.0, 2: 800.0}
    us[3 - fast] = 1200.0
    trials = PREFILL_TRIALS * 2
    used = _prefills(policy, "m", 25_000_000, 32, us, 1)
    assert policy._prefills[64].timed == 0  # the first prefill (cold) is not timed
    used += _prefills(policy, "m", 25_000_000, 32, us, trials + 4)
    assert used[1:5] == [1, 2, 2, 1]  # A B B A: a warming trend no longer favours the second count
    assert used[1:1 + trials].count(1) == used[1:1 + trials].count(2) == PREFILL_TRIALS
    assert set(used[1 + trials:]) == {fast}
    assert policy.prefill_choices() == {64: fast}
    # 9-64 tokens share the regime, timed per token: a 36-token prompt takes the same choice without a new trial
    assert set(_prefills(policy, "m", 25_000_000, 36, us, 2)) == {fast}
    # the decode choice is separate: one-row steps are still timed on their own
    assert policy.choices() == {}


def test_a_prefill_regime_is_rechecked_and_a_new_model_starts_over(policy):
    trials = PREFILL_TRIALS * 2
    _prefills(policy, "m", 25_000_000, 32, {1: 500.0, 2: 900.0}, 1 + trials)
    used = _prefills(policy, "m", 25_000_000, 32, {1: 900.0, 2: 500.0}, RECHECK_PREFILLS + trials + 1)
    assert set(used[:RECHECK_PREFILLS]) == {1}
    assert used[-1] == 2
    _prefills(policy, "other", 25_000_000, 32, {1: 1.0, 2: 1.0}, 1)
    assert policy.prefill_choices() == {64: None}


def test_long_compute_bound_prefills_are_not_timed(policy):
    # (200 GFLOP: a trial on the slower count would cost seconds; idle, every core was 1.3-1.8x faster there)
    assert set(_prefills(policy, "m", 100_000_000, 1000, {1: 1.0, 2: 99.0}, 8)) == {2}
    assert policy.prefill_choices() == {}


@pytest.mark.parametrize("us,chosen", [({1: 5000.0, 2: 3500.0}, 2), ({1: 5300.0, 2: 86_000.0}, 1)],
                         ids=["idle: two threads faster", "contended: two threads 16x slower"])
def test_short_compute_bound_prefills_are_timed_too(policy, us, chosen):
    # issue #18: a 32-token prefill of a 100M model (6.4 GFLOP) took every core by a FLOP threshold; with the cores
    # contended two threads took 16x one thread's time (2.8 s against 169 ms, measured on the 2-core machine)
    assert threads.prefill_timed(100_000_000, 32) and not threads.prefill_timed(100_000_000, 1000)
    trials = 1 + PREFILL_TRIALS * 2
    used = _prefills(policy, "m", 100_000_000, 32, us, trials + 3)
    assert set(used[:trials]) == {1, 2}
    assert policy.prefill_choices() == {64: chosen}
    assert set(used[trials:]) == {chosen}


def test_a_small_prefill_takes_more_threads_only_on_a_clear_win(policy):
    trials = 1 + PREFILL_TRIALS * 2  # (the first, cold prefill is not timed)
    used = _prefills(policy, "m", 25_000_000, 32, {1: 1000.0, 2: 950.0}, trials + 2)  # 5% faster: not enough
    assert set(used[trials:]) == {1}
    policy._prefills.clear()
    used = _prefills(policy, "m", 25_000_000, 32, {1: 1000.0, 2: 500.0}, trials + 2)
    assert set(used[trials:]) == {2}
    assert policy.prefill_choices() == {64: 2}


def test_a_faster_parallel_prefill_must_also_save_enough_time(policy):
    # issue #18: the demo's 32-64-token prefills timed 48 us a token on two threads against 58 on one (17% faster),
    # about 0.3-0.6 ms a prefill; served after `settle`, a 32-token request's first token then took 6.9-10.6 ms
    # against 3.7-4.1 on one thread, and one 64-token stream ran 5-15% slower (the helper's wake-up, and the core it
    # takes from the event loop answering the same request, which the per-token trial does not see)
    trials = 1 + PREFILL_TRIALS * 2
    used = _prefills(policy, "m", 2_000_000, 32, {1: 58.0, 2: 48.0}, trials + 2)
    assert set(used[trials:]) == {1} and policy.prefill_choices() == {64: 1}
    # the same gain per token on eight 64-token prompts saves 5 ms a prefill: two threads
    used = _prefills(policy, "m", 2_000_000, 512, {1: 58.0, 2: 48.0}, trials + 2)
    assert set(used[trials:]) == {2} and policy.prefill_choices() == {64: 1, 512: 2}
    # the saving is taken on the regime's median prefill: mostly 9-token prompts in a 9-64 regime stay on one thread
    policy._prefills.clear()
    for n in [9, 9, 9, 64, 9, 9, 9, 9, 9][:trials]:  # (18 us a token saves 1.15 ms at 64 tokens, 0.16 at 9)
        policy.prefill("m", 2_000_000, n)
        policy.prefilled({1: 58.0, 2: 40.0}[policy.now] * n / 1e6)
    assert policy.prefill_choices() == {64: 1}


def test_the_kernels_of_a_new_model_are_timed_on_every_core(policy):
    # before any decode step is timed, a small forward gets all but one core; the kernel timing must not: the
    # kernels rank differently with one thread and two, and one-row decoding of large models runs on both
    policy.use(1_000_000, 1)
    assert policy.now == 1
    policy.for_kernel_timing()
    assert policy.now == 2 and policy.calls[-1] == 2


def test_a_warming_server_does_not_buy_a_second_thread_for_small_prefills(policy):
    # issue #18: on the idle benchmark machine a new server's prefills got faster one after the other; timed in
    # plain alternation (1, 2, 1, 2, ...) after a cold first prefill, two threads looked faster and the 2M demo
    # prefilled its short prompts on two threads where one was faster
    times = iter([30_000.0, 900.0, 800.0, 700.0, 600.0, 500.0, 400.0])  # per token, falling; the first is cold

    def prefill() -> int:
        policy.prefill("m", 2_000_000, 32)
        n = policy.now
        policy.prefilled(next(times) * 32 / 1e6 * (1.0 if n == 1 else 0.97))  # two threads 3% faster at best
        return n

    assert [prefill() for _ in range(7)] == [1, 1, 2, 2, 1, 1, 2]
    assert policy.prefill_choices() == {64: 1}


def _run_kernels(p: ThreadPolicy, rows: int, kernels: tuple[str, ...], step_ms: dict[tuple[int, str], float],
                 steps: int) -> list[tuple[int, str]]:
    """`steps` decode steps offering `kernels`, each taking step_ms[(threads, kernel)]; the pairs they ran with."""
    used = []
    for _ in range(steps):
        k = p.decode("m", rows, kernels)
        used.append((p.now, kernels[k]))
        p.decoded(step_ms[(p.now, kernels[k])] / 1e3)
    return used


def test_the_kernel_is_chosen_on_real_steps_with_the_thread_count(policy):
    # issue #18, 350M on the loaded 2-core machine: the product timing picked oneDNN for one row, but real steps
    # on two threads took 1.9x as long as MKL's while another process held a core (oneDNN waits for the
    # descheduled thread at every product), and one thread then decoded faster with either kernel. Each count is
    # timed with each kernel, and the fastest pair is kept: here one thread and MKL.
    ms = {(1, "onednn"): 170.0, (2, "onednn"): 870.0, (1, "stored"): 160.0, (2, "stored"): 520.0}
    trial = BLOCK * TRIAL_BLOCKS * 4
    used = _run_kernels(policy, 1, ("onednn", "stored"), ms, trial + 5)
    assert sorted(set(used[:trial])) == sorted(ms)  # every pair was timed, in blocks
    assert used[:BLOCK] == [(1, "onednn")] * BLOCK  # the product timing's pick first
    assert set(used[trial:]) == {(1, "stored")}
    assert policy.choices() == {1: 1} and policy.kernel_choices() == {1: "stored"}


def test_a_near_tie_keeps_fewer_threads_then_the_timed_kernel(policy):
    ms = {(1, "onednn"): 100.0, (2, "onednn"): 60.0, (1, "stored"): 100.0, (2, "stored"): 59.0}
    used = _run_kernels(policy, 8, ("onednn", "stored"), ms, BLOCK * TRIAL_BLOCKS * 4 + 3)
    assert set(used[-3:]) == {(2, "onednn")}  # MKL 2% faster: within TIE, the product timing's pick stays
    assert policy.kernel_choices() == {8: "onednn"}


def test_one_kernel_is_timed_as_before(policy):
    used = _run(policy, "m", 1, {1: 10.0, 2: 20.0}, TRIAL + 2)
    assert set(used[TRIAL:]) == {1}
    assert policy.kernel_choices() == {1: ""}


def test_each_decision_is_logged_with_the_line_the_sweep_waits_for(policy, caplog):
    # benchmarks/sweep.py measures only once the server's log shows these lines (threads.prefill_decided /
    # decode_decided); a decision logged any other way would leave it warming up to its limit, then measuring trials
    caplog.set_level("INFO", logger="millm.engine.threads")
    _prefills(policy, "m", 25_000_000, 32, {1: 1000.0, 2: 500.0}, 1 + PREFILL_TRIALS * 2)
    _run(policy, "m", 6, {1: 3.0, 2: 2.0}, 24)
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(threads.prefill_decided(32) + " ") for m in lines), lines
    assert any(m.startswith(threads.decode_decided(6) + " ") for m in lines), lines
    assert threads.prefill_decided(40) == "prefill threads for 9-64 tokens:"
    assert threads.decode_decided(6) == "decode threads for 5-8-row steps:"


@pytest.mark.parametrize("before,after,chosen,retimed,change", [
    # decided on two threads; then another process takes a core and two-thread steps take 20x as long
    ({1: 12.0, 2: 10.0}, {1: 12.0, 2: 200.0}, 2, 1, "slowed: 2 threads now take 200.00 ms"),
    # decided while another process held a core (every candidate slow, one thread least so); the load goes and
    # steps run 2x faster, two threads now the faster
    ({1: 20.0, 2: 24.0}, {1: 10.0, 2: 7.0}, 1, 2, "sped up: 1 threads now take 10.00 ms"),
], ids=["slowed", "sped-up"])
def test_a_decided_regime_whose_steps_change_speed_is_timed_again(policy, caplog, before, after, chosen, retimed,
                                                                  change):
    _run(policy, "m", 8, before, TRIAL)
    assert policy.choices() == {8: chosen}
    with caplog.at_level("INFO", logger="millm.engine.threads"):
        used = _run(policy, "m", 8, after, threads.WATCH_STEPS + TRIAL + 5)
    assert set(used[:threads.WATCH_STEPS]) == {chosen}
    # a trial at once, not after RECHECK_STEPS
    assert used[threads.WATCH_STEPS] == 1 and {1, 2} <= set(used[threads.WATCH_STEPS:threads.WATCH_STEPS + TRIAL])
    assert set(used[-5:]) == {retimed}
    assert policy.choices() == {8: retimed}
    assert f"decode threads for 5-8-row steps {change}" in caplog.text


def test_slower_steps_on_the_fewest_threads_or_within_the_margin_are_not_retimed(policy):
    _run(policy, "m", 8, {1: 10.0, 2: 12.0}, TRIAL)  # one thread chosen: nothing to fall back to
    used = _run(policy, "m", 8, {1: 50.0, 2: 12.0}, 3 * threads.WATCH_STEPS)
    assert set(used) == {1}
    _run(policy, "m", 1, {1: 12.0, 2: 10.0}, TRIAL)  # two threads chosen, then 1.5x slower: within WATCH_SLOWDOWN
    used = _run(policy, "m", 1, {1: 12.0, 2: 15.0}, 3 * threads.WATCH_STEPS)
    assert set(used) == {2}


def test_a_candidate_far_behind_is_not_timed_further(policy):
    # under load two threads can take 100x one: after one such timed step their remaining trial blocks are skipped
    used = _run(policy, "m", 8, {1: 10.0, 2: 1000.0}, TRIAL + 3)
    assert used.count(2) == 2  # the block's first (untimed) step and the one timed step that decided against it
    assert policy.choices() == {8: 1}
    assert set(used[-3:]) == {1}


def test_dropping_never_leaves_a_trial_without_a_candidate(policy):
    # noisy steps: each count in turn looks far behind the other; the trial still ends with a choice
    p = policy
    times = iter([1.0, 1.0, 1.0, 50.0, 50.0, 50.0] * 10)
    for _ in range(TRIAL * 2):
        p.decode("m", 8)
        p.decoded(next(times) / 1e3 * (1 if p.now == 1 else 100))
    assert p.choices()[8] in (1, 2)


def test_a_prefill_count_far_behind_decides_at_once(policy):
    # under load a two-thread prefill took 36x one thread's per token: the trial stops at the first such prefill
    us = {1: 500.0, 2: 18_000.0}
    used = _prefills(policy, "m", 2_000_000, 512, us, 1 + 2 + 3)  # cold, then 1 and 2 threads, then decided
    assert used[1:3] == [1, 2]
    assert set(used[3:]) == {1}
    assert policy.prefill_choices() == {512: 1}
    # not the other way round: one thread far behind two is timed to the end of the trial before two are taken
    used = _prefills(policy, "other", 2_000_000, 512, {1: 18_000.0, 2: 500.0}, 1 + 2 * PREFILL_TRIALS + 2)
    assert used[1:5] == [1, 2, 2, 1] and set(used[-2:]) == {2}


def test_a_parallel_prefill_choice_that_slows_down_falls_back_to_one_thread_until_its_recheck(policy, caplog):
    # decided on two threads on lone prompts; then the burst's first prompt meets the event loop on the other core
    trials = PREFILL_TRIALS * 2
    _prefills(policy, "m", 25_000_000, 64, {1: 127.0, 2: 99.0}, 1 + trials)
    assert policy.prefill_choices() == {64: 2}
    with caplog.at_level("INFO", logger="millm.engine.threads"):
        used = _prefills(policy, "m", 25_000_000, 64, {1: 127.0, 2: 1300.0}, threads.WATCH_PREFILLS + 5)
    assert set(used[:threads.WATCH_PREFILLS]) == {2}
    assert set(used[threads.WATCH_PREFILLS:]) == {1}  # at once, and not timed again (no A B B A trial)
    assert policy.prefill_choices() == {64: 1}
    assert "prefill threads for 9-64 tokens slowed: 2 threads now take 1300 us a token" in caplog.text
    assert "1 until the next re-check" in caplog.text
    # the re-check, RECHECK_PREFILLS prefills later, times the regime again (lone prompts: two threads win again)
    used = _prefills(policy, "m", 25_000_000, 64, {1: 127.0, 2: 99.0},
                     threads.RECHECK_PREFILLS - 5 + 1 + trials + 2)
    assert policy.prefill_choices() == {64: 2} and set(used[-2:]) == {2}


def test_slower_prefills_on_the_fewest_threads_or_within_the_margin_are_not_retimed(policy):
    trials = PREFILL_TRIALS * 2
    _prefills(policy, "m", 25_000_000, 64, {1: 100.0, 2: 150.0}, 1 + trials)  # one thread: nothing to fall back to
    assert set(_prefills(policy, "m", 25_000_000, 64, {1: 900.0, 2: 150.0}, 10)) == {1}
    _prefills(policy, "m", 25_000_000, 512, {1: 100.0, 2: 60.0}, 1 + trials)  # two threads, then 1.5x slower
    assert set(_prefills(policy, "m", 25_000_000, 512, {1: 100.0, 2: 90.0}, 10)) == {2}


def test_steps_somewhat_faster_than_the_decision_are_not_retimed(policy):
    # a trial right after start-up times cold steps: the steady steps a little faster do not start a new trial
    _run(policy, "m", 8, {1: 12.0, 2: 10.0}, TRIAL)
    used = _run(policy, "m", 8, {1: 12.0, 2: 10.0 / (threads.WATCH_SPEEDUP * 0.95)}, 4 * threads.WATCH_STEPS)
    assert set(used) == {2}


def test_a_regime_is_timed_again_for_faster_steps_once_until_its_recheck(policy, monkeypatch):
    # should trial steps run slower than steady ones for a reason of their own, the watch does not start trial after
    # trial: once per re-check period
    _run(policy, "m", 8, {1: 20.0, 2: 24.0}, TRIAL)
    _run(policy, "m", 8, {1: 10.0, 2: 12.0}, threads.WATCH_STEPS + TRIAL)  # faster: timed again (decided at 10 ms)
    trials = []
    original = policy.decode

    def counting(model: object, rows: int, kernels: tuple[str, ...] = ("",)) -> int:
        k = original(model, rows, kernels)
        trials.append(policy._trial is not None)
        return k

    monkeypatch.setattr(policy, "decode", counting)
    _run(policy, "m", 8, {1: 5.0, 2: 6.0}, 4 * threads.WATCH_STEPS)  # faster again: not timed again
    assert not any(trials)
