/**
 * The network-level mock server for component tests (msw). Default handlers answer like a server with
 * the demo model and SAE loaded and nothing downloading; override per test with `server.use(...)`.
 */
import { HttpResponse, http, ws } from "msw";
import { setupServer } from "msw/node";
import { cachedRepo, status } from "./fixtures";
import { monitorConfig } from "./monitorFixtures";

export const ORIGIN = "http://localhost:3000";
export const api = (path: string) => `${ORIGIN}${path}`;

/** The /ws/downloads socket; tests push frames with `downloadsWs.clients` / `broadcast`. */
export const downloadsWs = ws.link("ws://localhost:3000/ws/downloads");

/** The /ws/monitor socket (monitor tests push frames through their own handler). */
export const monitorWs = ws.link("ws://localhost:3000/ws/monitor");

export const defaultHandlers = [
  http.get(api("/api/status"), () => HttpResponse.json(status())),
  http.get(api("/api/downloads"), () => HttpResponse.json({ data: [], count: 0 })),
  http.get(api("/api/cache"), ({ request }) => {
    const kind = new URL(request.url).searchParams.get("kind");
    const data = kind === "sae" ? [] : [cachedRepo()];
    return HttpResponse.json({
      data,
      count: data.length,
      size_bytes: data.reduce((s, r) => s + r.size_bytes, 0),
    });
  }),
  http.get(api("/api/saes/attached/labels"), () => HttpResponse.json({ data: [], count: 0 })),
  downloadsWs.addEventListener("connection", () => {}),
  http.get(api("/api/profiles"), () => HttpResponse.json({ data: [], count: 0 })),
  http.get(api("/api/monitor/config"), () => HttpResponse.json(monitorConfig())),
  http.get(api("/api/monitor/history"), () => HttpResponse.json({ data: [], count: 0 })),
  monitorWs.addEventListener("connection", () => {}),
];

export const server = setupServer(...defaultHandlers);
