"""The worker thread's own writes of a stream's plain tokens (services/text_chunks.WorkerWrites): when the writing is
handed over, what the worker writes and what it hands back to the loop, in order, for a whole write, a partial one,
a full socket and a broken one. The connection is a fake that records writes; the live server's are in
tests/api/test_stream_shortcut.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from millm.engine.types import GenerationEvent
from millm.services.engine_client import Inbox, Relay, Run
from millm.services.text_chunks import WorkerWrites


class FakeConnection:
    """Records what reaches the socket, from which side; `take` says how many bytes the next worker write takes
    (an exception: raised)."""

    def __init__(self) -> None:
        self.wire: list[tuple[str, bytes]] = []
        self.take: list[Any] = []
        self.is_ready = True
        self.closed = False

    def write(self, data: bytes) -> int:
        n = self.take.pop(0) if self.take else len(data)
        if isinstance(n, BaseException):
            raise n
        if n:
            self.wire.append(("worker", data[:n]))
        return n

    def ready(self) -> bool:
        return self.is_ready

    def flush(self, rest: bytes) -> None:
        self.wire.append(("loop", rest))

    def close(self) -> None:
        self.closed = True


class Step:
    """A decode step's `defer` (engine `Worker.defer`): takes work while the step's events go out, runs it at `end`."""

    def __init__(self) -> None:
        self.open = False
        self.work: list[Any] = []

    def defer(self, fn: Any) -> bool:
        if self.open:
            self.work.append(fn)
        return self.open

    def run(self, writes: WorkerWrites, *events: GenerationEvent, end: bool = True) -> None:
        """On a worker thread: the step's events, then (with `end`) the deferred work."""
        def step() -> None:
            self.open = True
            for ev in events:
                writes.put(0, ev, True)
            if end:
                self.end()
        _on_worker(step)

    def end(self) -> None:
        self.open = False
        work, self.work = self.work, []
        for fn in work:
            fn()


def tok(text: str, choice: int = 0) -> GenerationEvent:
    return GenerationEvent.token(choice, text, 7)


def finish(text: str = "", choice: int = 0) -> GenerationEvent:
    return GenerationEvent(choice=choice, text=text, token_ids=(7,), finish_reason="length")


def _setup(loop: asyncio.AbstractEventLoop, *, n: int = 1, step: Step | None = None
           ) -> tuple[Run, FakeConnection, WorkerWrites]:
    relay = Relay(loop)
    run = Run(handles=[], queue=Inbox(), n=n, relay=relay, defer=step.defer if step is not None else None)
    run.first_token_at = 0.0  # (the first token went the loop's way, as on a server)
    out = FakeConnection()

    def plain(c: int, ev: GenerationEvent) -> str | None:
        return None if ev.logprobs else f"<{c}:{ev.text}>" if ev.text else ""

    writes = WorkerWrites(run, plain, lambda text: text.encode(), out)
    run.queue.writes = writes
    return run, out, writes


def _on_worker(fn: Any) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def _put(writes: WorkerWrites, *events: GenerationEvent) -> None:
    _on_worker(lambda: [writes.put(0, ev, True) for ev in events])


def test_the_worker_writes_plain_tokens_once_armed_and_hands_the_rest_back_in_order():
    async def main() -> dict[str, Any]:
        run, out, writes = _setup(asyncio.get_running_loop())
        got: dict[str, Any] = {}
        _put(writes, tok("a"))  # not armed: the loop's way
        await asyncio.sleep(0.01)
        got["before arming"] = (out.wire[:], [run.queue.get_nowait() for _ in range(run.queue.qsize())])
        reader = asyncio.ensure_future(run.queue.get())  # the task waits on an empty inbox: armed
        await asyncio.sleep(0)
        _put(writes, tok("b"), tok(""), tok("c"), finish("d"), tok("e"))
        got["wire"] = out.wire[:]
        got["tokens"] = run.completion_tokens
        got["loop got"] = [(await asyncio.wait_for(reader, 5))[1].text, run.queue.get_nowait()[1].text]
        got["written"] = writes.written
        return got

    got = asyncio.run(main())
    assert got["before arming"][0] == [] and [ev.text for _, ev in got["before arming"][1]] == ["a"]
    # b, "" (no chunk) and c by the worker, counted; the finish and everything after it the loop's way
    assert got["wire"] == [("worker", b"<0:b>"), ("worker", b"<0:c>")]
    assert got["tokens"] == 3 and got["written"] == 2
    assert got["loop got"] == ["d", "e"]


