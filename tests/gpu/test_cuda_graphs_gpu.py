"""CUDA-graph decoding on a GPU: replayed steps give the eager steps' tokens, with per-row additive steering,
rows joining and leaving, and clamp steps falling back to eager. Skipped without CUDA."""

from __future__ import annotations

import pytest

from millm.engine.types import FeatureStrength, GenerationRequest, SamplingParams, SteeringSpec
from millm.engine.worker import Worker
from tests.engine.test_worker import PROMPTS, run, start_worker


def _worker(model_dir, sae_dir, graphs: bool) -> Worker:
    return start_worker(model_dir, sae_dir, max_batch_size=4, cuda_graphs=graphs, device="cuda", dtype="float32")


def _requests(tok, clamp: bool) -> list[GenerationRequest]:
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    out = []
    for i, p in enumerate(PROMPTS):
        steer = None
        if i % 3 == 1:
            steer = SteeringSpec((FeatureStrength(i * 7, 6.0),), mode="add")
        elif i % 3 == 2 and clamp:
            steer = SteeringSpec((FeatureStrength(i * 5, 4.0),), mode="clamp")
        out.append(GenerationRequest(f"r{i}", tuple(tok(p).input_ids), params, steering=steer))
    return out


@pytest.mark.parametrize("clamp", [False, True])
def test_graph_replay_gives_the_eager_tokens(tiny_model_dir, tiny_sae_dir, clamp):
    outs, replays = [], []
    for graphs in (False, True):
        w = _worker(tiny_model_dir, tiny_sae_dir, graphs)
        try:
            reqs = _requests(w.loaded.tokenizer, clamp)
            solo = {}
            for r in reqs:
                solo.update(run(w, [r]))
            batched = run(w, reqs)  # six requests through four slots: rows join and leave
            assert batched == solo
            outs.append(batched)
            replays.append(w._graphs.replays if w._graphs else 0)
        finally:
            w.stop()
            w.intervention.detach()
    assert outs[0] == outs[1]
    assert replays[0] == 0 and replays[1] > 0
    # Steering applies inside the graph: the steered row differs from the same prompt unsteered.
    w = _worker(tiny_model_dir, tiny_sae_dir, True)
    try:
        r = _requests(w.loaded.tokenizer, clamp)[1]
        plain = run(w, [GenerationRequest("plain", r.prompt_ids, r.params)])
        assert plain["plain"] != outs[1]["r1"]
    finally:
        w.stop()
        w.intervention.detach()


def test_monitoring_inside_graphs_gives_the_eager_records(tiny_model_dir, tiny_sae_dir):
    from millm.engine.intervention import MonitorConfig

    recs, replays = [], []
    for graphs in (False, True):
        w = _worker(tiny_model_dir, tiny_sae_dir, graphs)
        records: list = []
        w.intervention.set_monitor(MonitorConfig(enabled=True, top_k=4))
        w.monitor_sink = records.extend
        try:
            run(w, _requests(w.loaded.tokenizer, clamp=True))
            replays.append(w._graphs.replays if w._graphs else 0)
        finally:
            w.stop()
            w.intervention.detach()
        recs.append(sorted((r.request_id, r.position, r.token_id, tuple(a.index for a in r.activations),
                            tuple(round(a.value, 3) for a in r.activations))
                           for r in records if r.phase == "generated"))
    assert replays[0] == 0 and replays[1] > 0
    assert recs[0] and len(recs[0]) == len(recs[1])
    for a, b in zip(recs[0], recs[1], strict=True):
        assert a[:4] == b[:4]
        assert all(abs(x - y) < 1e-3 for x, y in zip(a[4], b[4], strict=True))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_bench_decode_rounds_replay_without_falling_back(dtype):
    # `make bench --cuda-graphs` serves the demo model and topk SAE in bf16; its decode rounds change steering and
    # monitor settings between requests. Graph replay must keep going (no fallback, no failed request) and give
    # the tokens of the same slot-cache steps run eagerly.
    from millm.demo import assets_dir
    from tests.engine.test_cuda_graphs import bench_waves, run_waves

    waves = bench_waves(1536)
    results, recs = [], []
    for capture in (False, True):
        w = start_worker(assets_dir() / "model", assets_dir() / "sae", max_batch_size=16, cuda_graphs=True,
                         device="cuda", dtype=dtype)
        records: list = []
        try:
            w.call(lambda wk: wk._lean_decoder(wk.loaded)).result(60)
            w._graphs.capture = capture
            outs = {rid: toks for wave in run_waves(w, waves, records) for rid, toks in wave.items()}
            assert all(len(t) == 24 for t in outs.values())  # no request failed part-way
            if capture:
                assert w._graphs.capture and w._graphs.replays > 0  # no fallback to eager steps
        finally:
            w.stop()
            w.intervention.detach()
        results.append(outs)
        recs.append(sorted((r.request_id, r.position, tuple(a.index for a in r.activations)) for r in records))
    if dtype == "float32":
        assert results[0] == results[1]
        assert recs[0] == recs[1]
    else:  # bf16 clamps round differently inside graphs (Sae.clamped_rows against Sae.clamped)
        assert {k: v for k, v in results[0].items() if "clamp" not in k} == \
            {k: v for k, v in results[1].items() if "clamp" not in k}
