"""GPU-only tests live in tests/gpu (its conftest marks and skips them; scripts/gpu_bench.sh runs that folder):
no test module elsewhere is marked `gpu` or skipped as a whole for want of CUDA."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent
GPU_ONLY = re.compile(r"pytest\.mark\.gpu\b|skipif\(\s*not torch\.cuda\.is_available\(\)")


def test_gpu_only_tests_are_in_tests_gpu() -> None:
    outside = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                     if p.parent != TESTS / "gpu" and TESTS / "gpu" not in p.parents and p != Path(__file__)
                     and GPU_ONLY.search(p.read_text()))
    assert outside == [], f"move these GPU-only tests to tests/gpu: {outside}"


def test_gpu_bench_runs_the_gpu_folder() -> None:
    script = (TESTS.parent / "scripts" / "gpu_bench.sh").read_text()
    assert re.search(r"pytest .*tests/gpu\b", script)
