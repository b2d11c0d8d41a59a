"""CUDA graphs for the lean Llama decode step (setting `cuda_graphs`, off by default).

A one-token step of a small model on a GPU is bound by kernel launches, not by the GPU: a few
hundred small kernels launched one by one from Python. A CUDA graph records them once and
replays them with one launch. Graphs need fixed tensor addresses and shapes, so in graph mode
the batch lives in a `SlotCache` instead of the growable, left-padded cache of `engine/kv.py`:

- per layer, keys and values in buffers of (slots, Hkv, capacity, Dh); row b of the batch is slot
  b, and its token at position p is column p (no padding: every row starts at column 0);
- a step writes each row's new key and value at its own position with a scatter, and attends over
  the whole capacity with a mask `column <= position`, computed inside the graph from a static
  position buffer;
- a request joins by copying its prefilled cache into the next free slots; finished rows leave by
  compacting the remaining slots to the front.

`GraphDecoder.step` copies the step's token ids, positions and additive steering into static
buffers and replays the graph captured for the batch-size bucket (1, 2, 4, ... up to the slot
count; unused rows in a bucket attend to column 0 of a free slot) and the cache capacity. The
capacity grows by doubling (new buffers, graphs recaptured). A graph is keyed on the hooks
installed on the decoder layers too, so attaching or detaching an SAE recaptures it.

Steering and monitoring inside graphs: the SAE hook runs while the graph is captured, with a static
plan that reads fixed-shape buffers, and each step copies the batch's state into them:
- additive steering: a (slots, D) matrix, one vector per row (zeros for unsteered rows, the
  special-token opt-out folded in);
- clamps: per row up to F features (F a power of two, at least 8, keyed into the graph) as
  (slots, F) indices and values and (slots, F, D) decoder rows, zero-padded, refilled only when
  the batch's plan changes; `Sae.clamped_rows` encodes fully and gathers, so any mix of clamps
  replays the same graph. Clamps of more than MAX_CLAMP_FEATURES features run eagerly;
- monitoring: the captured activations are static outputs of the graph, handed to the
  intervention's `captures` after each replay; a change of monitor settings recaptures.
Each new graph is checked once: its first replay must give the logits (and monitored activations) of a plain
run of the same step, within rounding. A graph that fails to capture or disagrees is dropped with a warning,
and decoding goes on eagerly over the same static cache.
With `capture=False` (CPU, or for tests) every step runs eagerly on the static cache.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import Tensor

from millm.engine.intervention import BatchPlan, Capture, SaeIntervention
from millm.engine.llama_decode import LlamaDecoder

log = logging.getLogger(__name__)

MIN_CAPACITY = 256
MAX_CLAMP_FEATURES = 256  # a step whose clamps name more features than this runs eagerly


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _clamp_width(plan: BatchPlan | None) -> int:
    """F for the plan's clamps: the most features one row clamps, rounded up to a power of two (0: none)."""
    if plan is None or not plan.clamp_groups:
        return 0
    m = max(c.clamp.idx.shape[0] if c.clamp is not None else 0 for _, c in plan.clamp_groups)
    return max(8, _pow2(m)) if m else 0


