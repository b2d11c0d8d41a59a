/**
 * Configures the generated client (src/client, from openapi.json) once, at import:
 * - every request carries `X-MiLLM-Client: web` (the server's cross-site protection) and, when a key
 *   is stored, `Authorization: Bearer <key>`;
 * - every failure is thrown as an ApiError (api/errors.ts); a 401 also asks for the API key.
 * Import SDK functions from "@/client" and call them in TanStack Query hooks; never call fetch directly.
 */
import { client } from "@/client/client.gen";
import { getApiKey, requestApiKey } from "@/lib/auth";
import { ApiError } from "./errors";

export const CLIENT_HEADER = { "X-MiLLM-Client": "web" } as const;

let configured = false;

export function configureClient(baseUrl = typeof window !== "undefined" ? window.location.origin : ""): void {
  client.setConfig({ baseUrl, throwOnError: true, headers: { ...CLIENT_HEADER } });
  if (configured) return;
  configured = true;
  client.interceptors.request.use((request) => {
    request.headers.set("X-MiLLM-Client", "web");
    const key = getApiKey();
    if (key && !request.headers.has("Authorization")) request.headers.set("Authorization", `Bearer ${key}`);
    return request;
  });
  client.interceptors.error.use((error, response) => {
    const status = response?.status ?? 0;
    const err = ApiError.from(error, status);
    if (status === 401 && (err.code === "invalid_api_key" || err.type === "authentication_error"))
      requestApiKey();
    return err;
  });
}

/** A WebSocket URL on the same origin, with the API key as `?api_key=` when one is stored. */
export function wsUrl(path: string, params: Record<string, string | undefined> = {}): string {
  const base =
    typeof window !== "undefined" ? window.location : { protocol: "http:", host: "127.0.0.1:8000" };
  const url = new URL(path, `${base.protocol === "https:" ? "wss:" : "ws:"}//${base.host}`);
  for (const [k, v] of Object.entries(params)) if (v != null) url.searchParams.set(k, v);
  const key = getApiKey();
  if (key) url.searchParams.set("api_key", key);
  return url.toString();
}

configureClient();
