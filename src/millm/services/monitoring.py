"""Activation monitoring: history, statistics, live fan-out and export.

The worker thread calls `publish()` with records from each forward pass. Records become
`ActivationFrame`s, kept in a bounded per-request history (oldest requests dropped first),
folded into running per-feature statistics, and offered to live subscribers (WebSocket
clients) through bounded asyncio queues; a slow subscriber loses frames rather than slowing
generation. Pausing stops recording and fan-out; the hook keeps running only while enabled.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import io
import json
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from millm.engine.intervention import MonitorConfig
from millm.engine.types import MonitorRecord
from millm.errors import NotFound
from millm.protocol.monitor import (
    ActivationFrame,
    FeatureStats,
    FeatureValue,
    HistoryList,
    MonitorConfigIn,
    MonitorConfigOut,
    RequestHistory,
    StatsOut,
)
from millm.protocol.openai import AppliedSteering


@dataclass
class _Running:
    count: int = 0
    total: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    def add(self, v: float) -> None:
        self.count += 1
        self.total += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)


class MonitorService:
    def __init__(self, *, apply_config: Callable[[MonitorConfig], None], max_requests: int = 100,
                 max_tokens_per_request: int = 4096) -> None:
        self._apply = apply_config
        self.config = MonitorConfig()
        self.paused = False
        self.labels: dict[int, str] = {}
        self.max_requests = max_requests
        self.max_tokens = max_tokens_per_request
        self._history: collections.OrderedDict[str, collections.deque[ActivationFrame]] = collections.OrderedDict()
        self._stats: dict[int, _Running] = {}
        self._tokens = 0
        self._receipts: collections.OrderedDict[str, AppliedSteering] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._subscribers: set[asyncio.Queue] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ------------------------------------------------------------------ config

    def configure(self, *, enabled: bool | None = None, features: list[int] | None = None,
                  top_k: int | None = None, features_given: bool = False) -> MonitorConfig:
        cfg = self.config
        self.config = MonitorConfig(
            enabled=cfg.enabled if enabled is None else enabled,
            features=(tuple(features) if features else None) if features_given else cfg.features,
            top_k=cfg.top_k if top_k is None else top_k,
        )
        self._apply(self.config)
        return self.config

    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    # ------------------------------------------------------------------ intake (worker thread)

    def _frame(self, r: MonitorRecord) -> ActivationFrame:
        return ActivationFrame(
            request_id=r.request_id, choice=r.choice, position=r.position, token_id=r.token_id, token=r.token,
            phase=r.phase, activations=[FeatureValue(index=a.index, value=a.value, label=self.labels.get(a.index))
                                        for a in r.activations],
        )

    def publish(self, records: list[MonitorRecord]) -> None:
        if self.paused or not records:
            return
        frames = [self._frame(r) for r in records]
        with self._lock:
            for f in frames:
                hist = self._history.get(f.request_id)
                if hist is None:
                    hist = self._history[f.request_id] = collections.deque(maxlen=self.max_tokens)
                    while len(self._history) > self.max_requests:
                        self._history.popitem(last=False)
                hist.append(f)
                self._tokens += 1
                for a in f.activations:
                    self._stats.setdefault(a.index, _Running()).add(a.value)
        loop = self._loop
        if loop is not None and self._subscribers:
            loop.call_soon_threadsafe(self._fan_out, frames)

    def _fan_out(self, frames: list[ActivationFrame]) -> None:
        for q in list(self._subscribers):
            for f in frames:
                if q.full():
                    break
                q.put_nowait(f)

    def record_receipt(self, request_id: str, receipt: AppliedSteering) -> None:
        """Keep a finished request's steering receipt next to its activation history (as bounded)."""
        if receipt.source == "none":
            return
        with self._lock:
            self._receipts[request_id] = receipt
            self._receipts.move_to_end(request_id)
            while len(self._receipts) > self.max_requests:
                self._receipts.popitem(last=False)

    # ------------------------------------------------------------------ subscribers (event loop)

    def subscribe(self, maxsize: int = 10_000) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    # ------------------------------------------------------------------ queries

    def _feature_stats(self, running: dict[int, _Running]) -> list[FeatureStats]:
        return [
            FeatureStats(index=i, label=self.labels.get(i), count=s.count, min=s.min, max=s.max,
                         mean=s.total / s.count)
            for i, s in sorted(running.items(), key=lambda kv: -kv[1].max)
        ]

    def _request(self, rid: str, frames: Iterable[ActivationFrame]) -> RequestHistory:
        frames = list(frames)
        running: dict[int, _Running] = {}
        for f in frames:
            for a in f.activations:
                running.setdefault(a.index, _Running()).add(a.value)
        return RequestHistory(request_id=rid, tokens=len(frames), frames=frames, stats=self._feature_stats(running),
                              steering=self._receipts.get(rid))

    def set_config(self, body: MonitorConfigIn) -> MonitorConfigOut:
        """PUT /api/monitor/config: fields left out keep their value (`features: null` asks for top-k)."""
        self.configure(enabled=body.enabled, features=body.features, top_k=body.top_k,
                       features_given="features" in body.model_fields_set)
        return self.config_out()

    def config_out(self) -> MonitorConfigOut:
        c = self.config
        return MonitorConfigOut(enabled=c.enabled, paused=self.paused, features=list(c.features) if c.features else None,
                                top_k=c.top_k, history_requests=self.max_requests,
                                history_tokens_per_request=self.max_tokens)

    def history_out(self, request_id: str | None = None) -> HistoryList:
        """The recorded history (of one request: a 404 when it has none)."""
        data = self.history(request_id)
        if request_id is not None and not data:
            raise NotFound(f"no monitoring history for request {request_id!r}", param="request_id")
        return HistoryList(data=data, count=len(data))

    def history(self, request_id: str | None = None) -> list[RequestHistory]:
        with self._lock:
            items = [(k, list(v)) for k, v in self._history.items() if request_id is None or k == request_id]
        return [self._request(k, v) for k, v in items]

    def stats(self) -> StatsOut:
        with self._lock:
            running = {k: _Running(v.count, v.total, v.min, v.max) for k, v in self._stats.items()}
            tokens = self._tokens
        return StatsOut(tokens=tokens, features=self._feature_stats(running))

    def clear(self) -> None:
        with self._lock:
            self._history.clear()
            self._receipts.clear()
            self._stats.clear()
            self._tokens = 0

    def export_jsonl(self, request_id: str | None = None) -> str:
        lines: list[str] = []
        for h in self.history(request_id):
            lines.extend(json.dumps(f.model_dump(), ensure_ascii=False) for f in h.frames)
        return "\n".join(lines) + ("\n" if lines else "")

    def export_csv(self, request_id: str | None = None) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["request_id", "choice", "position", "phase", "token_id", "token", "feature", "label", "value"])
        for h in self.history(request_id):
            for f in h.frames:
                for a in f.activations:
                    w.writerow([f.request_id, f.choice, f.position, f.phase, f.token_id, f.token, a.index,
                                a.label or "", f"{a.value:.6g}"])
        return buf.getvalue()
