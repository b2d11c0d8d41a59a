"""Embeddings from a causal LM: the OpenAI request checked, tokenised and handed to the engine's `embed`.

The engine (`engine/embedding.py`) pools the last layer's hidden states per input (`pooling`: mean by default, or
the last or first token's state) and L2-normalises them unless `normalize` is false, with steering and monitoring
applied exactly as in generation. An input longer than the context is a 400 naming it (never truncated). Vectors
are returned as float lists or as base64 of little-endian float32 (what the OpenAI SDKs request by default).
"""

from __future__ import annotations

import asyncio
import base64
import time

from millm.engine.types import EmbeddingRequest
from millm.errors import InvalidRequest
from millm.protocol import openai as p
from millm.services import prompts
from millm.services.generation import GenerationService


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
        vectors = await asyncio.wrap_future(self.generation.worker.embed(EmbeddingRequest(
            request_id=rid, inputs=tuple(tuple(i) for i in inputs), steering=spec, pooling=req.pooling,
            normalize=req.normalize)))
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

