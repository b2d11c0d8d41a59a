"""`millm profile ...`: manage profiles on a running server over its REST API.

The server URL comes from --url, else MILLM_URL, else http://MILLM_HOST:MILLM_PORT (`millm.cli_client`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from millm.cli_client import URL_HELP, HelpGroup, Server, server_from


def _call(ctx: click.Context, method: str, path: str, **kw: Any) -> Any:
    server: Server = ctx.obj["server"]
    return server.call(method, path, timeout=30, **kw)


@click.group(cls=HelpGroup)
@click.option("--url", default=None, help=URL_HELP)
@click.pass_context
def profile(ctx: click.Context, url: str | None) -> None:
    """List, show, create, activate, export, import and remove steering profiles."""
    ctx.obj = {"server": server_from(url)}


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
@click.option("--mode", type=click.Choice(["add", "clamp"]), default="add", show_default=True,
              help="add: add strength x the decoder direction; clamp: pin the feature's activation.")
@click.option("--description", default="", help="What the profile does, for people browsing profiles.")
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
@click.option("--on-conflict", type=click.Choice(["error", "rename", "replace"]), default="error", show_default=True,
              help="When a profile of that name exists: fail, import under a new name, or overwrite it (as a new version).")
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


@profile.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def rm(ctx: click.Context, names: tuple[str, ...], yes: bool) -> None:
    """Delete one or more profiles (every version)."""
    if not yes:
        click.confirm(f"Delete profile{'s' if len(names) > 1 else ''} {', '.join(names)}?", abort=True)
    for name in names:
        _call(ctx, "DELETE", f"/api/profiles/{name}")
        click.echo(f"deleted {name}")
