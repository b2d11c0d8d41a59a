"""Tool-call formats: how one model family writes function calls, and how to read them back.

Contract of a `ToolFormat` (one file per family, `FORMATS` in `__init__` picks one by the chat template):
- `detect(template)`: True when a chat template renders tools in this family's way.
- `markers`: texts that start the calls; `leading` says whether calls must open the reply (after whitespace)
  or may follow some content. Streaming holds text back only while it could still be the start of a marker.
- `parse(text)`: the reply's content before the calls and the calls (name, JSON-object arguments), or no calls
  when the text holds none (then the whole text is content). Never raises on model output.
- `grammar(tools, parallel)`: Lark text (llguidance) that admits only well-formed calls to these tools, with
  arguments following each tool's parameter schema; used to enforce `tool_choice` required or named.
- `call_id()`: a fresh call id in the form this family's templates accept.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

# Compact JSON inside calls, in the layout json.dumps writes (see engine.grammar.JSON_OPTIONS).
X_GUIDANCE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """A function tool from the request: its name and JSON schema of parameters."""

    name: str
    parameters: dict[str, Any]


class ToolFormat:
    name: ClassVar[str]
    markers: ClassVar[tuple[str, ...]]
    leading: ClassVar[bool] = True

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer  # the model's, for markers that are added tokens

    def detect(self, template: str) -> bool:
        raise NotImplementedError

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        raise NotImplementedError

    def grammar(self, tools: list[ToolSpec], *, parallel: bool) -> str:
        raise NotImplementedError

    def call_id(self) -> str:
        return "call_" + secrets.token_hex(12)

    # ---------------------------------------------------------------- helpers for subclasses

    @staticmethod
    def params_schema(tool: ToolSpec) -> dict[str, Any]:
        schema = dict(tool.parameters) if tool.parameters else {"type": "object", "properties": {}}
        return schema

    @staticmethod
    def json_rule(schema: dict[str, Any]) -> str:
        """A Lark `%json` value following `schema`, compact."""
        return "%json " + json.dumps({**schema, "x-guidance": X_GUIDANCE})

    @staticmethod
    def object_call_rules(tools: list[ToolSpec], args_key: str) -> str:
        """`call` as a JSON object {"name": <tool>, args_key: <its arguments>}, one alternative per tool."""
        alts = []
        for i, t in enumerate(tools):
            schema = {"type": "object", "properties": {"name": {"const": t.name}, args_key: ToolFormat.params_schema(t)},
                      "required": ["name", args_key], "additionalProperties": False}
            alts.append(f"call_{i}: {ToolFormat.json_rule(schema)}")
        return "call: " + " | ".join(f"call_{i}" for i in range(len(tools))) + "\n" + "\n".join(alts)


def loads_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def call_from(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")) -> ParsedCall | None:
    """{"name": ..., "arguments"|"parameters": {...} or a JSON string} -> ParsedCall, else None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args: Any = {}
    for key in args_keys:
        if key in obj:
            args = obj[key]
            break
    if isinstance(args, str):
        args = loads_object(args)
    if not isinstance(args, dict):
        return None
    return ParsedCall(obj["name"], args)


def token_or_literal(tokenizer: Any, text: str) -> str:
    """A Lark terminal for `text`: the token itself (`<[id]>`) when the tokenizer has `text` as one added token
    (llguidance matches added tokens, special or not, only as tokens), else the quoted text."""
    if tokenizer is not None:
        tid = tokenizer.get_added_vocab().get(text)
        if tid is not None:
            return f"<[{tid}]>"
    return json.dumps(text)
