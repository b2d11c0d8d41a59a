"""Event hand-off from the worker thread to the event loop, and the streamed chunks' JSON."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from millm.protocol import openai as p
from millm.services.engine_client import Relay as _Relay
from millm.services.text_chunks import TextChunks as _TextChunks


class _NoMetrics:
    """The one metric EngineClient sets, as a no-op (tests of its wake-ups)."""

    class queue_depth:  # noqa: N801 - a gauge's interface
        @staticmethod
        def set(n: int) -> None:
            pass


def _count_wake_ups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the loop's wake-ups from other threads (`call_soon_threadsafe`) from now on, in the returned cell."""
    wakes = [0]
    real = loop.call_soon_threadsafe

    def counting(*args, **kwargs):
        wakes[0] += 1
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    return wakes


def test_relay_delivers_a_burst_in_order_with_one_wake_up():
    async def main() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        wakes = _count_wake_ups(loop)
        relay = _Relay(loop)
        queues: list[asyncio.Queue] = [asyncio.Queue() for _ in range(3)]

        def step() -> None:  # one decode step's events, as the worker thread emits them
            for tok in range(100):
                for q in queues:
                    relay.put(q, tok)

        worker = threading.Thread(target=step)
        worker.start()
        worker.join()  # blocks the loop: the whole burst is queued before the drain runs
        got = [[await q.get() for _ in range(100)] for q in queues]
        assert all(q.empty() for q in queues)
        return got, wakes[0]

    got, wakes = asyncio.run(main())
    assert got == [list(range(100))] * 3
    assert wakes == 1


def test_relay_wakes_again_after_a_drain():
    async def main() -> list[int]:
        relay = _Relay(asyncio.get_running_loop())
        q: asyncio.Queue = asyncio.Queue()
        out = []
        for i in range(5):
            t = threading.Thread(target=relay.put, args=(q, i))
            t.start()
            t.join()
            out.append(await asyncio.wait_for(q.get(), 5))
        return out

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_relay_concurrent_producers_lose_nothing():
    async def main() -> list[tuple[int, int]]:
        relay = _Relay(asyncio.get_running_loop())
        q: asyncio.Queue = asyncio.Queue()
        threads = [threading.Thread(target=lambda k=k: [relay.put(q, (k, i)) for i in range(2000)]) for k in range(4)]
        for t in threads:
            t.start()
        got = [await asyncio.wait_for(q.get(), 10) for _ in range(8000)]
        for t in threads:
            t.join()
        return got

    got = asyncio.run(main())
    for k in range(4):
        assert [i for kk, i in got if kk == k] == list(range(2000))  # each producer's order kept


def test_inbox_delivers_in_order_and_wakes_its_reader():
    from millm.services.engine_client import Inbox

    async def main() -> tuple[list[int], bool]:
        relay = _Relay(asyncio.get_running_loop())
        inbox = Inbox()
        inbox.put_nowait(0)  # before anyone waits
        got = [await inbox.get()]

        async def read(n: int) -> list[int]:
            return [await inbox.get() for _ in range(n)]

        task = asyncio.ensure_future(read(4))
        await asyncio.sleep(0)  # the reader waits on an empty inbox
        t = threading.Thread(target=lambda: [relay.put(inbox, i) for i in range(1, 5)])
        t.start()
        t.join()
        got += await asyncio.wait_for(task, 5)
        return got, inbox.empty()

    got, empty = asyncio.run(main())
    assert got == [0, 1, 2, 3, 4] and empty


def test_inbox_reader_cancelled_while_waiting_loses_nothing():
    from millm.services.engine_client import Inbox

    async def main() -> list[int]:
        inbox = Inbox()
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        inbox.put_nowait(1)
        inbox.put_nowait(2)
        out = [await asyncio.wait_for(inbox.get(), 5), inbox.get_nowait()]
        with pytest.raises(asyncio.QueueEmpty):
            inbox.get_nowait()
        return out

    assert asyncio.run(main()) == [1, 2]


