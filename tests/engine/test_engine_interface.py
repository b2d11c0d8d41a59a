"""The worker's typed operations (the engine interface services use): swap_model, attach_sae, detach_sae,
set_monitor, embed and memory, against the tiny model and SAE."""

from __future__ import annotations

import threading

import numpy as np
import psutil
import pytest
import torch

from millm.engine.attachments import MAX_ATTACHMENTS
from millm.engine.intervention import MonitorConfig
from millm.engine.model_loading import load_model
from millm.engine.types import (
    EmbeddingRequest,
    FeatureStrength,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    SteeringSpec,
)
from millm.engine.worker import Worker
from millm.errors import InvalidRequest, ModelNotLoaded, SaeMismatch
from millm.sae.loading import load_sae
from tests.sae.builders import make_sae

T = 60


@pytest.fixture()
def worker():
    w = Worker(max_batch_size=4)
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def sae(tiny_sae_dir):
    return load_sae(tiny_sae_dir)


def generate(w: Worker, ids: list[int], steering: SteeringSpec | None = None, n: int = 6) -> list[int]:
    out: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def sink(ev: object) -> None:
        if isinstance(ev, BaseException):
            errors.append(ev)
            done.set()
        elif isinstance(ev, GenerationEvent):
            out.extend(ev.token_ids)
            if ev.finish_reason:
                done.set()

    w.submit(GenerationRequest("g", tuple(ids), SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True),
                               steering=steering), sink)
    assert done.wait(T)
    if errors:
        raise errors[0]
    return out


def test_swap_model_serves_the_new_model_and_unloads(worker, lm):
    assert worker.loaded is None
    outcome = worker.swap_model(lm).result(T)
    assert outcome.model is lm and worker.loaded is lm and outcome.attachments == () == outcome.dropped
    ids = lm.tokenizer("Hello world").input_ids
    assert len(generate(worker, ids)) == 6
    assert worker.swap_model(None).result(T).model is None and worker.loaded is None
    with pytest.raises(ModelNotLoaded):
        worker.embed(EmbeddingRequest("e", (tuple(ids),))).result(T)


def test_attach_changes_outputs_and_detach_restores_them_exactly(worker, lm, sae):
    worker.swap_model(lm).result(T)
    ids = lm.tokenizer("Once upon a time").input_ids
    plain = generate(worker, ids)
    att = worker.attach_sae(sae, layer=None).result(T)
    assert att.key == att.hookpoint.module_path and att.layer == 1
    assert {(t.device, t.dtype) for t in (*att.sae.parameters(), *att.sae.buffers())} == {(lm.device, lm.dtype)}
    assert generate(worker, ids) == plain  # attached, not steering: the model is unchanged
    strong = SteeringSpec(features=(FeatureStrength(3, 200.0),))
    assert generate(worker, ids, strong) != plain
    assert [a.key for a in worker.detach_sae().result(T)] == [att.key]
    assert worker.intervention is None
    assert generate(worker, ids, strong) == plain  # no SAE: nothing to steer with


def test_attach_replaces_the_attached_sae_and_keys_by_hook_point(worker, lm, sae):
    assert MAX_ATTACHMENTS == 1
    worker.swap_model(lm).result(T)
    first = worker.attach_sae(sae).result(T)
    second = worker.attach_sae(sae, layer=0).result(T)
    assert first.key != second.key and second.layer == 0
    assert [a.key for a in worker.attachments.list()] == [second.key]


def test_attach_without_a_model_or_of_the_wrong_width_is_refused(worker, lm):
    with pytest.raises(InvalidRequest, match="load a model"):
        worker.attach_sae(make_sae("standard", d_in=64, d_sae=32, hook_name="blocks.0.hook_resid_post")).result(T)
    worker.swap_model(lm).result(T)
    wide = make_sae("standard", d_in=48, d_sae=32, seed=2, hook_name="blocks.0.hook_resid_post")
    with pytest.raises(SaeMismatch):
        worker.attach_sae(wide).result(T)
    assert len(worker.attachments) == 0


def test_swap_moves_the_sae_to_the_new_model_or_drops_it(worker, lm, sae, tiny_model_dir):
    worker.swap_model(lm).result(T)
    att = worker.attach_sae(sae).result(T)
    other = load_model(str(tiny_model_dir), device="cpu")
    moved = worker.swap_model(other).result(T)
    assert [a.key for a in moved.attachments] == [att.key] and moved.dropped == ()
    assert worker.attachments.list()[0].hookpoint.module is not att.hookpoint.module  # hooked in the new model
    dropped = worker.swap_model(None).result(T)
    assert dropped.attachments == () and dropped.dropped == ((att.key, "the model was unloaded"),)


def test_set_monitor_applies_now_and_to_saes_attached_later(worker, lm, sae):
    records: list = []
    worker.set_monitor(MonitorConfig(enabled=True, top_k=3), sink=records.extend).result(T)
    worker.swap_model(lm).result(T)
    worker.attach_sae(sae).result(T)  # attached after the config was set: it monitors too
    ids = lm.tokenizer("The stars").input_ids
    generate(worker, ids, n=2)
    phases = {r.phase for r in records}
    assert phases == {"prompt", "generated"} and all(len(r.activations) == 3 for r in records)
    records.clear()
    worker.set_monitor(MonitorConfig(enabled=False)).result(T)
    generate(worker, ids, n=2)
    assert records == []


def test_embed_pools_normalises_and_steers_like_generation(worker, lm, sae):
    worker.swap_model(lm).result(T)
    a, b = lm.tokenizer("Hello world").input_ids, lm.tokenizer("The stars").input_ids
    vecs = worker.embed(EmbeddingRequest("e", (tuple(a), tuple(b)))).result(T)
    assert [v.dtype for v in vecs] == [np.dtype("<f4")] * 2 and vecs[0].shape == (64,)
    assert np.allclose([np.linalg.norm(v) for v in vecs], 1.0, atol=1e-5)
    # the same numbers as a direct forward, mean-pooled
    with torch.no_grad():
        hidden = lm.model(torch.tensor([a]), output_hidden_states=True).hidden_states[-1][0].float()
    raw = worker.embed(EmbeddingRequest("e", (tuple(a),), normalize=False)).result(T)[0]
    assert np.allclose(raw, hidden.mean(0).numpy(), atol=1e-5)
    last = worker.embed(EmbeddingRequest("e", (tuple(a),), pooling="last", normalize=False)).result(T)[0]
    assert np.allclose(last, hidden[-1].numpy(), atol=1e-5)
    worker.attach_sae(sae).result(T)
    records: list = []
    worker.set_monitor(MonitorConfig(enabled=True, top_k=2), sink=records.extend).result(T)
    steered = worker.embed(EmbeddingRequest("s", (tuple(a), tuple(b)),
                                            steering=SteeringSpec(features=(FeatureStrength(3, 50.0),)))).result(T)
    assert not np.allclose(steered[0], vecs[0], atol=1e-3)
    assert {r.request_id for r in records} == {"s-0", "s-1"} and {r.phase for r in records} == {"embedding"}


def test_memory_answers_for_the_models_device(worker, lm):
    m = worker.memory()
    assert m.device == "cpu" and 0 < m.used_bytes < m.total_bytes == psutil.virtual_memory().total
    worker.swap_model(lm).result(T)
    assert worker.memory().device == "cpu"
