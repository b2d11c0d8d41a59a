"""Prometheus metrics for requests, tokens, latency and queue depth (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("millm_requests", "Requests by endpoint and outcome", ["endpoint", "outcome"],
                                registry=r)
        self.latency = Histogram("millm_request_seconds", "End-to-end request latency", ["endpoint"], registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.ttft = Histogram("millm_time_to_first_token_seconds", "Time to first token", ["endpoint"], registry=r,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.prompt_tokens = Counter("millm_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("millm_completion_tokens", "Completion tokens generated", registry=r)
        self.queue_depth = Gauge("millm_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.active_sequences = Gauge("millm_active_sequences", "Sequences in the decode batch", registry=r)
        self.rejected = Counter("millm_rejected_requests", "Requests refused (queue full, errors)", ["status"],
                                registry=r)

    def observe_request(self, *, endpoint: str, outcome: str, seconds: float, ttft: float | None,
                        prompt_tokens: int, completion_tokens: int) -> None:
        self.requests.labels(endpoint, outcome).inc()
        self.latency.labels(endpoint).observe(seconds)
        if ttft is not None:
            self.ttft.labels(endpoint).observe(ttft)
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
