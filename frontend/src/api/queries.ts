/**
 * Query keys and query options for server state. One place per resource, so WebSocket pushes
 * (ws/*) and mutations can update or invalidate exactly what the components read.
 */
import { queryOptions } from "@tanstack/react-query";
import type { EstimateModelData } from "@/client";
import {
  estimateModel,
  getMonitorConfig,
  getMonitorHistory,
  getStatus,
  listCache,
  listDownloads,
  listProfiles,
  listRepoSaes,
  previewModel,
  searchFeatureLabels,
} from "@/client";
import { ApiError } from "./errors";
import "./client";

export type EstimateParams = NonNullable<EstimateModelData["query"]>;

export const queryKeys = {
  status: ["status"] as const,
  downloads: ["downloads"] as const,
  cache: (kind: "model" | "sae") => ["cache", kind] as const,
  cacheAll: ["cache"] as const,
  estimate: (params: EstimateParams) => ["estimate", params] as const,
  saeLabels: ["saes", "attached", "labels"] as const,
  repoSaes: (repo: string, revision?: string) => ["hub", "saes", repo, revision ?? "main"] as const,
  modelPreview: (repo: string, revision?: string) => ["hub", "models", repo, revision ?? "main"] as const,
  labelSearch: (q: string, limit: number) => ["saes", "attached", "labels", { q, limit }] as const,
  profiles: ["profiles"] as const,
  monitorConfig: ["monitor", "config"] as const,
  monitorHistory: ["monitor", "history"] as const,
  /** Live monitor traces (features/monitor/monitorStore.ts writes it, batched per animation frame). */
  monitorLive: ["monitor", "live"] as const,
};

export const STATUS_INTERVAL_MS = 2000;
const MAX_BACKOFF_MS = 30_000;

/** Poll interval for /api/status: every 2 s, backing off (4, 8, … 30 s) while the server is unreachable. */
export function statusInterval(failures: number): number {
  if (failures <= 0) return STATUS_INTERVAL_MS;
  return Math.min(MAX_BACKOFF_MS, STATUS_INTERVAL_MS * 2 ** failures);
}

export const statusQuery = queryOptions({
  queryKey: queryKeys.status,
  queryFn: async ({ signal }) => (await getStatus({ signal })).data,
  refetchInterval: (query) => statusInterval(query.state.error ? query.state.fetchFailureCount : 0),
  refetchIntervalInBackground: false,
  retry: false,
  staleTime: 0,
});

export const downloadsQuery = queryOptions({
  queryKey: queryKeys.downloads,
  queryFn: async ({ signal }) => (await listDownloads({ signal })).data,
});

export const cacheQuery = (kind: "model" | "sae") =>
  queryOptions({
    queryKey: queryKeys.cache(kind),
    queryFn: async ({ signal }) => (await listCache({ signal, query: { kind } })).data,
  });

export const estimateQuery = (params: EstimateParams) =>
  queryOptions({
    queryKey: queryKeys.estimate(params),
    queryFn: async ({ signal }) => (await estimateModel({ signal, query: params })).data,
    staleTime: 10_000,
    retry: false,
  });

export const saeLabelsQuery = queryOptions({
  queryKey: queryKeys.saeLabels,
  queryFn: async ({ signal }) => (await searchFeatureLabels({ signal })).data,
  staleTime: 60_000,
});

/** A Hub repo's SAE folders (layer, site, width, L0, …), read from the Hub without downloading. */
export const repoSaesQuery = (repoId: string, revision?: string) =>
  queryOptions({
    queryKey: queryKeys.repoSaes(repoId, revision),
    queryFn: async ({ signal }) =>
      (await listRepoSaes({ signal, query: { repo_id: repoId, revision: revision ?? null } })).data,
    staleTime: 5 * 60_000,
    retry: false,
  });

export function isUnreachable(err: unknown): boolean {
  return err instanceof ApiError && err.isNetwork;
}

/** Labels matching `q` (text in the label, or a feature index), at most `limit`. */
export const labelSearchQuery = (q: string, limit = 200) =>
  queryOptions({
    queryKey: queryKeys.labelSearch(q, limit),
    queryFn: async ({ signal }) =>
      (await searchFeatureLabels({ signal, query: { q: q || undefined, limit } })).data,
    staleTime: 60_000,
  });

/** A Hub model's card and memory per precision, before downloading (GET /api/hub/models/{repo_id}). */
export const modelPreviewQuery = (repoId: string, revision?: string) =>
  queryOptions({
    queryKey: queryKeys.modelPreview(repoId, revision),
    queryFn: async ({ signal }) =>
      (await previewModel({ signal, path: { repo_id: repoId }, query: { revision } })).data,
    staleTime: 5 * 60_000,
    retry: false,
  });

export const profilesQuery = queryOptions({
  queryKey: queryKeys.profiles,
  queryFn: async ({ signal }) => (await listProfiles({ signal })).data,
});

export const monitorConfigQuery = queryOptions({
  queryKey: queryKeys.monitorConfig,
  queryFn: async ({ signal }) => (await getMonitorConfig({ signal })).data,
});

export const monitorHistoryQuery = queryOptions({
  queryKey: queryKeys.monitorHistory,
  queryFn: async ({ signal }) => (await getMonitorHistory({ signal })).data,
  staleTime: Number.POSITIVE_INFINITY,
});
