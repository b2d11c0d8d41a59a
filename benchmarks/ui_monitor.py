"""The Monitor tab under a long stream: main-thread long tasks while ~2,000 tokens arrive with top-k 10.

Usage (a server and its built UI already running):  .venv/bin/python -m benchmarks.ui_monitor http://127.0.0.1:8000
Opens /monitor in Debian's Chromium (Python playwright), turns monitoring on with top-k 10, sends 4 concurrent
500-token completions (the demo's context holds ~500), moves the mouse over the tokens while they stream, and
prints the long tasks (PerformanceObserver 'longtask', wall-clock > 50 ms) seen meanwhile. On a machine where
the server shares the CPU with the browser, long tasks include the time the browser waited for a core.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request

from playwright.sync_api import sync_playwright


def _call(base: str, path: str, body: dict, method: str = "POST") -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main(base: str = "http://127.0.0.1:8000", streams: int = 4, tokens: int = 500) -> dict:
    _call(base, "/api/monitor/config", {"enabled": True, "features": None, "top_k": 10}, "PUT")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.add_init_script("""window.__long = [];
          new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
            .observe({ type: 'longtask', buffered: true });""")
        page.goto(base + "/monitor")
        page.wait_for_timeout(3000)
        page.evaluate("window.__long = []")
        t0 = time.time()
        body = {"model": None, "prompt": "Once upon a time", "max_tokens": tokens, "ignore_eos": True}
        threads = [threading.Thread(target=_call, args=(base, "/v1/completions", {**body, "model": "millm-demo", "seed": i}))
                   for i in range(streams)]
        for t in threads:
            t.start()
        for i in range(20):  # hover tokens while they stream
            page.mouse.move(600 + (i * 13) % 300, 420 + (i * 7) % 60)
            page.wait_for_timeout(150)
        for t in threads:
            t.join()
        page.wait_for_timeout(1500)
        longs = page.evaluate("window.__long")
        frames = page.evaluate(r"document.body.innerText.match(/(\d+) frames received/)?.[1]")
        browser.close()
    out = {"seconds": round(time.time() - t0, 1), "frames_received": int(frames or 0), "long_tasks": len(longs),
           "max_long_task_ms": round(max(longs), 1) if longs else 0.0,
           "longest_ms": [round(x) for x in sorted(longs, reverse=True)[:10]]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
