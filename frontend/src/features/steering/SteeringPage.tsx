import { useQuery } from "@tanstack/react-query";
import { getRouteApi } from "@tanstack/react-router";
import { useMemo } from "react";
import { statusQuery } from "@/api/queries";
import type { LoadedModelOut, SaeOut, SteeringStateOut } from "@/client";
import { PageHeader } from "@/components/PageHeader";
import { RequiresSae } from "@/components/RequiresModel";
import { Button } from "@/components/ui/button";
import { Label } from "@/components/ui/label";
import { Switch } from "@/components/ui/switch";
import { cn } from "@/lib/cn";
import { AddByIndex, PasteList } from "./AddFeatures";
import { FeatureRowItem } from "./FeatureRowItem";
import { decodeRows, encodeRows, type FeatureRow, mergeApplied } from "./features";
import { LabelSearch } from "./LabelSearch";
import { Playground } from "./Playground";
import { SaveProfileButton } from "./SaveProfileDialog";
import { useSteeringMutations } from "./useSteeringMutations";

const route = getRouteApi("/steering");

export function SteeringPage() {
  return (
    <>
      <PageHeader
        title="Steering"
        subtitle="Turn SAE features up or down for every request, and compare steered with unsteered answers"
      />
      <RequiresSae what="steer features">
        {(sae, model) => <SteeringWorkbench sae={sae} model={model} />}
      </RequiresSae>
    </>
  );
}

