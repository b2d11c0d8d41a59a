"""POST /api/compare: one prompt under several steering variants, streamed as SSE or returned as JSON."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import APIRouter

from millm.api.errors import error_body
from millm.api.openapi import sse_item_schema
from millm.api.sse import EventStream, event
from millm.api.state import RuntimeDep
from millm.errors import MillmError
from millm.protocol import compare as c
from millm.protocol.openai import ErrorResponse

router = APIRouter(tags=["steering"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: {"model": ErrorResponse} for code in (400, 404, 429, 503)},
    200: {"description": "With `stream: true` (the default), server-sent events: each `data:` line is one JSON "
                         "compare frame (`start`, `delta`, `done` per variant, `end`, or `error`; the models in "
                         "millm.protocol.compare, in frontend/frames.schema.json as sse_compare). With "
                         "`stream: false`, one CompareResult.",
          "content": {"text/event-stream": sse_item_schema()}},
}


async def _sse(frames: AsyncIterator[Any], start: c.CompareStart) -> AsyncIterator[bytes]:
    yield event(start.model_dump_json())
    try:
        async for frame in frames:
            yield event(frame.model_dump_json())
    except MillmError as e:
        yield event(json.dumps({"type": "error", **error_body(e)}))


@router.post("/api/compare", response_model=c.CompareResult, responses=RESPONSES, operation_id="compareSteering")
async def compare_steering(body: c.CompareRequest, rt: RuntimeDep) -> Any:
    """Compare steering variants.

    The variants run as rows of one batch with one seed, so a greedy variant's tokens equal the same request sent
    alone. Each `done` frame (and each variant of the JSON result) carries the text, token count, finish_reason,
    full steering receipt and `diverges_at`: the first generated token that differs from variant 0's."""
    plan = await rt.compare.compare(body)
    if plan.stream:
        return EventStream(_sse(plan.frames, plan.start()), sep="\n", ping=15)
    return await rt.compare.collect(plan)
