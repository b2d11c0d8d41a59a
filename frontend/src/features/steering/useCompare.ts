import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError } from "@/api/errors";
import { compareSteering } from "@/client";
import type { CompareDelta, CompareDone, CompareEnd, CompareError, CompareStart } from "@/ws/frames.gen";
import { divergesAt, sseData } from "./sse";

export type CompareFrame = CompareStart | CompareDelta | CompareDone | CompareEnd | CompareError;

/** One streamed column: its pieces of text (one per delta frame, with their token ids) and its result. */
export interface VariantStream {
  label: string;
  pieces: { text: string; tokenIds: number[] }[];
  done: CompareDone | null;
}

export interface CompareRun {
  status: "idle" | "running" | "done" | "stopped" | "error";
  seed: number | null;
  variants: VariantStream[];
  /**
   * Per variant, the token index where it first differs from variant 0 (live while streaming, final from its
   * `done`); null while identical so far, and always null for variant 0.
   */
  divergences: (number | null)[];
  /** The earliest of `divergences`: where the baseline first differs from any other column. */
  divergence: number | null;
  error: ApiError | null;
}

export interface CompareInput {
  model?: string;
  prompt: string;
  maxTokens: number;
  temperature: number;
  seed: number;
  /** Variant 0 is the baseline the divergences are measured against (up to 8 variants). */
  variants: {
    label: string;
    steering: VariantSteering | null;
  }[];
}

/** A compare variant's steering: explicit features, or a saved profile by name (the /v1 `steering` object). */
export type VariantSteering =
  | { features: { index: number; strength: number }[]; mode: "add" | "clamp"; scale?: number }
  | { profile: string; scale?: number };

export const MAX_VARIANTS = 8;

const IDLE: CompareRun = {
  status: "idle",
  seed: null,
  variants: [],
  divergences: [],
  divergence: null,
  error: null,
};

function earliest(divergences: (number | null)[]): number | null {
  let best: number | null = null;
  for (const d of divergences) if (d != null && (best == null || d < best)) best = d;
  return best;
}

/** Apply one frame to the run (pure; tested). */
export function reduceFrame(run: CompareRun, frame: CompareFrame): CompareRun {
  switch (frame.type) {
    case "start":
      return { ...run, seed: frame.seed };
    case "delta": {
      const variants = run.variants.slice();
      const v = variants[frame.variant];
      if (!v) return run;
      variants[frame.variant] = {
        ...v,
        pieces: [...v.pieces, { text: frame.text, tokenIds: frame.token_ids }],
      };
      // A delta of variant 0 can reveal a mismatch in any column; one of variant i only in column i.
      const divergences = run.divergences.slice();
      for (let i = 1; i < variants.length; i++) {
        if (divergences[i] != null || variants[i].done) continue;
        if (frame.variant !== 0 && frame.variant !== i) continue;
        divergences[i] = liveDivergence(variants[0], variants[i]);
      }
      return { ...run, variants, divergences, divergence: earliest(divergences) };
    }
    case "done": {
      const variants = run.variants.slice();
      const v = variants[frame.index];
      if (!v) return run;
      variants[frame.index] = { ...v, done: frame };
      if (frame.index === 0) return { ...run, variants };
      const divergences = run.divergences.slice();
      divergences[frame.index] = frame.diverges_at;
      return { ...run, variants, divergences, divergence: earliest(divergences) };
    }
    case "end":
      return { ...run, status: "done" };
    case "error":
      return {
        ...run,
        status: "error",
        error: new ApiError(frame.error.message, {
          status: 200,
          code: frame.error.code,
          param: frame.error.param,
        }),
      };
    default:
      return run;
  }
}

/** A real mismatch within what both columns have streamed so far (not "one is still shorter"). */
function liveDivergence(base: VariantStream, other: VariantStream): number | null {
  const a = base.pieces.flatMap((p) => p.tokenIds);
  const b = other.pieces.flatMap((p) => p.tokenIds);
  const n = Math.min(a.length, b.length);
  const d = divergesAt(a.slice(0, n), b.slice(0, n));
  return d;
}

/**
 * Runs POST /api/compare (one prompt, several steering variants, one seed, one batch) and streams its frames
 * into state. `stop()` aborts the request; starting a new run aborts the previous one.
 */
export function useCompare() {
  const [run, setRun] = useState<CompareRun>(IDLE);
  const controller = useRef<AbortController | null>(null);

  useEffect(() => () => controller.current?.abort(), []);

  const start = useCallback(async (input: CompareInput) => {
    controller.current?.abort();
    const ac = new AbortController();
    controller.current = ac;
    let current: CompareRun = {
      status: "running",
      seed: input.seed,
      variants: input.variants.map((v) => ({ label: v.label, pieces: [], done: null })),
      divergences: input.variants.map(() => null),
      divergence: null,
      error: null,
    };
    setRun(current);
    try {
      const { data } = await compareSteering({
        body: {
          model: input.model,
          messages: [{ role: "user", content: input.prompt }],
          variants: input.variants.map((v) => ({ label: v.label, steering: v.steering })),
          max_tokens: input.maxTokens,
          temperature: input.temperature,
          seed: input.seed,
          stream: true,
        },
        parseAs: "stream",
        signal: ac.signal,
      });
      const body = data as unknown as ReadableStream<Uint8Array>;
      for await (const text of sseData(body)) {
        if (ac.signal.aborted) break;
        let frame: CompareFrame;
        try {
          frame = JSON.parse(text) as CompareFrame;
        } catch {
          continue;
        }
        current = reduceFrame(current, frame);
        if (controller.current === ac) setRun(current);
      }
      if (controller.current === ac) {
        setRun((r) =>
          r.status === "running" ? { ...r, status: ac.signal.aborted ? "stopped" : "done" } : r,
        );
      }
    } catch (err) {
      if (controller.current !== ac) return;
      if (ac.signal.aborted) {
        setRun((r) => ({ ...r, status: "stopped" }));
        return;
      }
      const error = err instanceof ApiError ? err : ApiError.from(err, 0);
      setRun((r) => ({ ...r, status: "error", error }));
    }
  }, []);

  const stop = useCallback(() => {
    const ac = controller.current;
    if (!ac) return;
    ac.abort();
    setRun((r) => (r.status === "running" ? { ...r, status: "stopped" } : r));
  }, []);

  /** Forget the last run (its columns no longer match the ones being edited). */
  const reset = useCallback(() => {
    controller.current?.abort();
    controller.current = null;
    setRun(IDLE);
  }, []);

  return { run, start, stop, reset };
}
