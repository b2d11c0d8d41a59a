import { useQuery } from "@tanstack/react-query";
import { AlertTriangleIcon, DownloadIcon, Loader2Icon } from "lucide-react";
import { useState } from "react";
import { errorMessage } from "@/api/errors";
import { modelPreviewQuery } from "@/api/queries";
import type { ModelPreviewOut, PrecisionEstimateOut } from "@/client";
import { Button } from "@/components/ui/button";
import {
  Dialog,
  DialogContent,
  DialogDescription,
  DialogFooter,
  DialogHeader,
  DialogTitle,
} from "@/components/ui/dialog";
import { cn } from "@/lib/cn";
import { formatBytes, formatCount } from "@/lib/format";
import type { Precision } from "./precision";

const MAX_TAGS = 10;

/** The preview's precision labels as the load dialog's values. */
const PRECISION_VALUE: Record<PrecisionEstimateOut["precision"], Precision> = {
  fp32: "fp32",
  fp16: "fp16",
  bf16: "bf16",
  "8-bit": "8bit",
  "4-bit": "4bit",
};

function Fact({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <div className="min-w-0">
      <dt className="text-[11px] font-semibold tracking-wide text-muted uppercase">{label}</dt>
      <dd className="num truncate text-sm text-body">{children}</dd>
    </div>
  );
}

