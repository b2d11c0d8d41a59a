"""The server's side of `millm.hub`: download jobs, the cache, the Hub's SAE listings and memory estimates.

`HubService` is built once by the runtime over its one `JobManager`, and is all the routes call
for `/api/downloads`, `/ws/downloads`, `/api/cache`, `/api/hub/saes` and `/api/models/estimate`:

- downloads: submit (a SAELens release + sae_id is resolved to a repo and folder first), read,
  cancel, resume and forget jobs, and follow their events (`EventFeed`);
- the cache: list cached repos (marking those the server has loaded or is downloading), delete
  one (refused while it is loaded, attached or being downloaded);
- browsing: the SAEs a Hub repo holds (`millm.hub.sae_listing`), their configs read where the
  format has one;
- estimates: `millm.hub.estimate.estimate_model` with the server's defaults (`LoadDefaults`),
  counting the attached SAE.

Results are protocol shapes naming repos by id, revision and folder inside the repo; the absolute
paths of the cache stay inside `millm.hub`.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from millm.errors import Conflict, InvalidRequest
from millm.hub.cache import CachedRepo, check_repo_id, check_revision, list_cache
from millm.hub.estimate import ModelEstimate, estimate_model
from millm.hub.events import JobEvent, Subscription
from millm.hub.jobs import Job, JobManager
from millm.hub.local_paths import LocalRoots
from millm.hub.memory import MemoryEstimate
from millm.hub.sae_listing import RepoSae, find_saes
from millm.hub.sae_listing import read_config as read_sae_config
from millm.placement import device_present, free_bytes
from millm.protocol import hub as h
from millm.services.load_options import LoadDefaults, LoadOptions
from millm.services.remote_code import check_allowed

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


# ---------------------------------------------------------------------------- shapes


def utc(timestamp: float) -> datetime:
    """A Unix time as the API writes times: an aware UTC datetime (ISO 8601 in JSON)."""
    return datetime.fromtimestamp(timestamp, UTC)


def _eta(d: dict[str, Any]) -> float | None:
    speed = d.get("speed_bps") or 0.0
    if d["state"] != "running" or speed <= 0 or not d["bytes_total"]:
        return None
    return round(max(0, d["bytes_total"] - d["bytes_done"]) / speed, 1)


def job_out(job: Job | dict[str, Any]) -> h.JobOut:
    d = job.to_dict() if isinstance(job, Job) else dict(job)
    total, done = d["bytes_total"], d["bytes_done"]
    progress = 1.0 if d["state"] == "completed" else (min(1.0, done / total) if total else 0.0)
    return h.JobOut(
        id=d["id"], kind=d["kind"], repo_id=d["repo_id"], name=d["repo_id"].rsplit("/", 1)[-1],
        revision=d["revision"], path=d["path"], state=d["state"], commit=d["commit"], bytes_done=done,
        bytes_total=total, files_done=d["files_done"], files_total=d["files_total"], progress=round(progress, 4),
        current_file=d["current_file"], speed_bps=d.get("speed_bps", 0.0), eta_s=_eta(d),
        error=h.JobError(**d["error"]) if d["error"] else None,
        attempts=d["attempts"], created_at=utc(d["created_at"]), updated_at=utc(d["updated_at"]),
        finished_at=utc(d["finished_at"]) if d["finished_at"] is not None else None,
    )


def event_out(event: JobEvent) -> h.DownloadEvent:
    return h.DownloadEvent(type=event.type, job=job_out(event.job))  # type: ignore[arg-type]


def estimate_out(est: MemoryEstimate, available: int | None) -> h.MemoryEstimateOut:
    """`available` None: the device is not on this machine, so there is nothing to compare with."""
    summary = est.describe() + ("" if available is not None else f"; {est.device} is not present on this machine")
    return h.MemoryEstimateOut(**est.to_dict(), available_bytes=available, device_present=available is not None,
                               fits=est.total_bytes <= available if available is not None else None, summary=summary)


class EventFeed:
    """Download events as protocol shapes: first the state of each job in `initial`, then every event (for one
    job: until its final state). Close it when done (`async with`, or `close()`)."""

    def __init__(self, sub: Subscription, initial: list[Job]) -> None:
        self._sub = sub
        self._initial = [h.DownloadEvent(type="state", job=job_out(j)) for j in initial]

    async def next(self) -> h.DownloadEvent | None:
        """The next event; None once the one job followed has finished (or the feed is closed)."""
        if self._initial:
            return self._initial.pop(0)
        event = await self._sub.aget()
        return event_out(event) if event is not None else None

    async def __aiter__(self) -> AsyncIterator[h.DownloadEvent]:
        while (event := await self.next()) is not None:
            yield event

    def close(self) -> None:
        self._sub.close()

    async def __aenter__(self) -> EventFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- service


@dataclass
class HubService:
    """The routes' one door to downloads, the cache, Hub listings and estimates (built once, by the runtime)."""

    jobs: JobManager
    defaults: LoadDefaults
    in_use: Callable[[], frozenset[str]] = lambda: frozenset()  # repos the server holds loaded or attached
    sae_numel: Callable[[], int] = lambda: 0  # the attached SAE, counted in estimates (re-attached after a switch)
    roots: LocalRoots | None = None  # the local folders a client may name

    # -------------------------------------------------------------- downloads
    def submit(self, *, kind: str, repo_id: str | None, revision: str | None = None, path: str | None = None,
               release: str | None = None, sae_id: str | None = None,
               trust_remote_code: bool | None = None) -> h.JobOut:
        check_allowed(trust_remote_code, allowed=self.defaults.trust_remote_code)
        if release is not None:
            from millm.sae.registry_saelens import resolve_pretrained

            entry = resolve_pretrained(release, sae_id or "")
            repo_id, path = entry.repo_id, entry.path
        if not repo_id:
            raise InvalidRequest("repo_id is required", param="repo_id")
        return job_out(self.jobs.submit(kind, repo_id, revision, path))

    def list_jobs(self, *, active_only: bool = False) -> list[h.JobOut]:
        return [job_out(j) for j in self.jobs.list(active_only=active_only)]

    def job(self, job_id: str) -> h.JobOut:
        return job_out(self.jobs.get(job_id))

    def cancel(self, job_id: str) -> h.JobOut:
        return job_out(self.jobs.cancel(job_id))

    def resume(self, job_id: str) -> h.JobOut:
        return job_out(self.jobs.resume(job_id))

    def forget(self, job_id: str) -> None:
        self.jobs.forget(job_id)

    def events(self, job_id: str | None = None) -> EventFeed:
        """Follow every job (the active ones' states first) or one job (NotFound for an unknown id)."""
        sub = self.jobs.subscribe_async(job_id)
        return EventFeed(sub, self.jobs.list(active_only=True) if job_id is None else [])

    def downloads_summary(self) -> tuple[int, int, int, float]:
        """Active jobs: how many, bytes done, bytes in all, and their speed together."""
        active = self.jobs.list(active_only=True)
        return (len(active), sum(j.bytes_done for j in active), sum(j.bytes_total for j in active),
                round(sum(j.speed_bps for j in active), 1))

    # -------------------------------------------------------------- browsing the Hub
    def list_repo_saes(self, repo_id: str, revision: str | None = None) -> h.RepoSaeList:
        listing = self.repo_saes(repo_id, revision)
        data = [h.RepoSaeOut(path=s.path, source=f"{listing.repo_id}:{s.path}" if s.path else listing.repo_id,
                             format=s.format, layer=s.layer, site=s.site, hook_name=s.hook_name, width=s.width,
                             d_in=s.d_in, l0=s.l0, l0_label=s.l0_label, architecture=s.architecture,
                             neuronpedia_id=s.neuronpedia_id, size_bytes=s.size_bytes, files=s.files,
                             cached=s.path in listing.cached_paths)
                for s in listing.saes]
        return h.RepoSaeList(repo_id=listing.repo_id, revision=listing.revision, commit=listing.commit, data=data,
                             count=len(data), configs_read=listing.configs_read)

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
        missing = [s.config_file for s in wanted[:MAX_CONFIGS] if s.config_file and s.config_file not in known]
        if missing:
            with tempfile.TemporaryDirectory(prefix="millm-sae-configs-") as scratch, \
                    ThreadPoolExecutor(max_workers=8) as pool:
                read = pool.map(lambda name: client.read_json(repo_id, commit, name, scratch=scratch), missing)
                known.update(zip(missing, read, strict=True))
            with _CONFIGS_LOCK:
                _CONFIGS[key] = known
                while len(_CONFIGS) > 32:
                    _CONFIGS.pop(next(iter(_CONFIGS)))
        saes = [read_sae_config(s, config) if (config := known.get(s.config_file or "")) else s for s in saes]
        cached_paths = {p for r in self.cached("sae") if r.repo_id == repo_id for p in r.sae_paths}
        return RepoSaeListing(repo_id=repo_id, revision=revision or "main", commit=commit, saes=saes,
                              configs_read=sum(1 for s in wanted if known.get(s.config_file or "")),
                              cached_paths=frozenset(cached_paths))

    # -------------------------------------------------------------- cache
    def cached(self, kind: str | None = None) -> list[CachedRepo]:
        return list_cache(self.jobs.cache_dir, index=self.jobs.index, kind=kind)

    def list_cache(self, kind: str | None = None) -> h.CacheList:
        repos, in_use = self.cached(kind), self.in_use()
        data = []
        for repo in repos:
            d = repo.to_dict()
            d["last_modified"] = utc(d["last_modified"])
            d["last_used"] = utc(d["last_used"]) if d["last_used"] is not None else None
            data.append(h.CachedRepoOut(**d, in_use=repo.repo_id in in_use,
                                        downloading=self.jobs.is_busy(repo.repo_id)))
        return h.CacheList(data=data, count=len(data), size_bytes=sum(r.size_bytes for r in repos))

    def delete(self, repo_id: str, revision: str | None = None) -> h.CacheDeleteOut:
        check_revision(revision)
        if repo_id in self.in_use():
            raise Conflict(f"'{repo_id}' is in use (the loaded model or the attached SAE); unload or detach it "
                           "before deleting it from the cache.", param="repo_id", code="in_use")
        freed = self.jobs.delete_cached(repo_id, revision)
        return h.CacheDeleteOut(repo_id=repo_id, revision=revision, freed_bytes=freed)

    # -------------------------------------------------------------- estimates
    def estimate(self, model: str, *, revision: str | None = None, dtype: str | None = None,
                 quantization: str | None = None, device: str | None = None,
                 context: int | None = None) -> ModelEstimate:
        """`estimate_model` with the server's defaults, counting the attached SAE."""
        placement = self.defaults.placement(LoadOptions(device=device, dtype=dtype, quantization=quantization))
        return estimate_model(model, placement=placement, revision=revision, cache_dir=self.jobs.cache_dir,
                              context=context, max_context_cap=self.defaults.max_context,
                              sae_numel=self.sae_numel(), roots=self.roots)

    def estimate_out(self, model: str, **options: Any) -> h.ModelEstimateOut:
        result = self.estimate(model, **options)
        name = model if result.origin != "local" else model.rstrip("/").rsplit("/", 1)[-1]
        return h.ModelEstimateOut(model=name, source=result.origin,
                                  estimate=estimate_out(result.estimate, result.available_bytes))

    # -------------------------------------------------------------- previewing a Hub model
    def preview_model(self, repo_id: str, revision: str | None = None) -> h.ModelPreviewOut:
        """A Hub model's card metadata and a memory estimate per precision on the server's device, with the free
        memory there (None: the device is not on this machine). Nothing is downloaded into the cache. Blocking."""
        from millm.services.model_preview import preview_model

        check_repo_id(repo_id, param="repo_id")
        check_revision(revision)
        device = self.defaults.device
        p = preview_model(self.jobs.hub_client(), repo_id, revision, device=device,
                          max_context_cap=self.defaults.max_context, sae_numel=self.sae_numel())
        resolved = p.estimates[0][1].device if p.estimates else device
        available = free_bytes(resolved) if device_present(resolved) else None
        rows = [h.PrecisionEstimateOut(precision=label, dtype=e.dtype, quantization=e.quantization,  # type: ignore[arg-type]
                                       weights_bytes=e.weights_bytes, kv_cache_bytes=e.kv_cache_bytes,
                                       sae_bytes=e.sae_bytes, overhead_bytes=e.overhead_bytes,
                                       total_bytes=e.total_bytes,
                                       fits=e.total_bytes <= available if available is not None else None)
                for label, e in p.estimates]
        return h.ModelPreviewOut(
            repo_id=p.repo_id, revision=p.revision, commit=p.commit, author=p.author, downloads=p.downloads,
            likes=p.likes, pipeline_tag=p.pipeline_tag, library_name=p.library_name, model_type=p.model_type,
            architectures=p.architectures, tags=p.tags, license=p.license, languages=p.languages, gated=p.gated,
            private=p.private, needs_remote_code=p.needs_remote_code,
            trust_remote_code_allowed=self.defaults.trust_remote_code,
            last_modified=datetime.fromisoformat(p.last_modified) if p.last_modified else None, files=p.files,
            size_bytes=p.size_bytes, params=p.params, context=p.context, device=resolved,
            available_bytes=available, estimates=rows, estimate_error=p.estimate_error,
        )  # fmt: skip
