import { createFileRoute } from "@tanstack/react-router";
import { MonitorPage } from "@/features/monitor/MonitorPage";

export interface MonitorSearch {
  /** The request shown (absent: follow the latest). */
  request?: string;
  /** The feature whose activation colours the tokens. */
  focus?: number;
  /** Extra charted features, "16,40". */
  chart?: string;
}

export const Route = createFileRoute("/monitor")({
  validateSearch: (s: Record<string, unknown>): MonitorSearch => ({
    request: typeof s.request === "string" && s.request ? s.request : undefined,
    focus:
      Number.isInteger(Number(s.focus)) && s.focus !== undefined && s.focus !== ""
        ? Number(s.focus)
        : undefined,
    chart: typeof s.chart === "string" && s.chart ? s.chart : undefined,
  }),
  component: MonitorPage,
});
