"""Embeddings on the worker thread: the same plan, forward and monitor records as a generation prefill.

For each input: one forward over its tokens with the request's steering compiled into the batch plan (the
worker's one compile function), the monitor's records for the prompt (phase "embedding"), and the last layer's
hidden states as the model returns them (`hidden_states[-1]`, after the final norm) pooled over the tokens
(mean, or the last or first token's state), L2-normalised unless `normalize` is false.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from millm.engine.types import EmbeddingRequest
from millm.errors import ModelNotLoaded

if TYPE_CHECKING:
    from millm.engine.worker import Worker


def _pool(hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    # hidden: (T, D) -> (D,)
    if pooling == "last":
        return hidden[-1]
    if pooling == "cls":
        return hidden[0]
    return hidden.mean(dim=0)


def embed_inputs(worker: Worker, request: EmbeddingRequest) -> list[Any]:
    """On the worker thread: one little-endian float32 vector per input."""
    lm = worker.loaded
    if lm is None:
        raise ModelNotLoaded("no model is loaded", retry_after=5.0)
    iv = worker.intervention
    compiled = worker.attachments.compile(request.steering)
    many = len(request.inputs) > 1
    out: list[Any] = []
    try:
        for i, ids_list in enumerate(request.inputs):
            ids = torch.tensor([ids_list], device=lm.device)
            mask = torch.ones_like(ids)
            pos = torch.arange(ids.shape[1], device=lm.device)[None, :]
            plan = worker.make_plan([compiled], ids)
            res = worker.forward(ids, mask=mask, positions=pos, cache=None, plan=plan, output_hidden_states=True)
            worker.monitor.prompt(iv, lm, [f"{request.request_id}-{i}" if many else request.request_id], ids,
                                  phase="embedding")
            vec = _pool(res.hidden_states[-1][0].float(), request.pooling)  # (T, D) -> (D,)
            if request.normalize:
                vec = torch.nn.functional.normalize(vec, dim=0)
            out.append(vec.cpu().numpy().astype("<f4"))
    finally:
        if iv is not None:
            iv.set_plan(None)
    return out
