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


TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "blink.user_timing"]


def main(base: str = "http://127.0.0.1:8000", streams: int = 4, tokens: int = 500, trace: str | None = None) -> dict:
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
        if trace:  # a Chromium performance trace (CDP) of the stream, for benchmarks/trace_summary.py
            browser.start_tracing(page=page, path=trace, categories=TRACE_CATEGORIES)
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
        if trace:
            browser.stop_tracing()
        browser.close()
    out = {"seconds": round(time.time() - t0, 1), "frames_received": int(frames or 0), "long_tasks": len(longs),
           "max_long_task_ms": round(max(longs), 1) if longs else 0.0,
           "longest_ms": [round(x) for x in sorted(longs, reverse=True)[:10]], "streams": streams}
    if trace:
        from benchmarks.trace_summary import summarise

        t = summarise(trace)
        out.update(trace_long_tasks=t["long_tasks"], trace_long_tasks_by_cpu_time=t["long_tasks_by_cpu_time"],
                   trace_max_cpu_ms=t["max_cpu_ms"], trace_totals_ms=t["totals_ms"])
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    # ui_monitor BASE [STREAMS] [--trace=FILE]
    args = [a for a in sys.argv[1:] if not a.startswith("--trace=")]
    traced = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--trace=")), None)
    main(args[0] if args else "http://127.0.0.1:8000", int(args[1]) if len(args) > 1 else 4, trace=traced)
