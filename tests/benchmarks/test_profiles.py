"""The in-process profiling tools for the 350M decode work (issue #18) run on the demo model and report their parts."""

from __future__ import annotations

from benchmarks import concurrency_profile, kernel_ab


def test_kernel_ab_times_whole_steps_per_kernel_and_layout():
    out = kernel_ab.measure("demo", rows=(1,), threads=(1,), rounds=1, block=2, products=True)
    keys = set(out["median_ms"])
    for kernel in ("stored/mkl", "stored/onednn", "input-major/mkl", "input-major/onednn"):
        assert {f"step {kernel} rows=1 threads=1", f"products {kernel} rows=1 threads=1"} <= keys
    assert all(v[0] > 0 for v in out["median_ms"].values())
    assert out["paired_ratio"]["step stored/mkl rows=1 threads=1 vs stored/mkl"] == 1.0
    assert out["engine"][1]["kernels"]["one"] in ("stored", "input-major", "onednn")


def test_concurrency_profile_splits_prefills_and_steps_and_checks_solo_outputs():
    out = concurrency_profile.measure("demo", levels=(1, 2), rounds=1, tokens=4, prompt=8)
    two = out["levels"][2]
    assert two["mismatches"] == 0  # each concurrent output equals its solo run
    assert two["prefill_s"] > 0 and two["steps_s"] > 0
    # every token after the first comes from a decode step: 3 for c=1 and 2 x 3 for c=2 (one step of two rows each,
    # unless the second request arrived after the first had started), and every prompt was prefilled once
    assert sum(rows * n for rows, (_, n, _) in out["median_step_ms_by_rows"].items()) == 3 + 6
    assert sum(p["tokens"] for p in out["prefills"]) == 8 + 2 * 8
