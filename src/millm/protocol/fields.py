"""What miLLM does with each OpenAI request field: one table, checked against the request models by a test.

Every field an endpoint's request model declares is in the table, and so are the OpenAI fields it does not
declare (which then arrive as unknown extras). Statuses:

- `honoured`: acted on as OpenAI documents it (possibly with a documented limit, a 400 outside it);
- `extension`: a miLLM or vLLM extension, acted on;
- `refused`: accepted only with a value that changes nothing; anything else is a 400 naming the field;
- `ignored`: accepted and not acted on. A request that sends one, or any field the table does not know, gets
  its name in the `X-MiLLM-Ignored-Fields` header, or a 400 naming the first with `X-MiLLM-Strict: true`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Status = Literal["honoured", "extension", "refused", "ignored"]
Endpoint = Literal["chat", "completions", "embeddings"]
IGNORED_HEADER = "X-MiLLM-Ignored-Fields"
STRICT_HEADER = "X-MiLLM-Strict"

_SAMPLING: dict[str, tuple[Status, str]] = {
    "model": ("honoured", "the served model, or <model>+<profile>"),
    "temperature": ("honoured", "0 (or under 1e-5) is greedy"),
    "top_p": ("honoured", ""),
    "n": ("honoured", "choice i samples with seed + i"),
    "stop": ("honoured", "up to 4 strings, excluded from the text"),
    "seed": ("honoured", "a signed 64-bit integer"),
    "frequency_penalty": ("honoured", "over the generated tokens"),
    "presence_penalty": ("honoured", "over the generated tokens"),
    "logit_bias": ("honoured", "token ids in range, values in [-100, 100]"),
    "stream": ("honoured", "server-sent events"),
    "stream_options": ("honoured", "include_usage"),
    "user": ("ignored", "accepted for compatibility; not used"),
    "top_k": ("extension", "vLLM's top_k"),
    "ignore_eos": ("extension", "vLLM's ignore_eos"),
    "steering": ("extension", "per-request SAE steering"),
    "activations": ("extension", "this request's SAE activations in millm.activations"),
    "allowed_token_ids": ("extension", "vLLM's allowed_token_ids"),
}

# OpenAI chat fields this server does not act on (they arrive as unknown extras and are reported).
_CHAT_NOT_ACTED_ON = ("store", "metadata", "service_tier", "modalities", "audio", "prediction", "reasoning_effort",
                      "web_search_options", "functions", "function_call", "safety_identifier", "prompt_cache_key",
                      "verbosity")

FIELDS: dict[Endpoint, dict[str, tuple[Status, str]]] = {
    "chat": {
        **_SAMPLING,
        "messages": ("honoured", "rendered with the model's chat template; text content parts only"),
        "max_tokens": ("honoured", "clamped to the context"),
        "max_completion_tokens": ("honoured", "wins over max_tokens"),
        "logprobs": ("honoured", ""),
        "top_logprobs": ("honoured", "0-20"),
        "response_format": ("honoured", "text, json_object and json_schema (structured outputs)"),
        "tools": ("honoured", "rendered by the chat template; calls parsed from the output"),
        "tool_choice": ("honoured", "none, auto, required, or a named function (grammar-enforced)"),
        "parallel_tool_calls": ("honoured", ""),
        "prompt_logprobs": ("extension", "vLLM's prompt_logprobs"),
        "add_generation_prompt": ("extension", "as transformers' apply_chat_template"),
        "continue_final_message": ("extension", "as transformers' apply_chat_template"),
        **{name: ("ignored", "not supported by this server") for name in _CHAT_NOT_ACTED_ON},
    },
    "completions": {
        **_SAMPLING,
        "prompt": ("honoured", "a string, strings, token ids or lists of token ids"),
        "max_tokens": ("honoured", "default 16; 0 only with echo"),
        "echo": ("honoured", ""),
        "logprobs": ("honoured", "0-5"),
        "suffix": ("refused", "insertion is not supported: a non-empty suffix is a 400"),
        "best_of": ("refused", "only equal to n"),
        "response_format": ("extension", "structured outputs, as on chat"),
    },
    "embeddings": {
        "model": ("honoured", ""),
        "input": ("honoured", "a string, strings, token ids or lists of token ids"),
        "encoding_format": ("honoured", "float or base64"),
        "dimensions": ("refused", "only the model's width"),
        "user": ("ignored", "accepted for compatibility; not used"),
        "steering": ("extension", "per-request SAE steering"),
        "pooling": ("extension", "mean, last or cls"),
        "normalize": ("extension", "L2-normalise the embedding"),
    },
}


def ignored_fields(body: BaseModel, endpoint: Endpoint) -> list[str]:
    """The top-level fields of a parsed request that miLLM accepted but will not act on, in the order sent:
    fields the table marks ignored that the request set, and fields the table does not know."""
    table = FIELDS[endpoint]
    sent = list(body.model_fields_set) + list(body.model_extra or {})
    out = list(dict.fromkeys(name for name in sent if table.get(name, ("ignored", ""))[0] == "ignored"))
    if len(out) < 2:  # (the order needs a dump of the request: on every request that sets no ignored field, skipped)
        return out
    order = {name: i for i, name in enumerate(body.model_dump(exclude_unset=True))}
    return sorted(out, key=lambda name: order.get(name, len(order)))


def header_safe(name: str) -> str:
    """A field name as printable ASCII for a header: other characters (line breaks included) as \\uXXXX escapes."""
    return "".join(ch if " " <= ch <= "~" and ch != "\\" else f"\\u{ord(ch):04x}" for ch in name)


def strict(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")