function SteeringWorkbench({ sae, model }: { sae: SaeOut; model: LoadedModelOut }) {
  const { data: status } = useQuery(statusQuery);
  const steering = status?.steering as SteeringStateOut;
  const search = route.useSearch();
  const navigate = route.useNavigate();
  const { patch, clear, toggle, replace } = useSteeringMutations();

  const urlRows = useMemo(() => decodeRows(search.features), [search.features]);
  // The selection: the URL's rows, with what the server applies merged in (its strengths win).
  const rows = useMemo(
    () => mergeApplied(search.features === undefined ? [] : urlRows, steering.features),
    [search.features, urlRows, steering.features],
  );
  const applied = useMemo(() => new Map(steering.features.map((f) => [f.index, f])), [steering.features]);
  const pendingApply = rows.filter((r) => !r.muted && !applied.has(r.index));

  // Every change writes the whole selection (server-applied rows included) into the URL, so a reload or a
  // shared link shows the same rows; "" is an explicit empty selection.
  const setRows = (next: FeatureRow[]) =>
    navigate({ search: (s) => ({ ...s, features: encodeRows(next) }), replace: true });

  const update = (index: number, change: Partial<FeatureRow>) =>
    setRows(rows.map((r) => (r.index === index ? { ...r, ...change } : r)));

  const addRows = (entries: { index: number; strength: number }[]) => {
    const known = new Set(rows.map((r) => r.index));
    const next = [...rows];
    for (const e of entries) {
      if (known.has(e.index)) {
        const i = next.findIndex((r) => r.index === e.index);
        next[i] = { ...next[i], strength: e.strength, muted: false };
      } else next.push({ index: e.index, strength: e.strength, muted: false });
    }
    setRows(next);
    patch.mutate({ features: entries.map((e) => ({ index: e.index, strength: e.strength })) });
  };

  const activeFeatures = rows.filter((r) => !r.muted);
  const playgroundSteering = {
    features: activeFeatures.map((r) => ({ index: r.index, strength: r.strength })),
    mode: steering.mode,
  };

  return (
    <div className="grid gap-5 lg:grid-cols-[minmax(340px,420px)_1fr]">
      <div className="flex flex-col gap-5">
        <section aria-labelledby="add-title" className="card flex flex-col gap-4">
          <h2 id="add-title" className="text-sm font-semibold text-title">
            Add features
          </h2>
          <AddByIndex dSae={sae.d_sae} onAdd={(index) => addRows([{ index, strength: 0 }])} />
          <PasteList dSae={sae.d_sae} onAdd={addRows} />
          <div className="flex flex-col gap-1">
            <span className="text-xs font-medium text-label">
              Search labels ({sae.labelled_features} labelled)
            </span>
            <LabelSearch
              selected={new Set(rows.map((r) => r.index))}
              labelledFeatures={sae.labelled_features ?? 0}
              onAdd={(index) => addRows([{ index, strength: 0 }])}
            />
          </div>
        </section>
      </div>

      <div className="flex flex-col gap-5">
        <section aria-labelledby="features-title" className="card flex flex-col gap-4">
          <div className="flex flex-wrap items-center gap-3">
            <h2 id="features-title" className="text-sm font-semibold text-title">
              Selected features ({rows.length})
            </h2>
            <span className="num text-xs text-attached">
              {sae.id} · L{sae.layer} · {sae.d_sae} features
            </span>
            <div className="ml-auto flex flex-wrap items-center gap-3">
              <label className="flex items-center gap-2 text-xs text-label">
                Mode
                <select
                  aria-label="Steering mode"
                  className="rounded-md border border-control/50 bg-surface/50 px-2 py-1 text-xs text-body"
                  value={steering.mode}
                  onChange={(e) => patch.mutate({ mode: e.target.value as "add" | "clamp" })}
                >
                  <option value="add">add (h += s·d)</option>
                  <option value="clamp">clamp (pin activation)</option>
                </select>
              </label>
              <div className="flex items-center gap-2">
                <Switch
                  id="steering-switch"
                  aria-label="Steering"
                  checked={steering.enabled}
                  disabled={toggle.isPending}
                  onCheckedChange={(on) => toggle.mutate(on)}
                />
                <Label htmlFor="steering-switch" className="mb-0 text-xs">
                  Steering
                </Label>
              </div>
            </div>
          </div>
          <div
            className={cn(
              "flex items-center gap-2 rounded-lg border px-3 py-2 text-sm",
              steering.enabled
                ? "border-success-tint/30 bg-success-tint/10 text-success"
                : "border-warning/30 bg-warning/10 text-warning",
            )}
            role="status"
          >
            <span
              aria-hidden="true"
              className={cn(
                "size-2 rounded-full",
                steering.enabled ? "animate-pulse-dot bg-success" : "bg-warning",
              )}
            />
            {steering.enabled
              ? `Steering is ON: ${steering.features.length} feature${steering.features.length === 1 ? "" : "s"} applied to every request${steering.profile ? ` (profile ${steering.profile})` : ""}`
              : "Steering is OFF: requests are not steered (the features are kept)"}
          </div>
          {pendingApply.length > 0 && (
            <div className="flex items-center justify-between gap-3 rounded-lg border border-warning/30 bg-warning/5 px-3 py-2 text-xs text-warning">
              {pendingApply.length} selected feature{pendingApply.length === 1 ? " is" : "s are"} not applied
              on the server (from a link or another change).
              <Button
                variant="action"
                size="sm"
                onClick={() =>
                  replace.mutate({
                    features: activeFeatures.map((r) => ({ index: r.index, strength: r.strength })),
                    mode: steering.mode,
                  })
                }
              >
                Apply selection
              </Button>
            </div>
          )}
          {rows.length === 0 ? (
            <p className="py-6 text-center text-sm text-muted">
              No features selected. Add one by index, paste a list or search the labels.
            </p>
          ) : (
            <ul className="flex flex-col gap-3" aria-label="Selected features">
              {rows.map((row) => (
                <FeatureRowItem
                  key={row.index}
                  row={row}
                  label={applied.get(row.index)?.label}
                  applied={applied.has(row.index)}
                  onStrength={(strength) => {
                    update(row.index, { strength });
                    if (!row.muted) patch.mutate({ features: [{ index: row.index, strength }] });
                  }}
                  onMute={(muted) => {
                    update(row.index, { muted });
                    patch.mutate({ features: [{ index: row.index, strength: muted ? null : row.strength }] });
                  }}
                  onRemove={() => {
                    setRows(rows.filter((r) => r.index !== row.index));
                    if (applied.has(row.index))
                      patch.mutate({ features: [{ index: row.index, strength: null }] });
                  }}
                />
              ))}
            </ul>
          )}
          <div className="flex flex-wrap gap-2">
            <SaveProfileButton
              model={model.id}
              features={steering.features}
              disabled={steering.features.length === 0}
            />
            <Button
              variant="secondary"
              disabled={rows.length === 0 || clear.isPending}
              onClick={() => {
                setRows([]);
                clear.mutate();
              }}
            >
              Clear all
            </Button>
          </div>
        </section>
        <Playground
          model={model.id}
          prompt={search.prompt ?? ""}
          onPromptChange={(prompt) =>
            navigate({ search: (s) => ({ ...s, prompt: prompt || undefined }), replace: true })
          }
          steering={playgroundSteering}
          dSae={sae.d_sae}
          columnsParam={search.columns}
          onColumnsChange={(columns) => navigate({ search: (s) => ({ ...s, columns }), replace: true })}
        />
      </div>
    </div>
  );
}
