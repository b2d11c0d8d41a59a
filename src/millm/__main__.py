"""The `millm` command. `millm serve` has one flag per Settings field (each also MILLM_<NAME>).

Other commands: `millm pull`, `millm sae pull`, `millm ls`, `millm rm`, `millm show`,
`millm estimate` (local files and the Hub cache; `cli_hub`), and the commands that drive a
running server: `millm ps`, `millm stop`, `millm run`/`chat`, `millm steer`, `millm sae
attach/detach`, `millm monitor` (`cli_server`) and `millm profile ...` (`cli_profiles`).
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Callable

import click

from millm.cli_client import HelpGroup
from millm.config import Settings


def _option_for(name: str, field: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if args and typing.get_origin(ann) in (typing.Union, __import__("types").UnionType)\
        else ann
    flag = "--" + name.replace("_", "-")
    env = "MILLM_" + name.upper()
    default = field.get_default(call_default_factory=True)
    shown = "-" if default is None else json.dumps(default, default=str) if isinstance(default, list) else str(default)
    help_text = f"{field.description} [env: {env}; default: {shown}]"
    if base is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if typing.get_origin(base) is typing.Literal:
        return click.option(flag, name, type=click.Choice(typing.get_args(base)), default=None, help=help_text)
    if typing.get_origin(base) is list:
        return click.option(flag, name, multiple=True, default=None, help=help_text)
    kind = {int: int, float: float, Path: click.Path(path_type=Path)}.get(base, str)
    return click.option(flag, name, type=kind, default=None, help=help_text)


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name, field in reversed(list(Settings.model_fields.items())):
        fn = _option_for(name, field)(fn)
    return fn


CONTEXT = {"max_content_width": 100, "help_option_names": ["-h", "--help"]}


@click.group(cls=HelpGroup, context_settings=CONTEXT)
@click.version_option(package_name="millm")
def main() -> None:
    """miLLM: an OpenAI-compatible server that steers models with SAE features."""


@main.command()
@click.argument("model_arg", metavar="[MODEL]", required=False)
@settings_options
def serve(model_arg: str | None, **options: Any) -> None:
    """Start the server with MODEL (a local folder, a Hub repo id or millm-demo; default: the demo).

    MODEL may also be given as --model or MILLM_MODEL. The bundled demo model comes with its SAE and
    demo profiles. Stop the server with Ctrl-C or `millm stop`."""
    from millm import logs, server

    server.pause_gc()  # until the start-up model is loaded: a quarter of the start-up time otherwise
    from millm.app import create_app

    if model_arg is not None:
        if options.get("model") not in (None, model_arg):
            raise click.UsageError("give the model once: as MODEL or as --model")
        options["model"] = model_arg
    given: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if v not in (None, ())}
    settings = Settings(**given)
    logs.configure(settings.log_level, settings.log_format, access=settings.access_log)
    server.serve(create_app(settings), settings)


def _register_subcommands() -> None:
    from millm import cli_hub, cli_mcp, cli_profiles, cli_server

    cli_hub.register(main)
    cli_server.register(main, cli_hub.sae)
    main.add_command(cli_profiles.profile)
    main.add_command(cli_mcp.mcp)
    from millm import cli_batch

    main.add_command(cli_batch.batch)


_register_subcommands()

if __name__ == "__main__":
    main()
