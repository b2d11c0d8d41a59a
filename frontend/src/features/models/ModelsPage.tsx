import { useQuery } from "@tanstack/react-query";
import { getRouteApi } from "@tanstack/react-router";
import { statusQuery } from "@/api/queries";
import { PageHeader } from "@/components/PageHeader";
import { DownloadList } from "@/features/downloads/DownloadJobRow";
import { useDownloads } from "@/features/downloads/useDownloads";
import { CachedModelList } from "./CachedModelList";
import { DownloadModelForm } from "./DownloadModelForm";
import { LoadedModelCard } from "./LoadedModelCard";
import { LoadModelDialog } from "./LoadModelDialog";
import type { Precision } from "./precision";

const route = getRouteApi("/models");

/** The Models tab: loaded model, download by Hub id, download jobs, cached models; load dialog via ?load=. */
export function ModelsPage() {
  const search = route.useSearch();
  const navigate = route.useNavigate();
  const { data: status } = useQuery(statusQuery);
  const { data: jobs } = useDownloads();
  const defaultPrecision: Precision =
    status?.memory.device && status.memory.device !== "cpu" ? "bf16" : "fp32";
  const set = (patch: Partial<typeof search>) =>
    navigate({ search: (s) => ({ ...s, ...patch }), replace: true });

  return (
    <>
      <PageHeader
        title="Models"
        subtitle="Download Hugging Face models, then load one at the precision that fits your memory"
      />
      <div className="flex flex-col gap-5">
        <LoadedModelCard onLoad={(m) => set({ load: m })} />
        <DownloadModelForm
          value={search.download ?? ""}
          onValueChange={(v) => set({ download: v || undefined })}
          preview={search.preview}
          onPreviewChange={(repo) => set({ preview: repo })}
          onPrecisionChosen={(p) => set({ precision: p })}
        />
        <DownloadList title="Model downloads" jobs={(jobs ?? []).filter((j) => j.kind === "model")} />
        <CachedModelList onLoad={(m) => set({ load: m })} />
      </div>
      {search.load && (
        <LoadModelDialog
          model={search.load}
          precision={search.precision ?? defaultPrecision}
          onPrecisionChange={(p) => set({ precision: p })}
          onClose={() => set({ load: undefined, precision: undefined })}
        />
      )}
    </>
  );
}
