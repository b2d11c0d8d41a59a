"""The generation worker: one thread that owns the model and runs continuous batching.

This is the engine's interface to the services layer (as vLLM's serving layer talks to an `EngineClient`):
`submit` for generation (chat, completions, compare variants and batch lines all come through it), and typed
operations that each run on the worker thread and return a Future: `swap_model`, `attach_sae`, `detach_sae`,
`set_monitor`, `embed`, plus `memory()`. Services call only these; `call()` is the engine's own mechanism.

Requests wait in a bounded queue (queue_size, plus the batch slots free at submission). Between decode steps the
worker admits waiting requests (prefilling them together, then merging their KV rows into the batch), runs one
batched decode step for every active sequence, samples per row, and drops finished or cancelled rows. Exclusive
operations (model swap, SAE attach/detach) wait until the batch has drained, so the model never changes under a
sequence. Results go out through each request's `sink` callable, on the worker thread.

Split along its seams: rows and sampling into events (`rows.py`), batch plans and what rows read back
(`plans.py`), SAE attachments and the one steering compile (`attachments.py`), monitor records
(`monitor_records.py`), thread policy (`threads.py`), embeddings (`embedding.py`). What stays here is the queue,
the loop, prefill and the decode step (about 500 lines: they share the batch state, KV cache and plan).
"""

from __future__ import annotations

import collections
import functools
import gc
import inspect
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from millm.engine import kv, plans
from millm.engine.allocator import keep_freed_memory
from millm.engine.attachments import Attachment, Attachments, SwapOutcome
from millm.engine.cuda_graphs import GraphDecoder
from millm.engine.deferred import MAX_HOLD, DeferredWork
from millm.engine.embedding import embed_inputs
from millm.engine.intervention import BatchPlan, MonitorConfig, SaeIntervention
from millm.engine.llama_decode import LlamaDecoder, prefill_mask
from millm.engine.model_loading import LoadedModel
from millm.engine.monitor_records import MonitorRecorder, MonitorSink
from millm.engine.rows import Handle, Row, Sink, greedy_plain, sample_and_emit
from millm.engine.sampling import RowSampler, prompt_logprobs
from millm.engine.text import IncrementalDetokenizer, StopMatcher
from millm.engine.threads import ThreadPolicy
from millm.engine.types import (
    ActivationRead,
    EmbeddingRequest,
    GenerationEvent,
    GenerationRequest,
    PromptInfo,
    TokenLogprob,
)
from millm.engine.weight_layout import (
    PACKED,
    Choice,
    Kernels,
    LinearFn,
    PackedLinear,
    choose_kernels,
    linear_fn,
    prefill_fn,
)
from millm.errors import MillmError, ModelNotLoaded, OutOfMemory, QueueFull
from millm.placement import MemoryInfo, device_memory

log = logging.getLogger(__name__)

# (compared with lm.device in the decode step: `torch.device.type` formats a new string each call, ~9 us right after a
# forward; a device comparison is one C call)
_CPU = torch.device("cpu")



def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError))


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _out_of_memory(e: BaseException, request_ids: list[str]) -> OutOfMemory:
    """Log an out-of-memory failure, free what the failed forward held, and say so to the requests it ends."""
    log.error("out of memory (%s) for %s; memory freed, serving goes on", type(e).__name__, ", ".join(request_ids))
    del e
    _free_memory()
    return OutOfMemory("the server ran out of memory for this request; try a shorter prompt, fewer tokens or "
                       "fewer choices, or retry when fewer requests are running", retry_after=1.0)


def _tell(h: Handle, item: Any) -> None:
    """h.sink(item) on a failure path. A sink that raises (a bug on the consumer's side) is logged instead: the
    request cannot be told anything more, but the others in its batch still hear of their end, and the generation
    thread goes on serving."""
    try:
        h.sink(item)
    except Exception:  # noqa: BLE001 - the consumer's bug, not this request's outcome
        log.exception("the event sink of request %s raised", h.request.request_id)


@functools.lru_cache(maxsize=64)
def _cache_kwarg(model_type: type[nn.Module]) -> str:
    # transformers renamed `past_key_values` to `cache` (5.2x); accept models from either side.
    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


