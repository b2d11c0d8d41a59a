"""Constrained decoding's cost per token, in-process (`python -m benchmarks.grammar_cost [--models demo,350m]`).

The server benchmark (batch_bench.py) times whole HTTP requests with and without a JSON schema; on a shared
machine its ratio swings by tens of percent. This one times the decode loop itself, batch 1, greedy, `tokens`
steps with a KV cache: each step is the model's forward, `process_logits` (engine/sampling.py: for a constrained
row the llguidance bitmask fill, its expansion and the masking) and the sampler's `observe` (which advances the
matcher). Free and constrained loops alternate, `rounds` times; the overhead is the median of the per-round ratios
of the per-token times. The grammar's own time (the constrained row's part of `process_logits`, and `observe`) is
also timed inside the constrained loop: its share of a free token's time is the figure that stays put when the
machine is shared and the loops' ratio swings.

The schema asks for a long string, so the grammar never ends early and both loops decode the same number of tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch

from benchmarks.models import get_model

SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 4000}}, "required": ["story"]}


def _loop(lm: Any, prompt: torch.Tensor, tokens: int, sampler: Any) -> tuple[float, float]:
    """(seconds per token, of which grammar seconds per token) for `tokens` greedy steps."""
    from transformers import DynamicCache

    from millm.engine.sampling import process_logits

    model = lm.model
    cache = DynamicCache()
    ids = prompt
    grammar_s = 0.0
    with torch.inference_mode():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        t0 = time.perf_counter()
        for _ in range(tokens):
            logits = out.logits[:, -1, :].float()
            g0 = time.perf_counter()
            logits = process_logits(logits, [sampler])
            g1 = time.perf_counter()
            tok = int(logits.argmax(-1))
            g2 = time.perf_counter()
            sampler.observe(tok)
            g3 = time.perf_counter()
            if sampler.matcher is not None:
                grammar_s += (g1 - g0) + (g3 - g2)
            out = model(input_ids=torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)
        total = time.perf_counter() - t0
    return total / tokens, grammar_s / tokens


def measure(name: str, *, tokens: int = 64, rounds: int = 7) -> dict[str, Any] | None:
    """The figures for benchmark model `name`, or None when its tokenizer cannot drive a grammar."""
    from millm.engine.model_loading import load_model
    from millm.engine.sampling import RowSampler
    from millm.engine.types import SamplingParams
    from millm.errors import InvalidRequest
    from millm.services.structured import schema_constraint

    bm = get_model(name)
    lm = load_model(str(bm.model_dir), device="cpu", dtype="float32")
    try:
        constraint = schema_constraint(lm, SCHEMA, param="response_format")
    except InvalidRequest:
        return None  # e.g. the random 350m model's word-level tokenizer
    prompt = torch.tensor([lm.tokenizer("Tell me a story about a fox.")["input_ids"]])

    def sampler(constrained: bool) -> Any:
        params = SamplingParams(max_tokens=tokens, temperature=0.0, constraint=constraint if constrained else None)
        return RowSampler(params, vocab_size=lm.vocab_size, device=torch.device("cpu"), seed=0)

    _loop(lm, prompt, 8, sampler(False)), _loop(lm, prompt, 8, sampler(True))  # warm-up
    free, con, share, ratios = [], [], [], []
    for i in range(rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {c: _loop(lm, prompt, tokens, sampler(c)) for c in order}
        free.append(got[False][0])
        con.append(got[True][0])
        share.append(got[True][1])
        ratios.append(got[True][0] / got[False][0])
    return {"model": name, "tokens": tokens, "rounds": rounds, "vocab": lm.vocab_size,
            "free_ms_per_token": statistics.median(free) * 1000,
            "constrained_ms_per_token": statistics.median(con) * 1000,
            "grammar_ms_per_token": statistics.median(share) * 1000,
            # the grammar's own time per token over a free token's: robust where the loops' ratio is noise
            "grammar_share_pct": statistics.median(share) / statistics.median(free) * 100,
            "overhead_pct": (statistics.median(ratios) - 1) * 100,
            "ratios": ratios, "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> list[dict[str, Any] | None]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.grammar_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    res = [measure(m, tokens=args.tokens, rounds=args.rounds) for m in args.models.split(",")]
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
