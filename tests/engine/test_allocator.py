"""engine/allocator.py: freed memory is reused without page faults, and a user's own malloc tuning is kept."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import pytest

from millm.engine import allocator

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's mallopt")

# In a fresh interpreter, on a thread of its own (as the worker): optionally keep freed memory, then run rounds that
# each hold twelve 2 MiB tensors at once and free them together, as a forward's activations are, counting each round's
# page faults.
_PROBE = """
import json, resource, sys, threading, torch
from millm.engine.allocator import keep_freed_memory
out = {"faults": []}
def run():
    out["kept"] = keep_freed_memory() if sys.argv[1] == "keep" else False
    for i in range(ROUNDS):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        live = [torch.full((2**19,), float(j)) for j in range(12)]
        del live
        out["faults"].append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=run)
t.start()
t.join()
print(json.dumps(out))
"""
ROUNDS = 8
PAGES = 12 * 2 * 2**20 // 4096  # what a round touches


def _probe(mode: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not allocator.user_tuned({k: v})}
    done = subprocess.run([sys.executable, "-c", _PROBE.replace("ROUNDS", str(ROUNDS)), mode], env={**clean, **env}, capture_output=True, text=True,
                          check=True, timeout=120)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@glibc
def test_freed_activations_are_reused_without_page_faults():
    plain, kept = _probe("plain"), _probe("keep")
    assert kept["kept"] is True and plain["kept"] is False
    steady = slice(3, None)  # (the first rounds take fresh pages either way)
    # glibc's defaults: 24 MiB freed at once exceeds the trim threshold (twice the largest block unmapped so far), so
    # the heap's top goes back to the kernel and every round faults its pages in again
    assert sum(plain["faults"][steady]) > (ROUNDS - 3) * PAGES // 4
    # kept: the rounds reuse the pages of the first ones
    assert sum(kept["faults"][steady]) < PAGES // 4


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_the_users_own_malloc_tuning_is_kept(env):
    assert allocator.user_tuned(env)
    out = _probe("keep", **env)
    assert out["kept"] is False


def test_other_environments_are_not_user_tuned():
    assert not allocator.user_tuned({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512", "PATH": "/bin"})
