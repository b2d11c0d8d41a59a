/** Monitor frames and config for component tests, typed by the generated frame and client types. */
import type { MonitorConfigOut } from "@/client";
import type { ActivationFrame } from "@/ws/frames.gen";

export function activationFrame(
  request_id: string,
  position: number,
  acts: [number, number][],
  over: Partial<ActivationFrame> = {},
): ActivationFrame {
  return {
    type: "activation",
    request_id,
    choice: 0,
    position,
    token_id: position,
    token: `t${position}`,
    phase: "generated",
    activations: acts.map(([index, value]) => ({
      index,
      value,
      label: index === 16 ? "CAPS" : `feature ${index}`,
    })),
    ...over,
  };
}

export function monitorConfig(over: Partial<MonitorConfigOut> = {}): MonitorConfigOut {
  return {
    enabled: true,
    paused: false,
    features: null,
    top_k: 10,
    history_requests: 100,
    history_tokens_per_request: 4096,
    ...over,
  };
}
