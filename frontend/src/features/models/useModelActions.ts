import { useMutation, useQueryClient } from "@tanstack/react-query";
import { toast } from "sonner";
import { queryKeys } from "@/api/queries";
import type { ModelLoadIn } from "@/client";
import { deleteCacheEntry, loadModel, unloadModel } from "@/client";
import { formatBytes } from "@/lib/format";

/** Load (or switch to) a model. Errors are shown by the load dialog itself (inline, with retry). */
export function useLoadModel() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: async (body: ModelLoadIn) => (await loadModel({ body })).data,
    onSuccess: (out) => {
      toast.success(`Loaded ${out.model.id}`, { description: out.sae_detached ?? undefined });
    },
    onSettled: () => {
      void qc.invalidateQueries({ queryKey: queryKeys.status });
      void qc.invalidateQueries({ queryKey: queryKeys.cacheAll });
    },
    meta: { inlineError: true },
  });
}

export function useUnloadModel() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: async () => {
      await unloadModel();
    },
    onSettled: () => {
      void qc.invalidateQueries({ queryKey: queryKeys.status });
      void qc.invalidateQueries({ queryKey: queryKeys.cacheAll });
    },
    meta: { success: "Model unloaded", errorTitle: "Could not unload the model" },
  });
}

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
