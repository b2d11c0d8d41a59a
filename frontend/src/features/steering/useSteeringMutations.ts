import { useMutation, useQueryClient } from "@tanstack/react-query";
import { queryKeys, statusQuery } from "@/api/queries";
import type { SteeringStateOut } from "@/client";
import { clearSteering, disableSteering, enableSteering, setSteering, updateSteering } from "@/client";

/**
 * Server-wide steering changes. Each answers with the new steering state, written straight into the status
 * query (the status bar and every tab read it), so the UI shows what the server applies without a refetch.
 */
export function useSteeringMutations() {
  const queryClient = useQueryClient();
  const apply = (state: SteeringStateOut) => {
    queryClient.setQueryData(statusQuery.queryKey, (old) =>
      old ? { ...old, steering: state, active_profile: state.profile ?? null } : old,
    );
    queryClient.invalidateQueries({ queryKey: queryKeys.profiles });
  };

  // Show a change at once (rows, status bar); the server's answer replaces it, an error refetches the truth.
  const optimistic = (body: {
    features?: { index: number; strength: number | null }[];
    mode?: "add" | "clamp";
  }) => {
    queryClient.setQueryData(statusQuery.queryKey, (old) => {
      if (!old) return old;
      const features = new Map(old.steering.features.map((f) => [f.index, f]));
      for (const f of body.features ?? []) {
        if (f.strength === null) features.delete(f.index);
        else features.set(f.index, { ...features.get(f.index), index: f.index, strength: f.strength });
      }
      return {
        ...old,
        steering: { ...old.steering, mode: body.mode ?? old.steering.mode, features: [...features.values()] },
      };
    });
  };
  const refetch = () => queryClient.invalidateQueries({ queryKey: statusQuery.queryKey });

  const patch = useMutation({
    mutationFn: async (body: {
      features?: { index: number; strength: number | null }[];
      mode?: "add" | "clamp";
    }) => (await updateSteering({ body: { features: body.features ?? [], mode: body.mode ?? null } })).data,
    onMutate: optimistic,
    onSuccess: apply,
    onError: refetch,
    meta: { errorTitle: "Could not change the steering" },
  });
  const replace = useMutation({
    mutationFn: async (body: { features: { index: number; strength: number }[]; mode: "add" | "clamp" }) =>
      (await setSteering({ body })).data,
    onSuccess: apply,
    meta: { errorTitle: "Could not apply the steering", success: "Steering applied" },
  });
  const clear = useMutation({
    mutationFn: async () => (await clearSteering()).data,
    onSuccess: apply,
    meta: { errorTitle: "Could not clear the steering" },
  });
  const toggle = useMutation({
    mutationFn: async (on: boolean) => (on ? await enableSteering() : await disableSteering()).data,
    onSuccess: apply,
    meta: {
      errorTitle: "Could not switch steering",
      success: (s) => `Steering ${(s as SteeringStateOut).enabled ? "on" : "off"}`,
    },
  });
  return { patch, replace, clear, toggle };
}