# The decoder's kernels before any timing: MKL on the stored weights, for one row and for more.
_STORED: tuple[tuple[tuple[str, LinearFn], ...], ...] = ((("stored", linear_fn("stored")),),) * 2

# Waiting requests are prefilled together while their prompts, left-padded to the longest, stay within this
# many positions in all.
PREFILL_TOKENS = 4096


@dataclass
class _Call:
    fn: Callable[[Worker], Any]
    future: Future[Any]
    exclusive: bool


class Worker:
    def __init__(self, *, queue_size: int = 64, max_batch_size: int = 16, cuda_graphs: bool = False,
                 stream_hold: float = MAX_HOLD) -> None:
        self.queue_size = queue_size
        self.max_batch_size = max_batch_size
        self.cuda_graphs = cuda_graphs  # decode over a static slot cache, replayed from CUDA graphs on CUDA
        self.loaded: LoadedModel | None = None
        self.attachments = Attachments()
        self._pending: collections.deque[Handle] = collections.deque()
        self._calls: collections.deque[_Call] = collections.deque()
        self._rows: list[Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._mask_owed = 0  # columns of ones decode steps have added to every row, not yet appended (_full_mask)
        self._padded = False  # whether any row of _mask has padding (checked when rows join or leave)
        self._decoder: LlamaDecoder | None = None
        self._graphs: GraphDecoder | None = None  # owns the batch's KV cache in graph mode
        self._decoder_model: Any = None
        # the decoder's kernels for 1 row and for more: (name, function) options, timed on real steps (threads.py)
        self._linears: tuple[tuple[tuple[str, LinearFn], ...], ...] = _STORED
        self._kernel_names: tuple[tuple[str, ...], ...] = (("stored",),) * 2  # the names of _linears' options
        self._prefill_linear: LinearFn = prefill_fn("stored")  # the lean step's prefill kernel (Kernels.prefill)
        self._inputs: tuple[torch.Tensor, torch.Tensor, memoryview] | None = None  # (ids, positions, their memory)
        self.threads = ThreadPolicy()
        self.monitor = MonitorRecorder()
        self._plan: BatchPlan | None = None
        self._plain_greedy: bool | None = None  # rows.greedy_plain of the batch's rows (None: rows changed since)
        self._deferred: list[Callable[[], None]] | None = None  # sinks' work for the end of a step's emitting (`defer`)
        self.deferred = DeferredWork(stream_hold)  # that work, run at a step's end or a later one's
        self._deferring = 0  # the thread emitting that step's events
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="millm-worker", daemon=True)
        self.steps = 0
        self.prefills = 0  # prefill forwards, each over one or more waiting requests

    # ------------------------------------------------------------------ public API (any thread)

    @property
    def monitor_sink(self) -> MonitorSink | None:
        """Where monitor records go (on the worker thread); None: nobody listens, nothing is captured."""
        return self.monitor.sink

    @monitor_sink.setter
    def monitor_sink(self, sink: MonitorSink | None) -> None:
        self.monitor.sink = sink

    def defer(self, fn: Callable[[], None]) -> bool:
        """From a sink: have `fn` called on the worker thread once every row of the decode step being emitted has had
        its event, at that step's end or a later one's (`deferred`, engine/deferred.py: while the deferred work would
        take over `WRITE_SHARE` of the worker's time, for at most `stream_hold` seconds), and before the worker does
        anything but decode steps; True when it will be. Anything else (a prefill's first tokens, a failure, any
        other thread) gets False, and does its work itself.

        For work a sink would otherwise do per row, between the rows' sampling and text: a stream's socket write
        (services `WorkerWrites`, which adds the stream's next chunks to the write while it waits). Written back to
        back after the step's last event, the demo's eight streams served at 3-7% more tokens a second in 3 of 4
        alternated server pairs (eleventh session); written every few steps at eight streams, 11% more (twelfth
        session, docs/benchmarks-notes.md). A callable that raises is logged; the others still run."""
        deferred = self._deferred
        if deferred is None or threading.get_ident() != self._deferring:
            return False
        deferred.append(fn)
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=30)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active_sequences(self) -> int:
        return len(self._rows)

    def submit(self, request: GenerationRequest, sink: Sink) -> Handle:
        handle = Handle(request, sink)
        with self._cv:
            # Free batch slots admit before the queue limit applies: the worker takes waiting requests into free
            # slots between decode steps, so up to that many may be waiting for it besides the queue proper.
            # Background requests (batch lines, queued ahead so rows refill at once) do not count against live ones.
            waiting = len(self._pending) if request.background else self._live_pending()
            # (a finished row leaves at the end of its step, but its finish is already out: its client may be back
            # with its next request before then, so its slot counts as free)
            running = sum(not r.done for r in self._rows)
            if waiting >= self.queue_size + max(0, self.max_batch_size - running):
                raise QueueFull(
                    f"the request queue is full ({self.queue_size} waiting); retry shortly", retry_after=1.0
                )
            if request.background or not self._pending or not self._pending[-1].request.background:
                self._pending.append(handle)
            else:  # a live request goes ahead of queued background ones
                at = next(i for i, h in enumerate(self._pending) if h.request.background)
                self._pending.insert(at, handle)
            self._cv.notify_all()
        return handle

    def _live_pending(self) -> int:
        """Waiting live requests (they queue ahead of every background one). Under the lock."""
        n = 0
        for h in self._pending:
            if h.request.background:
                break
            n += 1
        return n

    @property
    def background_rows(self) -> int:
        """The most rows background requests hold at once: all but one, which stays free for live requests."""
        return max(1, self.max_batch_size - 1)

    @property
    def intervention(self) -> SaeIntervention | None:
        """The attached SAE's intervention (None without one); read on the worker thread."""
        return self.attachments.intervention

    @intervention.setter
    def intervention(self, iv: SaeIntervention | None) -> None:
        """Engine tests and benchmarks install a hand-built intervention; services use `attach_sae`."""
        self.attachments.install(iv)

    # ------------------------------------------------------------------ typed operations (any thread)
    # Each runs on the worker thread and returns a Future; exclusive ones wait for the batch to drain, so a model
    # or SAE never changes under a running sequence. Services call these, never `call`.

    def swap_model(self, model: LoadedModel | None) -> Future[SwapOutcome]:
        """Serve `model` (None: unload) in place of the current one. The attached SAEs move to the new model at
        their layers, or are dropped (`SwapOutcome.dropped` says why); the old model's memory is freed."""
        def swap(w: Worker) -> SwapOutcome:
            had_model = w.loaded is not None
            w.loaded = model
            kept, dropped = w.attachments.move_to(model)
            w._plan = None
            w._decoder = w._graphs = w._decoder_model = None  # they hold the old model's weights
            w._linears = _STORED  # (and packed copies of them)
            if had_model:  # (a full collection costs ~0.2 s with torch loaded: only to free a model)
                gc.unfreeze()  # a model loaded at start-up was frozen (millm.server.resume_gc)
                _free_memory()
            return SwapOutcome(model, kept, dropped)

        return self.call(swap)

    def attach_sae(self, sae: Any, *, layer: int | None = None) -> Future[Attachment]:
        """Attach `sae` to the loaded model at its hook point (or `layer`), cast to the model's device and dtype,
        replacing the attached SAE. InvalidRequest without a model; SaeError when it does not fit."""
        return self.call(lambda w: w.attachments.attach(w.loaded, sae, layer=layer))

    def detach_sae(self, key: str | None = None) -> Future[tuple[Attachment, ...]]:
        """Remove the SAE at hook point `key` (every one when None), restoring the model's outputs exactly."""
        return self.call(lambda w: w.attachments.detach(key))

    def set_monitor(self, config: MonitorConfig, sink: MonitorSink | None = None) -> Future[None]:
        """What the monitor captures (kept for SAEs attached later), and, when given, where records go."""
        def apply(w: Worker) -> None:
            w.attachments.set_monitor(config)
            if sink is not None:
                w.monitor.sink = sink

        return self.call(apply, exclusive=False)

    def embed(self, request: EmbeddingRequest) -> Future[list[Any]]:
        """Pooled last hidden states, one little-endian float32 numpy vector per input, with the request's steering
        and the monitor applied as in generation."""
        return self.call(lambda w: embed_inputs(w, request), exclusive=False)

    def memory(self) -> MemoryInfo:
        """Used and total memory of the device the model is on (the host's RAM without a model or off CUDA)."""
        lm = self.loaded
        return device_memory(str(lm.device) if lm is not None else "cpu")

    def abort_all(self, failure: MillmError) -> None:
        """End every running and waiting request with `failure` (at shutdown), between decode steps."""
        def abort(w: Worker) -> None:
            with w._cv:
                waiting, w._pending = list(w._pending), collections.deque()
            for h in waiting:
                _tell(h, failure)
            w._fail_all(failure.message, failure)

        self.call(abort, exclusive=False)

    def call(self, fn: Callable[[Worker], Any], *, exclusive: bool = True) -> Future[Any]:
        """Run fn(worker) on the worker thread; exclusive calls wait for the batch to drain."""
        fut: Future[Any] = Future()
        with self._cv:
            self._calls.append(_Call(fn, fut, exclusive))
            self._cv.notify_all()
        return fut

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        keep_freed_memory()  # (process-wide: each forward reuses the last one's freed memory; engine/allocator.py)
        self.threads.start()
        log.info("generation thread: torch threads %s", self.threads.describe())
        while True:
            with self._cv:
                while not self._stop and not self._pending and not self._calls and not self._rows:
                    self._cv.wait()
                if self._stop:
                    break
            try:
                # (the deques are read without the lock to skip the work when empty: _run_calls and _admit take it)
                if self._calls:
                    self._run_calls()
                with torch.inference_mode():
                    if self._pending and not self._exclusive_waiting():
                        self._admit()
                    # Decode steps back to back while nothing else waits: the lock and the inference-mode guard once
                    # per run of steps, not per token (~45 us a step on llama-25m, each a cache miss after the forward).
                    # Anything submitted, called or stopping ends the run, and the outer loop takes it as it always did.
                    while self._rows:
                        self._step()
                        if self._pending or self._calls or self._stop:
                            break
                    self.deferred.run()  # (what waits for a later step's end: before anything else)
            except Exception as e:  # a bug, or memory: fail the batch rather than the thread
                if _is_oom(e):
                    # the rows share the batch's KV cache, which the failed step may have left half-written
                    failure = _out_of_memory(e, [r.handle.request.request_id for r in self._rows])
                    self._fail_all(failure.message, failure)
                    _free_memory()
                else:
                    log.exception("generation step failed")
                    self._fail_all("internal error during generation")

    def _exclusive_waiting(self) -> bool:
        return any(c.exclusive for c in self._calls)

    def _run_calls(self) -> None:
        while True:
            with self._cv:
                if not self._calls or (self._calls[0].exclusive and self._rows):
                    return
                call = self._calls.popleft()
            if not call.future.set_running_or_notify_cancel():
                continue
            try:
                call.future.set_result(call.fn(self))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                call.future.set_exception(e)

    def _admit(self) -> None:
        while True:
            batch = self._take_pending()
            if not batch:
                return
            try:
                self._prefill(batch)
            except Exception as e:  # noqa: BLE001 - MillmErrors are the caller's; anything else is logged too
                if _is_oom(e):
                    # only these requests' prefill (its own KV cache) failed: they end, the batch goes on
                    e = _out_of_memory(e, [h.request.request_id for h in batch])
                elif not isinstance(e, MillmError):
                    log.exception("prefill failed for %s", ", ".join(h.request.request_id for h in batch))
                for h in batch:
                    _tell(h, e)

    def _take_pending(self) -> list[Handle]:
        """The waiting requests to prefill together: in order, while their sequences fit the free batch slots
        and the padded prompt batch stays within PREFILL_TOKENS (a request asking for prompt logprobs, which
        keep every position's logits, goes alone). The first request is taken whenever no sequence is active.
        Background requests (behind every live one) stop at `background_rows` rows, so a live request that
        arrives finds a free row."""
        taken: list[Handle] = []
        longest = 0
        with self._cv:
            free = self.max_batch_size - len(self._rows)
            background_free = self.background_rows - sum(r.handle.request.background for r in self._rows)
            while self._pending:
                head = self._pending[0]
                if head.cancelled:
                    self._pending.popleft()
                    continue
                req = head.request
                first = not taken
                if not first and (req.prompt_logprobs or taken[0].request.prompt_logprobs):
                    break
                length = max(longest, len(req.prompt_ids))
                if not first and (req.n > free or length * (len(taken) + 1) > PREFILL_TOKENS):
                    break
                if first and self._rows and req.n > free:
                    break
                if req.background and req.n > background_free and (self._rows or taken):
                    break
                self._pending.popleft()
                taken.append(head)
                free -= req.n
                if req.background:
                    background_free -= req.n
                longest = length
        return taken

    # ------------------------------------------------------------------ prefill

    def make_plan(self, specs: list[Any], ids: torch.Tensor,
                  reads: list[ActivationRead | None] | None = None) -> BatchPlan | None:
        """The batch plan for a forward over ids (B, T) with row b's compiled steering specs[b] (plans.build_plan)."""
        assert self.loaded is not None
        iv = self.intervention
        return plans.build_plan(iv, self.loaded, specs, ids, reads, monitor=self.monitor.wanted(iv))

    def forward(self, ids: torch.Tensor, *, mask: torch.Tensor, positions: torch.Tensor, cache: Any,
                plan: BatchPlan | None, logits_to_keep: int = 1, **kwargs: Any) -> Any:
        """One model forward with the intervention plan installed. ids, mask, positions: (B, T)."""
        assert self.loaded is not None
        if self.intervention is not None:
            self.intervention.set_plan(plan)
        model_type: type[nn.Module] = type(self.loaded.model)
        kwarg = _cache_kwarg(model_type)  # type: ignore[arg-type]  # a class is hashable (mypy's Hashable check says no)
        return self.loaded.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
            logits_to_keep=logits_to_keep, **{kwarg: cache}, **kwargs,
        )

    def _prefill(self, handles: list[Handle]) -> None:
        """Prefill requests together (prompts left-padded to the longest), sample each one's first token, and add
        their live sequences to the batch. Requests this model cannot serve get their error and are left out."""
        lm = self.loaded
        if lm is None:
            raise ModelNotLoaded("no model is loaded", retry_after=5.0)
        iv = self.intervention
        ok, specs = [], []
        for h in handles:
            req = h.request
            if req.model is not None and req.model != lm.model_id:
                _tell(h, ModelNotLoaded("the model was switched while this request waited; retry it", retry_after=1.0))
                continue
            try:
                specs.append(self.attachments.compile(req.steering))
            except Exception as e:  # noqa: BLE001 - this request's steering fails it alone
                if not isinstance(e, MillmError):
                    log.exception("steering failed for %s", req.request_id)
                _tell(h, e)
                continue
            ok.append(h)
        if not ok:
            return
        reqs = [h.request for h in ok]
        dec = self._lean_decoder(lm)
        longest = max(len(r.prompt_ids) for r in reqs)
        self.threads.prefill(lm.model, lm.num_parameters, longest * len(reqs))
        dev = lm.device
        pads = [longest - len(r.prompt_ids) for r in reqs]
        pad_id = lm.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad_id] * n + list(r.prompt_ids) for n, r in zip(pads, reqs, strict=True)], device=dev)
        mask = torch.tensor([[0] * n + [1] * len(r.prompt_ids) for n, r in zip(pads, reqs, strict=True)], device=dev)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        plan = self.make_plan(specs, ids, [r.activations for r in reqs])
        cache = kv.new_cache()
        all_logits = any(r.prompt_logprobs for r in reqs)
        started = time.perf_counter()
        if dec is not None and self._graphs is None:
            # The lean step runs the prefill too (causal SDPA, as HF's forward does, with HF's padding mask when
            # padded, or Gemma-2's eager attention with HF's causal, padding and sliding masks; the same bits with
            # F.linear), without HF's per-module Python (about 1 ms of a 2M model's 4.8 ms 32-token prefill), and with
            # the prefill kernel the timing chose (engine/weight_layout.py; oneDNN ran a 350M model's prefill products
            # about 2x faster than MKL on the AMD benchmark machine; it takes the fused q/k/v and gate/up weights).
            # Every prefill, alone or padded with others, with prompt logprobs or without (every position's logits,
            # the last one's computed as without), takes that one kernel: the same products for a prompt either way
            # (its attention, over a left-padded key axis, can differ in the last bits, as HF's padded forward's does).
            if iv is not None:
                iv.set_plan(plan)
            dec.linear = self._prefill_linear
            out = dec.step(ids, positions, mask=prefill_mask(mask) if any(pads) else None, cache=cache,
                           every_position=all_logits)  # (B, T, V) with all_logits, else (B, V)
            prompt_out = out if all_logits else None
            last = out[:, -1, :] if all_logits else out
        else:
            prompt_out = self.forward(ids, mask=mask, positions=positions, cache=cache, plan=plan,
                                      logits_to_keep=0 if all_logits else 1).logits
            last = prompt_out[:, -1, :]
        self.threads.prefilled(time.perf_counter() - started)
        self.prefills += 1
        self.monitor.prompt(iv, lm, [r.request_id for r in reqs], ids, phase="prompt", pads=pads)
        logits = last.float()  # (B, V)
        starts = plans.prompt_accumulators(iv, lm, plan, specs, reqs, ids, pads)
        keep: list[int] = []
        live: list[Row] = []
        for b, (h, req) in enumerate(zip(ok, reqs, strict=True)):
            prompt_lp: tuple[TokenLogprob | None, ...] = ()
            if req.prompt_logprobs and prompt_out is not None:
                prompt_lp = prompt_logprobs(prompt_out[b, pads[b]:].float(), req)
            base_seed = req.params.seed if req.params.seed is not None else int.from_bytes(os.urandom(4), "little")
            evidence, read = starts[b]
            rows = [
                Row(
                    handle=h,
                    choice=c,
                    sampler=RowSampler(req.params, vocab_size=logits.shape[-1], device=dev, seed=base_seed + c),
                    detok=IncrementalDetokenizer(lm.tokenizer),
                    stopper=StopMatcher(req.params.stop),
                    last_token=-1,
                    position=len(req.prompt_ids),
                    evidence=evidence.copy() if evidence is not None else None,
                    reads=read.copy() if read is not None else None,
                )
                for c in range(req.n)
            ]
            # (just before the first tokens, so that both usually reach the event loop in one wake-up)
            h.sink(PromptInfo(prompt_tokens=len(req.prompt_ids), prompt_logprobs=prompt_lp))
            sample_and_emit(lm, logits[b : b + 1].expand(req.n, -1), rows)
            for r in rows:
                if not r.done:
                    keep.append(b)
                    live.append(r)
        if not live:
            return
        if keep != list(range(len(reqs))):
            cache, mask = kv.select(cache, mask, keep)  # repeats rows for n choices, drops finished ones
        if self._graphs is not None:
            self._graphs.join([(layer.keys, layer.values) for layer in cache.layers], lengths=mask.sum(-1).tolist())
        else:
            held = self._full_mask() if self._mask is not None else None
            self._cache, self._mask = kv.merge(self._cache, held, cache, mask)
            self._padded = bool((self._mask == 0).any())
        self._rows.extend(live)
        self._plan = self._plain_greedy = None

    # ------------------------------------------------------------------ decode

    def _step(self) -> None:
        lm = self.loaded
        assert lm is not None and (self._mask is not None or self._graphs is not None)
        rows = self._rows
        for r in rows:
            if r.handle.cancelled:
                self._drop_rows([r for r in rows if r.handle.cancelled], "cancelled")
                if not self._rows:
                    return
                break
        dev = lm.device
        ids, positions = self._step_inputs(dev)
        if self._mask is not None:
            self._mask_owed += 1  # (appended when the mask is read: every step of a padded batch, or rows change)
        iv = self.attachments.intervention  # (read once: `self.intervention` is a property over it)
        if iv is None:
            self._plan = None  # (without an SAE there is no plan: build_plan returns None)
        elif self._plan is None or len(self._plan.steering) != len(self._rows):
            specs = [self.attachments.compile(r.handle.request.steering) for r in self._rows]
            self._plan = self.make_plan(specs, ids, [r.handle.request.activations for r in self._rows])
        elif self._plan.steer_mask is not None:
            self._plan.steer_mask = plans.steer_mask(lm, ids, self._plan.steering)
        dec = self._lean_decoder(lm)
        kernels = self._linears[len(self._rows) > 1]  # (name, function) options, the product timing's pick first
        k = self.threads.decode(lm.model, len(self._rows), self._kernel_names[len(self._rows) > 1])
        if dec is not None:
            dec.linear = kernels[k][1]
        started = time.perf_counter()
        if (self._graphs is not None or dec is not None) and iv is not None:
            iv.set_plan(self._plan)  # (the transformers forward below installs it itself)
        if self._graphs is not None:
            logits = self._graphs.step(ids, positions, max_position=max(r.position for r in self._rows),
                                       intervention=iv, plan=self._plan)
        elif dec is not None:
            assert self._mask is not None  # without graphs, rows always have a mask
            full = self._full_mask() if self._padded else None
            attn_mask = full[:, None, None, :].bool() if full is not None else None  # (B, 1, 1, S)
            logits = dec.step(ids, positions, mask=attn_mask, cache=self._cache)
        else:
            assert self._mask is not None
            out = self.forward(ids, mask=self._full_mask(), positions=positions, cache=self._cache, plan=self._plan)
            logits = out.logits[:, -1, :]
        self.steps += 1
        if iv is not None:  # (both have nothing to do without an SAE)
            plans.accumulate_step(iv, lm, self._plan, self._rows)
            self.monitor.step(iv, lm, [(r.handle.request.request_id, r.choice, r.position, r.last_token)
                                       for r in self._rows])
        for r in self._rows:
            r.position += 1
        if logits.dtype is not torch.float32:
            logits = logits.float()
        plain_greedy = self._plain_greedy
        if plain_greedy is None:
            plain_greedy = self._plain_greedy = greedy_plain(self._rows, logits)
        written = self._emit_step(lm, logits, plain_greedy)
        self.threads.decoded(time.perf_counter() - started - written)  # (the writes run every few steps: not timed)
        finished = [r for r in self._rows if r.done]
        if finished:
            self._drop_rows(finished, None)

    def _emit_step(self, lm: LoadedModel, logits: torch.Tensor, plain_greedy: bool) -> float:
        """sample_and_emit for the batch's rows, then the work their sinks deferred (`defer`), now or at a later step's
        end; the seconds that work took now."""
        deferred: list[Callable[[], None]] = []
        self._deferred, self._deferring = deferred, threading.get_ident()
        try:
            sample_and_emit(lm, logits, self._rows, plain_greedy=plain_greedy)
        finally:
            self._deferred = None
            spent = self.deferred.step_ended(deferred)
        return spent

    def _step_inputs(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The next decode step's token ids and positions, (B, 1) each. On the CPU both are views of one buffer per
        batch size, refilled in place through a memoryview (two `torch.tensor` calls from nested lists cost ~35 us right
        after a forward, against ~1 us); the step only reads them (the lean step, the transformers forward and
        `plans.steer_mask` make new tensors from them), and the forward is over before they are refilled."""
        rows = self._rows
        if dev != _CPU:
            return (torch.tensor([[r.last_token] for r in rows], device=dev),
                    torch.tensor([[r.position] for r in rows], device=dev))
        n = len(rows)
        buf = self._inputs
        if buf is None or len(buf[2]) != 2 * n:
            both = torch.empty((2, n, 1), dtype=torch.long)
            buf = self._inputs = (both[0], both[1], both.numpy().data.cast("B").cast("q"))
        flat = buf[2]  # ids, then positions
        if n == 1:  # (one stream: no enumerate, no index arithmetic; this runs first after the forward)
            r = rows[0]
            flat[0], flat[1] = r.last_token, r.position
            return buf[0], buf[1]
        for b, r in enumerate(rows):
            flat[b] = r.last_token
            flat[n + b] = r.position
        return buf[0], buf[1]

    def _full_mask(self) -> torch.Tensor:
        """The batch's attention mask (B, S) with the columns its decode steps owe it. An unpadded batch on the lean
        step never reads it, so it grows only when read, not by a concatenation every step."""
        assert self._mask is not None
        if self._mask_owed:
            owed = torch.ones((self._mask.shape[0], self._mask_owed), dtype=self._mask.dtype, device=self._mask.device)
            self._mask = torch.cat([self._mask, owed], 1)
        self._mask_owed = 0
        return self._mask

    def _lean_decoder(self, lm: LoadedModel) -> LlamaDecoder | None:
        """The decoder for the loaded model, set up (weight layout included) before its first forward here."""
        if self._decoder_model is not lm.model or (self._decoder is not None and not self._decoder.fresh()):
            self._decoder_model = lm.model
            kernels = Kernels()
            if lm.device.type == "cpu" and lm.quantization == "none":
                self.threads.for_kernel_timing()
                kernels = choose_kernels(lm.model, fused=LlamaDecoder.family(lm.model) is not None)
            self._linears = _STORED  # (drops a previous model's packed weights before packing this one's)
            self._prefill_linear = prefill_fn(kernels.prefill)
            self._decoder = LlamaDecoder.for_model(lm.model, linear=linear_fn(kernels.one))
            if self._decoder is not None:
                self._decoder.fused_prefill = kernels.prefill == "onednn"
            options: tuple[tuple[Choice, ...], ...] = (
                (kernels.options(False), kernels.options(True)) if self._decoder else ((kernels.one,),) * 2)
            if self.cuda_graphs:  # (the static-cache path reads its tensors' storage; a packed weight has none)
                options = tuple(tuple(dict.fromkeys("onednn" if c == PACKED else c for c in cs)) for cs in options)
            fns: dict[str, LinearFn] = {c: linear_fn(c) for cs in options for c in cs if c != PACKED}
            if self._decoder is not None and any(PACKED in cs for cs in options):
                fns[PACKED] = PackedLinear(self._decoder.product_weights())
            self._linears = tuple(tuple((c, fns[c]) for c in cs) for cs in options)
            self._kernel_names = tuple(tuple(cs) for cs in options)
            self._graphs = None
            if self.cuda_graphs and self._decoder is not None and not self._decoder.gemma:
                capture = lm.device.type == "cuda"
                self._graphs = GraphDecoder(self._decoder, slots=self.max_batch_size,
                                            context_length=lm.context_length, capture=capture)
            elif self.cuda_graphs:
                log.warning("CUDA graphs need the lean Llama decode step; %s decodes without them",
                            type(lm.model).__name__)
            log.info("decode path: %s", f"lean {LlamaDecoder.family(lm.model)} step" if self._decoder
                     else "transformers forward")
            if self._graphs is not None and not self._graphs.capture:
                log.warning("CUDA graphs need a CUDA device: decoding over the static cache without capture")
        return self._decoder

    def _drop_rows(self, rows: list[Row], reason: str | None) -> None:
        if not rows:
            return
        gone = {id(r) for r in rows}
        if reason is not None:
            for r in rows:
                r.done = True
        keep = [i for i, r in enumerate(self._rows) if id(r) not in gone]
        self._rows = [self._rows[i] for i in keep]
        self._plan = self._plain_greedy = None
        if self._graphs is not None:
            self._graphs.select(keep)
        elif not self._rows:
            self._cache, self._mask, self._mask_owed = None, None, 0
        else:
            assert self._mask is not None
            self._cache, self._mask = kv.select(self._cache, self._full_mask(), keep)
            self._padded = bool((self._mask == 0).any())

    def _fail_all(self, message: str, failure: MillmError | None = None) -> None:
        for r in self._rows:
            _tell(r.handle, GenerationEvent(choice=r.choice, finish_reason="error", error=message, failure=failure))
        self._rows, self._cache, self._mask, self._plan = [], None, None, None
        self._mask_owed, self._plain_greedy = 0, None
        if self._graphs is not None:
            self._graphs.clear()
