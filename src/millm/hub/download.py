"""Fetch the files of a `DownloadPlan` into the Hugging Face cache, with progress and cancel.

Each file goes through `huggingface_hub.hf_hub_download`, pinned to the plan's commit and
given an explicit ``endpoint=``, so the cache layout (blobs/, snapshots/, refs/) is the
library's own and transformers can load the result with ``cache_dir=``.

Progress: huggingface_hub reports bytes through the ``tqdm_class`` it is given; we pass a
silent bar that forwards each update to the caller (huggingface_hub reads in chunks of
``constants.DOWNLOAD_CHUNK_SIZE``, 10 MB, so that is the grain of progress and cancel).
Cancel: a `threading.Event` checked on every chunk and between files; when it is set the
bar raises `DownloadCancelled` inside huggingface_hub, which then deletes its temporary
file, so no partial file is left in the cache.
Resume: a dropped connection is retried by huggingface_hub with an HTTP Range request from
the last byte written. Files already complete are skipped on a second pull. A file cut off
by a crash of the whole process restarts from its first byte: huggingface_hub 2.4 writes to
a per-process ``<etag>.<random>.incomplete`` file that no later process reuses;
`remove_stale_partials` deletes those orphans.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download

from millm.hub.cache import CacheIndex, default_cache_dir, repo_storage
from millm.hub.remote import DownloadPlan, HubClient, translate_hub_error

logger = logging.getLogger(__name__)


class DownloadCancelled(Exception):
    """Raised inside a download when its cancel event is set."""


@dataclass
class Progress:
    """Where one pull stands. Mutated by the downloader; callers get copies."""

    repo_id: str
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    current_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


def snapshot_dir(cache_dir: Path, plan: DownloadPlan) -> Path:
    """The folder holding a finished pull (the SAE folder inside the snapshot for SAEs)."""
    base = repo_storage(cache_dir, plan.repo_id) / "snapshots" / plan.commit
    return base / plan.path if plan.path else base


class _ProgressBar:
    """The part of the tqdm interface huggingface_hub uses; forwards written-byte counts to `sink`.

    Subclassed per download (`_bar_class`) because huggingface_hub inspects the class: having
    `update_transfer` makes its Xet reporter use one bar for both network and written bytes,
    and only `update` (bytes written to the file) is counted, so nothing is counted twice.
    """

    sink: Callable[[int], None]

    def __init__(self, *_: Any, total: int | None = None, initial: int = 0, **__: Any) -> None:
        self.total = total
        self.n = initial

    def update(self, n: int | float = 1) -> None:
        self.n += int(n)
        type(self).sink(int(n))

    def update_transfer(self, n: int | float = 1) -> None:
        pass  # network bytes (Xet); written bytes arrive through `update`

    def close(self) -> None:
        pass

    def refresh(self, *_: Any, **__: Any) -> None:
        pass

    def set_description(self, *_: Any, **__: Any) -> None:
        pass

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def set_transfer_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _bar_class(sink: Callable[[int], None]) -> type[_ProgressBar]:
    return type("SinkProgressBar", (_ProgressBar,), {"sink": staticmethod(sink)})


def remove_stale_partials(cache_dir: Path, repo_id: str, *, older_than_s: float = 60.0) -> int:
    """Delete ``*.incomplete`` files of `repo_id` untouched for `older_than_s` (left by a crash)."""
    blobs = repo_storage(cache_dir, repo_id) / "blobs"
    removed = 0
    now = time.time()
    for path in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        try:
            if now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def write_ref(cache_dir: Path, plan: DownloadPlan) -> None:
    """Record that `plan.revision` (a branch or tag) points at `plan.commit`, as huggingface_hub does."""
    if plan.revision == plan.commit:
        return
    ref = repo_storage(cache_dir, plan.repo_id) / "refs" / plan.revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + ".tmp")
    tmp.write_text(plan.commit)
    tmp.replace(ref)


def download_plan(
    plan: DownloadPlan,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download every file of `plan`; returns the snapshot (or SAE) folder.

    Raises `DownloadCancelled` when `cancel` is set, else a `millm.errors.MillmError`.
    """
    cache = default_cache_dir(cache_dir)
    client_endpoint = HubClient(endpoint=endpoint).endpoint
    progress = Progress(repo_id=plan.repo_id, bytes_total=plan.total_bytes, files_total=len(plan.files))
    done_bytes = 0  # bytes of finished files, to re-base the counter after each file
    lock = threading.Lock()
    cancel = cancel or threading.Event()

    def emit() -> None:
        if on_progress is not None:
            on_progress(Progress(**progress.to_dict()))

    def sink(n: int) -> None:
        if cancel.is_set():
            raise DownloadCancelled(plan.repo_id)
        with lock:
            progress.bytes_done += n
        emit()

    bar = _bar_class(sink)
    emit()
    for remote in plan.files:
        if cancel.is_set():
            raise DownloadCancelled(plan.repo_id)
        progress.current_file = remote.name
        emit()
        try:
            hf_hub_download(
                plan.repo_id,
                remote.name,
                revision=plan.commit,
                cache_dir=cache,
                endpoint=client_endpoint,
                token=token,
                tqdm_class=bar,  # type: ignore[arg-type]  # duck-typed tqdm
            )
        except DownloadCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - every Hub failure is translated
            raise translate_hub_error(exc, repo_id=plan.repo_id, revision=plan.revision,
                                      endpoint=client_endpoint) from exc
        done_bytes += remote.size or 0
        with lock:
            progress.bytes_done = done_bytes
            progress.files_done += 1
        emit()
    write_ref(cache, plan)
    progress.current_file = None
    emit()
    return snapshot_dir(cache, plan)


def pull(
    kind: str,
    repo_id: str,
    revision: str | None = None,
    *,
    path: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    progress_cb: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    index: CacheIndex | None = None,
) -> Path:
    """Plan and download in the calling thread (the CLI's path; the server uses `JobManager`)."""
    client = HubClient(endpoint=endpoint, token=token)
    plan = client.plan("sae" if kind == "sae" else "model", repo_id, revision, path)
    folder = download_plan(
        plan, cache_dir=cache_dir, endpoint=client.endpoint, token=token, on_progress=progress_cb, cancel=cancel
    )
    if index is not None:
        index.record_pull(
            kind=plan.kind, repo_id=plan.repo_id, revision=plan.revision, commit=plan.commit, path=plan.path
        )
    return folder


def pull_model(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress_cb: ProgressCallback | None = None,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cancel: threading.Event | None = None,
    index: CacheIndex | None = None,
) -> Path:
    """Download a model's weights, config and tokenizer; returns its snapshot folder."""
    return pull(
        "model", repo_id, revision, cache_dir=cache_dir, endpoint=endpoint, token=token,
        progress_cb=progress_cb, cancel=cancel, index=index,
    )  # fmt: skip


def pull_sae(
    repo_id: str,
    path: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress_cb: ProgressCallback | None = None,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cancel: threading.Event | None = None,
    index: CacheIndex | None = None,
) -> Path:
    """Download one SAE folder (`path` inside the repo; None: the whole repo); returns that folder."""
    return pull(
        "sae", repo_id, revision, path=path, cache_dir=cache_dir, endpoint=endpoint, token=token,
        progress_cb=progress_cb, cancel=cancel, index=index,
    )  # fmt: skip
