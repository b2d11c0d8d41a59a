"""`millm ... --help` for every command: whole summaries, help on every option, real defaults."""

from __future__ import annotations

import click
from click.testing import CliRunner

from millm.__main__ import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append(((*prefix, name), cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


def test_every_option_of_every_command_has_help() -> None:
    missing = [(" ".join(path), p.name) for path, cmd in _commands(main) for p in cmd.params
               if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert missing == []


def test_help_texts_are_whole_and_have_real_defaults() -> None:
    runner = CliRunner()
    for path, cmd in [((), main), *_commands(main)]:
        out = runner.invoke(main, [*path, "--help"], terminal_width=80).output
        assert "PydanticUndefined" not in out, path
        if isinstance(cmd, click.Group):
            listing = "".join(out.split("Commands:")[1].split())  # wrapping may break lines at hyphens
            for name, sub in cmd.commands.items():  # each summary whole (wrapped), not cut to one line
                whole = "".join((sub.help or "").split("\n\n")[0].split())
                assert f"{name}{whole}" in listing, (path, name, listing)
    serve = " ".join(runner.invoke(main, ["serve", "--help"], prog_name="millm", terminal_width=100).output.split())
    assert 'MILLM_CORS_ORIGINS; default: []' in serve and "[env: MILLM_CORS_ORIGINS" in serve
    assert "Usage: millm serve [OPTIONS] [MODEL]" in serve


def test_serve_takes_the_model_once() -> None:
    r = CliRunner().invoke(main, ["serve", "some/model", "--model", "other/model"])
    assert r.exit_code == 2 and "give the model once" in r.output
