"""Per-row logits processing and sampling for a decode batch.

Each row keeps its own parameters and random generator, so batching never changes which
token a seeded request draws. Nothing here allocates per-step Python objects per vocab entry.
"""

from __future__ import annotations

import math

import llguidance
import torch

from millm.engine.grammar import fill_words, words_to_mask
from millm.engine.types import GenerationRequest, SamplingParams, TokenLogprob, TopLogprob


class RowSampler:
    """Sampling state of one sequence (one choice of one request)."""

    def __init__(self, params: SamplingParams, *, vocab_size: int, device: torch.device, seed: int) -> None:
        self.params = params
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.needs_counts = params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        self.counts = torch.zeros(vocab_size, device=device) if self.needs_counts else None
        self.bias: torch.Tensor | None = None
        if params.logit_bias:
            self.bias = torch.zeros(vocab_size, device=device)
            ids = torch.tensor([i for i, _ in params.logit_bias], device=device)
            vals = torch.tensor([b for _, b in params.logit_bias], device=device)
            self.bias[ids] = vals
        if params.allowed_token_ids:
            keep = torch.full((vocab_size,), float("-inf"), device=device)
            keep[torch.tensor(params.allowed_token_ids, device=device)] = 0.0
            self.bias = keep if self.bias is None else self.bias + keep
        # The row's parse state under its grammar (structured outputs); None for free rows.
        self.matcher = params.constraint.matcher() if params.constraint is not None else None
        self.mask_words = (torch.empty((params.constraint.tokenizer.vocab_size + 31) // 32, dtype=torch.int32)
                           if params.constraint is not None else None)
        # Nothing to do for this row but draw a token: no logits processing, no logprobs, no state to observe
        # (sample_and_emit skips those calls for a batch of such rows).
        self.plain = self.bias is None and self.counts is None and self.matcher is None and params.logprobs is None
        self.greedy = params.greedy

    def observe(self, token_id: int) -> None:
        if self.counts is not None:
            self.counts[token_id] += 1
        if self.matcher is not None:
            self.matcher.consume_token(token_id)

    @property
    def grammar_done(self) -> bool:
        """The row's grammar is complete and allows nothing more (not even EOS)."""
        return self.matcher is not None and self.matcher.is_stopped()

    @property
    def grammar_error(self) -> str | None:
        return self.matcher.get_error() if self.matcher is not None and self.matcher.is_error() else None


def process_logits(logits: torch.Tensor, rows: list[RowSampler]) -> torch.Tensor:
    """Apply logit bias, penalties and grammar masks. logits: (B, V) float32 -> (B, V)."""
    if any(r.bias is not None or r.counts is not None or r.matcher is not None for r in rows):
        logits = logits.clone()
        constrained: list[tuple[int, llguidance.LLMatcher, torch.Tensor]] = []
        for i, r in enumerate(rows):
            if r.bias is not None:
                logits[i] += r.bias
            if r.counts is not None:
                p = r.params
                logits[i] -= p.frequency_penalty * r.counts + p.presence_penalty * (r.counts > 0).float()
            if r.matcher is not None and r.mask_words is not None:  # (both set together, from params.constraint)
                constrained.append((i, r.matcher, r.mask_words))
        for i, matcher, words in constrained:  # each constrained row's grammar mask, in place (no gather/scatter)
            allowed = words_to_mask(fill_words(matcher, words), logits.shape[-1])
            logits[i].masked_fill_(~allowed.to(logits.device), float("-inf"))
    return logits


def _filter(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    # logits: (V,)
    if p.top_k > 0 and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= p.top_p
        drop[0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def greedy_cpu(logits: torch.Tensor) -> list[int | None]:
    """`sample` for greedy rows of CPU logits (B, V): each row's argmax, None where the row's max is not finite."""
    arr = logits.numpy()
    argmax: list[int] = arr.argmax(axis=-1).tolist()
    return [j if math.isfinite(arr.item(i, j)) else None for i, j in enumerate(argmax)]


def sample(logits: torch.Tensor, rows: list[RowSampler]) -> list[int | None]:
    """Choose one token per row. logits: (B, V) already processed. None for a row nothing can be drawn from: its
    logits hold a NaN or +inf, or no finite value (a residual stream overflowed, e.g. under extreme steering)."""
    greedy = [r.params.greedy for r in rows]
    # A NaN or +inf anywhere makes the row's max non-finite (max propagates NaN). With greedy rows, one pass over
    # the vocabulary gives the index of the max's first occurrence (what argmax returns; a NaN's, when there is one)
    # and so its value.
    if any(greedy) and logits.device.type == "cpu":
        # numpy's argmax is vectorised; torch's CPU max/argmax over a row is not (35-75 us a row at a 32k vocabulary,
        # against 3-4 us). Same result: the first occurrence of the max, or of the first NaN.
        # Each row's max read back as a Python float (`item`): numpy's fancy indexing and ufunc over a few values cost
        # ~85 us right after a forward (cold caches), against ~1 us for this.
        arr = logits.numpy()
        argmax = arr.argmax(axis=-1).tolist()
        ok = [math.isfinite(arr.item(i, j)) for i, j in enumerate(argmax)]
    elif any(greedy):
        top, argmax_t = logits.max(dim=-1)
        argmax, ok = torch.stack([argmax_t, torch.isfinite(top).long()]).tolist()
    else:
        argmax, ok = [], torch.isfinite(logits.amax(dim=-1)).tolist()
    out: list[int | None] = [None] * len(rows)
    for i, r in enumerate(rows):
        if not ok[i]:
            continue
        if greedy[i]:
            out[i] = int(argmax[i])
            continue
        row = logits[i]
        # Shifted by the row's max before dividing, so a tiny temperature cannot overflow to inf (same softmax).
        scaled = _filter((row - row.max()) / r.params.temperature, r.params)
        probs = torch.softmax(scaled, dim=-1)
        out[i] = int(torch.multinomial(probs, 1, generator=r.generator).item())
    return out


def token_logprobs(logits: torch.Tensor, chosen: list[int], rows: list[RowSampler]) -> list[TokenLogprob | None]:
    """Log-probabilities (of the processed distribution) of each row's chosen token and its top alternatives."""
    want = [r.params.logprobs for r in rows]
    if all(w is None for w in want):
        return [None] * len(rows)
    logp = torch.log_softmax(logits.float(), dim=-1)
    k = max(w or 0 for w in want)
    top_vals, top_ids = (torch.topk(logp, k, dim=-1) if k > 0 else (None, None))
    chosen_lp = logp[torch.arange(len(rows)), torch.tensor(chosen)].tolist()
    tv = top_vals.tolist() if top_vals is not None else None
    ti = top_ids.tolist() if top_ids is not None else None
    result: list[TokenLogprob | None] = []
    for i, w in enumerate(want):
        if w is None:
            result.append(None)
            continue
        top = tuple(TopLogprob(ti[i][j], tv[i][j]) for j in range(w)) if w and ti and tv else ()
        result.append(TokenLogprob(chosen[i], chosen_lp[i], top))
    return result


def prompt_logprobs(logits: torch.Tensor, req: GenerationRequest) -> tuple[TokenLogprob | None, ...]:
    """Each prompt token's logprob (None for the first) and its top alternatives, from the prefill's logits."""
    # logits: (T, V); position t predicts token t+1.
    logp = torch.log_softmax(logits, dim=-1)
    k = req.prompt_top_logprobs if req.prompt_top_logprobs is not None else (req.params.logprobs or 0)
    out: list[TokenLogprob | None] = [None]
    ids = list(req.prompt_ids)
    for t in range(1, len(ids)):
        row = logp[t - 1]
        top: tuple[TopLogprob, ...] = ()
        if k:
            v, i = torch.topk(row, k)
            top = tuple(TopLogprob(int(a), float(b)) for a, b in zip(i.tolist(), v.tolist(), strict=True))
        out.append(TokenLogprob(ids[t], float(row[ids[t]]), top))
    return tuple(out)
