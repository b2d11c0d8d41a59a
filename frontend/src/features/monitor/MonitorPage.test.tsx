import { act, fireEvent, screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { activationFrame, monitorConfig } from "@/test/monitorFixtures";
import { renderApp } from "@/test/render";
import { api, monitorWs, server } from "@/test/server";

function monitorServer(config = monitorConfig()) {
  let cfg = config;
  const calls: { method: string; url: string; body?: unknown }[] = [];
  const sockets: { send: (data: string) => void }[] = [];
  server.use(
    http.get(api("/api/monitor/config"), () => HttpResponse.json(cfg)),
    http.put(api("/api/monitor/config"), async ({ request }) => {
      const body = (await request.json()) as Record<string, unknown>;
      calls.push({ method: "PUT", url: "/api/monitor/config", body });
      cfg = { ...cfg, ...(body as object) };
      return HttpResponse.json(cfg);
    }),
    http.post(api("/api/monitor/pause"), () => {
      calls.push({ method: "POST", url: "/api/monitor/pause" });
      cfg = { ...cfg, paused: true };
      return HttpResponse.json(cfg);
    }),
    http.get(api("/api/monitor/history"), () => HttpResponse.json({ data: [], count: 0 })),
    http.get(api("/api/monitor/export"), ({ request }) => {
      calls.push({ method: "GET", url: `/api/monitor/export${new URL(request.url).search}` });
      return new HttpResponse('{"a":1}\n', { headers: { "Content-Type": "application/x-ndjson" } });
    }),
    http.patch(api("/api/steering"), async ({ request }) => {
      const body = await request.json();
      calls.push({ method: "PATCH", url: "/api/steering", body });
      return HttpResponse.json({
        enabled: true,
        mode: "add",
        normalize: false,
        steer_special_tokens: true,
        features: [],
        profile: null,
      });
    }),
    monitorWs.addEventListener("connection", ({ client }) => {
      sockets.push(client);
    }),
  );
  const push = (...frames: ReturnType<typeof activationFrame>[]) =>
    act(() => {
      for (const f of frames) for (const s of sockets) s.send(JSON.stringify(f));
    });
  return { calls, sockets, push };
}

const tokens = (n: number, feature = 16) =>
  Array.from({ length: n }, (_, i) =>
    activationFrame("req-1", i, [
      [feature, i],
      [7, 10 - i],
    ]),
  );

describe("Monitor tab", () => {
  it("shows each request's tokens as they stream, shaded by the focused feature scaled to its max", async () => {
    const srv = monitorServer();
    renderApp("/monitor");
    await waitFor(() => expect(srv.sockets).toHaveLength(1));
    srv.push(...tokens(5));
    const view = await screen.findByRole("listbox", { name: "Tokens of request req-1" });
    await waitFor(() => expect(within(view).getAllByRole("option")).toHaveLength(5));
    // Focus defaults to the strongest feature (7 peaks at 10, 16 at 4).
    expect(view).toHaveAttribute("data-max", "10");
    const opts = within(view).getAllByRole("option");
    expect(opts[0].style.backgroundColor).toBe("rgb(34, 211, 238)"); // feature 7 = 10 = max: full
    expect(opts[2].style.backgroundColor).toMatch(/^rgba\(34, 211, 238, 0\.96\d\)$/); // 8 of 10: 0.05 + log10(1 + 9·0.8) = 0.964
    expect(screen.getByRole("button", { name: /req-1.*5\s*tokens/ })).toBeInTheDocument();
    // More frames arrive: appended to the same request.
    srv.push(activationFrame("req-1", 5, [[16, 20]]));
    await waitFor(() => expect(within(view).getAllByRole("option")).toHaveLength(6));
  });

  it("hovering a token lists its features; Focus re-shades the text, Add sends it to the steering", async () => {
    const srv = monitorServer();
    const { user, router } = renderApp("/monitor");
    await waitFor(() => expect(srv.sockets).toHaveLength(1));
    srv.push(...tokens(5));
    const view = await screen.findByRole("listbox", { name: "Tokens of request req-1" });
    await waitFor(() => expect(within(view).getAllByRole("option")).toHaveLength(5));
    fireEvent.pointerOver(within(view).getAllByRole("option")[3]);
    const list = await screen.findByRole("list", { name: "Features at token 3" });
    const items = within(list).getAllByRole("listitem");
    // Strongest first: feature 7 (7.000), then 16 (3.000).
    expect(items[0]).toHaveTextContent("#7");
    expect(items[0]).toHaveTextContent("feature 7");
    expect(items[0]).toHaveTextContent("7.000");
    expect(items[1]).toHaveTextContent("CAPS");
    await user.click(within(list).getByRole("button", { name: "Focus feature 16" }));
    await waitFor(() => expect(router.state.location.search).toMatchObject({ focus: 16 }));
    expect(view).toHaveAttribute("data-max", "4");
    const opts = within(view).getAllByRole("option");
    expect(opts[0].style.backgroundColor).toBe(""); // 16 is 0 at token 0
    expect(opts[4].style.backgroundColor).toBe("rgb(34, 211, 238)");
    await user.click(within(list).getByRole("button", { name: "Add feature 16 to steering" }));
    await waitFor(() =>
      expect(srv.calls.find((c) => c.method === "PATCH")?.body).toEqual({
        features: [{ index: 16, strength: 0 }],
        mode: null,
      }),
    );
  });

  it("the token text is keyboard operable: arrows move, the inspector follows", async () => {
    const srv = monitorServer();
    const { user } = renderApp("/monitor");
    await waitFor(() => expect(srv.sockets).toHaveLength(1));
    srv.push(...tokens(3));
    const view = await screen.findByRole("listbox", { name: "Tokens of request req-1" });
    await waitFor(() => expect(within(view).getAllByRole("option")).toHaveLength(3));
    view.focus();
    await user.keyboard("{ArrowRight}{ArrowRight}");
    expect(view).toHaveAttribute("aria-activedescendant", "tok-1");
    expect(await screen.findByRole("list", { name: "Features at token 1" })).toBeInTheDocument();
  });

  it("watch config, pause and export talk to the server", async () => {
    const srv = monitorServer();
    const { user } = renderApp("/monitor");
    await user.click(await screen.findByRole("radio", { name: "Selected features" }));
    await user.type(screen.getByRole("textbox", { name: "Feature indices" }), "16, 99999");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("out of range");
    await user.clear(screen.getByRole("textbox", { name: "Feature indices" }));
    await user.type(screen.getByRole("textbox", { name: "Feature indices" }), "16, 40");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    await waitFor(() =>
      expect(srv.calls[0]).toEqual({
        method: "PUT",
        url: "/api/monitor/config",
        body: { features: [16, 40] },
      }),
    );
    await user.click(screen.getByRole("button", { name: "Pause" }));
    expect(await screen.findByRole("button", { name: "Resume" })).toBeInTheDocument();
    expect(screen.getByText("PAUSED")).toBeInTheDocument();
    URL.createObjectURL = () => "blob:x";
    URL.revokeObjectURL = () => {};
    await user.click(screen.getByRole("button", { name: "Export CSV" }));
    await waitFor(() => expect(srv.calls.some((c) => c.url === "/api/monitor/export?format=csv")).toBe(true));
  });

  it("says when monitoring is off and turns it on", async () => {
    const srv = monitorServer(monitorConfig({ enabled: false }));
    const { user } = renderApp("/monitor");
    await user.click(await screen.findByRole("button", { name: "Turn monitoring on" }));
    await waitFor(() =>
      expect(srv.calls[0]).toEqual({ method: "PUT", url: "/api/monitor/config", body: { enabled: true } }),
    );
    expect(await screen.findByText("LIVE")).toBeInTheDocument();
  });
});
