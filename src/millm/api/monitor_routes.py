"""/api/monitor/* (config, pause, history, stats, export) and the /ws/monitor WebSocket."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, WebSocket

from millm.api.state import RuntimeDep, WsRuntimeDep
from millm.api.websockets import push_until_closed
from millm.errors import NotFound
from millm.protocol import monitor as m
from millm.protocol.openai import ErrorResponse
from millm.services.runtime import Runtime

router = APIRouter(tags=["monitor"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404)}


def config_out(rt: Runtime) -> m.MonitorConfigOut:
    c = rt.monitor.config
    return m.MonitorConfigOut(enabled=c.enabled, paused=rt.monitor.paused,
                              features=list(c.features) if c.features else None, top_k=c.top_k,
                              history_requests=rt.monitor.max_requests,
                              history_tokens_per_request=rt.monitor.max_tokens)


@router.get("/api/monitor/config", response_model=m.MonitorConfigOut)
async def get_config(rt: RuntimeDep) -> m.MonitorConfigOut:
    return config_out(rt)


@router.put("/api/monitor/config", response_model=m.MonitorConfigOut, responses=ERRORS)
async def set_config(body: m.MonitorConfigIn, rt: RuntimeDep) -> m.MonitorConfigOut:
    rt.monitor.configure(enabled=body.enabled, features=body.features, top_k=body.top_k,
                         features_given="features" in body.model_fields_set)
    return config_out(rt)


@router.post("/api/monitor/pause", response_model=m.MonitorConfigOut)
async def pause(rt: RuntimeDep) -> m.MonitorConfigOut:
    rt.monitor.set_paused(True)
    return config_out(rt)


@router.post("/api/monitor/resume", response_model=m.MonitorConfigOut)
async def resume(rt: RuntimeDep) -> m.MonitorConfigOut:
    rt.monitor.set_paused(False)
    return config_out(rt)


@router.get("/api/monitor/history", response_model=m.HistoryList, responses=ERRORS)
async def history(rt: RuntimeDep, request_id: str | None = None) -> m.HistoryList:
    data = rt.monitor.history(request_id)
    if request_id is not None and not data:
        raise NotFound(f"no monitoring history for request {request_id!r}", param="request_id")
    return m.HistoryList(data=data, count=len(data))


@router.delete("/api/monitor/history", status_code=204)
async def clear_history(rt: RuntimeDep) -> Response:
    rt.monitor.clear()
    return Response(status_code=204)


@router.get("/api/monitor/stats", response_model=m.StatsOut, responses=ERRORS)
async def stats(rt: RuntimeDep) -> m.StatsOut:
    return rt.monitor.stats()


@router.get("/api/monitor/export", response_class=Response, responses={**ERRORS, 200: {
    "description": "One JSON object per line (jsonl) or a CSV table, one row per token and feature",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}}})
async def export(rt: RuntimeDep, format: str = Query("jsonl", pattern="^(jsonl|csv)$"),
                 request_id: str | None = None) -> Response:
    if format == "csv":
        return Response(rt.monitor.export_csv(request_id), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="activations.csv"'})
    return Response(rt.monitor.export_jsonl(request_id), media_type="application/x-ndjson",
                    headers={"Content-Disposition": 'attachment; filename="activations.jsonl"'})


@router.websocket("/ws/monitor")
async def monitor_ws(websocket: WebSocket, rt: WsRuntimeDep) -> None:
    """Sends one JSON ActivationFrame per token while monitoring is enabled and not paused."""
    await websocket.accept()
    queue = rt.monitor.subscribe()

    async def send(frame: m.ActivationFrame) -> bool:
        await websocket.send_text(frame.model_dump_json())
        return True

    try:
        await push_until_closed(websocket, queue.get, send)
    finally:
        rt.monitor.unsubscribe(queue)
