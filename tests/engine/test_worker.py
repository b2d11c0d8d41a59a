"""The continuous-batching worker: batched output equals solo output, with per-row steering, over the growable
KV cache and over the static slot cache of CUDA-graph mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from millm.engine import hookpoints
from millm.engine import worker as worker_module
from millm.engine.intervention import SaeIntervention
from millm.engine.model_loading import load_model
from millm.engine.rows import sample_and_emit
from millm.engine.types import FeatureStrength, GenerationEvent, GenerationRequest, SamplingParams, SteeringSpec
from millm.engine.worker import Worker
from millm.errors import QueueFull
from millm.sae.loading import load_sae

PROMPTS = ["Hello world", "Once upon a time there was a little boat on the sea", "The stars",
           "Numbers 0 1 2 3 4 5 and more text here", "café naïve", "Hello"]


def start_worker(model_dir, sae_dir, *, max_batch_size: int = 8, cuda_graphs: bool = False, device: str = "auto",
                 dtype: str = "auto") -> Worker:
    """A started worker serving the model in model_dir with the SAE in sae_dir attached (also used by the
    CUDA-graph tests here and in tests/gpu)."""
    w = Worker(max_batch_size=max_batch_size, cuda_graphs=cuda_graphs)
    w.loaded = load_model(str(model_dir), device=device, dtype=dtype)
    sae = load_sae(sae_dir).to(device=w.loaded.device, dtype=w.loaded.dtype)
    hp = hookpoints.resolve_hookpoint(w.loaded.model, sae.cfg.hook_name)
    w.intervention = SaeIntervention(sae=sae, hookpoint=hp, attach_fn=hookpoints.attach,
                                     device=w.loaded.device, dtype=w.loaded.dtype)
    w.start()
    return w


@pytest.fixture(scope="module", params=[False, True], ids=["growable-cache", "slot-cache"])
def worker(request, tiny_model_dir, tiny_sae_dir):
    # slot-cache: the CUDA-graph mode's static cache, run without capture on CPU (engine/cuda_graphs.py)
    w = start_worker(tiny_model_dir, tiny_sae_dir, cuda_graphs=request.param)
    yield w
    w.stop()


def run(worker: Worker, reqs: list[GenerationRequest], finals: dict[str, GenerationEvent] | None = None,
        record: Callable[[GenerationEvent, str], None] | None = None) -> dict[str, list[int]]:
    """Each request's generated token ids; `finals`, when given, receives each request's last event, and
    `record`, when given, sees every event with its request id as the worker emits it."""
    out: dict[str, list[int]] = {r.request_id: [] for r in reqs}
    left = [sum(r.n for r in reqs)]
    done = threading.Event()
    lock = threading.Lock()

    def make_sink(rid: str):
        def sink(ev):
            if isinstance(ev, Exception):
                raise AssertionError(ev)
            if isinstance(ev, GenerationEvent):
                if record is not None:
                    record(ev, rid)
                out[rid].extend(ev.token_ids)
                if ev.finish_reason:
                    if finals is not None:
                        finals[rid] = ev
                    with lock:
                        left[0] -= 1
                        if not left[0]:
                            done.set()
        return sink

    for r in reqs:
        worker.submit(r, make_sink(r.request_id))
    assert done.wait(120)
    return out


def steering(i: int) -> SteeringSpec | None:
    if i % 3 == 0:
        return None
    mode = "add" if i % 3 == 1 else "clamp"
    return SteeringSpec((FeatureStrength(i * 7, 6.0 if mode == "add" else 4.0),), mode=mode)


def requests(tok, params) -> list[GenerationRequest]:
    return [GenerationRequest(f"r{i}", tuple(tok(p).input_ids), params, steering=steering(i))
            for i, p in enumerate(PROMPTS)]


def test_batched_greedy_equals_solo_with_per_row_steering(worker):
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    reqs = requests(worker.loaded.tokenizer, params)
    solo: dict[str, list[int]] = {}
    for r in reqs:
        solo.update(run(worker, [r]))
    batched = run(worker, reqs)
    assert batched == solo
    # Steering really applies per row: the same prompt without steering differs.
    unsteered = run(worker, [GenerationRequest("u1", reqs[1].prompt_ids, params)])
    assert unsteered["u1"] != solo["r1"]


def test_seeded_sampling_is_batch_independent(worker):
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=42)
    reqs = requests(worker.loaded.tokenizer, params)
    solo = run(worker, [reqs[2]])
    batched = run(worker, reqs)
    assert batched["r2"] == solo["r2"]


def test_rows_join_and_leave_mid_flight(worker):
    tok = worker.loaded.tokenizer
    long = GenerationRequest("long", tuple(tok("Hello world").input_ids),
                             SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    short = [GenerationRequest(f"s{i}", tuple(tok(p).input_ids),
                               SamplingParams(max_tokens=5 + i, temperature=0.0, ignore_eos=True))
             for i, p in enumerate(PROMPTS[1:4])]
    solo = run(worker, [long])
    solo_short = {}
    for s in short:
        solo_short.update(run(worker, [s]))
    mixed = run(worker, [long, *short])
    assert mixed["long"] == solo["long"]
    assert {k: mixed[k] for k in solo_short} == solo_short


def test_n_choices_share_a_prefill(worker):
    tok = worker.loaded.tokenizer
    r = GenerationRequest("n", tuple(tok("Hello").input_ids), SamplingParams(max_tokens=8, temperature=1.0, seed=3),
                          n=3)
    events: list[GenerationEvent] = []
    done = threading.Event()

    def sink(ev):
        if isinstance(ev, GenerationEvent):
            events.append(ev)
            if sum(1 for e in events if e.finish_reason) == 3:
                done.set()

    worker.submit(r, sink)
    assert done.wait(60)
    per_choice = {c: [t for e in events if e.choice == c for t in e.token_ids] for c in range(3)}
    assert len({tuple(v) for v in per_choice.values()}) > 1


def _held(worker: Worker, seconds: float = 0.3) -> None:
    """Keep the worker busy in an exclusive call for a moment, so that requests submitted now wait together."""
    gate = threading.Event()
    worker.call(lambda wk: gate.wait(10))
    threading.Timer(seconds, gate.set).start()


def _two_streams(worker: Worker, params: SamplingParams, make_sink: Callable[[str], Callable[[Any], None]]) -> None:
    """Requests "a" and "b" submitted together (so prefilled together), each one's events to `make_sink(rid)`'s sink;
    returns once "b" has finished."""
    ended = threading.Event()

    def watched(rid: str) -> Callable[[Any], None]:
        sink = make_sink(rid)

        def watch(ev: Any) -> None:
            sink(ev)
            if rid == "b" and isinstance(ev, GenerationEvent) and ev.finish_reason:
                ended.set()
        return watch

    tok = worker.loaded.tokenizer
    _held(worker)
    worker.submit(GenerationRequest("a", tuple(tok("Hello").input_ids), params), watched("a"))
    worker.submit(GenerationRequest("b", tuple(tok("The stars").input_ids), params), watched("b"))
    assert ended.wait(30)


def test_waiting_requests_are_prefilled_together_and_equal_solo(worker):
    from millm.engine.intervention import MonitorConfig

    tok = worker.loaded.tokenizer
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    # Prompts of different lengths (left-padded together), mixed steering, and two sampled choices of one prompt.
    reqs = requests(tok, params) + [GenerationRequest("n2", tuple(tok("Hello").input_ids),
                                                      SamplingParams(max_tokens=6, temperature=1.0, seed=5), n=2)]
    records: list = []
    iv = worker.intervention
    iv.set_monitor(MonitorConfig(enabled=True, top_k=4))
    worker.monitor_sink = records.extend
    try:
        solo: dict[str, list[int]] = {}
        for r in reqs:
            solo.update(run(worker, [r]))
        solo_prompt = sorted((m.request_id, m.position, m.token_id, tuple(a.index for a in m.activations))
                             for m in records if m.phase == "prompt")
        records.clear()
        before = worker.prefills
        _held(worker)
        together = run(worker, reqs)
        assert worker.prefills == before + 1  # one forward for all seven requests
    finally:
        iv.set_monitor(MonitorConfig())
        worker.monitor_sink = None
    assert together == solo
    got_prompt = sorted((m.request_id, m.position, m.token_id, tuple(a.index for a in m.activations))
                        for m in records if m.phase == "prompt")
    assert got_prompt == solo_prompt  # padding left out, positions counted from each prompt's start


def test_background_requests_leave_a_row_to_live_ones(worker):
    """Background rows (batch lines) stop at one row fewer than the batch, more of them wait queued to refill rows
    at once, and a live request submitted after them all takes the free row in the first prefill."""
    tok = worker.loaded.tokenizer
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    bg = [GenerationRequest(f"b{i}", tuple(tok(PROMPTS[i % len(PROMPTS)]).input_ids), params, background=True)
          for i in range(2 * worker.max_batch_size)]
    live = GenerationRequest("live", tuple(tok("Hello world").input_ids), params)
    solo = run(worker, [live, bg[1]])
    order: list[tuple[str, str]] = []  # (request id, "start" or "end"), in the order the worker emits them
    lock = threading.Lock()
    started: set[str] = set()

    def record(ev: GenerationEvent, rid: str) -> None:
        with lock:
            if rid not in started:
                started.add(rid)
                order.append((rid, "start"))
            if ev.finish_reason:
                order.append((rid, "end"))

    finals: dict[str, GenerationEvent] = {}
    _held(worker)
    out = run(worker, [*bg, live], finals, record)
    assert out["live"] == solo["live"] and out["b1"] == solo["b1"]
    in_rows, most = 0, 0
    for rid, what in order:
        if rid.startswith("b"):
            in_rows += 1 if what == "start" else -1
            most = max(most, in_rows)
    assert most == worker.max_batch_size - 1
    first_end = next(i for i, (_, what) in enumerate(order) if what == "end")
    assert ("live", "start") in order[:first_end]  # admitted with the first background rows, not after them


def test_queued_background_requests_leave_the_queue_to_live_ones():
    w = Worker(queue_size=1, max_batch_size=1)  # not started: requests only queue
    params = SamplingParams(max_tokens=4)
    w.submit(GenerationRequest("b0", (1, 2), params, background=True), lambda ev: None)
    w.submit(GenerationRequest("b1", (1, 2), params, background=True), lambda ev: None)
    with pytest.raises(QueueFull):  # background lines see the whole queue
        w.submit(GenerationRequest("b2", (1, 2), params, background=True), lambda ev: None)
    w.submit(GenerationRequest("l0", (1, 2), params), lambda ev: None)
    w.submit(GenerationRequest("l1", (1, 2), params), lambda ev: None)  # live ones count only live ones
    with pytest.raises(QueueFull):
        w.submit(GenerationRequest("l2", (1, 2), params), lambda ev: None)
    assert [h.request.request_id for h in w._pending] == ["l0", "l1", "b0", "b1"]


def test_finished_rows_not_yet_dropped_leave_their_slots_to_the_queue():
    # A row's finish goes out in its step's emit, and the row leaves at the end of that step; on a loaded machine its
    # client got its [DONE] and was back with its next request in between (benchmarks.load_test's 8 closed-loop
    # streams with a queue of 4 met a 429 about one run in twenty: 8 finished rows, 4 waiting).
    from types import SimpleNamespace

    w = Worker(queue_size=1, max_batch_size=2)  # not started: requests only queue
    w._rows = [SimpleNamespace(done=True), SimpleNamespace(done=True)]  # type: ignore[list-item]
    params = SamplingParams(max_tokens=4)
    for i in range(3):  # the queue (1) and the two slots the finished rows free
        w.submit(GenerationRequest(f"l{i}", (1, 2), params), lambda ev: None)
    with pytest.raises(QueueFull):
        w.submit(GenerationRequest("l3", (1, 2), params), lambda ev: None)
    w._rows[0].done = False  # a running row keeps its slot
    with pytest.raises(QueueFull):
        w.submit(GenerationRequest("l4", (1, 2), params), lambda ev: None)
    w._rows = []


def test_a_request_whose_steering_fails_is_failed_alone(worker):
    tok = worker.loaded.tokenizer
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    bad = GenerationRequest("bad", tuple(tok("Hello").input_ids), params,
                            steering=SteeringSpec((FeatureStrength(10**6, 1.0),), mode="add"))  # no such feature
    good = [GenerationRequest(f"g{i}", tuple(tok(p).input_ids), params) for i, p in enumerate(PROMPTS[:3])]
    solo: dict[str, list[int]] = {}
    for r in good:
        solo.update(run(worker, [r]))
    errors: list[Exception] = []
    failed = threading.Event()

    def bad_sink(ev):
        if isinstance(ev, Exception):
            errors.append(ev)
            failed.set()

    _held(worker)
    worker.submit(bad, bad_sink)
    together = run(worker, good)
    assert failed.wait(10) and len(errors) == 1
    assert together == solo


def test_a_row_whose_logits_overflow_fails_alone(tiny_model_dir, tiny_sae_dir):
    # In one batch: a request steered so hard that its activations overflow (NaN logits) ends with a typed error
    # naming its steering, while the rows beside it decode exactly as they do alone. A model whose own logits are
    # NaN fails its unsteered requests with an internal error that says so.
    from millm.errors import InternalError, InvalidRequest

    w = start_worker(tiny_model_dir, tiny_sae_dir, device="cpu")
    try:
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        reqs = requests(w.loaded.tokenizer, params)[:3]
        solo = run(w, reqs)
        bad = GenerationRequest("bad", reqs[0].prompt_ids, params,
                                steering=SteeringSpec((FeatureStrength(5, 1e300),)))
        finals: dict[str, GenerationEvent] = {}
        out = run(w, [reqs[0], bad, *reqs[1:]], finals)
        assert out["bad"] == [] and {k: v for k, v in out.items() if k != "bad"} == solo
        assert finals["bad"].finish_reason == "error"
        f = finals["bad"].failure
        assert isinstance(f, InvalidRequest) and (f.param, f.code) == ("steering", "non_finite_logits")
        assert all(finals[r.request_id].finish_reason == "length" for r in reqs)

        w.call(lambda wk: wk.loaded.model.lm_head.weight.data[3].fill_(float("nan"))).result(30)
        finals.clear()
        out = run(w, reqs[:1], finals)
        f = finals["r0"].failure
        assert out["r0"] == [] and isinstance(f, InternalError) and f.code == "non_finite_logits"
        assert "float32" in f.message
    finally:
        w.stop()
        w.intervention.detach()


def test_decode_steps_use_the_kernel_of_their_batch_regime(tiny_model_dir, monkeypatch):
    # engine/weight_layout.choose_kernels picks a kernel for one-row steps, one for more and one for prefills; the
    # worker switches the lean decoder's kernel per step, and prefills with the prefill kernel
    import torch
    import torch.nn.functional as F

    from millm.engine import weight_layout
    from millm.engine import worker as worker_mod

    used: list[tuple[str, int, int]] = []

    def recording(name):
        def fn(x, w, b):
            used.append((name, x.shape[0], x.shape[1]))
            return F.linear(x, w, b)
        return fn

    fns = {"stored": recording("stored"), "onednn": recording("batched")}
    monkeypatch.setattr(worker_mod, "choose_kernels",
                        lambda model, **kw: weight_layout.Kernels("stored", "onednn", prefill="onednn"))
    monkeypatch.setattr(worker_mod, "linear_fn", lambda choice: fns[choice])
    monkeypatch.setattr(worker_mod, "prefill_fn", lambda choice: recording(f"prefill {choice}"))
    w = Worker(max_batch_size=4)
    w.loaded = load_model(str(tiny_model_dir), device="cpu")
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    ids = tuple(w.loaded.tokenizer("Hello world").input_ids)
    with torch.inference_mode():
        w.submit(GenerationRequest("a", ids, params), lambda ev: None)
        w._admit()
        w._step()  # one row
        w.submit(GenerationRequest("b", ids, params), lambda ev: None)
        w._admit()
        while w._rows:
            w._step()
    steps = [(name, rows) for name, rows, t in used if not name.startswith("prefill")]
    assert {name for name, rows in steps if rows == 1} == {"stored"}
    assert {name for name, rows in steps if rows > 1} == {"batched"}
    assert {t for name, rows, t in used if not name.startswith("prefill")} == {1}
    assert {name for name, rows, t in used if t > 1} == {"prefill onednn"}  # prefills (and their LM head products)
    assert w._decoder is not None and w._decoder.fused_prefill  # (oneDNN takes the fused weights in either layout)


def _worker_on_kernels(tiny_model_dir, monkeypatch, kernels) -> Worker:
    """A started worker on the tiny model whose kernel timing returns `kernels` (skipped without oneDNN packing)."""
    from millm.engine import weight_layout

    if not weight_layout.onednn_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        pytest.skip("torch built without oneDNN weight packing")
    monkeypatch.setattr(worker_module, "choose_kernels", lambda model, **kw: kernels)
    w = Worker(max_batch_size=4)
    w.loaded = load_model(str(tiny_model_dir), device="cpu")
    w.start()
    return w


def _batched_equals_solo(w: Worker, max_tokens: int) -> None:
    tok = w.loaded.tokenizer
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    reqs = [GenerationRequest(f"r{i}", tuple(tok(p).input_ids), params)
            for i, p in enumerate(["Hello world", "The cat sat on", "One two three four five"])]
    solo = {r.request_id: run(w, [r])[r.request_id] for r in reqs}
    assert run(w, reqs) == solo


def test_batched_steps_on_packed_weights_give_the_solo_tokens(tiny_model_dir, monkeypatch):
    # the batch regime's `onednn-packed` kernel (engine/weight_layout.PackedLinear): a packed copy of the lean
    # decoder's weights, built when the decoder is, used for steps of two rows or more, dropped with the model
    from millm.engine import weight_layout

    w = _worker_on_kernels(tiny_model_dir, monkeypatch, weight_layout.Kernels("stored", weight_layout.PACKED,
                                                                              onednn=True))
    try:
        _batched_equals_solo(w, 8)
        (name, fn), *_ = w._linears[1]
        assert name == weight_layout.PACKED and isinstance(fn, weight_layout.PackedLinear)
        assert fn.nbytes == sum(t.numel() * 4 for t in w._decoder.product_weights())
        w.swap_model(None).result()
        assert w._linears == worker_module._STORED  # the packed copy goes with the model
    finally:
        w.stop()


@pytest.mark.parametrize("prefill", ["stored", "onednn"])
def test_prompts_of_different_lengths_prefilled_together_on_the_prefill_kernel_give_the_solo_tokens(
        tiny_model_dir, tiny_sae_dir, monkeypatch, prefill):
    # Kernels.prefill (MKL or oneDNN): every prefill keeping only the last logits runs on the lean step with it, the
    # left-padded ones too (engine/llama_decode.prefill_mask), so a prompt alone and padded with others takes the
    # same kernel; with steering and one-token prompts
    from millm.engine import weight_layout

    if prefill == "onednn" and not weight_layout.onednn_available():
        pytest.skip("torch built without oneDNN")
    kernel = weight_layout.prefill_fn(prefill)
    shapes: list[tuple[int, ...]] = []

    def recording(x, w, b):
        shapes.append(tuple(x.shape[:2]))
        return kernel(x, w, b)

    monkeypatch.setattr(worker_module, "choose_kernels", lambda model, **kw: weight_layout.Kernels(prefill=prefill))
    monkeypatch.setattr(worker_module, "prefill_fn", lambda choice: recording)
    w = start_worker(tiny_model_dir, tiny_sae_dir)
    try:
        tok = w.loaded.tokenizer
        params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        reqs = requests(tok, params) + [GenerationRequest("one", tuple(tok("Hello").input_ids)[:1], params)]
        solo: dict[str, list[int]] = {}
        for r in reqs:
            solo.update(run(w, [r]))
        shapes.clear()
        _held(w)
        together = run(w, reqs)
        assert together == solo
        longest = max(len(r.prompt_ids) for r in reqs)
        assert (len(reqs), longest) in shapes  # the padded prefill ran on the lean step with the prefill kernel
    finally:
        w.stop()


def test_batched_steps_time_packed_weights_when_the_product_timing_picked_another_kernel(tiny_model_dir, monkeypatch):
    # packed weights were a candidate but plain oneDNN won the product timing: the batch regime's real steps still
    # time the packed kernel (weight_layout.Kernels.options), so the worker builds the packed copy, and every kernel
    # the trial tries gives the solo tokens
    from millm.engine import weight_layout

    w = _worker_on_kernels(tiny_model_dir, monkeypatch, weight_layout.Kernels("stored", "onednn", onednn=True,
                                                                              packed=True))
    try:
        _batched_equals_solo(w, 24)
        assert w._kernel_names[1] == ("onednn", "stored", weight_layout.PACKED)
        assert isinstance(w._linears[1][2][1], weight_layout.PackedLinear)
    finally:
        w.stop()


def test_a_sink_that_raises_fails_the_batch_but_not_the_generation_thread(tiny_model_dir, tiny_sae_dir):
    # A consumer's sink that raises mid-stream (a bug on its side) failed the step; failing the batch then called
    # the same sink again, which raised out of the worker's loop and ended the generation thread: every other
    # request, running or still to come, waited forever.
    w = start_worker(tiny_model_dir, tiny_sae_dir)
    try:
        tok = w.loaded.tokenizer
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        seen = [0]

        def broken_sink(ev):
            if isinstance(ev, GenerationEvent):
                seen[0] += 1
                if seen[0] >= 2:  # from the first decode step on
                    raise RuntimeError("the consumer's bug")

        other: list[object] = []
        ended = threading.Event()

        def other_sink(ev):
            if isinstance(ev, Exception) or (isinstance(ev, GenerationEvent) and ev.finish_reason):
                other.append(ev)
                ended.set()

        _held(w)
        w.submit(GenerationRequest("broken", tuple(tok("Hello").input_ids), params), broken_sink)
        w.submit(GenerationRequest("other", tuple(tok("The stars").input_ids), params), other_sink)
        assert ended.wait(30), "the other request of the failed batch never heard of its end"
        ev = other[0]
        assert isinstance(ev, GenerationEvent) and ev.finish_reason == "error"
        after = GenerationRequest("after", tuple(tok("Hello world").input_ids), params)
        assert len(run(w, [after])["after"]) == 6  # the generation thread still serves
    finally:
        w.stop()


def test_without_an_sae_rows_that_join_and_leave_decode_as_solo(tiny_model_dir):
    """The plain path (no SAE, plain greedy rows): the step's ids and positions come from one buffer per batch size,
    refilled each step; rows replacing others at the same batch size must not read a stale entry."""
    w = Worker(max_batch_size=3)
    w.loaded = load_model(str(tiny_model_dir))
    w.start()
    try:
        tok = w.loaded.tokenizer
        reqs = [GenerationRequest(f"p{i}", tuple(tok(p).input_ids),
                                  SamplingParams(max_tokens=(3, 9, 14, 6, 11, 4)[i], temperature=0.0, ignore_eos=True))
                for i, p in enumerate(PROMPTS)]
        solo: dict[str, list[int]] = {}
        for r in reqs:
            solo.update(run(w, [r]))
        events: list[GenerationEvent] = []
        mixed = run(w, reqs, record=lambda ev, rid: events.append(ev))  # three rows at a time, refilled as they end
        assert mixed == solo
        assert w._inputs is not None and w._inputs[0].shape == (w._inputs[0].shape[0], 1)
        tokens = [e for e in events if e.finish_reason is None]
        assert tokens and all(e == GenerationEvent(choice=0, text=e.text, token_ids=e.token_ids) for e in tokens)
    finally:
        w.stop()



def test_a_batch_whose_rows_change_kind_samples_each_row_its_own_way(tiny_model_dir, monkeypatch):
    """The step keeps whether every row is plain and greedy per batch, not per step: a row asking for logprobs and
    a sampled row, joining a plain greedy row mid-flight, get their logprobs and their seeded draws, the greedy row
    decodes as solo, and once they leave the batch is plain greedy again."""
    w = Worker(max_batch_size=4)
    w.loaded = load_model(str(tiny_model_dir))
    tok = w.loaded.tokenizer
    greedy = GenerationRequest("g", tuple(tok("Hello world").input_ids),
                               SamplingParams(max_tokens=14, temperature=0.0, ignore_eos=True))
    lp = GenerationRequest("lp", tuple(tok("The stars").input_ids),
                           SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, logprobs=2))
    seeded = GenerationRequest("t", tuple(tok("Once upon a time").input_ids),
                               SamplingParams(max_tokens=3, temperature=1.0, seed=5, ignore_eos=True))

    kinds: list[bool | None] = []  # each decode step's plain-greedy flag, as the step passed it on

    def emit(*args, **kwargs):
        if "plain_greedy" in kwargs:  # (a decode step's call; the prefill's works it out itself)
            kinds.append(kwargs["plain_greedy"])
        return sample_and_emit(*args, **kwargs)

    monkeypatch.setattr(worker_module, "sample_and_emit", emit)

    def drive(first: GenerationRequest, joining: dict[int, GenerationRequest] | None = None,
              ) -> dict[str, list[GenerationEvent]]:
        """Each request's events: `first` submitted, then joining[k] after k decode steps; stepped synchronously to
        the end."""
        joining = joining or {}
        events: dict[str, list[GenerationEvent]] = {r.request_id: [] for r in (first, *joining.values())}
        kinds.clear()

        def sink(rid: str) -> Callable[[object], None]:
            return lambda ev: events[rid].append(ev) if isinstance(ev, GenerationEvent) else None

        with torch.inference_mode():
            w.submit(first, sink(first.request_id))
            w._admit()
            while w._rows:
                if len(kinds) in joining:
                    r = joining[len(kinds)]
                    w.submit(r, sink(r.request_id))
                    w._admit()
                w._step()
        return events

    def ids(evs: list[GenerationEvent]) -> list[int]:
        return [t for e in evs for t in e.token_ids]

    solo_g, solo_t = ids(drive(greedy)["g"]), ids(drive(seeded)["t"])
    mixed = drive(greedy, {3: lp, 6: seeded})
    assert ids(mixed["g"]) == solo_g
    assert ids(mixed["t"]) == solo_t
    assert len(ids(mixed["lp"])) == 4
    assert all(len(e.logprobs) == 1 and len(e.logprobs[0].top) == 2 for e in mixed["lp"] if e.token_ids)
    assert not any(e.logprobs for e in mixed["g"])
    # lp ran in steps 3-5 (its first token came from its prefill), t in steps 6-7
    assert kinds == [True] * 3 + [False] * 5 + [True] * 5


def test_calls_and_requests_arriving_mid_generation_are_taken_between_steps(tiny_model_dir):
    """The generation thread decodes steps back to back while nothing waits; a call or a request that arrives meanwhile
    is taken between two steps, not after the running generation ends."""
    w = Worker(max_batch_size=4)
    w.loaded = load_model(str(tiny_model_dir))
    w.start()
    try:
        tok = w.loaded.tokenizer
        first = threading.Event()
        order: list[str] = []

        def sink(rid: str) -> Callable[[object], None]:
            def on(ev: object) -> None:
                if isinstance(ev, GenerationEvent):
                    first.set()
                    if ev.finish_reason:
                        order.append(rid)
            return on

        w.submit(GenerationRequest("long", tuple(tok("Hello world").input_ids),
                                   SamplingParams(max_tokens=600, temperature=0.0, ignore_eos=True)), sink("long"))
        assert first.wait(30)
        at_call = w.call(lambda w: w.steps, exclusive=False).result(30)
        w.submit(GenerationRequest("short", tuple(tok("The stars").input_ids),
                                   SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)), sink("short"))
        deadline = time.monotonic() + 60
        while len(order) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert order == ["short", "long"]
        assert at_call < w.steps - 100
    finally:
        w.stop()



@pytest.mark.parametrize("prefill", ["stored", "onednn"])
def test_a_prompt_logprobs_request_gets_the_completion_of_the_same_request_without_them(tmp_path, monkeypatch,
                                                                                         prefill):
    # A request asking for its prompt's logprobs (echo) needs every position's logits: its prefill ran HF's forward
    # (MKL, its LM head on every position), while the same prompt without them ran the lean step on the prefill
    # kernel (its LM head on the last position alone), so its completion's logprobs differed from the plain
    # request's (and a near-tie could change its tokens): on MKL, whose bits depend on the rows multiplied, and on
    # oneDNN, a kernel of its own (a model wide enough for the kernels to differ)
    from millm.engine import weight_layout
    from tests.fixtures.tiny_model import build_tiny_llama

    if prefill == "onednn" and not weight_layout.onednn_available():
        pytest.skip("torch built without oneDNN")
    monkeypatch.setattr(worker_module, "choose_kernels", lambda model, **kw: weight_layout.Kernels(prefill=prefill))
    w = Worker(max_batch_size=4)
    w.loaded = load_model(str(build_tiny_llama(tmp_path, hidden_size=256, num_layers=2)), device="cpu")
    w.start()
    try:
        tok = w.loaded.tokenizer
        params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, logprobs=3)
        ids = tuple(tok(PROMPTS[1]).input_ids)
        seen: dict[str, list] = {"plain": [], "echo": []}
        for req in (GenerationRequest("plain", ids, params),
                    GenerationRequest("echo", ids, params, prompt_logprobs=True)):
            run(w, [req], record=lambda ev, rid: seen[rid].extend(ev.logprobs))
        assert seen["echo"] == seen["plain"] and seen["plain"]
    finally:
        w.stop()


def test_sinks_defer_work_to_the_end_of_each_decode_step(tiny_model_dir, tiny_sae_dir, caplog):
    # A sink may hold work (a stream's socket write) for the end of the decode step it is called in: `defer` takes it
    # only there, and runs it on the generation thread once every row of the step has had its event, even when an
    # earlier deferred call raised.
    w = start_worker(tiny_model_dir, tiny_sae_dir)
    try:
        params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
        timeline: list[tuple[str, str]] = []
        accepted: dict[str, list[bool]] = {"a": [], "b": []}

        def deferred(rid: str, n: int) -> None:
            timeline.append(("deferred", rid))
            if rid == "a" and n == 2:
                raise RuntimeError("the consumer's bug")

        def make_sink(rid: str):
            def sink(ev):
                if isinstance(ev, GenerationEvent):
                    timeline.append(("event", rid))
                    n = len(accepted[rid])
                    accepted[rid].append(w.defer(lambda: deferred(rid, n)))
            return sink

        _two_streams(w, params, make_sink)
        assert not w.defer(lambda: None)  # (another thread, no step emitting)
    finally:
        w.stop()
    # the first tokens come from the prefill: written at once; every decode step's are deferred
    assert accepted == {"a": [False, True, True, True], "b": [False, True, True, True]}
    steps = timeline[2:]
    assert steps == [("event", "a"), ("event", "b"), ("deferred", "a"), ("deferred", "b")] * 3
    assert "work a sink deferred to the end of the step raised" in caplog.text


def test_costly_deferred_work_waits_for_later_steps_and_is_done_before_the_worker_idles(tiny_model_dir, tiny_sae_dir):
    # Deferred work that would take most of the worker's time (a 3 ms "write" per stream and step) runs every few
    # steps, the streams' tokens meanwhile held (as `WorkerWrites` holds chunks), in order; what still waits when the
    # last row finishes runs before the worker goes idle, and nothing waits much longer than the hold.
    w = start_worker(tiny_model_dir, tiny_sae_dir)
    try:
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
        held: dict[str, list[int]] = {"a": [], "b": []}
        held_at: dict[str, float] = {}
        written: dict[str, list[list[int]]] = {"a": [], "b": []}
        seen = {"a": 0, "b": 0}
        waits: list[float] = []

        def flush(rid: str) -> None:
            time.sleep(0.003)
            waits.append(time.perf_counter() - held_at[rid])
            written[rid].append(held[rid])
            held[rid] = []

        def make_sink(rid: str):
            def sink(ev):
                if not isinstance(ev, GenerationEvent):
                    return
                seen[rid] += 1
                if ev.finish_reason is None and (held[rid] or w.defer(lambda: flush(rid))):
                    if not held[rid]:
                        held_at[rid] = time.perf_counter()
                    held[rid].append(seen[rid])
            return sink

        _two_streams(w, params, make_sink)
        w.call(lambda wk: None, exclusive=False).result(30)  # (the worker is past its last step)
        assert len(w.deferred) == 0
    finally:
        w.stop()
    for rid in "ab":
        # the first token (the prefill's) and the finish are not deferred; every decode step's other event is, in order
        assert [n for write in written[rid] for n in write] == list(range(2, 12))
        assert held[rid] == [] and len(written[rid]) < 10  # several steps' tokens to a write
    assert w.deferred.held > 0
    assert max(waits) < w.deferred.max_hold + 0.1  # (the hold, plus a step and the other stream's write)
