"""/api/monitor/* (config, pause, history, stats, export) and the /ws/monitor WebSocket."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, WebSocket

from millm.api.state import RuntimeDep, WsRuntimeDep
from millm.api.websockets import push_until_closed
from millm.protocol import monitor as m
from millm.protocol.openai import ErrorResponse

router = APIRouter(tags=["monitor"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404)}


@router.get("/api/monitor/config", operation_id="getMonitorConfig", response_model=m.MonitorConfigOut)
async def get_config(rt: RuntimeDep) -> m.MonitorConfigOut:
    """Get the monitor settings.

    Whether monitoring is on and paused, what it captures (selected features or top-k per token) and how much
    history it keeps."""
    return rt.monitor.config_out()


@router.put("/api/monitor/config", operation_id="setMonitorConfig", response_model=m.MonitorConfigOut, responses=ERRORS)
async def set_config(body: m.MonitorConfigIn, rt: RuntimeDep) -> m.MonitorConfigOut:
    """Set the monitor settings.

    Turn monitoring on or off and choose what it captures: `features` (indices below d_sae) or, when null or
    empty, the `top_k` strongest features per token."""
    return rt.monitor.set_config(body)


@router.post("/api/monitor/pause", operation_id="pauseMonitor", response_model=m.MonitorConfigOut)
async def pause(rt: RuntimeDep) -> m.MonitorConfigOut:
    """Pause monitoring.

    Stop sending and recording frames until resumed; generation is not affected."""
    rt.monitor.set_paused(True)
    return rt.monitor.config_out()


@router.post("/api/monitor/resume", operation_id="resumeMonitor", response_model=m.MonitorConfigOut)
async def resume(rt: RuntimeDep) -> m.MonitorConfigOut:
    """Resume monitoring.

    Send and record frames again after a pause."""
    rt.monitor.set_paused(False)
    return rt.monitor.config_out()


@router.get("/api/monitor/history", operation_id="getMonitorHistory", response_model=m.HistoryList, responses=ERRORS)
async def history(
    rt: RuntimeDep,
    request_id: Annotated[str | None, Query(
        description="One request's history (its completion id); none: every recorded request.")] = None,
) -> m.HistoryList:
    """Get the monitor history.

    Recorded frames and per-feature statistics, per request (the most recent requests, bounded); `request_id`
    selects one (404 when it has no history)."""
    return rt.monitor.history_out(request_id)


@router.delete("/api/monitor/history", operation_id="clearMonitorHistory", status_code=204)
async def clear_history(rt: RuntimeDep) -> Response:
    """Clear the monitor history.

    Forget every recorded request."""
    rt.monitor.clear()
    return Response(status_code=204)


@router.get("/api/monitor/stats", operation_id="getMonitorStats", response_model=m.StatsOut, responses=ERRORS)
async def stats(rt: RuntimeDep) -> m.StatsOut:
    """Get feature statistics.

    Per-feature count, min, max and mean over every recorded token."""
    return rt.monitor.stats()


@router.get("/api/monitor/export", operation_id="exportMonitorHistory",
            response_class=Response, responses={**ERRORS, 200: {
    "description": "One JSON object per line (jsonl) or a CSV table, one row per token and feature",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}}})
async def export(rt: RuntimeDep,
                 format: str = Query("jsonl", pattern="^(jsonl|csv)$", description="jsonl or csv."),
                 request_id: Annotated[str | None, Query(description="One request only; none: all of them.")] = None,
                 ) -> Response:
    """Export the monitor history.

    Every recorded frame as JSON lines or a CSV table (one row per token and feature), as a file download;
    `request_id` limits it to one request."""
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
