"""How a pydantic validation error is said on the wire: the OpenAI envelope's `param` (a dotted path with
list indices, `messages[1].content`) and a one-line message. Shared by the HTTP error mapper
(`millm.api.errors`) and the MCP server, which validate the same protocol models."""

from __future__ import annotations

from typing import Any


def param_from_loc(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path")]
    # pydantic adds the union member or a validator name to the location; drop type tags like 'str'.
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and (p in ("str", "int", "float", "bool", "list[str]", "list[int]",
                                           "list[list[int]]", "function-after[_finite(), float]")
                                     or p.startswith(("function-", "list[", "literal["))):
            continue
        else:
            out += ("." if out else "") + str(p)
    return out or None


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0]
    param = param_from_loc(first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    if first.get("type") == "missing":
        msg = "field required"
    return (f"{param}: {msg}" if param else msg), param
