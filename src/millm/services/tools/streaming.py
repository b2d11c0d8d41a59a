"""Tool calls streamed while the model writes them, as OpenAI-shaped deltas.

`CallStreamer.update(text)` takes the calls text so far (from the family's marker on, as `StreamSplitter` holds
it) and returns the new `CallDelta`s: a call's id and function name as soon as the name is complete, then its
arguments in pieces as they are written. For the JSON families (Hermes/Qwen, Llama 3 JSON, Mistral) the pieces
are the raw text of the arguments object, so what a client concatenates is the JSON the model wrote; a call's
arguments stream only once its name is out. Pythonic calls (Gemma) stream the name as soon as `name(` is
written; their keyword arguments are not JSON, so they come whole at the end.

`finish(calls)` takes the calls the family's parser read from the whole text and returns what is still missing:
calls that were never announced, and the arguments of calls whose arguments did not stream (a string-encoded
arguments value, or a pythonic call). A call once announced stays announced: if the text turns out not to parse
(the reply hit max_tokens in the middle of a call), the client has the partial call, as OpenAI's API does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

from millm.services.tools.base import ParsedCall

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_V11 = re.compile(r"\s*(?:\[TOOL_CALLS\])?\s*([A-Za-z0-9_.\-]+)\[ARGS\]")


@dataclass
class CallDelta:
    """One `delta.tool_calls[]` entry: the first for a call has id and name; later ones append arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class _Seen:
    """A JSON object in the calls text: its depth-1 keys with where their values start and end (end None while
    the value is still being written)."""

    start: int
    end: int | None = None  # just past the closing brace
    values: dict[str, tuple[int, int | None]] = field(default_factory=dict)


def _objects(text: str, start: int = 0, limit: int | None = None) -> list[_Seen]:
    """The top-level JSON objects in `text` from `start`, the last one possibly unfinished. Anything between
    objects (markers, brackets, commas, semicolons, whitespace) is skipped."""
    out: list[_Seen] = []
    i, n = start, len(text)
    while i < n and (limit is None or len(out) < limit):
        j = text.find("{", i)
        if j < 0:
            break
        obj = _Seen(start=j)
        out.append(obj)
        depth, in_str, esc = 0, False, False
        key: str | None = None
        key_start = -1
        state = "key"  # at depth 1: "key" (expecting a key), "colon", "value" (inside a value)
        k = j
        while k < n:
            ch = text[k]
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
                    if depth == 1 and state == "key" and key_start >= 0:
                        key = text[key_start:k]
                        key_start = -1
                        state = "colon"
                k += 1
                continue
            if ch == '"':
                in_str = True
                if depth == 1 and state == "key":
                    key_start = k + 1
                elif depth == 1 and state == "colon_done":
                    state = "value"
                    if key is not None:
                        obj.values[key] = (k, None)
            elif ch in "{[":
                if depth == 1 and state == "colon_done":
                    state = "value"
                    if key is not None:
                        obj.values[key] = (k, None)
                depth += 1
            elif ch in "}]":
                depth -= 1
                if depth == 0:
                    _close(obj, key, k)
                    obj.end = k + 1
                    break
            elif depth == 1:
                if ch == ":" and state == "colon":
                    state = "colon_done"
                elif ch == ",":
                    _close(obj, key, k)
                    state, key = "key", None
                elif state == "colon_done" and not ch.isspace():
                    state = "value"  # a number, true, false or null
                    if key is not None:
                        obj.values[key] = (k, None)
            k += 1
        if obj.end is None:
            break
        i = obj.end
    return out


def _close(obj: _Seen, key: str | None, at: int) -> None:
    if key is not None and key in obj.values and obj.values[key][1] is None:
        obj.values[key] = (obj.values[key][0], at)


def _python_names(text: str) -> list[str]:
    """Names of the calls in a pythonic list written so far: identifiers followed by "(" outside any call."""
    names: list[str] = []
    depth, quote, esc, i = 0, "", False, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and (m := _IDENT.match(text, i)) is not None:
            rest = text[m.end():].lstrip()
            if rest.startswith("("):
                names.append(m.group(0))
            elif not rest:
                return names  # the name may still be growing
            i = m.end()
            continue
        i += 1
    return names


@dataclass
class _Call:
    id: str
    name: str
    args_sent: str = ""
    args_streamed: bool = False  # its arguments stream as raw JSON text


