"""The metrics service reads the worker's queue at scrape time (the /metrics route only shapes the response)."""

from __future__ import annotations

from millm.services.metrics import Metrics


def test_queue_gauges_are_read_from_the_worker_at_each_scrape() -> None:
    state = {"queued": 3, "running": 5}
    m = Metrics()
    m.watch_worker(queue_depth=lambda: state["queued"], active_sequences=lambda: state["running"])
    text = m.exposition().decode()
    assert "millm_queue_depth 3.0" in text and "millm_active_sequences 5.0" in text
    state.update(queued=0, running=1)
    text = m.exposition().decode()
    assert "millm_queue_depth 0.0" in text and "millm_active_sequences 1.0" in text
