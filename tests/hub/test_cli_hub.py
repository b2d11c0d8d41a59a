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

    listing = json.loads(cli("ls", "--json").output)
    assert [(r["repo_id"], r["kind"]) for r in listing] == [("org/saes", "sae"), ("org/tiny", "model")]
    assert listing[0]["sae_paths"] == ["layer_3"] and listing[1]["refs"] == ["main"]
    assert str(tmp_path) not in cli("ls", "--json").output  # no server paths
    table = cli("ls").output
    assert "org/tiny" in table and "50.0 KB" in table

    assert cli("ls", "--kind", "sae", "--json").output.count("repo_id") == 1
    assert cli("rm", "org/tiny", "--yes").exit_code == 0
    assert [r["repo_id"] for r in json.loads(cli("ls", "--json").output)] == ["org/saes"]


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
