import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef } from "react";
import { monitorHistoryQuery, queryKeys } from "@/api/queries";
import type { ActivationFrame } from "@/ws/frames.gen";
import { type SocketState, useWebSocket } from "@/ws/useWebSocket";
import { applyFrames, EMPTY_SNAPSHOT, FrameBatcher, fromHistory, type MonitorSnapshot } from "./monitorStore";

/** The live traces in the query cache (written by useMonitorStream). */
export function useMonitorSnapshot(): MonitorSnapshot {
  const { data } = useQuery<MonitorSnapshot>({
    queryKey: queryKeys.monitorLive,
    queryFn: () => EMPTY_SNAPSHOT,
    initialData: EMPTY_SNAPSHOT,
    staleTime: Number.POSITIVE_INFINITY,
    gcTime: Number.POSITIVE_INFINITY,
  });
  return data;
}

/**
 * Subscribes to /ws/monitor while mounted: frames are batched per animation frame into the query cache
 * (`queryKeys.monitorLive`); the server's history fills in requests from before the page opened.
 */
export function useMonitorStream(): SocketState {
  const queryClient = useQueryClient();
  const batcher = useRef<FrameBatcher | null>(null);
  if (!batcher.current) {
    batcher.current = new FrameBatcher((frames) =>
      queryClient.setQueryData<MonitorSnapshot>(queryKeys.monitorLive, (old) =>
        applyFrames(old ?? EMPTY_SNAPSHOT, frames),
      ),
    );
  }
  const history = useQuery(monitorHistoryQuery);
  useEffect(() => {
    if (!history.data) return;
    queryClient.setQueryData<MonitorSnapshot>(queryKeys.monitorLive, (old) =>
      fromHistory(history.data.data, old ?? EMPTY_SNAPSHOT),
    );
  }, [history.data, queryClient]);

  return useWebSocket<ActivationFrame>({
    path: "/ws/monitor",
    onMessage: (frame) => {
      if (frame && frame.type === "activation") batcher.current?.push(frame);
    },
    onOpen: () => queryClient.invalidateQueries({ queryKey: queryKeys.monitorHistory }),
  });
}
