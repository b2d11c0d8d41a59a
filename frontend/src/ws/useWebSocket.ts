import { useEffect, useRef, useState } from "react";
import { wsUrl } from "@/api/client";
import { onApiKeyChanged } from "@/lib/auth";

export type SocketState = "connecting" | "open" | "closed";

export interface UseWebSocketOptions<T> {
  /** Path on this origin, e.g. "/ws/downloads". The API key is added as ?api_key= when stored. */
  path: string;
  params?: Record<string, string | undefined>;
  /** Each JSON message, typed by the caller from ws/frames.gen.ts. Write it into the query cache here. */
  onMessage: (frame: T) => void;
  /** Called on every (re)open, e.g. to refetch what may have been missed while disconnected. */
  onOpen?: () => void;
  enabled?: boolean;
  /** First reconnect delay; doubles up to maxDelayMs, with ±20 % jitter. */
  baseDelayMs?: number;
  maxDelayMs?: number;
}

/** Reconnect delay after `attempt` failed tries (0-based): base·2^attempt, capped, with jitter. */
export function backoffDelay(
  attempt: number,
  baseDelayMs = 500,
  maxDelayMs = 15_000,
  random = Math.random,
): number {
  const raw = Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
  return Math.round(raw * (0.8 + 0.4 * random()));
}

/**
 * A native WebSocket kept open while mounted: reconnects with exponential backoff forever (never gives
 * up), reopens when the API key changes, parses each message as JSON and hands it to `onMessage`.
 * Returns the socket's state for connection indicators.
 */
export function useWebSocket<T>({
  path,
  params,
  onMessage,
  onOpen,
  enabled = true,
  baseDelayMs = 500,
  maxDelayMs = 15_000,
}: UseWebSocketOptions<T>): SocketState {
  const [state, setState] = useState<SocketState>("connecting");
  const handlers = useRef({ onMessage, onOpen });
  handlers.current = { onMessage, onOpen };
  const paramKey = JSON.stringify(params ?? {});
  const [keyVersion, setKeyVersion] = useState(0);

  useEffect(() => onApiKeyChanged(() => setKeyVersion((v) => v + 1)), []);

  // biome-ignore lint/correctness/useExhaustiveDependencies: keyVersion reconnects with the new ?api_key=
  useEffect(() => {
    if (!enabled) {
      setState("closed");
      return;
    }
    let socket: WebSocket | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let attempt = 0;
    let disposed = false;

    const connect = () => {
      if (disposed) return;
      setState("connecting");
      socket = new WebSocket(wsUrl(path, JSON.parse(paramKey)));
      socket.onopen = () => {
        attempt = 0;
        setState("open");
        handlers.current.onOpen?.();
      };
      socket.onmessage = (ev) => {
        let frame: T;
        try {
          frame = JSON.parse(typeof ev.data === "string" ? ev.data : "") as T;
        } catch {
          return; // not JSON: ignore
        }
        handlers.current.onMessage(frame);
      };
      socket.onclose = () => {
        socket = null;
        if (disposed) return;
        setState("closed");
        timer = setTimeout(connect, backoffDelay(attempt, baseDelayMs, maxDelayMs));
        attempt += 1;
      };
      socket.onerror = () => socket?.close();
    };
    connect();
    return () => {
      disposed = true;
      clearTimeout(timer);
      if (socket) {
        socket.onclose = null;
        socket.close();
      }
    };
  }, [path, paramKey, enabled, baseDelayMs, maxDelayMs, keyVersion]);

  return state;
}
