"""Cache commands for the ``millm`` CLI: pull, sae pull, ls, rm, show, estimate.

They work on the local cache directly (no server needed; `show` adds the SAE a running server
has attached when one answers). The cache folder and data dir
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

from millm.cli_client import HelpGroup
from millm.errors import MillmError
from millm.hub.cache import CacheIndex, delete_cached, list_cache
from millm.hub.download import DownloadCancelled, Progress, pull_model, pull_sae
from millm.hub.memory import GIB, check_fits

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


@click.group("sae", cls=HelpGroup)
def sae() -> None:
    """Pull SAEs into the cache; attach or detach one on the running server."""


@sae.command("pull")
@click.argument("repo_id")
@click.argument("path", required=False, default=None)
@revision_option
@cache_dir_option
def sae_pull(repo_id: str, path: str | None, revision: str | None, cache_dir: Path | None) -> None:
    """Download one SAE folder PATH of REPO_ID, such as layer_12/width_16k/average_l0_82; no PATH: the repo."""
    cache, index = _dirs(cache_dir)
    desc = f"{repo_id}/{path}" if path else repo_id
    _run_pull(desc, lambda bar: pull_sae(repo_id, path, revision, cache, bar, index=index))
    click.echo(f"Pulled SAE {desc}@{revision or 'main'}.")


def _demo_rows(kind: str | None) -> list[dict[str, Any]]:
    """The bundled demo model and SAE, listed with the cache (they ship with miLLM, nothing to pull)."""
    from millm import demo

    assets = demo.assets_dir()
    rows = []
    for name, folder, k in ((demo.DEMO_MODEL_ID, assets / "model", "model"), (demo.DEMO_SAE_ID, assets / "sae", "sae")):
        if folder.is_dir() and kind in (None, k):
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            rows.append({"repo_id": name, "kind": k, "size_bytes": size, "bundled": True})
    return rows


@click.command("ls")
@click.option("--kind", type=click.Choice(["model", "sae"]), default=None, help="Only models or only SAEs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def ls(kind: str | None, as_json: bool, cache_dir: Path | None) -> None:
    """List the bundled demo and the cached models and SAEs, with size, revisions and last use."""
    cache, index = _dirs(cache_dir)
    repos = list_cache(cache, index=index, kind=kind)
    bundled = _demo_rows(kind)
    if as_json:
        click.echo(json.dumps(bundled + [r.to_dict() for r in repos], indent=2))
        return
    rows = [("NAME", "KIND", "SIZE", "REVISIONS", "LAST USED")]
    rows += [(b["repo_id"], f"{b['kind']} (bundled)", _human(b["size_bytes"]), "-", "-") for b in bundled]
    for r in repos:
        revs = ",".join(r.refs) or ",".join(rev.commit[:8] for rev in r.revisions)
        kind_text = r.kind if not r.sae_paths or r.sae_paths == ("",) else f"sae ({len(r.sae_paths)} folders)"
        rows.append((r.repo_id, kind_text, _human(r.size_bytes), revs, _ago(r.last_used)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not repos:
        click.echo("The cache is empty: `millm pull REPO_ID` downloads a model.")


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
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Weights dtype (auto: bf16/fp16 on a GPU, fp32 on CPU).")
@click.option("--quantization", type=click.Choice(["none", "8bit", "4bit"]), default="none", show_default=True,
              help="bitsandbytes quantization to estimate for.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N or mps; need not be on this machine.")
@click.option("--context", type=int, default=None, help="Context length (default: the model's maximum).")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences whose KV cache is counted.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@cache_dir_option
def estimate(
    model: str, revision: str | None, dtype: str, quantization: str, device: str,
    context: int | None, batch: int, as_json: bool, cache_dir: Path | None,
) -> None:  # fmt: skip
    """Estimate the memory MODEL needs (a local folder, millm-demo, a cached or a Hub repo id), and whether it fits.

    Reads only config.json and the safetensors headers (from the Hub when MODEL is not cached, nothing
    downloaded). A device this machine does not have is estimated all the same: plan before you rent a GPU."""
    from millm.hub.estimate import estimate_model
    from millm.placement import resolve_placement

    cache, _ = _dirs(cache_dir)
    try:
        placement = resolve_placement(device, dtype, quantization)
        result = estimate_model(model, placement=placement, revision=revision, cache_dir=cache, context=context,
                                batch=batch)
    except MillmError as err:
        raise click.ClickException(err.message) from err
    est = result.estimate
    if as_json:
        click.echo(json.dumps({"model": model, "source": result.origin, **est.to_dict(),
                               "available_bytes": result.available_bytes, "device_present": result.device_present,
                               "fits": result.fits}, indent=2))
        return
    click.echo(f"Needs {est.describe()}.")
    if result.available_bytes is None:
        click.echo(f"{est.device} is not present on this machine: nothing to compare with.")
        return
    click.echo(f"Free on {est.device}: {result.available_bytes / GIB:.2f} GiB.")
    try:
        check_fits(est, available=result.available_bytes)
    except MillmError as err:
        raise click.ClickException(err.message) from err
    click.echo("It fits.")


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    tok = folder / "tokenizer_config.json"
    if tok.is_file():
        template = json.loads(tok.read_text()).get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        return template if isinstance(template, str) else None
    return None


def _attached_sae(model: str) -> str | None:
    """The SAE a running server has attached to MODEL, if a server answers and serves it."""
    import httpx

    from millm.cli_client import auth_headers, base_url

    try:
        status = httpx.get(base_url() + "/api/status", headers=auth_headers(), timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    loaded, sae = status.get("model") or {}, status.get("sae")
    if sae and model in (loaded.get("id"), loaded.get("source")):
        return f"{sae['id']} at layer {sae['layer']} ({sae['hook_name']}, d_sae {sae['d_sae']}) on the running server"
    return None


@click.command("show")
@click.argument("model")
@revision_option
@click.option("--template", is_flag=True, help="Print only the chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cache_dir_option
def show(model: str, revision: str | None, template: bool, as_json: bool, cache_dir: Path | None) -> None:
    """Show MODEL (a local folder, millm-demo or a cached repo id): architecture, parameters, context, layers,
    chat template, and the SAE a running server has attached to it."""
    from millm.hub.memory import count_local_parameters, max_context
    from millm.hub.sources import find_model

    cache, _ = _dirs(cache_dir)
    try:
        found = find_model(model, revision, cache)
    except MillmError as err:
        raise click.ClickException(err.message) from err
    if found is None:
        raise click.ClickException(f"{model!r} is not in the cache: `millm pull {model}` downloads it "
                                   f"(`millm estimate {model}` reads its size from the Hub)")
    folder = found.folder
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    chat_template = _chat_template(folder)
    if template:
        click.echo(chat_template or "(no chat template: prompts are sent as plain text)")
        return
    try:
        params: int | None = count_local_parameters(folder).total
    except MillmError:
        params = None
    info = {
        "model": model, "source": found.origin,
        "architecture": ", ".join(config.get("architectures") or [config.get("model_type", "?")]),
        "parameters": params, "layers": text.get("num_hidden_layers") or text.get("n_layer"),
        "hidden_size": text.get("hidden_size") or text.get("n_embd"),
        "attention_heads": text.get("num_attention_heads") or text.get("n_head"),
        "kv_heads": text.get("num_key_value_heads"), "context_length": max_context(config),
        "vocab_size": text.get("vocab_size"), "dtype": config.get("dtype") or config.get("torch_dtype"),
        "chat_template": chat_template, "sae": _attached_sae(model),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    rows = [
        ("model", f"{model} ({found.origin})"), ("architecture", info["architecture"]),
        ("parameters", f"{params:,}" if params is not None else "- (no safetensors weights)"),
        ("layers", info["layers"]), ("hidden size", info["hidden_size"]),
        ("attention heads", f"{info['attention_heads']}" + (f" ({info['kv_heads']} key/value)"
                                                            if info["kv_heads"] not in (None, info["attention_heads"])
                                                            else "")),
        ("context length", info["context_length"]), ("vocabulary", info["vocab_size"]), ("dtype", info["dtype"]),
        ("chat template", f"yes, {len(chat_template.splitlines())} line(s) (--template prints it)"
                          if chat_template else "none (prompts are sent as plain text)"),
        ("sae", info["sae"] or "none attached (or no server running)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {'-' if value is None else value}")


COMMANDS: tuple[click.Command, ...] = (pull, sae, ls, rm, show, estimate)


def register(group: click.Group) -> None:
    """Add every cache command to the main ``millm`` group."""
    for command in COMMANDS:
        group.add_command(command)
