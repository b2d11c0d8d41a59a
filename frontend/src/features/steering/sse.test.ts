import { describe, expect, it } from "vitest";
import { divergesAt, sseData } from "./sse";
import { type CompareRun, reduceFrame } from "./useCompare";

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(enc.encode(ch));
      c.close();
    },
  });
}

describe("sseData", () => {
  it("yields each event's data across chunk boundaries, skipping comments and CRLF", async () => {
    const out: string[] = [];
    for await (const d of sseData(
      streamOf(['data: {"a"', ":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\n", "data: last"]),
    ))
      out.push(d);
    expect(out).toEqual(['{"a":1}', "x\ny", "last"]);
  });
});

describe("divergesAt", () => {
  it("first differing token, the shorter length for a prefix, null when equal", () => {
    expect(divergesAt([1, 2, 3], [1, 9, 3])).toBe(1);
    expect(divergesAt([1, 2], [1, 2, 3])).toBe(2);
    expect(divergesAt([1, 2], [1, 2])).toBeNull();
  });
});

describe("reduceFrame", () => {
  const base: CompareRun = {
    status: "running",
    seed: 1,
    variants: [
      { label: "Unsteered", pieces: [], done: null },
      { label: "Steered", pieces: [], done: null },
    ],
    divergences: [null, null],
    divergence: null,
    error: null,
  };
  it("measures every column against variant 0, each on its own", () => {
    const three: CompareRun = {
      ...base,
      variants: [...base.variants, { label: "Profile loud", pieces: [], done: null }],
      divergences: [null, null, null],
    };
    let r = reduceFrame(three, { type: "delta", variant: 0, text: "a", token_ids: [1] });
    r = reduceFrame(r, { type: "delta", variant: 2, text: "A", token_ids: [5] });
    expect(r.divergences).toEqual([null, null, 0]);
    r = reduceFrame(r, { type: "delta", variant: 1, text: "a", token_ids: [1] });
    r = reduceFrame(r, { type: "delta", variant: 0, text: "b", token_ids: [2] });
    r = reduceFrame(r, { type: "delta", variant: 1, text: "c", token_ids: [3] });
    expect(r.divergences).toEqual([null, 1, 0]);
    expect(r.divergence).toBe(0); // the earliest, for the baseline's mark
    const done = {
      type: "done" as const,
      index: 1,
      text: "ac",
      tokens: 2,
      token_ids: [1, 3],
      finish_reason: "length" as const,
      steering: { source: "request" as const },
      diverges_at: 1,
    };
    r = reduceFrame(r, done);
    r = reduceFrame(r, { ...done, index: 0, diverges_at: null });
    expect(r.divergences).toEqual([null, 1, 0]);
  });
  it("appends deltas per variant and finds a live divergence only on a real mismatch", () => {
    let r = reduceFrame(base, { type: "delta", variant: 0, text: "a", token_ids: [1] });
    r = reduceFrame(r, { type: "delta", variant: 0, text: "b", token_ids: [2] });
    r = reduceFrame(r, { type: "delta", variant: 1, text: "a", token_ids: [1] });
    expect(r.divergence).toBeNull(); // variant 1 is only behind
    r = reduceFrame(r, { type: "delta", variant: 1, text: "B", token_ids: [7] });
    expect(r.divergence).toBe(1);
    expect(r.variants[1].pieces.map((p) => p.text).join("")).toBe("aB");
  });
  it("takes the final divergence from variant 1's done frame, and ends on end", () => {
    const done = {
      type: "done" as const,
      index: 1,
      text: "aB",
      tokens: 2,
      token_ids: [1, 7],
      finish_reason: "length",
      steering: { source: "request" as const },
      diverges_at: 1,
    };
    let r = reduceFrame(base, done);
    expect(r.divergence).toBe(1);
    expect(r.variants[1].done?.tokens).toBe(2);
    r = reduceFrame(r, {
      type: "end",
      id: "c1",
      usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
    });
    expect(r.status).toBe("done");
  });
  it("an error frame carries the server's message", () => {
    const r = reduceFrame(base, {
      type: "error",
      error: { message: "boom", type: "x", param: "variants[1]", code: "c" },
    });
    expect(r.status).toBe("error");
    expect(r.error?.message).toBe("boom");
    expect(r.error?.param).toBe("variants[1]");
  });
});
