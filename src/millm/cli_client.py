"""How CLI commands talk to a running miLLM server: its URL, the API key, errors as one line.

The server is found from ``--url``, else ``MILLM_URL``, else ``http://MILLM_HOST:MILLM_PORT``
(the same variables `millm serve` binds to; a wildcard bind address is reached on loopback).
``MILLM_API_KEY``, when set, is sent as ``Authorization: Bearer``. A server that cannot be
reached is reported as "is `millm serve` running?"; an API error as its message and ``param``.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
import httpx

URL_HELP = "Server base URL (default: MILLM_URL, else http://MILLM_HOST:MILLM_PORT)."


def base_url(url: str | None = None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get("MILLM_URL"):
        return os.environ["MILLM_URL"].rstrip("/")
    host = os.environ.get("MILLM_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('MILLM_PORT') or '8000'}"


def auth_headers() -> dict[str, str]:
    key = os.environ.get("MILLM_API_KEY")
    headers = {"X-MiLLM-Client": "cli"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def error_message(r: httpx.Response) -> str:
    try:
        err = r.json()["error"]
        return err["message"] + (f" (param: {err['param']})" if err.get("param") else "")
    except (ValueError, KeyError, TypeError):
        return r.text.strip() or r.reason_phrase


@dataclass
class Server:
    """A running server, as the CLI sees it."""

    url: str

    def unreachable(self, e: Exception) -> click.ClickException:
        return click.ClickException(
            f"cannot reach the miLLM server at {self.url} ({type(e).__name__}): is `millm serve` running? "
            "(set MILLM_HOST/MILLM_PORT or --url to point at another one)")

    def call(self, method: str, path: str, *, timeout: float | None = 60, **kw: Any) -> Any:
        headers = {**auth_headers(), **kw.pop("headers", {})}
        try:
            r = httpx.request(method, self.url + path, timeout=timeout, headers=headers, **kw)
        except httpx.TransportError as e:
            raise self.unreachable(e) from e
        if r.status_code >= 400:
            raise click.ClickException(f"{r.status_code}: {error_message(r)}")
        return r.json() if r.content else None

    def stream_sse(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST `body` and yield each server-sent event's JSON until `[DONE]` (an error event raises)."""
        try:
            with httpx.stream("POST", self.url + path, json=body, headers=auth_headers(),
                              timeout=httpx.Timeout(60, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise click.ClickException(f"{r.status_code}: {error_message(r)}")
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event:
                        err = event["error"]
                        raise click.ClickException(err.get("message", str(err)))
                    yield event
        except httpx.TransportError as e:
            raise self.unreachable(e) from e

    def ws_url(self, path: str) -> str:
        url = "ws" + self.url[len("http"):] + path
        key = os.environ.get("MILLM_API_KEY")
        return url + (f"?api_key={urllib.parse.quote(key, safe='')}" if key else "")


class HelpGroup(click.Group):
    """Lists each command with its whole first sentence (click cuts summaries to fit one line)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=300)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def server_from(url: str | None) -> Server:
    return Server(base_url(url))


url_option = click.option("--url", default=None, help=URL_HELP)
