import { useQuery } from "@tanstack/react-query";
import { getRouteApi } from "@tanstack/react-router";
import { statusQuery } from "@/api/queries";
import { PageHeader } from "@/components/PageHeader";
import { DownloadList } from "@/features/downloads/DownloadJobRow";
import { useDownloads } from "@/features/downloads/useDownloads";
import { AttachBySourceCard } from "./AttachBySourceCard";
import { AttachedSaeCard } from "./AttachedSaeCard";
import { AttachSaeDialog } from "./AttachSaeDialog";
import { CachedSaeList } from "./CachedSaeList";
import { DownloadSaeForm } from "./DownloadSaeForm";
import { RepoSaeBrowser } from "./RepoSaeBrowser";
import { layerFromPath } from "./saePath";

const route = getRouteApi("/saes");

/** The SAEs tab: attached SAE (or attach by name), download, download jobs, cached SAEs; attach dialog via ?attach=. */
export function SaesPage() {
  const search = route.useSearch();
  const navigate = route.useNavigate();
  const { data: status } = useQuery(statusQuery);
  const { data: jobs } = useDownloads();
  const set = (patch: Partial<typeof search>) =>
    navigate({ search: (s) => ({ ...s, ...patch }), replace: true });
  const attach = (source: string) => set({ attach: source });

  return (
    <>
      <PageHeader
        title="SAEs"
        subtitle="Browse, download and attach Sparse Autoencoders to the loaded model"
      />
      <div className="flex flex-col gap-5">
        {status?.sae ? (
          <AttachedSaeCard sae={status.sae} status={status} />
        ) : status ? (
          <AttachBySourceCard status={status} onAttach={attach} />
        ) : null}
        <DownloadSaeForm initialRepo={search.repo} onBrowse={(repo) => set({ repo, layer: undefined })} />
        {search.repo && (
          <RepoSaeBrowser
            repoId={search.repo}
            layer={search.layer}
            onLayerChange={(layer) => set({ layer })}
            onAttach={attach}
            onClose={() => set({ repo: undefined, layer: undefined })}
          />
        )}
        <DownloadList title="SAE downloads" jobs={(jobs ?? []).filter((j) => j.kind === "sae")} />
        <CachedSaeList onAttach={attach} />
      </div>
      {search.attach && (
        <AttachSaeDialog
          source={search.attach}
          ownLayer={layerFromPath(search.attach.split(":").slice(1).join(":"))}
          onClose={() => set({ attach: undefined })}
        />
      )}
    </>
  );
}
