"""Chat and text completions: OpenAI requests in, protocol responses and chunks out.

This layer resolves the model (including `<model>+<profile>` virtual ids) and steering,
renders and tokenises the prompt, submits engine requests through `EngineClient`
(services/engine_client.py: submission, the event relay, waiting for prefill) and turns worker
events into response objects. Streams yield each chunk's JSON text; a chunk that carries only one
choice's text is spliced into a template dumped once per choice (services/text_chunks.py), rather
than built and dumped as a model per token.

Streaming methods first wait for the worker to accept and prefill the request, so a failure
before the first token is an ordinary error response; after that, errors surface as
exceptions from the chunk iterator. Leaving the iterator early (a client disconnect) cancels
the request, which the worker drops within one decode step.

About 480 lines on purpose: chat and completions share the request checks and receipts here, and each
reads top to bottom (full, streamed, scored); logprob shapes are in services/logprobs.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from millm.engine.grammar import Constraint
from millm.engine.model_loading import LoadedModel
from millm.engine.types import ActivationRead, SamplingParams
from millm.engine.worker import Worker
from millm.errors import InvalidRequest, MillmError, ModelNotFound, ModelNotLoaded
from millm.logs import steering_summary
from millm.protocol import openai as p
from millm.services import logprobs as logprobs_shape
from millm.services import prompts, structured, tools
from millm.services.engine_client import BACKGROUND, EngineClient, Run
from millm.services.metrics import Metrics
from millm.services.steering import SteeringService
from millm.services.text_chunks import ChunkStream, TextChunks

__all__ = ["BACKGROUND", "GenerationService", "Result"]

log = logging.getLogger("millm.requests")

@dataclass
class Result:
    """A response body, or the chunk JSON texts when streaming (a `ChunkStream`), plus the steering receipt."""

    value: Any
    applied: p.AppliedSteering
    stream: bool


class GenerationService:
    def __init__(self, *, worker: Worker, steering: SteeringService, metrics: Metrics,
                 served_name: Callable[[], str | None],
                 on_receipt: Callable[[str, p.AppliedSteering], None] | None = None) -> None:
        self.worker = worker
        self.on_receipt = on_receipt  # the monitor keeps each request's final receipt with its history
        self.steering = steering
        self.metrics = metrics
        self.served_name = served_name
        self.client = EngineClient(worker=worker, metrics=metrics)
        self.boot_error: str | None = None  # why the start-up model did not load (set by the Runtime)

    # ------------------------------------------------------------------ models

    def resolve_model(self, model: str) -> tuple[LoadedModel, str | None]:
        lm = self.worker.loaded
        name = self.served_name()
        if lm is None or name is None:
            if self.boot_error is not None:  # the start-up load failed: retrying will not help
                raise ModelNotLoaded(f"no model is loaded: the configured model failed to load at start-up: "
                                     f"{self.boot_error}; load one with POST /api/models/load",
                                     code="model_load_failed")
            raise ModelNotLoaded("no model is loaded", retry_after=5.0)
        if model == name:
            return lm, None
        base, sep, profile = model.rpartition("+")
        # Any stored profile resolves here; one that does not fit the loaded model/SAE is then a
        # 400 saying why (from steering.resolve), not a bare "model does not exist".
        if sep and base == name and profile and self.steering.has_profile(profile):
            return lm, profile
        raise ModelNotFound(f"the model {model!r} does not exist; loaded: {name!r}", param="model")

    # ------------------------------------------------------------------ shared

    def _params(self, req: p.SamplingFields, *, max_tokens: int, logprobs: int | None,
                constraint: Constraint | None = None) -> SamplingParams:
        temperature = 1.0 if req.temperature is None else req.temperature
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=max(0, req.top_k or 0),
            seed=req.seed,
            frequency_penalty=req.frequency_penalty,
            presence_penalty=req.presence_penalty,
            logit_bias=tuple((int(k), float(v)) for k, v in (req.logit_bias or {}).items()),
            stop=tuple(req.stop_list),
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            constraint=constraint,
            allowed_token_ids=tuple(req.allowed_token_ids or ()),
        )

    def _check_bias(self, req: p.SamplingFields, vocab: int) -> None:
        for k in req.logit_bias or {}:
            if not 0 <= int(k) < vocab:
                raise InvalidRequest(f"logit_bias token id {k} is out of range [0, {vocab})", param="logit_bias")
        for i, t in enumerate(req.allowed_token_ids or ()):
            if not 0 <= t < vocab:
                raise InvalidRequest(f"token id {t} is out of range [0, {vocab})", param=f"allowed_token_ids[{i}]")

    def log_request(self, rid: str, model: str, run: Run, outcome: str, endpoint: str) -> None:
        total = time.monotonic() - run.started
        ttft = (run.first_token_at - run.started) if run.first_token_at else None
        prompt_tokens = sum(run.prompt_tokens)
        self.metrics.observe_request(endpoint=endpoint, outcome=outcome, seconds=total, ttft=ttft,
                                     prompt_tokens=prompt_tokens, completion_tokens=run.completion_tokens,
                                     model=self.served_name() or model, steering_source=run.steering_source)
        log.info(
            "request done",
            extra={"request_id": rid, "model": model, "prompt_tokens": prompt_tokens,
                   "completion_tokens": run.completion_tokens,
                   "ttft_ms": round(ttft * 1000, 1) if ttft is not None else None,
                   "total_ms": round(total * 1000, 1), "outcome": outcome, "endpoint": endpoint,
                   "steering": run.steering},
        )

    def final_receipt(self, applied: p.AppliedSteering, run: Run, *,
                      choices: list[int] | None = None) -> p.AppliedSteering:
        """The receipt at the end of a request: whether the server-wide steering changed meanwhile, and each choice's
        evidence. `choices`: the global choice indices the receipt covers (default: all)."""
        update: dict[str, Any] = {"server_steering_changed": self.steering.version != run.steering_version}
        lm = self.worker.loaded
        evidence = []
        for c in sorted(run.finals) if choices is None else choices:
            ev = run.finals[c].evidence if c in run.finals else None
            if ev is None:
                continue
            evidence.append(p.ChoiceEvidence(
                choice=c,
                features=[p.FeatureEvidence(
                    index=f.index, positions_steered=ev.positions_steered, positions_skipped=ev.positions_skipped,
                    tokens=ev.tokens,
                    before=p.ActivationSummary(mean=f.before_mean, max=f.before_max) if f.before_mean is not None
                    else None,
                    after=p.ActivationSummary(mean=f.after_mean, max=f.after_max) if f.after_mean is not None
                    else None) for f in ev.features],
                skipped=[p.SkippedPosition(position=pos, token=lm.tokenizer.decode([tok]) if lm else str(tok))
                         for pos, tok in ev.skipped]))
        if evidence:
            update["evidence"] = evidence
            if any(e.features and e.features[0].before is not None for e in evidence):
                update["evidence_value"] = self.steering.evidence_value()
        final = applied.model_copy(update=update)
        if self.on_receipt is not None:
            for h in run.handles:
                self.on_receipt(h.request.request_id, final)
        return final

    def _activation_read(self, req: p.SamplingFields, *, prompt_tokens: int, max_tokens: int,
                         choices: int) -> ActivationRead | None:
        """The request's `activations` object, checked against the attached SAE and the size bound."""
        a = req.activations
        if a is None:
            return None
        d_sae = self.steering.require_sae("activations").d_sae
        for i, index in enumerate(a.features or ()):
            if not 0 <= index < d_sae:
                raise InvalidRequest(f"feature index {index} is out of range: the attached SAE has d_sae={d_sae}",
                                     param=f"activations.features[{i}]")
        positions = {"prompt": prompt_tokens, "completion": max_tokens, "all": prompt_tokens + max_tokens,
                     "last": 1}[a.positions]
        per_token = len(a.features) if a.features is not None else a.top_k or 0
        values = positions * per_token * choices
        if values > p.MAX_ACTIVATION_VALUES:
            raise InvalidRequest(
                f"activations would return up to {values:,} values ({positions} positions x {per_token} features x "
                f"{choices} choices); the limit is {p.MAX_ACTIVATION_VALUES:,}: ask for fewer features, fewer "
                "positions ('last', 'completion') or fewer tokens", param="activations")
        return ActivationRead(features=tuple(a.features) if a.features is not None else None, top_k=a.top_k or 0,
                              positions=a.positions, point=a.read)

    def _final_info(self, info: p.MillmInfo, run: Run) -> p.MillmInfo:
        """`millm` at the end of a request: the final receipt, and the request's own activations."""
        acts = None
        if run.read is not None:
            lm = self.worker.loaded
            dec = lm.tokenizer.decode if lm is not None else (lambda ids: str(ids[0]))
            acts = [p.ChoiceActivations(choice=c, read=run.read.point, tokens=[p.TokenActivationsOut(
                position=t.position, token_id=t.token_id, token=dec([t.token_id]), phase=t.phase,
                activations=[p.FeatureActivationOut(index=i, value=v, label=self.steering.label(i))
                             for i, v in zip(t.indices, t.values, strict=True)])
                for t in ev.activations or ()]) for c, ev in sorted(run.finals.items())]
        return p.MillmInfo(steering=self.final_receipt(info.steering, run), activations=acts)

    # ------------------------------------------------------------------ chat

    async def chat(self, req: p.ChatCompletionRequest) -> Result:
        lm, profile = self.resolve_model(req.model)
        constraint = structured.response_constraint(lm, req.response_format)
        plan = tools.plan_for(lm, req)
        if plan is not None and plan.constraint is not None:
            constraint = plan.constraint  # a required or named call is the whole reply
        self._check_bias(req, lm.vocab_size)
        version = self.steering.version
        spec, applied = self.steering.resolve(req.steering, model_profile=profile)
        ids = await prompts.off_loop(prompts.text_size(req.messages), prompts.render_chat, lm.tokenizer, req.messages,
                                     context_length=lm.context_length, tools=plan.template_tools if plan else None,
                                     add_generation_prompt=req.add_generation_prompt,
                                     continue_final_message=req.continue_final_message)
        if plan is not None and ids == await prompts.off_loop(prompts.text_size(req.messages), prompts.render_chat,
                                                              lm.tokenizer, req.messages,
                                                              context_length=lm.context_length):
            raise InvalidRequest("this model's chat template does not render tools, so it cannot take them",
                                 param="tools", code="tools_unsupported")
        prompts.check_context(len(ids), lm.context_length, param="messages")
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if requested == 0 and req.prompt_logprobs is None:
            raise InvalidRequest("max_tokens must be at least 1 unless prompt_logprobs is set",
                                 param="max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens")
        if requested == 0 and req.stream:
            raise InvalidRequest("a scoring request (max_tokens 0) cannot be streamed", param="stream")
        max_tokens = prompts.clamp_max_tokens(requested, len(ids), lm.context_length)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        read = self._activation_read(req, prompt_tokens=len(ids), max_tokens=max_tokens, choices=req.n)
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        params = self._params(req, max_tokens=max(1, max_tokens), logprobs=logprobs, constraint=constraint)
        run = self.client.submit(lm, [ids], n=req.n, params=params, steering=spec,
                           prompt_logprobs=req.prompt_logprobs is not None, prefix=rid,
                           prompt_top_logprobs=req.prompt_logprobs, activations=read, stream=req.stream)
        run.steering, run.steering_source = steering_summary(applied.model_dump()), applied.source
        run.steering_version = version
        info = p.MillmInfo(steering=applied)
        created = int(time.time())
        try:
            await self.client.await_prefill(run, 1)
        except MillmError:
            self.log_request(rid, req.model, run, "error", "chat")
            raise
        if max_tokens == 0:
            run.cancel()
            return Result(self._chat_scored(req, lm, run, rid, created, info), applied, False)
        if req.stream:
            text_chunk = self._chat_text_chunks(req, rid, created)
            plain = None if plan is not None else (  # what _chat_stream yields for a token without logprobs
                lambda c, ev: None if ev.logprobs else text_chunk(c, ev.text) if ev.text else "")
            return Result(ChunkStream(self._chat_stream(req, lm, run, rid, created, info, plan, text_chunk), run, plain),
                          applied, True)
        result = await self._chat_full(req, lm, run, rid, created, info, plan)
        if req.prompt_logprobs is not None:
            result.prompt_logprobs = logprobs_shape.chat_prompt_logprobs(lm, run.prompt_logprobs[0])
        return Result(result, applied, False)

    def _chat_scored(self, req: p.ChatCompletionRequest, lm: LoadedModel, run: Run, rid: str, created: int,
                     info: p.MillmInfo) -> p.ChatCompletion:
        """A scoring request (max_tokens 0): the prompt's logprobs, no generated tokens."""
        self.log_request(rid, req.model, run, "ok", "chat")
        choices = [p.ChatChoice(index=c, message=p.AssistantMessage(content=""), finish_reason="length",
                                logprobs=p.ChatLogprobs(content=[]) if req.logprobs else None) for c in range(req.n)]
        usage = p.Usage(prompt_tokens=run.prompt_tokens[0], completion_tokens=0, total_tokens=run.prompt_tokens[0])
        return p.ChatCompletion(id=rid, created=created, model=req.model, choices=choices, usage=usage, millm=info,
                                prompt_logprobs=logprobs_shape.chat_prompt_logprobs(lm, run.prompt_logprobs[0]))

    async def _chat_full(self, req: p.ChatCompletionRequest, lm: LoadedModel, run: Run, rid: str, created: int,
                         info: p.MillmInfo, plan: tools.ToolPlan | None = None) -> p.ChatCompletion:
        texts = [""] * req.n
        reasons: list[str | None] = [None] * req.n
        lps: list[list[p.ChatLogprobContent]] = [[] for _ in range(req.n)]
        outcome = "error"
        try:
            async for c, ev in self.client.events(run, 1):
                texts[c] += ev.text
                chunk_lp = logprobs_shape.chat_logprobs(lm, ev)
                if chunk_lp and chunk_lp.content:
                    lps[c].extend(chunk_lp.content)
                if ev.finish_reason:
                    reasons[c] = ev.finish_reason
            outcome = "ok"
        except asyncio.CancelledError:  # the client went away
            outcome = "cancelled"
            raise
        finally:
            self.log_request(rid, req.model, run, outcome, "chat")
        choices = []
        for c in range(req.n):
            message = p.AssistantMessage(content=texts[c])
            if plan is not None:
                content, calls = plan.fmt.parse(texts[c])
                if calls:
                    message = p.AssistantMessage(content=content or None, tool_calls=plan.to_openai(calls))
                    reasons[c] = "tool_calls"
            choices.append(p.ChatChoice(index=c, message=message, finish_reason=reasons[c],
                                        logprobs=p.ChatLogprobs(content=lps[c]) if req.logprobs else None))
        usage = p.Usage(prompt_tokens=run.prompt_tokens[0], completion_tokens=run.completion_tokens,
                        total_tokens=run.prompt_tokens[0] + run.completion_tokens)
        info = self._final_info(info, run)
        return p.ChatCompletion(id=rid, created=created, model=req.model, choices=choices, usage=usage, millm=info)

    @staticmethod
    def _chat_text_chunks(req: p.ChatCompletionRequest, rid: str, created: int) -> TextChunks:
        return TextChunks(lambda c, text: p.ChatCompletionChunk(
            id=rid, created=created, model=req.model,
            choices=[p.ChatChunkChoice(index=c, delta=p.ChatDelta(content=text))]))

    async def _chat_stream(self, req: p.ChatCompletionRequest, lm: LoadedModel, run: Run, rid: str, created: int,
                           info: p.MillmInfo, plan: tools.ToolPlan | None = None,
                           text_chunk: TextChunks | None = None) -> AsyncIterator[str]:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(choices: list[p.ChatChunkChoice], **kw: Any) -> str:
            return p.ChatCompletionChunk(id=rid, created=created, model=req.model, choices=choices,
                                         **kw).model_dump_json()

        if text_chunk is None:
            text_chunk = self._chat_text_chunks(req, rid, created)
        outcome = "cancelled"
        try:
            for c in range(req.n):
                yield chunk([p.ChatChunkChoice(index=c, delta=p.ChatDelta(role="assistant", content=""))],
                            millm=info if c == 0 else None)
            finished = 0
            splitters = [tools.StreamSplitter(plan.fmt, streamer=plan.streamer()) for _ in range(req.n)] \
                if plan is not None else None

            def call_chunk(c: int, d: tools.CallDelta) -> str:  # a tool call's id and name, or arguments
                delta = p.ToolCallDelta(index=d.index, id=d.id, type="function" if d.id else None,
                                        function=p.ToolCallFunctionDelta(name=d.name, arguments=d.arguments))
                return chunk([p.ChatChunkChoice(index=c, delta=p.ChatDelta(tool_calls=[delta]))])

            async for c, ev in self.client.events(run, 1):
                lp = logprobs_shape.chat_logprobs(lm, ev)
                text = splitters[c].push(ev.text) if splitters is not None else ev.text
                if lp:
                    yield chunk([p.ChatChunkChoice(index=c, delta=p.ChatDelta(content=text), logprobs=lp)])
                elif text:
                    yield text_chunk(c, text)
                if splitters is not None:
                    for d in splitters[c].take_deltas():  # calls as they are written (services/tools/streaming.py)
                        yield call_chunk(c, d)
                if ev.finish_reason:
                    reason: str = ev.finish_reason
                    if splitters is not None and plan is not None:
                        rest, calls = splitters[c].finish()
                        announced = splitters[c].announced
                        if rest and not announced:
                            yield text_chunk(c, rest)
                        for d in splitters[c].finish_deltas(plan.select(calls)):
                            yield call_chunk(c, d)
                        if calls or (announced and reason == "stop"):
                            reason = "tool_calls"
                    finished += 1
                    # The last chunk carries the full receipt (the usage chunk's, when one follows).
                    last = finished == req.n and not include_usage
                    yield chunk([p.ChatChunkChoice(index=c, delta=p.ChatDelta(), finish_reason=reason)],
                                millm=self._final_info(info, run) if last else None)
            if include_usage:
                yield chunk([], usage=p.Usage(prompt_tokens=run.prompt_tokens[0],
                                              completion_tokens=run.completion_tokens,
                                              total_tokens=run.prompt_tokens[0] + run.completion_tokens),
                            millm=self._final_info(info, run))
            outcome = "ok"
        except MillmError:
            outcome = "error"
            raise
        finally:
            self.log_request(rid, req.model, run, outcome, "chat")

    # ------------------------------------------------------------------ completions

    async def completion(self, req: p.CompletionRequest) -> Result:
        lm, profile = self.resolve_model(req.model)
        if req.suffix:
            raise InvalidRequest("suffix is not supported by this model", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise InvalidRequest("best_of other than n is not supported", param="best_of")
        constraint = structured.response_constraint(lm, req.response_format)
        self._check_bias(req, lm.vocab_size)
        version = self.steering.version
        spec, applied = self.steering.resolve(req.steering, model_profile=profile)
        all_ids = await prompts.off_loop(prompts.text_size(req.prompt), prompts.tokenize_prompts, lm.tokenizer,
                                         req.prompt, vocab_size=lm.vocab_size, param="prompt",
                                         context_length=lm.context_length)
        longest = max(len(i) for i in all_ids)
        prompts.check_context(longest, lm.context_length, param="prompt")
        max_tokens = prompts.clamp_max_tokens(req.max_tokens, longest, lm.context_length)
        rid = f"cmpl-{uuid.uuid4().hex[:24]}"
        echo_lp = req.echo and req.logprobs is not None
        if max_tokens == 0 and not req.echo:
            raise InvalidRequest("max_tokens must be at least 1 unless echo is set", param="max_tokens")
        params = self._params(req, max_tokens=max(1, max_tokens), logprobs=req.logprobs, constraint=constraint)
        read = self._activation_read(req, prompt_tokens=longest, max_tokens=max(1, max_tokens),
                                     choices=len(all_ids) * req.n)
        run = self.client.submit(lm, all_ids, n=req.n, params=params, steering=spec, prompt_logprobs=echo_lp, prefix=rid,
                           activations=read, stream=req.stream)
        run.steering, run.steering_source = steering_summary(applied.model_dump()), applied.source
        run.steering_version = version
        created = int(time.time())
        info = p.MillmInfo(steering=applied)
        try:
            await self.client.await_prefill(run, len(all_ids))
        except MillmError:
            self.log_request(rid, req.model, run, "error", "completions")
            raise
        if max_tokens == 0:
            run.cancel()
        if req.stream:
            text_chunk = self._completion_text_chunks(req, rid, created)
            no_logprobs = req.logprobs is None

            def plain(c: int, ev: Any) -> str | None:  # what _completion_stream yields for a token that is not the last
                return text_chunk(c, ev.text) if no_logprobs or not ev.logprobs else None

            return Result(ChunkStream(self._completion_stream(req, lm, run, rid, created, info, all_ids, text_chunk),
                                      run, plain), applied, True)
        return Result(await self._completion_full(req, lm, run, rid, created, info, all_ids, max_tokens == 0),
                      applied, False)

    def _echo(self, lm: LoadedModel, ids: list[int]) -> str:
        return lm.tokenizer.decode(ids, skip_special_tokens=True)

    async def _completion_full(self, req: p.CompletionRequest, lm: LoadedModel, run: Run, rid: str, created: int,
                               info: p.MillmInfo, all_ids: list[list[int]], echo_only: bool) -> p.Completion:
        total = len(all_ids) * req.n
        texts = [self._echo(lm, all_ids[c // req.n]) if req.echo else "" for c in range(total)]
        reasons: list[str | None] = ["length"] * total if echo_only else [None] * total
        token_lps: list[list[Any]] = [[] for _ in range(total)]
        outcome = "error"
        try:
            if not echo_only:
                async for c, ev in self.client.events(run, len(all_ids)):
                    texts[c] += ev.text
                    token_lps[c].extend(ev.logprobs)
                    if ev.finish_reason:
                        reasons[c] = ev.finish_reason
            outcome = "ok"
        except asyncio.CancelledError:  # the client went away
            outcome = "cancelled"
            raise
        finally:
            self.log_request(rid, req.model, run, outcome, "completions")
        choices = []
        for c in range(total):
            logprobs = None
            if req.logprobs is not None:
                prompt_part = list(run.prompt_logprobs[c // req.n]) if req.echo else []
                entries = prompt_part + token_lps[c]
                logprobs, _ = logprobs_shape.completion_logprobs(lm, entries, 0)
                if req.echo:
                    first_ids = all_ids[c // req.n]
                    logprobs.tokens[0] = lm.tokenizer.decode([first_ids[0]])
            choices.append(p.CompletionChoice(index=c, text=texts[c], logprobs=logprobs, finish_reason=reasons[c]))
        prompt_tokens = sum(run.prompt_tokens)
        usage = p.Usage(prompt_tokens=prompt_tokens, completion_tokens=run.completion_tokens,
                        total_tokens=prompt_tokens + run.completion_tokens)
        info = self._final_info(info, run)
        return p.Completion(id=rid, created=created, model=req.model, choices=choices, usage=usage, millm=info)

    @staticmethod
    def _completion_text_chunks(req: p.CompletionRequest, rid: str, created: int) -> TextChunks:
        return TextChunks(lambda c, text: p.Completion(
            id=rid, created=created, model=req.model,
            choices=[p.CompletionChoice(index=c, text=text, finish_reason=None)]))

    async def _completion_stream(self, req: p.CompletionRequest, lm: LoadedModel, run: Run, rid: str,
                                 created: int, info: p.MillmInfo, all_ids: list[list[int]],
                                 text_chunk: TextChunks | None = None) -> AsyncIterator[str]:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        outcome = "cancelled"
        offsets = [0] * (len(all_ids) * req.n)

        def chunk(choices: list[p.CompletionChoice], **kw: Any) -> str:
            return p.Completion(id=rid, created=created, model=req.model, choices=choices, **kw).model_dump_json()

        if text_chunk is None:
            text_chunk = self._completion_text_chunks(req, rid, created)

        try:
            if req.echo:
                for c in range(len(all_ids) * req.n):
                    text = self._echo(lm, all_ids[c // req.n])
                    offsets[c] = len(text)
                    yield chunk([p.CompletionChoice(index=c, text=text, finish_reason=None)], millm=info)
            finished, total = 0, len(all_ids) * req.n
            async for c, ev in self.client.events(run, len(all_ids)):
                logprobs = None
                if req.logprobs is not None and ev.logprobs:
                    logprobs, offsets[c] = logprobs_shape.completion_logprobs(lm, list(ev.logprobs), offsets[c])
                if logprobs is None and ev.finish_reason is None:
                    yield text_chunk(c, ev.text)
                    continue
                finished += ev.finish_reason is not None
                last = finished == total and ev.finish_reason is not None and not include_usage
                yield chunk([p.CompletionChoice(index=c, text=ev.text, logprobs=logprobs,
                                                finish_reason=ev.finish_reason)],
                            millm=self._final_info(info, run) if last else None)
            if include_usage:
                pt = sum(run.prompt_tokens)
                yield chunk([], usage=p.Usage(prompt_tokens=pt, completion_tokens=run.completion_tokens,
                                              total_tokens=pt + run.completion_tokens),
                            millm=self._final_info(info, run))
            outcome = "ok"
        except MillmError:
            outcome = "error"
            raise
        finally:
            self.log_request(rid, req.model, run, outcome, "completions")
