"""Attaching and detaching SAEs at runtime.

An SAE source is a local folder or file, or a Hub reference `repo_id[:path]` (downloaded to
the cache first, only the chosen folder). Loading and validation happen off the worker thread;
the engine's `attach_sae` then resolves the hook point in the live model, checks d_in, casts the SAE
to the residual stream's device and dtype and installs the hook, between decode steps, so no sequence
sees half an SAE (`engine/attachments.py`). Detaching removes the hook, which restores the model's
outputs exactly. One SAE is attached at a time; this service keeps its record (`AttachedSae`: id,
source, labels) beside the engine's attachment.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from millm import demo
from millm.engine.attachments import SwapOutcome
from millm.engine.hookpoints import HookPoint
from millm.engine.worker import Worker
from millm.hub.cache import CacheIndex, check_repo_id, check_revision, local_path
from millm.hub.download import pull_sae
from millm.hub.remote import resolve_endpoint
from millm.errors import InvalidRequest, NotFound, SaeError
from millm.sae.base import Sae
from millm.sae.loading import load_sae
from millm.services.hub import user_path
from millm.services.local_paths import LocalRoots, looks_like_path
from millm.services.labels import Format, ParsedLabels, check_width, parse_labels, shipped_labels
from millm.services.monitoring import MonitorService
from millm.store import labels as label_store
from millm.services.steering import SaeInfo

log = logging.getLogger(__name__)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


@dataclass
class AttachedSae:
    sae_id: str
    sae: Sae
    hookpoint: HookPoint
    source: dict[str, Any]
    labels: dict[int, dict[str, Any]]  # shipped with the SAE, overlaid by imported ones
    shipped_labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    imported_labels: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def hook_name(self) -> str:
        return self.sae.cfg.hook_name or self.hookpoint.spec.tl_name


def _label_texts(labels: dict[int, dict[str, Any]]) -> dict[int, str]:
    return {i: str(v.get("label")) for i, v in labels.items() if v.get("label")}


class SaeService:
    def __init__(self, *, worker: Worker, monitor: MonitorService, cache_dir: Path | None = None,
                 index: CacheIndex | None = None, roots: LocalRoots | None = None,
                 sessions: sessionmaker[Session] | None = None) -> None:
        self.worker = worker
        self.sessions = sessions  # the profile store, where imported feature labels are kept
        self.roots = roots
        self.index = index
        self.monitor = monitor
        self.cache_dir = cache_dir
        self.attached: AttachedSae | None = None
        self._lock = asyncio.Lock()

    def info(self) -> SaeInfo | None:
        a, lm = self.attached, self.worker.loaded
        if a is None or lm is None:
            return None
        return SaeInfo(sae_id=a.sae_id, d_sae=a.sae.cfg.d_sae, hook_name=a.hook_name, model_id=lm.model_id,
                       layer=a.hookpoint.layer, architecture=a.sae.cfg.architecture)

    def resolve_source(self, source: str, *, revision: str | None = None,
                       trusted: bool = False) -> tuple[Path, dict[str, Any]]:
        """A local path (inside `roots` unless `trusted`: the server's own settings) or a Hub reference, as a
        folder or file on disk and the reference recorded for it."""
        if not source.strip():
            raise InvalidRequest("source is empty: give a local folder or file, or a Hub reference "
                                 "'owner/repo[:path]'", param="source")
        if source == demo.DEMO_SAE_ID:
            return demo.assets_dir() / "sae", {"path": "sae", "id": demo.DEMO_SAE_ID}
        if looks_like_path(source):
            local = (self.roots.resolve(source, param="source") if self.roots is not None and not trusted
                     else user_path(source, param="source"))
            if not _exists(local):
                raise NotFound(f"SAE path {source!r} does not exist", param="source")
            return local, {"path": local.name}
        bare = (self.roots.existing_dir(source) if self.roots is not None and not trusted
                else user_path(source, param="source"))
        if bare is not None and _exists(bare):
            return bare, {"path": bare.name}
        repo_id, _, sub = source.partition(":")
        if repo_id.count("/") != 1:
            raise InvalidRequest(
                f"SAE source {source!r} is neither a local path nor a Hub reference 'owner/repo[:path]'",
                param="source",
            )
        check_repo_id(repo_id, param="source")
        check_revision(revision)
        sub = sub.strip("/")
        if ".." in sub.split("/") or "\\" in sub or "\x00" in sub:
            raise InvalidRequest(f"the path inside the repo ({sub!r}) may not contain '..' or backslashes",
                                 param="source", code="invalid_path")
        try:
            folder = local_path(repo_id, revision, path=sub, cache_dir=self.cache_dir)
        except NotFound:
            folder = pull_sae(repo_id, sub or None, revision, self.cache_dir, endpoint=resolve_endpoint(),
                              index=self.index)
        if self.index is not None:
            self.index.mark_used(repo_id)
        return folder, {"repo_id": repo_id, "path": sub or None, "revision": revision}

    async def attach(self, source: str, *, sae_id: str | None = None, layer: int | None = None,
                     revision: str | None = None, hint: dict[str, Any] | None = None,
                     trusted: bool = False) -> AttachedSae:
        """Load the SAE and attach it in place of the current one. An SAE that cannot be read or does not fit the
        model is a SaeError naming `source` (or `layer` / `format`, when the override is the cause)."""
        try:
            return await self._attach(source, sae_id=sae_id, layer=layer, revision=revision, hint=hint,
                                      trusted=trusted)
        except SaeError as e:
            e.param = e.param or "source"
            raise

    async def _attach(self, source: str, *, sae_id: str | None, layer: int | None, revision: str | None,
                      hint: dict[str, Any] | None, trusted: bool) -> AttachedSae:
        async with self._lock:
            path, ref = await asyncio.to_thread(self.resolve_source, source, revision=revision, trusted=trusted)
            sae = await asyncio.to_thread(load_sae, path, hint={**(hint or {}), **(
                {"repo_id": ref["repo_id"], "subpath": ref.get("path")} if "repo_id" in ref else {})})
            ident = sae_id or ref.get("id") or (
                f"{ref['repo_id']}:{ref['path']}" if ref.get("repo_id") and ref.get("path")
                else ref.get("repo_id") or path.name)
            shipped = await asyncio.to_thread(shipped_labels, path if path.is_dir() else path.parent, sae.cfg.d_sae)
            imported = await asyncio.to_thread(self._stored_labels, ident, sae.cfg.d_sae)
            labels = {**shipped, **imported}

            att = await asyncio.wrap_future(self.worker.attach_sae(sae, layer=layer))
            self.attached = AttachedSae(ident, att.sae, att.hookpoint, ref, labels, shipped, imported)
            self.monitor.labels = _label_texts(labels)
            log.info("attached SAE %s at %s", ident, self.attached.hookpoint.module_path)
            return self.attached

    async def detach(self) -> AttachedSae | None:
        async with self._lock:
            previous = self.attached

            await asyncio.wrap_future(self.worker.detach_sae())
            self.attached = None
            self.monitor.labels = {}
            return previous

    def after_model_swap(self, outcome: SwapOutcome) -> str | None:
        """After the engine swapped the model: follow the SAE it moved to the new model, or forget the one it
        dropped. Returns a message when the SAE had to be detached."""
        a = self.attached
        if a is None:
            return None
        moved = next((m for m in outcome.attachments if m.key == a.hookpoint.module_path), None)
        if moved is None:
            self.attached = None
            self.monitor.labels = {}
            why = next((reason for key, reason in outcome.dropped if key == a.hookpoint.module_path), "it was dropped")
            model = outcome.model.model_id if outcome.model is not None else "no model"
            return f"SAE {a.sae_id!r} was detached: it does not fit {model!r} ({why})"
        self.attached = AttachedSae(a.sae_id, moved.sae, moved.hookpoint, a.source, a.labels, a.shipped_labels,
                                    a.imported_labels)
        return None

    # ------------------------------------------------------------------ feature labels

    def _stored_labels(self, sae_id: str, d_sae: int) -> dict[int, dict[str, Any]]:
        if self.sessions is None:
            return {}
        with self.sessions.begin() as session:
            return label_store.get_labels(session=session, sae_id=sae_id, d_sae=d_sae)

    async def import_labels(self, raw: bytes, *, filename: str | None = None, fmt: Format | None = None,
                            replace: bool = False, param: str = "file") -> tuple[ParsedLabels, AttachedSae]:
        """Read labels for the attached SAE, keep them in the store (merged into the ones imported before, or
        replacing them) and show them everywhere labels appear. Labels for another SAE are a 400."""
        async with self._lock:
            att = self.attached
            if att is None:
                raise InvalidRequest("no SAE is attached: attach one before importing its labels", param=param,
                                     code="no_sae")
            parsed = await asyncio.to_thread(parse_labels, raw, filename=filename, fmt=fmt, param=param)
            check_width(parsed, att.sae.cfg.d_sae, att.sae_id, param=param)
            if not parsed.labels:
                raise InvalidRequest("the file holds no labels", param=param, code="invalid_labels")
            imported = dict(parsed.labels) if replace else {**att.imported_labels, **parsed.labels}
            await asyncio.to_thread(self._save_labels, att.sae_id, att.sae.cfg.d_sae, imported, parsed.format)
            self._set_labels(att, imported)
            return parsed, att

    async def clear_imported_labels(self) -> AttachedSae | None:
        async with self._lock:
            att = self.attached
            if att is None:
                return None
            await asyncio.to_thread(self._save_labels, att.sae_id, att.sae.cfg.d_sae, {}, "")
            self._set_labels(att, {})
            return att

    def _save_labels(self, sae_id: str, d_sae: int, labels: dict[int, dict[str, Any]], source: str) -> None:
        if self.sessions is None:
            return
        with self.sessions.begin() as session:
            label_store.put_labels(session=session, sae_id=sae_id, d_sae=d_sae, labels=labels, source=source)

    def _set_labels(self, att: AttachedSae, imported: dict[int, dict[str, Any]]) -> None:
        att.imported_labels = imported
        att.labels = {**att.shipped_labels, **imported}
        if self.attached is att:
            self.monitor.labels = _label_texts(att.labels)

    def apply_monitor_config(self, cfg: Any) -> None:
        """Called by MonitorService when the config changes; validated against the attached SAE."""
        a = self.attached
        if cfg.features and a is not None:
            bad = [(n, i) for n, i in enumerate(cfg.features) if not 0 <= i < a.sae.cfg.d_sae]
            if bad:
                raise InvalidRequest(f"feature {bad[0][1]} is out of range for d_sae={a.sae.cfg.d_sae}",
                                     param=f"features[{bad[0][0]}]")
        self.worker.set_monitor(cfg)
