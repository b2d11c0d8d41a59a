import { screen, waitFor } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it, vi } from "vitest";
import { renderWithClient } from "@/test/render";
import { api, server } from "@/test/server";
import { Playground } from "./Playground";

const enc = new TextEncoder();
const sse = (frames: unknown[]) => frames.map((f) => `data: ${JSON.stringify(f)}\n\n`).join("");

const steering = { features: [{ index: 16, strength: 8 }], mode: "add" as const };
const applied = { source: "request" as const };
const frames = [
  { type: "start", id: "cmp-1", model: "millm-demo", seed: 42, prompt_tokens: 5, variants: [] },
  { type: "delta", variant: 0, text: "the", token_ids: [1] },
  { type: "delta", variant: 1, text: "the", token_ids: [1] },
  { type: "delta", variant: 0, text: " sky", token_ids: [2] },
  { type: "delta", variant: 1, text: " SKY", token_ids: [9] },
  { type: "delta", variant: 0, text: " is", token_ids: [3] },
  { type: "delta", variant: 1, text: " IS", token_ids: [8] },
  {
    type: "done",
    index: 0,
    text: "the sky is",
    tokens: 3,
    token_ids: [1, 2, 3],
    finish_reason: "length",
    steering: applied,
    diverges_at: null,
  },
  {
    type: "done",
    index: 1,
    text: "the SKY IS",
    tokens: 3,
    token_ids: [1, 9, 8],
    finish_reason: "length",
    steering: applied,
    diverges_at: 1,
  },
  { type: "end", id: "cmp-1", usage: { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 } },
];

function renderPlayground(prompt = "Tell me about the sky") {
  const onPromptChange = vi.fn();
  const r = renderWithClient(
    <Playground model="millm-demo" prompt={prompt} onPromptChange={onPromptChange} steering={steering} />,
  );
  return { ...r, onPromptChange };
}

describe("Playground", () => {
  it("streams both answers from one compare request with one seed and marks the first divergent token", async () => {
    let body: Record<string, unknown> | undefined;
    server.use(
      http.post(api("/api/compare"), async ({ request }) => {
        body = (await request.json()) as Record<string, unknown>;
        return new HttpResponse(sse(frames), { headers: { "Content-Type": "text/event-stream" } });
      }),
    );
    const { user } = renderPlayground();
    await user.click(await screen.findByRole("button", { name: "Run" }));
    const shown = (id: string) => screen.getByTestId(id).textContent?.replace("(first divergent token)", "");
    await waitFor(() => expect(shown("steered-text")).toBe("the SKY IS"));
    expect(shown("base-text")).toBe("the sky is");
    expect(body).toMatchObject({
      model: "millm-demo",
      messages: [{ role: "user", content: "Tell me about the sky" }],
      seed: 42,
      stream: true,
      variants: [
        { label: "Unsteered", steering: null },
        { label: "Steered", steering },
      ],
    });
    const marks = await screen.findAllByTestId("divergence");
    expect(marks.map((m) => m.textContent)).toEqual([
      "(first divergent token) sky",
      "(first divergent token) SKY",
    ]);
    expect(screen.getByRole("status")).toHaveTextContent("differ from token 1");
  });

  it("Stop aborts the stream and says so", async () => {
    let aborted = false;
    server.use(
      http.post(api("/api/compare"), ({ request }) => {
        request.signal.addEventListener("abort", () => {
          aborted = true;
        });
        const stream = new ReadableStream({
          start(c) {
            c.enqueue(enc.encode(sse(frames.slice(0, 3))));
            // …and nothing more until the client goes away.
          },
        });
        return new HttpResponse(stream, { headers: { "Content-Type": "text/event-stream" } });
      }),
    );
    const { user } = renderPlayground();
    await user.click(await screen.findByRole("button", { name: "Run" }));
    await waitFor(() => expect(screen.getByTestId("steered-text")).toHaveTextContent("the"));
    await user.click(screen.getByRole("button", { name: "Stop" }));
    expect(await screen.findByText("Stopped.")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Run" })).toBeInTheDocument();
    await waitFor(() => expect(aborted).toBe(true));
  });

  it("a refused request shows the server's message", async () => {
    server.use(
      http.post(api("/api/compare"), () =>
        HttpResponse.json(
          {
            error: {
              message: "variants[1].steering.features[0].index: 5000 is out of range",
              type: "invalid_request_error",
              param: "variants[1]",
              code: null,
            },
          },
          { status: 400 },
        ),
      ),
    );
    const { user } = renderPlayground();
    await user.click(await screen.findByRole("button", { name: "Run" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("5000 is out of range");
  });

  it("shows the steered request as curl and Python, ready to copy", async () => {
    const { user } = renderPlayground("hi");
    const writeText = vi.fn().mockResolvedValue(undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    await user.click(await screen.findByText("The steered request as code"));
    await user.click(screen.getByRole("button", { name: "Copy curl command" }));
    expect(writeText.mock.calls[0][0]).toContain("/v1/chat/completions");
    expect(writeText.mock.calls[0][0]).toContain('"steering"');
    await user.click(screen.getByRole("tab", { name: "Python (openai)" }));
    await user.click(screen.getByRole("button", { name: "Copy Python code" }));
    expect(writeText.mock.calls[1][0]).toContain("extra_body=");
  });
});
