"""The SAEs attached to the loaded model, keyed by hook point (worker-thread state, engine-private).

Attaching resolves the SAE's hook point in the live model (optionally at another layer), checks that the SAE
reads tensors of the hooked width, casts it to the residual stream's device and dtype, and installs one
`SaeIntervention` hook there. Detaching removes the hook, which restores the model's outputs exactly. After a
model swap every attachment is moved to the new model at the same layer, or dropped with the reason.

Attachments are keyed by hook point (the hooked module's path), so several SAEs at different layers fit this
shape (the PRD's multi-SAE steering, FR-2.6); for now `MAX_ATTACHMENTS` is 1 and attaching replaces the
attached SAE, because a request's steering names features of one SAE. Lifting it means giving steering specs
and batch plans an attachment key; nothing here changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from millm.engine import hookpoints
from millm.engine.hookpoints import HookPoint
from millm.engine.intervention import CompiledSteering, MonitorConfig, SaeIntervention
from millm.engine.model_loading import LoadedModel
from millm.engine.types import SteeringSpec
from millm.errors import InvalidRequest, SaeError
from millm.sae.base import Sae
from millm.sae.loading import check_compatible

log = logging.getLogger(__name__)

MAX_ATTACHMENTS = 1


@dataclass(frozen=True)
class Attachment:
    """An attached SAE as the engine holds it: `sae` is on the model's device and in its dtype."""

    key: str  # the hook point's module path: one SAE per hook point
    sae: Sae
    hookpoint: HookPoint

    @property
    def layer(self) -> int:
        return self.hookpoint.layer


@dataclass(frozen=True)
class SwapOutcome:
    """A model swap: the model now loaded, the attachments moved to it, and those dropped (key, why)."""

    model: LoadedModel | None
    attachments: tuple[Attachment, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()


class Attachments:
    def __init__(self) -> None:
        self._by_key: dict[str, tuple[Attachment, SaeIntervention]] = {}
        self.monitor = MonitorConfig()

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def intervention(self) -> SaeIntervention | None:
        """The one intervention (None when no SAE is attached)."""
        return next(iter(self._by_key.values()))[1] if self._by_key else None

    def list(self) -> tuple[Attachment, ...]:
        return tuple(a for a, _ in self._by_key.values())

    def attach(self, lm: LoadedModel | None, sae: Sae, *, layer: int | None = None) -> Attachment:
        """Attach `sae` to `lm` (replacing the attached SAE; see MAX_ATTACHMENTS). SaeError when it does not fit."""
        if lm is None:
            raise InvalidRequest("load a model before attaching an SAE", param="source")
        hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name, layer_override=layer)
        check_compatible(sae, hp.d_hook, hook_name=hp.module_path, model_name=lm.model_id)
        if len(self._by_key) >= MAX_ATTACHMENTS:
            self.detach()
        return self._install(lm, sae, hp)

    def _install(self, lm: LoadedModel, sae: Sae, hp: HookPoint) -> Attachment:
        moved = sae.to(device=lm.device, dtype=lm.dtype)
        iv = SaeIntervention(sae=moved, hookpoint=hp, attach_fn=hookpoints.attach, device=lm.device, dtype=lm.dtype)
        iv.set_monitor(self.monitor)
        att = Attachment(hp.module_path, moved, hp)
        self._by_key[att.key] = (att, iv)
        return att

    def install(self, iv: SaeIntervention | None) -> None:
        """Put a hand-built intervention in place of every attachment (engine tests and benchmarks)."""
        self.detach()
        if iv is not None:
            iv.set_monitor(self.monitor)
            att = Attachment(iv.hookpoint.module_path, iv.sae, iv.hookpoint)
            self._by_key[att.key] = (att, iv)

    def detach(self, key: str | None = None) -> tuple[Attachment, ...]:
        """Remove the attachment at `key` (every one when None); returns what was removed."""
        keys = list(self._by_key) if key is None else [key] if key in self._by_key else []
        removed = []
        for k in keys:
            att, iv = self._by_key.pop(k)
            iv.detach()
            removed.append(att)
        return tuple(removed)

    def move_to(self, lm: LoadedModel | None) -> tuple[tuple[Attachment, ...], tuple[tuple[str, str], ...]]:
        """After a model swap: each attachment re-resolved at its layer in `lm` (the hooks on the old model
        removed), or dropped with the reason when it does not fit."""
        old = self.detach()
        if lm is None:
            return (), tuple((a.key, "the model was unloaded") for a in old)
        kept, dropped = [], []
        for a in old:
            try:
                hp = hookpoints.resolve_hookpoint(lm.model, a.sae.cfg.hook_name, layer_override=a.hookpoint.layer)
                check_compatible(a.sae, hp.d_hook, hook_name=hp.module_path)
            except SaeError as e:
                dropped.append((a.key, e.message))
                continue
            kept.append(self._install(lm, a.sae, hp))
        return tuple(kept), tuple(dropped)

    def set_monitor(self, config: MonitorConfig) -> None:
        self.monitor = config
        for _, iv in self._by_key.values():
            iv.set_monitor(config)

    def compile(self, spec: SteeringSpec | None) -> CompiledSteering | None:
        """The one place steering is compiled: None for no steering (or an empty spec, or no SAE to steer)."""
        iv = self.intervention
        if iv is None or spec is None or spec.empty:
            return None
        return iv.compile(spec)
