"""The size and family sweep (benchmarks/sweep.py) runs on the tiny test model and its report section is built.

Speed is not asserted (see test_smoke.py); what is checked is that every figure the section reports is measured,
that the server's outputs equal `model.generate`'s and each concurrent request's equals its solo run.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report, sweep
from benchmarks.models import BenchModel


def test_sweep_measures_every_figure_and_reports_it(tmp_path: Path, tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    bm = BenchModel("tiny", tiny_model_dir, tiny_sae_dir, "the test suite's tiny model")
    m = sweep.bench_one(bm, "llama", "tiny", "smoke", device="cpu", dtype="float32", work=tmp_path,
                        raw_threads=(1,), logs=None)
    plan = m["plan"]
    d = m["decode"]
    assert d["same_text"], "greedy server output differs from model.generate's"
    for key in ("raw_tok_s", "server_tok_s", "raw_e2e_tok_s", "server_e2e_tok_s", "stream_ratio", "e2e_ratio"):
        assert d[key] > 0, key
    assert len(d["rounds"]) == plan["rounds"]
    for label in ("short", "long"):
        assert m["ttft"][label]["raw_ms"] > 0 and m["ttft"][label]["server_ms"] > 0, label
    levels = m["concurrency"]["levels"]
    assert set(levels) == {str(c) for c in plan["concurrency"]}
    assert all(v["mismatches"] == 0 and v["checked"] > 0 for v in levels.values())
    assert m["decode_path"]  # the decode path the server took is recorded

    data = {"environment": {"date": "now", "mode": "smoke", "commit": "x", "cpu": "cpu", "cores": 2,
                            "torch": "t", "transformers": "t"}, "models": {"tiny": m}}
    (tmp_path / "benchmarks-sweep-cpu.json").write_text(json.dumps(data, default=float))
    md = report.write(tmp_path).read_text()
    assert "## Size and family sweep, CPU" in md
    assert "| tiny |" in md and "streamed decode >= 1.0x" in md
    assert (tmp_path / "benchmarks-sweep-cpu.png").stat().st_size > 1000

    # a partial rerun keeps the full run's header and says which rows come from the rerun
    data["environment"] = sweep.rerun_environment(
        data["environment"], {"date": "later", "commit": "y", "total_seconds": 95.0}, ["tiny"])
    assert data["environment"]["date"] == "now" and data["environment"]["commit"] == "x"
    (tmp_path / "benchmarks-sweep-cpu.json").write_text(json.dumps(data, default=float))
    md = report.write(tmp_path).read_text()
    assert "Run now, mode `smoke`, commit x" in md
    assert "Rerun alone afterwards (their rows and verdicts are from it): tiny, later, commit y, 95 s." in md


def test_overhead_splits_the_servers_cpu_per_token(tmp_path: Path, tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    from benchmarks import overhead

    bm = BenchModel("tiny", tiny_model_dir, tiny_sae_dir, "the test suite's tiny model")
    r = overhead.measure(bm, short=4, long=36, rounds=1, work=tmp_path, wall_tokens=8, wall_pairs=3)
    row = r["rounds"][0]
    # marginal figures (long request - short request) carry noise, so only their signs are checked here, and only
    # where the forward dominates: the event loop's per-token share is small enough to come out negative under load
    assert row["threads"].get("millm-worker", 0) > 0 and "event loop" in row["threads"]
    assert r["forward_us"] > 0 and r["engine_us"] > 0 and r["server_us"] > 0
    assert r["overhead_us"] == row["engine_us"] - row["forward_us"] + row["server_other_us"]
    assert 0 < r["prefill_us"] < r["engine_1_us"] and r["request_1_us"] > 0
    # wall clock: paired segments, each the stream's median gap between chunks against the in-process engine's median
    # forward and step; the figure is the median of the paired differences, between its quartiles and range
    pairs = r["wall_pairs"]
    assert len(pairs) == 3 and r["wall_tokens"] == 8
    for seg in pairs:
        assert seg["stream_us"] > 0 and 0 < seg["forward_us"] < seg["step_us"]
        assert seg["beyond_forward_us"] == seg["stream_us"] - seg["forward_us"]
        assert seg["beyond_engine_us"] == seg["stream_us"] - seg["step_us"]
    beyond = sorted(seg["beyond_forward_us"] for seg in pairs)
    assert r["wall_overhead_us"] == beyond[1] and r["wall_range_us"] == [beyond[0], beyond[2]]
    assert beyond[0] <= r["wall_quartiles_us"][0] <= r["wall_overhead_us"] <= r["wall_quartiles_us"][1] <= beyond[2]
    assert r["wall_serving_us"] == sorted(seg["beyond_engine_us"] for seg in pairs)[1]
    assert r["stream_ms_token"] > 0 and 0 < r["forward_wall_ms"] < r["step_wall_ms"]

    data = {"environment": {"date": "now", "mode": "smoke", "commit": "x", "cpu": "cpu", "cores": 2,
                            "torch": "t", "transformers": "t"}, "models": {}, "overhead": r}
    (tmp_path / "benchmarks-sweep-cpu.json").write_text(json.dumps(data, default=float))
    md = report.write(tmp_path).read_text()
    assert f"**{r['overhead_us']:.0f} us**" in md and f"**{r['wall_overhead_us']:.0f} us** more per token" in md



def test_settle_waits_until_neither_side_is_running() -> None:
    # Right after `generate` on two threads, torch's OpenMP worker spins for a few ms; a server request timed then
    # shares the cores with it. `settle` waits until no other thread of this process and none of the server's is
    # running: here a busy thread of ours and a busy "server" process, then an idle server.
    import subprocess
    import sys
    import threading
    import time

    if not Path("/proc/self/task").exists():
        return  # elsewhere settle is a fixed pause

    class FakeServer:
        def __init__(self, code: str) -> None:
            self.proc = subprocess.Popen([sys.executable, "-c", code])

    def spin(until: float) -> None:
        while time.perf_counter() < until:
            pass

    busy = FakeServer("import time\nt = time.time()\nwhile time.time() - t < 0.5: pass")
    idle = FakeServer("import time\ntime.sleep(30)")
    spinner = threading.Thread(target=spin, args=(time.perf_counter() + 0.3,))
    try:
        time.sleep(0.1)  # both interpreters are up
        spinner.start()
        sweep.settle(busy, limit=5.0)  # type: ignore[arg-type]
        assert not spinner.is_alive()
        assert busy.proc.poll() is not None  # it ran to its end (a zombie is not running)
        t = time.perf_counter()
        sweep.settle(idle, limit=5.0)  # type: ignore[arg-type]
        assert time.perf_counter() - t < 0.1
    finally:
        for s in (busy, idle):
            s.proc.kill()
            s.proc.wait()
        spinner.join()


def test_every_timed_ttft_request_follows_one_of_the_other_side(monkeypatch) -> None:
    # `generate` timed right after its own other thread count found its caches warm, the server never did
    # (docs/benchmarks-notes.md, eleventh session): each side is now timed right after the other's request
    import types

    from benchmarks.server_bench import RequestTiming

    seq: list[str] = []
    ttfts = {"server": iter([5.0, 7.0, 6.0, 4.0] * 20), 1: iter([2.4] * 20), 2: iter([2.0] * 20)}

    def timing(ms: float) -> RequestTiming:
        return RequestTiming(sent=0.0, first=ms / 1e3, last=ms / 1e3, chunks=1, text="")

    def served(port: int, body: object) -> RequestTiming:
        seq.append("S")
        return timing(next(ttfts["server"]))

    def raw(n: int, fn: object, *args: object) -> RequestTiming:
        seq.append(f"R{n}")
        return timing(next(ttfts[n]))

    monkeypatch.setattr(sweep, "settle", lambda server: None)
    monkeypatch.setattr(sweep, "first_chunk_one", served)
    monkeypatch.setattr(sweep, "run_one", lambda server, body: None)
    monkeypatch.setattr(sweep, "prefill_timed", lambda params, n: False)
    monkeypatch.setattr(sweep.raw_bench, "with_threads", raw)
    monkeypatch.setattr(sweep.raw_bench, "generate_timed", lambda *a: seq.append("warm-up"))
    monkeypatch.setattr(sweep, "_prompt", lambda tok, n, seed: [1] * n)
    lm = types.SimpleNamespace(context_length=64, tokenizer=None, num_parameters=1)
    plan = sweep.SweepPlan(8, 1, 8, 16, 2, (1,), 8, 1)
    out = sweep._ttft(types.SimpleNamespace(port=0), lm, plan, (1, 2))
    short = seq[:seq.index("warm-up", 1)] if seq.count("warm-up") > 1 else seq
    assert short == ["warm-up", "S", "R1", "S", "R2", "S", "R2", "S", "R1"]  # two rounds, the counts' order alternating
    # per round the server's median (6.0, then 5.0) against the faster count's (2 threads, 2.0 ms)
    assert out["short"]["server_ms"] == 5.5 and out["short"]["raw_ms"] == 2.0 and out["short"]["raw_threads"] == 2
    assert out["short"]["ratio"] == 2.75


def test_small_models_get_more_concurrency_rounds() -> None:
    """Their rounds take about a second, and one burst's admission moves their c=8 figure most (sweep.SMALL_PARAMS)."""
    small, mid, big = (sweep.plan_for("full", int(n)) for n in (2e6, 100e6, 350e6))
    assert small.conc_rounds == sweep.SMALL_CONC_ROUNDS > mid.conc_rounds == big.conc_rounds == 2
    assert sweep.plan_for("full", int(sweep.SMALL_PARAMS) - 1).conc_rounds == sweep.SMALL_CONC_ROUNDS
    assert sweep.plan_for("full", int(sweep.SMALL_PARAMS)).conc_rounds == 2
