"""The server's side of `millm.hub`: download jobs, the cache, memory estimates, model sources.

- `resolve_model_source`: a model argument becomes a local folder: a folder as is (the bundled
  demo model by its name, `millm-demo`), a Hub repo id from the cache (no network), else pulled
  into the cache first (same file selection and error messages as `millm pull`). `find_model`
  is the part without the network.
- `estimate_for`: the memory a load would take, with the context capped like the loader caps it.
- `estimate_model`: the one estimator behind `GET /api/models/estimate` and `millm estimate`: the
  model argument resolved by `find_model` (folder, `millm-demo`, cached repo), else read from the
  Hub's headers; free memory when the device is on this machine, else no comparison (estimating
  for a GPU you do not have yet is the point).
- `HubService`: what the routes call: submit downloads (a SAELens release + sae_id is resolved
  to a repo and folder first), read and cancel jobs, list and delete cached repos (refusing
  repos in use or being downloaded), estimate a model by folder, cached repo or Hub repo.

Results name repos by id, revision and folder inside the repo; the absolute paths computed
here stay inside the services.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from millm import demo, placement
from millm.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from millm.hub.cache import CacheIndex, CachedRepo, check_repo_id, check_revision, list_cache, local_path
from millm.hub.files import select_weight_files
from millm.hub.sae_listing import RepoSae, find_saes
from millm.hub.sae_listing import read_config as read_sae_config
from millm.services.local_paths import LocalRoots, looks_like_path
from millm.hub.memory import (
    MemoryEstimate,
    dtype_bytes,
    estimate_local,
    estimate_remote,
    max_context,
    read_config,
    resolve_device,
)

if TYPE_CHECKING:  # the download stack (httpx2, Hub errors) loads only when something is pulled
    from millm.hub.jobs import Job, JobManager

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- model sources


@dataclass(frozen=True)
class ModelSource:
    folder: Path  # server-internal; never sent to clients
    repo_id: str | None  # set when the model came from the Hub cache
    origin: str  # "local", "cache" or "hub" (pulled just now)


def user_path(source: str, *, param: str) -> Path:
    """A path as the user typed it, with a leading ~ expanded. An unknown ~user (expanduser raises) is a 404 naming
    `param`, and text the file system cannot encode a 400, instead of a 500."""
    try:
        return Path(source).expanduser()
    except RuntimeError:
        raise NotFound(f"{source!r}: no such user, so no home folder to look in", param=param) from None
    except UnicodeError:
        raise InvalidRequest(f"{source!r} cannot be a file name here (it does not encode)", param=param) from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        return False


def _complete(folder: Path) -> bool:
    """Whether a cached snapshot has config and every weight file (a cancelled pull or an estimate
    leaves snapshots with only some files)."""
    if not (folder / "config.json").is_file():
        return False
    names = [p.name for p in folder.iterdir()]
    weights = select_weight_files(names)
    if not weights:
        return False
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index_name in weights:
            try:
                shards = set(json.loads((folder / index_name).read_text())["weight_map"].values())
            except (ValueError, KeyError, TypeError):
                return False
            return all((folder / shard).is_file() for shard in shards)
    return True


def cached_model_folder(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path | None:
    """The complete cached snapshot of a model repo, or None."""
    try:
        folder = local_path(repo_id, revision, cache_dir=cache_dir)
    except NotFound:
        return None
    return folder if _complete(folder) else None


def find_model(source: str, revision: str | None = None, cache_dir: str | Path | None = None,
               roots: LocalRoots | None = None) -> ModelSource | None:
    """Where a model argument is without the network: a local model folder (the bundled demo model by its
    name, `millm-demo`), or the complete cached snapshot of a Hub repo; None for a Hub repo id not in the cache.
    Raises a 400 or 404 naming `model` for anything else (blank, a missing path, a folder with no config.json,
    a malformed repo id)."""
    if not source.strip():
        raise InvalidRequest("model is empty: give a local folder or a Hub repo id", param="model")
    if source == demo.DEMO_MODEL_ID:
        return ModelSource(demo.assets_dir() / "model", None, "local")
    if looks_like_path(source):
        path = roots.resolve(source, param="model") if roots is not None else user_path(source, param="model")
        if not _is_dir(path):
            raise ModelNotFound(f"model folder {source!r} does not exist", param="model")
    else:  # a bare name: a folder of that name (inside the allowed roots), else a Hub repo id
        path = roots.existing_dir(source) if roots is not None else user_path(source, param="model")
        path = path if path is not None and _is_dir(path) else None
    if path is not None:
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{source!r} is a folder but not a model: it has no config.json", param="model")
        return ModelSource(path, None, "local")
    check_repo_id(source, param="model")
    check_revision(revision)
    folder = cached_model_folder(source, revision, cache_dir)
    return ModelSource(folder, source, "cache") if folder is not None else None


def resolve_model_source(
    source: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    index: CacheIndex | None = None,
    roots: LocalRoots | None = None,
) -> ModelSource:
    """A local folder, else the cached snapshot of a Hub repo, else a pull of it. Blocking."""
    found = find_model(source, revision, cache_dir, roots)
    if found is not None:
        return found
    from millm.hub.download import pull_model

    log.info("model %s is not in the cache; pulling it", source)
    folder = pull_model(source, revision, cache_dir, index=index)
    return ModelSource(folder, source, "hub")


# ---------------------------------------------------------------------------- estimates


def _cap_context(est: MemoryEstimate, cap: int | None) -> MemoryEstimate:
    """The estimate at min(model context, cap): the KV cache is linear in the context."""
    if cap is None or cap >= est.context:
        return est
    return replace(est, context=cap, kv_cache_bytes=est.kv_cache_bytes // est.context * cap)


def weight_bytes(dtype: str, quantization: str, device: str) -> float:
    """Bytes per value of the residual stream / SAE for a load with these options."""
    if quantization != "none":
        return 2.0
    return dtype_bytes(dtype, resolve_device(device).split(":")[0])


def estimate_for(
    folder: Path | None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    dtype: str = "auto",
    quantization: str = "none",
    device: str = "auto",
    context: int | None = None,
    max_context_cap: int | None = None,
    sae_numel: int = 0,
    batch: int = 1,
    cache_dir: str | Path | None = None,  # unused: kept so callers can pass one set of options
) -> MemoryEstimate:
    """Estimate a local folder, or (folder None) a Hub repo from its safetensors headers."""
    sae_bytes = int(sae_numel * weight_bytes(dtype, quantization, device))
    options: dict[str, Any] = dict(dtype=dtype, quantization=quantization, device=device, batch=batch,
                                   sae_bytes=sae_bytes)
    if folder is not None:
        if context is None and max_context_cap is not None:
            config = read_config(folder)
            model_max = max_context(config)
            context = min(model_max, max_context_cap) if model_max else max_context_cap
        return estimate_local(folder, context=context, **options)
    assert repo_id is not None
    # estimate_remote fetches config.json; a scratch cache keeps that stub out of the real one.
    with tempfile.TemporaryDirectory(prefix="millm-estimate-") as scratch:
        est = estimate_remote(repo_id, revision, cache_dir=scratch, context=context, **options)
    return est if context is not None else _cap_context(est, max_context_cap)


def device_present(device: str) -> bool:
    """Whether `device` (cpu, cuda, cuda:N, mps, auto) exists on this machine."""
    return placement.device_present(device)


MAX_CONFIGS = 128  # SAE configs read per listing (Gemma Scope's hundreds of folders have none to read)
MAX_CONFIG_BYTES = 1 << 20
_CONFIGS: dict[tuple[str, str, str], dict[str, dict[str, Any] | None]] = {}  # (endpoint, repo, commit) -> configs
_CONFIGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class RepoSaeListing:
    repo_id: str
    revision: str
    commit: str
    saes: list[RepoSae]
    configs_read: int
    cached_paths: frozenset[str]  # SAE folders of this repo already in the local cache


@dataclass(frozen=True)
class ModelEstimate:
    origin: str  # "local", "cache" or "hub"
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
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    dtype: str = "auto",
    quantization: str = "none",
    device: str = "auto",
    context: int | None = None,
    batch: int = 1,
    max_context_cap: int | None = None,
    sae_numel: int = 0,
    roots: LocalRoots | None = None,
) -> ModelEstimate:
    """The memory `model` would need on `device`, and the free memory there if the device is present.

    `model` is resolved as a load resolves it (`find_model`: a folder, `millm-demo`, a cached repo), else
    its safetensors headers are read from the Hub (nothing downloaded). Blocking."""
    opts: dict[str, Any] = dict(dtype=dtype, quantization=quantization, device=device, context=context, batch=batch,
                                max_context_cap=max_context_cap, sae_numel=sae_numel)
    found = find_model(model, revision, cache_dir, roots)
    if found is not None:
        origin, est = found.origin, estimate_for(found.folder, **opts)
    else:
        origin, est = "hub", estimate_for(None, repo_id=model, revision=revision, **opts)
    available = free_memory(est.device) if device_present(est.device) else None
    return ModelEstimate(origin, est, available)


def free_memory(device: str) -> int:
    """Free bytes on `device`; InvalidRequest for a CUDA device this machine does not have."""
    return placement.free_bytes(device)


# ---------------------------------------------------------------------------- service


@dataclass
class HubService:
    """Per-request facade over the one `JobManager`; `in_use` names repos the server holds loaded."""

    jobs: JobManager
    defaults: dict[str, Any]  # device, dtype, quantization, max_context
    in_use: frozenset[str] = frozenset()
    sae_numel: int = 0  # the attached SAE, counted in estimates (it is re-attached after a switch)
    roots: LocalRoots | None = None  # the local folders a client may name

    # -------------------------------------------------------------- downloads
    def submit(self, *, kind: str, repo_id: str | None, revision: str | None = None, path: str | None = None,
               release: str | None = None, sae_id: str | None = None) -> Job:
        if release is not None:
            from millm.sae.registry_saelens import resolve_pretrained

            entry = resolve_pretrained(release, sae_id or "")
            repo_id, path = entry.repo_id, entry.path
        if not repo_id:
            raise InvalidRequest("repo_id is required", param="repo_id")
        return self.jobs.submit(kind, repo_id, revision, path)

    # -------------------------------------------------------------- browsing the Hub
    def repo_saes(self, repo_id: str, revision: str | None = None) -> RepoSaeListing:
        """The SAEs a Hub repo holds (see millm.hub.sae_listing), their configs read where the format has one
        (at most MAX_CONFIGS, small files only, fetched in parallel into a scratch folder and remembered per
        commit). Blocking: it talks to the Hub."""
        check_repo_id(repo_id, param="repo_id")
        check_revision(revision)
        client = self.jobs.hub_client()
        commit, files = client.repo_files(repo_id, revision)
        saes = find_saes(files, repo_id)
        wanted = [s for s in saes if s.config_file and (files.get(s.config_file) or 0) <= MAX_CONFIG_BYTES]
        key = (client.endpoint, repo_id, commit)
        with _CONFIGS_LOCK:
            known = dict(_CONFIGS.get(key, {}))
        missing = [s.config_file for s in wanted[:MAX_CONFIGS] if s.config_file not in known]
        if missing:
            with tempfile.TemporaryDirectory(prefix="millm-sae-configs-") as scratch, \
                    ThreadPoolExecutor(max_workers=8) as pool:
                read = pool.map(lambda name: client.read_json(repo_id, commit, name, scratch=scratch), missing)
                known.update(zip(missing, read))
            with _CONFIGS_LOCK:
                _CONFIGS[key] = known
                while len(_CONFIGS) > 32:
                    _CONFIGS.pop(next(iter(_CONFIGS)))
        saes = [read_sae_config(s, known[s.config_file]) if known.get(s.config_file or "") else s for s in saes]
        cached_paths = {p for r in self.cached("sae") if r.repo_id == repo_id for p in r.sae_paths}
        return RepoSaeListing(repo_id=repo_id, revision=revision or "main", commit=commit, saes=saes,
                              configs_read=sum(1 for s in wanted if known.get(s.config_file or "")),
                              cached_paths=frozenset(cached_paths))

    # -------------------------------------------------------------- cache
    def cached(self, kind: str | None = None) -> list[CachedRepo]:
        return list_cache(self.jobs.cache_dir, index=self.jobs.index, kind=kind)

    def delete(self, repo_id: str, revision: str | None = None) -> int:
        check_revision(revision)
        if repo_id in self.in_use:
            raise Conflict(f"'{repo_id}' is in use (the loaded model or the attached SAE); unload or detach it "
                           "before deleting it from the cache.", param="repo_id", code="in_use")
        return self.jobs.delete_cached(repo_id, revision)

    # -------------------------------------------------------------- estimates
    def estimate(self, model: str, *, revision: str | None = None, dtype: str | None = None,
                 quantization: str | None = None, device: str | None = None,
                 context: int | None = None) -> ModelEstimate:
        """`estimate_model` with the server's defaults, counting the attached SAE."""
        return estimate_model(
            model, revision=revision, cache_dir=self.jobs.cache_dir,
            dtype=dtype or self.defaults.get("dtype", "auto"),
            quantization=quantization or self.defaults.get("quantization", "none"),
            device=device or self.defaults.get("device", "auto"),
            context=context, max_context_cap=self.defaults.get("max_context"), sae_numel=self.sae_numel,
            roots=self.roots,
        )
