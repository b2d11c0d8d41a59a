"""The `millm` command. `millm serve` has one flag per Settings field (each also MILLM_<NAME>).

Other commands: `millm pull`, `millm sae pull`, `millm ls`, `millm rm` (Hub cache) and
`millm profile ...` (talks to a running server).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Callable

import click

from millm.config import Settings


def _option_for(name: str, field: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if args and typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType"))\
        else ann
    flag = "--" + name.replace("_", "-")
    env = "MILLM_" + name.upper()
    help_text = f"{field.description} [env: {env}; default: {field.default if field.default is not None else '-'}]"
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


@click.group()
@click.version_option(package_name="millm")
def main() -> None:
    """miLLM: an OpenAI-compatible server that steers models with SAE features."""


@main.command()
@settings_options
def serve(**options: Any) -> None:
    """Start the server (the bundled demo model and SAE unless --model is given)."""
    import uvicorn

    from millm import logs
    from millm.app import create_app

    given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if v not in (None, ())}
    settings = Settings(**given)
    logs.configure(settings.log_level, settings.log_format)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                log_level=settings.log_level, timeout_graceful_shutdown=5)


def _register_subcommands() -> None:
    from millm import cli_hub, cli_profiles

    cli_hub.register(main)
    main.add_command(cli_profiles.profile)
    from millm import cli_batch

    main.add_command(cli_batch.batch)


_register_subcommands()

if __name__ == "__main__":
    main()
