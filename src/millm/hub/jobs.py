"""Download jobs: one thread per job (at most `max_concurrent` transferring at once).

States: queued -> running -> completed | failed | cancelled. A job counts bytes and files
(`bytes_done`/`bytes_total`, `files_done`/`files_total`) and publishes `JobEvent`s to
subscribers (`subscribe`, `subscribe_async`): "state" on every state change, "progress"
at most every `progress_interval_s` and at every file boundary.

Every job is saved as ``<data_dir>/jobs/<id>.json`` on each state change and file
boundary. `start()` reloads them; jobs that were queued or running when the process
stopped are queued again and resume: finished files are kept in the cache, huggingface_hub
skips them, and orphaned partial files are deleted first. `shutdown()` interrupts running
jobs without marking them cancelled, so they resume on the next start. Tokens are never
written to disk. Errors are stored as ``{"code", "message", "status", "type", "param"}``
taken from the `millm.errors` type the failure was translated to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from millm.errors import Conflict, InvalidRequest, MillmError, NotFound
from millm.hub.cache import CacheIndex, check_repo_id, check_revision, default_cache_dir, delete_cached
from millm.hub.download import DownloadCancelled, Progress, download_plan, remove_stale_partials
from millm.hub.events import TERMINAL_STATES, EventBroker, JobEvent, Subscription
from millm.hub.files import normalize_sae_path
from millm.hub.remote import HubClient

logger = logging.getLogger(__name__)

ACTIVE_STATES = frozenset({"queued", "running"})
SPEED_WINDOW_S = 5.0  # the transfer rate is measured over the last few seconds


class RateMeter:
    """Bytes per second over a sliding window of (time, bytes done) samples. The first sample is the baseline,
    so files a resumed job already had (counted at once) do not show up as speed."""

    def __init__(self, window_s: float = SPEED_WINDOW_S) -> None:
        self.window = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()  # keep one sample at or beyond the window's start
        t0, b0 = self.samples[0]
        return max(0.0, (done - b0) / (now - t0)) if now - t0 > 0.05 else 0.0


@dataclass
class Job:
    id: str
    kind: str  # "model" or "sae"
    repo_id: str
    revision: str
    path: str = ""  # SAE folder inside the repo
    state: str = "queued"
    commit: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    current_file: str | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    speed_bps: float = 0.0  # transfer rate over the last SPEED_WINDOW_S while running, else 0

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _error_dict(err: MillmError) -> dict[str, Any]:
    return {"code": err.code, "message": err.message, "status": err.status, "type": err.type, "param": err.param}


class JobManager:
    """Runs and tracks downloads. Create once per process; call `start()`, then `shutdown()`."""

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        token: str | bool | None = None,
        max_concurrent: int = 2,
        progress_interval_s: float = 0.1,
        stale_partial_age_s: float = 60.0,
    ) -> None:
        self.jobs_dir = Path(data_dir) / "jobs"
        self.cache_dir = default_cache_dir(cache_dir)
        self.index = CacheIndex(data_dir)
        self._endpoint = endpoint
        self._token = token
        self._slots = threading.Semaphore(max_concurrent)
        self._progress_interval = progress_interval_s
        self._stale_age = stale_partial_age_s  # older *.incomplete files are orphans of a crash
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._user_cancelled: set[str] = set()
        self._broker = EventBroker()
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, resume: bool = True) -> list[Job]:
        """Load saved jobs; resume the unfinished ones. Returns the resumed jobs."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        resumed = []
        for file in sorted(self.jobs_dir.glob("*.json")):
            try:
                job = Job.from_dict(json.loads(file.read_text()))
            except (ValueError, TypeError):
                logger.warning("Ignoring unreadable job record %s", file.name)
                continue
            with self._lock:
                if job.id in self._jobs:
                    continue
                self._jobs[job.id] = job
            if job.state in ACTIVE_STATES and resume:
                remove_stale_partials(self.cache_dir, job.repo_id, older_than_s=self._stale_age)
                self._launch(job.id)
                resumed.append(self.get(job.id))
        return resumed

    def shutdown(self, *, timeout: float | None = 10.0) -> None:
        """Interrupt running jobs (they stay queued on disk and resume at the next start)."""
        with self._lock:
            self._closing = True
            events = list(self._cancel.values())
            threads = list(self._threads.values())
        for event in events:
            event.set()
        for thread in threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ submitting
    def submit_model(self, repo_id: str, revision: str | None = None) -> Job:
        return self.submit("model", repo_id, revision)

    def submit(self, kind: str, repo_id: str, revision: str | None = None, path: str | None = None) -> Job:
        """Start a download; an identical job still queued or running is returned instead."""
        if kind not in ("model", "sae"):
            raise InvalidRequest(f"Unknown download kind '{kind}'.", param="kind")
        check_repo_id(repo_id, param="repo_id")
        check_revision(revision)
        rev = revision or "main"
        folder = normalize_sae_path(path) if kind == "sae" else ""
        with self._lock:
            if self._closing:
                raise Conflict("The download manager is shutting down.")
            for job in self._jobs.values():
                same = (job.kind, job.repo_id, job.revision, job.path) == (kind, repo_id, rev, folder)
                if same and job.state in ACTIVE_STATES:
                    return replace(job)
            job = Job(id=uuid.uuid4().hex[:12], kind=kind, repo_id=repo_id, revision=rev, path=folder)
            self._jobs[job.id] = job
            self._save(job)
        self._publish("state", job)
        self._launch(job.id)
        return self.get(job.id)

    def resume(self, job_id: str) -> Job:
        """Run a failed or cancelled job again (finished files are not fetched twice)."""
        with self._lock:
            job = self._get_live(job_id)
            if job.state in ACTIVE_STATES:
                return replace(job)
            job.state, job.error, job.finished_at = "queued", None, None
            self._touch(job)
        self._publish("state", job)
        self._launch(job_id)
        return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Stop a job; its partial file is deleted. Files it had finished stay in the cache."""
        with self._lock:
            job = self._get_live(job_id)
            if job.done:
                return replace(job)
            self._user_cancelled.add(job_id)
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return self.get(job_id)

    # ------------------------------------------------------------------ reading
    def get(self, job_id: str) -> Job:
        with self._lock:
            return replace(self._get_live(job_id))

    def list(self, *, active_only: bool = False) -> list[Job]:
        with self._lock:
            jobs = [replace(j) for j in self._jobs.values() if not active_only or j.state in ACTIVE_STATES]
        return sorted(jobs, key=lambda j: j.created_at)

    def forget(self, job_id: str) -> None:
        """Drop a finished job from the list and from disk."""
        with self._lock:
            job = self._get_live(job_id)
            if not job.done:
                raise Conflict("Cancel the job before removing it.", param="job_id")
            del self._jobs[job_id]
            (self.jobs_dir / f"{job_id}.json").unlink(missing_ok=True)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is finished (for tests and the CLI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.subscribe(job_id) as sub:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                event = sub.get(remaining)  # TimeoutError past the deadline
                if event is None or event.terminal:
                    break
        return self.get(job_id)

    def subscribe(self, job_id: str | None = None, *, maxsize: int = 256) -> Subscription:
        """A thread-safe event queue; for one job it starts with that job's current state."""
        return self._subscribe(job_id, maxsize, None)

    def subscribe_async(self, job_id: str | None = None, *, maxsize: int = 256) -> Subscription:
        """Like `subscribe`, read with ``await sub.aget()``; call from inside the running loop."""
        return self._subscribe(job_id, maxsize, asyncio.get_running_loop())

    def _subscribe(self, job_id: str | None, maxsize: int, loop: asyncio.AbstractEventLoop | None) -> Subscription:
        with self._lock:
            current = self.get(job_id) if job_id is not None else None
            sub = self._broker.subscribe(job_id, maxsize=maxsize, loop=loop)
        if current is not None:
            sub.push(JobEvent("state", current.to_dict()))
        return sub

    def hub_client(self) -> HubClient:
        """A client for the Hub the jobs download from (same endpoint and token)."""
        return HubClient(endpoint=self._endpoint, token=self._token)

    # ------------------------------------------------------------------ cache
    def is_busy(self, repo_id: str) -> bool:
        with self._lock:
            return any(j.repo_id == repo_id and j.state in ACTIVE_STATES for j in self._jobs.values())

    def delete_cached(self, repo_id: str, revision: str | None = None) -> int:
        """Delete from the cache, refusing while a job is downloading the repo."""
        if self.is_busy(repo_id):
            raise Conflict(f"'{repo_id}' is being downloaded; cancel the job first.", param="repo_id")
        return delete_cached(repo_id, self.cache_dir, revision=revision, index=self.index)

    # ------------------------------------------------------------------ internals
    def _get_live(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"No download job '{job_id}'.", param="job_id", code="job_not_found")
        return job

    def _touch(self, job: Job, *, save: bool = True) -> None:
        job.updated_at = time.time()
        if save:
            self._save(job)

    def _save(self, job: Job) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        target = self.jobs_dir / f"{job.id}.json"
        tmp = target.with_name(f"{job.id}.json.tmp")
        tmp.write_text(json.dumps(job.to_dict()))
        tmp.replace(target)

    def _publish(self, kind: str, job: Job) -> None:
        with self._lock:
            snapshot = job.to_dict()
        self._broker.publish(JobEvent(kind, snapshot))

    def _launch(self, job_id: str) -> None:
        with self._lock:
            event = threading.Event()
            self._cancel[job_id] = event
            thread = threading.Thread(target=self._run, args=(job_id, event), name=f"download-{job_id}", daemon=True)
            self._threads[job_id] = thread
        thread.start()

    def _set_state(self, job: Job, state: str, **changes: Any) -> None:
        with self._lock:
            job.state = state
            for key, value in changes.items():
                setattr(job, key, value)
            if state != "running":
                job.speed_bps = 0.0
            if state in TERMINAL_STATES:
                job.finished_at = time.time()
                job.current_file = None
            self._touch(job)
        self._publish("state", job)

    def _run(self, job_id: str, cancel: threading.Event) -> None:
        job = self._jobs[job_id]
        try:
            with self._slots:
                if cancel.is_set():
                    raise DownloadCancelled(job.repo_id)
                self._set_state(job, "running", attempts=job.attempts + 1, error=None)
                self._download(job, cancel)
            self.index.record_pull(
                kind=job.kind, repo_id=job.repo_id, revision=job.revision, commit=job.commit or "", path=job.path
            )
            self._set_state(job, "completed", bytes_done=job.bytes_total, files_done=job.files_total)
        except DownloadCancelled:
            with self._lock:
                by_user = job_id in self._user_cancelled or not self._closing
                self._user_cancelled.discard(job_id)
            # On shutdown the job stays queued on disk, to resume at the next start.
            self._set_state(job, "cancelled" if by_user else "queued")
        except MillmError as err:
            self._set_state(job, "failed", error=_error_dict(err))
        except Exception as exc:  # noqa: BLE001 - a job thread must always end in a state
            logger.exception("Download job %s crashed", job_id)
            self._set_state(job, "failed", error={"code": "download_failed", "message": str(exc), "status": 502,
                                                  "type": "server_error", "param": None})  # fmt: skip
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
                self._threads.pop(job_id, None)

    def _download(self, job: Job, cancel: threading.Event) -> None:
        client = HubClient(endpoint=self._endpoint, token=self._token)
        plan = client.plan(job.kind, job.repo_id, job.revision, job.path)  # type: ignore[arg-type]
        with self._lock:
            job.commit = plan.commit
            job.bytes_total = plan.total_bytes
            job.files_total = len(plan.files)
            self._touch(job)
        last = 0.0
        rate = RateMeter()

        def on_progress(p: Progress) -> None:
            nonlocal last
            with self._lock:
                boundary = p.files_done != job.files_done or p.current_file != job.current_file
                job.bytes_done, job.files_done, job.current_file = p.bytes_done, p.files_done, p.current_file
                job.speed_bps = round(rate.add(time.monotonic(), p.bytes_done), 1)
                self._touch(job, save=boundary)
            now = time.monotonic()
            if boundary or now - last >= self._progress_interval:
                last = now
                self._publish("progress", job)

        download_plan(
            plan, cache_dir=self.cache_dir, endpoint=client.endpoint, token=self._token,
            on_progress=on_progress, cancel=cancel,
        )  # fmt: skip
