import { createFileRoute } from "@tanstack/react-router";
import { ModelsPage } from "@/features/models/ModelsPage";
import { PRECISIONS, type Precision } from "@/features/models/precision";

/**
 * URL state of the Models tab: the Hub id typed in the download box, the preview dialog's repo, and the load
 * dialog's model + precision.
 */
export interface ModelsSearch {
  download?: string;
  load?: string;
  precision?: Precision;
  /** The Hub repo whose preview dialog is open. */
  preview?: string;
}

export const Route = createFileRoute("/models")({
  validateSearch: (s: Record<string, unknown>): ModelsSearch => ({
    download: typeof s.download === "string" && s.download ? s.download : undefined,
    load: typeof s.load === "string" && s.load ? s.load : undefined,
    preview: typeof s.preview === "string" && s.preview ? s.preview : undefined,
    precision: PRECISIONS.some((p) => p.value === s.precision) ? (s.precision as Precision) : undefined,
  }),
  component: ModelsPage,
});
