"""Streamed chunks (used by the chat and completion streams): their JSON without a model dump per token, and the
streams' shortcut for plain tokens (`ChunkStream`)."""

from __future__ import annotations

from functools import partial
from json.encoder import encode_basestring
from typing import Any, AsyncIterator, Callable

from pydantic import BaseModel
from pydantic_core import to_json

from millm.engine.types import GenerationEvent
from millm.services.engine_client import Run, took


class TextChunks:
    """JSON of streamed chunks whose only per-token content is one choice's text.

    `make(index, text)` builds such a chunk. It is built and dumped once per choice index with a
    marker for the text; each token's chunk is then that dump with the text's JSON in the marker's
    place, so the bytes equal `model_dump_json()`. The text's JSON is the standard library's string encoder
    without ASCII escaping (one C call; pydantic's `to_json` and `.decode()` cost several times more on the
    event loop): it escapes exactly what pydantic's serializer escapes (quote, backslash, control characters;
    not U+2028/9, not non-ASCII), checked against it in the tests.
    """

    MARK = "\x00millm-text\x00"
    _MARK_JSON = to_json(MARK).decode()

    def __init__(self, make: Callable[[int, str], BaseModel]) -> None:
        self._make = make
        self._parts: dict[int, tuple[str, str]] = {}

    def __call__(self, index: int, text: str) -> str:
        parts = self._parts.get(index)
        if parts is None:
            dumped = self._make(index, self.MARK).model_dump_json()
            assert dumped.count(self._MARK_JSON) == 1
            head, _, tail = dumped.partition(self._MARK_JSON)
            parts = self._parts[index] = (head, tail)
        return parts[0] + encode_basestring(text) + parts[1]


class ChunkStream:
    """A stream's chunk JSON texts, in order (async iteration: every chunk goes this way), and a shortcut for the
    response that writes them: `bypass(emit)`.

    With a bypass set, a token event that arrives while the stream waits for one, which means every chunk before it
    has been written, is turned into its chunk right in the relay's drain (`engine_client.Inbox.direct`) and handed to
    `emit` (a list: all such events of one drain, in order), instead of waking the stream's task to pass it through
    the chain of async generators (events, the stream's own, the SSE framing) and the response's send. Only the
    events for which `plain(choice, event)` gives a text take it (a token of a stream without logprobs, tool calls
    or a finish: the chain would yield exactly that chunk for it; "" when it would yield none); anything else, and
    everything after it in the same drain, goes the ordinary way. `emit` returns False when it cannot write now
    (then the events go the ordinary way too)."""

    def __init__(self, chunks: AsyncIterator[str], run: Run,
                 plain: Callable[[int, GenerationEvent], str | None] | None) -> None:
        self._chunks = chunks
        self._run = run
        self._plain = plain

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]

    def bypass(self, emit: Callable[[list[str]], bool] | None) -> None:
        """Set (or with None, clear) the response's direct writer."""
        if self._plain is None:
            return
        self._run.queue.direct = None if emit is None else partial(self._direct, emit)

    def _direct(self, emit: Callable[[list[str]], bool], items: list[Any]) -> int:
        run, plain = self._run, self._plain
        assert plain is not None
        texts: list[str] = []
        taken: list[GenerationEvent] = []
        for i, ev in items:
            if type(ev) is not GenerationEvent or ev.finish_reason is not None:
                break
            text = plain(i * run.n + ev.choice, ev)
            if text is None:
                break
            taken.append(ev)
            if text:
                texts.append(text)
        if not taken or (texts and not emit(texts)):
            return 0
        for ev in taken:
            took(run, ev)
        return len(taken)
