"""The commands that drive a running server (ps, show, steer, sae, run/chat, monitor, profile rm, stop),
each against a live server found through MILLM_HOST/MILLM_PORT, and `millm serve MODEL` + `millm stop`
in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from millm.__main__ import main
from millm.demo import assets_dir
from tests.conftest import free_port

MODEL = "test-org/tiny"


@pytest.fixture()
def cli(server):  # noqa: ANN201 - runs `millm ARGS` with MILLM_HOST/MILLM_PORT pointing at the live server
    parts = urlsplit(server.url)
    env = {"MILLM_HOST": parts.hostname, "MILLM_PORT": str(parts.port), "MILLM_URL": ""}

    def run(*args: str, code: int = 0, input: str | None = None) -> str:
        result = CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    httpx.delete(server.url + "/api/steering")
    return run


def test_ps_shows_model_sae_steering_and_queue(cli, server) -> None:
    out = cli("ps")
    assert "MODEL     test-org/tiny (" in out and " layers, context " in out
    assert "SAE       sae at layer 1 (blocks.1.hook_resid_post, d_sae 256" in out
    assert "STEERING  off" in out and "PROFILE   -" in out and "0 waiting, 0 decoding (batch up to 8)" in out
    httpx.put(server.url + "/api/steering", json={"features": [{"index": 5, "strength": 8}]})
    assert "STEERING  add 5:8" in cli("ps")


def test_steer_set_show_clear(cli, server) -> None:
    assert cli("steer", "set", "5:8", "9:-2.5") == "steering: add 5:8, 9:-2.5\n"
    st = httpx.get(server.url + "/api/steering").json()
    assert [(f["index"], f["strength"]) for f in st["features"]] == [(5, 8.0), (9, -2.5)] and st["mode"] == "add"
    assert cli("steer") == "steering: add 5:8, 9:-2.5\n"
    assert cli("steer", "set", "7:3", "--mode", "clamp") == "steering: clamp 7:3\n"
    assert httpx.get(server.url + "/api/steering").json()["mode"] == "clamp"
    assert cli("steer", "clear") == "steering: off\n"
    assert httpx.get(server.url + "/api/steering").json()["features"] == []
    assert "(param: features[0].index)" in cli("steer", "set", "999:1", code=1)  # d_sae is 256
    assert "is not INDEX:STRENGTH" in cli("steer", "set", "five", code=2)


def test_sae_detach_and_attach(cli, server, tiny_sae_dir: Path) -> None:
    assert cli("sae", "detach") == "detached\n"
    assert httpx.get(server.url + "/api/saes/attached").json()["attached"] is None
    assert "SAE       none attached" in cli("ps")
    out = cli("sae", "attach", str(tiny_sae_dir), "--sae-id", "sae")
    assert out == "attached sae at layer 1 (blocks.1.hook_resid_post, d_sae 256)\n"
    assert httpx.get(server.url + "/api/saes/attached").json()["attached"]["id"] == "sae"
    assert "(param: source)" in cli("sae", "attach", "./no/such/sae", code=1)


def test_chat_one_shot_streams_with_steering(cli, server) -> None:
    plain = httpx.post(server.url + "/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}).json()
    assert cli("chat", "hi", "--max-tokens", "8", "--temperature", "0") == \
        plain["choices"][0]["message"]["content"] + "\n"
    steered = httpx.post(server.url + "/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0,
        "steering": {"features": [{"index": 5, "strength": 40}]}}).json()["choices"][0]["message"]["content"]
    out = cli("chat", "hi", "--max-tokens", "8", "--temperature", "0", "--steer", "5:40")
    assert out == "steering: add 5:40 (request)\n" + steered + "\n"
    assert steered != plain["choices"][0]["message"]["content"]  # the steering reached the model
    assert "--profile or --steer, not both" in cli("chat", "hi", "--steer", "5:1", "--profile", "x", code=2)
    assert "'nope' (param: steering.profile)" in cli("chat", "hi", "--profile", "nope", code=1)


def test_chat_interactive_keeps_the_conversation(cli, server, monkeypatch) -> None:
    monkeypatch.setattr("millm.cli_server.stdin_is_terminal", lambda: True)
    seen: list[dict] = []
    real = httpx.stream

    def spy(method, url, **kw):  # noqa: ANN001, ANN202 - records each request body
        seen.append(json.loads(json.dumps(kw["json"])))
        return real(method, url, **kw)

    monkeypatch.setattr(httpx, "stream", spy)
    out = cli("chat", "--max-tokens", "4", input="hello\n/steer 5:8\nagain\n/steer off\n/clear\nthird\n/bye\n")
    assert "Chatting with test-org/tiny" in out and "(steering 5:8)" in out and "steering: add 5:8 (request)" in out
    assert [len(b["messages"]) for b in seen] == [1, 3, 1]  # history kept, then cleared
    assert [b.get("steering") for b in seen] == [None, {"features": [{"index": 5, "strength": 8.0}]}, None]
    assert seen[1]["messages"][1]["role"] == "assistant"


def test_profile_rm(cli, server) -> None:
    cli("profile", "create", "gone", "-f", "5:8")
    assert cli("profile", "rm", "gone", "-y") == "deleted gone\n"
    assert httpx.get(server.url + "/api/profiles/gone").status_code == 404
    assert "404: " in cli("profile", "rm", "gone", "-y", code=1)


def test_show_adds_the_attached_sae(cli, server, tiny_model_dir: Path) -> None:
    out = cli("show", str(tiny_model_dir))
    assert "architecture     LlamaForCausalLM" in out and "layers" in out
    demo = cli("show", "millm-demo")
    n_params = json.loads((assets_dir() / "demo.json").read_text())["measured"]["n_params"]  # counted by training
    assert f"parameters       {n_params:,}" in demo and "context length   256" in demo
    assert "chat template    yes" in demo and "sae              none attached" in demo
    assert "{%" in cli("show", "millm-demo", "--template")
    assert "is not in the cache" in cli("show", "org/not-pulled", code=1)
    assert "does not exist" in cli("show", "./missing-folder", code=1)


def test_monitor_prints_tokens_with_top_features(cli, server) -> None:
    def later() -> None:
        time.sleep(1.5)
        httpx.post(server.url + "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}, timeout=60)

    before = httpx.get(server.url + "/api/monitor/config").json()
    thread = threading.Thread(target=later)
    thread.start()
    out = cli("monitor", "--count", "3", "--top-k", "2")
    thread.join()
    lines = [line for line in out.splitlines() if " gen " in line]
    assert len(lines) == 3, out
    for line in lines:
        features = line.split(" | ")
        assert len(features) == 2
        assert all(len(f.rsplit(" ", 1)[1].split(".")[1]) == 2 for f in features)  # two decimals
    after = httpx.get(server.url + "/api/monitor/config").json()
    assert (after["enabled"], after["top_k"]) == (before["enabled"], before["top_k"])  # left as it was


def test_run_loads_the_demo_with_its_sae(cli, server) -> None:
    # 40 tokens, as in the README: the demo's yelling starts a few words in ("Once upon a time, there WAS A ...")
    out = cli("run", "millm-demo", "Tell me a story.", "--max-tokens", "40", "--temperature", "0",
              "--profile", "yelling-demo")
    status = httpx.get(server.url + "/api/status").json()
    assert status["model"]["source"] == "millm-demo" and status["sae"]["id"] == "millm-demo-sae"
    assert "loading millm-demo" in out and "(profile yelling-demo)" in out
    answer = out.strip().splitlines()[-1]
    letters = [c for c in answer if c.isalpha()]
    assert letters and sum(c.isupper() for c in letters) / len(letters) > 0.8, answer
    again = cli("run", "millm-demo", "Hello.", "--max-tokens", "3")
    assert "loading" not in again  # already served: not loaded twice
    layer = json.loads((assets_dir() / "demo.json").read_text())["layer"]
    assert f"sae              millm-demo-sae at layer {layer}" in cli("show", "millm-demo")  # attached on the server

def test_commands_say_when_no_server_runs() -> None:
    env = {"MILLM_HOST": "127.0.0.1", "MILLM_PORT": str(free_port()), "MILLM_URL": ""}
    for args in (["ps"], ["stop"], ["steer", "clear"], ["chat", "hi"], ["sae", "detach"], ["monitor"],
                 ["profile", "ls"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1 and "is `millm serve` running?" in result.output, (args, result.output)


def test_api_key_is_sent_as_bearer(cli, server, monkeypatch) -> None:
    sent: list[str | None] = []
    real = httpx.request

    def spy(method, url, **kw):  # noqa: ANN001, ANN202
        sent.append(kw["headers"].get("Authorization"))
        return real(method, url, **kw)

    monkeypatch.setattr(httpx, "request", spy)
    monkeypatch.setenv("MILLM_API_KEY", "sk-test")
    cli("steer")
    assert sent == ["Bearer sk-test"]


@pytest.mark.slow
def test_serve_positional_model_then_stop(tmp_path: Path, tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "MILLM_PORT": str(port), "MILLM_DATA_DIR": str(tmp_path / "data"), "MILLM_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "millm", "serve", str(tiny_model_dir), "--sae", str(tiny_sae_dir),
                             "--log-format", "json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/api/status").json()["model"]["id"] == tiny_model_dir.name
        chat = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"X-Request-ID": "req-42"}, json={
            "model": tiny_model_dir.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "steering": {"features": [{"index": 3, "strength": 2}]}})
        assert chat.status_code == 200 and chat.headers["x-request-id"] == "req-42"
        result = CliRunner().invoke(main, ["stop"], env={"MILLM_PORT": str(port), "MILLM_HOST": "127.0.0.1",
                                                         "MILLM_URL": ""})
        assert result.exit_code == 0 and "is shutting down" in result.output, result.output
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    # --log-format json: every line one JSON object, no terminal escape codes, no progress bars
    records = [json.loads(line) for line in out.splitlines()]
    assert "\x1b" not in out and not any("color_message" in r for r in records)
    assert any(r["message"] == "shutdown requested by 127.0.0.1" for r in records)
    access = [r for r in records if r["logger"] == "millm.access" and r["path"] == "/v1/chat/completions"]
    assert len(access) == 1
    a = access[0]
    assert (a["method"], a["status"], a["request_id"], a["steering"]) == ("POST", 200, "req-42", "request add 3:2")
    assert a["client"].startswith("127.0.0.1:") and a["duration_ms"] > 0
    done = [r for r in records if r["message"] == "request done"]
    assert done[0]["steering"] == "request add 3:2" and done[0]["http_request_id"] == "req-42"


def test_monitor_line_format() -> None:
    from millm.cli_server import format_frame

    frame = {"request_id": "chatcmpl-abcdef123456", "phase": "generated", "position": 12, "token": " HELLO",
             "activations": [{"index": 16, "value": 8.234, "label": "CAPS"}, {"index": 3, "value": 1.5}]}
    assert format_frame(frame, {3: "commas"}) == 'ef123456 gen   12 " HELLO"       16 (CAPS) 8.23 | 3 (commas) 1.50'
