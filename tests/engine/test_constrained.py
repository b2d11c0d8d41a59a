"""Constrained decoding in the batching worker: a grammar per row, so constrained, free and steered rows share a
batch and each row gets exactly what it gets alone; the grammar forces schema-valid JSON from a random tiny model
and from the demo model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest

from millm.engine.grammar import compile_constraint, json_schema_grammar, ll_tokenizer
from millm.engine.types import FeatureStrength, GenerationEvent, GenerationRequest, SamplingParams, SteeringSpec
from tests.engine.test_worker import PROMPTS, run, start_worker

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 16},
        "score": {"type": "integer", "minimum": 0, "maximum": 99},
        "items": {"type": "array", "maxItems": 3,
                  "items": {"type": "object", "properties": {"k": {"enum": ["a", "b"]}, "v": {"type": "boolean"}},
                            "required": ["k", "v"], "additionalProperties": False}},
    },
    "required": ["title", "score", "items"],
    "additionalProperties": False,
}

DEMO = Path(__file__).resolve().parents[2] / "src" / "millm" / "demo" / "assets"


def constraint(worker, schema=SCHEMA):
    lm = worker.loaded
    tok = ll_tokenizer(lm.tokenizer, vocab_size=lm.vocab_size, eos_ids=lm.eos_ids)
    return compile_constraint(json_schema_grammar(schema), tok, vocab_size=lm.vocab_size)


@pytest.fixture(scope="module", params=[False, True], ids=["growable-cache", "slot-cache"])
def worker(request, tiny_model_dir, tiny_sae_dir):
    w = start_worker(tiny_model_dir, tiny_sae_dir, cuda_graphs=request.param)
    yield w
    w.stop()


def mixed(worker) -> list[GenerationRequest]:
    tok = worker.loaded.tokenizer
    c = constraint(worker)
    reqs = []
    for i, p in enumerate(PROMPTS):
        kind = i % 3  # 0: constrained, 1: free, 2: constrained and steered
        steer = SteeringSpec((FeatureStrength(i * 11, 6.0),)) if i % 2 else None
        params = SamplingParams(max_tokens=150, temperature=0.0 if i < 3 else 0.8, seed=i,
                                constraint=c if kind != 1 else None, ignore_eos=kind == 1)
        reqs.append(GenerationRequest(f"r{i}", tuple(tok(p).input_ids), params, steering=steer))
    return reqs


def test_mixed_batch_of_constrained_free_and_steered_rows_equals_solo(worker):
    reqs = mixed(worker)
    solo: dict[str, list[int]] = {}
    finals: dict[str, GenerationEvent] = {}
    for r in reqs:
        solo.update(run(worker, [r], finals))
    batched = run(worker, reqs)
    assert batched == solo
    tok = worker.loaded.tokenizer
    for r in reqs:
        if r.params.constraint is None:
            continue
        ids = [t for t in solo[r.request_id] if t not in worker.loaded.eos_ids]
        if finals[r.request_id].finish_reason == "stop":
            jsonschema_rs.validate(SCHEMA, json.loads(tok.decode(ids)))
        else:
            assert finals[r.request_id].finish_reason == "length"
    assert sum(finals[r.request_id].finish_reason == "stop" for r in reqs if r.params.constraint) >= 3


def test_free_rows_are_untouched_by_constrained_neighbours(worker):
    # A free row's tokens with and without constrained rows beside it are the same, and not JSON-shaped.
    reqs = mixed(worker)
    free = [r for r in reqs if r.params.constraint is None]
    alone = run(worker, free)
    together = run(worker, reqs)
    assert {k: together[k] for k in alone} == alone


def test_the_demo_model_writes_schema_valid_json():
    w = start_worker(DEMO / "model", DEMO / "sae")
    try:
        tok = w.loaded.tokenizer
        c = constraint(w)
        prompt = tok.apply_chat_template([{"role": "user", "content": "Give a title and a score as JSON."}],
                                         tokenize=False, add_generation_prompt=True)
        ids = tuple(tok(prompt, add_special_tokens=False).input_ids)
        reqs = [GenerationRequest(f"d{s}", ids, SamplingParams(max_tokens=120, temperature=0.9, seed=s, constraint=c))
                for s in range(4)]
        finals: dict[str, GenerationEvent] = {}
        out = run(w, reqs, finals)
        for r in reqs:
            assert finals[r.request_id].finish_reason == "stop"
            text = tok.decode([t for t in out[r.request_id] if t not in w.loaded.eos_ids])
            jsonschema_rs.validate(SCHEMA, json.loads(text))
    finally:
        w.stop()
