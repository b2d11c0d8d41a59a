"""Feature labels from elsewhere: each import format round-trips, labels for another SAE are refused, imported
labels persist per SAE across a restart and show in search, monitor frames, receipts and /api/saes/attached."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.conftest import start_server, tiny_settings

MODEL = "test-org/tiny"
URL = "/api/saes/attached/labels"
NEURONPEDIA = [  # as Neuronpedia's explanation export writes them: string indices, extra fields
    {"modelId": "tiny", "layer": "1-res", "index": "5", "description": "the word hello",
     "explanationModelName": "gpt-4o-mini", "typeName": "oai_token-act-pair"},
    {"modelId": "tiny", "layer": "1-res", "index": "9", "description": "punctuation", "score": 0.2},
    {"modelId": "tiny", "layer": "1-res", "index": "9", "description": "commas and periods", "score": 0.7},
]


@pytest.fixture(autouse=True)
def _clean(server):
    httpx.delete(server.url + URL)
    yield
    httpx.delete(server.url + URL)


def labels(url: str, **params) -> dict[int, dict]:
    return {f["index"]: f for f in httpx.get(url + URL, params=params).json()["data"]}


@pytest.mark.parametrize(("kind", "send"), [
    ("neuronpedia json", lambda url: httpx.post(url + URL, json=NEURONPEDIA)),
    ("neuronpedia jsonl", lambda url: httpx.post(url + URL, files={"file": (
        "explanations.jsonl", "\n".join(json.dumps(r) for r in NEURONPEDIA).encode(), "application/x-ndjson")},
        headers={"X-MiLLM-Client": "test"})),
    ("map json", lambda url: httpx.post(url + URL, json={"5": "the word hello", "9": {"label": "commas and periods",
                                                                                       "score": 0.7}})),
    ("csv", lambda url: httpx.post(url + URL, files={"file": (
        "labels.csv", b"index,label,score\n5,the word hello,\n9,\"commas and periods\",0.7\n", "text/csv")},
        headers={"X-MiLLM-Client": "test"})),
])
def test_each_format_round_trips(server, kind, send):
    r = send(server.url)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["read"] == 2 and out["sae"] == "sae"
    assert out["format"] == {"neuronpedia json": "neuronpedia", "neuronpedia jsonl": "neuronpedia",
                             "map json": "map", "csv": "csv"}[kind]
    got = labels(server.url)
    assert (got[5]["label"], got[5]["source"]) == ("the word hello", "imported")
    assert (got[9]["label"], got[9]["score"]) == ("commas and periods", 0.7)  # the best-scored explanation
    assert [f["index"] for f in httpx.get(server.url + URL, params={"q": "COMMAS"}).json()["data"]] == [9]
    att = httpx.get(server.url + "/api/saes/attached").json()["attached"]
    assert att["imported_labels"] == 2 and att["labelled_features"] >= 2


@pytest.mark.parametrize(("body", "message"), [
    ([{"index": 256, "description": "past the end"}], "d_sae=256"),
    ({"d_sae": 512, "labels": {"3": "x"}}, "d_sae=512"),
])
def test_labels_for_another_sae_are_a_400(server, body, message):
    r = httpx.post(server.url + URL, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    assert r.json()["error"]["code"] == "labels_mismatch" and message in r.json()["error"]["message"]
    assert labels(server.url) == {}


@pytest.mark.parametrize("raw", [b"not json, not csv", b"[{\"description\": \"no index\"}]", b"{\"x\": \"y\"}",
                                 b"[]", b"\xff\xfe"])
def test_unreadable_labels_are_a_400_naming_file(server, raw):
    r = httpx.post(server.url + URL, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text


def test_labels_show_in_monitor_frames_and_receipts(server, client):
    assert httpx.post(server.url + URL, json={"5": "five", "9": "nine"}).status_code == 200
    httpx.put(server.url + "/api/monitor/config", json={"enabled": True, "features": [5, 9]})
    try:
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                           extra_body={"steering": {"features": [{"index": 9, "strength": 1.0}]}})
        assert r.model_extra["millm"]["steering"]["features"][0]["label"] == "nine"
        frames = httpx.get(server.url + "/api/monitor/history", params={"request_id": r.id}).json()["data"][0]
        assert {(a["index"], a["label"]) for a in frames["frames"][0]["activations"]} == {(5, "five"), (9, "nine")}
    finally:
        httpx.put(server.url + "/api/monitor/config", json={"enabled": False, "features": None})


def test_merge_replace_and_delete(server):
    httpx.post(server.url + URL, json={"5": "five"})
    httpx.post(server.url + URL, json={"9": "nine"})
    assert set(labels(server.url)) >= {5, 9}
    httpx.post(server.url + URL, params={"replace": True}, json={"7": "seven"})
    got = labels(server.url)
    assert 7 in got and 5 not in got and 9 not in got
    assert httpx.delete(server.url + URL).json()["attached"]["imported_labels"] == 0
    assert 7 not in labels(server.url)


def test_imported_labels_survive_a_restart_and_shipped_ones_are_read(tmp_path, tiny_model_dir, tiny_sae_dir):
    sae = tmp_path / "sae"
    shutil.copytree(tiny_sae_dir, sae)
    (sae / "labels.csv").write_text("index,description\n3,shipped three\n5,shipped five\n")
    settings = tiny_settings(tmp_path, tiny_model_dir, sae, served_model_name=MODEL)
    live = start_server(settings)
    try:
        assert labels(live.url)[3]["source"] == "sae"
        r = httpx.post(live.url + URL, json=[{"index": 5, "description": "imported five"}])
        assert r.status_code == 200 and r.json()["labelled_features"] == 2
    finally:
        live.stop()
    live = start_server(settings.model_copy(update={"port": settings.port}))
    try:
        got = labels(live.url)
        assert (got[3]["label"], got[5]["label"], got[5]["source"]) == ("shipped three", "imported five", "imported")
    finally:
        live.stop()