def test_no_handover_while_anything_of_the_run_is_pending_on_the_loop_s_side():
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        run, out, writes = _setup(loop)
        armed: list[bool] = []
        out.is_ready = False  # (a held send, a transport buffer not empty, the client gone)
        writes.arm()
        armed.append(writes._owner == 1)
        out.is_ready = True
        run.relay._items.append((run.queue, (0, tok("x"))))  # type: ignore[union-attr]  # an event not yet drained
        writes.arm()
        armed.append(writes._owner == 1)
        run.relay._items.clear()  # type: ignore[union-attr]
        writes.arm()
        armed.append(writes._owner == 1)
        writes.reclaim()  # the loop writes (a ping): the writing is the loop's again
        armed.append(writes._owner == 1)
        writes.close()
        writes.arm()
        armed.append(writes._owner == 1)
        return armed

    assert asyncio.run(main()) == [False, False, True, False, False]


def test_a_partial_write_leaves_the_rest_to_the_loop_first_and_ends_the_worker_s_writing():
    async def main() -> dict[str, Any]:
        run, out, writes = _setup(asyncio.get_running_loop())
        reader = asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        out.take = [4]
        _put(writes, tok("long"), tok("next"))
        got: dict[str, Any] = {"wire before the loop ran": out.wire[:], "off": writes.off}
        ev = (await asyncio.wait_for(reader, 5))[1]
        got["wire"] = out.wire[:]
        got["loop got"] = ev.text
        got["tokens"] = run.completion_tokens
        reader = asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        _put(writes, tok("later"))  # no new handover after a partial write
        got["later"] = (await asyncio.wait_for(reader, 5))[1].text
        return got

    got = asyncio.run(main())
    assert got["wire before the loop ran"] == [("worker", b"<0:l")] and got["off"]
    # the relay woke the loop: the rest went out before the next event reached the stream's task
    assert got["wire"] == [("worker", b"<0:l"), ("loop", b"ong>")]
    assert got["loop got"] == "next" and got["tokens"] == 1 and got["later"] == "later"


def test_the_rest_of_a_partial_write_goes_before_any_write_of_the_loop_s_own():
    async def main() -> list[tuple[str, bytes]]:
        run, out, writes = _setup(asyncio.get_running_loop())
        asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        out.take = [2]
        _put(writes, tok("abc"))
        writes.reclaim()  # (what a ping, the end or a direct send of the loop's calls first), before the relay ran
        out.wire.append(("loop", b"ping"))
        await asyncio.sleep(0.01)  # the relay's wake-up finds nothing left
        return out.wire

    assert asyncio.run(main()) == [("worker", b"<0"), ("loop", b":abc>"), ("loop", b"ping")]


def test_a_full_or_broken_socket_sends_the_token_the_loop_s_way():
    for failure in (BlockingIOError(), BrokenPipeError(), ConnectionResetError(), 0):
        async def main(failure: Any = failure) -> tuple[Any, ...]:
            run, out, writes = _setup(asyncio.get_running_loop())
            reader = asyncio.ensure_future(run.queue.get())
            await asyncio.sleep(0)
            out.take = [failure]
            _put(writes, tok("x"), tok("y"))
            ev = (await asyncio.wait_for(reader, 5))[1]
            return out.wire, ev.text, run.queue.get_nowait()[1].text, run.completion_tokens, writes.off

        wire, first, second, tokens, off = asyncio.run(main())
        assert wire == [] and (first, second) == ("x", "y"), failure
        assert tokens == 0 and off  # (counted by the loop's path when it takes them)


def test_the_loop_takes_the_writing_back_only_after_the_worker_s_write_in_progress():
    async def main() -> list[str]:
        run, out, writes = _setup(asyncio.get_running_loop())
        asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        order: list[str] = []
        inside, release = threading.Event(), threading.Event()
        real = out.write

        def slow(data: bytes) -> int:
            inside.set()
            release.wait(5)
            order.append("worker wrote")
            return real(data)

        out.write = slow  # type: ignore[method-assign]
        t = threading.Thread(target=lambda: writes.put(0, tok("x"), True))
        t.start()
        inside.wait(5)
        threading.Timer(0.05, release.set).start()
        writes.reclaim()  # waits for the write in progress
        order.append("loop took over")
        t.join()
        return order

    assert asyncio.run(main()) == ["worker wrote", "loop took over"]


