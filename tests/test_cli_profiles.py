"""`millm profile ...` against a live server: each command's output and its effect over REST."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from millm.__main__ import main

MODEL = "test-org/tiny"


@pytest.fixture()
def cli(server):  # noqa: ANN201 - a function running `millm profile --url <server> ARGS`
    runner = CliRunner()

    def run(*args: str, input: bytes | str | None = None, code: int = 0, env: dict[str, str] | None = None):
        argv = ["profile", *args] if env else ["profile", "--url", server.url, *args]
        result = runner.invoke(main, argv, input=input, env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    for p in httpx.get(server.url + "/api/profiles").json()["data"]:
        httpx.delete(f"{server.url}/api/profiles/{p['name']}")
    httpx.delete(server.url + "/api/steering")
    return run


def test_create_ls_show_activate_deactivate(cli, server) -> None:
    assert cli("ls") == ""
    assert cli("create", "calm", "-f", "5:8", "-f", "9:-2.5", "--description", "quiet") == \
        "created calm (version 1)\n"
    stored = httpx.get(server.url + "/api/profiles/calm").json()
    assert (stored["model"], stored["sae"]["id"], stored["sae"]["d_sae"], stored["description"]) == (
        MODEL, "sae", 256, "quiet")
    assert [(f["index"], f["strength"]) for f in stored["features"]] == [(5, 8.0), (9, -2.5)]
    assert json.loads(cli("show", "calm")) == stored
    line = cli("ls")
    assert line.startswith("  calm ") and "[5:8, 9:-2.5]" in line

    assert cli("activate", "calm") == "activated calm\n"
    steering = httpx.get(server.url + "/api/steering").json()
    assert steering["profile"] == "calm" and [f["index"] for f in steering["features"]] == [5, 9]
    assert cli("ls").startswith("* calm ")
    assert cli("deactivate") == "deactivated\n"
    assert httpx.get(server.url + "/api/steering").json()["features"] == []
    assert cli("ls", env={"MILLM_URL": server.url}).startswith("  calm ")


def test_create_from_steering(cli, server) -> None:
    httpx.put(server.url + "/api/steering", json={"features": [{"index": 7, "strength": 4.0}], "mode": "clamp"})
    assert cli("create", "saved", "--from-steering") == "created saved (version 1)\n"
    saved = httpx.get(server.url + "/api/profiles/saved").json()
    assert (saved["mode"], saved["features"][0]["index"], saved["model"]) == ("clamp", 7, MODEL)


def test_export_import_round_trip(cli, server, tmp_path: Path) -> None:
    cli("create", "calm", "-f", "5:8")
    cli("create", "bold", "-f", "1:2", "--mode", "clamp")
    out = tmp_path / "calm.json"
    assert cli("export", "calm", "-o", str(out)) == ""
    assert json.loads(out.read_text()) == httpx.get(server.url + "/api/profiles/calm/export").json()
    bundle = cli("export")
    assert json.loads(bundle) == httpx.get(server.url + "/api/profiles/export").json()
    assert [p["name"] for p in json.loads(cli("export", "bold", "calm"))["profiles"]] == ["bold", "calm"]

    httpx.delete(server.url + "/api/profiles/calm")
    assert cli("import", str(out)) == "imported calm (millm.profile)\n"
    assert httpx.get(server.url + "/api/profiles/calm/export").json() == json.loads(out.read_text())
    assert cli("import", "-", "--on-conflict", "rename", input=bundle) == \
        "imported bold-2 (millm.profiles)\nimported calm-2 (millm.profiles)\n"
    assert cli("import", str(out), "--name", "calm-copy") == "imported calm-copy (millm.profile)\n"


def test_errors_are_reported_with_the_field(cli, server, tmp_path: Path) -> None:
    assert "400: " in (out := cli("create", "a+b", "-f", "5:8", code=1)) and "(param: name)" in out
    assert "(param: features[0].index)" in cli("create", "big", "-f", "256:1", code=1)
    assert "INDEX:STRENGTH" in cli("create", "x", "-f", "five", code=2)
    assert "404: " in cli("activate", "nope", code=1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "millm.profile", "format_version": 1}')
    assert "(param: name)" in cli("import", str(bad), code=1)
    assert "cannot reach the miLLM server" in CliRunner().invoke(
        main, ["profile", "--url", "http://127.0.0.1:9", "ls"]).output
    assert httpx.get(server.url + "/api/profiles").json()["count"] == 0