def test_prompt_info_waits_for_the_first_tokens_and_both_come_in_one_wake_up():
    # issue #18 (short-prompt TTFT): the loop woke for the PromptInfo, set the response up while the worker waited
    # for the GIL to sample the first token, and woke again for the token
    from millm.engine.types import GenerationEvent, PromptInfo
    from millm.services.engine_client import EngineClient

    class Worker:
        queue_depth = 0

        def defer(self, fn):  # (no decode step emitting: sinks write at once)
            return False

        def submit(self, request, sink):
            self.sink = sink
            return object()

    async def main() -> tuple[int, int, list[object]]:
        loop = asyncio.get_running_loop()
        wakes = _count_wake_ups(loop)
        worker = Worker()
        client = EngineClient(worker=worker, metrics=_NoMetrics())  # type: ignore[arg-type]

        class LM:
            model_id = "m"

        from millm.engine.types import SamplingParams

        run = client.submit(LM(), [[1, 2, 3]], n=1, params=SamplingParams(max_tokens=1), steering=None,  # type: ignore[arg-type]
                            prompt_logprobs=False, prefix="cmpl-x")
        info = PromptInfo(prompt_tokens=3)
        first = GenerationEvent(choice=0, text="a", token_ids=(5,), finish_reason="length")
        t = threading.Thread(target=worker.sink, args=(info,))
        t.start()
        t.join()
        await asyncio.sleep(0.05)
        before = wakes[0], run.queue.qsize()
        t = threading.Thread(target=worker.sink, args=(first,))
        t.start()
        t.join()
        await asyncio.wait_for(client.await_prefill(run, 1), 5)
        return before, wakes[0], [ev async for _, ev in client.events(run, 1)]

    (wakes_before, queued_before), wakes, events = asyncio.run(main())
    assert (wakes_before, queued_before) == (0, 0)  # the PromptInfo alone does not wake the loop
    assert wakes == 1
    assert [e.text for e in events] == ["a"]


TEXTS = ["", "plain", ' "quoted" \\ back\\slash', "line\nbreak\r\ttab", "\x00\x01\x1f\x7f", "café 日本語 🙂",
         "\u2028\u2029", "\ufffd", _TextChunks.MARK, "</script>"]


def _random_texts(n: int) -> list[str]:
    """Seeded random strings over every plane (no lone surrogates: decoded text has none)."""
    rnd = random.Random(0)
    ranges = [(0, 0x80), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x110000)]
    return ["".join(chr(rnd.randrange(*rnd.choice(ranges))) for _ in range(rnd.randrange(1, 12))) for _ in range(n)]


@pytest.mark.parametrize("text", TEXTS + _random_texts(40))
def test_text_chunks_are_the_models_own_json(text):
    def completion(c: int, t: str) -> p.Completion:
        return p.Completion(id="cmpl-1", created=7, model="m+prof", choices=[
            p.CompletionChoice(index=c, text=t, finish_reason=None)])

    def chat(c: int, t: str) -> p.ChatCompletionChunk:
        return p.ChatCompletionChunk(id="chatcmpl-1", created=7, model="m", choices=[
            p.ChatChunkChoice(index=c, delta=p.ChatDelta(content=t))])

    for make in (completion, chat):
        chunks = _TextChunks(make)
        for c in (0, 3, 0):
            assert chunks(c, text) == make(c, text).model_dump_json()


def test_a_direct_reader_takes_a_leading_run_only_while_the_reader_waits_on_an_empty_inbox():
    from millm.services.engine_client import Inbox

    async def main() -> dict[str, object]:
        relay = _Relay(asyncio.get_running_loop())
        inbox = Inbox()
        calls: list[list[int]] = []

        def direct(items: list[int]) -> int:  # takes the items below 100, up to the first that is not
            calls.append(list(items))
            n = 0
            while n < len(items) and items[n] < 100:
                n += 1
            return n

        inbox.direct = direct
        inbox.put_nowait(0)  # nobody waits: queued, not offered
        out: dict[str, object] = {"no reader": list(calls)}
        assert await inbox.get() == 0
        reader = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)  # the reader waits on an empty inbox
        t = threading.Thread(target=lambda: [relay.put(inbox, i) for i in (1, 2, 100, 3)])
        t.start()
        t.join()  # one burst: one offer of all four
        out["reader got"] = await asyncio.wait_for(reader, 5)
        out["then"] = [inbox.get_nowait() for _ in range(inbox.qsize())]
        out["calls"] = calls

        def broken(items: list[int]) -> int:
            raise RuntimeError("the ordinary way meets this")

        inbox.direct = broken
        reader = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put_all([7, 8])
        out["after an error"] = [await asyncio.wait_for(reader, 5), inbox.get_nowait()]
        out["cleared"] = inbox.direct is None
        return out

    out = asyncio.run(main())
    assert out["no reader"] == []
    assert out["calls"] == [[1, 2, 100, 3]]
    assert out["reader got"] == 100 and out["then"] == [3]  # 1 and 2 taken; 100 and what follows it queued, in order
    assert out["after an error"] == [7, 8] and out["cleared"]


