"""A short version of the load test (benchmarks/load_test.py, whose one-minute figures are in
docs/reliability.md): concurrent streams all finish, a burst past the queue gets only 429s with Retry-After and
nothing hangs, and a body over the limit does not stall /health."""

from __future__ import annotations

import os

from benchmarks.load_test import run_load
from tests.conftest import start_server, tiny_settings


def test_streams_burst_and_a_huge_body_under_load(tmp_path, tiny_model_dir):
    live = start_server(tiny_settings(tmp_path, tiny_model_dir, served_model_name="tiny", queue_size=4,
                                      max_batch_size=8))
    try:
        res = run_load(live.url, os.getpid(), model="tiny", seconds=3, clients=8, burst=40, max_tokens=16,
                       big_bytes=20_000_000)
    finally:
        live.stop()
    streams, burst, big = res["streams"], res["burst"], res["big_request"]
    assert streams["errors"] == 0 and streams["completed"] >= 8, streams
    assert burst["other"] == [] and burst["completed"] + burst["rejected_429"] == 40, burst
    assert burst["rejected_429"] > 0 and burst["all_429_have_retry_after"], burst
    assert big["content_length"]["status"] == 413 and big["chunked"]["status"] == 413, big
    assert big["content_length"]["code"] == "request_too_large"
    assert big["health_polls"] > 0 and big["health_max_s"] < 2, big  # /health kept answering
