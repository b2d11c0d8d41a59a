"""Shared fixtures: a tiny offline Llama, a tiny SAE for it, and a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from millm.app import create_app
from millm.config import Settings
from millm.server import DrainingServer
from tests.fixtures.tiny_model import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from tests.sae.builders import make_sae, write_saelens

    # trained on the tiny model, as far as its metadata says (a model served from a folder is named by the folder)
    sae = make_sae("standard", d_in=64, d_sae=256, seed=1, hook_name="blocks.1.hook_resid_post",
                   model_name=tiny_model_dir.name)
    return write_saelens(sae, tmp_path_factory.mktemp("tiny-sae") / "sae", "blocks.1.hook_resid_post")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def runtime(self):  # noqa: ANN201 - millm.services.runtime.Runtime
        return self.app.state.runtime  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings: Settings, *, wait_ready: bool = True) -> LiveServer:
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on")
    server = DrainingServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/health", timeout=2)
            if r.status_code == 200 or (not wait_ready and r.status_code == 503):
                return LiveServer(url, app, server, thread)
            if r.json().get("error"):
                raise RuntimeError(f"server failed to start: {r.json()['error']}")
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def serve_demo(tmp_path_factory: pytest.TempPathFactory, name: str, **kw: object) -> Iterator[LiveServer]:
    """A live server on the bundled demo (model + SAE, the default) with its own data folder; a
    module-scoped fixture does `yield from serve_demo(tmp_path_factory, "name")`."""
    server = start_server(Settings(port=free_port(), data_dir=tmp_path_factory.mktemp(name), **kw))  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def upper_fraction(text: str) -> float:
    """Share of the letters that are capitals (what the demo's CAPS feature moves); needs a real answer."""
    letters = [c for c in text if c.isalpha()]
    assert len(letters) > 20, text
    return sum(c.isupper() for c in letters) / len(letters)


def tiny_settings(tmp: Path, model: Path, sae: Path | None = None, **kw: object) -> Settings:
    # Tests load models and SAEs they built in pytest's temporary folders: allow those (tmp's parent) for the API.
    kw.setdefault("allowed_paths", [tmp.parent])
    return Settings(model=str(model), sae=str(sae) if sae else None, port=free_port(), data_dir=tmp / "data",
                    **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_sae_dir: Path) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("server")
    live = start_server(tiny_settings(tmp, tiny_model_dir, tiny_sae_dir, served_model_name="test-org/tiny",
                                      queue_size=8, max_batch_size=8))
    yield live
    live.stop()


@pytest.fixture()
def client(server: LiveServer):  # noqa: ANN201 - openai.OpenAI
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


# A POST without a JSON body must say it is not a cross-site form (millm.api.security): the web UI and test
# clients send X-MiLLM-Client, SDKs send Authorization.
CLIENT_HEADERS = {"X-MiLLM-Client": "test"}


def client_post(url: str, **kw: object) -> httpx.Response:
    headers = {**CLIENT_HEADERS, **dict(kw.pop("headers", None) or {})}  # type: ignore[call-overload]
    return httpx.post(url, headers=headers, **kw)  # type: ignore[arg-type]
