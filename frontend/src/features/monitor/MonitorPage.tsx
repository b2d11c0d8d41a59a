import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { getRouteApi, Link } from "@tanstack/react-router";
import { DownloadIcon, PauseIcon, PlayIcon, Trash2Icon, XIcon } from "lucide-react";
import { useCallback, useDeferredValue, useMemo, useState } from "react";
import { toast } from "sonner";
import { monitorConfigQuery, queryKeys, statusQuery } from "@/api/queries";
import { toastError } from "@/api/queryClient";
import type { SaeOut } from "@/client";
import {
  clearMonitorHistory,
  exportMonitorHistory,
  pauseMonitor,
  resumeMonitor,
  setMonitorConfig,
  updateSteering,
} from "@/client";
import { PageHeader } from "@/components/PageHeader";
import { RequiresSae } from "@/components/RequiresModel";
import { Button } from "@/components/ui/button";
import { Switch } from "@/components/ui/switch";
import { cn } from "@/lib/cn";
import { downloadText } from "@/lib/download";
import { FeatureChart } from "./FeatureChart";
import { EMPTY_SNAPSHOT, type MonitorSnapshot } from "./monitorStore";
import { RequestList } from "./RequestList";
import { StatsTable } from "./StatsTable";
import { TokenInspector } from "./TokenInspector";
import { TokenView } from "./TokenView";
import { useMonitorSnapshot, useMonitorStream } from "./useMonitorStream";
import { WatchConfig } from "./WatchConfig";

const route = getRouteApi("/monitor");

export function MonitorPage() {
  return (
    <>
      <PageHeader title="Monitor" subtitle="Live feature activations for every request, from any client" />
      <RequiresSae what="watch feature activations">{(sae) => <MonitorWorkbench sae={sae} />}</RequiresSae>
    </>
  );
}

function usePauseResume() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (pause: boolean) => (pause ? await pauseMonitor() : await resumeMonitor()).data,
    onSuccess: (data) => queryClient.setQueryData(queryKeys.monitorConfig, data),
    meta: { errorTitle: "Could not pause or resume monitoring" },
  });
}

async function exportHistory(format: "jsonl" | "csv", requestId?: string) {
  try {
    const { data } = await exportMonitorHistory({
      query: { format, request_id: requestId },
      parseAs: "text",
    });
    const name = `activations${requestId ? `-${requestId}` : ""}.${format}`;
    downloadText(name, String(data), format === "csv" ? "text/csv" : "application/x-ndjson");
  } catch (e) {
    toastError(e, "Could not export the history");
  }
}

