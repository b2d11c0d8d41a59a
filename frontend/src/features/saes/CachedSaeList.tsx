import { useQuery } from "@tanstack/react-query";
import { LayersIcon, LinkIcon, Trash2Icon } from "lucide-react";
import { useState } from "react";
import { errorMessage } from "@/api/errors";
import { cacheQuery, statusQuery } from "@/api/queries";
import type { CachedRepoOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/confirm-dialog";
import { useDeleteCached } from "@/features/models/useModelActions";
import { formatAgo, formatBytes } from "@/lib/format";
import { layerFromPath, saeSource } from "./saePath";

/** "Your SAEs": SAE repos in the server's cache, one row per SAE folder, each attachable. */
export function CachedSaeList({ onAttach }: { onAttach: (source: string) => void }) {
  const { data, error, isPending } = useQuery(cacheQuery("sae"));
  const { data: status } = useQuery(statusQuery);
  const del = useDeleteCached();
  const [toDelete, setToDelete] = useState<CachedRepoOut | null>(null);
  const attached = status?.sae;
  const count = data?.data.reduce((n, r) => n + Math.max(1, r.sae_paths.length), 0);

  return (
    <section aria-label="Your SAEs" className="card">
      <h2 className="mb-4 text-base font-semibold text-title">
        Your SAEs {count != null && <span className="num text-muted">({count})</span>}
      </h2>
      {isPending ? (
        <p className="py-10 text-center text-sm text-muted">Loading the cache…</p>
      ) : error ? (
        <p className="py-10 text-center text-sm text-danger" role="alert">
          {errorMessage(error)}
        </p>
      ) : data.data.length === 0 ? (
        <p className="py-10 text-center text-sm text-muted">
          No SAEs in the cache yet. Download one above, or attach the bundled demo SAE by its name,
          millm-demo-sae.
        </p>
      ) : (
        <ul className="flex flex-col gap-3">
          {data.data.map((repo) => (
            <li key={repo.repo_id} className="rounded-[10px] border border-control/30 bg-surface/30 p-4">
              <div className="flex flex-wrap items-center gap-4">
                <div
                  className="flex size-10 items-center justify-center rounded-lg bg-attached/10 text-attached"
                  aria-hidden="true"
                >
                  <LayersIcon className="size-5" />
                </div>
                <div className="min-w-0 flex-1">
                  <div className="text-[15px] font-semibold text-title">{repo.name}</div>
                  <div className="text-xs text-muted">
                    {[
                      formatBytes(repo.size_bytes),
                      `${repo.nb_files} files`,
                      `last used ${formatAgo(repo.last_used)}`,
                    ].join(" • ")}
                  </div>
                  <div className="num text-[11px] text-muted">{repo.repo_id}</div>
                </div>
                <Button
                  variant="ghost"
                  onClick={() => setToDelete(repo)}
                  disabled={repo.in_use || repo.downloading}
                  aria-label={`Delete ${repo.repo_id} from the cache`}
                >
                  <Trash2Icon aria-hidden="true" />
                </Button>
              </div>
              <ul className="mt-3 flex flex-col gap-2" aria-label={`SAEs in ${repo.repo_id}`}>
                {(repo.sae_paths.length ? repo.sae_paths : [""]).map((p) => {
                  const source = saeSource(repo.repo_id, p);
                  const isAttached = attached?.repo_id === repo.repo_id && (attached.path ?? "") === p;
                  const layer = layerFromPath(p);
                  return (
                    <li
                      key={p}
                      className="flex flex-wrap items-center gap-3 rounded-lg bg-surface/40 px-3 py-2"
                    >
                      <span className="num min-w-0 flex-1 truncate text-sm text-body">
                        {p || "(repo root)"}
                      </span>
                      {layer != null && <span className="num text-xs text-label">layer {layer}</span>}
                      {isAttached ? (
                        <Badge tone="attached">Attached</Badge>
                      ) : (
                        <Button
                          variant="action"
                          onClick={() => onAttach(source)}
                          disabled={!status?.model}
                          aria-label={`Attach ${source}`}
                        >
                          <LinkIcon aria-hidden="true" /> Attach
                        </Button>
                      )}
                    </li>
                  );
                })}
              </ul>
            </li>
          ))}
        </ul>
      )}
      <ConfirmDialog
        open={toDelete != null}
        onOpenChange={(o) => !o && setToDelete(null)}
        title={`Delete ${toDelete?.repo_id ?? ""}?`}
        description={`This removes all its SAEs (${formatBytes(toDelete?.size_bytes)}) from the server's cache.`}
        confirmLabel="Delete"
        pending={del.isPending}
        onConfirm={() => toDelete && del.mutate(toDelete.repo_id, { onSettled: () => setToDelete(null) })}
      />
    </section>
  );
}
