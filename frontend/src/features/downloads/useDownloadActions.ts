import { useMutation, useQueryClient } from "@tanstack/react-query";
import { queryKeys } from "@/api/queries";
import type { DownloadIn, JobList, JobOut } from "@/client";
import { cancelDownload, deleteDownload, resumeDownload, startDownload } from "@/client";
import { upsertJob } from "./useDownloads";

function useJobWriter() {
  const qc = useQueryClient();
  return (job: JobOut) => {
    qc.setQueryData<JobList>(queryKeys.downloads, (list) => upsertJob(list, job));
  };
}

/** Start a server-side download job (model or SAE). The job then updates live over /ws/downloads. */
export function useStartDownload() {
  const write = useJobWriter();
  return useMutation({
    mutationFn: async (body: DownloadIn) => (await startDownload({ body })).data,
    onSuccess: write,
    meta: { errorTitle: "Could not start the download" },
  });
}

export function useCancelDownload() {
  const write = useJobWriter();
  return useMutation({
    mutationFn: async (id: string) => (await cancelDownload({ path: { job_id: id } })).data,
    onSuccess: write,
    meta: { errorTitle: "Could not cancel the download" },
  });
}

export function useResumeDownload() {
  const write = useJobWriter();
  return useMutation({
    mutationFn: async (id: string) => (await resumeDownload({ path: { job_id: id } })).data,
    onSuccess: write,
    meta: { errorTitle: "Could not retry the download" },
  });
}

/** Remove a finished job from the list. */
export function useDismissDownload() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: async (id: string) => {
      await deleteDownload({ path: { job_id: id } });
      return id;
    },
    onSuccess: (id) =>
      qc.setQueryData<JobList>(queryKeys.downloads, (list) => {
        const data = (list?.data ?? []).filter((j) => j.id !== id);
        return { data, count: data.length };
      }),
    meta: { errorTitle: "Could not remove the download" },
  });
}