/** The rows: one per precision with its parts and total, a radio to pick the precision to load with later. */
function PrecisionTable({
  preview,
  value,
  onChange,
}: {
  preview: ModelPreviewOut;
  value: Precision | null;
  onChange: (p: Precision) => void;
}) {
  const device = preview.device === "cpu" ? "RAM" : preview.device;
  return (
    <table className="num w-full text-xs">
      <caption className="mb-2 text-left text-xs text-label">
        Memory to load it on this server ({device}
        {preview.available_bytes != null
          ? `, ${formatBytes(preview.available_bytes)} free`
          : ", not present here"}
        ), for {preview.context?.toLocaleString("en-US") ?? "?"} tokens of context
      </caption>
      <thead>
        <tr className="bg-surface/50 text-[11px] text-muted uppercase">
          <th scope="col" className="px-2 py-1.5 text-left">
            Precision
          </th>
          <th scope="col" className="px-2 py-1.5 text-right">
            Weights
          </th>
          <th scope="col" className="px-2 py-1.5 text-right">
            KV cache
          </th>
          <th scope="col" className="px-2 py-1.5 text-right">
            Total
          </th>
          <th scope="col" className="px-2 py-1.5 text-right">
            Fits
          </th>
        </tr>
      </thead>
      <tbody>
        {preview.estimates.map((e) => {
          const v = PRECISION_VALUE[e.precision];
          return (
            <tr key={e.precision} className="border-b border-control/20">
              <th scope="row" className="px-2 py-1.5 text-left font-normal">
                <label className="flex cursor-pointer items-center gap-2">
                  <input
                    type="radio"
                    name="preview-precision"
                    value={v}
                    checked={value === v}
                    onChange={() => onChange(v)}
                  />
                  {e.precision}
                </label>
              </th>
              <td className="px-2 py-1.5 text-right">{formatBytes(e.weights_bytes)}</td>
              <td className="px-2 py-1.5 text-right">{formatBytes(e.kv_cache_bytes)}</td>
              <td className="px-2 py-1.5 text-right text-title">{formatBytes(e.total_bytes)}</td>
              <td
                className={cn(
                  "px-2 py-1.5 text-right",
                  e.fits === true && "text-success",
                  e.fits === false && "text-danger",
                )}
              >
                {e.fits == null ? "—" : e.fits ? "yes" : "no"}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/**
 * "Preview": a Hub model's card before downloading it (downloads, likes, task, architecture, tags, licence,
 * gating, remote code) and its memory at each precision on this server. Download from here; the chosen
 * precision is what the load dialog will offer first.
 */
export function ModelPreviewDialog({
  repoId,
  revision,
  trustRemoteCode,
  onTrustRemoteCodeChange,
  onDownload,
  downloading,
  onClose,
}: {
  repoId: string;
  revision?: string;
  trustRemoteCode: boolean;
  onTrustRemoteCodeChange: (v: boolean) => void;
  onDownload: (precision: Precision | null) => void;
  downloading: boolean;
  onClose: () => void;
}) {
  const preview = useQuery(modelPreviewQuery(repoId, revision));
  const [precision, setPrecision] = useState<Precision | null>(null);
  const p = preview.data;
  const needsCode = p?.needs_remote_code ?? false;
  // Where the server runs remote code, downloading such a model asks for consent first (it is refused later
  // otherwise); where it does not, the download is allowed and the warning says what loading will need.
  const blocked = needsCode && !!p?.trust_remote_code_allowed && !trustRemoteCode;
  const tags = p?.tags ?? [];

  return (
    <Dialog open onOpenChange={(o) => !o && onClose()}>
      <DialogContent className="max-w-2xl">
        <DialogHeader>
          <DialogTitle>Preview {repoId}</DialogTitle>
          <DialogDescription>
            What the Hub says about this model, and the memory it would take here. Nothing is downloaded yet.
          </DialogDescription>
        </DialogHeader>
        {preview.isPending ? (
          <p className="flex items-center gap-2 text-sm text-label" role="status">
            <Loader2Icon className="size-4 animate-spin" aria-hidden="true" /> Asking the Hub…
          </p>
        ) : preview.error ? (
          <div
            role="alert"
            className="rounded-lg border border-danger/40 bg-danger/10 p-3 text-sm text-danger"
          >
            {errorMessage(preview.error)}
            {"hint" in preview.error && typeof preview.error.hint === "string" && (
              <span className="block text-xs text-label">{preview.error.hint}</span>
            )}
          </div>
        ) : (
          p && (
            <div className="flex flex-col gap-4">
              <dl className="grid grid-cols-2 gap-3 sm:grid-cols-4">
                <Fact label="Downloads">{p.downloads != null ? formatCount(p.downloads) : "—"}</Fact>
                <Fact label="Likes">{p.likes != null ? formatCount(p.likes) : "—"}</Fact>
                <Fact label="Task">{p.pipeline_tag ?? "—"}</Fact>
                <Fact label="Licence">{p.license ?? "—"}</Fact>
                <Fact label="Model type">{p.model_type ?? "—"}</Fact>
                <Fact label="Architecture">{p.architectures.join(", ") || "—"}</Fact>
                <Fact label="Parameters">{p.params != null ? formatCount(p.params) : "—"}</Fact>
                <Fact label="Files">
                  {p.files} · {formatBytes(p.size_bytes)}
                </Fact>
              </dl>
              {tags.length > 0 && (
                <ul aria-label="Tags" className="flex flex-wrap gap-1.5">
                  {tags.slice(0, MAX_TAGS).map((t) => (
                    <li
                      key={t}
                      className="num rounded-md border border-control/40 px-2 py-0.5 text-xs text-label"
                    >
                      {t}
                    </li>
                  ))}
                  {tags.length > MAX_TAGS && (
                    <li className="px-1 py-0.5 text-xs text-muted">+{tags.length - MAX_TAGS} more</li>
                  )}
                </ul>
              )}
              {p.gated && (
                <p className="flex items-start gap-2 rounded-lg border border-warning/30 bg-warning/5 p-3 text-sm text-warning">
                  <AlertTriangleIcon className="mt-0.5 size-4 shrink-0" aria-hidden="true" />
                  Gated ({p.gated}): accept its terms on huggingface.co, and give the server an HF_TOKEN that
                  has been granted access.
                </p>
              )}
              {needsCode && (
                <div className="rounded-lg border border-warning/30 bg-warning/5 p-3 text-sm text-warning">
                  <p className="flex items-start gap-2">
                    <AlertTriangleIcon className="mt-0.5 size-4 shrink-0" aria-hidden="true" />
                    This model runs its own Python code from the repo when it loads: arbitrary code on the
                    server. Read its .py files first.
                  </p>
                  {p.trust_remote_code_allowed ? (
                    <label className="mt-2 flex items-center gap-2 font-semibold">
                      <input
                        type="checkbox"
                        checked={trustRemoteCode}
                        onChange={(e) => onTrustRemoteCodeChange(e.target.checked)}
                      />
                      Trust remote code
                    </label>
                  ) : (
                    <p className="mt-1 text-xs text-label">
                      This server does not run remote code: start it with --trust-remote-code to load this
                      model.
                    </p>
                  )}
                </div>
              )}
              {p.estimates.length ? (
                <PrecisionTable preview={p} value={precision} onChange={setPrecision} />
              ) : (
                <p className="text-sm text-label">No memory estimate: {p.estimate_error}</p>
              )}
            </div>
          )
        )}
        <DialogFooter>
          <Button variant="secondary" onClick={onClose}>
            Close
          </Button>
          <Button
            onClick={() => onDownload(precision)}
            disabled={!p || downloading || blocked}
            title={blocked ? "This model needs remote code: trust it first" : undefined}
          >
            <DownloadIcon aria-hidden="true" />
            {downloading ? "Starting…" : precision ? `Download (load at ${precision} later)` : "Download"}
          </Button>
        </DialogFooter>
      </DialogContent>
    </Dialog>
  );
}
