"""Cache listing, tagging, last use and deletion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from millm.errors import InvalidRequest, NotFound
from millm.hub.cache import CacheIndex, check_repo_id, check_revision, delete_cached, get_cached, list_cache, local_path
from millm.hub.download import pull_model, pull_sae
from tests.hub.fake_hub import FakeHub


def test_empty_or_missing_cache(tmp_path: Path) -> None:
    assert list_cache(tmp_path / "nope") == []
    with pytest.raises(NotFound):
        delete_cached("org/x", tmp_path / "nope")


def test_list_tags_and_last_use(fake_hub: FakeHub, tmp_path: Path) -> None:
    cache, index = tmp_path / "cache", CacheIndex(tmp_path / "data")
    fake_hub.add_repo("org/model", {"config.json": "{}", "model.safetensors": os.urandom(1000)})
    fake_hub.add_repo("org/scope", {"l0/params.npz": b"x" * 10, "l1/params.npz": b"y" * 10})
    pull_model("org/model", cache_dir=cache, endpoint=fake_hub.endpoint, index=index)
    pull_sae("org/scope", "l0", cache_dir=cache, endpoint=fake_hub.endpoint)  # not indexed: detected by files

    repos = {r.repo_id: r for r in list_cache(cache, index=index)}
    model, scope = repos["org/model"], repos["org/scope"]
    assert (model.kind, scope.kind) == ("model", "sae")
    assert model.name == "model" and model.size_bytes == 1002 and model.refs == ("main",)
    assert scope.sae_paths == ("l0",)
    assert [r.repo_id for r in list_cache(cache, kind="sae")] == ["org/scope"]

    index.mark_used("org/model", when=123.0)
    assert get_cached("org/model", cache, index=index).last_used == 123.0
    data = model.to_dict()
    assert str(tmp_path) not in repr(data) and data["revisions"][0]["files"] == 2

    folder = local_path("org/model", cache_dir=cache)
    assert (folder / "config.json").exists()
    assert local_path("org/scope", path="l0", cache_dir=cache).name == "l0"
    with pytest.raises(NotFound):
        local_path("org/model", "v2", cache_dir=cache)


def test_delete_revision_then_repo(fake_hub: FakeHub, tmp_path: Path) -> None:
    cache, index = tmp_path / "cache", CacheIndex(tmp_path / "data")
    repo = fake_hub.add_repo("org/model", {"config.json": "{}", "model.safetensors": b"1" * 100})
    pull_model("org/model", cache_dir=cache, endpoint=fake_hub.endpoint, index=index)
    old = repo.sha
    repo.push({"config.json": "{}", "model.safetensors": b"2" * 100}, tag_previous="v1")
    pull_model("org/model", cache_dir=cache, endpoint=fake_hub.endpoint, index=index)
    assert len(get_cached("org/model", cache).revisions) == 2
    pull_model("org/model", "v1", cache_dir=cache, endpoint=fake_hub.endpoint, index=index)
    assert set(get_cached("org/model", cache).refs) == {"main", "v1"}
    assert local_path("org/model", "v1", cache_dir=cache).name == old

    assert delete_cached("org/model", cache, revision=old, index=index) == 100  # the unshared blob
    assert len(get_cached("org/model", cache).revisions) == 1
    with pytest.raises(NotFound):
        delete_cached("org/model", cache, revision="v9")
    assert delete_cached("org/model", cache, index=index) > 0
    assert list_cache(cache) == [] and not (cache / "models--org--model").exists()
    assert index.get("org/model") == {}


def test_check_repo_id_accepts_hub_ids_and_names_the_param_otherwise() -> None:
    for ok in ("gpt2", "org/name", "EleutherAI/pythia-70m", "a.b_c-d/e.f"):
        check_repo_id(ok, param="repo_id")
    for bad in ("", "a b", "../x", "a/b/c", "org/-name", "org/na--me", "x" * 97):
        with pytest.raises(InvalidRequest) as e:
            check_repo_id(bad, param="model")
        assert (e.value.param, e.value.code) == ("model", "invalid_repo_id")
        assert f"'{bad}' is not a Hub repo id" in e.value.message


def test_check_revision_accepts_hub_refs_and_refuses_what_could_leave_refs() -> None:
    for ok in (None, "", "main", "v1.0", "refs/pr/1", "feature/x", "a" * 40):
        check_revision(ok)
    for bad in ("../../x", "a..b", "/x", "x/", "a//b", "a b", "x:y", "a\\b", "x.lock", "a~1", "a^", "a@{0}"):
        with pytest.raises(InvalidRequest) as e:
            check_revision(bad)
        assert (e.value.param, e.value.code) == ("revision", "invalid_revision")
