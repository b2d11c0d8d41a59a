"""Turning OpenAI messages and prompts into token ids.

Chat messages go through the model's own chat template. Templates often reject a
conversation that is a lone system message or whose roles do not alternate (LibreChat's
title requests are a single system message), so on a template error the conversation is
normalised (system text folded into the first user turn, consecutive turns of one role
merged) and rendered again; only if that also fails is it a 400.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from millm.errors import ContextTooLong, InvalidRequest
from millm.protocol.openai import ChatMessage, PromptField

log = logging.getLogger(__name__)


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
        raise InvalidRequest("tool call arguments must be a JSON object text", param=f"{param}.function.arguments")
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


def render_chat(tokenizer: Any, messages: list[ChatMessage], *, tools: list[dict[str, Any]] | None = None,
                add_generation_prompt: bool = True, continue_final_message: bool = False) -> list[int]:
    """Token ids of the conversation in the model's chat template (tools, when given, rendered by it too).
    The rendered text carries the template's own BOS, so it is tokenised without adding special tokens."""
    conv = message_text(messages)
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    if continue_final_message:
        if conv[-1]["role"] != "assistant":
            raise InvalidRequest("continue_final_message needs an assistant message last", param="messages")
        extra["continue_final_message"] = True
        add_generation_prompt = False
    if getattr(tokenizer, "chat_template", None) is None:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in conv) + "assistant:"
        return list(tokenizer(text).input_ids)
    last_error: Exception | None = None
    for attempt in (conv, _normalised(conv)):
        try:
            text = tokenizer.apply_chat_template(attempt, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                 **extra)
            return list(tokenizer(text, add_special_tokens=False).input_ids)
        except Exception as e:  # noqa: BLE001 - jinja raises anything, including TemplateError
            log.debug("chat template failed (%s); retrying with a normalised conversation", e)
            last_error = e
    raise InvalidRequest(f"the model's chat template rejected this conversation: {last_error}", param="messages")


def tokenize_prompts(tokenizer: Any, prompt: PromptField, *, vocab_size: int, param: str) -> list[list[int]]:
    """A string, strings, token ids or lists of token ids -> one id list per prompt."""
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise InvalidRequest("the prompt must not be empty", param=param)
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            ids = list(tokenizer(p).input_ids)
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
