"""The one memory estimator behind a load's check, `GET /api/models/estimate` and `millm estimate`.

`estimate_model` resolves the model argument as a load does (`millm.hub.sources.find_model`: a
folder, `millm-demo`, a complete cached snapshot), else reads a Hub repo's safetensors headers
(nothing downloaded), and compares with free memory when the device is on this machine
(estimating for a GPU you do not have yet is the point). Every estimate is made for a
`millm.placement.Placement`: "auto" device and dtype are resolved once, by the same rules the
loader uses. The context is capped like the loader caps it (`max_context_cap`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from millm.hub.local_paths import LocalRoots
from millm.hub.memory import MemoryEstimate, estimate_local, estimate_remote, max_context, read_config
from millm.hub.sources import Origin, find_model
from millm.placement import Placement, device_present, free_bytes


def _cap_context(est: MemoryEstimate, cap: int | None) -> MemoryEstimate:
    """The estimate at min(model context, cap): the KV cache is linear in the context."""
    if cap is None or cap >= est.context:
        return est
    return replace(est, context=cap, kv_cache_bytes=est.kv_cache_bytes // est.context * cap)


def estimate_for(
    folder: Path | None,
    *,
    placement: Placement,
    repo_id: str | None = None,
    revision: str | None = None,
    context: int | None = None,
    max_context_cap: int | None = None,
    sae_numel: int = 0,
    batch: int = 1,
) -> MemoryEstimate:
    """Estimate a local folder, or (folder None) a Hub repo from its safetensors headers. The SAE's `sae_numel`
    values are counted at the residual stream's precision."""
    sae_bytes = int(sae_numel * placement.bytes_per_value)
    if folder is not None:
        if context is None and max_context_cap is not None:
            model_max = max_context(read_config(folder))
            context = min(model_max, max_context_cap) if model_max else max_context_cap
        return estimate_local(folder, placement=placement, context=context, batch=batch, sae_bytes=sae_bytes)
    assert repo_id is not None
    # estimate_remote fetches config.json; a scratch cache keeps that stub out of the real one.
    with tempfile.TemporaryDirectory(prefix="millm-estimate-") as scratch:
        est = estimate_remote(repo_id, revision, cache_dir=scratch, placement=placement, context=context,
                              batch=batch, sae_bytes=sae_bytes)
    return est if context is not None else _cap_context(est, max_context_cap)


@dataclass(frozen=True)
class ModelEstimate:
    origin: Origin
    estimate: MemoryEstimate
    available_bytes: int | None  # None: the device is not on this machine

    @property
    def device_present(self) -> bool:
        return self.available_bytes is not None

    @property
    def fits(self) -> bool | None:
        return None if self.available_bytes is None else self.estimate.total_bytes <= self.available_bytes


def estimate_model(
    model: str,
    *,
    placement: Placement,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    context: int | None = None,
    batch: int = 1,
    max_context_cap: int | None = None,
    sae_numel: int = 0,
    roots: LocalRoots | None = None,
) -> ModelEstimate:
    """The memory `model` would need with `placement`, and the free memory there if the device is present.
    Blocking (it may read headers from the Hub)."""
    found = find_model(model, revision, cache_dir, roots)
    origin: Origin
    if found is not None:
        origin = found.origin
        est = estimate_for(found.folder, placement=placement, context=context, batch=batch,
                           max_context_cap=max_context_cap, sae_numel=sae_numel)
    else:
        origin = "hub"
        est = estimate_for(None, placement=placement, repo_id=model, revision=revision, context=context,
                           batch=batch, max_context_cap=max_context_cap, sae_numel=sae_numel)
    available = free_bytes(est.device) if device_present(est.device) else None
    return ModelEstimate(origin, est, available)
