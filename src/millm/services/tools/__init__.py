"""Tool calling: which family's call format a model's chat template uses, and the per-request plan.

`FORMATS` is the table (checked in order; the first whose `detect` accepts the template wins). `plan_for`
validates a chat request's `tools`/`tool_choice` against the model: the template must render the tools (the
rendering with and without them must differ) and its call format must be one miLLM reads, else a 400 naming
`tools`. `required` and a named function are enforced by a grammar over the family's call syntax.
When streamed, calls go out as deltas while they are written (`StreamSplitter` with a `CallStreamer`, streaming.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from millm.services.tools.base import ParsedCall, ToolFormat, ToolSpec
from millm.services.tools.hermes import HermesFormat
from millm.services.tools.llama3 import Llama3JsonFormat
from millm.services.tools.mistral import MistralFormat
from millm.services.tools.pythonic import PythonicFormat
from millm.services.tools.streaming import CallDelta, CallStreamer

__all__ = ["FORMATS", "CallDelta", "CallStreamer", "ParsedCall", "StreamSplitter", "ToolFormat", "ToolSpec",
           "format_for"]

FORMATS: tuple[type[ToolFormat], ...] = (HermesFormat, MistralFormat, Llama3JsonFormat, PythonicFormat)


def template_text(tokenizer: Any) -> str:
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):  # named templates: the "tool_use" one when there is one
        tpl = tpl.get("tool_use") or tpl.get("default") or ""
    return tpl or ""


def format_for(tokenizer: Any) -> ToolFormat | None:
    template = template_text(tokenizer)
    for cls in FORMATS:
        fmt = cls(tokenizer)
        if fmt.detect(template):
            return fmt
    return None


@dataclass
class StreamSplitter:
    """Splits streamed reply text into content to send now and a tail that may be tool calls.

    `push(text)` returns the content safe to stream; once a marker starts the calls, everything after it is
    kept (`pending`) for `parse` at the end. With a `streamer`, `take_deltas()` gives the calls' deltas so far
    (see streaming.py) and `finish_deltas(calls)` what remains at the end."""

    fmt: ToolFormat
    pending: str = ""
    in_calls: bool = False
    free: bool = False  # leading formats: the reply did not open with calls, so it is all content
    sent: str = ""
    streamer: CallStreamer | None = None
    deltas: list[CallDelta] = field(default_factory=list)

    def push(self, text: str) -> str:
        out = self._push(text)
        if self.in_calls and self.streamer is not None:
            self.deltas.extend(self.streamer.update(self.pending))
        return out

    @property
    def announced(self) -> bool:
        """Some call went out (its id and name) while streaming."""
        return self.streamer is not None and self.streamer.announced

    def take_deltas(self) -> list[CallDelta]:
        out, self.deltas = self.deltas, []
        return out

    def finish_deltas(self, calls: list[ParsedCall]) -> list[CallDelta]:
        return self.streamer.finish(calls) if self.streamer is not None else []

    def _push(self, text: str) -> str:
        if self.free:
            return text
        self.pending += text
        if self.in_calls:
            return ""
        if self.fmt.leading:
            body = self.pending.lstrip()
            if any(body.startswith(m) for m in self.fmt.markers):
                self.in_calls = True
                return ""
            if body == "" or any(m.startswith(body) for m in self.fmt.markers):
                return ""
            self.free, out, self.pending = True, self.pending, ""
            return out
        found = [i for i in (self.pending.find(m) for m in self.fmt.markers) if i >= 0]
        if found:
            at = min(found)
            out, self.pending, self.in_calls = self.pending[:at], self.pending[at:], True
            self.sent += out
            return out
        hold = 0
        for m in self.fmt.markers:
            for k in range(min(len(m) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(m[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        self.sent += out
        return out

    def finish(self) -> tuple[str, list[ParsedCall]]:
        """(content not yet sent, calls) at the end of the reply."""
        if self.free or not self.pending:
            return self.pending if not self.free else "", []
        content, calls = self.fmt.parse(self.pending)
        if not calls:
            return self.pending, []
        return content, calls


@dataclass
class ToolPlan:
    """How one chat request uses tools: the family's format, the tools as the template takes them, and the
    grammar enforcing a required or named call (None for auto)."""

    fmt: ToolFormat
    template_tools: list[dict[str, Any]]
    constraint: Any  # engine.grammar.Constraint | None
    parallel: bool

    def streamer(self) -> CallStreamer:
        return CallStreamer(self.fmt.name, parallel=self.parallel, call_id=self.fmt.call_id)

    def select(self, calls: list[ParsedCall]) -> list[ParsedCall]:
        return calls if self.parallel else calls[:1]

    def to_openai(self, calls: list[ParsedCall]) -> list[Any]:
        from millm.protocol import openai as p

        calls = calls if self.parallel else calls[:1]
        return [p.ToolCall(id=self.fmt.call_id(), function=p.ToolCallFunction(
            name=c.name, arguments=json.dumps(c.arguments, ensure_ascii=False))) for c in calls]


def plan_for(lm: Any, req: Any) -> ToolPlan | None:
    """The tool plan of a chat request, or None when it uses no tools (none given, or tool_choice 'none')."""
    from millm.engine.grammar import lark_grammar
    from millm.errors import InvalidRequest
    from millm.services.structured import constraint_for

    if req.tool_choice not in (None, "auto", "none"):
        names = [t.function.name for t in req.tools or []]
        if not names:
            raise InvalidRequest("tool_choice requires tools", param="tool_choice")
        if req.named_tool is not None and req.named_tool not in names:
            raise InvalidRequest(f"tool_choice names function {req.named_tool!r}, which is not in tools",
                                 param="tool_choice")
    if not req.tools or req.tool_choice == "none":
        return None
    fmt = format_for(lm.tokenizer)
    if fmt is None:
        known = ", ".join(cls.name for cls in FORMATS)
        raise InvalidRequest("this model's chat template has no tool-call format miLLM can read "
                             f"(known: {known}), so it cannot take tools", param="tools", code="tools_unsupported")
    template_tools = [t.model_dump(exclude_none=True) for t in req.tools]
    constraint = None
    parallel = bool(req.parallel_tool_calls)
    if req.tool_choice not in (None, "auto"):
        named = req.named_tool
        chosen = [t for t in req.tools if named is None or t.function.name == named]
        specs = [ToolSpec(t.function.name, t.function.parameters or {}) for t in chosen]
        grammar = fmt.grammar(specs, parallel=parallel and named is None)
        constraint = constraint_for(lm, lark_grammar(grammar), param="tool_choice")
    return ToolPlan(fmt=fmt, template_tools=template_tools, constraint=constraint, parallel=parallel)
