import { useQuery } from "@tanstack/react-query";
import { CpuIcon, PowerIcon, ServerIcon } from "lucide-react";
import { useId, useState } from "react";
import { statusQuery } from "@/api/queries";
import type { StatusOut } from "@/client";
import { precisionLabel } from "@/components/layout/StatusBar";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { ConfirmDialog } from "@/components/ui/confirm-dialog";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { formatCount } from "@/lib/format";
import { useUnloadModel } from "./useModelActions";

/** What unloading will also clear, in words, for the confirmation. */
export function unloadConsequences(status: StatusOut): string {
  const parts = ["This frees its memory; chat and completion requests fail until a model is loaded again."];
  if (status.sae) parts.push(`The SAE ${status.sae.id} is detached.`);
  const n = status.steering.features.length;
  if (n > 0) parts.push(`Steering is cleared (${n} feature${n === 1 ? "" : "s"}).`);
  if (status.active_profile) parts.push(`The profile ${status.active_profile} is deactivated.`);
  return parts.join(" ");
}

/** The loaded model (or a form to load one by name/folder), with Unload. */
export function LoadedModelCard({ onLoad }: { onLoad: (model: string) => void }) {
  const { data: status } = useQuery(statusQuery);
  const [confirm, setConfirm] = useState(false);
  const [name, setName] = useState("");
  const nameId = useId();
  const unload = useUnloadModel();
  const m = status?.model;

  if (!status) return null;
  if (!m) {
    return (
      <Card title="Load a model" icon={<ServerIcon />}>
        {status.status === "loading" ? (
          <p className="text-sm text-accent" role="status">
            Loading {status.loading}…
          </p>
        ) : (
          <form
            className="grid gap-4 md:grid-cols-[1fr_auto] md:items-end"
            onSubmit={(e) => {
              e.preventDefault();
              if (name.trim()) onLoad(name.trim());
            }}
          >
            <div>
              <Label htmlFor={nameId}>Load by Hub id, cached repo, or a folder on the server</Label>
              <Input
                id={nameId}
                value={name}
                onChange={(e) => setName(e.target.value)}
                placeholder="e.g. millm-demo (the bundled demo) or Qwen/Qwen2.5-0.5B"
                className="num"
                autoComplete="off"
                spellCheck={false}
              />
            </div>
            <Button type="submit" variant="primary" disabled={!name.trim()}>
              Choose precision…
            </Button>
          </form>
        )}
      </Card>
    );
  }

  const facts: [string, string][] = [
    ["Parameters", formatCount(m.parameters)],
    ["Precision", precisionLabel(m)],
    ["Device", m.device],
    ["Layers", String(m.num_layers)],
    ["d_model", String(m.d_model)],
    ["Context", m.context_length.toLocaleString()],
  ];
  return (
    <Card
      title="Loaded model"
      icon={<CpuIcon />}
      actions={
        <Button variant="danger" onClick={() => setConfirm(true)} disabled={unload.isPending}>
          <PowerIcon aria-hidden="true" /> Unload
        </Button>
      }
    >
      <div className="flex flex-wrap items-center gap-3">
        <span className="num text-lg font-semibold text-success">{m.id}</span>
        <Badge tone="success">Loaded</Badge>
        {m.source !== "local" && m.source !== m.id && (
          <span className="num text-xs text-muted">{m.source}</span>
        )}
      </div>
      <dl className="mt-4 grid grid-cols-2 gap-x-6 gap-y-2 text-sm sm:grid-cols-3 lg:grid-cols-6">
        {facts.map(([k, v]) => (
          <div key={k}>
            <dt className="text-xs text-label">{k}</dt>
            <dd className="num text-body">{v}</dd>
          </div>
        ))}
      </dl>
      <ConfirmDialog
        open={confirm}
        onOpenChange={setConfirm}
        title={`Unload ${m.id}?`}
        description={unloadConsequences(status)}
        confirmLabel="Unload"
        pending={unload.isPending}
        onConfirm={() => unload.mutate(undefined, { onSettled: () => setConfirm(false) })}
      />
    </Card>
  );
}
