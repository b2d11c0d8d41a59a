"""Runtime model management through the API: status, switching under load, failed loads, memory checks."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from millm.demo import assets_dir
from tests.conftest import LiveServer, client_post, start_server, tiny_settings
from tests.fixtures.tiny_model import build_tiny_llama

MODEL = "test-org/tiny"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_sae_dir: Path) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("models-server")
    server = start_server(tiny_settings(tmp, tiny_model_dir, tiny_sae_dir, served_model_name=MODEL,
                                        queue_size=64, max_batch_size=4, cache_dir=tmp / "cache"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("other") / "other-tiny", seed=1)


def _load(live: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{live.url}/api/models/load", json=body, timeout=120)


def _chat(live: LiveServer, i: int, *, stream: bool = False) -> tuple[int, str | None, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Hello {i}"}], "max_tokens": 6,
            "seed": i, "ignore_eos": True, "stream": stream}
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, timeout=60) as r:
        text = r.read().decode()
    if r.status_code == 200 and stream:
        assert text.rstrip().endswith("data: [DONE]"), text[-200:]
        return 200, None, text
    return r.status_code, r.headers.get("retry-after"), httpx.Response(r.status_code, text=text).json()


def test_status_reports_model_sae_steering_and_queue(live: LiveServer, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    s = httpx.get(f"{live.url}/api/status").json()
    assert s["version"] and s["uptime_s"] > 0 and s["status"] == "ok" and s["loading"] is None
    assert s["device"] == "cpu" and 0 < s["memory"]["used_bytes"] < s["memory"]["total_bytes"]
    m = s["model"]
    assert (m["id"], m["source"], m["dtype"], m["quantization"]) == (MODEL, "local", "float32", "none")
    assert m["parameters"] == real and m["num_layers"] == 4 and m["d_model"] == 64
    assert (s["sae"]["layer"], s["sae"]["d_sae"], s["sae"]["d_in"]) == (1, 256, 64) and s["sae"]["id"]
    assert s["steering"]["enabled"] in (True, False) and s["steering"]["features"] == []
    assert s["active_profile"] is None and s["queue_depth"] == 0 and s["active_sequences"] == 0
    assert str(tiny_model_dir) not in str(s)


def test_switch_under_load_loses_no_request(live: LiveServer, other_model: Path) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        before = [pool.submit(_chat, live, i, stream=i % 3 == 0) for i in range(8)]
        switch = pool.submit(_load, live, model=str(other_model), model_id="other")
        during = [pool.submit(_chat, live, 100 + i, stream=i % 3 == 0) for i in range(8)]
        r = switch.result(timeout=120)
        after = [pool.submit(_chat, live, 200 + i) for i in range(2)]
        results = [f.result(timeout=90) for f in before + during + after]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["id"] == MODEL and body["sae_detached"] is None  # same shape: the SAE moved over
    assert body["memory_estimate"]["fits"] and body["memory_estimate"]["params"] == body["model"]["parameters"]
    refused = []
    for i, (status, retry_after, payload) in enumerate(results):
        assert status in (200, 503), payload
        if status == 503:  # queued for the old model when the swap happened: told to retry
            assert retry_after is not None and int(retry_after) >= 1
            assert payload["error"]["code"] == "model_not_loaded" and "was switched" in payload["error"]["message"]
            refused.append(i)
    assert any(s == 200 for s, _, _ in results[:8])  # in flight at the swap: finished on the old model
    assert all(s == 200 for s, _, _ in results[-2:])
    with ThreadPoolExecutor(max_workers=len(refused) or 1) as pool:  # a retry after Retry-After is served
        assert all(f.result(timeout=90)[0] == 200 for f in [pool.submit(_chat, live, 300 + i) for i in refused])
    assert live.runtime.worker.loaded.model_id == "other"
    assert httpx.get(f"{live.url}/api/status").json()["sae"] is not None


def test_corrupt_weights_give_clear_error_and_old_model_keeps_serving(
    live: LiveServer, other_model: Path, tmp_path: Path
) -> None:
    current = live.runtime.worker.loaded.model_id
    for keep in (500_000, 4):  # cut inside the tensors, and inside the header
        broken = tmp_path / f"broken-{keep}"
        shutil.copytree(other_model, broken)
        os.truncate(broken / "model.safetensors", keep)
        r = _load(live, model=str(broken), model_id="broken")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "model_load_error" and err["param"] == "model"
        assert "corrupt or truncated" in err["message"], err["message"]
        assert live.runtime.worker.loaded.model_id == current
        status, _, payload = _chat(live, 1)
        assert status == 200, payload
    missing = _load(live, model=str(tmp_path / "nope"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert httpx.get(f"{live.url}/api/status").json()["status"] == "ok"


def test_load_that_does_not_fit_is_refused_unless_forced(
    live: LiveServer, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import millm.services.models as models

    monkeypatch.setattr(models, "free_bytes", lambda device: 1000)
    r = _load(live, model=str(tiny_model_dir), model_id="tiny-again")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "insufficient_memory" and "force" in err["message"] and "unload it first" in err["message"]
    refused = err["memory_estimate"]  # the breakdown the UI shows before "load anyway"
    assert refused["available_bytes"] == 1000 and refused["fits"] is False
    assert refused["total_bytes"] == (refused["weights_bytes"] + refused["kv_cache_bytes"] + refused["sae_bytes"]
                                      + refused["overhead_bytes"]) and refused["weights_bytes"] > 0
    assert live.runtime.worker.loaded.model_id != "tiny-again"

    r = _load(live, model=str(tiny_model_dir), model_id="tiny-again", force=True)
    assert r.status_code == 200, r.text
    est = r.json()["memory_estimate"]
    assert est["fits"] is False and est["available_bytes"] == 1000 and est["sae_bytes"] > 0
    assert live.runtime.worker.loaded.model_id == "tiny-again"


def test_switch_to_model_the_sae_does_not_fit_detaches_it(live: LiveServer, tmp_path: Path,
                                                          tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    narrow = build_tiny_llama(tmp_path / "narrow", hidden_size=32, num_layers=2)
    r = _load(live, model=str(narrow), model_id="narrow")
    assert r.status_code == 200, r.text
    assert "detached" in r.json()["sae_detached"] and "narrow" in r.json()["sae_detached"]
    assert httpx.get(f"{live.url}/api/saes/attached").json()["attached"] is None
    assert _chat(live, 3)[0] == 200

    assert _load(live, model=str(tiny_model_dir)).status_code == 200
    assert httpx.post(f"{live.url}/api/saes/attach", json={"source": str(tiny_sae_dir)}).status_code == 200


def test_unload_then_requests_get_503_with_retry_after(live: LiveServer, tiny_model_dir: Path) -> None:
    assert client_post(f"{live.url}/api/models/unload").status_code == 204
    status, retry_after, payload = _chat(live, 4)
    assert status == 503 and retry_after is not None and payload["error"]["code"] == "model_not_loaded"
    assert httpx.get(f"{live.url}/api/status").json()["status"] == "no_model"
    assert _load(live, model=str(tiny_model_dir)).status_code == 200
    assert _chat(live, 5)[0] == 200


def test_quantization_choices_that_cannot_run_are_refused(live: LiveServer, tiny_model_dir: Path) -> None:
    r = _load(live, model=str(tiny_model_dir), quantization="8bit", dtype="float32")
    assert r.status_code == 400 and r.json()["error"]["param"] == "dtype"
    assert "float16/bfloat16" in r.json()["error"]["message"]
    r = _load(live, model=str(tiny_model_dir), quantization="4bit", device="mps")
    assert r.status_code == 400 and r.json()["error"]["param"] == "quantization"
    assert "bitsandbytes" in r.json()["error"]["message"]
    r = _load(live, model=str(tiny_model_dir), quantization="3bit")
    assert r.status_code == 400
    assert _chat(live, 6)[0] == 200


@pytest.mark.parametrize("model, status, code", [
    ("", 400, "invalid_value"),
    ("   ", 400, "invalid_value"),
    ("a b", 400, "invalid_repo_id"),
    ("org/na me", 400, "invalid_repo_id"),
    ("NOT-A-MODEL-FOLDER", 404, "model_not_found"),  # replaced by a folder without config.json
    ("~no-such-user-here/model", 403, "path_not_allowed"),  # ~ is never expanded for a client
])
def test_a_source_that_is_not_a_model_is_a_client_error_naming_model(live: LiveServer, tmp_path: Path, model: str,
                                                                     status: int, code: str | None) -> None:
    # Loading or estimating a blank name, a malformed repo id or a folder that holds no model is the user's
    # mistake: a 4xx naming `model`, never a 500, and the loaded model keeps serving.
    if model == "NOT-A-MODEL-FOLDER":
        model = str(tmp_path)
        (tmp_path / "notes.txt").write_text("not a model")
    current = live.runtime.worker.loaded.model_id
    for r in (_load(live, model=model), httpx.get(f"{live.url}/api/models/estimate", params={"model": model})):
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["param"] == "model" and err["code"] == code, err
    assert live.runtime.worker.loaded.model_id == current
    assert _chat(live, 6)[0] == 200


def test_sae_sources_that_are_not_saes_are_client_errors_naming_source(live: LiveServer) -> None:
    for source, code in (("", "invalid_value"), ("org/bad name", "invalid_repo_id"), ("org/bad name:layer_1", "invalid_repo_id")):
        r = httpx.post(f"{live.url}/api/saes/attach", json={"source": source})
        assert r.status_code == 400, r.text
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("source", code)
    for source in ("~no-such-user-here/sae", "~\udbfd"):  # (the second is a lone surrogate: it cannot be a path)
        r = httpx.post(f"{live.url}/api/saes/attach", content=json.dumps({"source": source}),
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 403 and r.json()["error"]["param"] == "source", r.text
        assert r.json()["error"]["code"] == "path_not_allowed"


def test_the_demo_model_and_sae_load_by_their_names(live: LiveServer, tiny_model_dir: Path,
                                                    tiny_sae_dir: Path) -> None:
    # `millm-demo` and `millm-demo-sae` are the bundled assets, so the demo comes back after an unload or a switch
    # by the names /v1/models and the demo profiles use.
    est = httpx.get(f"{live.url}/api/models/estimate", params={"model": "millm-demo"})
    assert est.status_code == 200, est.text
    n_params = json.loads((assets_dir() / "demo.json").read_text())["measured"]["n_params"]  # counted by training
    assert est.json()["source"] == "local" and est.json()["estimate"]["params"] == n_params
    try:
        assert httpx.post(f"{live.url}/api/saes/detach", headers={"X-MiLLM-Client": "test"}).status_code == 200
        r = _load(live, model="millm-demo")
        assert r.status_code == 200, r.text
        assert r.json()["model"]["id"] == "test-org/tiny"  # the served name set at start-up still applies
        assert live.runtime.worker.loaded.model_id == "millm-demo"
        # with no SAE attached, the demo SAE comes back with the demo model, and so do the demo profiles
        assert r.json()["sae_attached"] == "millm-demo-sae"
        assert httpx.get(f"{live.url}/api/saes/attached").json()["attached"]["id"] == "millm-demo-sae"
        chat = httpx.post(f"{live.url}/v1/chat/completions", timeout=60, json={
            "model": "test-org/tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
            "steering": {"profile": "yelling-demo"}})
        assert chat.status_code == 200, chat.text
        assert chat.json()["millm"]["steering"]["profile"] == "yelling-demo"
        r = httpx.post(f"{live.url}/api/saes/attach", json={"source": "millm-demo-sae"})
        assert r.status_code == 200, r.text
        assert (r.json()["attached"]["id"], r.json()["attached"]["d_sae"]) == ("millm-demo-sae", 1536)
    finally:
        assert _load(live, model=str(tiny_model_dir)).status_code == 200
        assert httpx.post(f"{live.url}/api/saes/attach", json={"source": str(tiny_sae_dir)}).status_code == 200
