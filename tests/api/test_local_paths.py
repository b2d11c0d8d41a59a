"""Local paths a client names: only inside the allowed roots, with one message that reveals nothing outside them
(no listing, no 'is a folder', no ~ expansion); and the inputs that used to be 500s (deep JSON, over-long names,
a config.json that is not JSON, a corrupt safetensors header) are 4xx naming the field."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server, tiny_settings


@pytest.fixture(scope="module")
def strict(tmp_path_factory, tiny_model_dir, tiny_sae_dir):
    """A server with the default roots only: the cache, its data dir, the demo, its start-up model and SAE."""
    tmp = tmp_path_factory.mktemp("strict")
    live = start_server(tiny_settings(tmp, tiny_model_dir, tiny_sae_dir, served_model_name="tiny",
                                      allowed_paths=[], cache_dir=tmp / "hf-cache"))
    yield live
    live.stop()


def _attach(live, source: str) -> httpx.Response:
    return httpx.post(live.url + "/api/saes/attach", json={"source": source}, timeout=30)


def _load(live, model: str) -> httpx.Response:
    return httpx.post(live.url + "/api/models/load", json={"model": model}, timeout=60)


def _estimate(live, model: str) -> httpx.Response:
    return httpx.get(live.url + "/api/models/estimate", params={"model": model}, timeout=30)


OUTSIDE = ["~", "~/", "~root", "~/.ssh", "/etc", "/etc/passwd", "/no/such/folder", "/proc/self", "/",
           "../../../../../../etc", "./../../../../../../../etc/passwd"]


@pytest.mark.parametrize("source", OUTSIDE)
def test_paths_outside_the_roots_get_one_message_that_reveals_nothing(strict, source):
    refusals = []
    for r, param in ((_attach(strict, source), "source"), (_load(strict, source), "model"),
                     (_estimate(strict, source), "model")):
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert (err["param"], err["code"]) == (param, "path_not_allowed")
        for leak in (".bashrc", ".ssh", "passwd", "hosts", "is a folder", "does not exist", "/root", "/home",
                     str(Path.home())):
            assert leak not in err["message"], (leak, err["message"])
        refusals.append(err["message"].split(":", 1)[1])
    assert len(set(refusals)) == 1  # the same words for SAEs and models, existing or not
    assert httpx.get(strict.url + "/health", timeout=5).status_code == 200


def test_existing_and_missing_folders_outside_the_roots_are_indistinguishable(strict, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    answers = {json.dumps(_load(strict, p).json()) for p in (str(tmp_path / "model"), str(tmp_path / "nope"))}
    answers |= {json.dumps(_load(strict, p).json()) for p in ("/etc", "/etc/nope")}
    assert len(answers) == 1, answers


def test_a_symlink_out_of_an_allowed_root_is_refused(strict, tiny_model_dir, tmp_path):
    inside = strict.runtime.roots.roots
    data_dir = strict.runtime.settings.data_dir.resolve()
    assert data_dir in inside
    link = data_dir / "escape"
    link.symlink_to("/etc")
    try:
        assert _attach(strict, str(link)).json()["error"]["code"] == "path_not_allowed"
        assert _load(strict, str(link / "..")).json()["error"]["code"] == "path_not_allowed"
    finally:
        link.unlink()


def test_paths_inside_the_roots_still_load_and_say_what_is_wrong(strict, tiny_model_dir):
    data_dir = strict.runtime.settings.data_dir.resolve()
    (data_dir / "empty").mkdir(exist_ok=True)
    r = _load(strict, str(data_dir / "empty"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = _load(strict, str(tiny_model_dir))  # the start-up model's own folder is allowed
    assert r.status_code == 200, r.text


def test_a_path_inside_a_hub_reference_may_not_climb_out(strict):
    for source in ("org/repo:..", "org/repo:../../../../etc", "org/repo:a/../../b", "org/repo:..\\..\\etc"):
        r = _attach(strict, source)
        assert r.status_code in (400, 403), r.text
        assert r.json()["error"]["param"] == "source"
        assert r.json()["error"]["code"] in ("invalid_path", "path_not_allowed")
    assert _attach(strict, "org/repo:..").json()["error"]["code"] == "invalid_path"


@pytest.mark.parametrize("name", ["a" * 300, "/tmp/" + "a" * 300, "org/" + "a" * 300, "a/" * 200])
def test_over_long_names_are_4xx_and_the_connection_keeps_working(strict, name):
    with httpx.Client(base_url=strict.url, timeout=30) as c:
        for r, param in ((c.post("/api/models/load", json={"model": name}), "model"),
                         (c.post("/api/saes/attach", json={"source": name}), "source"),
                         (c.get("/api/models/estimate", params={"model": name}), "model")):
            assert 400 <= r.status_code < 500, r.text
            assert r.json()["error"]["param"] == param and r.json()["error"]["code"]
        assert c.get("/api/status").status_code == 200  # (the same connection)


@pytest.fixture()
def broken_models(strict, tiny_model_dir):
    data_dir = strict.runtime.settings.data_dir.resolve()
    bad_config, bad_header = data_dir / "bad-config", data_dir / "bad-header"
    for d in (bad_config, bad_header):
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(tiny_model_dir, d)
    (bad_config / "config.json").write_text("{not json")
    with open(bad_header / "model.safetensors", "r+b") as f:
        f.write(struct.pack("<Q", 2**62))  # a header 'length' no file has
    return bad_config, bad_header


def test_a_config_that_is_not_json_and_a_corrupt_safetensors_are_400s(strict, broken_models):
    current = strict.runtime.worker.loaded.model_id
    for folder in broken_models:
        for r in (_load(strict, str(folder)), _estimate(strict, str(folder))):
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert (err["param"], err["code"]) == ("model", "model_load_error")
            assert str(folder.parent) not in err["message"]
    assert strict.runtime.worker.loaded.model_id == current


@pytest.mark.parametrize("path", ["/api/profiles/import", "/api/profiles", "/v1/chat/completions",
                                  "/api/models/load", "/api/steering"])
def test_deeply_nested_json_is_a_400(strict, path):
    body = b"[" * 100_000 + b"]" * 100_000
    method = "PUT" if path == "/api/steering" else "POST"
    r = httpx.request(method, strict.url + path, content=body, timeout=30,
                      headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"
    assert "nested too deeply" in r.json()["error"]["message"]
