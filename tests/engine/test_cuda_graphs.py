"""The static slot cache of CUDA-graph mode, run eagerly on CPU (tests/gpu has the replay half):
joins and compaction keep each row's keys, and decoding over it gives the growable cache's tokens."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from millm.engine import kv
from millm.engine.cuda_graphs import GraphDecoder, GraphMismatch, SlotCache, _check_replay
from millm.engine.intervention import MonitorConfig
from millm.engine.llama_decode import LlamaDecoder
from millm.engine.model_loading import load_model
from millm.engine.types import FeatureStrength, GenerationRequest, SamplingParams, SteeringSpec
from tests.engine.test_llama_decode import _cache_kw
from tests.engine.test_worker import PROMPTS, requests, run, start_worker


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def _prefill(model, ids):
    cache = kv.new_cache()
    with torch.inference_mode():
        model(input_ids=ids, use_cache=True, **{_cache_kw(model): cache})
    return cache


def test_slot_cache_update_writes_each_row_at_its_position():
    c = SlotCache(layers=1, slots=4, kv_heads=2, head_dim=3, capacity=8, dtype=torch.float32, device=torch.device("cpu"))
    pos = torch.tensor([[0], [5], [2]])
    c.set_positions(pos)
    k, v = torch.randn(3, 2, 1, 3), torch.randn(3, 2, 1, 3)
    ko, vo = c.update(k, v, 0)
    assert ko.shape == (3, 2, 8, 3)
    for b, p in enumerate([0, 5, 2]):
        assert torch.equal(ko[b, :, p], k[b, :, 0]) and torch.equal(vo[b, :, p], v[b, :, 0])
        others = [i for i in range(8) if i != p]
        assert not ko[b, :, others].any()
    assert not c.keys[0][3].any()  # the fourth slot is untouched


def test_join_select_and_growth_keep_rows(lm):
    dec = LlamaDecoder.for_model(lm.model)
    g = GraphDecoder(dec, slots=2, context_length=4096, capture=False)
    a = _prefill(lm.model, torch.tensor([[5, 6, 7]]))
    b = _prefill(lm.model, torch.tensor([[9, 10, 11, 12, 13]] * 2))
    g.join([(layer.keys, layer.values) for layer in a.layers])
    g.join([(layer.keys, layer.values) for layer in b.layers])  # three rows: the slots grow past 2
    assert g.rows == 3 and g.cache.slots >= 3
    g._ensure(3, 300)  # capacity grows to a power of two, contents kept
    assert g.cache.capacity == 512
    torch.testing.assert_close(g.cache.keys[1][0, :, :3], a.layers[1].keys[0])
    torch.testing.assert_close(g.cache.values[0][2, :, :5], b.layers[0].values[1])
    g.select([2])  # drop the first two rows: row 2 moves to slot 0
    assert g.rows == 1
    torch.testing.assert_close(g.cache.keys[1][0, :, :5], b.layers[1].keys[1])


def test_steps_over_the_slot_cache_match_the_growable_cache(lm):
    # Two rows of different lengths: left-padded in the growable cache, unpadded slots here.
    dec = LlamaDecoder.for_model(lm.model)
    g = GraphDecoder(dec, slots=4, context_length=4096, capture=False)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    cache = mask = None
    for p in prompts:
        c = _prefill(lm.model, torch.tensor([p]))
        g.join([(layer.keys, layer.values) for layer in c.layers])
        cache, mask = kv.merge(cache, mask, c, torch.ones(1, len(p), dtype=torch.long))
    tok = torch.tensor([[3], [4]])
    pos = torch.tensor([[6], [3]])
    with torch.inference_mode():
        for _ in range(6):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
            want = dec.step(tok, pos, mask=mask[:, None, None, :].bool(), cache=cache)
            got = g.step(tok, pos, max_position=int(pos.max()), intervention=None, plan=None)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            tok, pos = want.argmax(-1, keepdim=True), pos + 1


def test_graph_steps_follow_rows_joining_and_leaving(lm, monkeypatch):
    # Stand-in graphs without an SAE: one row, then a second joins (the slots grow from one to two at the same
    # capacity), then the first leaves, so the last steps reuse the batch-1 bucket captured before the growth.
    # Each step gives the growable cache's logits, and no cached graph reads freed memory.
    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    dec = LlamaDecoder.for_model(lm.model)
    g = GraphDecoder(dec, slots=1, context_length=4096, capture=True)
    cache = mask = None
    tok, pos = torch.empty(0, 1, dtype=torch.long), torch.empty(0, 1, dtype=torch.long)

    def steps(n):
        nonlocal tok, pos, mask
        with torch.inference_mode():
            for _ in range(n):
                mask = torch.cat([mask, torch.ones(len(tok), 1, dtype=mask.dtype)], 1)
                want = dec.step(tok, pos, mask=mask[:, None, None, :].bool(), cache=cache)
                got = g.step(tok, pos, max_position=int(pos.max()), intervention=None, plan=None)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
                _assert_cached_graphs_read_live_memory(g)
                tok, pos = want.argmax(-1, keepdim=True), pos + 1

    for prompt, first in (([5, 6, 7, 8, 9, 10], 3), ([11, 12, 13], 4)):
        c = _prefill(lm.model, torch.tensor([prompt]))
        g.join([(layer.keys, layer.values) for layer in c.layers])
        cache, mask = kv.merge(cache, mask, c, torch.ones(1, len(prompt), dtype=torch.long))
        tok, pos = torch.cat([tok, torch.tensor([[first]])]), torch.cat([pos, torch.tensor([[len(prompt)]])])
        steps(3)
    assert g.cache.slots == 2
    g.select([1])
    cache, mask = kv.select(cache, mask, [1])
    tok, pos = tok[1:], pos[1:]
    steps(3)
    assert g.replays == 9 and g.capture


def _graph_worker(model_dir, sae_dir, graphs: bool, monitor: MonitorConfig | None = None, *, capture: bool = True,
                  max_batch: int = 4):
    """A started worker on CPU with the tiny SAE attached; in graph mode with `capture`, steps take the graph path
    (with whatever `GraphDecoder._record` the test installed). Returns it and the list monitor records go to."""
    # on the CPU also on a GPU machine: this is the CPU half of the graph tests
    w = start_worker(model_dir, sae_dir, max_batch_size=max_batch, cuda_graphs=graphs, device="cpu")
    records: list = []
    if monitor is not None:
        w.intervention.set_monitor(monitor)
        w.monitor_sink = records.extend
    if graphs and capture:
        w.call(lambda wk: wk._lean_decoder(wk.loaded)).result(30)
        w._graphs.capture = True
    return w, records


def test_worker_in_slot_mode_matches_the_growable_mode(tiny_model_dir, tiny_sae_dir):
    outs = []
    for graphs in (False, True):
        w, _ = _graph_worker(tiny_model_dir, tiny_sae_dir, graphs, capture=False)
        try:
            # Six requests through four slots: rows join and leave mid-flight.
            outs.append(run(w, requests(w.loaded.tokenizer,
                                        SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))))
            assert (w._graphs is not None) == graphs
        finally:
            w.stop()
            w.intervention.detach()
    assert outs[0] == outs[1]
    assert len(outs[0]) == len(PROMPTS)


class _Reads(TorchDispatchMode):
    """Records the storages an eager run reads that it did not create: what a CUDA graph of the run would hold
    raw pointers to."""

    def __init__(self) -> None:
        super().__init__()
        self.made: set[int] = set()  # data_ptr of storages created (or viewed) during the run
        self.reads: dict[int, StorageWeakRef] = {}  # data_ptr -> storage, for storages from outside the run

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.made:
                self.reads.setdefault(t.untyped_storage().data_ptr(), StorageWeakRef(t.untyped_storage()))
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.made.add(t.untyped_storage().data_ptr())
        return out


def _run_reading(fn):
    with _Reads() as reads:
        outs = fn()
    return outs, reads.reads


class _EagerReplay:
    """Stands in for a CUDA graph on CPU: replay reruns the recorded function into the same output tensors, and
    checks what a real graph relies on: every storage the capture read from outside is still alive (a graph keeps
    only its address), and the rerun reads exactly those storages (a graph cannot follow a Python attribute that
    now names another tensor)."""

    def __init__(self, fn, outs, reads):
        self.fn, self.outs, self.reads = fn, outs, reads

    def assert_reads_alive(self):
        dead = [hex(ptr) for ptr, ref in self.reads.items() if ref.expired()]
        assert not dead, f"a cached graph reads freed memory at {dead}"

    def replay(self):
        self.assert_reads_alive()
        new_outs, reads = _run_reading(self.fn)
        assert reads.keys() == self.reads.keys(), "the replay reads other memory than the capture did"
        for out, new in zip(self.outs, new_outs, strict=True):
            if out.data_ptr() != new.data_ptr():  # (monitored indices may be a view of a static tensor)
                out.copy_(new)


def _eager_record(self, fn):
    outs, reads = _run_reading(fn)
    return _EagerReplay(fn, outs, reads), outs


def _assert_cached_graphs_read_live_memory(g: GraphDecoder) -> None:
    for graph, *_ in g._graphs.values():
        if isinstance(graph, _EagerReplay):  # (a real CUDA graph cannot be inspected this way)
            graph.assert_reads_alive()


def test_graph_steps_read_steering_from_the_static_buffer(tiny_model_dir, tiny_sae_dir, monkeypatch):
    # The graph path's logic (bucketed batch, static add buffer, replay into a static output) run eagerly:
    # captures are replaced by reruns, so on CPU this checks everything but the CUDA recording itself.
    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    outs = []
    for graphs in (False, True):
        w, _ = _graph_worker(tiny_model_dir, tiny_sae_dir, graphs)
        try:
            reqs = [dataclasses.replace(r, params=dataclasses.replace(r.params, max_tokens=4 + 3 * i))
                    for i, r in enumerate(requests(w.loaded.tokenizer, SamplingParams(
                        max_tokens=12, temperature=0.0, ignore_eos=True))) if i % 3 != 2]  # unsteered and additive
            outs.append(run(w, reqs))
            if graphs:
                assert w._graphs.replays > 0
                assert len(w._graphs._graphs) >= 2  # several batch-size buckets (rows leave as they finish)
        finally:
            w.stop()
            w.intervention.detach()
    assert outs[0] == outs[1]


@pytest.mark.parametrize("monitor", [None, MonitorConfig(enabled=True, features=(3, 9, 40)),
                                     MonitorConfig(enabled=True, top_k=4)], ids=["clamp", "selected", "top-k"])
def test_graph_steps_clamp_and_monitor_like_eager_steps(tiny_model_dir, tiny_sae_dir, monkeypatch, monitor):
    # Clamps (per-row, fixed-shape) and monitoring inside the graph path, against the eager growable-cache path:
    # the same tokens and the same activation records.
    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    outs, recs = [], []
    for graphs in (False, True):
        w, records = _graph_worker(tiny_model_dir, tiny_sae_dir, graphs, monitor)
        try:
            reqs = [dataclasses.replace(r, params=dataclasses.replace(r.params, max_tokens=4 + 3 * i))
                    for i, r in enumerate(requests(w.loaded.tokenizer, SamplingParams(
                        max_tokens=12, temperature=0.0, ignore_eos=True)))]  # unsteered, additive and clamp rows
            outs.append(run(w, reqs))
            if graphs:
                assert w._graphs.replays > 0
        finally:
            w.stop()
            w.intervention.detach()
        gen = sorted((r.request_id, r.choice, r.position, r.token_id,
                      tuple((a.index, round(a.value, 4)) for a in r.activations))
                     for r in records if r.phase == "generated")
        recs.append(gen)
    assert outs[0] == outs[1]
    if monitor is not None:
        assert recs[0] and recs[0] == recs[1]


def test_a_failed_capture_falls_back_to_eager_steps(tiny_model_dir, tiny_sae_dir, monkeypatch):
    def broken_record(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphDecoder, "_record", broken_record)
    outs = []
    for graphs in (False, True):
        w, _ = _graph_worker(tiny_model_dir, tiny_sae_dir, graphs)
        try:
            outs.append(run(w, requests(w.loaded.tokenizer, SamplingParams(max_tokens=6, temperature=0.0,
                                                                           ignore_eos=True))))
            if graphs:
                assert not w._graphs.capture and w._graphs.replays == 0
        finally:
            w.stop()
            w.intervention.detach()
    assert outs[0] == outs[1]


class _StaleReplay(_EagerReplay):
    """A graph whose replays leave its outputs as the capture left them (as a graph reading a stale buffer would):
    right on the step it was captured, wrong on later ones."""

    def replay(self):
        pass


def test_a_replay_that_disagrees_with_the_plain_run_falls_back_to_eager_steps(tiny_model_dir, tiny_sae_dir,
                                                                             monkeypatch, caplog):
    # The recording's outputs are zeros (a graph that computes nothing): the first replay disagrees with the warm-up
    # run, so the step is served eagerly, a warning names the mismatch, and no request sees a wrong token.
    def zero_record(self, fn):
        outs = tuple(torch.zeros_like(t) for t in fn())
        return _StaleReplay(fn, outs, {}), outs

    monkeypatch.setattr(GraphDecoder, "_record", zero_record)
    outs = []
    for graphs in (False, True):
        w, _ = _graph_worker(tiny_model_dir, tiny_sae_dir, graphs)
        try:
            with caplog.at_level("WARNING", logger="millm.engine.cuda_graphs"):
                outs.append(run(w, requests(w.loaded.tokenizer, SamplingParams(max_tokens=6, temperature=0.0,
                                                                               ignore_eos=True))))
            if graphs:
                assert not w._graphs.capture and w._graphs.replays == 0 and not w._graphs._graphs
        finally:
            w.stop()
            w.intervention.detach()
    assert outs[0] == outs[1]
    assert "GraphMismatch: output 0 of the replay is off by" in caplog.text


def test_check_replay_compares_floating_outputs_within_rounding():
    want = (torch.tensor([[10.0, -4.0, 2.0]]), torch.tensor([[3, 1]]))
    _check_replay((want[0] + 5e-3, torch.tensor([[1, 3]])), want)  # rounding, and tied indices in another order
    half = tuple(t.to(torch.bfloat16) if t.is_floating_point() else t for t in want)
    _check_replay((half[0] + 0.1, half[1]), half)
    for bad in (want[0] + 0.1, torch.full_like(want[0], float("nan"))):
        with pytest.raises(GraphMismatch, match="output 0"):
            _check_replay((bad, want[1]), want)


def test_steering_buffers_follow_a_slot_count_that_grows(tiny_model_dir, tiny_sae_dir, monkeypatch):
    # Two slots: a clamped request runs (the clamp buffers get two slots), then a clamped request with n=3 arrives
    # alone and the slots grow to three. Steps stay on the graph path and match the growable cache.
    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    outs = []
    for graphs in (False, True):
        w, _ = _graph_worker(tiny_model_dir, tiny_sae_dir, graphs, max_batch=2)
        try:
            tok = w.loaded.tokenizer
            steer = SteeringSpec((FeatureStrength(5, 3.0), FeatureStrength(9, -1.0)), mode="clamp")
            one = GenerationRequest("one", tuple(tok("Hello world").input_ids),
                                    SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True), steering=steer)
            three = GenerationRequest("three", tuple(tok("The stars").input_ids),
                                      SamplingParams(max_tokens=6, temperature=1.0, seed=3), n=3, steering=steer)
            outs.append((run(w, [one]), run(w, [three])))
            if graphs:
                assert w._graphs.cache.slots == 3 and w._graphs.replays > 0
                assert w._graphs.capture  # no step fell back to eager
        finally:
            w.stop()
            w.intervention.detach()
    assert outs[0] == outs[1]


def _mixed_waves(seed: int) -> list[tuple[MonitorConfig, list[GenerationRequest]]]:
    """Three waves of random requests: steering none / add (special tokens in or out) / clamp of 1 or 12
    features, n of 1 or 2, prompts of 2-20 tokens, 2-14 new tokens; monitoring off, selected or top-k per wave."""
    rng = random.Random(seed)
    waves = []
    for w in range(3):
        mon = rng.choice([MonitorConfig(), MonitorConfig(enabled=True, features=(3, 40)),
                          MonitorConfig(enabled=True, top_k=4)])
        reqs = []
        for i in range(rng.randint(1, 6)):
            kind = rng.choice(["none", "add", "clamp", "clamp-12"])
            steer = None
            if kind == "add":
                steer = SteeringSpec((FeatureStrength(rng.randrange(256), 4.0),), mode="add",
                                     steer_special_tokens=rng.random() < 0.5)
            elif kind == "clamp":
                steer = SteeringSpec((FeatureStrength(rng.randrange(256), 3.0),), mode="clamp")
            elif kind == "clamp-12":
                steer = SteeringSpec(tuple(FeatureStrength(j, 2.0) for j in rng.sample(range(256), 12)), mode="clamp")
            n = rng.choice([1, 1, 2])
            params = SamplingParams(max_tokens=rng.randint(2, 14), temperature=0.0 if n == 1 else 1.0, seed=seed + i,
                                    ignore_eos=True)
            prompt = tuple(range(5 + i, 5 + i + rng.randint(2, 20)))
            reqs.append(GenerationRequest(f"w{w}r{i}", prompt, params, steering=steer, n=n))
        waves.append((mon, reqs))
    return waves


def run_waves(w, waves: list[tuple[MonitorConfig, list[GenerationRequest]]], records: list) -> list:
    """Each wave's requests together, after its monitor settings are set on the worker thread as the server sets
    them; monitor records go to `records`. Stand-in graphs are checked after every wave."""
    outs = []
    for cfg, reqs in waves:
        w.call(lambda wk, cfg=cfg: wk.intervention.set_monitor(cfg), exclusive=False).result(30)
        w.monitor_sink = records.extend if cfg.enabled else None
        outs.append(run(w, reqs))
        if w._graphs is not None:
            _assert_cached_graphs_read_live_memory(w._graphs)
    return outs


def _graph_path_vs_growable_cache(model_dir, sae_dir, waves, *, max_batch: int = 4) -> list:
    """run_waves on the growable cache, then on the graph path with stand-in replays: each side's outputs and
    sorted monitor records."""
    results = []
    for graphs in (False, True):
        w, _ = _graph_worker(model_dir, sae_dir, graphs, max_batch=max_batch)
        records: list = []
        try:
            outs = run_waves(w, waves, records)
            if graphs:
                assert w._graphs.capture and w._graphs.replays > 0  # no step fell back to eager
        finally:
            w.stop()
            w.intervention.detach()
        results.append((outs, sorted((r.request_id, r.choice, r.position, r.token_id,
                                      tuple(a.index for a in r.activations)) for r in records)))
    return results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_request_mixes_on_the_graph_path_match_the_growable_cache(tiny_model_dir, tiny_sae_dir, monkeypatch,
                                                                         seed):
    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    eager, graphs = _graph_path_vs_growable_cache(tiny_model_dir, tiny_sae_dir, _mixed_waves(seed))
    assert eager == graphs


def test_graphs_cached_across_monitor_changes_read_live_memory(lm, tiny_model_dir, tiny_sae_dir, monkeypatch):
    # Selected features, top-k, off, then the same selected features again: each change gives the intervention a
    # new index tensor; a graph captured with the old one must keep it alive (a graph holds only its address) or
    # be dropped, and a replay must read the tensor its capture read.
    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    selected = MonitorConfig(enabled=True, features=(3, 9, 40))
    configs = [selected, MonitorConfig(enabled=True, top_k=4), MonitorConfig(), selected,
               MonitorConfig(enabled=True, features=(7,)), selected]
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    waves = [(cfg, [dataclasses.replace(r, request_id=f"{i}{r.request_id}") for r in requests(lm.tokenizer, params)[:2]])
             for i, cfg in enumerate(configs)]
    eager, graphs = _graph_path_vs_growable_cache(tiny_model_dir, tiny_sae_dir, waves)
    assert eager == graphs
    assert eager[1]


BENCH_MODES = ("unsteered", "additive", "clamp", "monitor selected", "monitor top-8")


def bench_waves(d_sae: int, *, rounds: int = 3, tokens: int = 24) -> list[tuple[MonitorConfig, list[GenerationRequest]]]:
    """The decode rounds of `make bench`: one request at a time in every steering and monitoring mode, the order
    rotated each round (request ids are round-mode)."""
    feats = [(i * 97 + 5) % d_sae for i in range(32)]
    steer = {"additive": SteeringSpec(tuple(FeatureStrength(f, 4.0) for f in feats[:4]), mode="add"),
             "clamp": SteeringSpec(tuple(FeatureStrength(f, 5.0) for f in feats[:16]), mode="clamp")}
    monitor = {"monitor selected": MonitorConfig(enabled=True, features=tuple(feats[:16])),
               "monitor top-8": MonitorConfig(enabled=True, top_k=8)}
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    waves = []
    for rnd in range(rounds):
        for i in range(len(BENCH_MODES)):
            mode = BENCH_MODES[(i + rnd) % len(BENCH_MODES)]
            req = GenerationRequest(f"{rnd}-{mode}", tuple(range(10, 74)), params, steering=steer.get(mode))
            waves.append((monitor.get(mode, MonitorConfig()), [req]))
    return waves


def test_the_bench_decode_rounds_on_the_graph_path_match_eager(monkeypatch):
    # The demo model and its topk SAE, as `make bench` serves them.
    from millm.demo import assets_dir

    monkeypatch.setattr(GraphDecoder, "_record", _eager_record)
    waves = bench_waves(1536)
    eager, graphs = _graph_path_vs_growable_cache(assets_dir() / "model", assets_dir() / "sae", waves, max_batch=16)
    assert eager == graphs
    outs = {rid: toks for wave in eager[0] for rid, toks in wave.items()}
    assert outs["0-additive"] != outs["0-unsteered"] and outs["0-clamp"] != outs["0-unsteered"]  # steering applied
    assert eager[1]  # monitoring produced records