class SlotCache:
    """Static per-layer key/value buffers, one slot per batch row. Implements the `Cache.update` call the
    decoder (and HF decoder layers) make."""

    def __init__(self, *, layers: int, slots: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (slots, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.slots, self.capacity = slots, capacity
        self._index: Tensor | None = None  # (Bg, Hkv, 1, Dh) write column per row, set for each step

    def set_positions(self, positions: Tensor) -> None:
        # positions: (Bg, 1) long
        k = self.keys[0]
        self._index = positions.view(-1, 1, 1, 1).expand(positions.shape[0], k.shape[1], 1, k.shape[3])

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any
               ) -> tuple[Tensor, Tensor]:
        # key_states, value_states: (Bg, Hkv, 1, Dh)
        assert self._index is not None
        bg = key_states.shape[0]
        k, v = self.keys[layer_idx][:bg], self.values[layer_idx][:bg]
        k.scatter_(2, self._index, key_states)
        v.scatter_(2, self._index, value_states)
        return k, v

    def resized(self, slots: int, capacity: int) -> SlotCache:
        """A larger cache holding this one's contents."""
        k0 = self.keys[0]
        new = SlotCache(layers=len(self.keys), slots=slots, kv_heads=k0.shape[1], head_dim=k0.shape[3],
                        capacity=capacity, dtype=k0.dtype, device=k0.device)
        for old_bufs, new_bufs in ((self.keys, new.keys), (self.values, new.values)):
            for old, buf in zip(old_bufs, new_bufs, strict=True):
                buf[: self.slots, :, : self.capacity].copy_(old)
        return new


class GraphDecoder:
    """Decode steps of a LlamaDecoder over a SlotCache, replayed from CUDA graphs when `capture`."""

    def __init__(self, decoder: LlamaDecoder, *, slots: int, context_length: int, capture: bool) -> None:
        self.dec = decoder
        self.capture = capture
        self.slots = slots
        self.context_length = context_length
        self.rows = 0
        self.cache: SlotCache | None = None
        w = decoder.embed.weight
        self.device, self.dtype = w.device, w.dtype
        self._graphs: dict[tuple[Any, ...], tuple[Any, tuple[Tensor, ...]]] = {}  # key -> (graph, static outputs)
        self._clamp: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # static per-row clamps (clamp_dense)
        self._clamp_plan: BatchPlan | None = None  # the plan _clamp was filled from
        self._pool: Any = None
        self._ids = torch.zeros((slots, 1), dtype=torch.long, device=self.device)
        self._pos = torch.zeros((slots, 1), dtype=torch.long, device=self.device)
        self._add: Tensor | None = None  # (slots, D) steering added by the SAE hook inside graphs
        self._columns: Tensor | None = None  # (capacity,) 0..capacity-1
        self.replays = 0  # steps served from a graph (for tests and logs)

    # ------------------------------------------------------------------ batch composition

    def join(self, layers: list[tuple[Tensor, Tensor]], lengths: list[int] | None = None) -> None:
        """Append rows from a prefilled cache: per layer (keys, values) of (n, Hkv, S, Dh), each row left-padded
        to S (its last lengths[r] columns are real; None: no padding). Each row lands at columns 0..length-1."""
        n, s = layers[0][0].shape[0], layers[0][0].shape[2]
        self._ensure(self.rows + n, s + 1)
        assert self.cache is not None
        if lengths is None or all(length == s for length in lengths):
            for i, (k, v) in enumerate(layers):
                self.cache.keys[i][self.rows : self.rows + n, :, :s].copy_(k)
                self.cache.values[i][self.rows : self.rows + n, :, :s].copy_(v)
        else:
            for r, length in enumerate(lengths):
                slot = self.rows + r
                for i, (k, v) in enumerate(layers):
                    self.cache.keys[i][slot, :, :length].copy_(k[r, :, s - length :])
                    self.cache.values[i][slot, :, :length].copy_(v[r, :, s - length :])
        self.rows += n

    def select(self, keep: list[int]) -> None:
        """Keep rows `keep` (ascending), compacted to the front slots."""
        if keep != list(range(len(keep))):
            assert self.cache is not None
            idx = torch.tensor(keep, device=self.device)
            for bufs in (self.cache.keys, self.cache.values):
                for buf in bufs:
                    buf[: len(keep)].copy_(buf.index_select(0, idx))
        self.rows = len(keep)

    def clear(self) -> None:
        self.rows = 0

    def _ensure(self, rows: int, length: int) -> None:
        """Room for `rows` slots of `length` columns; growing drops the captured graphs."""
        cache = self.cache
        if cache is not None and rows <= cache.slots and length <= cache.capacity:
            return
        slots = max(rows, self.slots, cache.slots if cache else 0)
        capacity = max(cache.capacity if cache else 0, min(self.context_length, max(MIN_CAPACITY, _pow2(length))))
        capacity = max(capacity, length)
        if cache is None:
            d = self.dec
            self.cache = SlotCache(layers=len(d.layers), slots=slots, kv_heads=d.n_kv, head_dim=d.head_dim,
                                   capacity=capacity, dtype=self.dtype, device=self.device)
        else:
            self.cache = cache.resized(slots, capacity)
        if slots > self._ids.shape[0]:
            self._ids = torch.zeros((slots, 1), dtype=torch.long, device=self.device)
            self._pos = torch.zeros((slots, 1), dtype=torch.long, device=self.device)
            self._add = self._clamp = None  # per-slot steering buffers: reallocated at the new slot count
        self._columns = torch.arange(capacity, device=self.device)
        self._graphs.clear()
        log.info("decode cache: %d slots x %d positions%s", slots, capacity, " (CUDA graphs)" if self.capture else "")

    # ------------------------------------------------------------------ steps

    def step(self, ids: Tensor, positions: Tensor, *, max_position: int, intervention: SaeIntervention | None,
             plan: BatchPlan | None) -> Tensor:
        """One decode step for the current rows. ids, positions: (B, 1) on the device; max_position: the
        largest position, as a host int. The intervention's plan is already set; when it monitors, the
        intervention's `captures` hold this step's activations afterwards. Returns logits (B, V)."""
        b = ids.shape[0]
        assert b == self.rows
        self._ensure(b, max_position + 1)
        width = _clamp_width(plan)
        # (evidence and per-request reads run Python in the hook, which a replay would skip: those steps run eagerly)
        graphable = (self.capture and width <= MAX_CLAMP_FEATURES
                     and not (plan is not None and plan.needs_hook_python))
        assert self.cache is not None
        bg = min(_pow2(b), self.cache.slots) if graphable else b
        self._ids[:b].copy_(ids)
        self._pos[:b].copy_(positions)
        if bg > b:
            self._ids[b:bg].zero_()
            self._pos[b:bg].zero_()
        if not graphable:
            return self._forward(b)
        monitor = plan is not None and plan.monitor
        try:
            if intervention is not None:
                self._fill_add(intervention, plan, b, bg)
                if width:
                    self._fill_clamps(intervention, plan, width, b, bg)
            graph, outs = self._graph(bg, intervention, monitor, width)
            graph.replay()
        except Exception as e:  # noqa: BLE001 - e.g. a kernel that cannot be captured: keep serving, eagerly
            log.warning("CUDA graph capture or replay failed (%s: %s); decoding without CUDA graphs from now on",
                        type(e).__name__, e)
            self.capture = False
            self._graphs.clear()
            return self._forward(b)
        self.replays += 1
        if monitor and intervention is not None:
            intervention.captures = [Capture(outs[1][:b], outs[2][:b])]
        return outs[0][:b]

    def _forward(self, bg: int) -> Tensor:
        assert self.cache is not None and self._columns is not None
        pos = self._pos[:bg]
        mask = (self._columns[None, :] <= pos)[:, None, None, :]  # (Bg, 1, 1, capacity)
        self.cache.set_positions(pos)
        return self.dec.step(self._ids[:bg], pos, mask=mask, cache=self.cache)

    def _fill_add(self, iv: SaeIntervention, plan: BatchPlan | None, b: int, bg: int) -> None:
        if self._add is None or self._add.shape[1] != iv.hookpoint.d_hook or self._add.dtype != iv.dtype:
            self._add = torch.zeros((self._ids.shape[0], iv.hookpoint.d_hook), dtype=iv.dtype, device=self.device)
            self._graphs.clear()
        if plan is None or plan.add_matrix is None:
            self._add[:bg].zero_()
            return
        m = plan.add_matrix
        if plan.steer_mask is not None:
            m = m * plan.steer_mask[:, -1:].to(m.dtype)
        self._add[:b].copy_(m)
        if bg > b:
            self._add[b:bg].zero_()

    def _fill_clamps(self, iv: SaeIntervention, plan: BatchPlan | None, width: int, b: int, bg: int) -> None:
        """Each row's clamp into the static (slots, F) index / value and (slots, F, D) decoder-row buffers, when the
        batch's plan changed; the special-token multiplier every step."""
        assert plan is not None
        slots = self._ids.shape[0]
        bufs = self._clamp
        if bufs is None or bufs[0].shape[1] != width or bufs[2].shape[2] != iv.hookpoint.d_hook:
            rows_dtype = iv.sae.dtype
            bufs = self._clamp = (
                torch.zeros((slots, width), dtype=torch.long, device=self.device),
                torch.zeros((slots, width), dtype=rows_dtype, device=self.device),
                torch.zeros((slots, width, iv.hookpoint.d_hook), dtype=rows_dtype, device=self.device),
                torch.ones((slots, 1), dtype=rows_dtype, device=self.device),
            )
            self._clamp_plan = None
            self._graphs.clear()
        idx, vals, rows, on = bufs
        if plan is not self._clamp_plan:
            idx[:bg].zero_()
            vals[:bg].zero_()
            rows[:bg].zero_()
            for row, c in enumerate(plan.steering):
                if c is not None and c.mode == "clamp" and c.clamp is not None:
                    m = c.clamp.idx.shape[0]
                    idx[row, :m].copy_(c.clamp.idx)
                    vals[row, :m].copy_(c.clamp.values)
                    rows[row, :m].copy_(c.clamp.rows)
            self._clamp_plan = plan
        if plan.steer_mask is not None:
            on[:b].copy_(plan.steer_mask[:, -1:])
        else:
            on[:b].fill_(1)

    def _hooks_key(self, iv: SaeIntervention | None) -> tuple[Any, ...]:
        d = self.dec
        return (id(iv),) + tuple(
            (tuple(layer._forward_hooks), tuple(layer._forward_pre_hooks), any(d.sub_hooks[i]))
            for i, layer in enumerate(d.layers)
        ) + (tuple(d.lm_head._forward_hooks),)

    def _graph(self, bg: int, iv: SaeIntervention | None, monitor: bool, width: int) -> tuple[Any, tuple[Tensor, ...]]:
        assert self.cache is not None
        mon_key = (iv.monitor_config, id(iv._selected_idx)) if monitor and iv is not None else None
        key = (bg, self.cache.capacity, self._hooks_key(iv), mon_key, width)
        hit = self._graphs.get(key)
        if hit is None:
            hit = self._graphs[key] = self._capture(lambda: self._static_forward(bg, iv, monitor, width))
            log.info("captured a CUDA graph: batch %d, %d positions%s%s", bg, self.cache.capacity,
                     ", monitoring" if monitor else "", f", clamps of up to {width} features" if width else "")
        return hit

    def _static_forward(self, bg: int, iv: SaeIntervention | None, monitor: bool, width: int) -> tuple[Tensor, ...]:
        """`_forward` with the SAE hook reading its steering from the static buffers: (logits,), plus the captured
        activation values and indices when monitoring."""
        if iv is None:
            return (self._forward(bg),)
        assert self._add is not None
        dense = None
        if width:
            assert self._clamp is not None
            idx, vals, rows, on = self._clamp
            dense = (idx[:bg], vals[:bg], rows[:bg], on[:bg])
        saved = iv._plan
        iv.set_plan(BatchPlan(steering=[None] * bg, add_matrix=self._add[:bg], monitor=monitor, clamp_dense=dense))
        try:
            logits = self._forward(bg)
            if not monitor:
                return (logits,)
            cap = iv.captures[-1]
            return logits, cap.values, cap.indices
        finally:
            iv.set_plan(saved)

    def _capture(self, fn: Callable[[], tuple[Tensor, ...]]) -> tuple[Any, tuple[Tensor, ...]]:
        """Record fn's kernels in a CUDA graph; returns the graph and fn's outputs (static tensors). The graph's first
        replay must give the outputs of a plain run of fn, or this raises `GraphMismatch`."""
        # Warm up (on CUDA on a side stream: lazy cuBLAS/cuDNN set-up must not be captured), then record. The warm-up,
        # the recording and the replays all write this step's keys and values: the same values each time.
        if self.device.type == "cuda":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                want = fn()
            torch.cuda.current_stream().wait_stream(side)
        else:
            want = fn()
        graph, out = self._record(fn)
        graph.replay()
        _check_replay(out, want)
        return graph, out

    def _record(self, fn: Callable[[], tuple[Tensor, ...]]) -> tuple[Any, tuple[Tensor, ...]]:
        """fn captured in a CUDA graph (not run), and its static outputs."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # The outer context restores this thread's stream if the capture fails: torch.cuda.graph's exit leaves the
        # capture stream current when ending the capture raises.
        with torch.cuda.stream(torch.cuda.current_stream()), \
                torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            out = fn()
        return graph, out


class GraphMismatch(RuntimeError):
    """A captured graph's replay disagrees with a plain run of the same step."""


def _check_replay(got: tuple[Tensor, ...], want: tuple[Tensor, ...]) -> None:
    """Each floating output of a graph's replay (logits, monitored activation values) within rounding of the plain
    run's: a relative error of 1e-3 in fp32, 3e-2 in half precision, against the output's largest magnitude. Integer
    outputs (top-k feature indices) may differ where activations tie, so are not compared."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if not g.is_floating_point():
            continue
        tol = 1e-3 if g.dtype == torch.float32 else 3e-2
        err = float((g.float() - w.float()).abs().max()) if g.numel() else 0.0
        scale = float(w.float().abs().max()) if w.numel() else 0.0
        if not err <= tol * (scale + 1.0):  # (not <=: a NaN fails too)
            raise GraphMismatch(f"output {i} of the replay is off by {err:.3g} (largest value {scale:.3g})")
