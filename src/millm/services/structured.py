"""Structured outputs: an OpenAI `response_format` becomes a checked grammar for constrained decoding.

`json_object` allows any JSON object; `json_schema` allows exactly the documents its schema allows (llguidance
compiles the schema; keywords it cannot enforce are a 400 rather than silently ignored). A schema that does
not compile is a 400 naming `response_format`.
"""

from __future__ import annotations

from typing import Any

from millm.engine.grammar import Constraint, GrammarError, compile_constraint, json_schema_grammar, ll_tokenizer
from millm.engine.model_loading import LoadedModel
from millm.errors import InvalidRequest
from millm.protocol import openai as p


def constraint_for(lm: LoadedModel, grammar: str, *, param: str) -> Constraint:
    """Check an llguidance grammar against the model's tokenizer; a 400 naming `param` when it cannot compile."""
    try:
        tok = ll_tokenizer(lm.tokenizer, vocab_size=lm.vocab_size, eos_ids=lm.eos_ids)
        return compile_constraint(grammar, tok, vocab_size=lm.vocab_size)
    except GrammarError as e:
        raise InvalidRequest(f"{param} cannot be enforced: {e}", param=param, code="invalid_grammar") from e


def schema_constraint(lm: LoadedModel, schema: dict[str, Any], *, param: str) -> Constraint:
    try:
        grammar = json_schema_grammar(schema)
    except GrammarError as e:
        raise InvalidRequest(f"{param} is not a usable JSON schema: {e}", param=param, code="invalid_grammar") from e
    return constraint_for(lm, grammar, param=param)


def response_constraint(lm: LoadedModel, fmt: p.ResponseFormat | None) -> Constraint | None:
    """The constraint a response_format asks for; None for text (or no format)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return schema_constraint(lm, {"type": "object"}, param="response_format")
    assert fmt.json_schema is not None
    schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else {"type": "object"}
    return schema_constraint(lm, schema, param="response_format")
