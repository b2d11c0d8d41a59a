import { useMutation, useQueryClient } from "@tanstack/react-query";
import { queryKeys } from "@/api/queries";
import { deleteCacheEntry } from "@/client";
import { formatBytes } from "@/lib/format";

/** Delete a repo (model or SAE) from the server's Hub cache; the cache lists refresh after. */
export function useDeleteCached() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: async (repoId: string) => (await deleteCacheEntry({ path: { repo_id: repoId } })).data,
    onSettled: () => void qc.invalidateQueries({ queryKey: queryKeys.cacheAll }),
    meta: {
      success: (d) => {
        const out = d as { repo_id: string; freed_bytes: number };
        return `Deleted ${out.repo_id} (${formatBytes(out.freed_bytes)} freed)`;
      },
      errorTitle: "Could not delete it",
    },
  });
}
