import { useQuery } from "@tanstack/react-query";
import { LayersIcon, LinkIcon, Trash2Icon } from "lucide-react";
import { useState } from "react";
import { cacheQuery, statusQuery } from "@/api/queries";
import type { CachedRepoOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { CachedRepoSummary } from "@/features/cache/CachedRepoSummary";
import { CacheListBody } from "@/features/cache/CacheListBody";
import { DeleteCachedDialog } from "@/features/cache/DeleteCachedDialog";
import { layerFromPath, saeSource } from "./saePath";

/** "Your SAEs": SAE repos in the server's cache, one row per SAE folder, each attachable. */
export function CachedSaeList({ onAttach }: { onAttach: (source: string) => void }) {
  const { data, error } = useQuery(cacheQuery("sae"));
  const { data: status } = useQuery(statusQuery);
  const [toDelete, setToDelete] = useState<CachedRepoOut | null>(null);
  const attached = status?.sae;
  const count = data?.data.reduce((n, r) => n + Math.max(1, r.sae_paths.length), 0);

  return (
    <section aria-label="Your SAEs" className="card">
      <h2 className="mb-4 text-base font-semibold text-title">
        Your SAEs {count != null && <span className="num text-muted">({count})</span>}
      </h2>
      <CacheListBody
        repos={data?.data}
        error={error}
        empty="No SAEs in the cache yet. Download one above, or attach the bundled demo SAE by its name, millm-demo-sae."
      >
        {(repos) =>
          repos.map((repo) => (
            <li key={repo.repo_id} className="rounded-[10px] border border-control/30 bg-surface/30 p-4">
              <div className="flex flex-wrap items-center gap-4">
                <CachedRepoSummary
                  repo={repo}
                  icon={<LayersIcon className="size-5" />}
                  iconClassName="bg-attached/10 text-attached"
                />
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
          ))
        }
      </CacheListBody>
      <DeleteCachedDialog
        repo={toDelete}
        onClose={() => setToDelete(null)}
        consequence={(size) => `This removes all its SAEs (${size}) from the server's cache.`}
      />
    </section>
  );
}
