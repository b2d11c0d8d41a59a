/// <reference types="vitest/config" />
import tailwindcss from "@tailwindcss/vite";
import { tanstackRouter } from "@tanstack/router-plugin/vite";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The dev server proxies the API to a running `millm serve` (default 127.0.0.1:8000).
const server = process.env.MILLM_URL ?? "http://127.0.0.1:8000";
const proxy = Object.fromEntries(
  ["/api", "/v1", "/health", "/metrics", "/docs", "/openapi.json"].map((p) => [p, { target: server }]),
);

export default defineConfig({
  plugins: [
    tanstackRouter({ target: "react", autoCodeSplitting: true, quoteStyle: "double" }),
    react(),
    tailwindcss(),
  ],
  resolve: { alias: { "@": new URL("./src", import.meta.url).pathname } },
  build: {
    outDir: "../src/millm/webui/dist",
    emptyOutDir: true,
    sourcemap: false,
    manifest: true, // dist/.vite/manifest.json: read by scripts/bundle-size.mjs
  },
  server: {
    proxy: { ...proxy, "/ws": { target: server.replace(/^http/, "ws"), ws: true } },
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    css: false,
    restoreMocks: true,
    // Whole-app tests take seconds on CI's 2 shared cores; the 5 s default timed out there.
    testTimeout: 30_000,
  },
});
