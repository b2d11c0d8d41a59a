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

from millm import demo
from millm.config import Settings, data_dir_origin
from millm.engine.worker import Worker
from millm.errors import MillmError, NotFound, Unavailable
from millm.hub.jobs import JobManager
from millm.hub.local_paths import LocalRoots, looks_like_path
from millm.services.batches import BatchService
from millm.services.compare import CompareService
from millm.services.control import ControlService
from millm.services.embeddings import EmbeddingService
from millm.services.generation import GenerationService
from millm.services.hub import HubService
from millm.services.load_options import LoadDefaults, LoadOptions
from millm.services.metrics import Metrics
from millm.services.models import ModelService
from millm.services.monitoring import MonitorService
from millm.services.profiles import ProfileService
from millm.services.saes import SaeService
from millm.services.status import StatusService
from millm.services.steering import NamedSteering, SteeringService
from millm.services.system import SystemMonitor
from millm.store.db import Database, open_database

log = logging.getLogger(__name__)


def allowed_roots(settings: Settings) -> LocalRoots:
    """The local folders clients may load models and SAEs from (see millm.hub.local_paths)."""
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
                             cuda_graphs=settings.cuda_graphs, stream_hold=settings.stream_hold_ms / 1e3)
        self.metrics.watch_worker(queue_depth=lambda: self.worker.queue_depth,
                                  active_sequences=lambda: self.worker.active_sequences)
        self.db: Database = open_database(url=settings.database_url, data_dir=settings.data_dir)
        self.profiles = ProfileService(self.db.session_factory)
        self.monitor = MonitorService(apply_config=lambda cfg: self.saes.apply_monitor_config(cfg))
        self.jobs = JobManager(data_dir=settings.data_dir, cache_dir=settings.cache_dir)
        self.roots = allowed_roots(settings)
        self.saes = SaeService(worker=self.worker, monitor=self.monitor, cache_dir=settings.cache_dir,
                               index=self.jobs.index, roots=self.roots, sessions=self.db.session_factory)
        self.load_defaults = LoadDefaults.from_settings(settings)
        self.models = ModelService(
            worker=self.worker, saes=self.saes, served_model_name=settings.served_model_name,
            index=self.jobs.index, force_load=settings.force_load, on_demo_loaded=self.import_demo_profiles,
            roots=self.roots, defaults=self.load_defaults,
        )
        self.hub = HubService(jobs=self.jobs, defaults=self.load_defaults, in_use=self.repos_in_use,
                              sae_numel=lambda: self.saes.attached.numel if self.saes.attached else 0,
                              roots=self.roots)
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
        self.control = ControlService(models=self.models, saes=self.saes, steering=self.steering,
                                      profiles=self.profiles, model_names=self.model_names,
                                      labels=lambda: self.monitor.labels)
        self.views = StatusService(worker=self.worker, models=self.models, saes=self.saes, steering=self.steering,
                                   monitor=self.monitor, system=self.system, hub=self.hub,
                                   started_at=self.started_at, status=lambda: self.status,
                                   profile_names=self.profile_names_for_model)
        self.worker.set_monitor(self.monitor.config, sink=self.monitor.publish)
        self.boot_error: str | None = None
        self._boot_task: asyncio.Task | None = None
        self.draining = False  # set on SIGTERM: new requests get a 503 (api/lifecycle.py)
        self.inflight = 0  # requests that generate or change state, being answered now

    # ------------------------------------------------------------------ profiles glue

    def lookup_profile(self, name: str) -> NamedSteering:
        return NamedSteering.of(self.profiles.get(name))

    def repos_in_use(self) -> frozenset[str]:
        """Hub repos the server holds: the loaded model's and the attached SAE's (not deletable from the cache)."""
        lm, att = self.worker.loaded, self.saes.attached
        return frozenset(r for r in (lm.source if lm else None, att.source.repo_id if att else None) if r)

    def model_names(self) -> tuple[str, ...]:
        """The ids a profile may name the loaded model by: its served name and its loaded id."""
        lm = self.worker.loaded
        if lm is None:
            return ()
        return tuple(dict.fromkeys(n for n in (self.models.served_name(), lm.model_id) if n))

    def profile_names_for_model(self) -> list[str]:
        """Profiles that fit the loaded model and attached SAE (offered as `<model>+<profile>`)."""
        if self.saes.info() is None:
            return []
        return [p.name for p in self.profiles.list().data if self.steering.fits_profile(NamedSteering.of(p))]

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
                await self.models.load(s.model, options=LoadOptions(revision=s.model_revision), trusted=True)
                if s.sae:
                    await self.saes.attach(s.sae, layer=s.sae_layer, trusted=True)
            else:
                await self.load_demo()
            if s.restore_state:
                await asyncio.to_thread(self.control.restore_active_profile)
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
        await self.models.load(demo.DEMO_MODEL_ID, trusted=True)

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
