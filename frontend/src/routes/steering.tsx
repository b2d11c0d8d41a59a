import { createFileRoute } from "@tanstack/react-router";
import { SteeringPage } from "@/features/steering/SteeringPage";

export interface SteeringSearch {
  /** Selected features: "16:4,40:-2.5,7:1~" (~ = muted); see features/steering/features.ts. */
  features?: string;
  /** The playground's prompt. */
  prompt?: string;
  /** The playground's columns: "u|s|p:loud|c:16:4;40:-2" (see features/steering/playgroundVariants.ts). */
  columns?: string;
}

export const Route = createFileRoute("/steering")({
  validateSearch: (search: Record<string, unknown>): SteeringSearch => ({
    features: typeof search.features === "string" ? search.features : undefined,
    prompt: typeof search.prompt === "string" ? search.prompt : undefined,
    columns: typeof search.columns === "string" && search.columns ? search.columns : undefined,
  }),
  component: SteeringPage,
});
