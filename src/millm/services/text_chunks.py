"""Streamed chunks (used by the chat and completion streams): their JSON without a model dump per token, and the
streams' shortcut for plain tokens (`ChunkStream`)."""

from __future__ import annotations

import threading
from functools import partial
from json.encoder import encode_basestring
from typing import Any, AsyncIterator, Callable, Protocol

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
        if emit is None:
            self._run.queue.writes = None

    def worker_writes(self, frame: Callable[[str], bytes], out: Connection) -> WorkerWrites | None:
        """Let the worker thread write this stream's plain tokens itself (`WorkerWrites`): `frame` gives a chunk's
        bytes on the wire, `out` is the connection. None: this stream has no plain tokens (the ordinary path only)."""
        if self._plain is None or self._run.relay is None:
            return None
        writes = WorkerWrites(self._run, self._plain, frame, out)
        self._run.queue.writes = writes
        return writes

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


class Connection(Protocol):
    """What `WorkerWrites` needs of the connection beneath a response (`api.sse.Connection`)."""

    def write(self, data: bytes) -> int:
        """Any thread, never blocking: write what the socket takes now; the bytes taken (OSError: none, failed)."""

    def ready(self) -> bool:
        """The loop: nothing of the response waits to be written (the loop's own writes all reached the socket)."""

    def flush(self, rest: bytes) -> None:
        """The loop: write these bytes of the response before anything else."""

    def close(self) -> None:
        """The loop: no more writes through `write`."""


_LOOP, _WORKER, _DONE = 0, 1, 2  # who writes the response's next bytes


