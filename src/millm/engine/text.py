"""Incremental detokenisation and stop-string handling for one sequence.

Byte-level BPE tokens may end inside a UTF-8 character, and many tokenizers only decode
spaces correctly in context, so text is decoded over a sliding window of tokens and only
released once it no longer ends in a replacement character. Text that could be the start
of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from typing import Any, Callable

from transformers.tokenization_utils_tokenizers import TokenizersBackend


def _decoder(tokenizer: Any, skip_special: bool) -> Callable[[list[int]], str]:
    """`tokenizer.decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=False)`.

    A Rust-backed tokenizer with the stock `_decode` gives the same text from its backend directly,
    without transformers' Python wrapper (about 4 of the 5 us a call costs here); the worker
    thread decodes twice per generated token, under the GIL the event loop also needs."""
    if isinstance(tokenizer, TokenizersBackend) and type(tokenizer)._decode is TokenizersBackend._decode:
        backend = tokenizer.backend_tokenizer
        return lambda ids: backend.decode(ids, skip_special_tokens=skip_special)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special_tokens
        self._decode = _decoder(tokenizer, skip_special_tokens)
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return new
        return ""

    def flush(self) -> str:
        """Whatever is still pending at the end of the sequence (may contain U+FFFD)."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix) :] if len(full) > len(prefix) else ""


class StopMatcher:
    """Finds stop strings in streamed text; the stop string itself is never released."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was hit)."""
        if not self.stops:
            return text, False
        buf = self.pending + text
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            pos = min(h[0] for h in hits)
            self.pending = ""
            return buf[:pos], True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self.pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
