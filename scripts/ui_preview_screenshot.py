"""Screenshot of the Models tab's Preview dialog (docs/images/ui-models-preview.png), offline.

Usage (from the repo root, the UI built with `make ui`): .venv/bin/python -m scripts.ui_preview_screenshot
The demo model, given an auto_map (so it "needs remote code") and Hub card metadata, is served by the fake Hub of
the tests; a `millm serve` pointed at it (HF_ENDPOINT, port 8433, remote code allowed) shows its preview.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from millm import demo
from tests.hub.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
work = tempfile.mkdtemp(prefix="millm-preview-shot-")
src = demo.assets_dir() / "model"
tmp = f"{work}/model"
shutil.copytree(src, tmp)
cfg = json.loads(Path(f"{tmp}/config.json").read_text())
cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_demo.DemoForCausalLM"}
Path(f"{tmp}/config.json").write_text(json.dumps(cfg))
Path(f"{tmp}/modeling_demo.py").write_text("# custom code\n")
with FakeHub() as hub:
    hub.add_folder("millm/demo-custom", tmp, meta={"author": "millm", "downloads": 48213, "likes": 312,
        "pipeline_tag": "text-generation", "library_name": "transformers",
        "tags": ["transformers", "safetensors", "llama", "text-generation", "demo", "interpretability", "sae",
                 "steering", "custom_code", "en", "license:apache-2.0", "endpoints_compatible"],
        "cardData": {"license": "apache-2.0", "language": ["en"]}}, gated=False)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "MILLM_DATA_DIR": f"{work}/data", "MILLM_PORT": "8433",
           "MILLM_TRUST_REMOTE_CODE": "1"}
    proc = subprocess.Popen([str(ROOT / ".venv/bin/millm"), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if json.load(urllib.request.urlopen("http://127.0.0.1:8433/health"))["status"] == "ok":
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 1440, "height": 1000})
            page.goto("http://127.0.0.1:8433/models?download=millm/demo-custom&preview=millm%2Fdemo-custom")
            page.get_by_role("radio", name="fp32").wait_for(timeout=60000)
            page.get_by_role("radio", name="fp32").check()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ROOT / "docs/images/ui-models-preview.png"))
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
print("wrote docs/images/ui-models-preview.png")
