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
    <Playground
      model="millm-demo"
      prompt={prompt}
      onPromptChange={onPromptChange}
      steering={steering}
      dSae={1536}
    />,
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

  it("runs up to 8 columns (profiles, custom lists) in one request, each marked where it leaves the first", async () => {
    let body: { variants: unknown[] } | undefined;
    server.use(
      http.get(api("/api/profiles"), () => HttpResponse.json({ data: [{ name: "loud" }], count: 1 })),
      http.post(api("/api/compare"), async ({ request }) => {
        body = (await request.json()) as { variants: unknown[] };
        const more = [
          { type: "delta", variant: 2, text: "THE", token_ids: [4] },
          { type: "delta", variant: 3, text: "the", token_ids: [1] },
          { type: "delta", variant: 3, text: " sky", token_ids: [2] },
          { type: "delta", variant: 3, text: " is", token_ids: [3] },
        ];
        return new HttpResponse(sse([...frames.slice(0, -1), ...more, frames[frames.length - 1]]), {
          headers: { "Content-Type": "text/event-stream" },
        });
      }),
    );
    const { user } = renderPlayground();
    const kind = await screen.findByRole("combobox", { name: "New column" });
    await screen.findByRole("option", { name: "Profile loud" });
    await user.selectOptions(kind, "Profile loud");
    await user.click(screen.getByRole("button", { name: "Add column" }));
    await user.selectOptions(kind, "Custom features…");
    await user.type(screen.getByRole("textbox", { name: "Custom features" }), "16:4, 99999");
    expect(await screen.findByText(/index 99999 is out of range/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Add column" })).toBeDisabled();
    await user.clear(screen.getByRole("textbox", { name: "Custom features" }));
    await user.type(screen.getByRole("textbox", { name: "Custom features" }), "7:-3");
    await user.click(screen.getByRole("button", { name: "Add column" }));
    expect(screen.getByRole("region", { name: "Profile loud answer" })).toBeInTheDocument();
    expect(screen.getByRole("region", { name: "Custom 7:-3 answer" })).toBeInTheDocument();

    await user.click(screen.getByRole("button", { name: "Run" }));
    await waitFor(() => expect(screen.getByTestId("variant-3-text")).toHaveTextContent("the sky is"));
    expect(body?.variants).toEqual([
      { label: "Unsteered", steering: null },
      { label: "Steered", steering },
      { label: "Profile loud", steering: { profile: "loud" } },
      { label: "Custom 7:-3", steering: { features: [{ index: 7, strength: -3 }], mode: "add" } },
    ]);
    // Column 2 leaves the baseline at token 0, column 3 never does (still streaming: no done frame).
    const loud = screen.getByRole("region", { name: "Profile loud answer" });
    expect(loud.querySelector("[data-testid=divergence]")?.textContent).toContain("THE");
    const custom = screen.getByRole("region", { name: "Custom 7:-3 answer" });
    expect(custom.querySelector("[data-testid=divergence]")).toBeNull();
    // The baseline marks the earliest divergence of any column.
    const base = screen.getByRole("region", { name: "Unsteered answer" });
    expect(base.querySelector("[data-testid=divergence]")?.textContent).toContain("the");

    // Removing a column clears the run; at 8 columns no more can be added.
    await user.click(screen.getByRole("button", { name: "Remove column Custom 7:-3" }));
    expect(screen.queryByRole("region", { name: "Custom 7:-3 answer" })).toBeNull();
    await user.selectOptions(kind, "Unsteered");
    for (let i = 0; i < 5; i++) await user.click(screen.getByRole("button", { name: "Add column" }));
    expect(screen.getAllByRole("region", { name: /answer$/ })).toHaveLength(8);
    expect(screen.getByRole("button", { name: "Add column" })).toBeDisabled();
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
