/**
 * One type per channel, from the generated frames.gen.ts (frames.schema.json, `make openapi`).
 * Use these with useWebSocket / SSE readers: `useWebSocket<WsMonitorFrame>({ path: "/ws/monitor", … })`.
 */
import type { ErrorResponse, MillmFrames } from "./frames.gen";

export type WsDownloadsFrame = NonNullable<MillmFrames["ws_downloads"]>;
export type WsMonitorFrame = NonNullable<MillmFrames["ws_monitor"]>;
export type SseDownloadsFrame = NonNullable<MillmFrames["sse_downloads"]>;
export type SseChatCompletionFrame = NonNullable<MillmFrames["sse_chat_completion"]>;
export type SseCompletionFrame = NonNullable<MillmFrames["sse_completion"]>;
export type SseCompareFrame = NonNullable<MillmFrames["sse_compare"]>;

export function isErrorFrame(frame: unknown): frame is ErrorResponse {
  return typeof frame === "object" && frame !== null && "error" in frame;
}
