"""Cache commands for the ``millm`` CLI: pull, sae pull, ls, rm, estimate.

They work on the local cache directly (no server needed). The cache folder and data dir
come from `Settings` (MILLM_CACHE_DIR, MILLM_DATA_DIR) unless ``--cache-dir`` is given;
the Hub token comes from HF_TOKEN (or ``hf auth login``), never from a flag.

Register on the main group with ``register(main)`` (or ``main.add_command`` for each of
`COMMANDS`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from millm.errors import MillmError
from millm.hub.cache import CacheIndex, delete_cached, list_cache
from millm.hub.download import DownloadCancelled, Progress, pull_model, pull_sae
from millm.hub.memory import GIB, available_memory, check_fits, estimate_local, estimate_remote

cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Hugging Face cache folder (default: MILLM_CACHE_DIR, else the huggingface_hub default).",
)  # fmt: skip
revision_option = click.option("--revision", default=None, help="Branch, tag or commit (default: main).")


def _settings() -> Any:
    from millm.config import Settings

    return Settings()


def _dirs(cache_dir: Path | None) -> tuple[Path | None, CacheIndex]:
    settings = _settings()
    return (cache_dir or settings.cache_dir), CacheIndex(settings.data_dir)


def _human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, time.time() - ts)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


class _Bar:
    """A tqdm byte bar fed by download progress callbacks."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: tqdm | None = None

    def __call__(self, p: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(total=p.bytes_total, unit="B", unit_scale=True, desc=self.desc, file=sys.stderr)
        self.bar.update(p.bytes_done - self.bar.n)
        self.bar.set_postfix_str(f"{p.files_done}/{p.files_total} files")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_pull(desc: str, action: Callable[[_Bar], Path]) -> Path:
    bar = _Bar(desc)
    try:
        return action(bar)
    except MillmError as err:
        raise click.ClickException(err.message) from err
    except (KeyboardInterrupt, DownloadCancelled):
        bar.close()
        click.echo("Interrupted. Run the same command again to resume.", err=True)
        sys.exit(130)
    finally:
        bar.close()


@click.command("pull")
@click.argument("repo_id")
@revision_option
@cache_dir_option
def pull(repo_id: str, revision: str | None, cache_dir: Path | None) -> None:
    """Download a model (safetensors weights, config, tokenizer) from the Hub into the cache."""
    cache, index = _dirs(cache_dir)
    _run_pull(repo_id, lambda bar: pull_model(repo_id, revision, cache, bar, index=index))
    click.echo(f"Pulled {repo_id}@{revision or 'main'}.")


@click.group("sae")
def sae() -> None:
    """SAE commands."""


@sae.command("pull")
@click.argument("repo_id")
@click.argument("path", required=False, default=None)
@revision_option
@cache_dir_option
def sae_pull(repo_id: str, path: str | None, revision: str | None, cache_dir: Path | None) -> None:
    """Download one SAE folder PATH of REPO_ID (e.g. layer_12/width_16k/average_l0_82); no PATH: the repo."""
    cache, index = _dirs(cache_dir)
    desc = f"{repo_id}/{path}" if path else repo_id
    _run_pull(desc, lambda bar: pull_sae(repo_id, path, revision, cache, bar, index=index))
    click.echo(f"Pulled SAE {desc}@{revision or 'main'}.")


@click.command("ls")
@click.option("--kind", type=click.Choice(["model", "sae"]), default=None, help="Only models or only SAEs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def ls(kind: str | None, as_json: bool, cache_dir: Path | None) -> None:
    """List cached models and SAEs with size, revisions and last use."""
    cache, index = _dirs(cache_dir)
    repos = list_cache(cache, index=index, kind=kind)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in repos], indent=2))
        return
    if not repos:
        click.echo("The cache is empty.")
        return
    rows = [("REPO", "KIND", "SIZE", "REVISIONS", "LAST USED")]
    for r in repos:
        revs = ",".join(r.refs) or ",".join(rev.commit[:8] for rev in r.revisions)
        kind_text = r.kind if not r.sae_paths or r.sae_paths == ("",) else f"sae ({len(r.sae_paths)} folders)"
        rows.append((r.repo_id, kind_text, _human(r.size_bytes), revs, _ago(r.last_used)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.command("rm")
@click.argument("repo_id")
@click.option("--revision", default=None, help="Delete only this revision (commit or ref).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@cache_dir_option
def rm(repo_id: str, revision: str | None, yes: bool, cache_dir: Path | None) -> None:
    """Delete a cached model or SAE repo (or one revision of it)."""
    cache, index = _dirs(cache_dir)
    what = f"{repo_id}@{revision}" if revision else repo_id
    if not yes:
        click.confirm(f"Delete {what} from the cache?", abort=True)
    try:
        freed = delete_cached(repo_id, cache, revision=revision, index=index)
    except MillmError as err:
        raise click.ClickException(err.message) from err
    click.echo(f"Deleted {what} ({_human(freed)} freed).")


@click.command("estimate")
@click.argument("model")
@revision_option
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto")
@click.option("--quantization", type=click.Choice(["none", "8bit", "4bit"]), default="none")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--context", type=int, default=None, help="Context length (default: the model's maximum).")
@click.option("--batch", type=int, default=1, show_default=True)
@cache_dir_option
def estimate(
    model: str, revision: str | None, dtype: str, quantization: str, device: str,
    context: int | None, batch: int, cache_dir: Path | None,
) -> None:  # fmt: skip
    """Estimate the memory MODEL (a local folder or a Hub repo id) needs, and whether it fits."""
    cache, _ = _dirs(cache_dir)
    options: dict[str, Any] = dict(dtype=dtype, quantization=quantization, device=device, context=context, batch=batch)
    try:
        if Path(model).is_dir():
            est = estimate_local(model, **options)
        else:
            est = estimate_remote(model, revision, cache_dir=cache, **options)
        free = available_memory(device)
        click.echo(f"Needs {est.describe()}.")
        click.echo(f"Free on {device}: {free / GIB:.2f} GiB.")
        check_fits(est, available=free)
    except MillmError as err:
        raise click.ClickException(err.message) from err
    click.echo("It fits.")


COMMANDS: tuple[click.Command, ...] = (pull, sae, ls, rm, estimate)


def register(group: click.Group) -> None:
    """Add every cache command to the main ``millm`` group."""
    for command in COMMANDS:
        group.add_command(command)
