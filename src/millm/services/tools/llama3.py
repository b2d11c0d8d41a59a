"""Llama 3.1 / 3.2 JSON calls: the reply is {"name": ..., "parameters": {...}}, optionally after the
<|python_tag|> token; several calls are separated by ";"."""

from __future__ import annotations

from millm.services.tools.base import ParsedCall, ToolFormat, ToolSpec, call_from, loads_object


class Llama3JsonFormat(ToolFormat):
    name = "llama3_json"
    markers = ("{", "<|python_tag|>")
    leading = True

    def detect(self, template: str) -> bool:
        return "<|start_header_id|>" in template and ("ipython" in template or "<|python_tag|>" in template)

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        body = text.strip().removeprefix("<|python_tag|>").strip()
        if not body.startswith("{"):
            return text, []
        whole = loads_object(body)
        parts = [whole] if whole is not None else [loads_object(p) for p in body.split(";") if p.strip()]
        calls = [call_from(p, ("parameters", "arguments")) for p in parts]
        if not calls or any(c is None for c in calls):
            return text, []
        return "", [c for c in calls if c is not None]

    def grammar(self, tools: list[ToolSpec], *, parallel: bool) -> str:
        start = 'start: call ("; " call)*' if parallel else "start: call"
        return start + "\n" + self.object_call_rules(tools, "parameters")
