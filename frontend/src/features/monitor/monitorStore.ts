/**
 * Live monitor traces: /ws/monitor frames grouped per request, with per-feature min/max/mean, batched so that
 * React sees at most one update per animation frame however fast frames arrive. Pure data + a small batcher;
 * tested in monitorStore.test.ts.
 */
import type { ActivationFrame } from "@/ws/frames.gen";

export interface FeatureStat {
  index: number;
  label: string | null;
  count: number;
  min: number;
  max: number;
  sum: number;
}

export interface RequestTrace {
  /** request_id, with "#choice" for choices after the first. */
  key: string;
  requestId: string;
  choice: number;
  /** When its first frame arrived here (ms since epoch); 0 for history loaded from the server. */
  startedAt: number;
  tokens: ActivationFrame[];
  stats: Record<number, FeatureStat>;
}

export interface MonitorSnapshot {
  /** Trace keys, newest first. */
  order: string[];
  traces: Record<string, RequestTrace>;
  /** Every label seen in a frame. */
  labels: Record<number, string>;
  /** Frames received since the page opened. */
  received: number;
}

export const EMPTY_SNAPSHOT: MonitorSnapshot = { order: [], traces: {}, labels: {}, received: 0 };
export const MAX_TRACES = 200;
export const MAX_TOKENS_PER_TRACE = 8192;

export function traceKey(frame: Pick<ActivationFrame, "request_id" | "choice">): string {
  return frame.choice ? `${frame.request_id}#${frame.choice}` : frame.request_id;
}

/** Apply a batch of frames: one new object per changed trace, untouched traces kept as they were. */
export function applyFrames(
  snap: MonitorSnapshot,
  frames: ActivationFrame[],
  now = Date.now(),
): MonitorSnapshot {
  if (frames.length === 0) return snap;
  const traces = { ...snap.traces };
  let order = snap.order;
  let labels = snap.labels; // copied only when a new label arrives (memoised views keep their props)
  const touched = new Map<string, { tokens: ActivationFrame[]; stats: Record<number, FeatureStat> }>();
  for (const f of frames) {
    const key = traceKey(f);
    let work = touched.get(key);
    if (!work) {
      const old = traces[key];
      if (!old) {
        traces[key] = {
          key,
          requestId: f.request_id,
          choice: f.choice,
          startedAt: now,
          tokens: [],
          stats: {},
        };
        order = [key, ...order.filter((k) => k !== key)];
      }
      const base = traces[key];
      work = { tokens: base.tokens.slice(), stats: { ...base.stats } };
      touched.set(key, work);
    }
    work.tokens.push(f);
    for (const a of f.activations) {
      if (a.label && labels[a.index] !== a.label) {
        if (labels === snap.labels) labels = { ...labels };
        labels[a.index] = a.label;
      }
      const s = work.stats[a.index];
      work.stats[a.index] = s
        ? {
            ...s,
            count: s.count + 1,
            min: Math.min(s.min, a.value),
            max: Math.max(s.max, a.value),
            sum: s.sum + a.value,
          }
        : { index: a.index, label: a.label ?? null, count: 1, min: a.value, max: a.value, sum: a.value };
    }
  }
  for (const [key, work] of touched) {
    const tokens =
      work.tokens.length > MAX_TOKENS_PER_TRACE ? work.tokens.slice(-MAX_TOKENS_PER_TRACE) : work.tokens;
    traces[key] = { ...traces[key], tokens, stats: work.stats };
  }
  if (order.length > MAX_TRACES) {
    for (const k of order.slice(MAX_TRACES)) delete traces[k];
    order = order.slice(0, MAX_TRACES);
  }
  return { order, traces, labels, received: snap.received + frames.length };
}

/** Server history (oldest first) as a snapshot; live traces with the same key keep their frames. */
export function fromHistory(
  history: { request_id: string; frames: ActivationFrame[] }[],
  live: MonitorSnapshot = EMPTY_SNAPSHOT,
): MonitorSnapshot {
  let snap: MonitorSnapshot = EMPTY_SNAPSHOT;
  for (const h of history) snap = applyFrames(snap, h.frames, 0);
  const traces = { ...snap.traces, ...live.traces };
  const order = [...live.order, ...snap.order.filter((k) => !live.traces[k])];
  return { order, traces, labels: { ...snap.labels, ...live.labels }, received: live.received };
}

export function mean(s: FeatureStat): number {
  return s.count ? s.sum / s.count : 0;
}

/** The value of `feature` at one token (0 when it is not among the token's captured features). */
export function valueAt(frame: ActivationFrame, feature: number | null): number {
  if (feature == null) return 0;
  for (const a of frame.activations) if (a.index === feature) return a.value;
  return 0;
}

/**
 * Neuronpedia's activation shading: opacity 0.05 + log10(1 + 9·ratio) of the max, 0 for no activation.
 * Returns the alpha (0..1) the token's background gets.
 */
export function highlightAlpha(value: number, max: number): number {
  if (!(value > 0) || !(max > 0)) return 0;
  const ratio = Math.min(1, value / max);
  return Math.min(1, 0.05 + Math.log10(1 + 9 * ratio));
}

/**
 * Collects frames and hands them over once per animation frame (or `schedule`), so a fast stream costs one
 * state update per paint.
 */
export class FrameBatcher {
  private pending: ActivationFrame[] = [];
  private scheduled = false;
  constructor(
    private readonly onFlush: (frames: ActivationFrame[]) => void,
    private readonly schedule: (cb: () => void) => void = (cb) =>
      typeof requestAnimationFrame === "function" ? requestAnimationFrame(cb) : setTimeout(cb, 16),
  ) {}

  push(frame: ActivationFrame): void {
    this.pending.push(frame);
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => this.flush());
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.onFlush(batch);
  }
}
