"""The Docker files: what can be checked without a Docker daemon or the base-image registry. The Dockerfile is
parsed (dockerfile-parse) and checked for the things that matter: a Node stage that builds the UI, installs
from requirements.lock with an accelerator-specific torch wheel, a non-root user, a HEALTHCHECK on /health,
MILLM_HOST=0.0.0.0 and volumes for data and cache. The compose files are validated by `docker-compose config`
(Debian's docker-compose; .ci/run installs it), which CI never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    parser.build_args = {"BASE_IMAGE": "nvidia/cuda:12.8.1-runtime-ubuntu22.04"}
    return parser


def _stages(parser: DockerfileParser) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_the_ui_is_built_in_a_node_stage_and_copied_into_the_package(dockerfile):
    ui, runtime = _stages(dockerfile)
    assert ui[0]["value"].startswith("node:24") and ui[0]["value"].endswith(" AS ui")
    runs = " && ".join(i["value"] for i in ui if i["instruction"] == "RUN")
    assert "npm ci" in runs and "npm run build" in runs
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert any(c.startswith("--from=ui ") and "src/millm/webui/dist" in c for c in copies)


def test_the_runtime_installs_the_lock_file_with_a_cuda_torch_then_the_package(dockerfile):
    runtime = _stages(dockerfile)[-1]
    assert runtime[0]["value"].startswith("${BASE_IMAGE}")
    assert "ARG BASE_IMAGE=nvidia/cuda:" in (ROOT / "Dockerfile").read_text()  # (a CUDA runtime by default)
    runs = [i["value"] for i in runtime if i["instruction"] == "RUN"]
    install = next(r for r in runs if "requirements.lock" in r)
    assert "--index-url" in install and "TORCH_INDEX" in install and "torch==" in install
    assert "pip install -r requirements.lock" in install
    assert any("pip install --no-deps ." in r for r in runs)
    assert "download.pytorch.org/whl/cu" in (ROOT / "Dockerfile").read_text()


def test_it_runs_as_an_unprivileged_user_with_a_healthcheck_and_volumes(dockerfile):
    runtime = _stages(dockerfile)[-1]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = [i["value"] for i in runtime if i["instruction"] == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0] and "CMD" in health[0]
    env = dockerfile.envs
    assert env["MILLM_HOST"] == "0.0.0.0" and env["MILLM_DATA_DIR"] == "/data"
    assert env["HF_HOME"].startswith("/cache")
    volumes = " ".join(i["value"] for i in runtime if i["instruction"] == "VOLUME")
    assert "/data" in volumes and "/cache" in volumes
    assert [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"] == ['["millm", "serve"]']


def test_every_file_the_dockerfile_copies_exists(dockerfile):
    for ins in dockerfile.structure:
        if ins["instruction"] != "COPY" or ins["value"].startswith("--from"):
            continue
        *sources, _dest = ins["value"].split()
        for src in sources:
            assert (ROOT / src).exists(), src


def _compose() -> str | None:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing: .ci/run installs Debian's docker-compose package")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); CI installs and runs it")
    return found


@pytest.mark.parametrize(("name", "gpu"), [("docker-compose.yml", True), ("docker-compose.cpu.yml", False)])
def test_the_compose_files_validate(name, gpu):
    out = subprocess.run([_compose(), "-f", str(ROOT / name), "config"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("MILLM_")})
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    service = config["services"]["millm"]
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert bool(devices) == gpu
    if gpu:
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]}
    assert {"/data", "/cache"} <= targets
    assert "MILLM_API_KEY" in service["environment"]
