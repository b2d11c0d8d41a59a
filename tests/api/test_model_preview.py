"""Previewing a Hub model (`GET /api/hub/models/{repo_id}`) and the two keys of remote code, against the fake Hub.

One server for the module (tiny model, no SAE, remote code not allowed); the cases where the server allows remote
code flip its setting for one test.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import constants

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.hub.conftest import isolated_hf_env  # noqa: F401 - fixture
from tests.hub.fake_hub import FakeHub

TIMEOUT = 30
META = {"author": "org", "downloads": 1234, "likes": 56, "pipeline_tag": "text-generation",
        "library_name": "transformers", "tags": ["transformers", "safetensors", "llama", "text-generation"],
        "cardData": {"license": "apache-2.0", "language": ["en", "fr"]}}


@pytest.fixture(scope="module")
def hub(tiny_model_dir: Path) -> Iterator[FakeHub]:
    """The fake Hub with `org/tiny-preview` (the tiny model and a card) in it, for any test on its own."""
    with FakeHub() as fake:
        fake.add_folder("org/tiny-preview", tiny_model_dir, meta=META)
        yield fake


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("preview-server")
    server = start_server(tiny_settings(tmp, tiny_model_dir, cache_dir=tmp / "hf-cache", served_model_name="tiny"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def hub_env(isolated_hf_env: None, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture(scope="module")
def remote_code_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model whose config maps AutoConfig to the repo's own (here absent) Python file."""
    folder = tmp_path_factory.mktemp("remote-code") / "tiny-remote"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.Tiny"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _real_params(folder: Path) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())


def test_preview_shows_the_card_and_a_memory_row_per_precision(live: LiveServer, hub: FakeHub,
                                                                tiny_model_dir: Path) -> None:
    r = httpx.get(f"{live.url}/api/hub/models/org/tiny-preview", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    p = r.json()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert (p["repo_id"], p["revision"], p["commit"]) == ("org/tiny-preview", "main", hub.repos["org/tiny-preview"].sha)
    assert (p["downloads"], p["likes"], p["pipeline_tag"], p["library_name"]) == (1234, 56, "text-generation",
                                                                                 "transformers")
    assert (p["license"], p["languages"], p["tags"]) == ("apache-2.0", ["en", "fr"], META["tags"])
    assert (p["model_type"], p["architectures"]) == (config["model_type"], config["architectures"])
    assert (p["gated"], p["private"], p["needs_remote_code"], p["trust_remote_code_allowed"]) == (None, False, False,
                                                                                                  False)
    files = sorted(f.name for f in tiny_model_dir.iterdir() if f.is_file())
    assert p["files"] == len(files) and p["size_bytes"] == sum((tiny_model_dir / f).stat().st_size for f in files)

    real = _real_params(tiny_model_dir)
    assert p["params"] == real and p["estimate_error"] is None
    rows = {e["precision"]: e for e in p["estimates"]}
    assert list(rows) == ["fp32", "fp16", "bf16", "8-bit", "4-bit"]
    assert rows["fp32"]["weights_bytes"] == real * 4 and rows["fp16"]["weights_bytes"] == real * 2
    assert rows["bf16"]["weights_bytes"] == real * 2
    assert rows["4-bit"]["weights_bytes"] < rows["8-bit"]["weights_bytes"] < rows["fp16"]["weights_bytes"]
    for e in rows.values():
        assert e["total_bytes"] == e["weights_bytes"] + e["kv_cache_bytes"] + e["sae_bytes"] + e["overhead_bytes"]
        assert e["fits"] is True  # a tiny model on this machine's CPU
    assert p["device"] == "cpu" and p["available_bytes"] > 0 and p["context"] >= 16
    # the same figures as the estimate route gives for one precision
    est = httpx.get(f"{live.url}/api/models/estimate", params={"model": "org/tiny-preview", "dtype": "float16"},
                    timeout=TIMEOUT).json()["estimate"]
    assert (est["weights_bytes"], est["kv_cache_bytes"], est["total_bytes"]) == (
        rows["fp16"]["weights_bytes"], rows["fp16"]["kv_cache_bytes"], rows["fp16"]["total_bytes"])
    # nothing was downloaded into the cache
    assert not (live.runtime.jobs.cache_dir / "models--org--tiny-preview").exists()
    assert httpx.get(f"{live.url}/api/cache").json()["count"] == 0


def test_preview_of_a_gated_repo_with_remote_code(live: LiveServer, hub: FakeHub, remote_code_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_folder("org/gated-remote", remote_code_dir, gated=True, tokens={"hf_ok"})
    denied = httpx.get(f"{live.url}/api/hub/models/org/gated-remote", timeout=TIMEOUT)
    assert denied.status_code in (401, 403), denied.text
    assert denied.json()["error"]["param"] == "repo_id"
    monkeypatch.setenv("HF_TOKEN", "hf_ok")
    p = httpx.get(f"{live.url}/api/hub/models/org/gated-remote", timeout=TIMEOUT).json()
    assert (p["gated"], p["needs_remote_code"], p["trust_remote_code_allowed"]) == ("auto", True, False)
    assert len(p["estimates"]) == 5


def test_preview_without_weights_or_config_keeps_the_metadata(live: LiveServer, hub: FakeHub) -> None:
    hub.add_repo("org/readme-only", {"README.md": "# nothing"}, meta={"likes": 3, "tags": ["gguf"]})
    p = httpx.get(f"{live.url}/api/hub/models/org/readme-only", timeout=TIMEOUT).json()
    assert (p["likes"], p["tags"], p["estimates"], p["params"]) == (3, ["gguf"], [], None)
    assert "config.json" in p["estimate_error"]
    hub.add_repo("org/bin-only", {"config.json": json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                             "n_positions": 64}), "pytorch_model.bin": b"x" * 10})
    p = httpx.get(f"{live.url}/api/hub/models/org/bin-only", timeout=TIMEOUT).json()
    assert (p["model_type"], p["estimates"]) == ("gpt2", []) and "safetensors" in p["estimate_error"]


