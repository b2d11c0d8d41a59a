import { createFileRoute } from "@tanstack/react-router";
import { SaesPage } from "@/features/saes/SaesPage";

/** URL state of the SAEs tab: the Hub repo being browsed and its layer filter; the SAE in the attach dialog. */
export interface SaesSearch {
  repo?: string;
  layer?: number;
  attach?: string;
}

export const Route = createFileRoute("/saes")({
  validateSearch: (s: Record<string, unknown>): SaesSearch => {
    const layer = Number(s.layer);
    return {
      repo: typeof s.repo === "string" && s.repo ? s.repo : undefined,
      layer: s.layer != null && Number.isInteger(layer) && layer >= 0 ? layer : undefined,
      attach: typeof s.attach === "string" && s.attach ? s.attach : undefined,
    };
  },
  component: SaesPage,
});
