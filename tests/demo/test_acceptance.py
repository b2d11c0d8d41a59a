"""Measured acceptance of the bundled demo through the real server, started with no model configured
(what `make serve` does): it serves the demo model with its SAE attached and its profiles imported."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from millm import demo
from millm.config import Settings
from tests.conftest import free_port, start_server

META = json.loads((demo.assets_dir() / "demo.json").read_text())
STORY = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(Settings(port=free_port(), data_dir=tmp_path_factory.mktemp("demo-data")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def upper_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    assert len(letters) > 20, text
    return sum(c.isupper() for c in letters) / len(letters)


def story(client, model: str = demo.DEMO_MODEL_ID, steering: dict | None = None, **kw) -> str:
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 80)
    extra = {"steering": steering} if steering is not None else None
    return client.chat.completions.create(model=model, messages=STORY, extra_body=extra, **kw).choices[0].message.content


def test_no_model_configured_serves_the_demo_with_its_sae(live, client):
    status = httpx.get(live.url + "/api/status").json()
    assert status["model"]["id"] == demo.DEMO_MODEL_ID
    assert status["sae"]["id"] == demo.DEMO_SAE_ID and status["sae"]["layer"] == META["layer"]
    ids = {m.id for m in client.models.list().data}
    assert {demo.DEMO_MODEL_ID, f"{demo.DEMO_MODEL_ID}+yelling-demo", f"{demo.DEMO_MODEL_ID}+ocean"} <= ids
    labels = httpx.get(live.url + "/api/saes/attached/labels").json()
    assert labels["count"] == META["d_sae"]


def test_unsteered_story_is_mostly_lowercase(client):
    assert upper_fraction(story(client)) < 0.10


def test_caps_feature_makes_the_model_yell(client):
    by_feature = story(client, steering={"features": [{"index": META["caps_feature"],
                                                       "strength": META["caps_strength"]}]})
    by_profile = story(client, steering={"profile": "yelling-demo"})
    by_model_id = story(client, model=f"{demo.DEMO_MODEL_ID}+yelling-demo")
    for text in (by_feature, by_profile, by_model_id):
        assert upper_fraction(text) >= 0.80, text


def _topic_count(text: str, words: list[str]) -> int:
    tokens = re.findall(r"[a-z]+", text.lower())
    return sum(t in set(words) for t in tokens)


def test_topic_feature_brings_its_topic_words(client):
    topic = "ocean"
    index, strength = META["topic_features"][topic], META["topic_strengths"][topic]
    words = META["topic_words"][topic]
    plain = steered = 0
    for seed in range(5):
        plain += _topic_count(story(client, temperature=0.8, seed=seed, max_tokens=64), words)
        steered += _topic_count(story(client, temperature=0.8, seed=seed, max_tokens=64,
                                      steering={"features": [{"index": index, "strength": strength}]}), words)
    assert steered >= 3 * max(plain, 1), (plain, steered)


def test_monitoring_shows_the_caps_feature_firing_while_yelling(live, client):
    caps = META["caps_feature"]
    httpx.put(live.url + "/api/monitor/config", json={"enabled": True, "features": [caps]})
    httpx.delete(live.url + "/api/monitor/history")
    try:
        story(client, max_tokens=30)
        story(client, max_tokens=30, steering={"profile": "yelling-demo"})
        hist = httpx.get(live.url + "/api/monitor/history").json()["data"]
    finally:
        httpx.put(live.url + "/api/monitor/config", json={"enabled": False, "features": None})
    assert len(hist) == 2
    plain_gen, loud_gen = ([f["activations"][0]["value"] for f in h["frames"] if f["phase"] == "generated"]
                           for h in hist)
    assert loud_gen and sum(v > 0 for v in loud_gen) >= 0.8 * len(loud_gen)
    assert sum(loud_gen) / len(loud_gen) > 5 * max(sum(plain_gen) / len(plain_gen), 1e-3)