def test_the_relay_hands_each_queue_its_part_of_a_burst_in_one_call():
    from millm.services.engine_client import Inbox

    async def main() -> tuple[list[list[tuple[str, int]]], list[list[int]]]:
        relay = _Relay(asyncio.get_running_loop())
        inboxes = [Inbox(), Inbox()]
        calls: list[list[tuple[str, int]]] = []
        for inbox in inboxes:
            inbox.direct = lambda items: calls.append(list(items)) or len(items)  # type: ignore[func-returns-value]
        readers = [asyncio.ensure_future(inbox.get()) for inbox in inboxes]
        await asyncio.sleep(0)
        plain: asyncio.Queue[int] = asyncio.Queue()

        def step() -> None:  # a step of three rows of one run (n=3), one of another, and a plain queue
            for tok in range(2):
                for row in range(3):
                    relay.put(inboxes[0], ("a", tok * 3 + row))
                relay.put(inboxes[1], ("b", tok))
                relay.put(plain, tok)

        t = threading.Thread(target=step)
        t.start()
        t.join()
        await asyncio.sleep(0.01)
        for r in readers:
            r.cancel()
        return calls, [[plain.get_nowait() for _ in range(plain.qsize())]]

    calls, plain = asyncio.run(main())
    assert calls == [[("a", i) for i in range(6)], [("b", 0), ("b", 1)]]
    assert plain == [[0, 1]]


def test_a_whole_response_wakes_the_loop_for_its_first_token_and_each_choice_s_last_only():
    from millm.engine.types import GenerationEvent, PromptInfo, SamplingParams
    from millm.errors import InternalError
    from millm.services.engine_client import EngineClient

    class Worker:
        queue_depth = 0

        def __init__(self) -> None:
            self.sinks: list = []

        def defer(self, fn):  # noqa: ANN001, ANN201  # (no decode step emitting: sinks write at once)
            return False

        def submit(self, request, sink):  # noqa: ANN001, ANN201
            self.sinks.append(sink)
            return Handle()

    class LM:
        model_id = "m"

    class Handle:
        def cancel(self) -> None:
            pass

    async def emit(sink, events) -> None:  # noqa: ANN001 - the worker thread's sends, then the loop's turn
        t = threading.Thread(target=lambda: [sink(e) for e in events])
        t.start()
        t.join()
        await asyncio.sleep(0.01)

    async def main(stream: bool) -> tuple[list[int], list[str], str]:
        loop = asyncio.get_running_loop()
        wakes = _count_wake_ups(loop)
        worker = Worker()
        client = EngineClient(worker=worker, metrics=_NoMetrics())  # type: ignore[arg-type]
        run = client.submit(LM(), [[1, 2], [3]], n=2, params=SamplingParams(max_tokens=4), steering=None,  # type: ignore[arg-type]
                            prompt_logprobs=False, prefix="cmpl-x", stream=stream)
        seen = []
        a, b = worker.sinks
        await emit(a, [PromptInfo(prompt_tokens=2), GenerationEvent.token(0, "a", 5), GenerationEvent.token(1, "b", 6)])
        seen.append(wakes[0])
        await emit(b, [PromptInfo(prompt_tokens=1), GenerationEvent.token(0, "c", 7)])
        seen.append(wakes[0])
        await asyncio.wait_for(client.await_prefill(run, 2), 5)
        for _ in range(3):  # tokens in between
            await emit(a, [GenerationEvent.token(0, "d", 8), GenerationEvent.token(1, "e", 9)])
            await emit(b, [GenerationEvent.token(0, "f", 10)])
        seen.append(wakes[0])
        await emit(a, [GenerationEvent(choice=0, text="!", token_ids=(1,), finish_reason="length")])
        seen.append(wakes[0])
        await emit(a, [GenerationEvent(choice=1, text="?", token_ids=(1,), finish_reason="stop")])
        await emit(b, [GenerationEvent(choice=1, text="x", token_ids=(2,))])
        seen.append(wakes[0])
        await emit(b, [InternalError("the row failed")])
        texts: list[str] = []
        error = ""
        try:
            async for c, ev in client.events(run, 2):
                texts.append(f"{c}{ev.text}")
        except InternalError as e:
            error = str(e)
        return seen, texts, error

    quiet, texts, error = asyncio.run(main(stream=False))
    loud, loud_texts, loud_error = asyncio.run(main(stream=True))
    # each prompt's first token wakes; the nine tokens between do not; each last event does, and so does a failure
    assert quiet == [1, 2, 2, 3, 4]
    assert loud[2] >= 5  # a stream: (about) a wake-up per emit
    # nothing lost or reordered: each choice's events in order (the global choice is prompt * n + choice)
    assert texts == loud_texts and error == loud_error == "the row failed"
    for c, expected in (("0", "addd!"), ("1", "beee?"), ("2", "cfff"), ("3", "x")):
        assert "".join(t[1:] for t in texts if t[0] == c) == expected
