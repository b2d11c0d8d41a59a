"""Start-up: what `import millm.app` leaves out, and the garbage collector's pause while the start-up model loads
(millm.server.pause_gc). The time itself is measured by benchmarks/startup_bench.py, not here."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from millm import server as millm_server


def test_importing_the_app_leaves_the_mcp_sdk_for_the_first_mcp_request() -> None:
    code = "import sys, millm.app; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=300).stdout.split())
    assert "fastapi" in loaded and "millm" in loaded
    # the MCP SDK and what only it pulls in (httpx's command line: rich, pygments; the SDK's auth: cryptography)
    assert not loaded & {"mcp", "mcp_types", "rich", "pygments", "cryptography"}, loaded & {"mcp", "mcp_types"}


@pytest.fixture()
def paused_gc() -> Any:
    assert gc.isenabled()
    millm_server.pause_gc()
    try:
        yield
    finally:
        millm_server._gc_paused = False
        gc.unfreeze()
        gc.enable()


# In a fresh process, as `millm serve` runs: the first load of a model class leaves it in reference cycles
# (transformers' lazy import keeps a caught exception's frames), so a frozen start-up model is freed only if
# the unload unfreezes before it collects.
FRESH_SERVER = """
import gc, socket, sys, threading, time, weakref
from millm import server
server.pause_gc()
assert not gc.isenabled()
import httpx, uvicorn
from millm.app import create_app
from millm.config import Settings
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
app = create_app(Settings(model=sys.argv[2], sae=sys.argv[3], port=port, data_dir=sys.argv[1]))
srv = server.DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
thread = threading.Thread(target=srv.run, daemon=True)
thread.start()
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if httpx.get(url + "/health").status_code == 200:
            break
    except httpx.TransportError:
        pass
    time.sleep(0.02)
deadline = time.monotonic() + 10  # (the server's loop turns the collector back on just after the load)
while not gc.isenabled() and time.monotonic() < deadline:
    time.sleep(0.02)
print("enabled", gc.isenabled(), "frozen", gc.get_freeze_count())
model = weakref.ref(app.state.runtime.worker.loaded.model)
print("unload", httpx.post(url + "/api/models/unload", headers={"X-MiLLM-Client": "test"}).status_code)
print("freed", model() is None)
srv.should_exit = True
thread.join(30)
"""


def test_the_collector_is_off_until_the_start_up_model_is_loaded_and_a_dropped_model_is_still_freed(
        tmp_path: Path, tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-c", FRESH_SERVER, str(tmp_path), str(tiny_model_dir), str(tiny_sae_dir)],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    enabled, frozen, unload, freed = out.stdout.split()[1::2][:4]
    assert enabled == "True" and int(frozen) > 100_000
    assert unload == "204" and freed == "True"


def test_a_start_up_load_that_takes_too_long_gets_the_collector_back(paused_gc: None) -> None:
    class Loading:
        async def wait_ready(self) -> None:
            await asyncio.sleep(3600)

    asyncio.run(millm_server.resume_gc_when_ready(Loading(), max_wait=0.05))
    assert gc.isenabled() and gc.get_freeze_count() > 0
