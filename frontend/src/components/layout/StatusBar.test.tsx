import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { statusInterval } from "@/api/queries";
import { useDownloadEvents } from "@/features/downloads/useDownloads";
import { demoModel, job, status } from "@/test/fixtures";
import { renderWithClient } from "@/test/render";
import { api, downloadsWs, server } from "@/test/server";
import { StatusBar } from "./StatusBar";

function bar() {
  return screen.getByRole("list", { name: "Server status" });
}

function WithDownloads() {
  useDownloadEvents();
  return <StatusBar />;
}

describe("StatusBar", () => {
  it("shows the loaded model, SAE and layer, steering, queue, memory and the serving state", async () => {
    renderWithClient(<StatusBar />);
    await waitFor(() => expect(within(bar()).getByText("millm-demo")).toBeInTheDocument());
    const b = within(bar());
    expect(b.getByText("fp32")).toBeInTheDocument();
    expect(b.getByText("millm-demo-sae")).toBeInTheDocument();
    expect(b.getByText("@ layer 0")).toBeInTheDocument();
    expect(b.getByText("on (1)")).toBeInTheDocument();
    expect(b.getByText("Serving")).toBeInTheDocument();
    expect(b.getByText("RAM:").nextSibling).toHaveTextContent("8.2/32.0 GB");
    expect(b.getByText("CPU:").nextSibling).toHaveTextContent("12%");
    expect(b.queryByText("GPU:")).not.toBeInTheDocument();
    expect(b.getByText("Connected")).toBeInTheDocument();
    // queue depth 2, 3 running sequences
    expect(b.getByText("Queue:").nextSibling).toHaveTextContent("2");
    expect(b.getByText("Running:").nextSibling).toHaveTextContent("3");
  });

  it("shows the active profile, quantised precision, GPU use, VRAM and steering off", async () => {
    server.use(
      http.get(api("/api/status"), () =>
        HttpResponse.json(
          status({
            model: { ...demoModel, quantization: "4bit", dtype: "bfloat16", device: "cuda:0" },
            memory: { device: "cuda:0", used_bytes: 4.2 * 1024 ** 3, total_bytes: 24 * 1024 ** 3 },
            gpus: [
              {
                index: 0,
                name: "NVIDIA H100",
                utilization_percent: 45,
                memory_used_bytes: 4.2 * 1024 ** 3,
                memory_total_bytes: 24 * 1024 ** 3,
              },
            ],
            steering: { ...status().steering, enabled: false },
            active_profile: "yelling",
          }),
        ),
      ),
    );
    renderWithClient(<StatusBar />);
    await waitFor(() => expect(within(bar()).getByText("yelling")).toBeInTheDocument());
    const b = within(bar());
    expect(b.getByText("4-bit")).toBeInTheDocument();
    expect(b.getByText("GPU:").nextSibling).toHaveTextContent("45%");
    expect(b.getByText("VRAM:").nextSibling).toHaveTextContent("4.2/24.0 GB");
    expect(b.getByText("off")).toBeInTheDocument();
  });

  it("says when no model is loaded, without model-only items", async () => {
    server.use(
      http.get(api("/api/status"), () =>
        HttpResponse.json(status({ status: "no_model", model: null, sae: null, device: null })),
      ),
    );
    renderWithClient(<StatusBar />);
    await waitFor(() => expect(within(bar()).getByText("No model")).toBeInTheDocument());
    expect(within(bar()).queryByText("Steering:")).not.toBeInTheDocument();
    expect(within(bar()).queryByText("Queue:")).not.toBeInTheDocument();
  });

  it("shows Disconnected when the server cannot be reached, then recovers by itself", async () => {
    let up = false;
    server.use(http.get(api("/api/status"), () => (up ? HttpResponse.json(status()) : HttpResponse.error())));
    const { queryClient } = renderWithClient(<StatusBar />);
    await waitFor(() => expect(within(bar()).getByText("Disconnected")).toBeInTheDocument());
    up = true;
    await queryClient.refetchQueries({ queryKey: ["status"] });
    await waitFor(() => expect(within(bar()).getByText("Connected")).toBeInTheDocument());
    expect(within(bar()).queryByText("Disconnected")).not.toBeInTheDocument();
  });

  it("polls every 2 s and backs off while the server is down", () => {
    expect(statusInterval(0)).toBe(2000);
    expect(statusInterval(1)).toBe(4000);
    expect(statusInterval(2)).toBe(8000);
    expect(statusInterval(10)).toBe(30_000);
  });

  it("shows a running download's progress pushed over /ws/downloads", async () => {
    server.use(
      downloadsWs.addEventListener("connection", ({ client }) => {
        client.send(
          JSON.stringify({ type: "progress", job: job({ bytes_done: 3 * 1024 ** 3, progress: 0.75 }) }),
        );
      }),
    );
    renderWithClient(<WithDownloads />);
    const link = await screen.findByRole("link", { name: "Downloading gemma-2-2b: 75%" });
    expect(link).toHaveAttribute("href", "/models");
  });
});
