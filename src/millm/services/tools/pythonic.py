"""Pythonic calls (Gemma 3 tool templates, Llama 3.2/4 pythonic): the reply is a Python list of calls with
keyword arguments, [get_weather(city="Paris"), ...], sometimes inside a ```tool_code fence (Gemma)."""

from __future__ import annotations

import ast
import json
from typing import Any

from millm.services.tools.base import X_GUIDANCE, ParsedCall, ToolFormat, ToolSpec


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):  # JSON spellings
        return {"true": True, "false": False, "null": None}[node.id]
    return ast.literal_eval(node)


class PythonicFormat(ToolFormat):
    name = "pythonic"
    markers = ("[", "```tool_code")
    leading = True

    def detect(self, template: str) -> bool:
        return ("python list of the function calls" in template or "[func_name1(" in template
                or "tool_code" in template)

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        body = text.strip()
        if body.startswith("```tool_code"):
            body = body.removeprefix("```tool_code").removesuffix("```").strip()
        if not (body.startswith("[") and body.endswith("]")):
            return text, []
        try:
            tree = ast.parse(body, mode="eval").body
        except SyntaxError:
            return text, []
        if not isinstance(tree, ast.List) or not tree.elts:
            return text, []
        calls = []
        for el in tree.elts:
            if not isinstance(el, ast.Call) or el.args or not isinstance(el.func, (ast.Name, ast.Attribute)):
                return text, []
            name = ast.unparse(el.func)
            try:
                args = {kw.arg: _literal(kw.value) for kw in el.keywords if kw.arg is not None}
            except (ValueError, SyntaxError):
                return text, []
            calls.append(ParsedCall(name, args))
        return "", calls

    def grammar(self, tools: list[ToolSpec], *, parallel: bool) -> str:
        # name(key=<JSON value>, ...) with the required parameters in schema order (JSON literals are valid
        # Python literals except true/false/null, which parse() accepts too).
        rules, alts = [], []
        for i, t in enumerate(tools):
            schema = self.params_schema(t)
            props = schema.get("properties", {}) or {}
            required = [k for k in props if k in set(schema.get("required", []))]
            parts = [f'"{k}=" %json {json.dumps({**props[k], "x-guidance": X_GUIDANCE})}' for k in required]
            body = ' ", " '.join(parts) if parts else ""
            rules.append(f'call_{i}: "{t.name}(" {body} ")"')
            alts.append(f"call_{i}")
        items = 'call (", " call)*' if parallel else "call"
        return f'start: "[" {items} "]"\ncall: ' + " | ".join(alts) + "\n" + "\n".join(rules)
