"""Attaching and detaching SAEs at runtime.

An SAE source is a local folder or file, or a Hub reference `repo_id[:path]` (downloaded to
the cache first, only the chosen folder), resolved by `millm.hub.sources.resolve_sae_source`. Loading and validation happen off the worker thread;
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

from millm.engine.attachments import SwapOutcome
from millm.engine.hookpoints import HookPoint
from millm.engine.worker import Worker
from millm.errors import InvalidRequest, SaeError
from millm.hub.cache import CacheIndex
from millm.hub.local_paths import LocalRoots
from millm.hub.sources import SaeSource, resolve_sae_source
from millm.protocol.admin import FeatureLabel, FeatureLabelsOut
from millm.sae.base import Sae
from millm.sae.loading import load_sae
from millm.services.labels import Format, ParsedLabels, check_width, parse_labels, shipped_labels
from millm.services.monitoring import MonitorService
from millm.services.steering import SaeInfo
from millm.store import labels as label_store

log = logging.getLogger(__name__)


@dataclass
class AttachedSae:
    sae_id: str
    sae: Sae
    hookpoint: HookPoint
    source: SaeSource
    labels: dict[int, dict[str, Any]]  # shipped with the SAE, overlaid by imported ones
    shipped_labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    imported_labels: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def hook_name(self) -> str:
        return self.sae.cfg.hook_name or self.hookpoint.spec.tl_name

    @property
    def numel(self) -> int:
        """Values in the SAE's tensors (what a memory estimate counts for it)."""
        return sum(t.numel() for t in (*self.sae.parameters(), *self.sae.buffers()))


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
            src = await asyncio.to_thread(resolve_sae_source, source, revision=revision, cache_dir=self.cache_dir,
                                          index=self.index, roots=None if trusted else self.roots)
            path = src.folder
            sae = await asyncio.to_thread(load_sae, path, hint={**(hint or {}), **(
                {"repo_id": src.repo_id, "subpath": src.path} if src.repo_id else {})})
            ident = sae_id or src.default_id
            shipped = await asyncio.to_thread(shipped_labels, path if path.is_dir() else path.parent, sae.cfg.d_sae)
            imported = await asyncio.to_thread(self._stored_labels, ident, sae.cfg.d_sae)
            labels = {**shipped, **imported}

            att = await asyncio.wrap_future(self.worker.attach_sae(sae, layer=layer))
            self.attached = AttachedSae(ident, att.sae, att.hookpoint, src, labels, shipped, imported)
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

    def search_labels(self, q: str | None = None, limit: int | None = None) -> FeatureLabelsOut:
        """The attached SAE's labels by index; `q` keeps the feature whose index it is first, then those whose label
        contains it (case-insensitive); `limit` caps how many come back (`count` is how many matched)."""
        att = self.attached
        labels = att.labels if att else {}
        imported = att.imported_labels if att else {}
        data = [FeatureLabel(index=i, label=str(v.get("label", "")), score=v.get("score"),
                             source="imported" if i in imported else "sae")
                for i, v in sorted(labels.items())]
        needle = (q or "").strip().casefold()
        if needle:
            data = ([f for f in data if str(f.index) == needle]
                    + [f for f in data if needle in f.label.casefold() and str(f.index) != needle])
        return FeatureLabelsOut(data=data[:limit] if limit else data, count=len(data))

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
