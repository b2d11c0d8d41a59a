"""Rows of the running batch: one per choice of a request, and how a decode step's logits become their events.

`Handle` is the caller's view of a submitted request; each of its `n` choices is a `Row` in the batch.
`sample_and_emit` draws every row's next token, detokenises it, applies stop strings, grammars, length and EOS,
and sends `GenerationEvent`s through the request's sink (on the worker thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from millm.engine.evidence import EvidenceAcc, ReadAcc
from millm.engine.model_loading import LoadedModel
from millm.engine.sampling import RowSampler, greedy_cpu, process_logits, sample, token_logprobs
from millm.engine.text import IncrementalDetokenizer, StopMatcher
from millm.engine.types import FinishReason, GenerationEvent, GenerationRequest, TokenLogprob
from millm.errors import InternalError, InvalidRequest, MillmError

Sink = Callable[[Any], None]


@dataclass
class Handle:
    """The caller's view of a submitted request."""

    request: GenerationRequest
    sink: Sink
    # set by `cancel` on any thread, read by the worker between steps (a plain attribute: the decode step checks
    # every row's, and `threading.Event.is_set`, a Python call, cost ~3 us a step right after the forward)
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Row:
    """One choice of a running request: its sampler, text state and position in the batch."""

    handle: Handle
    choice: int
    sampler: RowSampler
    detok: IncrementalDetokenizer
    stopper: StopMatcher
    last_token: int
    position: int
    generated: int = 0
    done: bool = False
    evidence: EvidenceAcc | None = None  # a steered row: positions steered/skipped, and activations when measured
    reads: ReadAcc | None = None  # the request's own activations, when it asked for them


def greedy_plain(rows: list[Row], logits: torch.Tensor) -> bool:
    """Whether every row is plain and greedy and the logits are on the CPU: `sample_and_emit` then draws through
    `greedy_cpu` and skips the processing, logprob and observe calls (the worker works this out when its rows
    change, not every step)."""
    return logits.is_cpu and all(r.sampler.plain and r.sampler.greedy for r in rows)


def sample_and_emit(lm: LoadedModel, logits: torch.Tensor, rows: list[Row], *, plain_greedy: bool | None = None,
                    ) -> None:
    """Draw each row's next token from logits (B, V), and send its text (and, at the end, its finish).
    plain_greedy: `greedy_plain(rows, logits)` when the caller knows it (None: worked out here)."""
    # (a batch of plain rows, the common case, skips the calls that would do nothing: this runs once per step,
    # right after the forward, when every call costs several times what it costs in a loop)
    if plain_greedy is None:
        plain_greedy = greedy_plain(rows, logits)
    plain = plain_greedy
    if plain_greedy:
        drawn = greedy_cpu(logits)
    else:
        samplers = [r.sampler for r in rows]
        plain = all(s.plain for s in samplers)
        if not plain:
            logits = process_logits(logits, samplers)
        drawn = sample(logits, samplers)
    chosen: list[int]
    if None in drawn:
        for r, tok in zip(rows, drawn, strict=True):
            if tok is None:
                fail_row(r, lm.dtype)
        chosen = [0 if tok is None else tok for tok in drawn]
    else:
        chosen = drawn  # type: ignore[assignment]  # (no None in it)
    lps = token_logprobs(logits, chosen, [r.sampler for r in rows]) if not plain else [None] * len(rows)
    eos = lm.eos_ids
    for r, tok, lp in zip(rows, chosen, lps, strict=True):
        if r.done:
            continue
        sampler = r.sampler
        if not sampler.plain:
            sampler.observe(tok)
            if sampler.grammar_error is not None:
                fail_grammar(r)
                continue
        r.last_token = tok
        r.generated += 1
        p = sampler.params
        finish: FinishReason | None = None
        if tok in eos and (not p.ignore_eos or sampler.matcher is not None):
            text = r.detok.flush()
            finish = "stop"
            lp_out: tuple[TokenLogprob, ...] = ()
        else:
            text = r.detok.push(tok)
            lp_out = (lp,) if lp is not None else ()
        text, hit = r.stopper.feed(text) if r.stopper.stops else (text, False)
        if hit:
            finish = "stop"
        elif finish is None and sampler.matcher is not None and sampler.grammar_done:
            finish = "stop"  # the grammar is complete and allows nothing more
            rest, hit = r.stopper.feed(r.detok.flush())
            text += rest if hit else rest + r.stopper.flush()
        elif finish is None and (r.generated >= p.max_tokens or r.position + 1 >= lm.context_length):
            finish = "length"
            rest, hit = r.stopper.feed(r.detok.flush())
            text += rest if hit else rest + r.stopper.flush()
        elif finish == "stop":
            text += r.stopper.flush()
        if finish is not None:
            r.done = True
            r.handle.sink(GenerationEvent(
                choice=r.choice, text=text, token_ids=(tok,), logprobs=lp_out, finish_reason=finish,
                evidence=r.evidence.result() if r.evidence is not None else None,
                activations=r.reads.result() if r.reads is not None else None))
        elif lp_out:
            r.handle.sink(GenerationEvent(choice=r.choice, text=text, token_ids=(tok,), logprobs=lp_out))
        else:
            r.handle.sink(GenerationEvent.token(r.choice, text, tok))

def fail_row(r: Row, dtype: torch.dtype) -> None:
    """End a row whose logits hold no usable distribution (NaN or inf): the request's steering when it has any,
    else the model in this dtype."""
    spec = r.handle.request.steering
    where = f"at generated token {r.generated + 1}"
    if spec is not None and not spec.empty:
        failure: MillmError = InvalidRequest(
            f"the steered model's logits became NaN or infinite {where}: the steering is too strong for "
            f"{str(dtype).removeprefix('torch.')} activations; lower the strengths", param="steering",
            code="non_finite_logits")
    else:
        failure = InternalError(f"the model's logits became NaN or infinite {where} in "
                                f"{str(dtype).removeprefix('torch.')}; try another dtype",
                                code="non_finite_logits")
    r.done = True
    r.handle.sink(GenerationEvent(choice=r.choice, finish_reason="error", error=failure.message, failure=failure))

def fail_grammar(r: Row) -> None:
    """End a row whose grammar refused the drawn token (an engine bug or an unsatisfiable grammar)."""
    failure = InternalError(f"constrained decoding failed at generated token {r.generated + 1}: "
                            f"{r.sampler.grammar_error}", code="grammar_failed")
    r.done = True
    r.handle.sink(GenerationEvent(choice=r.choice, finish_reason="error", error=failure.message, failure=failure))
