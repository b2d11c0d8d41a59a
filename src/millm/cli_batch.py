"""`millm batch ...`: steering sweeps as Batch API jobs.

- `sweep`: prompts (one per line) x steering settings -> a batch input JSONL (one chat request per pair).
- `run`: upload a batch file to a running server, start the batch, follow its progress, download the results.
- `collect`: a batch's output (and error) file + its input file -> one CSV row per request.

Settings: each `--profile NAME` is one setting; each comma-separated item of `--steer` is one setting of
`index:strength` features joined by `+` (`--steer 16:4,16:8` is two settings, `--steer 16:4+200:-2` one with two
features). An unsteered baseline (steering with no features) is added unless `--no-baseline`.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from millm.cli_client import URL_HELP, HelpGroup, server_from


def parse_steer(spec: str) -> list[list[dict[str, float | int]]]:
    """'16:4,16:8+3:-1' -> [[{16: 4}], [{16: 8}, {3: -1}]] as feature lists."""
    settings = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        feats = []
        for part in item.split("+"):
            idx, sep, strength = part.partition(":")
            try:
                feats.append({"index": int(idx), "strength": float(strength)})
            except ValueError:
                raise click.BadParameter(f"{part!r} is not index:strength", param_hint="--steer") from None
            if not sep:
                raise click.BadParameter(f"{part!r} is not index:strength", param_hint="--steer")
        settings.append(feats)
    return settings


def setting_label(steering: dict[str, Any]) -> str:
    if "profile" in steering:
        return f"profile:{steering['profile']}"
    feats = steering.get("features") or []
    return "+".join(f"{f['index']}:{f['strength']:g}" for f in feats) or "baseline"


def build_sweep(prompts: list[str], *, model: str, profiles: list[str], steers: list[str], baseline: bool,
                max_tokens: int, temperature: float, mode: str | None, system: str | None) -> list[dict[str, Any]]:
    settings: list[dict[str, Any]] = [{"features": []}] if baseline else []
    settings += [{"profile": name} for name in profiles]
    for spec in steers:
        for feats in parse_steer(spec):
            settings.append({"features": feats, **({"mode": mode} if mode else {})})
    if not settings:
        raise click.UsageError("no settings: give --profile or --steer, or keep the baseline")
    lines = []
    for i, prompt in enumerate(prompts):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        for k, steering in enumerate(settings):
            lines.append({"custom_id": f"p{i}-s{k}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": model, "messages": messages, "max_tokens": max_tokens,
                                   "temperature": temperature, "steering": steering}})
    return lines


def collect_rows(input_lines: list[dict[str, Any]], result_lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per input line, in input order: prompt, setting, the answer or the error."""
    results = {r.get("custom_id"): r for r in result_lines if r.get("custom_id") is not None}
    rows = []
    for line in input_lines:
        cid = line["custom_id"]
        body = line.get("body", {})
        messages = body.get("messages") or []
        prompt = messages[-1].get("content", "") if messages else body.get("prompt", "")
        steering = body.get("steering") or {}
        row = {"custom_id": cid, "prompt": prompt, "setting": setting_label(steering),
               "steering": json.dumps(steering, separators=(",", ":")), "text": "", "finish_reason": "",
               "completion_tokens": "", "applied": "", "error": ""}
        res = results.get(cid)
        if res is None:
            row["error"] = "no result"
        elif res.get("error"):
            row["error"] = res["error"].get("message", "")
        elif res["response"]["status_code"] != 200:
            row["error"] = res["response"]["body"].get("error", {}).get("message", "")
        else:
            out = res["response"]["body"]
            choice = out["choices"][0]
            row["text"] = choice.get("message", {}).get("content") or choice.get("text", "")
            row["finish_reason"] = choice.get("finish_reason") or ""
            row["completion_tokens"] = out.get("usage", {}).get("completion_tokens", "")
            applied = (out.get("millm") or {}).get("steering") or {}
            row["applied"] = json.dumps(applied, separators=(",", ":"))
        rows.append(row)
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@click.group(cls=HelpGroup)
def batch() -> None:
    """Build, run and collect batch jobs (steering sweeps)."""


@batch.command()
@click.argument("prompts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default="millm-demo", show_default=True, help="The model (or <model>+<profile>) to ask.")
@click.option("--profile", "profiles", multiple=True, help="A saved profile as one setting (repeatable).")
@click.option("--steer", "steers", multiple=True, help="Settings as index:strength[+index:strength][,...].")
@click.option("--mode", type=click.Choice(["add", "clamp"]), default=None, help="Steering mode for --steer.")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Add an unsteered setting.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 2))
@click.option("--system", default=None, help="A system message for every request.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the batch JSONL (default: standard output).")
def sweep(prompts_file: Path, output: Path | None, **kw: Any) -> None:
    """Build a batch file: every prompt (one per line of PROMPTS_FILE) under every steering setting."""
    prompts = [ln.strip() for ln in prompts_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not prompts:
        raise click.UsageError(f"{prompts_file} has no prompts")
    lines = build_sweep(prompts, **kw)
    text = "".join(json.dumps(ln) + "\n" for ln in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{len(lines)} requests ({len(prompts)} prompts x {len(lines) // len(prompts)} settings) "
                   f"-> {output}", err=True)


@batch.command()
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=None, help=URL_HELP)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the CSV table of results.")
def run(batch_file: Path, url: str | None, output: Path) -> None:
    """Upload BATCH_FILE, run it as a batch on the server, and write the results as a CSV table."""
    server = server_from(url)
    f = server.call("POST", "/v1/files", files={"file": (batch_file.name, batch_file.read_bytes())},
                    data={"purpose": "batch"})
    first = _read_jsonl(batch_file)[0]
    b = server.call("POST", "/v1/batches", json={"input_file_id": f["id"], "endpoint": first.get("url"),
                                                 "completion_window": "24h"})
    click.echo(f"batch {b['id']}", err=True)
    while b["status"] not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(1)
        b = server.call("GET", f"/v1/batches/{b['id']}")
        c = b["request_counts"]
        click.echo(f"\r{b['status']}: {c['completed']} done, {c['failed']} failed of {c['total']}", err=True, nl=False)
    click.echo("", err=True)
    results = []
    for fid in (b.get("output_file_id"), b.get("error_file_id")):
        if fid:
            text = httpx_text(server, f"/v1/files/{fid}/content")
            results += [json.loads(x) for x in text.splitlines() if x.strip()]
    _write_csv(output, collect_rows(_read_jsonl(batch_file), results))
    click.echo(f"{b['status']}: results -> {output}", err=True)


@batch.command()
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("result_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def collect(batch_file: Path, result_files: tuple[Path, ...], output: Path) -> None:
    """Join a batch's input BATCH_FILE with its downloaded output/error RESULT_FILES into a CSV table."""
    results = [r for path in result_files for r in _read_jsonl(path)]
    _write_csv(output, collect_rows(_read_jsonl(batch_file), results))


def httpx_text(server: Any, path: str) -> str:
    """A file's bytes as text (the CLI client's call() parses JSON)."""
    import httpx

    from millm.cli_client import auth_headers

    try:
        r = httpx.get(server.url + path, headers=auth_headers(), timeout=60)
    except httpx.TransportError as e:
        raise server.unreachable(e) from e
    if r.status_code >= 400:
        raise click.ClickException(f"{r.status_code}: {r.text}")
    return r.text


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["custom_id", "prompt", "setting", "text", "finish_reason", "completion_tokens", "steering", "applied",
              "error"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
