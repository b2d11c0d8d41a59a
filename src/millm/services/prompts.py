"""Turning OpenAI messages and prompts into token ids.

Chat messages go through the model's own chat template. Templates often reject a
conversation that is a lone system message or whose roles do not alternate (LibreChat's
title requests are a single system message), so on a template error the conversation is
normalised (system text folded into the first user turn, consecutive turns of one role
merged) and rendered again; only if that also fails is it a 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any, Callable, TypeVar

from millm.errors import ContextTooLong, InvalidRequest
from millm.protocol.openai import ChatMessage, PromptField

log = logging.getLogger(__name__)
T = TypeVar("T")

# Text at least this long is tokenised on a worker thread, so the event loop keeps serving other clients.
OFF_LOOP_CHARS = 16_384
# A prompt longer than this many characters per context position is first checked on a prefix of this size.
PREFIX_CHARS_PER_TOKEN = 8

_token_chars: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def max_token_chars(tokenizer: Any) -> int:
    """The most characters one token of this tokenizer stands for (its longest vocabulary entry, special
    tokens included), computed once per tokenizer. A text of c characters has at least c / this many tokens."""
    cached = _token_chars.get(tokenizer)
    if cached is None:
        vocab = tokenizer.get_vocab()
        cached = max([len(t) for t in vocab] + [len(str(t)) for t in getattr(tokenizer, "all_special_tokens", [])]
                     + [1])
        _token_chars[tokenizer] = cached
    return cached


def bound_chars(tokenizer: Any, n_chars: int, context_length: int | None, *, param: str) -> None:
    """Refuse, without tokenising, text too long to fit the context whatever its tokens: every token covers at
    most `max_token_chars` characters, so more than context x that many characters is more than context tokens."""
    if context_length is None:
        return
    limit = context_length * max_token_chars(tokenizer)
    if n_chars > limit:
        raise ContextTooLong(
            f"the prompt has {n_chars} characters, more than the {context_length}-token context can hold "
            f"(at most {max_token_chars(tokenizer)} characters per token); shorten the prompt or messages",
            param=param)


def encode(tokenizer: Any, text: str, *, context_length: int | None, param: str,
           add_special_tokens: bool = True) -> list[int]:
    """tokenizer(text).input_ids, refusing text that cannot fit the context before tokenising all of it: by its
    length (`bound_chars`), then, for text much longer than the context, by the tokens of a prefix."""
    bound_chars(tokenizer, len(text), context_length, param=param)
    if context_length is not None and len(text) > context_length * PREFIX_CHARS_PER_TOKEN:
        head = tokenizer(text[: context_length * PREFIX_CHARS_PER_TOKEN], add_special_tokens=add_special_tokens)
        # a prefix tokenises like the whole text up to its last few characters: allow a few tokens of slack
        if len(head.input_ids) > context_length + 8:
            raise ContextTooLong(
                f"the prompt has more than {context_length} tokens (the context length); shorten the prompt or "
                "messages", param=param)
    try:
        return list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids)
    except TypeError:
        # HF tokenizers refuse text Python holds but UTF-8 cannot encode (a lone surrogate from a JSON "\ud800"),
        # with a message about their own types
        raise InvalidRequest("the text contains a lone surrogate (an unpaired \\ud800-\\udfff escape), which is "
                             "not a character; send valid Unicode", param=param, code="invalid_text") from None


async def off_loop(n_chars: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), on a worker thread when the text it works on is long."""
    if n_chars < OFF_LOOP_CHARS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def text_size(value: Any) -> int:
    """Characters in a prompt, messages or input (strings counted; token ids as one each)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        if all(type(v) is int for v in value):  # token ids (a call per id took 0.46 ms for 1,000 on the event loop)
            return len(value)
        return sum(text_size(v) for v in value)
    content = getattr(value, "content", None)
    if content is not None or hasattr(value, "content"):
        return text_size(content)
    text = getattr(value, "text", None)
    return len(text) if isinstance(text, str) else 1


def message_text(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Flatten content parts to text; anything but text parts is a 400 naming the part."""
    out = []
    for i, m in enumerate(messages):
        if m.content is None:
            text = ""
        elif isinstance(m.content, str):
            text = m.content
        else:
            pieces = []
            for j, part in enumerate(m.content):
                if part.type != "text" or part.text is None:
                    raise InvalidRequest(
                        f"content part type {part.type!r} is not supported: this model accepts text only",
                        param=f"messages[{i}].content[{j}]",
                    )
                pieces.append(part.text)
            text = "".join(pieces)
        role = "system" if m.role == "developer" else m.role
        entry: dict[str, Any] = {"role": role, "content": text}
        if m.tool_calls:
            entry["tool_calls"] = [_template_call(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(m.tool_calls)]
        if m.role == "tool":
            entry["tool_call_id"] = m.tool_call_id
            if m.name:
                entry["name"] = m.name
        out.append(entry)
    return out


def _template_call(call: Any, param: str) -> dict[str, Any]:
    """An OpenAI tool call as chat templates read it: arguments as a mapping (templates apply tojson to it)."""
    try:
        args = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
    except ValueError:
        raise InvalidRequest("tool call arguments must be a JSON object text",
                             param=f"{param}.function.arguments") from None
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object text", param=f"{param}.function.arguments")
    return {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": args}}


def _normalised(conv: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = "\n\n".join(m["content"] for m in conv if m["role"] == "system")
    turns: list[dict[str, Any]] = []
    for m in conv:
        if m["role"] == "system":
            continue
        role = "assistant" if m["role"] == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + m["content"]
        else:
            turns.append({"role": role, "content": m["content"]})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": ""})
    if system:
        turns[0]["content"] = (system + "\n\n" + turns[0]["content"]).strip()
    return turns


def render_chat(tokenizer: Any, messages: list[ChatMessage], *, context_length: int | None = None,
                tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = True,
                continue_final_message: bool = False) -> list[int]:
    """Token ids of the conversation in the model's chat template (tools, when given, rendered by it too).
    The rendered text carries the template's own BOS, so it is tokenised without adding special tokens.
    Text too long for `context_length` is refused before tokenising (`bound_chars`, `encode`)."""
    conv = message_text(messages)
    bound_chars(tokenizer, sum(len(m.get("content") or "") for m in conv), context_length, param="messages")
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    if continue_final_message:
        if conv[-1]["role"] != "assistant":
            raise InvalidRequest("continue_final_message needs an assistant message last", param="messages")
        extra["continue_final_message"] = True
        add_generation_prompt = False
    if getattr(tokenizer, "chat_template", None) is None:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in conv) + "assistant:"
        return encode(tokenizer, text, context_length=context_length, param="messages")
    last_error: Exception | None = None
    for attempt in (conv, _normalised(conv)):
        try:
            text = tokenizer.apply_chat_template(attempt, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                 **extra)
        except Exception as e:  # noqa: BLE001 - jinja raises anything, including TemplateError
            log.debug("chat template failed (%s); retrying with a normalised conversation", e)
            last_error = e
            continue
        return encode(tokenizer, text, context_length=context_length, param="messages", add_special_tokens=False)
    raise InvalidRequest(f"the model's chat template rejected this conversation: {type(last_error).__name__}: "
                         f"{str(last_error)[:200]}", param="messages", code="chat_template_error")

def tokenize_prompts(tokenizer: Any, prompt: PromptField, *, vocab_size: int, param: str,
                     context_length: int | None = None) -> list[list[int]]:
    """A string, strings, token ids or lists of token ids -> one id list per prompt."""
    single = isinstance(prompt, str) or bool(prompt and all(isinstance(p, int) for p in prompt))
    prompts: list[Any] = [prompt] if single else list(prompt)
    if not prompts:
        raise InvalidRequest("the prompt must not be empty", param=param)
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):  # a list of prompts names the one at fault, even a list of one
            ids = encode(tokenizer, p, context_length=context_length, param=param if single else f"{param}[{i}]")
        else:
            ids = list(p)
            bad = [t for t in ids if not 0 <= t < vocab_size]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is out of range [0, {vocab_size})", param=f"{param}[{i}]")
        if not ids:
            raise InvalidRequest("the prompt must not be empty", param=param if len(prompts) == 1 else f"{param}[{i}]")
        out.append(ids)
    return out


def check_context(n_prompt: int, context_length: int, *, param: str) -> None:
    if n_prompt >= context_length:
        raise ContextTooLong(
            f"the prompt has {n_prompt} tokens but the context length is {context_length}; "
            "shorten the prompt or messages",
            param=param,
        )


def clamp_max_tokens(requested: int | None, n_prompt: int, context_length: int) -> int:
    room = context_length - n_prompt
    return room if requested is None else max(0, min(requested, room))
