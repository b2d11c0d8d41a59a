import { useMutation, useQueryClient } from "@tanstack/react-query";
import { toast } from "sonner";
import { queryKeys } from "@/api/queries";
import type { ModelLoadIn } from "@/client";
import { loadModel, unloadModel } from "@/client";

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
