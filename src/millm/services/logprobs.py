"""Engine logprobs in OpenAI's shapes: chat's `logprobs.content` entries and completions' parallel lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from millm.engine.model_loading import LoadedModel
from millm.engine.types import GenerationEvent, TokenLogprob
from millm.protocol import openai as p


def chat_prompt_logprobs(lm: LoadedModel, prompt_logprobs: Sequence[TokenLogprob | None]) -> list[p.ChatLogprobContent | None]:
    """The prompt's logprobs as chat logprob entries (None for the first token)."""
    out: list[p.ChatLogprobContent | None] = [None]
    for lp in list(prompt_logprobs)[1:]:
        tok = lm.tokenizer.decode([lp.token_id])
        out.append(p.ChatLogprobContent(
            token=tok, logprob=lp.logprob, bytes=list(tok.encode()),
            top_logprobs=[p.ChatLogprobTop(token=(t := lm.tokenizer.decode([a.token_id])), logprob=a.logprob,
                                           bytes=list(t.encode())) for a in lp.top]))
    return out


def chat_logprobs(lm: LoadedModel, ev: GenerationEvent) -> p.ChatLogprobs | None:
    """An event's token logprobs in chat's shape (None when it carries none)."""
    if not ev.logprobs:
        return None
    dec = lm.tokenizer.decode
    content = []
    for lp in ev.logprobs:
        tok = dec([lp.token_id])
        content.append(p.ChatLogprobContent(
            token=tok, logprob=lp.logprob, bytes=list(tok.encode()),
            top_logprobs=[p.ChatLogprobTop(token=dec([t.token_id]), logprob=t.logprob,
                                           bytes=list(dec([t.token_id]).encode())) for t in lp.top],
        ))
    return p.ChatLogprobs(content=content)


def completion_logprobs(lm: LoadedModel, lps: list[Any], offset: int) -> tuple[p.CompletionLogprobs, int]:
    """Token logprobs in the completions shape, text offsets counted from `offset`; returns the offset after them."""
    dec = lm.tokenizer.decode
    out = p.CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for lp in lps:
        tid = lp.token_id if lp is not None else None
        tok = dec([tid]) if tid is not None else ""
        out.tokens.append(tok)
        out.token_logprobs.append(lp.logprob if lp is not None else None)
        out.top_logprobs.append({dec([t.token_id]): t.logprob for t in lp.top} if lp is not None else None)
        out.text_offset.append(offset)
        offset += len(tok)
    return out, offset
