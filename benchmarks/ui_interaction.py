"""Time to visible feedback in the web UI: switching tabs and moving a strength slider (goal: under 100 ms).

Usage (a server with its built UI and the demo loaded already running):
    .venv/bin/python -m benchmarks.ui_interaction http://127.0.0.1:8000 [rounds]

Drives Debian's Chromium (Python playwright, trusted input events) and measures two things per interaction:
- `input->paint`: the Event Timing API's duration of the click / key press (from the input's timestamp to the
  next frame painted after its handlers ran). Chromium reports only events of 16 ms or more; a missing entry
  is counted as "< 16 ms".
- `input->content`: from the pointerdown / keydown to the first animation frame after the new tab's heading
  (or the slider's new value) is in the DOM: the moment the user sees the result, code-split chunks included.

Tabs: every round clicks through Models -> SAEs -> Steering -> Profiles -> Monitor -> Models (the first round
loads each tab's chunk; later rounds are warm). Slider: on /steering with feature 16 selected, ArrowRight on
the focused slider (keyboard), and a pointer drag of the thumb (mouse). Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import urllib.request

from playwright.sync_api import Page, sync_playwright

TABS = ["SAEs", "Steering", "Profiles", "Monitor", "Models"]
HEADINGS = {tab: tab for tab in ["Models", *TABS]}

TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "blink.user_timing",
                    "loading", "disabled-by-default-devtools.timeline.stack"]

INIT = """
window.__events = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__events.push(
  {name: e.name, duration: e.duration, start: e.startTime}); })
  .observe({ type: 'event', durationThreshold: 16, buffered: true });
// Resolves with ms from the next trusted `kind` event to the first frame after `done()` holds.
window.__arm = (kind, done) => new Promise((resolve) => {
  let t0 = null;
  const onInput = (e) => { if (t0 === null) t0 = e.timeStamp; };
  window.addEventListener(kind, onInput, { capture: true, once: true });
  const check = () => {
    if (t0 !== null && done()) {
      requestAnimationFrame(() => resolve(performance.now() - t0));
      return;
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
});
"""


def _call(base: str, path: str, body: dict | None = None, method: str = "GET") -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        raw = r.read()
        return json.loads(raw) if raw else {}


def _event_ms(page: Page, name: str, since: float) -> float | None:
    """The longest Event Timing entry named `name` that started after `since` (None: all under 16 ms)."""
    entries = page.evaluate("window.__events")
    hits = [e["duration"] for e in entries if e["name"] == name and e["start"] >= since]
    return max(hits) if hits else None


def _summary(samples: list[float]) -> dict:
    if not samples:
        return {}
    s = sorted(samples)
    return {"n": len(s), "median_ms": round(statistics.median(s), 1), "p90_ms": round(s[min(len(s) - 1, round(0.9 * (len(s) - 1) + 0.49))], 1),
            "max_ms": round(s[-1], 1)}


def _paint_summary(samples: list[float | None]) -> dict:
    seen = [x for x in samples if x is not None]
    return {"n": len(samples), "under_16ms": len(samples) - len(seen), **({"max_ms": round(max(seen), 1)} if seen else {})}


def tab_switches(page: Page, base: str, rounds: int) -> dict:
    page.goto(base + "/models")
    page.get_by_role("heading", level=1, name="Models").wait_for()
    page.wait_for_timeout(1500)
    cold: list[float] = []
    warm: list[float] = []
    paints: list[float | None] = []
    per_tab: dict[str, list[float]] = {tab: [] for tab in TABS}
    for r in range(rounds):
        for tab in TABS:
            heading = HEADINGS[tab]
            done = f"() => [...document.querySelectorAll('h1')].some(h => h.textContent.trim() === {json.dumps(heading)})"
            page.evaluate(f"() => {{ window.__pending = window.__arm('pointerdown', {done}); }}")
            since = page.evaluate("performance.now()")
            page.get_by_role("link", name=tab, exact=True).click()
            ms = page.evaluate("window.__pending")
            (cold if r == 0 else warm).append(ms)
            per_tab[tab].append(round(ms))
            page.wait_for_timeout(300)
            paints.append(_event_ms(page, "click", since) or _event_ms(page, "pointerup", since))
    return {"first_visit_input_to_content": _summary(cold), "warm_input_to_content": _summary(warm),
            "input_to_paint": _paint_summary(paints), "per_tab_ms": per_tab}


def slider(page: Page, base: str, rounds: int) -> dict:
    _call(base, "/api/steering", {"features": [{"index": 16, "strength": 0}]}, "PATCH")
    page.goto(base + "/steering?features=16:0")
    thumb = page.get_by_role("slider", name="Strength of feature 16")
    thumb.wait_for()
    page.wait_for_timeout(1000)
    keys: list[float] = []
    key_paints: list[float | None] = []
    thumb.focus()
    for i in range(rounds * 4):
        before = thumb.get_attribute("aria-valuetext")
        page.evaluate("(before) => { window.__pending = window.__arm('keydown', () => document.querySelector("
                      "'[role=slider][aria-label=\"Strength of feature 16\"]').getAttribute('aria-valuetext') !== before); }",
                      before)
        since = page.evaluate("performance.now()")
        page.keyboard.press("ArrowRight" if i % 8 < 4 else "ArrowLeft")
        keys.append(page.evaluate("window.__pending"))
        page.wait_for_timeout(250)  # past the 150 ms send delay, so each press also sends its PATCH
        key_paints.append(_event_ms(page, "keydown", since))

    drags: list[float] = []
    box = thumb.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for i in range(rounds):
        page.mouse.move(x, y)
        page.mouse.down()
        before = thumb.get_attribute("aria-valuetext")
        page.evaluate("(before) => { window.__pending = window.__arm('pointermove', () => document.querySelector("
                      "'[role=slider][aria-label=\"Strength of feature 16\"]').getAttribute('aria-valuetext') !== before); }",
                      before)
        page.mouse.move(x + (40 if i % 2 == 0 else -40), y, steps=1)
        drags.append(page.evaluate("window.__pending"))
        page.mouse.up()
        page.wait_for_timeout(300)
    return {"keyboard_input_to_value": _summary(keys), "keyboard_input_to_paint": _paint_summary(key_paints),
            "drag_input_to_value": _summary(drags)}


def main(base: str = "http://127.0.0.1:8000", rounds: int = 5, trace: str | None = None) -> dict:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.add_init_script(INIT)
        if trace:  # a Chromium performance trace (CDP) of the whole run, for benchmarks/trace_summary.py
            browser.start_tracing(page=page, path=trace, screenshots=False, categories=TRACE_CATEGORIES)
        out = {"tabs": tab_switches(page, base, rounds), "slider": slider(page, base, rounds)}
        if trace:
            browser.stop_tracing()
        browser.close()
    _call(base, "/api/steering", None, "DELETE")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--trace=")]
    traced = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--trace=")), None)
    main(args[0] if args else "http://127.0.0.1:8000", int(args[1]) if len(args) > 1 else 5, traced)
