"""Loading, switching and unloading the served model while the server runs.

A new model is loaded on a separate thread while the old one keeps serving; the swap is an
exclusive worker call, so sequences in flight finish on the model they started with and
queued requests for the old model id get a clear 503 afterwards. A failed load (missing or
corrupt files, not enough memory) leaves the previous model in place.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from typing import Any

import torch

from millm.engine.model_loading import LoadedModel, load_model
from millm.engine.worker import Worker
from millm.services.saes import SaeService

log = logging.getLogger(__name__)


@dataclass
class SwapResult:
    model: LoadedModel | None
    sae_message: str | None = None


class ModelService:
    def __init__(self, *, worker: Worker, saes: SaeService, defaults: dict[str, Any],
                 served_model_name: str | None = None) -> None:
        self.worker = worker
        self.saes = saes
        self.defaults = defaults
        self.served_model_name = served_model_name
        self.loading: str | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> LoadedModel | None:
        return self.worker.loaded

    def served_name(self) -> str | None:
        lm = self.worker.loaded
        if lm is None:
            return None
        return self.served_model_name or lm.model_id

    async def load(self, source: str, **options: Any) -> SwapResult:
        async with self._lock:
            self.loading = source
            try:
                options.pop("force", None)
                kwargs = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
                new = await asyncio.to_thread(load_model, source, **kwargs)

                def swap(w: Worker) -> SwapResult:
                    old = w.loaded
                    w.loaded = new
                    message = self.saes.reattach_after_model_change(w)
                    del old
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    return SwapResult(new, message)

                result = await asyncio.wrap_future(self.worker.call(swap))
                log.info("model %s loaded (%s, %s)", new.model_id, new.device, new.dtype)
                return result
            finally:
                self.loading = None

    async def unload(self) -> None:
        async with self._lock:
            await self.saes.detach()

            def drop(w: Worker) -> None:
                w.loaded = None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

            await asyncio.wrap_future(self.worker.call(drop))
