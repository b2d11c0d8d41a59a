"""The built web UI at `/`, against a live server with a fake build in a tmp folder (`ui_dir`): files with the
right cache headers, index.html for client routes, and the API's own paths untouched (an unknown /api or /v1
path is still the 404 envelope, never index.html). Without a build, `/` says how to build it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings

INDEX = '<!doctype html><html><head><script type="module" src="/assets/index-3f9a1c.js"></script></head>' \
        '<body><div id="root"></div></body></html>'
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("webui") / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-3f9a1c.js").write_text("console.log('miLLM')")
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root.parent / "secret.txt").write_text("outside the build")
    return root


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, dist: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(tmp_path_factory.mktemp("srv"), tiny_model_dir, ui_dir=dist))
    yield server
    server.stop()


def test_root_and_client_routes_answer_index_html_revalidated(live: LiveServer) -> None:
    for path in ("/", "/models", "/saes", "/steering", "/profiles", "/monitor", "/steering/playground?f=16"):
        r = httpx.get(live.url + path, headers=HTML)
        assert r.status_code == 200 and r.text == INDEX, path
        assert r.headers["content-type"].startswith("text/html") and r.headers["cache-control"] == "no-cache"
    assert httpx.get(live.url + "/models").text == INDEX  # curl's Accept: */* too


def test_hashed_assets_are_immutable_other_files_revalidated(live: LiveServer) -> None:
    js = httpx.get(live.url + "/assets/index-3f9a1c.js")
    assert js.status_code == 200 and js.text == "console.log('miLLM')"
    assert "javascript" in js.headers["content-type"]
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = httpx.get(live.url + "/assets/index-3f9a1c.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304
    icon = httpx.get(live.url + "/favicon.svg")
    assert icon.status_code == 200 and icon.headers["cache-control"] == "no-cache"
    assert httpx.head(live.url + "/assets/index-3f9a1c.js").status_code == 200


def test_missing_assets_and_paths_outside_the_build_are_404s(live: LiveServer) -> None:
    for path in ("/assets/gone-123.js", "/favicon.ico", "/..%2Fsecret.txt", "/assets/..%2F..%2Fsecret.txt"):
        r = httpx.get(live.url + path)
        assert r.status_code in (404, 200), path
        assert "outside the build" not in r.text, path
        if r.status_code == 200:  # a traversal attempt without an extension answers the app, not the file
            assert r.text == INDEX
    assert httpx.get(live.url + "/assets/gone-123.js").status_code == 404
    assert httpx.get(live.url + "/..%2Fsecret.txt").status_code == 404


def test_api_paths_are_untouched(live: LiveServer) -> None:
    for path in ("/api/nope", "/api/models/nope", "/v1/nope", "/v1/chat", "/ws/nope", "/docs/nope", "/redoc/x",
                 "/api", "/v1"):
        r = httpx.get(live.url + path, headers=HTML)
        assert r.status_code == 404, path
        assert r.json()["error"]["type"] == "not_found_error", path
    r = httpx.post(live.url + "/v1/nope", json={})
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.post(live.url + "/models", json={}).status_code in (404, 405)  # the UI is GET only
    assert httpx.delete(live.url + "/api/status").status_code == 405
    assert httpx.get(live.url + "/health").json() == {"status": "ok"}
    assert httpx.get(live.url + "/metrics").headers["content-type"].startswith("text/plain")
    assert httpx.get(live.url + "/openapi.json", timeout=30).json()["info"]["title"] == "miLLM"
    assert "swagger" in httpx.get(live.url + "/docs").text.lower()
    assert httpx.get(live.url + "/api/status").json()["model"] is not None
    assert httpx.get(live.url + "/v1/models").json()["object"] == "list"


def test_without_a_build_pages_say_how_to_build_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    server = start_server(tiny_settings(tmp_path, tiny_model_dir, ui_dir=tmp_path / "no-build"))
    try:
        for path in ("/", "/models"):
            r = httpx.get(server.url + path, headers=HTML)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "make ui" in r.text and "make serve" in r.text and "/docs" in r.text
            assert str(tmp_path) not in r.text  # no server path
        assert httpx.get(server.url + "/assets/index-3f9a1c.js").status_code == 404
        assert httpx.get(server.url + "/api/nope").json()["error"]["type"] == "not_found_error"
    finally:
        server.stop()


def _urls(page: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_everything_from_this_server(live: LiveServer, page: str) -> None:
    r = httpx.get(live.url + page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = _urls(r.text)
    assert any(u.endswith(".js") for u in urls), urls
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text, "no CDN, no external URL"
    for url in urls:
        assert url.startswith("/"), url
        asset = httpx.get(live.url + url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            assert len(asset.content) > 100_000 and "javascript" in asset.headers["content-type"]