def test_preview_errors_name_the_field(live: LiveServer) -> None:
    missing = httpx.get(f"{live.url}/api/hub/models/org/nope", timeout=TIMEOUT)
    assert (missing.status_code, missing.json()["error"]["param"], missing.json()["error"]["code"]) == (
        404, "repo_id", "repo_not_found")
    for bad in ("a/b/c", "org/-bad", ".."):
        r = httpx.get(f"{live.url}/api/hub/models/{bad}", timeout=TIMEOUT)
        assert r.status_code in (400, 404), (bad, r.text)
        if r.status_code == 400:
            assert r.json()["error"]["param"] == "repo_id"
    rev = httpx.get(f"{live.url}/api/hub/models/org/nope", params={"revision": "../x"}, timeout=TIMEOUT)
    assert (rev.status_code, rev.json()["error"]["param"]) == (400, "revision")


# ---------------------------------------------------------------------------- trust_remote_code


def test_trust_remote_code_is_refused_unless_the_server_allows_it(live: LiveServer, hub: FakeHub,
                                                                  tiny_model_dir: Path) -> None:
    before = httpx.get(f"{live.url}/api/downloads").json()["count"]
    r = httpx.post(f"{live.url}/api/downloads", json={"repo_id": "org/tiny-preview", "trust_remote_code": True})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("trust_remote_code", "trust_remote_code_disabled")
    assert "--trust-remote-code" in err["message"]
    assert httpx.get(f"{live.url}/api/downloads").json()["count"] == before  # no job started

    r = httpx.post(f"{live.url}/api/models/load", json={"model": str(tiny_model_dir), "trust_remote_code": True},
                   timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("trust_remote_code", "trust_remote_code_disabled")
    assert httpx.get(f"{live.url}/api/models/loaded").json()["id"] == "tiny"  # the old model keeps serving


def test_a_model_that_needs_remote_code_is_a_clear_400_without_it(live: LiveServer, remote_code_dir: Path,
                                                                  tiny_model_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    r = httpx.post(f"{live.url}/api/models/load", json={"model": str(remote_code_dir)}, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("trust_remote_code", "trust_remote_code_required")
    assert "'tiny-remote'" in err["message"] and str(remote_code_dir) not in r.text  # named, no server path
    assert httpx.get(f"{live.url}/api/models/loaded").json()["id"] == "tiny"

    # The server allows remote code: a request may still decline it, and one asking for it is honoured.
    monkeypatch.setattr(live.runtime.settings, "trust_remote_code", True)
    allowed = dataclasses.replace(live.runtime.models.defaults, trust_remote_code=True)  # built once, shared
    monkeypatch.setattr(live.runtime.models, "defaults", allowed)
    monkeypatch.setattr(live.runtime.hub, "defaults", allowed)
    declined = httpx.post(f"{live.url}/api/models/load",
                          json={"model": str(remote_code_dir), "trust_remote_code": False}, timeout=TIMEOUT)
    assert (declined.status_code, declined.json()["error"]["code"]) == (400, "trust_remote_code_required")
    ok = httpx.post(f"{live.url}/api/models/load",
                    json={"model": str(tiny_model_dir), "model_id": "tiny", "trust_remote_code": True},
                    timeout=TIMEOUT)
    assert ok.status_code == 200, ok.text
    job = httpx.post(f"{live.url}/api/downloads", json={"repo_id": "org/tiny-preview", "trust_remote_code": True})
    assert job.status_code == 202, job.text
    p = httpx.get(f"{live.url}/api/hub/models/org/tiny-preview", timeout=TIMEOUT).json()
    assert p["trust_remote_code_allowed"] is True