def test_a_step_s_chunks_are_held_for_its_end_and_go_out_in_one_write_before_any_event_of_the_loop_s():
    async def main() -> dict[str, Any]:
        step = Step()
        run, out, writes = _setup(asyncio.get_running_loop(), n=2, step=step)
        reader = asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        got: dict[str, Any] = {}
        step.run(writes, tok("a", 0), tok("b", 1), end=False)
        got["held"] = (out.wire[:], run.completion_tokens, len(step.work))
        _on_worker(step.end)
        got["after the step"] = (out.wire[:], run.completion_tokens, writes.written)
        step.run(writes, tok("c", 0), tok("", 1), finish("d", 1))  # the finish: the held chunk is written first
        got["wire"] = out.wire[:]
        got["loop got"] = (await asyncio.wait_for(reader, 5))[1].text
        got["tokens"] = run.completion_tokens
        return got

    got = asyncio.run(main())
    assert got["held"] == ([], 0, 1)  # one flush asked for, by the first chunk held
    assert got["after the step"] == ([("worker", b"<0:a><1:b>")], 2, 2)
    assert got["wire"] == [("worker", b"<0:a><1:b>"), ("worker", b"<0:c>")]
    assert got["loop got"] == "d" and got["tokens"] == 4


def test_the_loop_writes_the_held_chunks_before_its_own_and_the_end_drops_them():
    async def main() -> tuple[list[Any], list[Any]]:
        step = Step()
        run, out, writes = _setup(asyncio.get_running_loop(), step=step)
        asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        step.run(writes, tok("x"), end=False)
        writes.reclaim()  # (a ping): the held chunk goes first, and the writing is the loop's
        out.wire.append(("loop", b"ping"))
        _on_worker(step.end)  # nothing left to write
        first = out.wire[:]

        run2, out2, writes2 = _setup(asyncio.get_running_loop(), step=step)
        asyncio.ensure_future(run2.queue.get())
        await asyncio.sleep(0)
        step.run(writes2, tok("y"), end=False)
        writes2.close()  # the response ended (the client went away): the held chunk is dropped
        _on_worker(step.end)
        return first, out2.wire

    first, second = asyncio.run(main())
    assert first == [("worker", b"<0:x>"), ("loop", b"ping")]
    assert second == []


def test_held_chunks_the_socket_refuses_go_the_loop_s_way_in_order():
    async def main() -> tuple[Any, ...]:
        step = Step()
        run, out, writes = _setup(asyncio.get_running_loop(), step=step)
        reader = asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        out.take = [BlockingIOError()]
        step.run(writes, tok("p"))
        step.run(writes, tok("q"))  # the writing is the loop's after the refusal
        texts = [(await asyncio.wait_for(reader, 5))[1].text]
        await asyncio.sleep(0.01)
        texts += [item[1].text for item in [run.queue.get_nowait() for _ in range(run.queue.qsize())]]
        return out.wire, texts, run.completion_tokens, writes.off

    wire, texts, tokens, off = asyncio.run(main())
    assert wire == [] and texts == ["p", "q"] and tokens == 0 and off


def test_while_the_flush_waits_for_a_later_step_the_next_steps_chunks_join_the_held_write():
    # (engine/deferred.py: the worker runs a step's deferred flush at a later step's end while the writes would take
    # too much of its time) one flush per stream is asked for; the chunks of the steps between go out with it, in order
    async def main() -> tuple[Any, ...]:
        step = Step()
        run, out, writes = _setup(asyncio.get_running_loop(), n=2, step=step)
        asyncio.ensure_future(run.queue.get())
        await asyncio.sleep(0)
        waiting: list[Any] = []
        for a, b in (("a", "b"), ("c", "d"), ("e", "f")):
            step.run(writes, tok(a, 0), tok(b, 1), end=False)  # the step ends; its work waits
            waiting += step.work
            step.work = []
            step.open = False
        held = (out.wire[:], run.completion_tokens, len(waiting))
        for fn in waiting:
            _on_worker(fn)
        return held, out.wire, run.completion_tokens, writes.written

    held, wire, tokens, written = asyncio.run(main())
    assert held == ([], 0, 1)  # one flush for the stream's held chunks, asked for by the first
    assert wire == [("worker", b"<0:a><1:b><0:c><1:d><0:e><1:f>")]
    assert tokens == 6 and written == 6
