"""All long-lived services, wired together from Settings; HTTP-agnostic.

`Runtime.start()` starts the worker and, in the background, loads the configured model (or
the bundled demo model with its SAE and profiles), then restores the active profile. Until
that finishes `status` is "loading" and /health answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from millm import demo
from millm.config import Settings, data_dir_origin
from millm.engine.worker import Worker
from millm.errors import MillmError, NotFound, Unavailable
from millm.hub.jobs import JobManager
from millm.services.batches import BatchService
from millm.services.compare import CompareService
from millm.services.embeddings import EmbeddingService
from millm.services.generation import GenerationService
from millm.services.metrics import Metrics
from millm.services.models import ModelService
from millm.services.monitoring import MonitorService
from millm.services.profiles import ProfileService
from millm.services.saes import SaeService
from millm.services.steering import NamedSteering, SteeringService
from millm.services.system import SystemMonitor
from millm.engine.types import FeatureStrength
from millm.services.local_paths import LocalRoots, looks_like_path
from millm.store.db import Database, open_database

log = logging.getLogger(__name__)


def named_steering(profile: Any) -> NamedSteering:
    return NamedSteering(
        name=profile.name, model=profile.model, sae_id=profile.sae.id, d_sae=profile.sae.d_sae, mode=profile.mode,
        normalize=profile.normalize,
        features=tuple(FeatureStrength(f.index, f.strength) for f in profile.features),
        labels=tuple(f.label for f in profile.features),
        scale=profile.scale, scale_min=profile.scale_min, scale_max=profile.scale_max,
    )


def allowed_roots(settings: Settings) -> LocalRoots:
    """The local folders clients may load models and SAEs from (see millm.services.local_paths)."""
    from huggingface_hub import constants

    own = [settings.model, settings.sae.partition(":")[0] if settings.sae else None]
    return LocalRoots.of(settings.cache_dir or constants.HF_HUB_CACHE, settings.data_dir, demo.assets_dir(),
                         *[o for o in own if o and looks_like_path(o) or o and Path(o).expanduser().exists()],
                         *settings.allowed_paths)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        log.info("data folder: %s (%s)", settings.data_dir.expanduser().resolve(), data_dir_origin(settings),
                 extra={"data_dir": str(settings.data_dir.expanduser().resolve())})
        self.metrics = Metrics(jobs=lambda: self.jobs.list())
        self.worker = Worker(queue_size=settings.queue_size, max_batch_size=settings.max_batch_size,
                             cuda_graphs=settings.cuda_graphs)
        self.db: Database = open_database(url=settings.database_url, data_dir=settings.data_dir)
        self.profiles = ProfileService(self.db.session_factory)
        self.monitor = MonitorService(apply_config=lambda cfg: self.saes.apply_monitor_config(cfg))
        self.jobs = JobManager(data_dir=settings.data_dir, cache_dir=settings.cache_dir)
        self.roots = allowed_roots(settings)
        self.saes = SaeService(worker=self.worker, monitor=self.monitor, cache_dir=settings.cache_dir,
                               index=self.jobs.index, roots=self.roots, sessions=self.db.session_factory)
        self.models = ModelService(
            worker=self.worker, saes=self.saes, served_model_name=settings.served_model_name,
            index=self.jobs.index, force_load=settings.force_load, on_demo_loaded=self.import_demo_profiles,
            roots=self.roots,
            defaults={"device": settings.device, "dtype": settings.dtype, "quantization": settings.quantization,
                      "trust_remote_code": settings.trust_remote_code, "cache_dir": settings.cache_dir,
                      "max_context": settings.max_context},
        )
        self.steering = SteeringService(sae_info=self.saes.info, lookup=self.lookup_profile,
                                        model_names=self.model_names, max_scale=settings.steering_max_scale,
                                        labels=lambda: self.monitor.labels,
                                        evidence_default=settings.steering_evidence)
        self.generation = GenerationService(
            worker=self.worker, steering=self.steering, metrics=self.metrics,
            served_name=self.models.served_name, on_receipt=self.monitor.record_receipt,
        )
        self.embeddings = EmbeddingService(generation=self.generation)
        self.batches = BatchService(data_dir=settings.data_dir, generation=self.generation, embeddings=self.embeddings,
                                    worker=self.worker, registry=self.metrics.registry,
                                    rows=max(1, settings.max_batch_size - 1),  # one row kept for live requests
                                    wait_ready=self.wait_ready)
        self.compare = CompareService(generation=self.generation)
        self.system = SystemMonitor()
        self.worker.set_monitor(self.monitor.config, sink=self.monitor.publish)
        self.boot_error: str | None = None
        self._boot_task: asyncio.Task | None = None
        self.draining = False  # set on SIGTERM: new requests get a 503 (api/lifecycle.py)
        self.inflight = 0  # requests that generate or change state, being answered now

    # ------------------------------------------------------------------ profiles glue

    def lookup_profile(self, name: str) -> NamedSteering:
        return named_steering(self.profiles.get(name))

    def model_names(self) -> tuple[str, ...]:
        """The ids a profile may name the loaded model by: its served name and its loaded id."""
        lm = self.worker.loaded
        if lm is None:
            return ()
        return tuple(dict.fromkeys(n for n in (self.models.served_name(), lm.model_id) if n))

    def profile_names_for_model(self) -> list[str]:
        """Profiles that fit the loaded model and attached SAE (offered as `<model>+<profile>`)."""
        names, info = self.model_names(), self.saes.info()
        if info is None:
            return []
        return [p.name for p in self.profiles.list().data
                if p.model in names and p.sae.id == info.sae_id and p.sae.d_sae == info.d_sae]

    # ------------------------------------------------------------------ lifecycle

    @property
    def status(self) -> str:
        if self.models.loading is not None or (self._boot_task is not None and not self._boot_task.done()):
            return "loading"
        return "ok" if self.worker.loaded is not None else "no_model"

    async def start(self) -> None:
        self.monitor.bind_loop(asyncio.get_running_loop())
        self.worker.start()
        await asyncio.to_thread(self.jobs.start)
        self._boot_task = asyncio.create_task(self._boot())
        await self.batches.start()

    async def wait_ready(self) -> None:
        if self._boot_task is not None:
            await self._boot_task

    async def stop(self) -> None:
        if self._boot_task is not None and not self._boot_task.done():
            self._boot_task.cancel()
        await self.batches.stop()
        await asyncio.to_thread(self.jobs.shutdown)
        await asyncio.to_thread(self.worker.stop)
        self.db.close()

    async def drain(self, timeout: float) -> None:
        """Stop admitting requests, wait up to `timeout` seconds for those in flight, then end the rest (streams
        with an error event, others with a 503 `shutting_down`) and wait a little for them to be answered."""
        self.draining = True
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.inflight and loop.time() < end:
            await asyncio.sleep(0.05)
        if self.inflight:
            log.warning("shutdown: ending %d request(s) still running after %.0f s", self.inflight, timeout)
            self.worker.abort_all(Unavailable("the server is shutting down: this request was ended before it "
                                              "finished", code="shutting_down"))
            end = loop.time() + 5
            while self.inflight and loop.time() < end:
                await asyncio.sleep(0.05)
        log.info("drained: %d request(s) left", self.inflight)

    async def _boot(self) -> None:
        s = self.settings
        try:
            if s.model and s.model != demo.DEMO_MODEL_ID:
                await self.models.load(s.model, revision=s.model_revision, trusted=True)
                if s.sae:
                    await self.saes.attach(s.sae, layer=s.sae_layer, trusted=True)
            else:
                await self.load_demo()
            if s.restore_state:
                await asyncio.to_thread(self.restore_active_profile)
        except MillmError as e:
            self.boot_error = e.message
            log.error("start-up load failed: %s", e.message)
        except Exception as e:  # noqa: BLE001 - keep serving the API so the user can load another model
            self.boot_error = str(e)
            log.exception("start-up load failed")
        if self.boot_error is not None and self.worker.loaded is None:
            self.generation.boot_error = self.boot_error

    async def load_demo(self) -> None:
        assets = demo.assets_dir()
        if not (assets / "model").is_dir():
            raise NotFound("the bundled demo model is missing from this installation; set MILLM_MODEL")
        # attaches the demo SAE and imports its profiles
        await self.models.load(demo.DEMO_MODEL_ID, revision=None, trusted=True)

    async def import_demo_profiles(self) -> None:
        """Add the demo profiles that are missing from the store (deleted ones come back)."""
        bundle = demo.assets_dir() / "profiles.json"
        if bundle.is_file():
            existing = {p.name for p in self.profiles.list().data}
            import json

            data = json.loads(bundle.read_text())
            missing = [p for p in data.get("profiles", []) if p["name"] not in existing]
            if missing:
                await asyncio.to_thread(self.profiles.import_document, {**data, "profiles": missing})

    def restore_active_profile(self) -> None:
        active = self.profiles.get_active()
        if active is None:
            return
        try:
            self.steering.activate(named_steering(active))
            log.info("restored active profile %s", active.name)
        except MillmError as e:
            log.warning("active profile %s was not restored: %s", active.name, e.message)

    def memory(self) -> dict[str, Any]:
        m = self.worker.memory()
        return {"device": m.device, "used_bytes": m.used_bytes, "total_bytes": m.total_bytes}