class CallStreamer:
    def __init__(self, family: str, *, parallel: bool, call_id: Callable[[], str]) -> None:
        self.family = family
        self.parallel = parallel
        self.call_id = call_id
        self.calls: list[_Call] = []

    @property
    def announced(self) -> bool:
        return bool(self.calls)

    def update(self, text: str) -> list[CallDelta]:
        if self.family == "pythonic":
            return self._update_pythonic(text)
        limit = None if self.parallel else 1
        body = text
        if self.family == "mistral":
            at = text.find("[TOOL_CALLS]")
            body = text[at + len("[TOOL_CALLS]"):] if at >= 0 else text
            if body.strip() and not body.lstrip().startswith("["):
                return self._update_v11(body, limit)
        out: list[CallDelta] = []
        for k, obj in enumerate(_objects(body, limit=limit)):
            name_at = obj.values.get("name")
            args_key = next((key for key in ("arguments", "parameters") if key in obj.values), None)
            if k == len(self.calls):
                if name_at is None or name_at[1] is None:
                    break  # the name is not complete yet: nothing after it can be announced
                try:
                    name = json.loads(body[name_at[0]:name_at[1]])
                except ValueError:
                    break
                if not isinstance(name, str):
                    break
                self.calls.append(_Call(self.call_id(), name))
                out.append(CallDelta(k, id=self.calls[k].id, name=name))
            call = self.calls[k]
            if args_key is not None:
                a_start, a_end = obj.values[args_key]
                if body[a_start] == "{":
                    call.args_streamed = True
                    raw = body[a_start:a_end if a_end is not None else len(body)]
                    if a_end is not None:
                        raw = raw.rstrip()
                    if len(raw) > len(call.args_sent) and raw.startswith(call.args_sent):
                        out.append(CallDelta(k, arguments=raw[len(call.args_sent):]))
                        call.args_sent = raw
            if obj.end is None:
                break
        return out

    def _update_v11(self, body: str, limit: int | None) -> list[CallDelta]:
        """Mistral v11: name[ARGS]{...} per call."""
        out: list[CallDelta] = []
        pos, k = 0, 0
        while pos < len(body) and (limit is None or k < limit):
            m = _V11.match(body, pos)
            if m is None:
                break
            if k == len(self.calls):
                self.calls.append(_Call(self.call_id(), m.group(1)))
                out.append(CallDelta(k, id=self.calls[k].id, name=m.group(1)))
            objs = _objects(body, m.end(), limit=1)
            if not objs or body[m.end():objs[0].start].strip():
                break
            obj, call = objs[0], self.calls[k]
            call.args_streamed = True
            raw = body[obj.start:obj.end if obj.end is not None else len(body)]
            if len(raw) > len(call.args_sent) and raw.startswith(call.args_sent):
                out.append(CallDelta(k, arguments=raw[len(call.args_sent):]))
                call.args_sent = raw
            if obj.end is None:
                break
            pos, k = obj.end, k + 1
        return out

    def _update_pythonic(self, text: str) -> list[CallDelta]:
        body = text.strip()
        body = body.removeprefix("```tool_code").lstrip()
        if not body.startswith("["):
            return []
        names = _python_names(body[1:])
        if not self.parallel:
            names = names[:1]
        out = []
        for k in range(len(self.calls), len(names)):
            self.calls.append(_Call(self.call_id(), names[k]))
            out.append(CallDelta(k, id=self.calls[k].id, name=names[k]))
        return out

    def finish(self, calls: list[ParsedCall]) -> list[CallDelta]:
        """What is still to send, given the calls parsed from the whole text (already cut to one when calls are
        not parallel)."""
        out: list[CallDelta] = []
        for k, parsed in enumerate(calls):
            whole = json.dumps(parsed.arguments, ensure_ascii=False)
            if k >= len(self.calls):
                self.calls.append(_Call(self.call_id(), parsed.name))
                out.append(CallDelta(k, id=self.calls[k].id, name=parsed.name))
            call = self.calls[k]
            if call.name != parsed.name:
                continue  # (cannot happen with the parsers' own reading; nothing to mend once sent)
            if not call.args_sent:
                out.append(CallDelta(k, arguments=whole))
                call.args_sent = whole
        return out
