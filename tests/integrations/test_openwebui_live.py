"""The Open WebUI filter in a real Open WebUI, used through Open WebUI's own API as a user would: an
Open WebUI server whose OpenAI connection points at a live demo miLLM, the function installed and
enabled through its API, chats with the chat's toggle off and on.

Optional: Open WebUI is a ~3 GB install, kept out of requirements.lock. Install it in a venv of its own
and point MILLM_OPENWEBUI_VENV at it (integrations/openwebui/README.md):

    python3 -m venv /work/owui-venv && /work/owui-venv/bin/pip install open-webui==0.12.4 torch==2.13.0
    MILLM_OPENWEBUI_VENV=/work/owui-venv .venv/bin/python -m pytest -q tests/integrations/test_openwebui_live.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from millm import demo
from tests.conftest import free_port, serve_demo, upper_fraction
from tests.integrations.openwebui import FILTER_FILE, frontmatter

VENV = os.environ.get("MILLM_OPENWEBUI_VENV", "")
OPEN_WEBUI = Path(VENV) / "bin" / "open-webui"
META = json.loads((demo.assets_dir() / "demo.json").read_text())
CAPS, STRENGTH = META["caps_feature"], META["caps_strength"]
FID = "millm_steering"
STORY = [{"role": "user", "content": "Tell me a story."}]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VENV, reason="Open WebUI is not installed: set MILLM_OPENWEBUI_VENV to a venv with "
                                        "open-webui==0.12.4 (see integrations/openwebui/README.md)"),
    pytest.mark.skipif(bool(VENV) and not OPEN_WEBUI.is_file(),
                       reason=f"MILLM_OPENWEBUI_VENV={VENV} has no bin/open-webui: pip install open-webui==0.12.4 there"),
]


@pytest.fixture(scope="module")
def millm(tmp_path_factory: pytest.TempPathFactory):
    yield from serve_demo(tmp_path_factory, "owui-millm")


@pytest.fixture(scope="module")
def owui(millm, tmp_path_factory: pytest.TempPathFactory):
    """A fresh Open WebUI (empty data folder) whose one OpenAI connection is the miLLM server."""
    home = tmp_path_factory.mktemp("owui")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MILLM_")},
           "DATA_DIR": str(home / "data"), "OPENAI_API_BASE_URL": millm.url + "/v1", "OPENAI_API_KEY": "unused",
           "ENABLE_OLLAMA_API": "false", "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1",
           "WEBUI_SECRET_KEY": "millm-test-secret", "RAG_EMBEDDING_ENGINE": "openai",
           "ENABLE_VERSION_UPDATE_CHECK": "false", "ANONYMIZED_TELEMETRY": "false", "DO_NOT_TRACK": "true"}
    log = (home / "open-webui.log").open("wb")
    proc = subprocess.Popen([str(OPEN_WEBUI), "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=home,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420  # imports alone take a minute or more on 2 busy cores
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Open WebUI exited ({proc.returncode}):\n{(home / 'open-webui.log').read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Open WebUI did not start:\n{(home / 'open-webui.log').read_text()[-3000:]}")
            time.sleep(1)
        client = httpx.Client(base_url=url, timeout=300)
        # The first account to sign up on a fresh Open WebUI is its admin.
        r = client.post("/api/v1/auths/signup", json={"name": "Ada", "email": "ada@example.com",
                                                      "password": "a-Long-password-1"})
        assert r.status_code == 200 and r.json()["role"] == "admin", r.text
        client.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def chat(owui: httpx.Client, *, toggle: bool, stream: bool = False, model: str = demo.DEMO_MODEL_ID) -> dict:
    """One chat turn through Open WebUI's chat API; `filter_ids` is what its chat page sends for the toggles
    switched on in that chat."""
    r = owui.post("/api/chat/completions", json={
        "model": model, "messages": STORY, "stream": stream, "max_tokens": 60, "temperature": 0,
        "filter_ids": [FID] if toggle else []})
    assert r.status_code == 200, r.text
    if not stream:
        answer = r.json()
    else:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        answer = {"choices": [{"message": {"content": text}}], "millm": chunks[0]["millm"]}
    s = answer["millm"]["steering"]
    feats = ", ".join(f"{f['index']}:{f['strength']:g}" for f in s["features"])
    # what a person running this optional test sees with -s (integrations/openwebui/README.md quotes it)
    print(f"\n[{model}, toggle {'on' if toggle else 'off'}{', streamed' if stream else ''}] steering source="  # noqa: T201
          f"{s['source']} profile={s.get('profile')} scale={s.get('scale')} features=[{feats}]\n  "
          f"{text_of(answer)[:110]!r}")
    return answer


def text_of(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"]


def test_the_filter_steers_chats_in_open_webui(owui: httpx.Client) -> None:
    models = {m["id"] for m in owui.get("/api/models").json()["data"]}
    assert {demo.DEMO_MODEL_ID, f"{demo.DEMO_MODEL_ID}+yelling-demo"} <= models

    # install it as the admin panel's import does: the file's text, the description from its frontmatter
    source = FILTER_FILE.read_text()
    r = owui.post("/api/v1/functions/create", json={"id": FID, "name": "miLLM Steering", "content": source,
                                                     "meta": {"description": frontmatter(source)["description"]}})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["type"] == "filter" and created["meta"]["manifest"]["title"] == "miLLM Steering"
    assert owui.post(f"/api/v1/functions/id/{FID}/toggle").json()["is_active"] is True
    assert owui.post(f"/api/v1/functions/id/{FID}/toggle/global").json()["is_global"] is True
    assert set(owui.get(f"/api/v1/functions/id/{FID}/valves/spec").json()["properties"]) >= {
        "profile", "features", "intensity"}
    assert set(owui.get(f"/api/v1/functions/id/{FID}/valves/user/spec").json()["properties"]) == {
        "profile", "features", "intensity"}
    r = owui.post(f"/api/v1/functions/id/{FID}/valves/update", json={"profile": "yelling-demo"})
    assert r.status_code == 200 and r.json()["profile"] == "yelling-demo", r.text

    # Open WebUI offers it as a toggle (with its icon) on the miLLM models
    demo_model = next(m for m in owui.get("/api/models").json()["data"] if m["id"] == demo.DEMO_MODEL_ID)
    toggle = next(f for f in demo_model["filters"] if f["id"] == FID)
    assert toggle["icon"].startswith("data:image/svg+xml") and toggle["has_user_valves"] is True

    off = chat(owui, toggle=False)
    assert off["millm"]["steering"]["source"] == "none" and upper_fraction(text_of(off)) < 0.1
    on = chat(owui, toggle=True)
    assert on["millm"]["steering"] == {**on["millm"]["steering"], "source": "profile", "profile": "yelling-demo"}
    assert upper_fraction(text_of(on)) >= 0.8
    streamed = chat(owui, toggle=True, stream=True)
    assert streamed["millm"]["steering"]["source"] == "profile" and upper_fraction(text_of(streamed)) >= 0.8

    # a user's own valves: intensity scales the profile's strengths (steering.scale) ...
    assert owui.post(f"/api/v1/functions/id/{FID}/valves/user/update", json={"intensity": 1.2}).status_code == 200
    scaled = chat(owui, toggle=True)["millm"]["steering"]
    assert (scaled["source"], scaled["profile"], scaled["scale"]) == ("profile", "yelling-demo", 1.2)
    assert [(f["index"], f["strength"]) for f in scaled["features"]] == [(CAPS, pytest.approx(STRENGTH * 1.2))]
    # ... 0 turns steering off, even on a '<model>+<profile>' model ...
    owui.post(f"/api/v1/functions/id/{FID}/valves/user/update", json={"intensity": 0})
    quiet = chat(owui, toggle=True, model=f"{demo.DEMO_MODEL_ID}+yelling-demo")
    assert quiet["millm"]["steering"]["source"] == "none" and upper_fraction(text_of(quiet)) < 0.1
    # ... and features of one's own
    owui.post(f"/api/v1/functions/id/{FID}/valves/user/update", json={"features": f"{CAPS}:{STRENGTH}"})
    own = chat(owui, toggle=True)
    assert own["millm"]["steering"]["source"] == "request"
    assert [(f["index"], f["strength"]) for f in own["millm"]["steering"]["features"]] == [(CAPS, STRENGTH)]
    assert upper_fraction(text_of(own)) >= 0.8

    # mistakes reach the user as Open WebUI errors with miLLM's message
    owui.post(f"/api/v1/functions/id/{FID}/valves/user/update", json={"profile": "nope"})
    r = owui.post("/api/chat/completions", json={"model": demo.DEMO_MODEL_ID, "messages": STORY, "stream": False,
                                                  "max_tokens": 10, "filter_ids": [FID]})
    assert r.status_code == 400 and "unknown profile 'nope'" in r.text
    owui.post(f"/api/v1/functions/id/{FID}/valves/user/update", json={"features": "16"})
    r = owui.post("/api/chat/completions", json={"model": demo.DEMO_MODEL_ID, "messages": STORY, "stream": False,
                                                  "max_tokens": 10, "filter_ids": [FID]})
    assert r.status_code == 400 and "'16' is not INDEX:STRENGTH" in r.text
