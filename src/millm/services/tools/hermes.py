"""Hermes-style calls (Qwen 2.5, Qwen 3, Hermes 2 Pro, many fine-tunes): each call is a JSON object
{"name": ..., "arguments": {...}} inside <tool_call>...</tool_call>, after optional content."""

from __future__ import annotations

import re

from millm.services.tools.base import ParsedCall, ToolFormat, ToolSpec, call_from, loads_object, token_or_literal

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


class HermesFormat(ToolFormat):
    name = "hermes"
    markers = ("<tool_call>",)
    leading = False

    def detect(self, template: str) -> bool:
        return "<tool_call>" in template

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        start = text.find("<tool_call>")
        if start < 0:
            return text, []
        calls = [call_from(loads_object(m.group(1))) for m in _CALL.finditer(text, start)]
        if not calls or any(c is None for c in calls):
            return text, []
        return text[:start].rstrip(), [c for c in calls if c is not None]

    def grammar(self, tools: list[ToolSpec], *, parallel: bool) -> str:
        open_, close = token_or_literal(self.tokenizer, "<tool_call>"), token_or_literal(self.tokenizer, "</tool_call>")
        block = f'{open_} "\\n" call "\\n" {close}'
        start = f"start: {block} (\"\\n\" {block})*" if parallel else f"start: {block}"
        return start + "\n" + self.object_call_rules(tools, "arguments")
