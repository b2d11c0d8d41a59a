"""The local cache of models and SAEs: listing, deleting, and a small index of our own.

Files live in the standard Hugging Face cache (`scan_cache_dir` reads it). SAE repos are
model-type repos too, so each repo is tagged: by the `CacheIndex` when millm pulled it,
else by its files (SAELens ``cfg.json`` + ``sae_weights.safetensors``, or Gemma Scope
``params.npz``). The index (``<data_dir>/hub/index.json``) also records the last time a
repo was loaded (`mark_used`) and which SAE folders were pulled.

Everything returned here names repos by id, revision and relative path inside the repo;
never an absolute path of the server's filesystem (see `CachedRepo.to_dict`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import constants, scan_cache_dir
from huggingface_hub.errors import CacheNotFound, HFValidationError
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

from millm.errors import InvalidRequest, NotFound
from millm.hub.files import SAE_MARKERS, looks_like_sae


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder to use: the argument, else huggingface_hub's default (HF_HUB_CACHE)."""
    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().resolve()


def check_repo_id(repo_id: str, *, param: str) -> None:
    """Raise InvalidRequest (naming `param`) unless repo_id is a valid Hub repo id ('name' or 'namespace/name')."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise InvalidRequest(f"'{repo_id}' is not a Hub repo id (namespace/name): {e}", param=param,
                             code="invalid_repo_id") from None


def check_revision(revision: str | None, *, param: str = "revision") -> None:
    """Raise InvalidRequest unless revision (None or "": main) could name a Hub branch, tag or commit: git's ref rules
    refuse '..', a leading or trailing '/', '//', spaces, control characters and ~^:?*[\\ (the cache keeps refs as
    files under refs/, so a revision must not be able to leave that folder)."""
    if not revision:  # None or "": main
        return
    bad = (".." in revision or revision.startswith("/") or revision.endswith(("/", ".lock"))
           or "//" in revision or "@{" in revision
           or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 or ch in "~^:?*[\\" for ch in revision))
    if bad:
        raise InvalidRequest(f"{revision!r} is not a branch, tag or commit name", param=param,
                             code="invalid_revision")


def repo_storage(cache_dir: Path, repo_id: str) -> Path:
    """``<cache>/models--org--name``: where huggingface_hub keeps one repo."""
    return cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")


# ---------------------------------------------------------------------------- index
class CacheIndex:
    """``<data_dir>/hub/index.json``: kind, SAE folders and last use per repo id.

    Thread-safe within a process; writes are atomic (temp file + rename), last writer wins
    between processes, which at worst loses a last-use time.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / "hub" / "index.json"
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"index.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)

    def get(self, repo_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._read().get(repo_id, {}))

    def all(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._read()

    def record_pull(self, *, kind: str, repo_id: str, revision: str, commit: str, path: str = "") -> None:
        with self._lock:
            data = self._read()
            entry = data.setdefault(repo_id, {})
            entry["kind"] = "sae" if kind == "sae" or entry.get("kind") == "sae" else "model"
            entry.setdefault("pulled", {})[f"{revision}:{path}"] = {"commit": commit, "at": time.time()}
            if kind == "sae":
                paths = set(entry.get("sae_paths", []))
                paths.add(path)
                entry["sae_paths"] = sorted(paths)
            self._write(data)

    def mark_used(self, repo_id: str, when: float | None = None) -> None:
        """Call when a model or SAE is loaded, for 'last used' in listings."""
        with self._lock:
            data = self._read()
            data.setdefault(repo_id, {})["last_used"] = when if when is not None else time.time()
            self._write(data)

    def forget(self, repo_id: str) -> None:
        with self._lock:
            data = self._read()
            if data.pop(repo_id, None) is not None:
                self._write(data)


# ---------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class CachedRevision:
    commit: str
    refs: tuple[str, ...]  # branch or tag names pointing here
    size_bytes: int
    files: tuple[str, ...]  # paths inside the repo

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "refs": list(self.refs), "size_bytes": self.size_bytes, "files": len(self.files)}


@dataclass(frozen=True)
class CachedRepo:
    repo_id: str
    kind: str  # "model" or "sae"
    size_bytes: int
    nb_files: int
    revisions: tuple[CachedRevision, ...]
    last_modified: float
    last_used: float | None  # from the index; else the newest blob access time
    sae_paths: tuple[str, ...] = field(default=())  # SAE folders present (''= repo root)

    @property
    def name(self) -> str:
        return self.repo_id.rsplit("/", 1)[-1]

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(sorted(r for rev in self.revisions for r in rev.refs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "name": self.name,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "nb_files": self.nb_files,
            "refs": list(self.refs),
            "revisions": [r.to_dict() for r in self.revisions],
            "last_modified": self.last_modified,
            "last_used": self.last_used,
            "sae_paths": list(self.sae_paths),
        }


def _sae_folders(files: set[str]) -> tuple[str, ...]:
    folders = {f.rsplit("/", 1)[0] if "/" in f else "" for f in files if f.rsplit("/", 1)[-1] in SAE_MARKERS}
    return tuple(sorted(folders))


def list_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    index: CacheIndex | None = None,
    kind: str | None = None,
) -> list[CachedRepo]:
    """Every cached model-type repo, tagged model or sae, sorted by repo id."""
    try:
        info = scan_cache_dir(default_cache_dir(cache_dir))
    except CacheNotFound:
        return []
    tags = index.all() if index is not None else {}
    repos: list[CachedRepo] = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = []
        all_files: set[str] = set()
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            files = tuple(sorted(f.file_path.relative_to(rev.snapshot_path).as_posix() for f in rev.files))
            all_files.update(files)
            revisions.append(CachedRevision(rev.commit_hash, tuple(sorted(rev.refs)), rev.size_on_disk, files))
        entry = tags.get(repo.repo_id, {})
        repo_kind = entry.get("kind") or ("sae" if looks_like_sae(all_files) else "model")
        if kind is not None and repo_kind != kind:
            continue
        repos.append(
            CachedRepo(
                repo_id=repo.repo_id,
                kind=repo_kind,
                size_bytes=repo.size_on_disk,
                nb_files=repo.nb_files,
                revisions=tuple(revisions),
                last_modified=repo.last_modified,
                last_used=entry.get("last_used", repo.last_accessed),
                sae_paths=_sae_folders(all_files) if repo_kind == "sae" else (),
            )
        )
    return sorted(repos, key=lambda r: r.repo_id)


def get_cached(
    repo_id: str, cache_dir: str | os.PathLike[str] | None = None, *, index: CacheIndex | None = None
) -> CachedRepo:
    for repo in list_cache(cache_dir, index=index):
        if repo.repo_id == repo_id:
            return repo
    raise NotFound(f"'{repo_id}' is not in the cache.", param="repo_id", code="not_cached")


def delete_cached(
    repo_id: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    index: CacheIndex | None = None,
) -> int:
    """Delete a cached repo (or one revision: a commit or a ref name); returns the bytes freed."""
    cache = default_cache_dir(cache_dir)
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        info = None
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None) if info else None
    if repo is None:
        raise NotFound(f"'{repo_id}' is not in the cache.", param="repo_id", code="not_cached")
    if revision is None:
        commits = [r.commit_hash for r in repo.revisions]
    else:
        commits = [r.commit_hash for r in repo.revisions if r.commit_hash == revision or revision in r.refs]
        if not commits:
            raise NotFound(f"Revision '{revision}' of '{repo_id}' is not in the cache.", param="revision")
    strategy = info.delete_revisions(*commits)  # type: ignore[union-attr]
    strategy.execute()
    if revision is None or len(commits) == len(repo.revisions):
        storage = repo_storage(cache, repo_id)
        if storage.exists():  # snapshots-less leftovers (.no_exist, partial blobs)
            shutil.rmtree(storage, ignore_errors=True)
        if index is not None:
            index.forget(repo_id)
    return strategy.expected_freed_size


def local_path(
    repo_id: str,
    revision: str | None = None,
    *,
    path: str = "",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The snapshot folder (or SAE folder inside it) of a cached revision, for loaders.

    `revision` may be a commit or a ref; None means 'main'. Server-internal: never put
    the result in an API response.
    """
    storage = repo_storage(default_cache_dir(cache_dir), repo_id)
    rev = revision or constants.DEFAULT_REVISION
    commit = rev
    ref = storage / "refs" / rev
    if ref.is_file():
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit
    if not snapshot.is_dir():
        raise NotFound(f"'{repo_id}'@{rev} is not in the cache; pull it first.", param="repo_id", code="not_cached")
    folder = snapshot / path if path else snapshot
    if not folder.exists():
        raise NotFound(f"'{path}' is not in the cached '{repo_id}'@{rev}.", param="path", code="not_cached")
    return folder
