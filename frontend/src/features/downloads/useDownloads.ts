import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback } from "react";
import { downloadsQuery, queryKeys } from "@/api/queries";
import type { JobList, JobOut } from "@/client";
import { isErrorFrame, type WsDownloadsFrame } from "@/ws/frames";
import { type SocketState, useWebSocket } from "@/ws/useWebSocket";

export const ACTIVE_STATES = new Set<JobOut["state"]>(["queued", "running"]);

export function isActive(job: Pick<JobOut, "state">): boolean {
  return ACTIVE_STATES.has(job.state);
}

/**
 * Insert or replace one job in the cached list (newest first, as the server lists them). A snapshot
 * older than the one held is ignored: an HTTP answer can arrive after the socket's later pushes.
 */
export function upsertJob(list: JobList | undefined, job: JobOut): JobList {
  const data = list?.data ?? [];
  const i = data.findIndex((j) => j.id === job.id);
  if (i >= 0 && Date.parse(data[i].updated_at) > Date.parse(job.updated_at)) return list as JobList;
  const next = i >= 0 ? data.map((j) => (j.id === job.id ? job : j)) : [job, ...data];
  return { data: next, count: next.length };
}

/**
 * Subscribes to /ws/downloads and writes each DownloadEvent into the ["downloads"] query, so every
 * component reading downloads updates live. Mount once (the app shell does). When a job finishes,
 * the cache lists and status are refetched (a new model or SAE is on disk).
 */
export function useDownloadEvents(): SocketState {
  const qc = useQueryClient();
  const onMessage = useCallback(
    (frame: WsDownloadsFrame) => {
      if (isErrorFrame(frame) || !frame?.job) return;
      const job = frame.job as JobOut;
      const prev = qc.getQueryData<JobList>(queryKeys.downloads)?.data.find((j) => j.id === job.id);
      qc.setQueryData<JobList>(queryKeys.downloads, (list) => upsertJob(list, job));
      if (frame.type === "state" && prev?.state !== job.state && !isActive(job)) {
        void qc.invalidateQueries({ queryKey: queryKeys.cacheAll });
      }
    },
    [qc],
  );
  // On (re)connect, the server sends active jobs' states; refetch the list for finished ones missed meanwhile.
  const onOpen = useCallback(() => void qc.invalidateQueries({ queryKey: queryKeys.downloads }), [qc]);
  return useWebSocket<WsDownloadsFrame>({ path: "/ws/downloads", onMessage, onOpen });
}

/** All download jobs (live, via the query cache fed by useDownloadEvents). */
export function useDownloads() {
  return useQuery({
    ...downloadsQuery,
    select: (list) => list.data,
  });
}

/** The jobs still queued or running, optionally of one kind. */
export function useActiveDownloads(kind?: JobOut["kind"]): JobOut[] {
  const { data } = useDownloads();
  return (data ?? []).filter((j) => isActive(j) && (!kind || j.kind === kind));
}

/** One progress figure across all active downloads (bytes done / bytes total), or null when none. */
export function totalProgress(jobs: JobOut[]): { done: number; total: number; fraction: number } | null {
  if (jobs.length === 0) return null;
  const done = jobs.reduce((s, j) => s + j.bytes_done, 0);
  const total = jobs.reduce((s, j) => s + j.bytes_total, 0);
  return { done, total, fraction: total > 0 ? done / total : 0 };
}
