"""Downloads, the cache and memory estimates through the REST API, against the fake Hub.

One server for the module (tiny model, no SAE) with its own cache and data dir; every Hub call
goes to a `FakeHub` through the real huggingface_hub (HF_ENDPOINT, HF_TOKEN read per job).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import constants

from tests.conftest import LiveServer, client_post, free_port, start_server, tiny_settings
from tests.hub.conftest import isolated_hf_env, small_chunks  # noqa: F401 - fixtures
from tests.hub.fake_hub import FakeHub

TIMEOUT = 30


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-cache")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, cache_dir: Path) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("hub-server")
    server = start_server(tiny_settings(tmp, tiny_model_dir, cache_dir=cache_dir, served_model_name="test-org/tiny"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def hub_env(isolated_hf_env: None, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    # SaeService.attach calls snapshot_download without endpoint=, which uses the import-time values.
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def _wait(live: LiveServer, job_id: str, *, states: tuple[str, ...] = ("completed", "failed", "cancelled"),
          until: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        job = httpx.get(f"{live.url}/api/downloads/{job_id}").json()
        if job["state"] in states and (until is None or until(job)):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} stuck: {job}")


def _pull(live: LiveServer, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{live.url}/api/downloads", json=body)
    assert r.status_code == 202, r.text
    return _wait(live, r.json()["id"])


def _no_server_paths(text: str, *paths: Path) -> None:
    for p in paths:
        assert str(p) not in text


def _sse(live: LiveServer, path: str, out: list[dict[str, Any]], repo_id: str, ready: threading.Event) -> None:
    """Collect SSE events until `repo_id`'s job reaches a final state."""
    with httpx.stream("GET", live.url + path, timeout=TIMEOUT) as r:
        ready.set()
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                out.append({"event": event, **json.loads(line.split(":", 1)[1])})
                job = out[-1]["job"]
                if job["repo_id"] == repo_id and job["state"] in ("completed", "failed", "cancelled"):
                    return


# ---------------------------------------------------------------------------- pulls and progress


