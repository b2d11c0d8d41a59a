"""Source resolution (millm.hub.sources): the one place a model or SAE argument becomes a folder, for the server
and the CLI alike. Offline: local folders, the demo assets, a Hub cache filled from the fake Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from millm import demo
from millm.errors import InvalidRequest, ModelNotFound, NotFound, PathNotAllowed
from millm.hub.cache import CacheIndex
from millm.hub.local_paths import LocalRoots
from millm.hub.sources import find_model, resolve_model_source, resolve_sae_source
from tests.hub.conftest import save_tiny_llama
from tests.hub.fake_hub import FakeHub


@pytest.fixture
def hub(fake_hub: FakeHub, tiny_llama_dir: tuple[Path, int], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake_hub.add_folder("org/tiny", tiny_llama_dir[0])
    sae = tmp_path / "sae-repo" / "layer_1"
    sae.mkdir(parents=True)
    (sae / "cfg.json").write_text(json.dumps({"d_in": 64, "d_sae": 128}))
    (sae / "sae_weights.safetensors").write_bytes(b"not really weights")
    fake_hub.add_folder("org/saes", tmp_path / "sae-repo")
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    return fake_hub


def test_a_folder_the_demo_and_a_missing_path(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path / "m")
    found = find_model(str(tmp_path / "m"))
    assert found is not None and (found.folder, found.repo_id, found.origin) == (tmp_path / "m", None, "local")
    demo_model = find_model(demo.DEMO_MODEL_ID)
    assert demo_model is not None and demo_model.folder == demo.assets_dir() / "model"
    with pytest.raises(ModelNotFound) as e:
        find_model(str(tmp_path / "nope"))
    assert e.value.param == "model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        find_model(str(tmp_path / "empty"))
    with pytest.raises(InvalidRequest):
        find_model("  ")


def test_a_repo_is_looked_up_in_the_cache_then_pulled_once(hub: FakeHub, tmp_path: Path) -> None:
    cache, index = tmp_path / "cache", CacheIndex(tmp_path / "data")
    assert find_model("org/tiny", cache_dir=cache) is None  # not cached: no network in find_model
    pulled = resolve_model_source("org/tiny", cache_dir=cache, index=index)
    assert pulled.origin == "hub" and pulled.repo_id == "org/tiny" and (pulled.folder / "config.json").is_file()
    requests = len(hub.requests)
    cached = resolve_model_source("org/tiny", cache_dir=cache, index=index)
    assert (cached.origin, cached.folder) == ("cache", pulled.folder)
    assert len(hub.requests) == requests  # the second resolution did not touch the Hub


def test_an_incomplete_snapshot_is_not_a_cached_model(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = resolve_model_source("org/tiny", cache_dir=cache).folder
    weights = next(folder.glob("*.safetensors"))
    weights.unlink()  # as a cancelled pull leaves it
    assert find_model("org/tiny", cache_dir=cache) is None
    assert resolve_model_source("org/tiny", cache_dir=cache).origin == "hub" and weights.exists()


def test_roots_bound_what_a_client_may_name(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    save_tiny_llama(inside / "m")
    save_tiny_llama(outside / "m")
    roots = LocalRoots.of(inside)
    assert find_model(str(inside / "m"), roots=roots) is not None
    with pytest.raises(PathNotAllowed):
        find_model(str(outside / "m"), roots=roots)
    with pytest.raises(PathNotAllowed):
        resolve_sae_source(str(outside / "m"), roots=roots)


def test_sae_sources_local_demo_and_hub(hub: FakeHub, tmp_path: Path) -> None:
    demo_sae = resolve_sae_source(demo.DEMO_SAE_ID)
    assert (demo_sae.folder, demo_sae.default_id) == (demo.assets_dir() / "sae", demo.DEMO_SAE_ID)

    local = tmp_path / "my-sae"
    local.mkdir()
    src = resolve_sae_source(str(local))
    assert (src.folder, src.repo_id, src.path, src.default_id) == (local, None, "my-sae", "my-sae")
    with pytest.raises(NotFound):
        resolve_sae_source(str(tmp_path / "missing"))

    cache, index = tmp_path / "cache", CacheIndex(tmp_path / "data")
    src = resolve_sae_source("org/saes:layer_1", revision=None, cache_dir=cache, index=index)
    assert (src.repo_id, src.path, src.default_id) == ("org/saes", "layer_1", "org/saes:layer_1")
    assert (src.folder / "cfg.json").is_file()
    assert index.get("org/saes") is not None  # marked used
    requests = len(hub.requests)
    assert resolve_sae_source("org/saes:layer_1", cache_dir=cache).folder == src.folder
    assert len(hub.requests) == requests


@pytest.mark.parametrize(("source", "param", "code"), [
    ("", "source", "invalid_value"),
    ("not-a-repo", "source", "invalid_value"),
    ("org/saes:..", "source", "invalid_path"),
])
def test_bad_sae_sources_name_the_field(source: str, param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        resolve_sae_source(source)
    assert (e.value.param, e.value.code) == (param, code)
