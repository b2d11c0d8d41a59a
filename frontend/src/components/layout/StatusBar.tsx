import { useQuery } from "@tanstack/react-query";
import { Link } from "@tanstack/react-router";
import {
  ActivityIcon,
  CpuIcon,
  DownloadIcon,
  GaugeIcon,
  LayersIcon,
  ListOrderedIcon,
  MemoryStickIcon,
  ServerIcon,
  SlidersHorizontalIcon,
  WifiOffIcon,
} from "lucide-react";
import type * as React from "react";
import { ApiError } from "@/api/errors";
import { isUnreachable, statusQuery } from "@/api/queries";
import type { StatusOut } from "@/client";
import { Progress } from "@/components/ui/progress";
import { Tooltip } from "@/components/ui/tooltip";
import { totalProgress, useActiveDownloads } from "@/features/downloads/useDownloads";
import { requestApiKey } from "@/lib/auth";
import { cn } from "@/lib/cn";
import { formatBytes, formatPercent, formatUsage } from "@/lib/format";

/** "fp16", "bf16", "8-bit", … as people say it. */
export function precisionLabel(model: { dtype: string; quantization: string }): string {
  if (model.quantization === "8bit") return "8-bit";
  if (model.quantization === "4bit") return "4-bit";
  return (
    ({ float32: "fp32", float16: "fp16", bfloat16: "bf16" } as Record<string, string>)[model.dtype] ??
    model.dtype
  );
}

function Item({
  icon,
  label,
  children,
  className,
}: {
  icon?: React.ReactNode;
  label?: string;
  children: React.ReactNode;
  className?: string;
}) {
  return (
    <li className={cn("flex items-center gap-1.5 whitespace-nowrap", className)}>
      {icon && (
        <span className="text-muted [&_svg]:size-3.5" aria-hidden="true">
          {icon}
        </span>
      )}
      {label && <span className="text-muted">{label}:</span>}
      {children}
    </li>
  );
}

function Value({ children, className }: { children: React.ReactNode; className?: string }) {
  return <span className={cn("num font-semibold text-body", className)}>{children}</span>;
}

function ServingPill({ status }: { status: StatusOut }) {
  const [text, tone] =
    status.status === "ok"
      ? ["Serving", "border-success-tint/30 bg-success-tint/10 text-success"]
      : status.status === "loading"
        ? [`Loading ${status.loading ?? "model"}…`, "border-accent/30 bg-accent/10 text-accent"]
        : ["No model", "border-control/50 bg-surface/60 text-label"];
  return (
    <li className={cn("flex items-center gap-2 rounded-lg border px-2.5 py-1 font-semibold", tone)}>
      <span
        className={cn("size-2 rounded-full bg-current", status.status !== "no_model" && "animate-pulse-dot")}
        aria-hidden="true"
      />
      {text}
    </li>
  );
}

function DownloadsItem() {
  const active = useActiveDownloads();
  const p = totalProgress(active);
  if (!p) return null;
  const name = active.length === 1 ? active[0].name : `${active.length} downloads`;
  const pct = formatPercent(p.fraction);
  return (
    <Item icon={<DownloadIcon />}>
      <Link
        to="/models"
        className="flex items-center gap-2 rounded hover:text-title"
        aria-label={`Downloading ${name}: ${pct}`}
      >
        <span className="max-w-32 truncate text-label">{name}</span>
        <Progress value={p.fraction * 100} className="h-1.5 w-16" aria-hidden="true" />
        <Value>{pct}</Value>
      </Link>
    </Item>
  );
}

/**
 * The live status bar: polls /api/status every 2 s (backing off while the server is down) and reads
 * download jobs from the query cache (fed by /ws/downloads). Never needs a manual refresh.
 */
