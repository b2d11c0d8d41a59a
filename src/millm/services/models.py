"""Loading, switching and unloading the served model while the server runs.

A new model is loaded on a separate thread while the old one keeps serving; the swap is an
exclusive worker call, so sequences in flight finish on the model they started with and
queued requests for the old model id get a clear 503 afterwards. A failed load (missing or
corrupt files, not enough memory) leaves the previous model in place.

Before loading, the source is resolved to a folder (a local folder, the cached snapshot of a
Hub repo, else a pull into the cache) and the memory it needs (weights at the chosen precision,
KV cache for one sequence at the configured context, the attached SAE, overhead) is compared
with free memory; a load that would not fit is refused with `InsufficientMemory` unless forced
(per request, or `force_load` for every load). Loading a cached repo marks it used in the cache
index.

The bundled demo model, loaded by its name `millm-demo`, brings its SAE (`millm-demo-sae`) back
too when no SAE is attached after the swap, and `on_demo_loaded` restores its profiles, so they work again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from millm import demo
from millm.engine.model_loading import LoadedModel, load_model
from millm.engine.worker import Worker
from millm.errors import InsufficientMemory, MillmError, ModelLoadError
from millm.hub.cache import CacheIndex
from millm.hub.memory import MemoryEstimate, check_fits
from millm.services.local_paths import LocalRoots
from millm.services.hub import estimate_for, free_memory, resolve_model_source
from millm.services.saes import SaeService

log = logging.getLogger(__name__)


@dataclass
class SwapResult:
    model: LoadedModel | None
    sae_message: str | None = None  # the SAE had to be detached (it does not fit the new model)
    estimate: MemoryEstimate | None = None
    available_bytes: int | None = None
    sae_attached: str | None = None  # the demo SAE, attached with the demo model


class ModelService:
    def __init__(self, *, worker: Worker, saes: SaeService, defaults: dict[str, Any],
                 served_model_name: str | None = None, index: CacheIndex | None = None,
                 force_load: bool = False, on_demo_loaded: Callable[[], Awaitable[None]] | None = None,
                 roots: LocalRoots | None = None) -> None:
        self.worker = worker
        self.on_demo_loaded = on_demo_loaded  # e.g. import the demo profiles
        self.roots = roots
        self.saes = saes
        self.defaults = defaults
        self.served_model_name = served_model_name
        self.index = index
        self.force_load = force_load
        self.loading: str | None = None
        self._lock = asyncio.Lock()

    def served_name(self) -> str | None:
        lm = self.worker.loaded
        if lm is None:
            return None
        return self.served_model_name or lm.model_id

    def _sae_numel(self) -> int:
        att = self.saes.attached
        if att is None:
            return 0
        return sum(t.numel() for t in (*att.sae.parameters(), *att.sae.buffers()))

    def _check_memory(self, folder: Any, kwargs: dict[str, Any], force: bool) -> tuple[MemoryEstimate | None, int | None]:
        """Blocking. Raises InsufficientMemory unless forced; an estimate that cannot be made is skipped."""
        try:
            est = estimate_for(folder, dtype=kwargs.get("dtype") or "auto",
                               quantization=kwargs.get("quantization") or "none",
                               device=kwargs.get("device") or "auto",
                               max_context_cap=kwargs.get("max_context"), sae_numel=self._sae_numel())
        except ModelLoadError:  # a config.json or weights header that cannot be read: loading would fail too
            raise
        except MillmError as e:  # e.g. only .bin weights: no headers to count; loading will tell
            log.warning("no memory estimate before loading: %s", e.message)
            return None, None
        try:
            free = check_fits(est, force=force, available=free_memory(est.device))
        except InsufficientMemory as e:
            hint = (" The current model stays loaded until the new one is ready; unload it first to free its "
                    "memory." if self.worker.loaded is not None else "")
            raise InsufficientMemory(e.message + hint, param="model", estimate=e.estimate,
                                     available=e.available) from None
        if est.total_bytes > free:
            log.warning("forced load: needs %s, %d bytes free", est.describe(), free)
        return est, free

    async def load(self, source: str, *, force: bool = False, trusted: bool = False, **options: Any) -> SwapResult:
        """Load `source` in place of the current model. A local path must lie in `roots` unless `trusted` (the
        server's own settings)."""
        async with self._lock:
            self.loading = source
            try:
                kwargs = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
                src = await asyncio.to_thread(resolve_model_source, source, revision=kwargs.get("revision"),
                                              cache_dir=kwargs.get("cache_dir"), index=self.index,
                                              roots=None if trusted else self.roots)
                est, free = await asyncio.to_thread(self._check_memory, src.folder, kwargs, force or self.force_load)
                new = await asyncio.to_thread(load_model, source, local_dir=src.folder, **kwargs)

                outcome = await asyncio.wrap_future(self.worker.swap_model(new))
                result = SwapResult(new, self.saes.after_model_swap(outcome), est, free)
                if source == demo.DEMO_MODEL_ID and self.saes.attached is None:
                    await self.saes.attach(str(demo.assets_dir() / "sae"), sae_id=demo.DEMO_SAE_ID, trusted=True)
                    result.sae_attached = demo.DEMO_SAE_ID
                if source == demo.DEMO_MODEL_ID and self.on_demo_loaded is not None:
                    await self.on_demo_loaded()
                if src.repo_id is not None and self.index is not None:
                    self.index.mark_used(src.repo_id)
                log.info("model %s loaded (%s, %s, %s)", new.model_id, new.device, new.dtype, new.quantization)
                return result
            finally:
                self.loading = None

    async def unload(self) -> None:
        async with self._lock:
            await self.saes.detach()

            await asyncio.wrap_future(self.worker.swap_model(None))
