import { useMutation, useQueryClient } from "@tanstack/react-query";
import { toast } from "sonner";
import { queryKeys } from "@/api/queries";
import type { SaeAttachIn } from "@/client";
import { attachSae, detachSae } from "@/client";

function useInvalidateSaeState() {
  const qc = useQueryClient();
  return () => {
    void qc.invalidateQueries({ queryKey: queryKeys.status });
    void qc.invalidateQueries({ queryKey: queryKeys.saeLabels });
    void qc.invalidateQueries({ queryKey: queryKeys.cacheAll });
  };
}

/** Attach an SAE (errors shown inline by the attach dialog). */
export function useAttachSae() {
  const invalidate = useInvalidateSaeState();
  return useMutation({
    mutationFn: async (body: SaeAttachIn) => (await attachSae({ body })).data,
    onSuccess: (out) => {
      const s = out.attached;
      if (s)
        toast.success(`Attached ${s.id} at layer ${s.layer}`, {
          description: `${s.d_sae.toLocaleString()} features`,
        });
    },
    onSettled: invalidate,
    meta: { inlineError: true },
  });
}

export function useDetachSae() {
  const invalidate = useInvalidateSaeState();
  return useMutation({
    mutationFn: async () => (await detachSae()).data,
    onSettled: invalidate,
    meta: { success: "SAE detached", errorTitle: "Could not detach the SAE" },
  });
}
