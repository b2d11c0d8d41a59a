"""The wheel, installed with nothing but its declared dependencies, gives a `millm` that serves the demo.

`make` installs the dev tools too, so an import of a package that is only a dev dependency would go
unnoticed anywhere else. This builds the wheel as a user's pip would (`pip wheel`, with the build
backend pinned in pyproject.toml), installs it into a fresh venv with pip resolving its declared
dependencies from the configured index (constrained to the versions in requirements.lock), checks
that no dev dependency came along, then runs `millm --help`, `millm serve` (the bundled demo), one
chat request and `millm stop`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-copy"  # build from a copy: the build leaves build/ and *.egg-info behind
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "node_modules")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("millm-*.whl")
    _run(sys.executable, "-m", "venv", tmp / "venv")
    pip = tmp / "venv" / "bin" / "pip"
    _run(pip, "install", "-q", "--no-compile", "-c", ROOT / "requirements.lock", wheel)  # no .pyc: faster
    return tmp / "venv"


def test_only_declared_dependencies_are_installed(venv: Path) -> None:
    installed = _run(venv / "bin" / "pip", "list", "--format=freeze").stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert "millm" in names and "torch" in names and "httpx" in names
    assert not names & {"pytest", "openai", "schemathesis", "matplotlib", "py-spy"}  # dev/extra tools stay out


def test_millm_help_and_a_demo_chat(venv: Path, tmp_path: Path) -> None:
    millm = venv / "bin" / "millm"
    out = _run(millm, "--help").stdout
    assert "serve" in out and "run" in out and "ps" in out
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILLM_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(MILLM_PORT=str(port), MILLM_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path))
    proc = subprocess.Popen([millm, "serve"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "millm-demo", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 12, "temperature": 0, "steering": {"profile": "yelling-demo"}})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] and r.json()["millm"]["steering"]["source"] == "profile"
        assert "is shutting down" in _run(millm, "stop", env=env).stdout
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            print(proc.stdout.read() if proc.stdout else "")  # noqa: T201 (pytest shows it when the test failed)
