"""Summarise a Chromium performance trace (CDP tracing, e.g. from `ui_interaction.py --trace=` or
`ui_monitor.py --trace=`): the renderer main thread's tasks over a threshold, and what filled them.

Usage: .venv/bin/python -m benchmarks.trace_summary trace.json [threshold_ms=50]
For each long task: its wall-clock duration, its thread (CPU) time (on a loaded machine the difference is time
spent waiting for a core), and the time spent in its direct and nested work by kind (script by
function and URL, style, layout, paint, GC, parsing), the heaviest first. Then the totals over all long tasks.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from typing import Any

KINDS = {"UpdateLayoutTree": "style", "Layout": "layout", "Paint": "paint", "PrePaint": "paint", "Layerize": "paint",
         "MinorGC": "gc", "MajorGC": "gc", "V8.GC_SCAVENGER": "gc", "BlinkGC.AtomicPhase": "gc", "ParseHTML": "parse",
         "v8.compile": "compile", "V8.CompileCode": "compile", "EvaluateScript": "script", "v8.run": "script",
         "FunctionCall": "script", "EventDispatch": "script", "TimerFire": "script", "FireAnimationFrame": "script",
         "v8.callFunction": "script", "RunMicrotasks": "script", "HitTest": "layout", "CommitLoad": "other"}


def _main_thread(events: list[dict[str, Any]]) -> tuple[int, int]:
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    for key, name in names.items():
        if name == "CrRendererMain":
            return key
    raise SystemExit("no CrRendererMain thread in the trace")


def summarise(path: str, threshold_ms: float = 50.0) -> dict[str, Any]:
    with open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    main = _main_thread(events)
    own = [e for e in events if (e.get("pid"), e.get("tid")) == main and e.get("ph") == "X" and "dur" in e]
    tasks = sorted((e for e in own if e["name"] in ("RunTask", "ThreadControllerImpl::RunTask")
                    and e["dur"] >= threshold_ms * 1000), key=lambda e: e["ts"])
    out: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    for t in tasks:
        start, end = t["ts"], t["ts"] + t["dur"]
        inside = [e for e in own if start <= e["ts"] < end and e is not t and e["name"] in KINDS]
        by_kind: Counter[str] = Counter()
        by_fn: dict[str, float] = defaultdict(float)
        # count only outermost events of each kind (nested FunctionCalls are not double counted)
        inside.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_until: dict[str, int] = {}
        for e in inside:
            kind = KINDS[e["name"]]
            if open_until.get(kind, -1) > e["ts"]:
                continue
            open_until[kind] = e["ts"] + e["dur"]
            by_kind[kind] += e["dur"] / 1000
            if kind == "script":
                d = e.get("args", {}).get("data", {})
                label = d.get("functionName") or d.get("type") or e["name"]
                url = (d.get("url") or "").rsplit("/", 1)[-1]
                by_fn[f"{label} ({url})" if url else label] += e["dur"] / 1000
        totals.update(by_kind)
        out.append({"ms": round(t["dur"] / 1000, 1), "cpu_ms": round(t.get("tdur", t["dur"]) / 1000, 1), "by_kind_ms": {k: round(v, 1) for k, v in by_kind.most_common()},
                    "top_script_ms": {k: round(v, 1) for k, v in sorted(by_fn.items(), key=lambda x: -x[1])[:4]}})
    over_cpu = [t for t in out if t["cpu_ms"] >= threshold_ms]
    return {"long_tasks": len(out), "long_tasks_by_cpu_time": len(over_cpu),
            "max_ms": max((t["ms"] for t in out), default=0.0), "max_cpu_ms": max((t["cpu_ms"] for t in out), default=0.0),
            "totals_ms": {k: round(v, 1) for k, v in totals.most_common()}, "tasks": out}


if __name__ == "__main__":
    print(json.dumps(summarise(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 50.0), indent=1))
