"""JobManager: states, progress events, cancel, resume after restart, persistence."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from millm.errors import Conflict, NotFound
from millm.hub.jobs import JobManager
from tests.hub.fake_hub import FakeHub


def _repo(hub: FakeHub, repo_id: str = "org/tiny", size: int = 500_000, **kwargs: object) -> bytes:
    weights = os.urandom(size)
    hub.add_repo(repo_id, {"config.json": "{}", "model.safetensors": weights}, **kwargs)  # type: ignore[arg-type]
    return weights


@pytest.fixture
def manager_factory(tmp_path: Path, fake_hub: FakeHub):
    made: list[JobManager] = []

    def make(**kwargs: object) -> JobManager:
        kwargs.setdefault("stale_partial_age_s", 0.0)
        m = JobManager(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint, **kwargs)  # type: ignore[arg-type]
        made.append(m)
        return m

    yield make
    for m in made:
        m.shutdown()


def test_job_completes_with_progress_events(manager_factory, fake_hub: FakeHub, tmp_path: Path, small_chunks: int) -> None:
    _repo(fake_hub)
    manager = manager_factory(progress_interval_s=0.0)
    manager.start()
    with manager.subscribe() as sub:
        job = manager.submit_model("org/tiny")
        assert job.state in ("queued", "running")
        events = []
        for event in sub:
            events.append(event)
            if event.terminal:
                break
    states = [e.job["state"] for e in events if e.type == "state"]
    assert states[0] == "queued" and "running" in states and states[-1] == "completed"
    progress = [e.job for e in events if e.type == "progress"]
    assert len(progress) >= 3
    assert any(0 < p["bytes_done"] < p["bytes_total"] for p in progress)
    final = manager.get(job.id)
    assert (final.bytes_done, final.files_done, final.files_total) == (500_002, 2, 2)
    assert final.commit == fake_hub.repos["org/tiny"].sha
    saved = json.loads((tmp_path / "data" / "jobs" / f"{job.id}.json").read_text())
    assert saved["state"] == "completed"
    assert manager.index.get("org/tiny")["kind"] == "model"
    # A repeated submit of a finished job starts a new one; an active duplicate is shared.
    assert manager.submit_model("org/tiny").id != job.id


def test_failed_job_has_typed_error(manager_factory, fake_hub: FakeHub) -> None:
    _repo(fake_hub, "org/private", size=100, private=True, tokens={"t"})
    manager = manager_factory()
    manager.start()
    missing = manager.wait(manager.submit_model("org/missing").id, timeout=10)
    assert missing.state == "failed" and missing.error["code"] == "repo_not_found" and missing.error["status"] == 404
    private = manager.wait(manager.submit_model("org/private").id, timeout=10)
    assert private.state == "failed" and private.error["status"] == 401
    assert "HF_TOKEN" in private.error["message"]
    with pytest.raises(NotFound):
        manager.get("nope")


def test_private_repo_with_manager_token(manager_factory, fake_hub: FakeHub) -> None:
    _repo(fake_hub, "org/private", size=100, private=True, tokens={"t"})
    manager = manager_factory(token="t")
    manager.start()
    assert manager.wait(manager.submit_model("org/private").id, timeout=10).state == "completed"


def test_cancel_then_resume(manager_factory, fake_hub: FakeHub, tmp_path: Path, small_chunks: int) -> None:
    weights = _repo(fake_hub, size=600_000)
    release = fake_hub.pause_once("org/tiny", "model.safetensors", after_bytes=300_000)
    manager = manager_factory(progress_interval_s=0.0)
    manager.start()
    job = manager.submit_model("org/tiny")
    with manager.subscribe(job.id) as sub:
        for event in sub:
            if event.job["current_file"] == "model.safetensors" and event.job["bytes_done"] > 100_000:
                break
    manager.cancel(job.id)
    assert manager.is_busy("org/tiny")
    with pytest.raises(Conflict):
        manager.delete_cached("org/tiny")
    release.set()
    cancelled = manager.wait(job.id, timeout=10)
    assert cancelled.state == "cancelled"
    assert not list((tmp_path / "cache").rglob("*.incomplete"))
    assert not list((tmp_path / "cache").rglob("model.safetensors"))

    resumed = manager.wait(manager.resume(job.id).id, timeout=10)
    assert resumed.state == "completed" and resumed.attempts == 2
    blob = next((tmp_path / "cache").rglob("model.safetensors"))
    assert blob.read_bytes() == weights
    assert len(fake_hub.gets("config.json")) == 1  # finished files are not fetched again


def test_restart_resumes_unfinished_job(manager_factory, fake_hub: FakeHub, tmp_path: Path, small_chunks: int) -> None:
    weights = _repo(fake_hub, size=600_000)
    release = fake_hub.pause_once("org/tiny", "model.safetensors", after_bytes=300_000)
    first = manager_factory(progress_interval_s=0.0)
    first.start()
    job = first.submit_model("org/tiny")
    with first.subscribe(job.id) as sub:
        for event in sub:
            if event.job["current_file"] == "model.safetensors" and event.job["bytes_done"] > 100_000:
                break
    # Simulate a crash mid-file: an orphaned partial file stays behind.
    blobs = tmp_path / "cache" / "models--org--tiny" / "blobs"
    orphan = blobs / "deadbeef.0000abcd.incomplete"
    orphan.write_bytes(b"partial")
    first.shutdown(timeout=0)  # interrupt; the job stays queued on disk
    release.set()
    deadline = time.monotonic() + 10
    while json.loads((tmp_path / "data" / "jobs" / f"{job.id}.json").read_text())["state"] != "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert json.loads((tmp_path / "data" / "jobs" / f"{job.id}.json").read_text())["state"] == "queued"

    second = manager_factory()
    resumed = second.start()
    assert [j.id for j in resumed] == [job.id]
    assert not orphan.exists()
    done = second.wait(job.id, timeout=10)
    assert done.state == "completed"
    assert next((tmp_path / "cache").rglob("model.safetensors")).read_bytes() == weights
    assert not list((tmp_path / "cache").rglob("*.incomplete"))


def test_duplicate_submit_shares_active_job(manager_factory, fake_hub: FakeHub, small_chunks: int) -> None:
    _repo(fake_hub, size=300_000)
    release = fake_hub.pause_once("org/tiny", "model.safetensors", after_bytes=100_000)
    manager = manager_factory()
    manager.start()
    a = manager.submit_model("org/tiny")
    b = manager.submit_model("org/tiny", "main")
    assert a.id == b.id and len(manager.list()) == 1
    release.set()
    assert manager.wait(a.id, timeout=10).state == "completed"


def test_async_subscription(manager_factory, fake_hub: FakeHub, small_chunks: int) -> None:
    _repo(fake_hub, size=300_000)
    manager = manager_factory(progress_interval_s=0.0)
    manager.start()

    async def main() -> list[str]:
        job = manager.submit_model("org/tiny")
        seen = []
        sub = manager.subscribe_async(job.id)
        async for event in sub:
            seen.append(event.type)
        sub.close()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert "progress" in seen and seen[-1] == "state"


def test_rate_meter_measures_over_a_sliding_window_from_the_first_sample() -> None:
    from millm.hub.jobs import RateMeter

    meter = RateMeter(window_s=5.0)
    assert meter.add(100.0, 4_000_000) == 0.0  # baseline: files a resumed job already had are not speed
    assert meter.add(101.0, 5_000_000) == 1_000_000.0
    assert meter.add(102.0, 7_000_000) == 1_500_000.0
    for t in range(103, 110):
        meter.add(float(t), 7_000_000 + (t - 102) * 100_000)  # slows down to 100 kB/s
    assert meter.add(110.0, 7_800_000) == pytest.approx(100_000.0)  # the fast start has left the window