export function StatusBar({ className }: { className?: string }) {
  const { data: status, error, isPending } = useQuery(statusQuery);
  const down = error != null && isUnreachable(error);
  const host = status?.host;

  return (
    <ul
      aria-label="Server status"
      className={cn("flex flex-wrap items-center gap-x-4 gap-y-1 text-xs", className)}
    >
      {error instanceof ApiError && error.status === 401 ? (
        <Item className="text-warning">
          <button type="button" className="font-semibold underline" onClick={() => requestApiKey(true)}>
            API key required
          </button>
        </Item>
      ) : down || (error && !status) ? (
        <Item className="text-danger">
          <WifiOffIcon className="size-3.5" aria-hidden="true" />
          <span className="font-semibold">Disconnected</span>
          <span className="text-label">· retrying</span>
        </Item>
      ) : isPending ? (
        <Item>
          <span className="text-label">Connecting…</span>
        </Item>
      ) : null}
      {status && (
        <>
          {host && (
            <Tooltip
              content={`miLLM process: ${Math.round(host.process_cpu_percent)}% CPU (100% = one core), ${formatBytes(host.process_rss_bytes)} resident; ${host.cpu_count} cores`}
            >
              <li className="flex items-center gap-3 whitespace-nowrap">
                <span className="flex items-center gap-1.5">
                  <CpuIcon className="size-3.5 text-muted" aria-hidden="true" />
                  <span className="text-muted">CPU:</span>
                  <Value>{Math.round(host.cpu_percent)}%</Value>
                </span>
                <span className="flex items-center gap-1.5">
                  <MemoryStickIcon className="size-3.5 text-muted" aria-hidden="true" />
                  <span className="text-muted">RAM:</span>
                  <Value>{formatUsage(host.ram_used_bytes, host.ram_total_bytes)}</Value>
                </span>
              </li>
            </Tooltip>
          )}
          {status.gpus.map((g) => (
            <Tooltip key={g.index} content={`GPU ${g.index}: ${g.name}`}>
              <li className="flex items-center gap-3 whitespace-nowrap">
                <span className="flex items-center gap-1.5">
                  <GaugeIcon className="size-3.5 text-muted" aria-hidden="true" />
                  <span className="text-muted">{status.gpus.length > 1 ? `GPU${g.index}:` : "GPU:"}</span>
                  <Value>
                    {g.utilization_percent == null ? "–" : `${Math.round(g.utilization_percent)}%`}
                  </Value>
                </span>
                <span className="flex items-center gap-1.5">
                  <span className="text-muted">VRAM:</span>
                  <Value>
                    {g.memory_used_bytes == null
                      ? `– /${formatBytes(g.memory_total_bytes)}`
                      : formatUsage(g.memory_used_bytes, g.memory_total_bytes)}
                  </Value>
                </span>
              </li>
            </Tooltip>
          ))}
          {!down && <ServingPill status={status} />}
          {status.model && (
            <Item icon={<ServerIcon />}>
              <span className="sr-only">Model:</span>
              <span className="num font-semibold text-success">{status.model.id}</span>
              <Value className="font-normal text-label">{precisionLabel(status.model)}</Value>
            </Item>
          )}
          {status.sae && (
            <Item icon={<LayersIcon />}>
              <span className="sr-only">SAE:</span>
              <span className="num font-semibold text-attached">{status.sae.id}</span>
              <Value className="font-normal text-label">@ layer {status.sae.layer}</Value>
            </Item>
          )}
          {status.model && (
            <Item icon={<SlidersHorizontalIcon />} label="Steering">
              {status.steering.enabled && status.steering.features.length > 0 ? (
                <Value className="text-success">on ({status.steering.features.length})</Value>
              ) : (
                <Value className="text-label">off</Value>
              )}
            </Item>
          )}
          {status.active_profile && (
            <li className="flex items-center gap-1.5 rounded-md border border-warning/30 bg-warning/10 px-2.5 py-1 font-medium text-warning">
              <SlidersHorizontalIcon className="size-3.5" aria-hidden="true" />
              <span className="sr-only">Active profile:</span>
              {status.active_profile}
            </li>
          )}
          {status.model && (
            <Tooltip content={`Max batch size ${status.max_batch_size}`}>
              <li className="flex items-center gap-1.5 whitespace-nowrap">
                <ListOrderedIcon className="size-3.5 text-muted" aria-hidden="true" />
                <span className="text-muted">Queue:</span>
                <Value>{status.queue_depth}</Value>
                <span className="text-muted">Running:</span>
                <Value>{status.active_sequences}</Value>
              </li>
            </Tooltip>
          )}
        </>
      )}
      <DownloadsItem />
      {status && !down && (
        <Item className="text-success">
          <ActivityIcon className="size-3.5" aria-hidden="true" />
          <span className="sr-only">Connection:</span>
          <span>Connected</span>
        </Item>
      )}
    </ul>
  );
}
