"""`millm profile ...`: manage profiles on a running server over its REST API.

The server URL comes from --url, else MILLM_URL, else http://MILLM_HOST:MILLM_PORT; MILLM_API_KEY, when set,
is sent as the bearer key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import httpx


def _base_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get("MILLM_URL"):
        return os.environ["MILLM_URL"].rstrip("/")
    return f"http://{os.environ.get('MILLM_HOST', '127.0.0.1')}:{os.environ.get('MILLM_PORT', '8000')}"


def _headers() -> dict[str, str]:
    """X-MiLLM-Client marks a non-browser client (the server refuses bodiless cross-site POSTs without it), and
    MILLM_API_KEY, when set, is sent as the bearer key."""
    headers = {"X-MiLLM-Client": "cli"}
    if os.environ.get("MILLM_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['MILLM_API_KEY']}"
    return headers


def _call(ctx: click.Context, method: str, path: str, **kw: Any) -> Any:
    try:
        r = httpx.request(method, ctx.obj["url"] + path, timeout=30,
                          headers={**_headers(), **kw.pop("headers", {})}, **kw)
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach the miLLM server at {ctx.obj['url']}: {e}") from e
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
            msg = err["message"] + (f" (param: {err['param']})" if err.get("param") else "")
        except (ValueError, KeyError):
            msg = r.text
        raise click.ClickException(f"{r.status_code}: {msg}")
    return r.json() if r.content else None


@click.group()
@click.option("--url", default=None, help="Server base URL (env MILLM_URL).")
@click.pass_context
def profile(ctx: click.Context, url: str | None) -> None:
    """List, show, create, activate, export and import steering profiles."""
    ctx.obj = {"url": _base_url(url)}


@profile.command("ls")
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List profiles (* marks the active one)."""
    for p in _call(ctx, "GET", "/api/profiles")["data"]:
        feats = ", ".join(f"{f['index']}:{f['strength']:g}" for f in p["features"])
        click.echo(f"{'*' if p['active'] else ' '} {p['name']:<24} {p['model']:<20} {p['mode']:<5} [{feats}]")


@profile.command("show")
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """Print one profile as JSON."""
    click.echo(json.dumps(_call(ctx, "GET", f"/api/profiles/{name}"), indent=2))


@profile.command("create")
@click.argument("name")
@click.option("--feature", "-f", "features", multiple=True, help="INDEX:STRENGTH (repeatable).")
@click.option("--mode", type=click.Choice(["add", "clamp"]), default="add")
@click.option("--description", default="")
@click.option("--from-steering", is_flag=True, help="Save the server's current steering instead.")
@click.pass_context
def create(ctx: click.Context, name: str, features: tuple[str, ...], mode: str, description: str,
           from_steering: bool) -> None:
    """Create a profile for the loaded model and attached SAE."""
    if from_steering:
        out = _call(ctx, "POST", "/api/profiles/from-steering", json={"name": name, "description": description})
    else:
        status = _call(ctx, "GET", "/api/status")
        if not status.get("model") or not status.get("sae"):
            raise click.ClickException("the server has no model with an attached SAE")
        parsed = []
        for f in features:
            try:
                i, s = f.split(":")
                parsed.append({"index": int(i), "strength": float(s)})
            except ValueError as e:
                raise click.BadParameter(f"{f!r} is not INDEX:STRENGTH", param_hint="--feature") from e
        sae = status["sae"]
        body = {"name": name, "description": description, "model": status["model"]["id"], "mode": mode,
                "features": parsed, "sae": {"id": sae["id"], "hook_name": sae["hook_name"], "layer": sae["layer"],
                                            "d_sae": sae["d_sae"]}}
        out = _call(ctx, "POST", "/api/profiles", json=body)
    click.echo(f"created {out['name']} (version {out['version']})")


@profile.command("activate")
@click.argument("name")
@click.pass_context
def activate(ctx: click.Context, name: str) -> None:
    """Make a profile the server-wide steering."""
    _call(ctx, "POST", f"/api/profiles/{name}/activate")
    click.echo(f"activated {name}")


@profile.command("deactivate")
@click.pass_context
def deactivate(ctx: click.Context) -> None:
    """Clear the active profile and its steering."""
    _call(ctx, "POST", "/api/profiles/deactivate")
    click.echo("deactivated")


@profile.command("export")
@click.argument("names", nargs=-1)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="File (default: stdout).")
@click.pass_context
def export(ctx: click.Context, names: tuple[str, ...], output: Path | None) -> None:
    """Export one profile (a document) or several/all (a bundle) as JSON."""
    if len(names) == 1:
        data = _call(ctx, "GET", f"/api/profiles/{names[0]}/export")
    else:
        data = _call(ctx, "GET", "/api/profiles/export", params=[("names", n) for n in names])
    text = json.dumps(data, indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        click.echo(text)


@profile.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--on-conflict", type=click.Choice(["error", "rename", "replace"]), default="error")
@click.option("--name", default=None, help="Store a single imported profile under this name.")
@click.pass_context
def import_(ctx: click.Context, file: Any, on_conflict: str, name: str | None) -> None:
    """Import a miLLM export, a Neuronpedia preset or a Goodfire variant (FILE or - for stdin)."""
    params = {"on_conflict": on_conflict, **({"name": name} if name else {})}
    out = _call(ctx, "POST", "/api/profiles/import", content=file.read(), params=params,
                headers={"Content-Type": "application/json"})
    for p in out["profiles"]:
        click.echo(f"imported {p['name']} ({out['source_format']})")
    sys.stdout.flush()
