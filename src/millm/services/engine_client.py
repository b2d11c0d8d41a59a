"""Request plumbing between the services and the engine: submit engine requests, and read back their events.

Every generating request (chat, completions, compare variants, batch lines) goes through `EngineClient.submit`
into the worker's one generation path, and reads its results through `events` / `await_prefill`. Worker events
reach the event loop through one `Relay` per loop, which wakes the loop once per burst (a decode step's events),
not once per event; a whole (non-streamed) response's tokens between its first and last wait for the next burst.
A stream's plain tokens may be taken in the drain itself (`Inbox.direct`, set by `text_chunks.ChunkStream`).

`await_prefill` waits for the worker to accept and prefill every prompt, so a failure before the first token is
an ordinary error response; after that, errors surface as exceptions from `events`. Leaving `events` early (a
client disconnect) cancels the request, which the worker drops within one decode step.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from millm.engine.model_loading import LoadedModel
from millm.engine.rows import Handle
from millm.engine.types import (
    ActivationRead,
    GenerationEvent,
    GenerationRequest,
    PromptInfo,
    SamplingParams,
    SteeringSpec,
)
from millm.engine.worker import Worker
from millm.errors import InternalError, MillmError
from millm.services.metrics import Metrics

# Set (in its task) by work that must yield to live requests, such as batch lines: their engine requests queue
# behind every live one.
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("millm_background", default=False)


class Relay:
    """Hands events from the worker thread to one event loop, one wake-up per burst.

    `call_soon_threadsafe` writes to the loop's self-pipe (a syscall on the worker thread) and
    wakes the loop. A decode step emits one event per active row, so instead of one wake-up per
    event, the first event after a drain schedules a drain and later ones only join the list;
    the drain then delivers all of them, in order, to their runs' queues.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[Any, Any]] = []
        self._scheduled = False

    def put(self, queue: Any, item: Any, *, wake: bool = True) -> None:
        """Any thread: queue.put_nowait(item) on the loop, soon (an `Inbox` or an `asyncio.Queue`). `wake=False`: only
        with the next put that wakes the loop (for an item that is always followed by another)."""
        with self._lock:
            self._items.append((queue, item))
            if not wake:
                return
            wake, self._scheduled = not self._scheduled, True
        if wake:
            self.loop.call_soon_threadsafe(self._drain)

    def holds(self, queue: Any) -> bool:
        """Whether an item for `queue` waits here (put, not yet drained)."""
        with self._lock:
            return any(q is queue for q, _ in self._items)

    def _drain(self) -> None:
        with self._lock:
            items, self._items, self._scheduled = self._items, [], False
        if len(items) == 1:
            queue, item = items[0]
            queue.put_nowait(item)
            return
        # each queue's items together (in order), so that a run with several choices, or one the loop fell behind
        # on, takes its events in one call (an `Inbox` with a direct reader writes them in one send)
        groups: dict[int, tuple[Any, list[Any]]] = {}
        for queue, item in items:
            group = groups.get(id(queue))
            if group is None:
                groups[id(queue)] = (queue, [item])
            else:
                group[1].append(item)
        for queue, group_items in groups.values():
            put_all = getattr(queue, "put_all", None)
            if put_all is not None:
                put_all(group_items)
            else:
                for item in group_items:
                    queue.put_nowait(item)


class Inbox:
    """One run's events on the event loop, in order: what `asyncio.Queue` does here, with less per event.

    The relay fills it on the loop (`put_nowait`); one task reads it (`get`). An unbounded `asyncio.Queue` also
    keeps a task count and an `Event` for `join()`, checks for a full queue and wakes putters on every `get`,
    none of which this needs; on a stream it runs once per token, on the event loop's thread."""

    __slots__ = ("_items", "_waiter", "direct", "writes")

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        # A direct reader (set by a stream's response, `generation.ChunkStream.bypass`): while the reading task waits
        # on an empty inbox, which means everything before has been handled, arriving items are offered to it first,
        # on the loop, in the relay's drain: it takes a leading run of them (returns how many) and the rest is queued
        # for the task as usual. An item is never both taken and queued, and never taken out of order.
        self.direct: Callable[[list[Any]], int] | None = None
        # The worker thread's own writer for the stream's plain tokens (`text_chunks.WorkerWrites`, set by the stream's
        # response): the stream's sink hands it every event instead of the relay, and whenever the reading task waits
        # on an empty inbox it is told (`arm`: it may then take over the writing).
        self.writes: Any = None

    def put_nowait(self, item: Any) -> None:
        self.put_all([item])

    def put_all(self, items: list[Any]) -> None:
        """put_nowait of each item, in order."""
        direct, waiter = self.direct, self._waiter
        if direct is not None and waiter is not None and not self._items and not waiter.done():
            try:
                taken = direct(items)
            except Exception:  # noqa: BLE001 - the reader meets the same item the ordinary way, where errors belong
                self.direct = None
                taken = 0
            if taken:
                if taken == len(items):
                    if self.writes is not None:
                        self.writes.arm()
                    return
                items = items[taken:]
        self._items.extend(items)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if self.writes is not None:
                self.writes.arm()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


