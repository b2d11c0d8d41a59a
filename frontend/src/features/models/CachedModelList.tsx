import { useQuery } from "@tanstack/react-query";
import { BoxIcon, PlayIcon, Trash2Icon } from "lucide-react";
import { useState } from "react";
import { errorMessage } from "@/api/errors";
import { cacheQuery, statusQuery } from "@/api/queries";
import type { CachedRepoOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/confirm-dialog";
import { Tooltip } from "@/components/ui/tooltip";
import { formatAgo, formatBytes } from "@/lib/format";
import { useDeleteCached } from "./useModelActions";

function CachedModelRow({
  repo,
  loaded,
  onLoad,
  onDelete,
}: {
  repo: CachedRepoOut;
  loaded: boolean;
  onLoad: () => void;
  onDelete: () => void;
}) {
  const meta = [
    formatBytes(repo.size_bytes),
    `${repo.nb_files} files`,
    `last used ${formatAgo(repo.last_used)}`,
  ];
  const blocked = repo.in_use || repo.downloading;
  return (
    <li className="flex flex-wrap items-center gap-4 rounded-[10px] border border-control/30 bg-surface/30 p-4">
      <div
        className="flex size-10 items-center justify-center rounded-lg bg-accent/10 text-accent"
        aria-hidden="true"
      >
        <BoxIcon className="size-5" />
      </div>
      <div className="min-w-0 flex-1">
        <div className="text-[15px] font-semibold text-title">{repo.name}</div>
        <div className="text-xs text-muted">{meta.join(" • ")}</div>
        <div className="num text-[11px] text-muted">{repo.repo_id}</div>
      </div>
      {loaded ? (
        <Badge tone="success">Loaded</Badge>
      ) : repo.downloading ? (
        <Badge tone="ready">Downloading</Badge>
      ) : (
        <Badge tone="ready">Ready</Badge>
      )}
      {!loaded && (
        <Button
          variant="action"
          onClick={onLoad}
          disabled={repo.downloading}
          aria-label={`Load ${repo.repo_id}`}
        >
          <PlayIcon aria-hidden="true" /> Load
        </Button>
      )}
      <Tooltip content={blocked ? "In use or downloading: unload or wait first" : "Delete from the cache"}>
        <span>
          <Button
            variant="ghost"
            onClick={onDelete}
            disabled={blocked}
            aria-label={`Delete ${repo.repo_id} from the cache`}
          >
            <Trash2Icon aria-hidden="true" />
          </Button>
        </span>
      </Tooltip>
    </li>
  );
}

/** "Your Models (N)": models in the server's Hub cache, with size and last use; load or delete each. */
export function CachedModelList({ onLoad }: { onLoad: (repoId: string) => void }) {
  const { data, error, isPending } = useQuery(cacheQuery("model"));
  const { data: status } = useQuery(statusQuery);
  const del = useDeleteCached();
  const [toDelete, setToDelete] = useState<CachedRepoOut | null>(null);
  const loadedSource = status?.model?.source;

  return (
    <section aria-label="Your models" className="card">
      <h2 className="mb-4 text-base font-semibold text-title">
        Your Models {data && <span className="num text-muted">({data.count})</span>}
      </h2>
      {isPending ? (
        <p className="py-10 text-center text-sm text-muted">Loading the cache…</p>
      ) : error ? (
        <p className="py-10 text-center text-sm text-danger" role="alert">
          {errorMessage(error)}
        </p>
      ) : data.data.length === 0 ? (
        <p className="py-10 text-center text-sm text-muted">
          No models in the cache yet. Download one above, or load the bundled demo by its name, millm-demo.
        </p>
      ) : (
        <ul className="flex flex-col gap-3">
          {data.data.map((r) => (
            <CachedModelRow
              key={r.repo_id}
              repo={r}
              loaded={r.repo_id === loadedSource}
              onLoad={() => onLoad(r.repo_id)}
              onDelete={() => setToDelete(r)}
            />
          ))}
        </ul>
      )}
      <ConfirmDialog
        open={toDelete != null}
        onOpenChange={(o) => !o && setToDelete(null)}
        title={`Delete ${toDelete?.repo_id ?? ""}?`}
        description={`This removes all its files (${formatBytes(toDelete?.size_bytes)}) from the server's cache. Loading it again means downloading it again.`}
        confirmLabel="Delete"
        pending={del.isPending}
        onConfirm={() => toDelete && del.mutate(toDelete.repo_id, { onSettled: () => setToDelete(null) })}
      />
    </section>
  );
}
