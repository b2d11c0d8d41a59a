"""One prompt under several steering variants, as rows of one batch (`POST /api/compare`).

Every variant is its own engine request with the same prompt ids and sampling parameters (one seed for
all), submitted together so the worker prefills them in one forward pass and decodes them as rows of one
batch. Rows are independent, so each variant's tokens equal what the same request sent alone produces.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from millm.engine.types import SamplingParams, SteeringSpec
from millm.errors import InvalidRequest, MillmError, ModelNotLoaded
from millm.protocol import compare as c
from millm.protocol.openai import AppliedSteering, SteeringIn
from millm.services import prompts
from millm.services.generation import GenerationService


@dataclass
class _Variant:
    index: int
    label: str | None
    spec: SteeringSpec | None
    receipt: AppliedSteering
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    events: list[Any] = field(default_factory=list)  # final events (receipt evidence is read from them)


@dataclass
class ComparePlan:
    id: str
    model: str
    seed: int
    prompt_tokens: int
    variants: list[_Variant]
    stream: bool
    frames: AsyncIterator[Any]

    def start(self) -> c.CompareStart:
        return c.CompareStart(id=self.id, model=self.model, seed=self.seed, prompt_tokens=self.prompt_tokens,
                              variants=[c.CompareVariantStart(index=v.index, label=v.label, steering=v.receipt)
                                        for v in self.variants])


class CompareService:
    def __init__(self, *, generation: GenerationService) -> None:
        self.generation = generation

    def _variant_steering(self, req: c.CompareRequest, profile: str | None) -> list[_Variant]:
        if len(req.variants) > c.MAX_VARIANTS:
            raise InvalidRequest(f"at most {c.MAX_VARIANTS} variants can be compared in one call, got "
                                 f"{len(req.variants)}", param=f"variants[{c.MAX_VARIANTS}]")
        out = []
        for i, v in enumerate(req.variants):
            steering = v.steering if v.steering is not None else SteeringIn(features=[])
            try:
                spec, receipt = self.generation.steering.resolve(steering, model_profile=profile)
            except MillmError as e:
                e.param = f"variants[{i}].{e.param}" if e.param else f"variants[{i}].steering"
                raise
            out.append(_Variant(index=i, label=v.label, spec=spec, receipt=receipt))
        return out

    async def compare(self, req: c.CompareRequest) -> ComparePlan:
        gen = self.generation
        model = req.model or gen.served_name()
        if model is None:
            raise ModelNotLoaded("no model is loaded", retry_after=5.0)
        lm, profile = gen.resolve_model(model)
        version = gen.steering.version
        variants = self._variant_steering(req, profile)
        if req.messages is not None:
            ids = prompts.render_chat(lm.tokenizer, req.messages)
            param = "messages"
        else:
            assert req.prompt is not None
            all_ids = prompts.tokenize_prompts(lm.tokenizer, req.prompt, vocab_size=lm.vocab_size, param="prompt")
            if len(all_ids) != 1:
                raise InvalidRequest("compare takes one prompt: a string or one list of token ids", param="prompt")
            ids, param = all_ids[0], "prompt"
        prompts.check_context(len(ids), lm.context_length, param=param)
        seed = req.seed if req.seed is not None else int.from_bytes(os.urandom(4), "little")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        params = SamplingParams(
            max_tokens=prompts.clamp_max_tokens(req.max_tokens, len(ids), lm.context_length),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, top_k=max(0, req.top_k or 0), seed=seed,
            frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
            stop=tuple(stop), ignore_eos=req.ignore_eos,
        )
        rid = f"cmp-{uuid.uuid4().hex[:24]}"
        run = gen.client.submit(lm, [ids] * len(variants), n=1, params=params, steering=None, prompt_logprobs=False,
                          prefix=rid, steerings=[v.spec for v in variants])
        run.steering_version = version
        try:
            await gen.client.await_prefill(run, len(variants))
        except MillmError:
            gen.log_request(rid, model, run, "error", "compare")
            raise

        async def frames() -> AsyncIterator[Any]:
            outcome = "cancelled"
            finished: set[int] = set()
            sent: set[int] = set()
            try:
                async for i, ev in gen.client.events(run, len(variants)):
                    v = variants[i]
                    v.text += ev.text
                    v.token_ids.extend(ev.token_ids)
                    if ev.text or ev.token_ids:
                        yield c.CompareDelta(variant=i, text=ev.text, token_ids=list(ev.token_ids))
                    if ev.finish_reason is None:
                        continue
                    v.finish_reason = ev.finish_reason
                    v.events.append(ev)
                    v.receipt = gen.final_receipt(v.receipt, run, choices=[i])
                    finished.add(i)
                    if 0 in finished:  # a done frame says where it departs from variant 0: wait for that one
                        for j in sorted(finished - sent):
                            sent.add(j)
                            yield self._done(variants, j)
                outcome = "ok"
                yield c.CompareEnd(id=rid, usage=usage(run.prompt_tokens, run.completion_tokens))
            except MillmError:
                outcome = "error"
                raise
            finally:
                gen.log_request(rid, model, run, outcome, "compare")

        return ComparePlan(id=rid, model=model, seed=seed, prompt_tokens=len(ids), variants=variants,
                           stream=req.stream, frames=frames())

    @staticmethod
    def _done(variants: list[_Variant], j: int) -> c.CompareDone:
        v = variants[j]
        return c.CompareDone(
            index=j, label=v.label, text=v.text, tokens=len(v.token_ids), token_ids=v.token_ids,
            finish_reason=v.finish_reason, steering=v.receipt,
            diverges_at=None if j == 0 else c.diverges_at(variants[0].token_ids, v.token_ids),
        )

    async def collect(self, plan: ComparePlan) -> c.CompareResult:
        """The non-streamed result: run the frames to the end."""
        results: dict[int, c.CompareVariantResult] = {}
        end: c.CompareEnd | None = None
        async for frame in plan.frames:
            if isinstance(frame, c.CompareDone):
                results[frame.index] = c.CompareVariantResult(**frame.model_dump(exclude={"type"}))
            elif isinstance(frame, c.CompareEnd):
                end = frame
        assert end is not None
        return c.CompareResult(id=plan.id, model=plan.model, seed=plan.seed, prompt_tokens=plan.prompt_tokens,
                               variants=[results[i] for i in sorted(results)], usage=end.usage)


def usage(prompt_tokens: list[int], completion_tokens: int) -> c.CompareUsage:
    total_prompt = sum(prompt_tokens)
    return c.CompareUsage(prompt_tokens=total_prompt, completion_tokens=completion_tokens,
                          total_tokens=total_prompt + completion_tokens)