@dataclass
class Run:
    """Engine requests submitted for one API request, and their merged event stream."""

    handles: list[Handle]
    queue: Inbox
    n: int
    prompt_tokens: list[int] = field(default_factory=list)
    prompt_logprobs: list[Any] = field(default_factory=list)
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    steering: str = "none"  # what was applied, for the request log (`logs.steering_summary`)
    steering_source: str = "none"  # AppliedSteering.source, for metrics
    steering_version: int = 0  # the server-wide steering's version when the request was resolved
    finals: dict[int, GenerationEvent] = field(default_factory=dict)  # each choice's last event
    read: ActivationRead | None = None  # the request's `activations`, when it asked for them
    relay: Relay | None = None  # what hands its events to the loop
    defer: Callable[[Callable[[], None]], bool] | None = None  # the worker's `defer`, for its sinks' writes

    def cancel(self) -> None:
        for h in self.handles:
            h.cancel()


def took(run: Run, ev: GenerationEvent) -> None:
    """A token event's bookkeeping on its run (`EngineClient.events`, and a stream's direct reader)."""
    if run.first_token_at is None:
        run.first_token_at = time.monotonic()
    run.completion_tokens += len(ev.token_ids)


class EngineClient:
    """Submits engine requests to the worker for one API request and merges their events."""

    def __init__(self, *, worker: Worker, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics
        self._relay: Relay | None = None

    def submit(self, lm: LoadedModel, prompts_ids: list[list[int]], *, n: int, params: SamplingParams,
                steering: SteeringSpec | None, prompt_logprobs: bool, prefix: str,
                steerings: list[SteeringSpec | None] | None = None,
                prompt_top_logprobs: int | None = None, activations: ActivationRead | None = None,
                stream: bool = True) -> Run:
        """Submit one engine request per prompt; `steerings` (one per prompt) overrides `steering`. `stream=False`
        (the response is built at the end): a prompt's tokens between its first and each choice's last join the
        next wake-up of the loop instead of waking it each."""
        loop = asyncio.get_running_loop()
        if self._relay is None or self._relay.loop is not loop:
            self._relay = Relay(loop)
        relay = self._relay
        queue = Inbox()
        run = Run(handles=[], queue=queue, n=n, read=activations, relay=relay, defer=self.worker.defer)
        try:
            for i, ids in enumerate(prompts_ids):
                request = GenerationRequest(
                    request_id=f"{prefix}-{i}" if len(prompts_ids) > 1 else prefix,
                    prompt_ids=tuple(ids), params=params, n=n,
                    steering=steerings[i] if steerings is not None else steering,
                    prompt_logprobs=prompt_logprobs, model=lm.model_id, prompt_top_logprobs=prompt_top_logprobs,
                    activations=activations,
                    background=BACKGROUND.get(),
                )

                def sink(event: Any, i: int = i) -> None:
                    # PromptInfo waits for the first tokens, which the worker sends right after it: one wake-up of
                    # the loop for both, not a wake-up whose work (the response's set-up) the first token then
                    # waits behind for the GIL
                    writes = queue.writes
                    if writes is not None:  # (a stream whose plain tokens the worker may write itself)
                        writes.put(i, event, type(event) is not PromptInfo)
                    else:
                        relay.put(queue, (i, event), wake=type(event) is not PromptInfo)

                def quiet_sink(event: Any, i: int = i, woke: list[bool] = [False]) -> None:  # noqa: B006 - per prompt
                    # Nothing reads a whole response's tokens before its end, so only the first token (its arrival is
                    # the request's TTFT), each choice's last event and failures wake the loop: the tokens between
                    # wait in the relay for the next wake-up (about 140 us of the loop's CPU per token less)
                    if type(event) is GenerationEvent and event.finish_reason is None:
                        wake, woke[0] = not woke[0], True
                    else:
                        wake = type(event) is not PromptInfo
                    relay.put(queue, (i, event), wake=wake)

                run.handles.append(self.worker.submit(request, sink if stream else quiet_sink))
        except MillmError:
            run.cancel()
            raise
        self.metrics.queue_depth.set(self.worker.queue_depth)
        return run

    async def events(self, run: Run, total_prompts: int) -> AsyncIterator[tuple[int, GenerationEvent]]:
        """Yield (global choice index, event) until every choice finished. Raises on errors."""
        finished = 0
        want = total_prompts * run.n
        try:
            while finished < want:
                i, ev = await run.queue.get()
                if isinstance(ev, BaseException):
                    raise ev
                if isinstance(ev, PromptInfo):
                    continue
                if ev.finish_reason == "error":
                    raise ev.failure or InternalError(ev.error or "generation failed")
                took(run, ev)
                if ev.finish_reason is not None:
                    finished += 1
                    run.finals[i * run.n + ev.choice] = ev
                yield i * run.n + ev.choice, ev
        finally:
            run.queue.direct = None
            run.queue.writes = None
            if finished < want:
                run.cancel()

    async def await_prefill(self, run: Run, total_prompts: int) -> list[tuple[int, Any]]:
        """Wait for every prompt's PromptInfo (the worker accepted it); return events seen meanwhile."""
        held: list[tuple[int, Any]] = []
        infos: dict[int, PromptInfo] = {}
        try:
            while len(infos) < total_prompts:
                i, ev = await run.queue.get()
                if isinstance(ev, BaseException):
                    raise ev
                if isinstance(ev, PromptInfo):
                    infos[i] = ev
                else:
                    held.append((i, ev))
        except BaseException:
            run.cancel()
            raise
        while not run.queue.empty():
            held.append(run.queue.get_nowait())
        run.prompt_tokens = [infos[i].prompt_tokens for i in range(total_prompts)]
        run.prompt_logprobs = [infos[i].prompt_logprobs for i in range(total_prompts)]
        for item in held:
            run.queue.put_nowait(item)
        return held