class WorkerWrites:
    """A stream's plain tokens written by the worker thread itself, straight to the connection, without waking the
    event loop: the stream's sink (`engine_client.EngineClient.submit`) hands every event here (`put`) instead of to
    the relay.

    The response's next bytes are the loop's to write, or the worker's. The loop hands them over (`arm`) whenever the
    stream's task waits on an empty inbox, which means every chunk before has been sent, and only when nothing of the
    response waits to be written (`Connection.ready`: the transport's buffer is empty, no send is held by flow
    control, the client is connected) and no event of the run waits in the relay. From then on the worker writes each
    plain token's chunk (what `plain` gives, framed by `frame`: the same bytes the loop would write) with one
    non-blocking write, and does its bookkeeping (`took`). The first event it does not write (a finish, logprobs, an
    error) hands the writing back to the loop and goes through the relay as before, after every write before it is
    complete, so the order holds. The loop takes the writing back (`reclaim`) before it writes anything of the response
    itself (a ping, the end). Both sides switch under one lock, which the worker holds through its write, so they never
    write at once.

    A write the socket does not take whole ends the worker's writing for good (`off`): when the socket took part of
    it, the loop writes the rest before anything else (`reclaim`, which the relay wakes it for, and which every write of
    the loop's calls first); when it took nothing (full, or the client is gone), the event goes the loop's way, whose
    own write meets the same state (buffering and flow control, or the disconnect that ends the run).

    During a decode step the chunks are held for the step's end (`Worker.defer`, given as the run's `defer`): the
    worker writes them (`flush`) once every row of the step has had its event, so that the streams' writes go out
    back to back instead of one between each row's sampling and text; or at a later step's end, while the writes would
    take too much of the worker's time (engine/deferred.py), the chunks of the steps between joining the held ones.
    The held chunks are written (or, when the socket takes nothing, handed to the loop) before anything else of the
    stream: before an event the worker does not write, before the loop writes (`reclaim`); the end of the response
    drops them (`close`)."""

    def __init__(self, run: Run, plain: Callable[[int, GenerationEvent], str | None], frame: Callable[[str], bytes],
                 out: Connection) -> None:
        assert run.relay is not None
        self._run, self._plain, self._frame, self._out = run, plain, frame, out
        self._relay, self._queue, self._defer = run.relay, run.queue, run.defer
        self._lock = threading.Lock()
        self._owner = _LOOP
        self._held: list[tuple[int, GenerationEvent, bytes]] = []  # (prompt, event, chunk) held for the flush
        self._rest: bytes | None = None  # the part of a chunk the socket did not take, for the loop to write
        self.off = False  # the worker writes no more (a write the socket did not take whole, or the end)
        self.written = 0  # chunks the worker wrote whole

    def put(self, i: int, ev: Any, wake: bool) -> None:
        """The worker thread: prompt i's event, written here (or held for the step's end) if the writing is the
        worker's and it is a plain token, else handed to the loop (`Relay.put(..., wake=wake)`)."""
        with self._lock:
            if self._owner == _WORKER:
                if type(ev) is GenerationEvent and ev.finish_reason is None:
                    try:
                        text = self._plain(i * self._run.n + ev.choice, ev)
                        data = self._frame(text) if text else b""
                    except Exception:  # noqa: BLE001 - the loop's way meets the same event, where errors belong
                        text, self.off = None, True
                    if text is not None:
                        if not data:
                            took(self._run, ev)
                            return
                        # (held: a flush is due at this step's end or a later one's, asked for with the first chunk
                        # held; the chunks of the steps between join it)
                        if self._held or (self._defer is not None and self._defer(self.flush)):
                            self._held.append((i, ev, data))
                            return
                        if self._write([(i, ev, data)]):
                            return
                self._send_held()
                self._owner = _LOOP
            self._relay.put(self._queue, (i, ev), wake=wake)

    def flush(self) -> None:
        """The worker, at the end of a decode step's events or a later step's (`Worker.defer`): write the held chunks."""
        with self._lock:
            self._send_held()

    def _send_held(self) -> None:
        """(Under the lock.) Write the held chunks, in one write; when the socket takes none of it, their events go
        the loop's way, in order (ahead of whatever the caller hands it next)."""
        held, self._held = self._held, []
        if held and not self._write(held):
            for i, ev, _ in held:
                self._relay.put(self._queue, (i, ev))

    def _write(self, items: list[tuple[int, GenerationEvent, bytes]]) -> bool:
        """(Under the lock, the worker's turn.) Write the items' chunks; whether they are out (or their start, the
        rest with the loop), their events then counted (`took`)."""
        data = items[0][2] if len(items) == 1 else b"".join(chunk for _, _, chunk in items)
        try:
            sent = self._out.write(data)
        except OSError:  # nothing taken: the socket is full, or failed
            sent = 0
        if sent == len(data):
            self.written += len(items)
        elif not sent:
            self.off, self._owner = True, _LOOP
            return False
        else:
            self.off = True
            self._rest = data[sent:]  # (before the owner: `reclaim` reads them without the lock)
            self._owner = _LOOP
            self._relay.put(self, None)  # wakes the loop to write the rest (`put_nowait`)
        for _, ev, _ in items:
            took(self._run, ev)
        return True

    def arm(self) -> None:
        """The loop: the stream's task waits on an empty inbox. Hand the writing to the worker if nothing of the
        response is pending."""
        if self.off or self._owner != _LOOP:
            return
        with self._lock:
            if (self._owner == _LOOP and not self.off and self._rest is None and self._out.ready()
                    and not self._relay.holds(self._queue)):
                self._owner = _WORKER

    def reclaim(self) -> None:
        """The loop, before it writes anything of the response: the writing is the loop's again (after the worker's
        write in progress, if any), and the rest of a partly taken chunk goes first."""
        if self._owner == _LOOP and self._rest is None:
            return
        with self._lock:
            self._send_held()  # (the worker's, held for the step's end: they come first)
            if self._owner == _WORKER:
                self._owner = _LOOP
            rest, self._rest = self._rest, None
        if rest:
            self._out.flush(rest)

    def put_nowait(self, item: Any) -> None:
        """(The relay, on the loop, after a partly taken write.)"""
        self.reclaim()

    def close(self) -> None:
        """The loop: the response ends (or failed); the worker writes nothing after this returns."""
        with self._lock:
            self._owner, self.off, self._rest, self._held = _DONE, True, None, []
        self._out.close()
