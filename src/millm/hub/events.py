"""Fan-out of job events from worker threads to any number of readers.

A `Subscription` is a bounded queue. Sync readers call `get(timeout)` or iterate;
asyncio readers subscribe with their loop and ``await sub.aget()`` / ``async for``
(events are handed over with ``loop.call_soon_threadsafe``, so no thread blocks).
When a queue is full the oldest *progress* event is dropped; state changes are never
dropped (a slow WebSocket sees fewer progress ticks, never a missing 'completed').
A subscription for one job ends after that job's terminal event.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class JobEvent:
    type: str  # "progress" or "state"
    job: dict[str, Any]  # Job.to_dict()

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def terminal(self) -> bool:
        return self.type == "state" and self.job.get("state") in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "job": self.job}


_CLOSED = object()


class Subscription:
    """Events for one job (`job_id`) or all jobs (None). Close it when done reading."""

    def __init__(
        self,
        *,
        job_id: str | None,
        maxsize: int,
        loop: asyncio.AbstractEventLoop | None,
        on_close: Callable[[Subscription], None],
    ) -> None:
        self.job_id = job_id
        self._maxsize = max(2, maxsize)
        self._loop = loop
        self._on_close = on_close
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._async_ready = asyncio.Event() if loop is not None else None
        self._closed = False
        self._finished = False  # saw the job's terminal event

    # -------------------------------------------------------------- producer side
    def wants(self, event: JobEvent) -> bool:
        return self.job_id is None or event.job_id == self.job_id

    def push(self, item: Any) -> None:
        """Called from any thread."""
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._drop_one_progress()
            self._items.append(item)
            self._cond.notify_all()
        if self._loop is not None and self._async_ready is not None:
            try:
                self._loop.call_soon_threadsafe(self._async_ready.set)
            except RuntimeError:  # loop closed
                pass

    def _drop_one_progress(self) -> None:
        for i, item in enumerate(self._items):
            if isinstance(item, JobEvent) and item.type == "progress":
                del self._items[i]
                return
        self._items.popleft()  # only state events: keep the newest

    # -------------------------------------------------------------- consumer side
    def _pop(self) -> JobEvent | None:
        """Next event, None at the end; caller holds the condition and knows an item is there."""
        item = self._items.popleft()
        if item is _CLOSED:
            self._finished = True
            return None
        event: JobEvent = item
        if self.job_id is not None and event.terminal:
            self._finished = True
        return event

    def get(self, timeout: float | None = None) -> JobEvent | None:
        """Next event; None when closed or finished. Raises TimeoutError after `timeout`."""
        with self._cond:
            if self._finished and not self._items:
                return None
            if not self._cond.wait_for(lambda: bool(self._items), timeout=timeout):
                raise TimeoutError("no job event")
            return self._pop()

    async def aget(self) -> JobEvent | None:
        """Next event for asyncio readers (subscribe with `loop`); None when closed or finished."""
        assert self._async_ready is not None, "subscribe with loop= to read from asyncio"
        while True:
            with self._cond:
                if self._items:
                    return self._pop()
                if self._finished:
                    return None
                self._async_ready.clear()
            await self._async_ready.wait()

    def __iter__(self) -> Iterator[JobEvent]:
        while (event := self.get()) is not None:
            yield event

    async def __aiter__(self) -> AsyncIterator[JobEvent]:
        while (event := await self.aget()) is not None:
            yield event

    def close(self) -> None:
        """Stop receiving; a reader blocked in get/aget wakes up with None."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        self.push(_CLOSED)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBroker:
    """Keeps the open subscriptions and delivers each published event to those that want it."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(
        self, job_id: str | None = None, *, maxsize: int = 256, loop: asyncio.AbstractEventLoop | None = None
    ) -> Subscription:
        sub = Subscription(job_id=job_id, maxsize=maxsize, loop=loop, on_close=self._remove)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: JobEvent) -> None:
        with self._lock:
            targets = [s for s in self._subs if s.wants(event)]
        for sub in targets:
            sub.push(event)
