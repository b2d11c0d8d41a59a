import { LayersIcon, UnlinkIcon } from "lucide-react";
import { useState } from "react";
import type { SaeOut, StatusOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { ConfirmDialog } from "@/components/ui/confirm-dialog";
import { FeatureLabelList } from "./FeatureLabelList";
import { useDetachSae } from "./useSaeActions";

/** What detaching clears, in words, for the confirmation. */
export function detachConsequences(status: StatusOut): string {
  const parts = ["Requests run unsteered and the Monitor stops showing activations."];
  const n = status.steering.features.length;
  if (n > 0) parts.push(`Steering is cleared (${n} feature${n === 1 ? "" : "s"}).`);
  if (status.active_profile) parts.push(`The profile ${status.active_profile} is deactivated.`);
  return parts.join(" ");
}

function sourceOf(sae: SaeOut): string {
  if (sae.repo_id) return sae.path ? `${sae.repo_id}:${sae.path}` : sae.repo_id;
  return "local files";
}

/** The attached SAE: its metadata, labelled features, and Detach (with a confirmation of what is cleared). */
export function AttachedSaeCard({ sae, status }: { sae: SaeOut; status: StatusOut }) {
  const [confirm, setConfirm] = useState(false);
  const detach = useDetachSae();
  const facts: [string, string][] = [
    ["Layer", String(sae.layer)],
    ["d_in", sae.d_in.toLocaleString()],
    ["d_sae", sae.d_sae.toLocaleString()],
    ["Architecture", sae.architecture],
    ["Format", sae.source_format],
    ["dtype", sae.dtype],
    ["Hook", sae.hook_name],
    ["Source", sourceOf(sae)],
    ["Labelled features", (sae.labelled_features ?? 0).toLocaleString()],
  ];
  if (sae.model_name) facts.push(["Trained on", sae.model_name]);
  if (sae.revision) facts.push(["Revision", sae.revision]);
  if (sae.neuronpedia_id) facts.push(["Neuronpedia", sae.neuronpedia_id]);
  return (
    <Card
      title="Attached SAE"
      icon={<LayersIcon />}
      actions={
        <Button variant="danger" onClick={() => setConfirm(true)} disabled={detach.isPending}>
          <UnlinkIcon aria-hidden="true" /> Detach
        </Button>
      }
    >
      <div className="flex flex-wrap items-center gap-3">
        <span className="num text-lg font-semibold text-attached">{sae.id}</span>
        <Badge tone="attached">Attached</Badge>
      </div>
      <dl className="mt-4 grid grid-cols-2 gap-x-6 gap-y-2 text-sm sm:grid-cols-3 lg:grid-cols-5">
        {facts.map(([k, v]) => (
          <div key={k} className="min-w-0">
            <dt className="text-xs text-label">{k}</dt>
            <dd className="num truncate text-body" title={v}>
              {v}
            </dd>
          </div>
        ))}
      </dl>
      <div className="mt-5">
        <h3 className="mb-2 text-sm font-semibold text-title">Labelled features</h3>
        <FeatureLabelList total={sae.labelled_features ?? 0} neuronpediaId={sae.neuronpedia_id} />
      </div>
      <ConfirmDialog
        open={confirm}
        onOpenChange={setConfirm}
        title={`Detach ${sae.id}?`}
        description={detachConsequences(status)}
        confirmLabel="Detach"
        pending={detach.isPending}
        onConfirm={() => detach.mutate(undefined, { onSettled: () => setConfirm(false) })}
      />
    </Card>
  );
}
