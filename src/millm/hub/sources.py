"""Where a model or an SAE named by a client is on disk: the one source resolution for the server and the CLI.

A model argument (`find_model`, `resolve_model_source`) is a local folder (inside the allowed roots
unless trusted), the bundled demo model by its name `millm-demo`, or a Hub repo id: its complete
cached snapshot (config and every weight file), else, for a load, a pull into the cache.
`find_model` is the part without the network (`millm show`, `millm estimate` and
`/api/models/estimate` use it; an estimate then reads a repo that is not cached from the Hub's
headers instead of pulling it).

An SAE source (`resolve_sae_source`) is a local folder or file, the bundled demo SAE by its name
`millm-demo-sae`, or a Hub reference `owner/repo[:path/in/repo]`: the cached folder, else a pull of
only that folder. The result is a typed `SaeSource` recording where it came from.

The engine loads from the folders these return and never downloads. Folders are server-internal:
what reaches a client is the repo id, revision and folder inside the repo.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from millm import demo
from millm.errors import InvalidRequest, ModelNotFound, NotFound
from millm.hub.cache import CacheIndex, check_repo_id, check_revision, local_path
from millm.hub.files import select_weight_files
from millm.hub.local_paths import LocalRoots, looks_like_path

log = logging.getLogger(__name__)

Origin = Literal["local", "cache", "hub"]


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSource:
    folder: Path  # server-internal; never sent to clients
    repo_id: str | None  # set when the model came from the Hub cache
    origin: Origin  # "local", "cache" or "hub" (pulled just now)


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
    path: Path | None
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


# ---------------------------------------------------------------------------- SAEs


@dataclass(frozen=True)
class SaeSource:
    """Where an SAE was found: `folder` (a folder or a file; server-internal) and the reference a client sees."""

    folder: Path
    repo_id: str | None = None  # a Hub repo (cached or pulled)
    path: str | None = None  # the folder inside the repo, or a local folder's name
    revision: str | None = None
    fixed_id: str | None = None  # the id it is always known by (the bundled demo SAE)

    @property
    def default_id(self) -> str:
        """The id it is attached under unless the client names one: `repo:path`, the repo, or the folder's name."""
        if self.fixed_id:
            return self.fixed_id
        if self.repo_id and self.path:
            return f"{self.repo_id}:{self.path}"
        return self.repo_id or self.folder.name


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def resolve_sae_source(source: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                       index: CacheIndex | None = None, roots: LocalRoots | None = None) -> SaeSource:
    """A local path (inside `roots` when given), the demo SAE, or a Hub reference `owner/repo[:path]` from the
    cache, else pulled (only that folder). Errors name `source`. Blocking."""
    if not source.strip():
        raise InvalidRequest("source is empty: give a local folder or file, or a Hub reference "
                             "'owner/repo[:path]'", param="source")
    if source == demo.DEMO_SAE_ID:
        return SaeSource(demo.assets_dir() / "sae", path="sae", fixed_id=demo.DEMO_SAE_ID)
    if looks_like_path(source):
        local = roots.resolve(source, param="source") if roots is not None else user_path(source, param="source")
        if not _exists(local):
            raise NotFound(f"SAE path {source!r} does not exist", param="source")
        return SaeSource(local, path=local.name)
    bare = roots.existing_dir(source) if roots is not None else user_path(source, param="source")
    if bare is not None and _exists(bare):
        return SaeSource(bare, path=bare.name)
    repo_id, _, sub = source.partition(":")
    if repo_id.count("/") != 1:
        raise InvalidRequest(f"SAE source {source!r} is neither a local path nor a Hub reference "
                             "'owner/repo[:path]'", param="source")
    check_repo_id(repo_id, param="source")
    check_revision(revision)
    sub = sub.strip("/")
    if ".." in sub.split("/") or "\\" in sub or "\x00" in sub:
        raise InvalidRequest(f"the path inside the repo ({sub!r}) may not contain '..' or backslashes",
                             param="source", code="invalid_path")
    try:
        folder = local_path(repo_id, revision, path=sub, cache_dir=cache_dir)
    except NotFound:
        from millm.hub.download import pull_sae
        from millm.hub.remote import resolve_endpoint

        folder = pull_sae(repo_id, sub or None, revision, cache_dir, endpoint=resolve_endpoint(), index=index)
    if index is not None:
        index.mark_used(repo_id)
    return SaeSource(folder, repo_id=repo_id, path=sub or None, revision=revision)
