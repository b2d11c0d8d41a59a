"""Incremental detokenisation and stop-string handling for one sequence.

Byte-level BPE tokens may end inside a UTF-8 character, and many tokenizers only decode
spaces correctly in context, so text is decoded over a sliding window of tokens and only
released once it no longer ends in a replacement character. Text that could be the start
of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from typing import Any, Callable

from tokenizers.decoders import DecodeStream
from transformers.tokenization_utils_tokenizers import TokenizersBackend


def _backend(tokenizer: Any) -> Any | None:
    """The Rust `tokenizers.Tokenizer` behind a stock `TokenizersBackend`, or None (a slow or custom tokenizer)."""
    if isinstance(tokenizer, TokenizersBackend) and type(tokenizer)._decode is TokenizersBackend._decode:
        return tokenizer.backend_tokenizer
    return None


def _decoder(tokenizer: Any, skip_special: bool) -> Callable[[list[int]], str]:
    """`tokenizer.decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=False)`.

    A Rust-backed tokenizer with the stock `_decode` gives the same text from its backend directly,
    without transformers' Python wrapper (about 4 of the 5 us a call costs here)."""
    backend = _backend(tokenizer)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=skip_special)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Text of a growing token sequence, released piece by piece.

    The window: text is decoded from `prefix_offset` (the start of the previously released piece, for context)
    and the new text is what the window adds to the decode of `ids[prefix_offset:read_offset]`, held back
    while it ends in U+FFFD (a partial UTF-8 character). A Rust-backed tokenizer runs exactly this in
    `tokenizers`' `DecodeStream` (one call per token, in place of two decodes and two list slices): the same
    window, the same U+FFFD rule, the same skip_special_tokens. `DecodeStream` refuses a window whose text no
    longer starts with the previous piece's (a decoder that rewrites earlier text in context); from such a token
    on this sequence decodes the Python way, whose slice of the longer text is what it always released."""

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special_tokens
        self._decode = _decoder(tokenizer, skip_special_tokens)
        self._backend: Any = _backend(tokenizer)
        self._stream: DecodeStream | None = (
            DecodeStream(skip_special_tokens=skip_special_tokens) if self._backend is not None else None)
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        if self._stream is not None:
            try:
                new = self._stream.step(self._backend, token_id)
            except Exception:  # DecodeStream's InvalidPrefix: decode this sequence the Python way from here on
                self._stream = None
            else:
                if new is None:
                    return ""
                self.prefix_offset = self.read_offset
                self.read_offset = len(self.ids)
                return new
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
        self._stream = None  # the sequence is over (a later push decodes the Python way, from these offsets)
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