function MonitorWorkbench({ sae }: { sae: SaeOut }) {
  const socket = useMonitorStream();
  // Deferred: a burst of frames re-renders in interruptible, time-sliced work, never one long task.
  const snap: MonitorSnapshot = useDeferredValue(useMonitorSnapshot() ?? EMPTY_SNAPSHOT);
  const { data: config } = useQuery(monitorConfigQuery);
  const { data: status } = useQuery(statusQuery);
  const search = route.useSearch();
  const navigate = route.useNavigate();
  const queryClient = useQueryClient();
  const pauseResume = usePauseResume();
  const [showPrompt, setShowPrompt] = useState(false);
  const [hover, setHover] = useState<number | null>(null);
  const [pinnedToken, setPinnedToken] = useState<number | null>(null);

  const traces = useMemo(() => snap.order.map((k) => snap.traces[k]).filter(Boolean), [snap]);
  const selectedKey =
    search.request && snap.traces[search.request] ? search.request : (snap.order[0] ?? null);
  const following = !search.request;
  const trace = selectedKey ? snap.traces[selectedKey] : undefined;
  const tokens = useMemo(
    () => (trace ? (showPrompt ? trace.tokens : trace.tokens.filter((t) => t.phase !== "prompt")) : []),
    [trace, showPrompt],
  );
  const stats = useMemo(() => (trace ? Object.values(trace.stats) : []), [trace]);
  // Focus: the URL's feature, else the strongest feature of the request.
  const strongest = useMemo(
    () =>
      stats.reduce<number | null>(
        (best, s) => (best == null || s.max > (trace?.stats[best]?.max ?? 0) ? s.index : best),
        null,
      ),
    [stats, trace],
  );
  const focus = search.focus ?? strongest;
  const charted = useMemo(() => {
    const list = (search.chart ?? "").split(",").filter(Boolean).map(Number).filter(Number.isInteger);
    return focus != null && !list.includes(focus) ? [focus, ...list] : list;
  }, [search.chart, focus]);
  const activeIndex = pinnedToken ?? hover;
  const activeFrame = activeIndex != null ? (tokens[activeIndex] ?? null) : null;
  const paused = config?.paused ?? false;

  const setSearch = useCallback(
    (patch: Partial<typeof search>) => navigate({ search: (s) => ({ ...s, ...patch }), replace: true }),
    [navigate],
  );
  const pinned = pinnedToken != null;
  const onActive = useCallback((i: number | null) => !pinned && setHover(i), [pinned]);
  const onPinToken = useCallback((i: number) => setPinnedToken((p) => (p === i ? null : i)), []);
  const onSelect = useCallback(
    (key: string) => {
      setPinnedToken(null);
      setHover(null);
      setSearch({ request: key });
    },
    [setSearch],
  );
  const onFocusFeature = useCallback((index: number) => setSearch({ focus: index }), [setSearch]);

  const steer = useMutation({
    mutationFn: async (index: number) =>
      (await updateSteering({ body: { features: [{ index, strength: 0 }], mode: null } })).data,
    onSuccess: (state, index) => {
      queryClient.setQueryData(statusQuery.queryKey, (old) => (old ? { ...old, steering: state } : old));
      toast.success(`Feature ${index} added to the steering at strength 0`, {
        description: "Set its strength on the Steering tab.",
      });
    },
    meta: { errorTitle: "Could not add the feature to the steering" },
  });
  const clear = useMutation({
    mutationFn: async () => {
      await clearMonitorHistory();
    },
    onSuccess: () => {
      queryClient.setQueryData(queryKeys.monitorLive, EMPTY_SNAPSHOT);
      setSearch({ request: undefined });
    },
    meta: { errorTitle: "Could not clear the history", success: "Monitor history cleared" },
  });

  const state = !config?.enabled ? "OFF" : paused ? "PAUSED" : "LIVE";
  const enable = useMutation({
    mutationFn: async () => (await setMonitorConfig({ body: { enabled: true } })).data,
    onSuccess: (data) => queryClient.setQueryData(queryKeys.monitorConfig, data),
    meta: { errorTitle: "Could not turn monitoring on", success: "Monitoring on" },
  });

  return (
    <div className="flex flex-col gap-5">
      {config && !config.enabled && (
        <div className="flex flex-wrap items-center gap-3 rounded-xl border border-warning/30 bg-warning/5 p-4 text-sm text-warning">
          Monitoring is off: the server captures no activations. Turning it on adds a little work to every
          request.
          <Button variant="action" onClick={() => enable.mutate()} disabled={enable.isPending}>
            Turn monitoring on
          </Button>
        </div>
      )}
      <div className="flex flex-wrap items-center gap-3">
        <span
          role="status"
          className={cn(
            "flex items-center gap-2 rounded-lg border px-3 py-1.5 text-xs font-semibold",
            state === "LIVE" && "border-success-tint/30 bg-success-tint/10 text-success",
            state === "PAUSED" && "border-warning/30 bg-warning/10 text-warning",
            state === "OFF" && "border-control/40 text-label",
          )}
        >
          <span
            aria-hidden="true"
            className={cn(
              "size-2 rounded-full",
              state === "LIVE"
                ? "animate-pulse-dot bg-success"
                : state === "PAUSED"
                  ? "bg-warning"
                  : "bg-label",
            )}
          />
          {state}
          <span className="font-normal text-muted">· socket {socket}</span>
        </span>
        <span className="num text-xs text-muted">
          {traces.length} requests · {snap.received} frames received
        </span>
        <div className="ml-auto flex flex-wrap gap-2">
          {paused ? (
            <Button onClick={() => pauseResume.mutate(false)} disabled={pauseResume.isPending}>
              <PlayIcon aria-hidden="true" /> Resume
            </Button>
          ) : (
            <Button
              variant="danger"
              className="px-5 py-3 text-sm"
              onClick={() => pauseResume.mutate(true)}
              disabled={!config?.enabled || pauseResume.isPending}
            >
              <PauseIcon aria-hidden="true" /> Pause
            </Button>
          )}
          <Button variant="secondary" onClick={() => exportHistory("jsonl")}>
            <DownloadIcon aria-hidden="true" /> Export JSONL
          </Button>
          <Button variant="secondary" onClick={() => exportHistory("csv")}>
            <DownloadIcon aria-hidden="true" /> Export CSV
          </Button>
          <Button variant="ghost" aria-label="Clear history" onClick={() => clear.mutate()}>
            <Trash2Icon aria-hidden="true" />
          </Button>
        </div>
      </div>

      <div className="grid gap-5 xl:grid-cols-[340px_1fr]">
        <div className="flex flex-col gap-5">
          <WatchConfig
            dSae={sae.d_sae}
            steeringFeatures={status?.steering.features.map((f) => f.index) ?? []}
          />
          <section aria-labelledby="requests-title" className="card flex flex-col gap-3">
            <div className="flex items-center justify-between">
              <h2 id="requests-title" className="text-sm font-semibold text-title">
                Requests ({traces.length})
              </h2>
              <span className="flex items-center gap-2 text-xs text-label">
                <Switch
                  aria-label="Follow the latest request"
                  checked={following}
                  onCheckedChange={(on) =>
                    setSearch({ request: on ? undefined : (selectedKey ?? undefined) })
                  }
                />
                Follow latest
              </span>
            </div>
            <RequestList traces={traces} selected={selectedKey} onSelect={onSelect} />
          </section>
        </div>

        <div className="flex flex-col gap-5">
          <section aria-labelledby="tokens-title" className="card flex flex-col gap-3">
            <div className="flex flex-wrap items-center gap-3">
              <h2 id="tokens-title" className="text-sm font-semibold text-title">
                {trace ? (
                  <>
                    Request <span className="num text-accent">{trace.key}</span>
                  </>
                ) : (
                  "Tokens"
                )}
              </h2>
              <span className="text-xs text-label">
                Highlight:{" "}
                {focus != null ? (
                  <span className="num text-accent">
                    #{focus} {snap.labels[focus] ?? ""}
                  </span>
                ) : (
                  "—"
                )}
                {search.focus != null && (
                  <Button
                    variant="ghost"
                    size="icon"
                    aria-label="Clear focus"
                    onClick={() => setSearch({ focus: undefined })}
                  >
                    <XIcon aria-hidden="true" />
                  </Button>
                )}
              </span>
              <label className="ml-auto flex items-center gap-2 text-xs text-label">
                <input
                  type="checkbox"
                  checked={showPrompt}
                  onChange={(e) => setShowPrompt(e.target.checked)}
                />
                Show prompt tokens
              </label>
              {trace && (
                <Button variant="ghost" size="sm" onClick={() => exportHistory("jsonl", trace.requestId)}>
                  <DownloadIcon aria-hidden="true" /> This request
                </Button>
              )}
            </div>
            <div className="grid gap-4 lg:grid-cols-[1fr_400px]">
              <div>
                <TokenView
                  label={trace ? `Tokens of request ${trace.key}` : "Tokens"}
                  tokens={tokens}
                  focus={focus}
                  active={activeIndex}
                  onActive={onActive}
                  onPin={onPinToken}
                />
                <p id="token-view-help" className="mt-1 text-xs text-muted">
                  Background: activation of the feature in focus, scaled to its max in this request. Arrow
                  keys move, Enter pins a token.
                </p>
              </div>
              <section aria-label="Token features" className="rounded-lg border border-control/30 p-3">
                <TokenInspector
                  frame={activeFrame}
                  pinned={pinnedToken != null}
                  focus={focus}
                  labels={snap.labels}
                  onFocus={(index) => setSearch({ focus: index })}
                  onPin={(index) => {
                    const list = charted.filter((f) => f !== index && f !== focus);
                    setSearch({ chart: [...list, index].slice(-5).join(",") || undefined });
                  }}
                  onSteer={(index) => steer.mutate(index)}
                />
              </section>
            </div>
          </section>

          <section aria-labelledby="chart-title" className="card flex flex-col gap-2">
            <div className="flex flex-wrap items-center gap-2">
              <h2 id="chart-title" className="text-sm font-semibold text-title">
                Activations over tokens
              </h2>
              {charted.map((f) => (
                <span
                  key={f}
                  className="num flex items-center gap-1 rounded-md border border-control/40 px-2 py-0.5 text-xs text-body"
                >
                  #{f}
                  {f !== focus && (
                    <button
                      type="button"
                      aria-label={`Remove feature ${f} from the chart`}
                      className="cursor-pointer text-muted hover:text-body"
                      onClick={() =>
                        setSearch({
                          chart: charted.filter((x) => x !== f && x !== focus).join(",") || undefined,
                        })
                      }
                    >
                      <XIcon className="size-3" aria-hidden="true" />
                    </button>
                  )}
                </span>
              ))}
            </div>
            <FeatureChart tokens={tokens} features={charted} labels={snap.labels} />
          </section>

          <section aria-labelledby="stats-title" className="card flex flex-col gap-2">
            <h2 id="stats-title" className="text-sm font-semibold text-title">
              Feature statistics (this request)
            </h2>
            <StatsTable stats={stats} focus={focus} onFocus={onFocusFeature} />
            <p className="text-xs text-muted">
              Steer a feature from here with the + in the token panel, or on the{" "}
              <Link to="/steering" className="text-accent underline">
                Steering tab
              </Link>
              .
            </p>
          </section>
        </div>
      </div>
    </div>
  );
}
