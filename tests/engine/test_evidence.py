"""engine/evidence.py: every choice of a request accumulates on its own copy of the prompt's evidence."""

from __future__ import annotations

import dataclasses

from millm.engine.evidence import EvidenceAcc
from millm.engine.types import FeatureStrength, SteeringSpec


def test_a_copy_accumulates_apart_from_the_prompts_evidence():
    spec = SteeringSpec(features=(FeatureStrength(index=3, strength=2.0), FeatureStrength(index=9, strength=-1.0)),
                        steer_special_tokens=False)
    prompt = EvidenceAcc.start(spec, measure=True)
    prompt.positions([(0, 1), (1, 2)], special=frozenset({1}))
    prompt.values([0.5, 1.0], [0.75, 0.25])
    before = dataclasses.asdict(prompt)
    first, second = prompt.copy(), prompt.copy()
    assert dataclasses.asdict(first) == before
    first.positions([(2, 1)], special=frozenset({1}))
    first.values([2.0, 3.0], [4.0, 5.0])
    assert dataclasses.asdict(prompt) == before and dataclasses.asdict(second) == before
    assert first.skipped_at == [(0, 1), (2, 1)] and first.b_max == [2.0, 3.0] and first.a_sum == [4.75, 5.25]
    assert second.result() == prompt.result() != first.result()
