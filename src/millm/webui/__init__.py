"""The built admin web UI, served at `/`.

Vite builds `frontend/` into `src/millm/webui/dist/` (git-ignored, shipped in the wheel as package data).
`install(app, dist)` makes the app answer what no route matched with that build:

* a file of the build (`/assets/index-3f9a1c.js`, `/favicon.svg`): hashed assets under `/assets/` are cached
  for a year (`immutable`), everything else is revalidated (`no-cache`, with ETag / Last-Modified);
* any other GET of a page (`/`, `/models`, `/steering?f=16`, ...): `index.html`, for the client-side router;
* a missing asset (a path whose last segment has a file extension, unless the browser asks for HTML): 404.

Paths of the API stay the API's: under `/v1`, `/api`, `/ws`, `/docs`, `/redoc` and `/mcp`, and `/openapi.json`,
`/health` and `/metrics`, an unknown path is the API's 404 in the OpenAI envelope, never `index.html`; and other
methods than GET and HEAD are not served here. When the build is missing, pages answer a short HTML page that
says how to build it (`make ui`, or `make serve`, which builds it first), instead of a bare 404.

It hooks in as the router's `default` (what Starlette calls when no route matches, not even by path with another
method), so it can never shadow a route nor turn a 405 into something else.
"""

from __future__ import annotations

import html
import os
import stat
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

DIST = Path(__file__).resolve().with_name("dist")
RESERVED_PREFIXES = ("/v1", "/api", "/ws", "/docs", "/redoc", "/mcp")
RESERVED_PATHS = ("/openapi.json", "/health", "/metrics")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

MISSING_BUILD = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>miLLM: web UI not built</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;background:#0f172a;color:#e2e8f0;max-width:42rem;margin:4rem auto;
padding:0 1rem}}code{{background:#1e293b;padding:.1rem .35rem;border-radius:4px}}a{{color:#22d3ee}}</style></head>
<body>
<h1>miLLM {version} is running; its web UI is not built</h1>
<p>This server has no built copy of the admin UI. In a clone of the repository, build it with
<code>make ui</code> (Node comes from the Python dev dependencies), or start the server with
<code>make serve</code>, which builds the UI first when it is missing or out of date. Installed wheels
include the built UI.</p>
<p>The API works without it: <a href="/docs">/docs</a> (Swagger UI), <a href="/redoc">/redoc</a>,
<a href="/api/status">/api/status</a>, and the OpenAI API under <code>/v1</code>.</p>
</body>
</html>
"""


def is_api_path(path: str) -> bool:
    return path in RESERVED_PATHS or any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES)


def _wants_page(scope: Scope, path: str) -> bool:
    """A client-side route rather than a file: no extension in its last segment, or a browser asking for HTML."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "." not in last or "text/html" in Headers(scope=scope).get("accept", "")


class WebUI:
    """Answers requests no route matched, from the build in `dist` (see the module docstring)."""

    def __init__(self, dist: Path, fallback: ASGIApp, version: str) -> None:
        self.dist = Path(dist)
        self.fallback = fallback
        self.version = version
        self.files = StaticFiles(directory=self.dist, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and not is_api_path(scope["path"]):
            response = await self.response(scope)
        if response is None:
            await self.fallback(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _file(self, relative: str, scope: Scope, cache: str) -> Response | None:
        full, found = self.files.lookup_path(relative)  # (refuses paths outside dist)
        if found is None or not stat.S_ISREG(found.st_mode):
            return None
        response = self.files.file_response(full, found, scope)
        response.headers["Cache-Control"] = cache
        return response

    async def response(self, scope: Scope) -> Response | None:
        path = scope["path"]
        relative = os.path.normpath(os.path.join(*path.split("/"))) if path.strip("/") else ""
        if relative and relative != "." and not relative.startswith(".."):
            try:
                found = self._file(relative, scope, IMMUTABLE if relative.startswith("assets" + os.sep) else REVALIDATE)
            except (OSError, ValueError):  # a name too long or with a NUL: no such file
                found = None
            if found is not None:
                return found
        if not _wants_page(scope, path):
            return None
        index = self._file("index.html", scope, REVALIDATE)
        if index is not None:
            return index
        return HTMLResponse(MISSING_BUILD.format(version=html.escape(self.version)),
                            headers={"Cache-Control": REVALIDATE})


def install(app: object, dist: Path | None = None) -> None:
    """Serve the build in `dist` (default: the packaged one) for whatever no route of `app` matches."""
    from millm import __version__

    router = app.router  # type: ignore[attr-defined]
    router.default = WebUI(dist or DIST, router.default, __version__)
