import { describe, expect, it, vi } from "vitest";
import { activationFrame } from "@/test/monitorFixtures";
import {
  applyFrames,
  EMPTY_SNAPSHOT,
  FrameBatcher,
  fromHistory,
  highlightAlpha,
  mean,
  traceKey,
  valueAt,
} from "./monitorStore";

const frame = activationFrame;

describe("applyFrames", () => {
  it("groups frames per request (and choice), newest request first, with min/max/mean per feature", () => {
    let s = applyFrames(EMPTY_SNAPSHOT, [
      frame("a", 0, [
        [16, 2],
        [7, 1],
      ]),
      frame("a", 1, [[16, 4]]),
    ]);
    s = applyFrames(s, [
      frame("b", 0, [[7, 3]]),
      frame("a", 2, [[16, 6]]),
      frame("b", 0, [[7, 5]], { choice: 1 }),
    ]);
    expect(s.order).toEqual(["b#1", "b", "a"]);
    expect(s.traces.a.tokens.map((t) => t.position)).toEqual([0, 1, 2]);
    const caps = s.traces.a.stats[16];
    expect([caps.count, caps.min, caps.max, mean(caps)]).toEqual([3, 2, 6, 4]);
    expect(caps.label).toBe("CAPS");
    expect(s.labels[16]).toBe("CAPS");
    expect(s.received).toBe(5);
    expect(traceKey({ request_id: "x", choice: 2 })).toBe("x#2");
  });

  it("keeps untouched traces as the same objects (memoised views do not re-render)", () => {
    const s1 = applyFrames(EMPTY_SNAPSHOT, [frame("a", 0, [[1, 1]]), frame("b", 0, [[1, 1]])]);
    const s2 = applyFrames(s1, [frame("b", 1, [[1, 2]])]);
    expect(s2.traces.a).toBe(s1.traces.a);
    expect(s2.traces.b).not.toBe(s1.traces.b);
    expect(s1.traces.b.tokens).toHaveLength(1); // the old snapshot is not mutated
  });

  it("merges server history under the live traces", () => {
    const live = applyFrames(EMPTY_SNAPSHOT, [frame("new", 0, [[1, 1]])]);
    const snap = fromHistory([{ request_id: "old", frames: [frame("old", 0, [[2, 1]])] }], live);
    expect(snap.order).toEqual(["new", "old"]);
    expect(snap.traces.old.startedAt).toBe(0);
  });
});

describe("highlight", () => {
  it("scales Neuronpedia-style to the max: 0 for none, 1 at the max, more than linear below", () => {
    expect(highlightAlpha(0, 10)).toBe(0);
    expect(highlightAlpha(-3, 10)).toBe(0);
    expect(highlightAlpha(10, 10)).toBe(1);
    expect(highlightAlpha(1, 10)).toBeCloseTo(0.05 + Math.log10(1.9), 6);
    expect(highlightAlpha(5, 0)).toBe(0);
    expect(valueAt(frame("a", 0, [[16, 2.5]]), 16)).toBe(2.5);
    expect(valueAt(frame("a", 0, [[16, 2.5]]), 7)).toBe(0);
  });
});

describe("FrameBatcher", () => {
  it("hands over every frame pushed before a paint in one batch", () => {
    const callbacks: (() => void)[] = [];
    const onFlush = vi.fn();
    const b = new FrameBatcher(onFlush, (cb) => callbacks.push(cb));
    for (let i = 0; i < 2000; i++) b.push(frame("a", i, [[16, i]]));
    expect(callbacks).toHaveLength(1);
    expect(onFlush).not.toHaveBeenCalled();
    callbacks[0]();
    expect(onFlush).toHaveBeenCalledTimes(1);
    expect(onFlush.mock.calls[0][0]).toHaveLength(2000);
    b.push(frame("a", 2000, []));
    expect(callbacks).toHaveLength(2);
  });
});
