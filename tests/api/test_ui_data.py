"""What the web UI's status bar and SAE panels read: /api/status (host, GPUs, downloads, model, SAE, steering,
queue), the attached SAE's metadata (Neuronpedia id, source, labelled features) and the label search."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings

LABELS = {"3": {"label": "Capital letters", "score": 0.9}, "16": {"label": "SHOUTING in caps"},
          "40": {"label": "ocean and sea words"}, "161": {"label": "capitalised names", "score": 0.4}}
NEURONPEDIA_ID = "tiny-llama/1-res-256"


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sae_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("labelled") / "sae"
    shutil.copytree(tiny_sae_dir, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["neuronpedia_id"] = NEURONPEDIA_ID
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (folder / "labels.json").write_text(json.dumps(LABELS))
    return folder


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, sae_dir: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(tmp_path_factory.mktemp("srv"), tiny_model_dir, sae_dir))
    yield server
    server.stop()


def test_status_has_everything_the_status_bar_shows(live: LiveServer) -> None:
    httpx.put(live.url + "/api/steering", json={"features": [{"index": 16, "strength": 4.0}]})
    s = httpx.get(live.url + "/api/status").json()
    host = s["host"]
    assert 0 <= host["cpu_percent"] <= 100 and host["cpu_count"] >= 1
    assert 0 < host["ram_used_bytes"] < host["ram_total_bytes"] and host["process_rss_bytes"] > 10_000_000
    assert isinstance(s["gpus"], list)  # (CUDA machines: one entry per device; tests/gpu covers them)
    assert s["status"] == "ok" and s["model"]["dtype"] == "float32" and s["model"]["num_layers"] == 4
    assert s["sae"]["layer"] == 1 and s["sae"]["d_sae"] == 256
    assert s["steering"]["enabled"] and [f["index"] for f in s["steering"]["features"]] == [16]
    assert s["steering"]["features"][0]["label"] == "SHOUTING in caps"
    assert s["queue_depth"] == 0 and s["active_sequences"] == 0 and s["active_profile"] is None
    assert s["downloads"] == {"active": 0, "bytes_done": 0, "bytes_total": 0, "speed_bps": 0.0}
    httpx.delete(live.url + "/api/steering")


def test_attached_sae_metadata_names_its_neuronpedia_id(live: LiveServer) -> None:
    sae = httpx.get(live.url + "/api/saes/attached").json()["attached"]
    assert sae["neuronpedia_id"] == NEURONPEDIA_ID
    assert sae["d_in"] == 64 and sae["d_sae"] == 256 and sae["architecture"] == "standard"
    assert sae["hook_name"] == "blocks.1.hook_resid_post" and sae["source_format"] == "saelens"
    assert sae["labelled_features"] == 4 and sae["repo_id"] is None
    assert sae["model_name"]


def test_label_search_by_text_or_index_with_a_limit(live: LiveServer) -> None:
    url = live.url + "/api/saes/attached/labels"
    everything = httpx.get(url).json()
    assert everything["count"] == 4 and [f["index"] for f in everything["data"]] == [3, 16, 40, 161]
    caps = httpx.get(url, params={"q": "CAPITAL"}).json()
    assert [f["index"] for f in caps["data"]] == [3, 161] and caps["count"] == 2
    by_index = httpx.get(url, params={"q": "16"}).json()
    assert [f["index"] for f in by_index["data"]] == [16]  # the feature numbered 16 (not 161)
    limited = httpx.get(url, params={"q": "ca", "limit": 1}).json()
    assert limited["count"] == 3 and len(limited["data"]) == 1
    assert httpx.get(url, params={"q": "zebra"}).json() == {"data": [], "count": 0}
    bad = httpx.get(url, params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
