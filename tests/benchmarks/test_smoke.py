"""The benchmark suite runs end to end in `--smoke` mode on the tiny test model and writes its report.

Speed is not asserted: CI machines are too noisy, and the smoke run is far too short to mean anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run

SECTIONS = (
    "# Benchmarks",
    "## CPU",
    "### Targets",
    "#### Decode: server vs raw generate, and steering / monitoring overhead",
    "#### Concurrency",
    "#### Prefill",
    "#### Memory-bandwidth bound",
    "#### Where a batch-1 decode step goes",
)
MODES = ("unsteered", "additive", "clamp 16", "monitor 16 selected", "monitor top-8", "additive + evidence",
         "activations top-8")


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graph-env-on-cpu"])
def test_smoke_run_writes_the_report(tmp_path: Path, tiny_model_dir: Path, tiny_sae_dir: Path, graphs: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # With MILLM_CUDA_GRAPHS=1 on a CPU the server decodes over the static slot cache without capture and says so
    # in a warning, which the report must carry; the plain run's server logs no warning at all.
    if graphs:
        monkeypatch.setenv("MILLM_CUDA_GRAPHS", "1")
    out = tmp_path / "docs"
    logs = tmp_path / "logs"
    assert run.main(["--smoke", "--model", str(tiny_model_dir), "--sae", str(tiny_sae_dir), "--out", str(out),
                     "--logs", str(logs)]) == 0
    assert (logs / "server-cpu-custom.log").exists()  # kept for a look after the run

    md = (out / "benchmarks.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    for mode in MODES:
        assert f"server, {mode} |" in md, mode
    assert "raw `model.generate`" in md
    assert "steering evidence <= 1% of inter-token latency" in md  # evidence's cost is a reported target
    assert (out / "benchmarks-cpu-concurrency.png").stat().st_size > 1000
    assert (out / "benchmarks-cpu-overhead.png").stat().st_size > 1000

    data = json.loads((out / "benchmarks-cpu.json").read_text())
    m = data["models"]["custom"]
    assert set(m["decode"]["modes"]) == set(MODES)
    assert m["decode"]["raw"]["tokens"] == m["plan"]["max_tokens"]
    assert all(v["tokens"] == m["plan"]["max_tokens"] for v in m["decode"]["modes"].values())
    assert set(m["concurrency"]["levels"]) == {"1", "2"}
    assert all(v["mismatches"] == 0 for v in m["concurrency"]["levels"].values())
    assert {h["mode"] for h in m["hooks"]} >= set(MODES)
    assert m["bound_tok_s"] > 0
    assert all(isinstance(line, str) for line in m["engine_choices"])  # (the policy is off where threads are set)
    if m["engine_choices"]:
        assert "The server's kernel and thread choices" in md and m["engine_choices"][0][:50] in md
    warned = [w["message"] for w in m["server_warnings"]]
    if graphs:
        assert any("CUDA graphs need a CUDA device" in w for w in warned), warned
        assert "**The server logged warnings during this run:**" in md
        assert "CUDA graphs need a CUDA device" in md
    else:
        assert warned == []
        assert "logged warnings" not in md
