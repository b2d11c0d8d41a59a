"""`millm mcp`: the MCP server over stdio, for agent hosts that start their tools as processes.

It does not load a model: it talks to a running `millm serve` over HTTP (found from --url, else
MILLM_URL, else http://MILLM_HOST:MILLM_PORT; MILLM_API_KEY is sent as a bearer token), so the agent
steers the same model that the web UI and API clients use. A server that is not running is reported
by each tool call ("is `millm serve` running?"), not at start, so the host can start `millm mcp`
before the server. stdout carries the protocol; logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys

import click


def server_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get("MILLM_URL"):
        return os.environ["MILLM_URL"].rstrip("/")
    host = os.environ.get("MILLM_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind address is reached on loopback
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('MILLM_PORT') or '8000'}"


@click.command("mcp")
@click.option("--url", default=None, help="Server base URL (default: MILLM_URL, else http://MILLM_HOST:MILLM_PORT).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True, help="Log level (logs go to stderr).")
def mcp(url: str | None, log_level: str) -> None:
    """Serve the MCP tools over stdio for agents (Claude, Cursor and other MCP hosts), backed by a running `millm serve`."""
    import anyio

    from millm.mcp_server import HttpBackend, build_server

    logging.basicConfig(stream=sys.stderr, level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    backend = HttpBackend(server_url(url), api_key=os.environ.get("MILLM_API_KEY") or None)
    server = build_server(backend)

    async def run() -> None:
        try:
            await server.run_stdio_async()
        finally:
            await backend.aclose()

    anyio.run(run)