def test_pull_model_streams_progress_then_lists_and_loads_from_cache(
    live: LiveServer, hub: FakeHub, tiny_model_dir: Path, cache_dir: Path, small_chunks: int  # noqa: F811
) -> None:
    hub.add_folder("org/tiny-a", tiny_model_dir)
    hub.repos["org/tiny-a"].files["README.md"] = b"not fetched"
    events: list[dict[str, Any]] = []
    ready = threading.Event()
    reader = threading.Thread(target=_sse, args=(live, "/api/downloads/events", events, "org/tiny-a", ready))
    reader.start()
    assert ready.wait(10)
    job = _pull(live, kind="model", repo_id="org/tiny-a")
    reader.join(TIMEOUT)
    assert not reader.is_alive()

    assert job["state"] == "completed" and job["name"] == "tiny-a" and job["progress"] == 1.0
    assert job["files_done"] == job["files_total"] == 6 and job["bytes_done"] == job["bytes_total"] > 700_000
    mine = [e for e in events if e["job"]["id"] == job["id"]]
    assert mine[-1]["event"] == "state" and mine[-1]["job"]["state"] == "completed"
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'millm_download_jobs{kind="model",state="completed"}' in metrics
    assert 'millm_download_bytes{kind="model",state="completed"}' in metrics
    moving = [e["job"] for e in mine if e["type"] == "progress" and 0 < e["job"]["bytes_done"] < e["job"]["bytes_total"]]
    assert len(moving) >= 2 and all(0 < m["progress"] < 1 for m in moving)
    # speed and ETA while bytes move (the first sample is the baseline), none once finished
    assert any(m["speed_bps"] > 0 and m["eta_s"] is not None and m["eta_s"] >= 0 for m in moving)
    assert job["speed_bps"] == 0 and job["eta_s"] is None
    assert not hub.gets("README.md")

    listing = httpx.get(f"{live.url}/api/cache")
    _no_server_paths(listing.text, cache_dir, tiny_model_dir)
    repo = next(r for r in listing.json()["data"] if r["repo_id"] == "org/tiny-a")
    assert repo["kind"] == "model" and repo["name"] == "tiny-a" and repo["refs"] == ["main"]
    assert repo["size_bytes"] == job["bytes_total"] and not repo["in_use"]

    # Load by repo id: from the cache, no Hub request; then it is in use and cannot be deleted.
    before = len(hub.requests)
    r = httpx.post(f"{live.url}/api/models/load", json={"model": "org/tiny-a", "model_id": "tiny-a"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["model"]["source"] == "org/tiny-a" and r.json()["memory_estimate"]["fits"]
    assert len(hub.requests) == before
    repo = next(r for r in httpx.get(f"{live.url}/api/cache").json()["data"] if r["repo_id"] == "org/tiny-a")
    assert repo["in_use"] and datetime.fromisoformat(repo["last_used"]).timestamp() > time.time() - 60
    assert repo["last_used"].endswith("Z") and job["created_at"].endswith("Z")
    r = httpx.delete(f"{live.url}/api/cache/org/tiny-a")
    assert r.status_code == 409 and "unload" in r.json()["error"]["message"]
    chat = httpx.post(f"{live.url}/v1/completions", json={"model": "test-org/tiny", "prompt": "Hi", "max_tokens": 2})
    assert chat.status_code == 200


def test_sae_pull_by_path_attach_detach_and_delete(
    live: LiveServer, hub: FakeHub, tiny_sae_dir: Path, tiny_model_dir: Path
) -> None:
    files = {f"blocks.1/{p.name}": p.read_bytes() for p in tiny_sae_dir.iterdir()}
    files["other/cfg.json"] = b"{}"
    hub.add_repo("org/tiny-saes", files)
    job = _pull(live, kind="sae", repo_id="org/tiny-saes", path="blocks.1/")
    assert job["state"] == "completed" and job["path"] == "blocks.1" and job["files_total"] == len(files) - 1
    cached = httpx.get(f"{live.url}/api/cache", params={"kind": "sae"}).json()["data"]
    assert [(c["repo_id"], c["sae_paths"]) for c in cached] == [("org/tiny-saes", ["blocks.1"])]

    if live.runtime.worker.loaded.d_model != 64:  # pragma: no cover - depends on test order
        pytest.skip("the loaded model does not fit the tiny SAE")
    r = httpx.post(f"{live.url}/api/saes/attach", json={"source": "org/tiny-saes:blocks.1"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["attached"]["repo_id"] == "org/tiny-saes"
    assert httpx.delete(f"{live.url}/api/cache/org/tiny-saes").status_code == 409
    assert client_post(f"{live.url}/api/saes/detach").status_code == 200
    r = httpx.delete(f"{live.url}/api/cache/org/tiny-saes")
    assert r.status_code == 200 and r.json()["freed_bytes"] > 0
    assert httpx.get(f"{live.url}/api/cache", params={"kind": "sae"}).json()["data"] == []
    r = httpx.delete(f"{live.url}/api/cache/org/tiny-saes")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_cached"


def test_sae_pull_by_saelens_release(live: LiveServer, hub: FakeHub, tiny_sae_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    r = httpx.post(f"{live.url}/api/downloads", json={"kind": "sae", "release": "tiny-res", "sae_id": "l1"})
    assert r.status_code == 400 and "sae_lens" in r.json()["error"]["message"]

    from millm.sae import registry_saelens

    registry = tmp_path / "pretrained_saes.yaml"
    registry.write_text("tiny-res:\n  repo_id: org/release-saes\n  conversion_func: null\n"
                        "  saes:\n  - id: l1\n    path: layer_1/sae\n")
    monkeypatch.setattr(registry_saelens, "find_registry_file", lambda: registry)
    hub.add_repo("org/release-saes", {f"layer_1/sae/{p.name}": p.read_bytes() for p in tiny_sae_dir.iterdir()})
    job = _pull(live, kind="sae", release="tiny-res", sae_id="l1")
    assert (job["state"], job["repo_id"], job["path"]) == ("completed", "org/release-saes", "layer_1/sae")

    bad = httpx.post(f"{live.url}/api/downloads", json={"kind": "model", "repo_id": "org/x", "path": "a"})
    assert bad.status_code == 400 and "kind 'sae'" in bad.json()["error"]["message"]


# ---------------------------------------------------------------------------- failures


def test_private_repo_needs_token_and_unknown_repo_is_404(
    live: LiveServer, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("org/private", {"config.json": "{}", "model.safetensors": b"\0" * 1000}, private=True,
                 tokens={"hf_good"})
    job = _pull(live, kind="model", repo_id="org/private")
    assert job["state"] == "failed" and job["error"]["status"] == 401
    assert job["error"]["code"] == "hub_unauthorized" and "HF_TOKEN" in job["error"]["message"]

    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert client_post(f"{live.url}/api/downloads/{job['id']}/resume").status_code == 200
    done = _wait(live, job["id"], states=("completed", "failed"))
    assert done["state"] == "completed" and done["error"] is None and done["attempts"] == 2
    assert not any("hf_good" in p.read_text() for p in (live.runtime.settings.data_dir / "jobs").glob("*.json"))
    # A finished job's event stream gives its final state and ends.
    replay: list[dict[str, Any]] = []
    _sse(live, f"/api/downloads/{job['id']}/events", replay, "org/private", threading.Event())
    assert [(e["type"], e["job"]["state"]) for e in replay] == [("state", "completed")]

    missing = _pull(live, kind="model", repo_id="org/does-not-exist")
    assert missing["error"]["status"] == 404 and missing["error"]["code"] == "repo_not_found"
    r = httpx.get(f"{live.url}/api/models/estimate", params={"model": "org/does-not-exist"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "repo_not_found"
    r = httpx.get(f"{live.url}/api/downloads/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert httpx.get(f"{live.url}/api/downloads/nope/events").status_code == 404
    assert httpx.delete(f"{live.url}/api/downloads/{missing['id']}").status_code == 204
    assert httpx.get(f"{live.url}/api/downloads/{missing['id']}").status_code == 404


def test_cancel_over_websocket_leaves_no_partial_file_then_resume(
    live: LiveServer, hub: FakeHub, cache_dir: Path, tiny_model_dir: Path, small_chunks: int  # noqa: F811
) -> None:
    from websockets.sync.client import connect

    hub.add_folder("org/tiny-c", tiny_model_dir)
    release = hub.pause_once("org/tiny-c", "model.safetensors", after_bytes=300_000)
    job_id = httpx.post(f"{live.url}/api/downloads", json={"repo_id": "org/tiny-c"}).json()["id"]
    ws_url = live.url.replace("http", "ws") + f"/ws/downloads?job_id={job_id}"
    states = []
    with connect(ws_url, open_timeout=10) as ws:
        while True:
            event = json.loads(ws.recv(timeout=TIMEOUT))
            states.append(event["job"]["state"])
            job = event["job"]
            if job["current_file"] == "model.safetensors" and job["bytes_done"] > 0 and "cancel" not in states:
                assert client_post(f"{live.url}/api/downloads/{job_id}/cancel").status_code == 200
                states.append("cancel")
                release.set()
            if job["state"] in ("completed", "failed", "cancelled"):
                break
    assert states[-1] == "cancelled", states
    storage = cache_dir / "models--org--tiny-c"
    assert not list(storage.rglob("*.incomplete"))
    assert not list(storage.glob("snapshots/*/model.safetensors"))

    r = client_post(f"{live.url}/api/downloads/{job_id}/resume")
    assert r.status_code == 200
    done = _wait(live, job_id, states=("completed", "failed"))
    assert done["state"] == "completed"
    assert len(list(storage.glob("snapshots/*/model.safetensors"))) == 1


def test_interrupted_transfer_resumes_with_range_and_across_restart(
    hub: FakeHub, tiny_model_dir: Path, tmp_path: Path, small_chunks: int  # noqa: F811
) -> None:
    hub.add_folder("org/tiny-r", tiny_model_dir)
    hub.drop_once("org/tiny-r", "model.safetensors", after_bytes=200_000)
    release = hub.pause_once("org/tiny-r", "model.safetensors", after_bytes=500_000)
    settings = tiny_settings(tmp_path, tiny_model_dir, cache_dir=tmp_path / "cache")
    first = start_server(settings)
    stopper = threading.Thread(target=first.stop)
    try:
        job_id = httpx.post(f"{first.url}/api/downloads", json={"repo_id": "org/tiny-r"}).json()["id"]
        # The dropped connection was retried from where it broke; now the file hangs at 500000 bytes.
        _wait(first, job_id, states=("running",), until=lambda j: j["bytes_done"] >= 400_000)
    finally:
        stopper.start()  # the server shuts down with the job mid-file
        deadline = time.monotonic() + TIMEOUT
        while not first.runtime.jobs._closing and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()  # the next bytes reach the downloader, which sees the shutdown and stops
        stopper.join(TIMEOUT)
    ranges = [g["range"] for g in hub.gets("model.safetensors") if "tiny-r" in g["path"]]
    assert any(r and r.startswith("bytes=") and not r.startswith("bytes=0-") for r in ranges), ranges
    saved = json.loads((settings.data_dir / "jobs" / f"{job_id}.json").read_text())
    assert saved["state"] == "queued" and 0 < saved["files_done"] < saved["files_total"]

    second = start_server(settings.model_copy(update={"port": free_port()}))
    try:
        done = _wait(second, job_id, states=("completed", "failed"))
        assert done["state"] == "completed" and done["attempts"] == 2
    finally:
        second.stop()
    # Files finished before the restart were not fetched again.
    assert len([g for g in hub.gets("config.json") if "tiny-r" in g["path"]]) == 1


# ---------------------------------------------------------------------------- estimates


def test_estimate_matches_real_parameter_counts(live: LiveServer, hub: FakeHub, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    hub.add_folder("org/tiny-e", tiny_model_dir)

    remote = httpx.get(f"{live.url}/api/models/estimate",
                       params={"model": "org/tiny-e", "dtype": "bfloat16", "context": 128})
    assert remote.status_code == 200, remote.text
    body = remote.json()
    assert body["source"] == "hub" and body["estimate"]["params"] == real
    est = body["estimate"]
    assert est["weights_bytes"] == real * 2 and est["context"] == 128 and est["fits"]
    assert est["total_bytes"] == est["weights_bytes"] + est["kv_cache_bytes"] + est["sae_bytes"] + est["overhead_bytes"]
    assert not (live.runtime.jobs.cache_dir / "models--org--tiny-e").exists()  # nothing cached by an estimate

    local = httpx.get(f"{live.url}/api/models/estimate", params={"model": str(tiny_model_dir), "dtype": "float32"})
    assert local.json()["source"] == "local" and local.json()["model"] == tiny_model_dir.name
    assert local.json()["estimate"]["params"] == real and local.json()["estimate"]["weights_bytes"] == real * 4
    _no_server_paths(local.text, tiny_model_dir)
    q4 = httpx.get(f"{live.url}/api/models/estimate", params={"model": str(tiny_model_dir), "quantization": "4bit"})
    assert q4.json()["estimate"]["weights_bytes"] < real * 2

    # a device this machine lacks is estimated from the files alone, and said to be absent
    absent = httpx.get(f"{live.url}/api/models/estimate", params={"model": str(tiny_model_dir), "device": "cuda:7",
                                                                 "dtype": "bfloat16"})
    assert absent.status_code == 200, absent.text
    est = absent.json()["estimate"]
    assert (est["device"], est["device_present"], est["available_bytes"], est["fits"]) == ("cuda:7", False, None, None)
    assert est["weights_bytes"] == real * 2 and "cuda:7 is not present on this machine" in est["summary"]
    demo = httpx.get(f"{live.url}/api/models/estimate", params={"model": "millm-demo"})
    assert (demo.status_code, demo.json()["source"], demo.json()["model"]) == (200, "local", "millm-demo")
    shutil.rmtree(live.runtime.jobs.cache_dir / "models--org--tiny-e", ignore_errors=True)


def test_a_malformed_repo_id_is_refused_before_a_job_starts(live: LiveServer) -> None:
    before = httpx.get(f"{live.url}/api/downloads").json()["count"]
    for kind, repo_id in (("model", "a b"), ("model", "../x"), ("sae", "org/-bad"), ("model", "a/b/c")):
        r = httpx.post(f"{live.url}/api/downloads", json={"kind": kind, "repo_id": repo_id})
        assert r.status_code == 400, r.text
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("repo_id", "invalid_repo_id")
    r = httpx.post(f"{live.url}/api/downloads", json={"kind": "model", "repo_id": "org/x", "revision": "../../x"})
    assert (r.status_code, r.json()["error"]["param"], r.json()["error"]["code"]) == (400, "revision",
                                                                                        "invalid_revision")
    assert httpx.get(f"{live.url}/api/downloads").json()["count"] == before
    for r in (httpx.post(f"{live.url}/api/models/load", json={"model": "org/x", "revision": "a..b"}),
              httpx.get(f"{live.url}/api/models/estimate", params={"model": "org/x", "revision": "/etc"}),
              httpx.post(f"{live.url}/api/saes/attach", json={"source": "org/x:layer_0", "revision": "x y"}),
              httpx.delete(f"{live.url}/api/cache/org/x", params={"revision": "../x"})):
        assert (r.status_code, r.json()["error"]["param"]) == (400, "revision"), r.text


# ---------------------------------------------------------------------------- browsing a repo's SAEs


def test_repo_browser_lists_a_gemma_scope_repo_from_its_paths(live: LiveServer, hub: FakeHub) -> None:
    files: dict[str, bytes | str] = {"README.md": "# Gemma Scope (fake)"}
    for layer, width, l0 in [(0, "16k", 105), (1, "16k", 71), (1, "16k", 9), (1, "65k", 120), (12, "1m", 80)]:
        files[f"layer_{layer}/width_{width}/average_l0_{l0}/params.npz"] = b"\0" * (1000 + layer)
    hub.add_repo("google/gemma-scope-2b-pt-res", files)
    r = httpx.get(f"{live.url}/api/hub/saes", params={"repo_id": "google/gemma-scope-2b-pt-res"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["repo_id"] == "google/gemma-scope-2b-pt-res" and body["revision"] == "main" and len(body["commit"]) == 40
    assert body["count"] == 5 and body["configs_read"] == 0
    rows = [(s["layer"], s["width"], s["l0"]) for s in body["data"]]
    assert rows == [(0, 16384, 105.0), (1, 16384, 9.0), (1, 16384, 71.0), (1, 65536, 120.0), (12, 1048576, 80.0)]
    one = body["data"][2]
    assert one["path"] == "layer_1/width_16k/average_l0_71" and one["format"] == "gemma_scope"
    assert one["source"] == "google/gemma-scope-2b-pt-res:layer_1/width_16k/average_l0_71"
    assert one["site"] == "resid_post" and one["hook_name"] == "blocks.1.hook_resid_post"
    assert one["size_bytes"] == 1001 and one["files"] == 1 and one["cached"] is False
    assert not hub.gets("layer_1/width_16k/average_l0_71/params.npz")  # nothing downloaded


def test_repo_browser_reads_saelens_configs_and_marks_cached_folders(
    live: LiveServer, hub: FakeHub, tiny_sae_dir: Path
) -> None:
    cfg = json.loads((tiny_sae_dir / "cfg.json").read_text())
    files: dict[str, bytes | str] = {}
    for layer in (1, 2):
        c = json.loads(json.dumps(cfg))
        c["metadata"]["hook_name"] = f"blocks.{layer}.hook_resid_post"
        c["metadata"]["neuronpedia_id"] = f"tiny/{layer}-res"
        files[f"blocks.{layer}.hook_resid_post/cfg.json"] = json.dumps(c)
        files[f"blocks.{layer}.hook_resid_post/sae_weights.safetensors"] = (
            tiny_sae_dir / "sae_weights.safetensors").read_bytes()
    hub.add_repo("org/tiny-saes", files)
    job = _pull(live, kind="sae", repo_id="org/tiny-saes", path="blocks.2.hook_resid_post")
    assert job["state"] == "completed"

    body = httpx.get(f"{live.url}/api/hub/saes", params={"repo_id": "org/tiny-saes"}, timeout=TIMEOUT).json()
    assert body["count"] == 2 and body["configs_read"] == 2
    first, second = body["data"]
    assert (first["layer"], first["site"], first["format"]) == (1, "resid_post", "saelens")
    assert (first["d_in"], first["width"], first["architecture"]) == (64, 256, "standard")
    assert first["neuronpedia_id"] == "tiny/1-res" and first["hook_name"] == "blocks.1.hook_resid_post"
    assert (first["cached"], second["cached"]) == (False, True)
    before = len(hub.requests)
    again = httpx.get(f"{live.url}/api/hub/saes", params={"repo_id": "org/tiny-saes"}, timeout=TIMEOUT).json()
    assert again["data"] == body["data"] and len(hub.requests) == before + 1  # configs remembered per commit

    # what the browser lists attaches as it is
    r = httpx.post(f"{live.url}/api/saes/attach", json={"source": first["source"]}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["attached"]["layer"] == 1 and r.json()["attached"]["neuronpedia_id"] == "tiny/1-res"
    httpx.post(f"{live.url}/api/saes/detach")


def test_repo_browser_errors_are_openai_envelopes(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{live.url}/api/hub/saes"
    missing = httpx.get(url, params={"repo_id": "org/does-not-exist"}, timeout=TIMEOUT)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "repo_not_found"
    assert missing.json()["error"]["param"] == "repo_id"
    bad = httpx.get(url, params={"repo_id": "not a repo id"}, timeout=TIMEOUT)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "repo_id"
    assert httpx.get(url).json()["error"]["param"] == "repo_id"
    assert httpx.get(url, params={"repo_id": "org/tiny-saes", "revision": "../x"}).status_code == 400
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    down = httpx.get(url, params={"repo_id": "org/anything"}, timeout=TIMEOUT)
    assert down.status_code == 502 and down.json()["error"]["code"] == "download_failed"
    assert "HF_ENDPOINT" in down.json()["error"]["message"]
