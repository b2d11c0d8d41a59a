"""Per-choice accumulators the worker feeds after each forward pass: steering evidence and a request's own
activations. Both start from the prompt's prefill (copied to every choice) and end up on the choice's final
`GenerationEvent`.

Evidence statistics cover the positions that produced generated tokens: the last prompt position and every
generated token fed back through the model, so their count equals the generated tokens. Positions steered and
skipped count every position the hook saw for the choice (prompt and fed-back tokens, padding excluded).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

from millm.engine.types import (
    ActivationRead,
    FeatureEvidenceStats,
    SteeringEvidence,
    SteeringSpec,
    TokenActivations,
)

MAX_SKIPPED = 64  # skipped positions listed by position and token (all are counted)


@dataclass
class EvidenceAcc:
    features: tuple[int, ...]
    measure: bool  # whether before/after activations are computed
    opt_out: bool  # special tokens are left unsteered
    steered: int = 0
    skipped: int = 0
    skipped_at: list[tuple[int, int]] = field(default_factory=list)
    tokens: int = 0
    b_sum: list[float] = field(default_factory=list)
    b_max: list[float] = field(default_factory=list)
    a_sum: list[float] = field(default_factory=list)
    a_max: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, spec: SteeringSpec, *, measure: bool) -> EvidenceAcc:
        m = len(spec.features)
        inf = float("-inf")
        return cls(features=tuple(f.index for f in spec.features), measure=measure,
                   opt_out=not spec.steer_special_tokens, b_sum=[0.0] * m, b_max=[inf] * m, a_sum=[0.0] * m,
                   a_max=[inf] * m)

    def positions(self, tokens: Iterable[tuple[int, int]], special: frozenset[int]) -> None:
        """(position, token id) pairs the hook saw."""
        for position, token in tokens:
            if self.opt_out and token in special:
                self.skipped += 1
                if len(self.skipped_at) < MAX_SKIPPED:
                    self.skipped_at.append((position, token))
            else:
                self.steered += 1

    def values(self, before: list[float], after: list[float]) -> None:
        """The steered features' activations (in `features` order) at one position that produced a token."""
        self.tokens += 1
        for j, (b, a) in enumerate(zip(before, after, strict=True)):
            self.b_sum[j] += b
            self.a_sum[j] += a
            if b > self.b_max[j]:
                self.b_max[j] = b
            if a > self.a_max[j]:
                self.a_max[j] = a

    def copy(self) -> EvidenceAcc:
        # (each list copied, the rest immutable: deepcopy took about 78 us a request at admission)
        return replace(self, skipped_at=list(self.skipped_at), b_sum=list(self.b_sum), b_max=list(self.b_max),
                       a_sum=list(self.a_sum), a_max=list(self.a_max))

    def result(self) -> SteeringEvidence:
        n = self.tokens
        feats = tuple(
            FeatureEvidenceStats(i, self.b_sum[j] / n, self.b_max[j], self.a_sum[j] / n, self.a_max[j])
            if self.measure and n else FeatureEvidenceStats(i)
            for j, i in enumerate(self.features))
        return SteeringEvidence(positions_steered=self.steered, positions_skipped=self.skipped,
                                skipped=tuple(self.skipped_at), tokens=n if self.measure else 0, features=feats,
                                measured=self.measure)


@dataclass
class ReadAcc:
    read: ActivationRead
    frames: list[TokenActivations] = field(default_factory=list)

    def add(self, frame: TokenActivations) -> None:
        where = self.read.positions
        if where == "last":
            self.frames[:] = [frame]
        elif where == "all" or (where == "prompt") == (frame.phase == "prompt"):
            self.frames.append(frame)

    def wants(self, phase: str) -> bool:
        where = self.read.positions
        return where in ("all", "last") or (where == "prompt") == (phase == "prompt")

    def copy(self) -> ReadAcc:
        return ReadAcc(self.read, list(self.frames))

    def result(self) -> tuple[TokenActivations, ...]:
        return tuple(self.frames)
