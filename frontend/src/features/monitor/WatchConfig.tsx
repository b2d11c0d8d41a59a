import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { errorMessage } from "@/api/errors";
import { monitorConfigQuery, queryKeys } from "@/api/queries";
import { setMonitorConfig } from "@/client";
import { Button } from "@/components/ui/button";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Switch } from "@/components/ui/switch";
import { parseFeatureList } from "@/features/steering/features";

/** What the monitor captures: on/off, top-k strongest features per token, or a list of selected features. */
export function WatchConfig({ dSae, steeringFeatures }: { dSae: number; steeringFeatures: number[] }) {
  const { data: config } = useQuery(monitorConfigQuery);
  const queryClient = useQueryClient();
  const [mode, setMode] = useState<"topk" | "features">("topk");
  const [topK, setTopK] = useState("10");
  const [list, setList] = useState("");
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!config) return;
    setMode(config.features?.length ? "features" : "topk");
    setTopK(String(config.top_k));
    setList((config.features ?? []).join(", "));
  }, [config]);

  const save = useMutation({
    mutationFn: async (body: { enabled?: boolean; features?: number[] | null; top_k?: number }) =>
      (await setMonitorConfig({ body })).data,
    onSuccess: (data) => queryClient.setQueryData(queryKeys.monitorConfig, data),
    meta: { inlineError: true },
  });

  const apply = () => {
    setError(null);
    if (mode === "topk") {
      const k = Number(topK);
      if (!Number.isInteger(k) || k < 1 || k > 256) {
        setError("Top-k is a whole number from 1 to 256.");
        return;
      }
      save.mutate({ features: null, top_k: k });
    } else {
      const { entries, errors } = parseFeatureList(list, dSae);
      if (errors.length) {
        setError(errors.map((e) => `${e.entry}: ${e.message}`).join("; "));
        return;
      }
      if (!entries.length) {
        setError("List at least one feature index.");
        return;
      }
      save.mutate({ features: entries.map((e) => e.index) });
    }
  };

  return (
    <section aria-labelledby="watch-title" className="card flex flex-col gap-3">
      <div className="flex items-center justify-between">
        <h2 id="watch-title" className="text-sm font-semibold text-title">
          What to watch
        </h2>
        <div className="flex items-center gap-2">
          <Switch
            id="monitoring-switch"
            aria-label="Monitoring"
            checked={config?.enabled ?? false}
            disabled={!config || save.isPending}
            onCheckedChange={(on) => save.mutate({ enabled: on })}
          />
          <Label htmlFor="monitoring-switch" className="mb-0 text-xs">
            Monitoring
          </Label>
        </div>
      </div>
      <fieldset className="flex flex-col gap-2">
        <legend className="sr-only">Capture</legend>
        <label className="flex items-center gap-2 text-sm text-body">
          <input type="radio" name="watch-mode" checked={mode === "topk"} onChange={() => setMode("topk")} />
          Top-k strongest features per token
        </label>
        {mode === "topk" && (
          <div className="ml-6 w-28">
            <Label htmlFor="watch-topk">k (1–256)</Label>
            <Input
              id="watch-topk"
              className="num"
              inputMode="numeric"
              value={topK}
              onChange={(e) => setTopK(e.target.value)}
            />
          </div>
        )}
        <label className="flex items-center gap-2 text-sm text-body">
          <input
            type="radio"
            name="watch-mode"
            checked={mode === "features"}
            onChange={() => setMode("features")}
          />
          Selected features
        </label>
        {mode === "features" && (
          <div className="ml-6 flex flex-col gap-1">
            <Label htmlFor="watch-features">Feature indices</Label>
            <Input
              id="watch-features"
              className="num"
              placeholder="16, 40, 102"
              value={list}
              onChange={(e) => setList(e.target.value)}
            />
            {steeringFeatures.length > 0 && (
              <Button
                variant="ghost"
                size="sm"
                className="self-start text-accent"
                onClick={() => setList(steeringFeatures.join(", "))}
              >
                Use the steered features
              </Button>
            )}
          </div>
        )}
      </fieldset>
      {(error || save.error) && (
        <p role="alert" className="text-xs text-danger">
          {error ?? errorMessage(save.error)}
        </p>
      )}
      <div className="flex items-center gap-2">
        <Button variant="action" onClick={apply} disabled={save.isPending}>
          Apply
        </Button>
        {config && (
          <span className="text-xs text-muted">
            Now:{" "}
            {config.enabled
              ? config.features?.length
                ? `features ${config.features.join(", ")}`
                : `top-${config.top_k}`
              : "off"}
            {config.paused ? " (paused)" : ""}; keeps {config.history_requests} requests
          </span>
        )}
      </div>
    </section>
  );
}
