"""Commands that drive a running server, as Ollama's and vLLM's do: ps, stop, run/chat, steer,
sae attach/detach and monitor.

Each finds the server through `millm.cli_client` (``--url``, ``MILLM_URL``, ``MILLM_HOST``/``MILLM_PORT``)
and prints API errors as one line. Register with ``register(main, sae_group)``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from millm.cli_client import HelpGroup, Server, server_from, url_option


def parse_features(values: tuple[str, ...] | list[str], param: str) -> list[dict[str, Any]]:
    """`16:8` -> {"index": 16, "strength": 8.0}; a bad one is a usage error naming `param`."""
    out = []
    for value in values:
        try:
            index, strength = value.split(":")
            out.append({"index": int(index), "strength": float(strength)})
        except ValueError:
            raise click.BadParameter(f"{value!r} is not INDEX:STRENGTH (e.g. 16:5)", param_hint=param) from None
    return out


def _features_text(features: list[dict[str, Any]]) -> str:
    return ", ".join(f"{f['index']}:{f['strength']:g}" + (f" ({f['label']})" if f.get("label") else "")
                     for f in features) or "-"


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024**3:.2f} GiB"


# ---------------------------------------------------------------------------- ps / stop


@click.command("ps")
@click.option("--json", "as_json", is_flag=True, help="Print the server's /api/status as JSON.")
@url_option
def ps(as_json: bool, url: str | None) -> None:
    """Show the running server: loaded model, SAE, steering, active profile, queue and memory."""
    s = server_from(url).call("GET", "/api/status")
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    m, sae, st = s.get("model"), s.get("sae"), s["steering"]
    rows = [("server", f"{s['status']} (miLLM {s['version']}, up {s['uptime_s']:.0f} s)")]
    if s.get("loading"):
        rows.append(("loading", s["loading"]))
    if m:
        rows.append(("model", f"{m['id']} ({m['parameters']:,} parameters, {m['num_layers']} layers, context "
                              f"{m['context_length']}, {m['device']}, {m['dtype']}"
                              + (f", {m['quantization']}" if m.get("quantization") not in (None, "none") else "")
                              + ")"))
    else:
        rows.append(("model", "none loaded"))
    rows.append(("sae", f"{sae['id']} at layer {sae['layer']} ({sae['hook_name']}, d_sae {sae['d_sae']}, "
                        f"{sae['architecture']})" if sae else "none attached"))
    steering = "off" if not st["features"] else (
        f"{st['mode']} {_features_text(st['features'])}" + ("" if st["enabled"] else " (disabled)"))
    rows.append(("steering", steering))
    rows.append(("profile", s.get("active_profile") or "-"))
    rows.append(("queue", f"{s['queue_depth']} waiting, {s['active_sequences']} decoding "
                          f"(batch up to {s['max_batch_size']})"))
    mem = s["memory"]
    rows.append(("memory", f"{_gib(mem.get('used_bytes'))} of {_gib(mem.get('total_bytes'))} used on "
                           f"{mem.get('device')}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.upper():<{width}}  {value}")


@click.command("stop")
@url_option
def stop(url: str | None) -> None:
    """Ask the running server to shut down gracefully (requests in flight finish first, as on SIGTERM)."""
    server = server_from(url)
    server.call("POST", "/api/shutdown")
    click.echo(f"miLLM at {server.url} is shutting down.")


# ---------------------------------------------------------------------------- sae attach / detach


@click.command("attach")
@click.argument("source")
@click.option("--layer", type=int, default=None, help="Attach at this layer instead of the one in the SAE's config.")
@click.option("--sae-id", default=None, help="Id to report the SAE under (default: derived from SOURCE).")
@click.option("--revision", default=None, help="Hub branch, tag or commit (default: main).")
@click.option("--format", "fmt", default=None, help="Force a loader (saelens, gemma_scope, sparsify, ...).")
@url_option
def sae_attach(source: str, layer: int | None, sae_id: str | None, revision: str | None, fmt: str | None,
               url: str | None) -> None:
    """Attach an SAE on the running server: SOURCE is a local folder or a Hub 'owner/repo[:path]'."""
    body = {k: v for k, v in {"source": source, "layer": layer, "sae_id": sae_id, "revision": revision,
                              "format": fmt}.items() if v is not None}
    att = server_from(url).call("POST", "/api/saes/attach", json=body, timeout=None)["attached"]
    click.echo(f"attached {att['id']} at layer {att['layer']} ({att['hook_name']}, d_sae {att['d_sae']})")


@click.command("detach")
@url_option
def sae_detach(url: str | None) -> None:
    """Detach the SAE from the running server (its steering is cleared)."""
    server_from(url).call("POST", "/api/saes/detach")
    click.echo("detached")


# ---------------------------------------------------------------------------- steer


@click.group("steer", invoke_without_command=True, cls=HelpGroup)
@url_option
@click.pass_context
def steer(ctx: click.Context, url: str | None) -> None:
    """Show (no subcommand), set or clear the server-wide steering."""
    ctx.obj = {"server": server_from(url)}
    if ctx.invoked_subcommand is None:
        _print_steering(ctx.obj["server"].call("GET", "/api/steering"))


def _print_steering(st: dict[str, Any]) -> None:
    if not st["features"]:
        click.echo("steering: off")
        return
    source = f" (profile {st['profile']})" if st.get("profile") else ""
    click.echo(f"steering: {st['mode']} {_features_text(st['features'])}{source}"
               + ("" if st["enabled"] else " [disabled]"))


@steer.command("set")
@click.argument("features", nargs=-1, required=True)
@click.option("--mode", type=click.Choice(["add", "clamp"]), default="add", show_default=True,
              help="add: add strength x the decoder direction; clamp: pin the feature's activation.")
@click.option("--normalize", is_flag=True, help="Use unit-norm decoder rows for add (as Neuronpedia).")
@click.pass_context
def steer_set(ctx: click.Context, features: tuple[str, ...], mode: str, normalize: bool) -> None:
    """Replace the server-wide steering with FEATURES, each INDEX:STRENGTH: `millm steer set 16:5 3:-2`."""
    body = {"features": parse_features(features, "FEATURES"), "mode": mode, "normalize": normalize}
    _print_steering(ctx.obj["server"].call("PUT", "/api/steering", json=body))


@steer.command("clear")
@click.pass_context
def steer_clear(ctx: click.Context) -> None:
    """Remove every steered feature (and the active profile)."""
    _print_steering(ctx.obj["server"].call("DELETE", "/api/steering"))


# ---------------------------------------------------------------------------- run / chat


def _load_if_needed(server: Server, model: str) -> str:
    """Load MODEL unless it is what the server serves; returns the served name."""
    loaded = server.call("GET", "/api/status").get("model") or {}
    if model in (loaded.get("id"), loaded.get("source")):
        return str(loaded["id"])
    click.echo(f"loading {model} ...", err=True)
    return str(server.call("POST", "/api/models/load", json={"model": model}, timeout=None)["model"]["id"])


def _steering_body(profile: str | None, steer_values: tuple[str, ...], mode: str | None) -> dict[str, Any] | None:
    if profile and steer_values:
        raise click.UsageError("give --profile or --steer, not both")
    if profile:
        return {"profile": profile}
    if steer_values:
        return {"features": parse_features(steer_values, "--steer"), **({"mode": mode} if mode else {})}
    return None


def _describe_applied(applied: dict[str, Any]) -> str:
    if applied.get("source") in (None, "none") or not applied.get("features"):
        return "steering: none"
    where = f"profile {applied['profile']}" if applied.get("profile") else applied["source"]
    return f"steering: {applied.get('mode')} {_features_text(applied['features'])} ({where})"


def _chat_once(server: Server, body: dict[str, Any], show_steering: bool) -> str:
    text = []
    for chunk in server.stream_sse("/v1/chat/completions", {**body, "stream": True}):
        if show_steering and chunk.get("millm"):
            click.secho(_describe_applied(chunk["millm"]["steering"]), err=True, dim=True)
            show_steering = False
        for choice in chunk.get("choices", []):
            piece = (choice.get("delta") or {}).get("content") or ""
            text.append(piece)
            click.echo(piece, nl=False)
            sys.stdout.flush()
    click.echo()
    return "".join(text)


CHAT_HELP = """Commands: /bye (or Ctrl-D) quits, /clear forgets the conversation, /steer 16:5 [I:S ...] steers
the following turns, /steer off stops steering, /profile NAME applies a profile."""


def chat_options(fn: Any) -> Any:
    """The options `millm run` and `millm chat` share."""
    for option in reversed([
        click.option("--profile", default=None, help="Apply this saved profile to every turn."),
        click.option("--steer", "steer_values", multiple=True, metavar="INDEX:STRENGTH",
                     help="Steer every turn with this feature (repeatable), e.g. --steer 16:5."),
        click.option("--mode", type=click.Choice(["add", "clamp"]), default=None,
                     help="Steering mode for --steer (default: add)."),
        click.option("--system", default=None, help="A system message to start the conversation with."),
        click.option("--temperature", type=float, default=None, help="Sampling temperature (default: 1)."),
        click.option("--max-tokens", type=int, default=256, show_default=True, help="Most tokens per answer."),
        url_option,
    ]):
        fn = option(fn)
    return fn


@click.command("run", epilog=CHAT_HELP)
@click.argument("model")
@click.argument("prompt", required=False)
@chat_options
def run(model: str, **options: Any) -> None:
    """Chat with MODEL in the terminal; the server loads it first if it serves another one.

    With PROMPT (or a prompt piped to stdin), answer it and exit. Answers stream as they are generated."""
    chat_session(model, **options)


@click.command("chat", epilog=CHAT_HELP)
@click.argument("prompt", required=False)
@chat_options
def chat(**options: Any) -> None:
    """Chat with the loaded model in the terminal (`millm run` without loading anything).

    With PROMPT (or a prompt piped to stdin), answer it and exit. Answers stream as they are generated."""
    chat_session(None, **options)


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def chat_session(model: str | None, prompt: str | None, profile: str | None, steer_values: tuple[str, ...],
                 mode: str | None, system: str | None, temperature: float | None, max_tokens: int,
                 url: str | None) -> None:
    server = server_from(url)
    steering = _steering_body(profile, steer_values, mode)
    if model:
        name = _load_if_needed(server, model)
    else:
        loaded = server.call("GET", "/api/status").get("model")
        if not loaded:
            raise click.ClickException("no model is loaded: give one, e.g. `millm run millm-demo`")
        name = loaded["id"]
    base: dict[str, Any] = {"model": name, "max_tokens": max_tokens}
    if temperature is not None:
        base["temperature"] = temperature
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def ask(text: str, show_steering: bool) -> None:
        messages.append({"role": "user", "content": text})
        body = {**base, "messages": messages, **({"steering": steering} if steering else {})}
        try:
            messages.append({"role": "assistant", "content": _chat_once(server, body, show_steering)})
        except click.ClickException:
            messages.pop()
            raise

    if prompt is None and not stdin_is_terminal():
        prompt = sys.stdin.read().strip() or None
    if prompt is not None:
        ask(prompt, show_steering=steering is not None)
        return
    click.echo(f"Chatting with {name}. {CHAT_HELP}", err=True)
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    first = True
    while True:
        try:
            text = input(">>> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return
        if text == "/clear":
            messages[:] = [m for m in messages if m["role"] == "system"]
            click.echo("(conversation cleared)", err=True)
            continue
        command, *args = text.split()
        if command == "/steer":
            try:
                steering = None if args in ([], ["off"]) else _steering_body(None, tuple(args), mode)
            except click.BadParameter as e:
                click.echo(f"Error: {e.format_message()}", err=True)
                continue
            click.echo(f"(steering {'off' if steering is None else _features_text(steering['features'])})",
                       err=True)
            first = True
            continue
        if command == "/profile":
            steering = {"profile": args[0]} if args else None
            click.echo(f"(profile {args[0] if args else 'off'})", err=True)
            first = True
            continue
        try:
            ask(text, show_steering=first)
            first = False
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
        except KeyboardInterrupt:  # Ctrl-C stops the answer (closing the stream cancels it on the server)
            messages.pop()
            click.echo("\n(interrupted)", err=True)


# ---------------------------------------------------------------------------- monitor


@click.command("monitor")
@click.option("--top-k", type=int, default=5, show_default=True, help="Features shown per token.")
@click.option("--feature", "-f", "features", type=int, multiple=True,
              help="Watch these feature indices instead of each token's top k (repeatable).")
@click.option("--prompt-tokens/--no-prompt-tokens", default=False, show_default=True,
              help="Also show the prompt's tokens, not only generated ones.")
@click.option("--count", type=int, default=None, help="Stop after this many tokens (default: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw frames, one JSON object per line.")
@url_option
def monitor(top_k: int, features: tuple[int, ...], prompt_tokens: bool, count: int | None, as_json: bool,
            url: str | None) -> None:
    """Watch SAE features fire, token by token, while the server generates (monitoring is on meanwhile)."""
    server = server_from(url)
    before = server.call("GET", "/api/monitor/config")
    server.call("PUT", "/api/monitor/config", json={"enabled": True, "top_k": top_k, "features": list(features)})
    try:
        try:
            labels = {d["index"]: d["label"] for d in server.call("GET", "/api/saes/attached/labels")["data"]}
        except click.ClickException:
            labels = {}
        click.echo("Watching (Ctrl-C stops) ...", err=True)
        asyncio.run(_watch(server, labels, prompt_tokens, count, as_json))
    except KeyboardInterrupt:
        pass
    finally:  # leave monitoring as it was (the web UI may be using it)
        server.call("PUT", "/api/monitor/config", json={k: before[k] for k in ("enabled", "top_k", "features")})


def format_frame(frame: dict[str, Any], labels: dict[int, str]) -> str:
    """One line: request, position, the token, then `index label value` for each feature, two decimals."""
    acts = []
    for a in frame.get("activations", []):
        label = a.get("label") or labels.get(a["index"])
        acts.append(f"{a['index']}{f' ({label})' if label else ''} {a['value']:.2f}")
    token = json.dumps(frame.get("token", ""), ensure_ascii=False)
    return f"{frame['request_id'][-8:]} {frame['phase'][:3]} {frame['position']:>4} {token:<14} " + (
        " | ".join(acts) or "-")


async def _watch(server: Server, labels: dict[int, str], prompt_tokens: bool, count: int | None,
                 as_json: bool) -> None:
    import websockets

    from millm.cli_client import auth_headers

    seen = 0
    try:
        async with websockets.connect(server.ws_url("/ws/monitor"), additional_headers=auth_headers()) as ws:
            async for message in ws:
                frame = json.loads(message)
                if frame.get("type", "activation") != "activation":
                    continue
                if frame.get("phase") == "prompt" and not prompt_tokens:
                    continue
                click.echo(message if as_json else format_frame(frame, labels))
                seen += 1
                if count is not None and seen >= count:
                    return
    except OSError as e:
        raise server.unreachable(e) from e


# ---------------------------------------------------------------------------- registration


def register(group: click.Group, sae_group: click.Group) -> None:
    for command in (ps, stop, run, chat, steer, monitor):
        group.add_command(command)
    sae_group.add_command(sae_attach)
    sae_group.add_command(sae_detach)
