"""Streamed chunk JSON without a model dump per token (used by the chat and completion streams)."""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Callable

from pydantic import BaseModel
from pydantic_core import to_json


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
