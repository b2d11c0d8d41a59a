"""Batch plans: what the SAE hook does in one forward, and what each row reads back from it.

`build_plan` turns a batch's compiled steering (one per row, from the worker's one compile function), the rows'
activation reads and the monitor's wish into a `BatchPlan` for the intervention. After the forward,
`prompt_accumulators` (prefill) and `accumulate_step` (decode) collect each row's steering evidence and its own
activations from what the hook captured. Worker-thread code, engine-private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from millm.engine.evidence import EvidenceAcc, ReadAcc
from millm.engine.intervention import BatchPlan, ReadSpec, SaeIntervention
from millm.engine.model_loading import LoadedModel
from millm.engine.types import ActivationRead, GenerationRequest, TokenActivations

if TYPE_CHECKING:
    from millm.engine.rows import Row


def read_spec(read: ActivationRead | None) -> ReadSpec | None:
    if read is None:
        return None
    return ReadSpec(point=read.point, features=read.features, k=0 if read.features is not None else read.top_k)


def steer_mask(lm: LoadedModel, ids: torch.Tensor, specs: list[Any]) -> torch.Tensor | None:
    # ids: (B, T) -> (B, T) bool, False at special tokens of rows whose steering skips them.
    if not any(c is not None and not c.spec.steer_special_tokens for c in specs):
        return None
    special = torch.tensor(sorted(lm.special_ids), device=ids.device)
    is_special = torch.isin(ids, special)
    opt_out = torch.tensor(
        [c is not None and not c.spec.steer_special_tokens for c in specs], device=ids.device
    )[:, None]
    return ~(is_special & opt_out)


def build_plan(iv: SaeIntervention | None, lm: LoadedModel, specs: list[Any], ids: torch.Tensor,
               reads: list[ActivationRead | None] | None = None, *, monitor: bool) -> BatchPlan | None:
    """What the hook does in a forward over ids (B, T): row b's compiled steering specs[b] and read reads[b], and
    whether the monitor captures. None when the hook has nothing to do (or no SAE is attached)."""
    if iv is None:
        return None
    row_reads = [read_spec(r) for r in reads] if reads else [None] * len(specs)
    if all(s is None for s in specs) and not monitor and not any(row_reads):
        return None
    plan = BatchPlan(steering=specs, steer_mask=steer_mask(lm, ids, specs), monitor=monitor)
    measured = [c.spec.features if c is not None and c.spec.evidence else None for c in specs]
    if any(m is not None for m in measured):
        union = sorted({f.index for m in measured if m is not None for f in m})
        col = {i: j for j, i in enumerate(union)}
        plan.evidence_idx = torch.tensor(union, dtype=torch.long, device=iv.device)
        plan.evidence_cols = [[col[f.index] for f in m] if m is not None else None for m in measured]
    if any(row_reads):
        plan.reads = tuple(dict.fromkeys(r for r in row_reads if r is not None))
        plan.row_reads = row_reads
    return iv.prepare(plan)


def prompt_accumulators(iv: SaeIntervention | None, lm: LoadedModel | None, plan: BatchPlan | None,
                        specs: list[Any], reqs: list[GenerationRequest], ids: torch.Tensor,
                        pads: list[int]) -> list[tuple[EvidenceAcc | None, ReadAcc | None]]:
    """Per request: steering evidence and its own activations over the prompt just prefilled (ids (B, T),
    left-padded by pads[b]); every choice of the request starts from a copy."""
    out: list[tuple[EvidenceAcc | None, ReadAcc | None]] = [(None, None)] * len(reqs)
    if plan is None or iv is None or lm is None:
        return out
    ev = iv.evidence[-1] if plan.evidence_idx is not None and iv.evidence else None
    before = ev.before[:, -1].tolist() if ev is not None else None  # (B, m): the last prompt position
    after = ev.after[:, -1].tolist() if ev is not None else None
    toks = ids.tolist()
    reads: dict[ReadSpec, tuple[list[Any], list[Any]]] = {}
    for b, req in enumerate(reqs):
        acc, read = None, None
        c = specs[b]
        if c is not None:
            cols = plan.evidence_cols[b] if plan.evidence_cols else None
            acc = EvidenceAcc.start(c.spec, measure=cols is not None)
            acc.positions(((t - pads[b], toks[b][t]) for t in range(pads[b], len(toks[b]))), lm.special_ids)
            if cols is not None and before is not None and after is not None:
                acc.values([before[b][j] for j in cols], [after[b][j] for j in cols])
        spec = plan.row_reads[b] if plan.row_reads else None
        if req.activations is not None and spec is not None and spec in iv.reads:
            read = ReadAcc(req.activations)
            if read.wants("prompt"):
                if spec not in reads:
                    cap = iv.reads[spec]
                    reads[spec] = (cap.values.tolist(), cap.indices.tolist())
                vals, idx = reads[spec]
                for t in range(pads[b], len(toks[b])):
                    position, tok = t - pads[b], toks[b][t]
                    if tok == lm.bos_id and position == 0:
                        continue  # (as the monitor: a leading BOS is left out)
                    read.add(TokenActivations(position, tok, "prompt", tuple(idx[b][t]), tuple(vals[b][t])))
        out[b] = (acc, read)
    return out

def accumulate_step(iv: SaeIntervention | None, lm: LoadedModel | None, plan: BatchPlan | None,
                    rows: list[Row]) -> None:
    """After a decode step: each row's evidence and own activations at the token it just read."""
    if plan is None or iv is None or lm is None:
        return
    ev = iv.evidence[-1] if plan.evidence_idx is not None and iv.evidence else None
    before = ev.before[:, 0].tolist() if ev is not None else None
    after = ev.after[:, 0].tolist() if ev is not None else None
    reads: dict[ReadSpec, tuple[list[Any], list[Any]]] = {}
    for b, r in enumerate(rows):
        acc = r.evidence
        if acc is not None:
            acc.positions(((r.position, r.last_token),), lm.special_ids)
            cols = plan.evidence_cols[b] if plan.evidence_cols else None
            if cols is not None and before is not None and after is not None:
                acc.values([before[b][j] for j in cols], [after[b][j] for j in cols])
        if r.reads is not None and r.reads.wants("generated") and plan.row_reads:
            spec = plan.row_reads[b]
            if spec is None or spec not in iv.reads:
                continue
            if spec not in reads:
                cap = iv.reads[spec]
                reads[spec] = (cap.values[:, 0].tolist(), cap.indices[:, 0].tolist())
            vals, idx = reads[spec]
            r.reads.add(TokenActivations(r.position, r.last_token, "generated", tuple(idx[b]), tuple(vals[b])))
