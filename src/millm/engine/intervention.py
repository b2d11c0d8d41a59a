"""The SAE intervention at one hook point: per-row steering and monitoring for a batch.

One forward hook is installed when an SAE is attached and removed on detach, which
restores the model exactly. Before each forward pass the worker hands in a `BatchPlan`
saying, row by row, which compiled steering applies and whether to capture activations.
The hook itself does tensor work only (no host-device sync):
- additive steering: one precomputed vector per distinct steering, gathered into a (B, D)
  matrix when the batch changes, so the per-token cost is one add;
- clamping: only the clamped features' encoder columns are computed (`Sae.clamped`; a topk SAE needs the
  whole encoder product, then only its k-th largest value), from decoder rows gathered at compile time;
  rows that share one clamp are steered without gathering them out of the batch;
- monitoring: selected features slice W_enc (`Sae.encode_selected`); top-k runs the full encoder
  (`Sae.top_features`);
- evidence (receipts): the steered features of rows that ask for it, encoded (sliced encoder) before and after
  the steering, kept in `evidence`;
- per-request reads (`activations` of one request): the same capture as monitoring, at the read point a row asks
  for (before or after the steering), kept in `reads`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from millm.engine.types import SteeringMode, SteeringSpec
from millm.sae.base import CompiledClamp


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = False
    # Selected features to capture; None means the top-k features per token.
    features: tuple[int, ...] | None = None
    top_k: int = 8


@dataclass
class CompiledSteering:
    spec: SteeringSpec
    mode: SteeringMode
    vector: torch.Tensor | None = None  # (D,) for add
    idx: torch.Tensor | None = None  # (m,) for clamp
    values: torch.Tensor | None = None  # (m,) for clamp
    clamp: CompiledClamp | None = None  # for clamp: idx, values and the decoder rows, in the SAE's terms


@dataclass
class BatchPlan:
    """What the hook does in one forward pass. All row lists have length B."""

    steering: list[CompiledSteering | None]
    # (B, T) bool: positions that steering may touch (False for special tokens of rows that opted out).
    steer_mask: torch.Tensor | None = None
    monitor: bool = False
    add_matrix: torch.Tensor | None = None  # (B, D), built by SaeIntervention.prepare
    # Per-row clamps as fixed-shape tensors (CUDA-graph mode): idx (B, F), values (B, F), decoder rows (B, F, D),
    # on (B, T); see Sae.clamped_rows. Used instead of clamp_groups.
    clamp_dense: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
    # Rows (a LongTensor, or None for the whole batch) that share one clamp.
    clamp_groups: list[tuple[torch.Tensor | None, CompiledSteering]] = field(default_factory=list)
    # Evidence: the union (m,) of the steered features of rows that asked for it, encoded before and after steering.
    evidence_idx: torch.Tensor | None = None
    evidence_cols: list[list[int] | None] = field(default_factory=list)  # per row: its features' columns in it
    # Per-request reads: (point, features or None for top-k, k) captures that some row asked for.
    reads: tuple[ReadSpec, ...] = ()
    row_reads: list[ReadSpec | None] = field(default_factory=list)  # per row: its read, if any

    @property
    def needs_hook_python(self) -> bool:
        """Whether the hook must run eagerly (a CUDA graph replay would not record evidence or reads)."""
        return self.evidence_idx is not None or bool(self.reads)


@dataclass(frozen=True)
class ReadSpec:
    """One capture for per-request activations: at `point` ("before" or "after" the steering), either the selected
    `features` or the top `k` features per token."""

    point: Literal["before", "after"]
    features: tuple[int, ...] | None = None
    k: int = 0


@dataclass
class Capture:
    """Activations captured in one forward pass: (B, T, k) values and feature indices."""

    values: torch.Tensor
    indices: torch.Tensor


@dataclass
class EvidenceCapture:
    """The evidence features' activations in one forward pass, before and after the steering: (B, T, m) each."""

    before: torch.Tensor
    after: torch.Tensor


