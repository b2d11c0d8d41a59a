"""Start-up to ready on the demo model (`python -m benchmarks.startup_bench`; part of `make bench`).

Each round starts, in alternating order:
- `server`: `millm serve` (the demo model, a fresh data folder, so its SAE is attached and its profiles imported
  as on a first start), timed from the process start to the first `/health` answer (the API is up, status
  "loading") and to `/health` 200 (model, SAE and profiles loaded: ready);
- `floor`: a bare script that imports torch and transformers and loads the same demo model and tokenizer with
  `from_pretrained`: what any server on this stack pays before it can answer, so `server - floor` is miLLM's
  own start-up cost;
- `import`: `python -c "import millm.app"` (the server's modules, before any model is loaded).

The goal (issue #15) is ready in under 5 s on an idle machine. On a shared machine every figure grows with the
load, so the report gives the medians, the same-round ratio server/floor, and the load average. Python's
bytecode cache is allowed in the children (`PYTHONDONTWRITEBYTECODE` is dropped) and one warm-up round is not
counted: an installed package has its .pyc files, and a first start after boot also reads from a cold disk
cache, which this does not measure.

Figures go to benchmarks/out/startup.json and, unless `--no-doc`, into docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "startup.json"
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- begin startup-figures -->", "<!-- end startup-figures -->"

FLOOR = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from millm import demo
path = demo.assets_dir() / "model"
AutoModelForCausalLM.from_pretrained(path).eval()
AutoTokenizer.from_pretrained(path)
print("ready", flush=True)
"""
IMPORT = 'import millm.app\nprint("ready", flush=True)\n'


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLM_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_script(code: str, timeout: float = 300) -> float:
    """Seconds from starting `python -c code` to its line "ready"."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=_env(), text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                return time.perf_counter() - t0
        raise RuntimeError(f"the script exited ({proc.wait()}) before it was ready")
    finally:
        proc.kill()
        proc.wait()


def time_server(timeout: float = 300) -> dict[str, float]:
    """Seconds from starting `millm serve` (demo, fresh data folder) to its first /health answer and to ready."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/health"
    with tempfile.TemporaryDirectory() as data:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "millm", "serve", "--port", str(port), "--data-dir", data,
                                 "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=_env())
        up: float | None = None
        try:
            with httpx.Client(timeout=2) as client:
                while time.perf_counter() - t0 < timeout:
                    try:
                        r = client.get(url)
                        now = time.perf_counter() - t0
                        up = now if up is None else up
                        if r.status_code == 200 and r.json().get("status") == "ok":
                            return {"api_up_s": up, "ready_s": now}
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None:
                        raise RuntimeError(f"millm serve exited with {proc.returncode} during start-up")
                    time.sleep(0.01)
            raise RuntimeError(f"millm serve was not ready after {timeout} s")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(rounds: int) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    # warm-up (not counted): writes the package's .pyc files and fills the disk cache
    time_server()
    time_script(FLOOR)
    rows: list[dict[str, float]] = []
    for i in range(rounds):
        order = ["server", "floor", "import"] if i % 2 == 0 else ["import", "floor", "server"]
        row: dict[str, float] = {"load": os.getloadavg()[0]}
        for what in order:
            if what == "server":
                row.update(time_server())
            elif what == "floor":
                row["floor_s"] = time_script(FLOOR)
            else:
                row["import_s"] = time_script(IMPORT)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "rounds": rows, "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
        "ready_s": med("ready_s"), "ready_min_s": min(r["ready_s"] for r in rows), "api_up_s": med("api_up_s"),
        "floor_s": med("floor_s"), "import_s": med("import_s"),
        "ready_over_floor": statistics.median(r["ready_s"] / r["floor_s"] for r in rows),
        "own_s": statistics.median(r["ready_s"] - r["floor_s"] for r in rows),
    }


def markdown(res: dict[str, Any]) -> str:
    return "\n".join([
        f"Measured {res['date']} on {res['machine']}, Python {res['python']}, {len(res['rounds'])} rounds, load average "
        f"{res['load_average_start']:.1f} at the start and {res['load_average_end']:.1f} at the end "
        "(`python -m benchmarks.startup_bench`):",
        "",
        "| | median | |",
        "|---|---|---|",
        f"| `millm serve` to ready (`/health` 200: demo model, SAE, profiles) | **{res['ready_s']:.2f} s** | "
        f"fastest {res['ready_min_s']:.2f} s |",
        f"| `millm serve` to its first `/health` answer (API up, loading) | {res['api_up_s']:.2f} s | |",
        f"| floor: import torch + transformers, `from_pretrained` the demo model and tokenizer | {res['floor_s']:.2f} s "
        "| |",
        f"| `import millm.app` (no model) | {res['import_s']:.2f} s | |",
        f"| ready / floor, same round | {res['ready_over_floor']:.2f}x | miLLM's own cost (ready - floor): "
        f"{res['own_s']:.2f} s |",
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-doc", action="store_true", help="do not write the figures into docs/reliability.md")
    args = ap.parse_args(argv)
    res = run(args.rounds)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(markdown(res))
    if not args.no_doc:
        text = DOC.read_text()
        new = f"{BEGIN}\n{markdown(res)}\n{END}"
        if BEGIN in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: new, text, flags=re.S)
        else:
            raise SystemExit(f"{DOC} has no {BEGIN} ... {END} section to fill")
        DOC.write_text(text)


if __name__ == "__main__":
    main()
