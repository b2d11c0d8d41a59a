"""Embeddings from a causal LM.

For each input: the hidden states of the last layer as the model returns them (after the
model's final norm, i.e. `hidden_states[-1]`), pooled over the tokens (`pooling`: mean by default,
or the last or first token's state), then L2-normalised unless `normalize` is false. An input
longer than the context is a 400 naming it (never truncated). Steering and monitoring apply exactly as in generation. Returned as float
lists or as base64 of little-endian float32 (what the OpenAI SDKs request by default).
"""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import torch

from millm.engine.types import MonitorRecord, SteeringSpec
from millm.engine.worker import Worker
from millm.errors import InvalidRequest
from millm.protocol import openai as p
from millm.services import prompts
from millm.services.generation import GenerationService


def _pool(hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    # hidden: (T, D) -> (D,)
    if pooling == "last":
        return hidden[-1]
    if pooling == "cls":
        return hidden[0]
    return hidden.mean(dim=0)


def _embed_all(worker: Worker, inputs: list[list[int]], steering: SteeringSpec | None, rid: str,
               pooling: str = "mean", normalize: bool = True) -> list[np.ndarray]:
    lm = worker.loaded
    assert lm is not None
    iv = worker.intervention
    out = []
    for i, ids_list in enumerate(inputs):
        ids = torch.tensor([ids_list], device=lm.device)
        mask = torch.ones_like(ids)
        pos = torch.arange(ids.shape[1], device=lm.device)[None, :]
        compiled = iv.compile(steering) if iv is not None and steering is not None and not steering.empty else None
        plan = worker.make_plan([compiled], ids)
        res = worker.forward(ids, mask=mask, positions=pos, cache=None, plan=plan, output_hidden_states=True)
        worker.emit_monitor([f"{rid}-{i}" if len(inputs) > 1 else rid], ids, phase="embedding")
        hidden = res.hidden_states[-1][0].float()  # (T, D)
        vec = _pool(hidden, pooling)
        if normalize:
            vec = torch.nn.functional.normalize(vec, dim=0)
        out.append(vec.cpu().numpy().astype("<f4"))
    if iv is not None:
        iv.set_plan(None)
    return out


class EmbeddingService:
    def __init__(self, *, generation: GenerationService) -> None:
        self.generation = generation

    async def embed(self, req: p.EmbeddingRequest) -> p.EmbeddingList:
        lm, profile = self.generation.resolve_model(req.model)
        if req.dimensions is not None and req.dimensions != lm.d_model:
            raise InvalidRequest(
                f"dimensions is not supported: this model's embeddings have {lm.d_model} dimensions "
                "and it was not trained for truncation", param="dimensions",
            )
        if isinstance(req.input, str) and req.input == "" or isinstance(req.input, list) and "" in req.input:
            raise InvalidRequest("input must not be an empty string", param="input")
        inputs = await prompts.off_loop(prompts.text_size(req.input), prompts.tokenize_prompts, lm.tokenizer,
                                        req.input, vocab_size=lm.vocab_size, param="input",
                                        context_length=lm.context_length + 1)
        for i, ids in enumerate(inputs):
            many = not isinstance(req.input, str) and not all(isinstance(t, int) for t in req.input)
            prompts.check_context(len(ids), lm.context_length + 1, param=f"input[{i}]" if many else "input")
        spec, applied = self.generation.steering.resolve(req.steering, model_profile=profile)
        rid = f"embd-{time.time_ns():x}"
        fut = self.generation.worker.call(lambda w: _embed_all(w, inputs, spec, rid, req.pooling, req.normalize), exclusive=False)
        vectors = await asyncio.wrap_future(fut)
        data = [
            p.Embedding(index=i, embedding=base64.b64encode(v.tobytes()).decode() if req.encoding_format == "base64"
                        else v.astype(float).tolist())
            for i, v in enumerate(vectors)
        ]
        n_tokens = sum(len(i) for i in inputs)
        model = self.generation.served_name() or req.model
        self.generation.metrics.prompt_tokens.labels(model).inc(n_tokens)
        self.generation.metrics.requests.labels("embeddings", model, "ok").inc()
        self.generation.metrics.steered.labels(model, applied.source).inc()
        return p.EmbeddingList(data=data, model=req.model, usage=p.EmbeddingUsage(prompt_tokens=n_tokens,
                               total_tokens=n_tokens), millm=p.MillmInfo(steering=applied))


__all__ = ["EmbeddingService", "MonitorRecord"]
