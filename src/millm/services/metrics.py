"""Prometheus metrics (one registry per app), named and labelled as vLLM's and Prometheus' users expect.

- requests, latency, time to first token, inter-token latency and tokens, labelled by `model`
  (the served name; a `<model>+<profile>` virtual id counts under its model);
- `millm_steered_requests_total{model, source}`: where each request's steering came from
  (request, profile, model (virtual id), server, none);
- queue depth and active sequences (set at scrape time);
- `millm_download_jobs{kind, state}` and `millm_download_bytes{kind, state}`: the download jobs, read
  from the job manager at scrape time;
- the standard process (RSS, CPU seconds, open fds, start time), Python platform and GC collectors.

`*_created` series are off (`disable_created_metrics`): they double the series count and nothing
graphs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()


class _Downloads(Collector):
    """Download jobs by kind and state, and their bytes, from `jobs()` at scrape time."""

    def __init__(self, jobs: Callable[[], Iterable[Any]]) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        count = GaugeMetricFamily("millm_download_jobs", "Download jobs by kind and state", labels=["kind", "state"])
        size = GaugeMetricFamily("millm_download_bytes", "Bytes transferred by download jobs, by kind and state",
                                 labels=["kind", "state"])
        totals: dict[tuple[str, str], list[int]] = {}
        for job in self.jobs():
            entry = totals.setdefault((job.kind, job.state), [0, 0])
            entry[0] += 1
            entry[1] += int(job.bytes_done or 0)
        for (kind, state), (n, done) in sorted(totals.items()):
            count.add_metric([kind, state], n)
            size.add_metric([kind, state], done)
        yield count
        yield size


class Metrics:
    def __init__(self, *, jobs: Callable[[], Iterable[Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        if jobs is not None:
            r.register(_Downloads(jobs))
        self.requests = Counter("millm_requests", "Requests by endpoint, model and outcome",
                                ["endpoint", "model", "outcome"], registry=r)
        self.steered = Counter("millm_steered_requests", "Requests by where their steering came from",
                               ["model", "source"], registry=r)
        self.latency = Histogram("millm_request_seconds", "End-to-end request latency", ["endpoint", "model"],
                                 registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.ttft = Histogram("millm_time_to_first_token_seconds", "Time to first token", ["endpoint", "model"],
                              registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.itl = Histogram("millm_inter_token_latency_seconds",
                             "Mean time between generated tokens, one observation per request",
                             ["endpoint", "model"], registry=r,
                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1))
        self.prompt_tokens = Counter("millm_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter("millm_completion_tokens", "Completion tokens generated", ["model"],
                                         registry=r)
        self.queue_depth = Gauge("millm_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.active_sequences = Gauge("millm_active_sequences", "Sequences in the decode batch", registry=r)
        self.rejected = Counter("millm_rejected_requests", "Requests refused (queue full, errors)", ["status"],
                                registry=r)

    def watch_worker(self, *, queue_depth: Callable[[], float], active_sequences: Callable[[], float]) -> None:
        """Read the worker's queue depth and running sequences at each scrape."""
        self.queue_depth.set_function(queue_depth)
        self.active_sequences.set_function(active_sequences)

    def exposition(self) -> bytes:
        """Every series in the Prometheus text format."""
        return generate_latest(self.registry)

    def observe_request(self, *, endpoint: str, outcome: str, seconds: float, ttft: float | None,
                        prompt_tokens: int, completion_tokens: int, model: str = "",
                        steering_source: str = "none") -> None:
        self.requests.labels(endpoint, model, outcome).inc()
        self.steered.labels(model, steering_source).inc()
        self.latency.labels(endpoint, model).observe(seconds)
        if ttft is not None:
            self.ttft.labels(endpoint, model).observe(ttft)
            if completion_tokens > 1:
                self.itl.labels(endpoint, model).observe((seconds - ttft) / (completion_tokens - 1))
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.completion_tokens.labels(model).inc(completion_tokens)
