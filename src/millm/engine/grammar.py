"""Constrained decoding with llguidance: a grammar per row, applied as a token mask before sampling.

A `Constraint` is a compiled-and-checked llguidance grammar plus the tokenizer it runs over. Each sampled
row that carries one gets its own `LLMatcher` (its parse state); before every draw the row's logits outside
the grammar's allowed tokens are set to -inf, and after it the drawn token advances the matcher. Rows without
a constraint are untouched, so constrained, free and steered rows share a batch and each gets what it would
alone. EOS is allowed only where the grammar can end.

Grammars are built from JSON schemas (`json_schema_grammar`) or Lark (`lark_grammar`, used for tool calls);
`compile_constraint` checks one against the model's tokenizer and raises `GrammarError` with llguidance's
message when it cannot be compiled.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.hf
import numpy as np
import torch

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# JSON layout of generated objects: Python's json.dumps separators, no free whitespace (a weak model would
# otherwise be free to pad with whitespace until max_tokens). A schema's own "x-guidance" options override it.
JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}



class GrammarError(ValueError):
    """The grammar (a JSON schema or Lark text) could not be compiled; the message says why."""


@dataclass(frozen=True, eq=False)
class Constraint:
    """A checked grammar over one tokenizer; `matcher()` starts a fresh parse for one row."""

    grammar: str
    tokenizer: llguidance.LLTokenizer
    vocab_size: int

    def matcher(self) -> llguidance.LLMatcher:
        return llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0)


_tokenizers: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def ll_tokenizer(hf_tokenizer: Any, *, vocab_size: int, eos_ids: set[int] | frozenset[int]) -> llguidance.LLTokenizer:
    """The llguidance tokenizer for a Hugging Face fast tokenizer (built once per tokenizer object, ~10 ms to 1 s).
    vocab_size: the model's logits width (may exceed the tokenizer's); eos_ids: every id that ends generation."""
    with _lock:
        tok = _tokenizers.get(hf_tokenizer)
        if tok is None:
            try:
                n_vocab = max(vocab_size, len(hf_tokenizer))
                eos = sorted(eos_ids) or hf_tokenizer.eos_token_id
                tok = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=n_vocab, eos_token=eos)
            except Exception as e:  # noqa: BLE001 - slow tokenizers and odd vocabularies
                raise GrammarError(f"this model's tokenizer cannot drive constrained decoding: {e}") from e
            _tokenizers[hf_tokenizer] = tok
        return tok


def json_schema_grammar(schema: dict[str, Any]) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        raise GrammarError(str(e)) from e


def lark_grammar(lark: str) -> str:
    return llguidance.LLMatcher.grammar_from_lark(lark)


def compile_constraint(grammar: str, tokenizer: llguidance.LLTokenizer, *, vocab_size: int) -> Constraint:
    """Check `grammar` against `tokenizer`; GrammarError with the engine's message when it does not compile."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise GrammarError(messages[0] if messages else "the grammar could not be compiled")
    return Constraint(grammar=grammar, tokenizer=tokenizer, vocab_size=vocab_size)


def fill_words(matcher: llguidance.LLMatcher, words: torch.Tensor) -> torch.Tensor:
    """Write the matcher's allowed-token bitmask into `words` (a contiguous CPU int32 tensor of
    ceil(vocab / 32) words, bit i of word w = token 32 w + i) and return it."""
    matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * 4)
    return words


def words_to_mask(words: torch.Tensor, width: int) -> torch.Tensor:
    """(..., W) int32 bitmask words -> (..., width) bool allowed; ids past the words are not allowed.
    (numpy's unpackbits over the words' little-endian bytes: a few microseconds, against ~30 for shifts in torch.)"""
    bits = torch.from_numpy(np.unpackbits(words.contiguous().numpy().view(np.uint8), axis=-1, bitorder="little")
                            ).view(torch.bool)
    if bits.shape[-1] >= width:
        return bits[..., :width]
    pad = torch.zeros(*bits.shape[:-1], width - bits.shape[-1], dtype=torch.bool)
    return torch.cat([bits, pad], dim=-1)


def allowed_mask(matcher: llguidance.LLMatcher, width: int) -> torch.Tensor:
    """(width,) bool: the tokens the matcher allows next (ids past its vocabulary are not allowed)."""
    words = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.int32)
    return words_to_mask(words, width)
