"""Running the app under uvicorn, with a graceful drain on SIGTERM / SIGINT.

On the first signal `DrainingServer` does not stop at once (uvicorn would cut every stream): it asks the
Runtime to drain (new requests get a 503 `shutting_down`, /health says "draining"; running requests finish,
up to `shutdown_timeout` seconds; any left then end with an error event or error response), and only then
lets uvicorn shut down. A second signal exits at once.

Start-up: `millm serve` calls `pause_gc()` before it imports the app. Importing torch and transformers and loading
a model make millions of long-lived objects, and the cyclic garbage collector would walk them all several times
(a quarter of the start-up time); the objects are frozen into the permanent generation instead once the start-up
model is loaded (or after `GC_PAUSE_MAX_S`), so later collections skip them too. The few MB of cyclic garbage made
meanwhile are kept. Dropping a model calls `gc.unfreeze()` before it collects (`Worker.swap_model` in engine/worker.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

GC_PAUSE_MAX_S = 120.0  # a start-up load that takes longer (a download) gets its collector back after this
_gc_paused = False


def pause_gc() -> None:
    """Turn the cyclic garbage collector off until the server is ready (see the module's docstring)."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> None:
    """Freeze what start-up made (collections skip it from now on) and turn the collector back on."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()
        log.debug("start-up done: %d objects frozen, garbage collection on", gc.get_freeze_count())


async def resume_gc_when_ready(runtime: Any, max_wait: float = GC_PAUSE_MAX_S) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(runtime.wait_ready()), max_wait)
    except Exception:  # noqa: BLE001 - slow or failed: the collector comes back all the same
        pass
    finally:
        resume_gc()


class DrainingServer(uvicorn.Server):
    # uvicorn's main loop wakes the event loop every 0.1 s to see whether it should exit, and updates the Date header
    # on every tenth tick: ten wake-ups a second, about 1.7 ms of the loop's CPU a second on an idle 2-core machine,
    # which a stream pays per token in proportion to its duration. Here it ticks once a second (the Date header), and
    # setting `should_exit` (from any thread: a signal, the drain, a test) wakes it at once.
    tick_s = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._exit_wake: asyncio.Event | None = None
        super().__init__(config)
        self._drain_task: asyncio.Task | None = None
        self._gc_task: asyncio.Future[None] | None = None

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        wake, loop = self._exit_wake, self.loop
        if value and wake is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closed: nothing waits
                pass

    async def main_loop(self) -> None:
        """uvicorn's `main_loop`, ticking every `tick_s` seconds or as soon as `should_exit` is set."""
        self._exit_wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + round(10 * self.tick_s)) % 864000  # (in uvicorn's tenths of a second)
            try:
                async with asyncio.timeout(self.tick_s):
                    await self._exit_wake.wait()
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    async def startup(self, sockets: Any = None) -> None:
        from millm.api.sse import RawSend

        self.loop = asyncio.get_running_loop()
        if self.config.loaded and not isinstance(self.config.loaded_app, RawSend):
            # outermost, so that a stream's response can find the connection beneath it (api.sse.Connection)
            self.config.loaded_app = RawSend(self.config.loaded_app)
        await super().startup(sockets)
        runtime = self._runtime()
        if _gc_paused and runtime is not None:
            self._gc_task = asyncio.ensure_future(resume_gc_when_ready(runtime))
        else:
            resume_gc()

    def _runtime(self) -> Any:
        app = self.config.loaded_app if self.config.loaded else None
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)  # (uvicorn wraps the app in its own middleware)
        return getattr(getattr(app, "state", None), "runtime", None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The signal handler (also callable from another thread, as tests do)."""
        runtime = self._runtime()
        if self._drain_task is not None or runtime is None or self.loop is None or self.should_exit:
            # second signal, or nothing to drain: uvicorn's own handling
            self._captured_signals.append(sig)
            if self._drain_task is not None:
                self.force_exit = True
            self.should_exit = True
            return
        log.info("%s: draining (up to %.0f s), then exiting", signal.Signals(sig).name,
                 runtime.settings.shutdown_timeout)

        def start() -> None:
            self._drain_task = asyncio.ensure_future(self._drain(runtime))

        self._drain_task = True  # type: ignore[assignment]  # (a placeholder until the loop runs start())
        self.loop.call_soon_threadsafe(start)

    async def _drain(self, runtime: Any) -> None:
        try:
            await runtime.drain(runtime.settings.shutdown_timeout)
        except Exception:  # noqa: BLE001 - exit anyway
            log.exception("drain failed")
        # (uvicorn's should_exit directly: sse-starlette's patched handle_exit would also stop every SSE stream of
        # every later server in this process)
        self.should_exit = True


def serve(app: Any, settings: Any, **kwargs: Any) -> None:
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            log_level=settings.log_level, timeout_graceful_shutdown=5, access_log=False, **kwargs)
    server = DrainingServer(config)
    # POST /api/shutdown (`millm stop`) drains like SIGTERM
    app.state.request_shutdown = lambda: server.handle_exit(signal.SIGTERM, None)
    server.run()
    if server.started:
        # Everything is closed (the lifespan stopped the worker and the database). Skip the interpreter's final
        # garbage collection over the model's and tokenizer's objects, which takes seconds, so a drained server
        # exits as soon as it is done.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if server.config.loaded:  # it was started and failed to (e.g. exit_on_load_failure)
        sys.exit(3)
