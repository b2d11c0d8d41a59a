"""What the server reports about itself: the loaded model, the attached SAE, the steering and `/api/status`.

Read-only views, shaped as the protocol's models so that the routes and the in-server MCP backend
return the same thing. Nothing here changes state (that is `millm.services.control`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from millm import __version__
from millm.engine.worker import Worker
from millm.errors import ModelNotFound
from millm.hub.local_paths import looks_like_path
from millm.protocol import admin as a
from millm.protocol.openai import ModelCard, ModelList
from millm.services.hub import HubService
from millm.services.models import ModelService
from millm.services.monitoring import MonitorService
from millm.services.saes import AttachedSae, SaeService
from millm.services.steering import SteeringService
from millm.services.system import SystemMonitor


def looks_local(source: str) -> bool:
    try:
        return looks_like_path(source) or Path(source).expanduser().is_dir()
    except (OSError, RuntimeError, ValueError):
        return False


def sae_out(att: AttachedSae | None) -> a.SaeOut | None:
    if att is None:
        return None
    cfg = att.sae.cfg
    return a.SaeOut(
        id=att.sae_id, hook_name=att.hook_name, module=att.hookpoint.module_path, layer=att.hookpoint.layer,
        d_in=cfg.d_in, d_sae=cfg.d_sae, architecture=cfg.architecture, dtype=str(att.sae.dtype).removeprefix("torch."),
        source_format=cfg.source_format, repo_id=att.source.repo_id, path=att.source.path,
        revision=att.source.revision, model_name=cfg.model_name, labelled_features=len(att.labels),
        imported_labels=len(att.imported_labels), neuronpedia_id=cfg.neuronpedia_id or None,
    )


class StatusService:
    def __init__(self, *, worker: Worker, models: ModelService, saes: SaeService, steering: SteeringService,
                 monitor: MonitorService, system: SystemMonitor, hub: HubService, started_at: float,
                 status: Callable[[], str], profile_names: Callable[[], list[str]]) -> None:
        self.worker = worker
        self.models = models
        self.saes = saes
        self.steering = steering
        self.monitor = monitor
        self.system = system
        self.hub = hub
        self.started_at = started_at
        self._status = status
        self._profile_names = profile_names  # profiles that fit the loaded model and SAE

    def model_list(self) -> ModelList:
        """GET /v1/models: the loaded model, then one virtual id `<model>+<profile>` per profile that fits."""
        name = self.models.served_name()
        if name is None:
            return ModelList(data=[])
        created = int(self.started_at)
        cards = [ModelCard(id=name, created=created)]
        cards += [ModelCard(id=f"{name}+{prof}", created=created, root=name, profile=prof)
                  for prof in self._profile_names()]
        return ModelList(data=cards)

    def model_card(self, model_id: str) -> ModelCard:
        """One entry of `model_list()`; a 404 for an unknown id."""
        for card in self.model_list().data:
            if card.id == model_id:
                return card
        raise ModelNotFound(f"the model {model_id!r} does not exist", param="model")

    def model(self) -> a.LoadedModelOut | None:
        lm = self.worker.loaded
        if lm is None:
            return None
        return a.LoadedModelOut(
            id=self.models.served_name() or lm.model_id, source="local" if looks_local(lm.source) else lm.source,
            revision=lm.revision, device=str(lm.device), dtype=str(lm.dtype).removeprefix("torch."),
            quantization=lm.quantization, parameters=lm.num_parameters, context_length=lm.context_length,
            d_model=lm.d_model, num_layers=lm.num_layers,
        )

    def sae(self) -> a.SaeOut | None:
        return sae_out(self.saes.attached)

    def steering_state(self) -> a.SteeringStateOut:
        s = self.steering.state
        labels = self.monitor.labels
        return a.SteeringStateOut(
            enabled=s.enabled, mode=s.mode, normalize=s.normalize, steer_special_tokens=s.steer_special_tokens,
            features=[a.SteeringFeatureOut(index=i, strength=v, label=s.labels.get(i) or labels.get(i))
                      for i, v in sorted(s.features.items())],
            profile=s.profile, scale=s.scale,
        )

    def memory(self) -> a.MemoryOut:
        m = self.worker.memory()
        return a.MemoryOut(device=m.device, used_bytes=m.used_bytes, total_bytes=m.total_bytes)

    def status(self) -> a.StatusOut:
        lm = self.worker.loaded
        active, done, total, speed = self.hub.downloads_summary()
        return a.StatusOut(
            version=__version__, uptime_s=round(time.time() - self.started_at, 3),
            status=self._status(),  # type: ignore[arg-type]
            loading=self.models.loading, device=str(lm.device) if lm else None, memory=self.memory(),
            host=a.HostOut(**asdict(self.system.host())), gpus=[a.GpuOut(**asdict(g)) for g in self.system.gpus()],
            model=self.model(), sae=self.sae(), steering=self.steering_state(),
            active_profile=self.steering.state.profile, queue_depth=self.worker.queue_depth,
            active_sequences=self.worker.active_sequences, max_batch_size=self.worker.max_batch_size,
            downloads=a.DownloadsSummaryOut(active=active, bytes_done=done, bytes_total=total, speed_bps=speed),
        )
