"""Talking to the Hub: endpoint and token resolution, download plans, error translation.

Every huggingface_hub call in `millm.hub` gets an explicit ``endpoint=`` from
`resolve_endpoint`, because huggingface_hub 2.4 reads ``HF_ENDPOINT`` only once, at
import (`huggingface_hub.constants.ENDPOINT`). Hub failures become `millm.errors`
types through `translate_hub_error`: 401 -> Unauthorized, 403/gated -> Forbidden,
missing repo/revision/file -> NotFound, anything else (network, 5xx) -> DownloadError.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from millm.errors import DownloadError, Forbidden, MillmError, NotFound, Unauthorized
from millm.hub.files import normalize_sae_path, select_model_files, select_sae_files

Kind = Literal["model", "sae"]
logger = logging.getLogger(__name__)


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL to use: the argument, else HF_ENDPOINT as it is now, else the library default."""
    value = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return value.rstrip("/")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None


@dataclass(frozen=True)
class DownloadPlan:
    """What one pull fetches: a repo pinned to one commit, and the files wanted from it."""

    kind: Kind
    repo_id: str
    revision: str  # as asked (branch, tag or commit)
    commit: str  # the commit the revision resolved to
    path: str  # SAE folder inside the repo; '' for models and whole-repo SAEs
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


OFFLINE_ADVICE = ("Check the network connection; set HF_ENDPOINT to use a Hub mirror; set HF_HUB_OFFLINE=1 to use "
                  "models already in the cache; or give a local folder instead.")


_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                   errno.ENETDOWN, errno.ETIMEDOUT, errno.EHOSTDOWN}


def _unreachable(exc: BaseException) -> bool:
    """A failure to talk to the Hub at all (DNS, refused, timeout, TLS), as opposed to an answer from it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return True
        if isinstance(seen, socket.gaierror) or (isinstance(seen, OSError) and seen.errno in _NETWORK_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def translate_hub_error(exc: BaseException, *, repo_id: str, revision: str | None = None,
                        endpoint: str | None = None) -> MillmError:
    """Map a huggingface_hub / httpx2 failure onto the project's typed errors.

    Network failures name the endpoint tried and what to do about it (`OFFLINE_ADVICE`)."""
    if isinstance(exc, MillmError):
        return exc
    where = resolve_endpoint(endpoint)
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(
            f"'{repo_id}' is not in the cache and HF_HUB_OFFLINE is set, so the Hub ({where}) was not asked. "
            "Unset HF_HUB_OFFLINE to download it, or give a local folder instead.", code="hub_offline")
    if _unreachable(exc):
        reason = str(exc).strip() or type(exc).__name__
        return DownloadError(f"Could not reach the Hugging Face Hub at {where} for '{repo_id}' ({reason}). "
                             + OFFLINE_ADVICE)
    rev = revision or "main"
    status = None
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
    if isinstance(exc, GatedRepoError) or status == 403:
        return Forbidden(
            f"Access to '{repo_id}' is restricted (gated or forbidden). Accept its terms on the Hub and "
            "use a token (HF_TOKEN) that has been granted access.",
            param="repo_id",
            code="hub_forbidden",
        )
    if status == 401:
        return Unauthorized(
            f"The Hub refused access to '{repo_id}' (401). It is private, gated or does not exist; "
            "set HF_TOKEN to a token that can read it.",
            param="repo_id",
            code="hub_unauthorized",
        )
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"Revision '{rev}' not found in '{repo_id}'.", param="revision", code="revision_not_found")
    if isinstance(exc, RepositoryNotFoundError) or status == 404 and not isinstance(exc, EntryNotFoundError):
        return NotFound(f"Repository '{repo_id}' not found on the Hub.", param="repo_id", code="repo_not_found")
    if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        return NotFound(f"A file is missing from '{repo_id}'@{rev}: {exc}", param="repo_id", code="file_not_found")
    if status is not None:
        return DownloadError(f"The Hugging Face Hub at {where} answered {status} for '{repo_id}': {exc}")
    if isinstance(exc, (httpx2.HTTPError, LocalEntryNotFoundError, OSError)):
        return DownloadError(f"Download from '{repo_id}' ({where}) failed: {exc}")
    return DownloadError(f"Download from '{repo_id}' ({where}) failed: {type(exc).__name__}: {exc}")


class HubClient:
    """A thin, endpoint-explicit wrapper over `HfApi` for the calls millm makes."""

    def __init__(self, *, endpoint: str | None = None, token: str | bool | None = None) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        self.token = token  # None: huggingface_hub looks up HF_TOKEN, then the saved login
        self.api = HfApi(endpoint=self.endpoint, token=self.token)

    def plan(self, kind: Kind, repo_id: str, revision: str | None = None, path: str | None = None) -> DownloadPlan:
        """Resolve `revision` to a commit and choose the files to fetch (sizes from the Hub)."""
        rev = revision or constants.DEFAULT_REVISION
        try:
            info = self.api.model_info(repo_id, revision=rev, files_metadata=True, token=self.token)
        except Exception as exc:  # noqa: BLE001 - every Hub failure is translated
            raise translate_hub_error(exc, repo_id=repo_id, revision=rev, endpoint=self.endpoint) from exc
        sizes = {s.rfilename: s.size for s in info.siblings or []}
        if kind == "model":
            names = select_model_files(sizes)
            folder = ""
        else:
            folder = normalize_sae_path(path)
            names = select_sae_files(sizes, folder)
        if not info.sha:
            raise DownloadError(f"The Hub did not report a commit for '{repo_id}'@{rev}.")
        return DownloadPlan(
            kind=kind,
            repo_id=repo_id,
            revision=rev,
            commit=info.sha,
            path=folder,
            files=tuple(RemoteFile(n, sizes[n]) for n in names),
        )

    def repo_files(self, repo_id: str, revision: str | None = None) -> tuple[str, dict[str, int | None]]:
        """(commit, {path in the repo: size}) of a repo at a revision. Hub failures are translated."""
        rev = revision or constants.DEFAULT_REVISION
        try:
            info = self.api.model_info(repo_id, revision=rev, files_metadata=True, token=self.token)
        except Exception as exc:  # noqa: BLE001 - every Hub failure is translated
            raise translate_hub_error(exc, repo_id=repo_id, revision=rev, endpoint=self.endpoint) from exc
        if not info.sha:
            raise DownloadError(f"The Hub did not report a commit for '{repo_id}'@{rev}.")
        return info.sha, {s.rfilename: s.size for s in info.siblings or []}

    def read_json(self, repo_id: str, commit: str, filename: str, *, scratch: str) -> dict[str, Any] | None:
        """A small JSON file of the repo, fetched into `scratch` (not the Hub cache); None if it cannot be read
        or is not a JSON object (a listing goes on without it)."""
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(repo_id, filename, revision=commit, cache_dir=scratch, endpoint=self.endpoint,
                                   token=self.token)
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except Exception as exc:  # noqa: BLE001 - a missing or broken config only leaves fields empty
            logger.debug("cannot read %s from %s@%s: %s", filename, repo_id, commit, exc)
            return None
        return data if isinstance(data, dict) else None
