import { AlertCircleIcon, CheckCircle2Icon, RotateCcwIcon, SquareIcon, XIcon } from "lucide-react";
import type { JobOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Progress } from "@/components/ui/progress";
import { formatBytes, formatDuration, formatPercent } from "@/lib/format";
import { useCancelDownload, useDismissDownload, useResumeDownload } from "./useDownloadActions";
import { isActive } from "./useDownloads";

const STATE_BADGE: Record<
  JobOut["state"],
  { tone: "ready" | "success" | "danger" | "muted" | "warning"; text: string }
> = {
  queued: { tone: "muted", text: "Queued" },
  running: { tone: "ready", text: "Downloading" },
  completed: { tone: "success", text: "Done" },
  failed: { tone: "danger", text: "Failed" },
  cancelled: { tone: "warning", text: "Cancelled" },
};

/**
 * One download job: a single progress bar over all its files, bytes, speed, ETA and the file count;
 * Cancel while it runs, Retry after a failure or cancel (files already complete are kept), Dismiss when done.
 */
export function DownloadJobRow({ job }: { job: JobOut }) {
  const active = isActive(job);
  const cancel = useCancelDownload();
  const resume = useResumeDownload();
  const dismiss = useDismissDownload();
  // Speed and ETA come from the server (a sliding window), so a reload or a second tab shows the same.
  const speed = job.speed_bps > 0 ? job.speed_bps : null;
  const eta = job.eta_s;
  const label = job.path ? `${job.repo_id}/${job.path}` : job.repo_id;
  const badge = STATE_BADGE[job.state];
  const known = job.bytes_total > 0;

  return (
    <li className="rounded-xl border border-control/30 bg-surface/30 p-4" aria-label={`Download ${label}`}>
      <div className="flex flex-wrap items-center gap-3">
        <div className="min-w-0 flex-1">
          <div className="flex items-center gap-2">
            <span className="truncate text-[15px] font-semibold text-title">{job.name}</span>
            <Badge tone={badge.tone}>{badge.text}</Badge>
          </div>
          <div className="num truncate text-[11px] text-muted">
            {label}
            {job.revision !== "main" && ` @ ${job.revision}`}
          </div>
        </div>
        <div className="flex items-center gap-2">
          {active && (
            <Button
              variant="danger"
              onClick={() => cancel.mutate(job.id)}
              disabled={cancel.isPending}
              aria-label={`Cancel download of ${label}`}
            >
              <SquareIcon aria-hidden="true" /> Cancel
            </Button>
          )}
          {(job.state === "failed" || job.state === "cancelled") && (
            <Button
              variant="action"
              onClick={() => resume.mutate(job.id)}
              disabled={resume.isPending}
              aria-label={`Retry download of ${label}`}
            >
              <RotateCcwIcon aria-hidden="true" /> Retry
            </Button>
          )}
          {!active && (
            <Button
              variant="ghost"
              onClick={() => dismiss.mutate(job.id)}
              disabled={dismiss.isPending}
              aria-label={`Dismiss download of ${label}`}
            >
              <XIcon aria-hidden="true" />
            </Button>
          )}
        </div>
      </div>
      {job.state !== "completed" && (
        <div className="mt-3">
          <Progress
            value={known || !active ? job.progress * 100 : null}
            aria-label={`Download progress of ${label}`}
            aria-valuetext={
              known
                ? `${formatPercent(job.progress)}, ${formatBytes(job.bytes_done)} of ${formatBytes(job.bytes_total)}`
                : "starting"
            }
            indicatorClassName={job.state === "failed" ? "from-danger-tint to-danger" : undefined}
          />
          <div className="num mt-2 flex flex-wrap gap-x-4 gap-y-1 text-xs text-label">
            <span>{formatPercent(job.progress)}</span>
            <span>
              {formatBytes(job.bytes_done)} / {known ? formatBytes(job.bytes_total) : "?"}
            </span>
            {job.state === "running" && (
              <span>{speed != null ? `${formatBytes(speed)}/s` : "measuring speed…"}</span>
            )}
            {job.state === "running" && eta != null && <span>ETA {formatDuration(eta)}</span>}
            <span>
              files {job.files_done}/{job.files_total || "?"}
            </span>
            {job.state === "running" && job.current_file && (
              <span className="truncate text-muted" title={job.current_file}>
                {job.current_file}
              </span>
            )}
          </div>
        </div>
      )}
      {job.state === "completed" && (
        <p className="mt-2 flex items-center gap-1.5 text-xs text-success">
          <CheckCircle2Icon className="size-3.5" aria-hidden="true" /> {formatBytes(job.bytes_total)} in{" "}
          {job.files_total} files, in the cache.
        </p>
      )}
      {job.error && (
        <p className="mt-2 flex items-start gap-1.5 text-xs text-danger" role="alert">
          <AlertCircleIcon className="mt-0.5 size-3.5 shrink-0" aria-hidden="true" />
          {job.error.message}
        </p>
      )}
    </li>
  );
}

/** The jobs of one kind: running and queued first, then the finished ones (newest first). */
export function DownloadList({ jobs, title }: { jobs: JobOut[]; title: string }) {
  if (jobs.length === 0) return null;
  const sorted = [...jobs].sort((a, b) => Number(isActive(b)) - Number(isActive(a)));
  return (
    <section aria-label={title} className="card">
      <h2 className="mb-4 text-base font-semibold text-title">
        {title} <span className="num text-muted">({jobs.length})</span>
      </h2>
      <ul className="flex flex-col gap-3">
        {sorted.map((j) => (
          <DownloadJobRow key={j.id} job={j} />
        ))}
      </ul>
    </section>
  );
}
