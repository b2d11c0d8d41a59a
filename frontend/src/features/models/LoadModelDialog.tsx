import { useQuery } from "@tanstack/react-query";
import { AlertCircleIcon, Loader2Icon, PlayIcon, RotateCcwIcon } from "lucide-react";
import { useEffect, useId, useState } from "react";
import { ApiError, errorMessage } from "@/api/errors";
import { estimateQuery } from "@/api/queries";
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
import { cn } from "@/lib/cn";
import { formatDuration } from "@/lib/format";
import { MemoryEstimate } from "./MemoryEstimate";
import { PRECISIONS, type Precision, precisionRequest } from "./precision";
import { useLoadModel } from "./useModelActions";

function useElapsed(running: boolean): number {
  const [start, setStart] = useState<number | null>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!running) {
      setStart(null);
      return;
    }
    setStart(Date.now());
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [running]);
  return start ? Math.max(0, (now - start) / 1000) : 0;
}

/**
 * Load a model with a chosen precision: shows the memory estimate for that precision first, then loads.
 * When the server refuses for memory (insufficient_memory), offers "Load anyway" (force: true).
 * A failed load ends in an error with Retry, never an endless spinner.
 */
export function LoadModelDialog({
  model,
  precision,
  onPrecisionChange,
  onClose,
}: {
  model: string;
  precision: Precision;
  onPrecisionChange: (p: Precision) => void;
  onClose: () => void;
}) {
  const selectId = useId();
  const trustId = useId();
  const [trustRemoteCode, setTrustRemoteCode] = useState(false);
  const req = precisionRequest(precision);
  const estimate = useQuery(
    estimateQuery({ model, dtype: req.dtype ?? undefined, quantization: req.quantization ?? undefined }),
  );
  const load = useLoadModel();
  const elapsed = useElapsed(load.isPending);
  const err = load.error;
  const refusedForMemory = err instanceof ApiError && err.code === "insufficient_memory";
  const needsCode = err instanceof ApiError && err.code === "trust_remote_code_required";
  const wontFit = estimate.data?.estimate.fits === false;

  // A new precision is a new question: forget the last attempt's error.
  // biome-ignore lint/correctness/useExhaustiveDependencies: reset on precision change only
  useEffect(() => load.reset(), [precision]);

  // Left out unless ticked: the server's own setting then applies.
  const submit = (force: boolean) =>
    load.mutate(
      { model, ...req, force, ...(trustRemoteCode ? { trust_remote_code: true } : {}) },
      { onSuccess: () => onClose() },
    );

  return (
    <Dialog open onOpenChange={(o) => !o && onClose()}>
      <DialogContent className="max-w-xl">
        <DialogHeader>
          <DialogTitle>Load model</DialogTitle>
          <DialogDescription className="num break-all">{model}</DialogDescription>
        </DialogHeader>

        <Label htmlFor={selectId}>Precision</Label>
        <Select
          value={precision}
          onValueChange={(v) => onPrecisionChange(v as Precision)}
          disabled={load.isPending}
        >
          <SelectTrigger id={selectId}>
            <SelectValue />
          </SelectTrigger>
          <SelectContent>
            {PRECISIONS.map((p) => (
              <SelectItem key={p.value} value={p.value}>
                {p.label}
                {p.note ? ` · ${p.note}` : ""}
              </SelectItem>
            ))}
          </SelectContent>
        </Select>

        <label
          htmlFor={trustId}
          className={cn(
            "mt-3 flex w-fit items-center gap-2 text-sm font-medium text-warning",
            needsCode && "rounded-md ring-2 ring-warning/60 px-2 py-1",
          )}
        >
          <input
            id={trustId}
            type="checkbox"
            checked={trustRemoteCode}
            disabled={load.isPending}
            onChange={(e) => {
              setTrustRemoteCode(e.target.checked);
              load.reset();
            }}
          />
          Trust remote code
          <span className="font-normal text-muted">(runs the repo's own Python on the server)</span>
        </label>

        <div className="mt-4" aria-live="polite">
          {estimate.isPending ? (
            <p className="flex items-center gap-2 text-sm text-label">
              <Loader2Icon className="size-4 animate-spin" aria-hidden="true" /> Estimating memory…
            </p>
          ) : estimate.error ? (
            <p className="text-sm text-label">
              No memory estimate: {errorMessage(estimate.error)} You can still load it.
            </p>
          ) : (
            <MemoryEstimate estimate={estimate.data.estimate} />
          )}
          {refusedForMemory && !estimate.data && err.info?.memory_estimate && (
            <MemoryEstimate estimate={err.info.memory_estimate} />
          )}
        </div>

        {load.isPending && (
          <p className="mt-4 flex items-center gap-2 text-sm text-accent" role="status">
            <Loader2Icon className="size-4 animate-spin" aria-hidden="true" />
            Loading {model}… <span className="num">{formatDuration(elapsed)}</span>
          </p>
        )}
        {err && !load.isPending && (
          <div role="alert" className="mt-4 rounded-lg border border-danger/40 bg-danger/10 p-3 text-sm">
            <p className="flex items-start gap-2 font-semibold text-danger">
              <AlertCircleIcon className="mt-0.5 size-4 shrink-0" aria-hidden="true" />
              {refusedForMemory ? "Not enough memory" : "Load failed"}
            </p>
            <p className="mt-1 text-body">{errorMessage(err)}</p>
            {err instanceof ApiError && err.hint && <p className="mt-1 text-label">{err.hint}</p>}
          </div>
        )}

        <DialogFooter>
          <Button variant="secondary" onClick={onClose}>
            {load.isPending ? "Close (keeps loading)" : "Cancel"}
          </Button>
          {refusedForMemory || (wontFit && !err) ? (
            <Button variant="primary" onClick={() => submit(true)} disabled={load.isPending}>
              <PlayIcon aria-hidden="true" /> Load anyway
            </Button>
          ) : err ? (
            <Button variant="primary" onClick={() => submit(false)} disabled={load.isPending}>
              <RotateCcwIcon aria-hidden="true" /> Retry
            </Button>
          ) : (
            <Button variant="primary" onClick={() => submit(false)} disabled={load.isPending}>
              <PlayIcon aria-hidden="true" /> Load
            </Button>
          )}
        </DialogFooter>
      </DialogContent>
    </Dialog>
  );
}
