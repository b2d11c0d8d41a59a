"""The README and docs stay true: every doc listed, links resolve, named commands, settings and routes exist,
and the README's runnable blocks (marked `<!-- runnable -->` above the fence) run against a live demo server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from millm.__main__ import main
from millm.config import Settings
from tests.conftest import free_port, start_server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
TEXTS = {ROOT / "README.md": README, **DOCS}
RUNNABLE = re.compile(r"<!-- runnable -->\n```(sh|python)\n(.*?)```", re.S)


def test_the_readme_lists_every_doc() -> None:
    for path in DOCS:
        assert f"(docs/{path.name})" in README, f"README does not list docs/{path.name}"


def test_relative_links_resolve() -> None:
    for path, text in TEXTS.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def _command_paths(group: click.Group, prefix: str = "millm") -> set[str]:
    out = set()
    for name, cmd in group.commands.items():
        out.add(f"{prefix} {name}")
        if isinstance(cmd, click.Group):
            out |= _command_paths(cmd, f"{prefix} {name}")
    return out


def test_named_commands_settings_and_routes_exist() -> None:
    from millm.app import create_app

    commands = _command_paths(main)
    groups = {name for name, cmd in main.commands.items() if isinstance(cmd, click.Group)}
    settings = {f"MILLM_{name.upper()}" for name in Settings.model_fields}
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
    # variables the compose files substitute (e.g. MILLM_PUBLISH, the published port) are read there
    source += "\n".join(f'"{v}"' for p in ROOT.glob("docker-compose*.yml")
                        for v in re.findall(r"\$\{(MILLM_[A-Z_]+)", p.read_text()))
    paths = set(create_app(Settings()).openapi()["paths"]) | {"/ws/monitor", "/ws/downloads"}
    patterns = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in paths]
    for path, text in TEXTS.items():
        for group, sub in re.findall(r"`millm ([a-z-]+)(?: ([a-z-]+))?", text):
            if group in groups and sub:
                assert f"millm {group} {sub}" in commands, f"{path.name} names `millm {group} {sub}`"
            else:
                assert f"millm {group}" in commands, f"{path.name} names `millm {group}`"
        for var in set(re.findall(r"\bMILLM_[A-Z_]+[A-Z]\b", text)):
            assert var in settings or f'"{var}"' in source, f"{path.name} names {var}, which nothing reads"
        for route in set(re.findall(r"(?<![\w.])(/(?:api|v1|ws)/[A-Za-z0-9_{}./-]*[A-Za-z0-9_}])", text)):
            route = route.split("?")[0]
            assert any(p.match(route) for p in patterns) or any(p.startswith(route + "/") for p in paths), \
                f"{path.name} names {route}, which is not a route"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    live = start_server(Settings(port=free_port(), data_dir=tmp_path_factory.mktemp("readme") / "data"))
    yield live
    live.stop()


BLOCKS = RUNNABLE.findall(README)


def test_the_readme_has_runnable_blocks() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("lang,code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(lang: str, code: str, demo_server, tmp_path: Path) -> None:
    port = demo_server.url.rsplit(":", 1)[1]
    code = code.replace("localhost:8000", f"127.0.0.1:{port}")
    env = {**os.environ, "MILLM_PORT": port, "MILLM_HOST": "127.0.0.1", "MILLM_URL": ""}
    if lang == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", code]
    else:
        argv = [sys.executable, "-c", code]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{code}\n--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
