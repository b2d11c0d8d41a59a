import { useQuery } from "@tanstack/react-query";
import { BoxIcon, PlayIcon, Trash2Icon } from "lucide-react";
import { useState } from "react";
import { cacheQuery, statusQuery } from "@/api/queries";
import type { CachedRepoOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Tooltip } from "@/components/ui/tooltip";
import { CachedRepoSummary } from "@/features/cache/CachedRepoSummary";
import { CacheListBody } from "@/features/cache/CacheListBody";
import { DeleteCachedDialog } from "@/features/cache/DeleteCachedDialog";

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
  const blocked = repo.in_use || repo.downloading;
  return (
    <li className="flex flex-wrap items-center gap-4 rounded-[10px] border border-control/30 bg-surface/30 p-4">
      <CachedRepoSummary
        repo={repo}
        icon={<BoxIcon className="size-5" />}
        iconClassName="bg-accent/10 text-accent"
      />
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
  const { data, error } = useQuery(cacheQuery("model"));
  const { data: status } = useQuery(statusQuery);
  const [toDelete, setToDelete] = useState<CachedRepoOut | null>(null);
  const loadedSource = status?.model?.source;

  return (
    <section aria-label="Your models" className="card">
      <h2 className="mb-4 text-base font-semibold text-title">
        Your Models {data && <span className="num text-muted">({data.count})</span>}
      </h2>
      <CacheListBody
        repos={data?.data}
        error={error}
        empty="No models in the cache yet. Download one above, or load the bundled demo by its name, millm-demo."
      >
        {(repos) =>
          repos.map((r) => (
            <CachedModelRow
              key={r.repo_id}
              repo={r}
              loaded={r.repo_id === loadedSource}
              onLoad={() => onLoad(r.repo_id)}
              onDelete={() => setToDelete(r)}
            />
          ))
        }
      </CacheListBody>
      <DeleteCachedDialog
        repo={toDelete}
        onClose={() => setToDelete(null)}
        consequence={(size) =>
          `This removes all its files (${size}) from the server's cache. Loading it again means downloading it again.`
        }
      />
    </section>
  );
}