class SaeIntervention:
    def __init__(self, *, sae: Any, hookpoint: Any, attach_fn: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.sae = sae
        self.hookpoint = hookpoint
        self.device = device
        self.dtype = dtype
        self.monitor_config = MonitorConfig()
        self._plan: BatchPlan | None = None
        self.captures: list[Capture] = []
        self.evidence: list[EvidenceCapture] = []
        self.reads: dict[ReadSpec, Capture] = {}
        self._read_idx: dict[tuple[int, ...], torch.Tensor] = {}
        self._compiled: dict[SteeringSpec, CompiledSteering] = {}
        self._selected_idx: torch.Tensor | None = None
        sae.prepare_encoder()
        self._handle = attach_fn(hookpoint, self._hook)

    def detach(self) -> None:
        self._handle.remove()
        self._plan = None

    # ------------------------------------------------------------------ compile

    def compile(self, spec: SteeringSpec) -> CompiledSteering:
        """Precompute the tensors for a steering spec (cached per distinct spec)."""
        hit = self._compiled.get(spec)
        if hit is not None:
            return hit
        idx = torch.tensor([f.index for f in spec.features], dtype=torch.long, device=self.device)
        vals = torch.tensor([f.strength for f in spec.features], dtype=torch.float32, device=self.device)
        if spec.mode == "add":
            vec = self.sae.steering_vector(idx, vals, normalize=spec.normalize)
            compiled = CompiledSteering(spec, "add", vector=vec.to(self.device, self.dtype))
        else:
            compiled = CompiledSteering(spec, "clamp", idx=idx, values=vals, clamp=self.sae.compile_clamp(idx, vals))
        if len(self._compiled) > 256:
            self._compiled.clear()
        self._compiled[spec] = compiled
        return compiled

    def set_monitor(self, config: MonitorConfig) -> None:
        self.monitor_config = config
        self._selected_idx = (
            torch.tensor(config.features, dtype=torch.long, device=self.device) if config.features else None
        )

    # ------------------------------------------------------------------ per pass

    def prepare(self, plan: BatchPlan) -> BatchPlan:
        """Build the gathered add matrix and clamp row groups for a batch composition."""
        adds = [c.vector if c is not None and c.mode == "add" else None for c in plan.steering]
        if any(a is not None for a in adds):
            zero = torch.zeros(self.hookpoint.d_hook, device=self.device, dtype=self.dtype)
            plan.add_matrix = torch.stack([a if a is not None else zero for a in adds])
        groups: dict[int, tuple[list[int], CompiledSteering]] = {}
        for row, c in enumerate(plan.steering):
            if c is not None and c.mode == "clamp":
                groups.setdefault(id(c), ([], c))[0].append(row)
        batch = len(plan.steering)
        plan.clamp_groups = [
            (None if len(rows) == batch else torch.tensor(rows, device=self.device), c) for rows, c in groups.values()
        ]
        return plan

    def set_plan(self, plan: BatchPlan | None) -> None:
        self._plan = plan
        self.captures = []
        self.evidence = []
        self.reads = {}

    def _hook(self, h: torch.Tensor) -> torch.Tensor | None:
        # h: (B, T, D)
        plan = self._plan
        if plan is None:
            return None
        if (plan.add_matrix is None and not plan.clamp_groups and not plan.monitor and plan.clamp_dense is None
                and not plan.needs_hook_python):
            return None
        before = self.sae.encode_selected(h, plan.evidence_idx) if plan.evidence_idx is not None else None
        for read in plan.reads:
            if read.point == "before":
                self.reads[read] = self._read(h, read)
        mask = plan.steer_mask  # (B, T) bool
        if plan.add_matrix is not None:
            add = plan.add_matrix.unsqueeze(1)  # (B, 1, D)
            h = h + (add * mask[..., None] if mask is not None else add)
        if plan.clamp_dense is not None:
            h = self.sae.clamped_rows(h, *plan.clamp_dense)
        for rows, c in plan.clamp_groups:
            assert c.clamp is not None
            if rows is None:
                h = self.sae.clamped(h, c.clamp, mask)
            else:
                sub = self.sae.clamped(h.index_select(0, rows), c.clamp,
                                       mask.index_select(0, rows) if mask is not None else None)
                h = h.index_copy(0, rows, sub)
        if before is not None:
            assert plan.evidence_idx is not None
            after = self.sae.encode_selected(h, plan.evidence_idx)
            self.evidence.append(EvidenceCapture(before.float(), after.float()))
        for read in plan.reads:
            if read.point == "after":
                self.reads[read] = self._read(h, read)
        if plan.monitor:
            self._capture(h)
        return h

    def _capture(self, h: torch.Tensor) -> None:
        cfg = self.monitor_config
        self.captures.append(self._encode(h, self._selected_idx, cfg.top_k))

    def _encode(self, h: torch.Tensor, selected: torch.Tensor | None, top_k: int) -> Capture:
        """The monitor's capture: the selected features' activations, or the top-k features per token."""
        if selected is not None:
            vals = self.sae.encode_selected(h, selected)
            idx = selected.expand(vals.shape)
        else:
            vals, idx = self.sae.top_features(h, top_k)
        return Capture(vals if vals.dtype == torch.float32 else vals.float(), idx)

    def _read(self, h: torch.Tensor, read: ReadSpec) -> Capture:
        selected = None
        if read.features is not None:
            selected = self._read_idx.get(read.features)
            if selected is None:
                if len(self._read_idx) > 64:
                    self._read_idx.clear()
                selected = self._read_idx[read.features] = torch.tensor(read.features, dtype=torch.long,
                                                                         device=self.device)
        return self._encode(h, selected, read.k)
