"""benchmarks/serve_ab.py's bookkeeping and its server probe (benchmarks/serve_probe)."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks import serve_ab


def test_window_takes_the_records_that_ended_within_the_run():
    records = [[9.99, "before"], [10.0, "first"], [10.5, "inside"], [11.004, "last step"], [11.1, "after"]]
    assert [r[1] for r in serve_ab._window(records, 10.0, 11.0)] == ["first", "inside", "last step"]


def test_summarize_takes_medians_sums_mismatches_and_divides_by_one_stream():
    def run(agg: float, mismatches: int, prefills: list[int]) -> dict:
        return {"aggregate_tok_s": agg, "step_ms": agg / 100, "mismatches": mismatches, "prefills": prefills}

    out = serve_ab.summarize({1: [run(100, 0, [1]), run(300, 0, [1]), run(200, 0, [1])],
                              8: [run(700, 1, [1, 7]), run(500, 0, [8])]})
    assert out[1]["aggregate_tok_s"] == 200 and out[1]["step_ms"] == 2 and out[1]["ratio"] == 1
    assert out[8]["aggregate_tok_s"] == 600 and out[8]["ratio"] == 3
    assert out[8]["mismatches"] == 1 and out[8]["prefills"] == [[1, 7], [8]] and out[8]["runs"] == 2


def _probe(env: dict[str, str], code: str) -> str:
    """Run `code` in a fresh interpreter with the probe on its path (as the benchmark starts its servers)."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(serve_ab.PROBE), *sys.path]), **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def test_the_probe_turns_the_worker_writes_off_only_when_asked():
    code = "from millm.api import openai_routes; print(openai_routes._Sse.worker_writes(None, None))"
    assert _probe({"MILLM_PROBE_WORKER_WRITES": "0"}, code) == "None"
    plain = "from millm.api import openai_routes; print(openai_routes._Sse.worker_writes.__qualname__)"
    assert _probe({}, plain) == "_Sse.worker_writes"


def test_the_probe_records_only_when_given_a_path(tmp_path):
    out = tmp_path / "probe.json"
    code = ("import os, signal, time, json; from millm.engine import worker, threads;"
            "print(threads.ThreadPolicy.decoded.__module__ == 'sitecustomize',"
            " worker.Worker._prefill.__module__ == 'sitecustomize');"
            "os.kill(os.getpid(), signal.SIGUSR1); time.sleep(0.1);"
            f"print(sorted(json.load(open({str(out)!r}))))")
    assert _probe({"MILLM_PROBE_OUT": str(out)}, code).splitlines() == ["True True", "['counts', 'prefills', 'steps']"]
    assert _probe({}, "from millm.engine import threads; print(threads.ThreadPolicy.decoded.__module__)") == \
        "millm.engine.threads"
