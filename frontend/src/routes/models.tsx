import { createFileRoute } from "@tanstack/react-router";
import { ModelsPage } from "@/features/models/ModelsPage";
import { PRECISIONS, type Precision } from "@/features/models/precision";

/** URL state of the Models tab: the Hub id typed in the download box, and the load dialog's model + precision. */
export interface ModelsSearch {
  download?: string;
  load?: string;
  precision?: Precision;
}

export const Route = createFileRoute("/models")({
  validateSearch: (s: Record<string, unknown>): ModelsSearch => ({
    download: typeof s.download === "string" && s.download ? s.download : undefined,
    load: typeof s.load === "string" && s.load ? s.load : undefined,
    precision: PRECISIONS.some((p) => p.value === s.precision) ? (s.precision as Precision) : undefined,
  }),
  component: ModelsPage,
});
