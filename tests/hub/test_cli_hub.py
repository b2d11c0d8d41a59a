"""The cache CLI commands, run with click's CliRunner against the FakeHub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from millm.cli_hub import register
from tests.hub.fake_hub import FakeHub


@pytest.fixture
def cli(tmp_path: Path, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("MILLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MILLM_DATA_DIR", str(tmp_path / "data"))

    @click.group()
    def main() -> None:
        pass

    register(main)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(main, list(args), catch_exceptions=False, **kw)


def test_pull_ls_rm(cli, fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo("org/tiny", {"config.json": "{}", "model.safetensors": os.urandom(50_000)})
    fake_hub.add_repo("org/saes", {"layer_3/cfg.json": "{}", "layer_3/sae_weights.safetensors": b"x" * 10, "layer_4/cfg.json": "{}"})

    result = cli("pull", "org/tiny")
    assert result.exit_code == 0, result.output
    assert "Pulled org/tiny@main" in result.output
    assert cli("sae", "pull", "org/saes", "layer_3").exit_code == 0

    everything = json.loads(cli("ls", "--json").output)
    assert [(r["repo_id"], r["kind"]) for r in everything if r.get("bundled")] == [
        ("millm-demo", "model"), ("millm-demo-sae", "sae")]  # the bundled demo is listed too
    listing = [r for r in everything if not r.get("bundled")]
    assert [(r["repo_id"], r["kind"]) for r in listing] == [("org/saes", "sae"), ("org/tiny", "model")]
    assert listing[0]["sae_paths"] == ["layer_3"] and listing[1]["refs"] == ["main"]
    assert str(tmp_path) not in cli("ls", "--json").output  # no server paths
    table = cli("ls").output
    assert "org/tiny" in table and "50.0 KB" in table

    assert "millm-demo      model (bundled)" in table
    assert cli("ls", "--kind", "sae", "--json").output.count("repo_id") == 2  # org/saes and the demo SAE
    assert cli("rm", "org/tiny", "--yes").exit_code == 0
    assert [r["repo_id"] for r in json.loads(cli("ls", "--json").output) if not r.get("bundled")] == ["org/saes"]


def test_errors_are_clean(cli, fake_hub: FakeHub) -> None:
    fake_hub.add_repo("org/private", {"config.json": "{}", "model.safetensors": b"x"}, private=True, tokens={"t"})
    result = cli("pull", "org/private")
    assert result.exit_code == 1 and "HF_TOKEN" in result.output and "Traceback" not in result.output
    assert "not found" in cli("pull", "org/missing").output
    assert cli("rm", "org/missing", "-y").exit_code == 1


def test_estimate(cli, fake_hub: FakeHub, tiny_llama_dir: tuple[Path, int]) -> None:
    folder, n_params = tiny_llama_dir
    fake_hub.add_folder("org/tiny-llama", folder)
    remote = cli("estimate", "org/tiny-llama", "--dtype", "bfloat16")
    assert remote.exit_code == 0, remote.output
    assert f"{n_params:,} parameters" in remote.output and "It fits." in remote.output
    assert cli("estimate", str(folder)).exit_code == 0
    assert cli("estimate", "millm-demo").exit_code == 0


def test_estimate_for_a_device_that_is_not_here(cli, fake_hub: FakeHub, tiny_llama_dir: tuple[Path, int]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder, n_params = tiny_llama_dir
    fake_hub.add_folder("org/tiny-llama", folder)
    for model in ("org/tiny-llama", str(folder)):
        out = cli("estimate", model, "--device", "cuda", "--dtype", "bfloat16")
        assert out.exit_code == 0, out.output
        assert f"{n_params:,} parameters" in out.output and "cuda is not present on this machine" in out.output
    data = json.loads(cli("estimate", str(folder), "--device", "cuda:1", "--json").output)
    assert (data["device"], data["device_present"], data["fits"]) == ("cuda:1", False, None)
    assert data["weights_bytes"] == n_params * 2  # auto on a GPU: 2 bytes a parameter


def test_sources_resolve_as_the_server_resolves_them(cli) -> None:
    missing = cli("estimate", "./no/such/folder")
    assert missing.exit_code == 1 and "model folder './no/such/folder' does not exist" in missing.output
    assert "Traceback" not in missing.output and "repo id" not in missing.output
    demo = cli("estimate", "millm-demo", "--json")
    assert demo.exit_code == 0 and json.loads(demo.output)["source"] == "local"


def test_an_unreachable_hub_is_named_with_what_to_do(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for args in (("pull", "gpt2"), ("estimate", "gpt2"), ("sae", "pull", "org/saes", "layer_3")):
        out = cli(*args)
        assert out.exit_code == 1, out.output
        text = " ".join(out.output.split())
        assert f"Could not reach the Hugging Face Hub at {endpoint}" in text, text
        assert "HF_ENDPOINT" in text and "HF_HUB_OFFLINE=1" in text and "local folder" in text
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    out = cli("pull", "gpt2")
    assert out.exit_code == 1 and "HF_HUB_OFFLINE is set" in out.output and "Unset HF_HUB_OFFLINE" in out.output
