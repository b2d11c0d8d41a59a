"""Mistral calls: the [TOOL_CALLS] control token, then a JSON array of {"name": ..., "arguments": {...}}
(v3 tokenizers), or name[ARGS]{...} per call (v11 and later). Call ids are 9 letters and digits, which
Mistral's templates check."""

from __future__ import annotations

import json
import re
import secrets
import string

from millm.services.tools.base import ParsedCall, ToolFormat, ToolSpec, call_from, loads_object, token_or_literal

_V11 = re.compile(r"\s*([A-Za-z0-9_.\-]+)\[ARGS\]")


class MistralFormat(ToolFormat):
    name = "mistral"
    # The control token is usually skipped by decoding, leaving the array itself.
    markers = ("[TOOL_CALLS]", "[{")
    leading = True

    def detect(self, template: str) -> bool:
        return "[TOOL_CALLS]" in template

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        at = text.find("[TOOL_CALLS]")
        content, body = (text[:at].strip(), text[at + len("[TOOL_CALLS]"):].strip()) if at >= 0 else ("", text.strip())
        if body.startswith("["):
            arr = loads_object(body)
            if isinstance(arr, list) and arr:
                parsed = [call_from(c) for c in arr]
                if all(c is not None for c in parsed):
                    return content, [c for c in parsed if c is not None]
            return text, []
        calls: list[ParsedCall] = []
        decoder = json.JSONDecoder()
        pos = 0
        while pos < len(body):
            m = _V11.match(body, pos)
            if not m:
                return text, []
            try:
                args, end = decoder.raw_decode(body, m.end())
            except ValueError:
                return text, []
            if not isinstance(args, dict):
                return text, []
            calls.append(ParsedCall(m.group(1), args))
            pos = end
            while pos < len(body) and body[pos] in " \n[TOOL_CALLS]":
                if body.startswith("[TOOL_CALLS]", pos):
                    pos += len("[TOOL_CALLS]")
                else:
                    pos += 1
        return (content, calls) if calls else (text, [])

    def grammar(self, tools: list[ToolSpec], *, parallel: bool) -> str:
        marker = token_or_literal(self.tokenizer, "[TOOL_CALLS]")
        items = 'call (", " call)*' if parallel else "call"
        return f'start: {marker} "[" {items} "]"\n' + self.object_call_rules(tools, "arguments")

    def call_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(9))
