import { useQuery } from "@tanstack/react-query";
import { AlertCircleIcon, LinkIcon, Loader2Icon, RotateCcwIcon } from "lucide-react";
import { useId, useState } from "react";
import { ApiError, errorMessage } from "@/api/errors";
import { statusQuery } from "@/api/queries";
import { Button } from "@/components/ui/button";
import {
  Dialog,
  DialogContent,
  DialogDescription,
  DialogFooter,
  DialogHeader,
  DialogTitle,
} from "@/components/ui/dialog";
import { Label } from "@/components/ui/label";
import { Select, SelectContent, SelectItem, SelectTrigger, SelectValue } from "@/components/ui/select";
import { useAttachSae } from "./useSaeActions";

const OWN = "own";

/**
 * Attach an SAE to the loaded model. The layer picker offers only the model's layers and defaults to
 * the SAE's own layer (from its config; `ownLayer` when its folder name tells it).
 */
export function AttachSaeDialog({
  source,
  ownLayer,
  onClose,
}: {
  source: string;
  ownLayer: number | null;
  onClose: () => void;
}) {
  const { data: status } = useQuery(statusQuery);
  const layers = status?.model?.num_layers ?? 0;
  const [layer, setLayer] = useState<string>(OWN);
  const attach = useAttachSae();
  const pickerId = useId();
  const err = attach.error;
  const replacing = status?.sae;

  const submit = () =>
    attach.mutate({ source, layer: layer === OWN ? null : Number(layer) }, { onSuccess: () => onClose() });

  return (
    <Dialog open onOpenChange={(o) => !o && onClose()}>
      <DialogContent>
        <DialogHeader>
          <DialogTitle>Attach SAE</DialogTitle>
          <DialogDescription className="num break-all">{source}</DialogDescription>
        </DialogHeader>
        {!status?.model ? (
          <p className="text-sm text-warning">Load a model first: an SAE attaches to one of its layers.</p>
        ) : (
          <>
            <Label htmlFor={pickerId}>Layer of {status.model.id}</Label>
            <Select value={layer} onValueChange={setLayer} disabled={attach.isPending}>
              <SelectTrigger id={pickerId}>
                <SelectValue />
              </SelectTrigger>
              <SelectContent>
                <SelectItem value={OWN}>
                  {ownLayer != null && ownLayer < layers
                    ? `Layer ${ownLayer} (the SAE's own)`
                    : "The SAE's own layer (from its config)"}
                </SelectItem>
                {Array.from({ length: layers }, (_, i) => String(i)).map((l) => (
                  <SelectItem key={l} value={l}>
                    Layer {l}
                  </SelectItem>
                ))}
              </SelectContent>
            </Select>
            <p className="mt-2 text-xs text-muted">
              {status.model.id} has {layers} layers (0–{layers - 1}). Attaching at another layer than the SAE
              was trained on is allowed but rarely meaningful.
            </p>
            {replacing && (
              <p className="mt-3 text-sm text-warning">
                This replaces {replacing.id} (layer {replacing.layer}); steering that does not fit the new SAE
                is cleared.
              </p>
            )}
          </>
        )}
        {attach.isPending && (
          <p className="mt-4 flex items-center gap-2 text-sm text-accent" role="status">
            <Loader2Icon className="size-4 animate-spin" aria-hidden="true" /> Attaching…
          </p>
        )}
        {err && !attach.isPending && (
          <div role="alert" className="mt-4 rounded-lg border border-danger/40 bg-danger/10 p-3 text-sm">
            <p className="flex items-start gap-2 font-semibold text-danger">
              <AlertCircleIcon className="mt-0.5 size-4 shrink-0" aria-hidden="true" /> Attach failed
            </p>
            <p className="mt-1 text-body">{errorMessage(err)}</p>
            {err instanceof ApiError && err.hint && <p className="mt-1 text-label">{err.hint}</p>}
          </div>
        )}
        <DialogFooter>
          <Button variant="secondary" onClick={onClose}>
            Cancel
          </Button>
          <Button onClick={submit} disabled={attach.isPending || !status?.model}>
            {err ? <RotateCcwIcon aria-hidden="true" /> : <LinkIcon aria-hidden="true" />}
            {err ? "Retry" : "Attach"}
          </Button>
        </DialogFooter>
      </DialogContent>
    </Dialog>
  );
}
